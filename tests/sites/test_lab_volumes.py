"""Block storage on the lab, with real loop devices and ext4 mounts: a Dask cluster whose workers have two volumes
each gets them mounted inside each worker's own directory, owned by the project's user; a job that writes into
its workers' local directory writes onto the volumes; a scale-down removes the leaving worker's volumes (mount,
loop device, image file), a delete the rest. Needs root (CI has it); lab runs take turns through the lab's lock.

A lab host's mounts are its own: its sshd runs in a mount namespace of its own (`ip netns exec`), so the test
looks at a host's mounts and files through its sshd's namespace (nsenter, /proc/PID/root), as the host's
processes see them. Loop devices are machine-wide: whatever a failed run leaves, the test takes down in the end,
and only what lies under this lab's own root (oasis.lab.volumes.release), never anyone else's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from oasis.lab import volumes as lab_volumes
from oasis.lab.paths import Paths
from tests.integration import workflow as wf
from tests.integration.services import Oasis
from tests.lab_fixture import site_of

pytestmark = pytest.mark.service(lab=True)

SITE = "central"
PROBE = "oasis-volume-probe.txt"
# Each worker writes a file into its local directory (where Dask also spills) and says where it is.
JOB = f"""
import json, os
from distributed import Client


def probe(dask_worker):
    path = os.path.join(dask_worker.local_directory, {PROBE!r})
    with open(path, "w") as f:
        f.write(dask_worker.name)
    return path


with Client() as client:
    client.wait_for_workers(2)
    print(json.dumps(client.run(probe)))
""".encode()


def _body(client, name: str, workers: int = 2) -> dict:  # noqa: ANN001
    return {"name": name, "plugin_name": "dask", "plugin_version": wf.plugin_version(client, "dask"),
            "availability_zone": SITE, "node_groups": [
                {"name": "master", "flavor_id": "1", "node_processes": ["scheduler"], "count": 1},
                {"name": "worker", "flavor_id": "1", "node_processes": ["worker"], "count": workers,
                 "volumes_per_node": 2, "volumes_size": 1, "volume_local_to_instance": True}]}


def _loop_devices() -> dict[str, str]:
    """Every loop device of the machine and its backing file."""
    out = subprocess.run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], capture_output=True,
                         text=True, check=True).stdout
    return {d["name"]: d["back-file"] for d in (json.loads(out or "{}").get("loopdevices") or [])}


def _findmnt(pid: int, *args: str) -> str:
    """findmnt in the mount namespace of process `pid` (a host's sshd)."""
    p = subprocess.run(["nsenter", "--target", str(pid), "--mount", "findmnt", "--noheadings", *args],
                       capture_output=True, text=True)
    return p.stdout.strip()


def _mount_source(pid: int, path: str) -> str | None:
    return _findmnt(pid, "--output", "SOURCE,FSTYPE", "--mountpoint", path) or None


def _seen_by(pid: int, path: str) -> Path:
    """`path` as the processes of `pid`'s mount namespace see it."""
    return Path(f"/proc/{pid}/root{path}")


def _sshd_pids(lab: dict) -> dict[str, int]:
    paths = Paths(Path(lab["state_dir"]))
    return {h["name"]: int((paths.sshd_dir(h["name"]) / "sshd.pid").read_text().split()[0])
            for h in site_of(lab, SITE)["hosts"]}


class Instances:
    """The cluster's instances as the lab's hosts have them: directory, and volumes expected from their id."""

    def __init__(self, lab: dict, cluster: dict) -> None:
        hosts = {h["addresses"][h["network"]]: h for h in site_of(lab, SITE)["hosts"]}
        pids = _sshd_pids(lab)
        self.rows = []
        for ng in cluster["node_groups"]:
            for i in ng["instances"]:
                host = hosts[i["internal_ip"]]
                self.rows.append({"id": i["id"], "name": i["instance_name"], "group": ng["name"],
                                  "pid": pids[host["name"]],
                                  "workdir": f"{host['base_dir']}/{cluster['id']}/{i['instance_name']}",
                                  "images": [f"{host['volumes']['dir']}/oasis-{i['id']}-{n}.img" for n in (1, 2)]})

    def workers(self) -> list[dict]:
        return [r for r in self.rows if r["group"] == "worker"]


def _assert_mounted(worker: dict) -> dict[str, str]:
    """Both volumes of a worker: ext4 on the loop device of its own image file, mounted at <workdir>/volumes/diskN,
    the project user's, mode 0700. Returns {mount point: device}."""
    devices = _loop_devices()
    owner = os.stat(worker["workdir"]).st_uid
    assert owner != 0, "the instance runs as its project's user"
    out = {}
    for n, image in enumerate(worker["images"], 1):
        point = f"{worker['workdir']}/volumes/disk{n}"
        source = _mount_source(worker["pid"], point)
        assert source is not None, f"{point} is not a mount point on its host"
        device, fstype = source.split()
        assert fstype == "ext4" and devices.get(device) == image, (source, devices.get(device), image)
        st = os.stat(_seen_by(worker["pid"], point))  # the volume's own root
        assert (st.st_uid, st.st_mode & 0o777) == (owner, 0o700)
        out[point] = device
    return out


def _assert_gone(worker: dict, devices: dict[str, str]) -> None:
    """No mount, no loop device, no image file of the worker is left."""
    attached = _loop_devices()
    for point, device in devices.items():
        assert _mount_source(worker["pid"], point) is None, f"{point} is still mounted"
        assert attached.get(device) not in worker["images"], f"{device} still holds {attached.get(device)}"
    for image in worker["images"]:
        assert not Path(image).exists(), image
    assert not [d for d, f in attached.items() if f.removesuffix(" (deleted)") in worker["images"]]


def _cleanup(lab: dict, client: httpx.Client, cluster_id: str | None) -> None:
    """Whatever a failed run left of the cluster: the cluster itself, then its mounts (all inside its directories)
    and the loop devices of its image files; nothing outside this lab's root is touched."""
    if cluster_id is None:
        return
    try:
        if wf.cluster(client, cluster_id) is not None:
            client.delete(f"/clusters/{cluster_id}")
            wf.wait_gone(client, cluster_id)
    finally:
        _release(lab, cluster_id)


def _release(lab: dict, cluster_id: str) -> None:
    pids = tuple(_sshd_pids(lab).values())
    for host in site_of(lab, SITE)["hosts"]:
        lab_volumes.release(Path(host["base_dir"]) / cluster_id, pids)
    for host in site_of(lab, SITE)["hosts"]:  # the image files' loop devices
        lab_volumes.release(Path(host["volumes"]["dir"]))


def test_volumes_are_mounted_used_and_removed(service: Oasis, lab: dict) -> None:
    client = service.client
    cid = None
    try:
        cid = wf.ok(client.post("/clusters", json=_body(client, "lab-volumes")), 202)["cluster"]["id"]
        cluster = wf.wait_cluster(client, cid, timeout=300)
        instances = Instances(lab, cluster)
        workers = instances.workers()
        assert len(workers) == 2
        mounted = {w["id"]: _assert_mounted(w) for w in workers}
        master = next(r for r in instances.rows if r["group"] == "master")
        assert not Path(master["workdir"], "volumes").exists()  # the master's node group asks for none

        # a job's local data lands on the volumes: each worker's local directory is on its first volume
        template = wf.job_template(client, "lab-volume-probe", "Dask",
                                   wf.upload_binary(client, "probe.py", JOB))
        jid = wf.run_job(client, template, cid)
        j = wf.wait_job(client, jid, timeout=300)
        assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-3000:]
        written = json.loads(wf.logs(client, jid).strip().splitlines()[-1])
        assert len(written) == 2
        for w in workers:
            disk1 = f"{w['workdir']}/volumes/disk1"
            (path,) = [p for p in written.values() if p.startswith(disk1 + "/")]
            assert _seen_by(w["pid"], path).read_text() == w["name"]
            # the file is on the volume's filesystem, and not on the one under it
            assert _findmnt(w["pid"], "--output", "SOURCE", "--target", path) == mounted[w["id"]][disk1]
            assert not Path(path).exists()

        # a scale-down takes the leaving worker's volumes with it, and leaves the other's
        wf.ok(client.put(f"/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 1}]}), 202)
        cluster = wf.wait_cluster(client, cid, timeout=300)
        (kept,) = Instances(lab, cluster).workers()
        (gone,) = [w for w in workers if w["id"] != kept["id"]]
        _assert_gone(gone, mounted[gone["id"]])
        assert _assert_mounted(kept) == mounted[kept["id"]]

        # a delete takes the rest
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(client, cid)
        _assert_gone(kept, mounted[kept["id"]])
        for host, pid in zip(site_of(lab, SITE)["hosts"], _sshd_pids(lab).values()):
            assert not lab_volumes.mounts_under(Path(host["base_dir"]), pid)
    finally:
        _cleanup(lab, client, cid)


def test_release_takes_down_only_what_lies_under_its_root(tmp_path: Path) -> None:
    """What `oasis lab down` does with the volumes (oasis.lab.volumes.release): the mounts under the lab's root and
    the loop devices of image files under it go; another root's stay."""
    made: list[str] = []
    try:
        for name in ("ours", "theirs"):
            image, point = tmp_path / name / "volumes" / "v.img", tmp_path / name / "mnt"
            image.parent.mkdir(parents=True)
            point.mkdir()
            subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
            made.append(subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                                       check=True).stdout.strip())
            subprocess.run(["mount", made[-1], str(point)], check=True)
        done = lab_volumes.release(tmp_path / "ours")
        assert done == [f"mount {tmp_path / 'ours' / 'mnt'}", f"loop device {made[0]}"]
        assert made[0] not in _loop_devices() and _loop_devices()[made[1]] == str(tmp_path / "theirs/volumes/v.img")
        assert [p for p, _ in lab_volumes.mounts_under(tmp_path)] == [str(tmp_path / "theirs" / "mnt")]
    finally:
        lab_volumes.release(tmp_path)
        for device in made:  # detach by the devices this test recorded, should release have missed one
            if _loop_devices().get(device, "").startswith(str(tmp_path)):
                subprocess.run(["losetup", "--detach", device])
    assert not [d for d in made if _loop_devices().get(d, "").startswith(str(tmp_path))]


def test_the_agent_makes_only_what_is_missing_and_removes_by_name() -> None:
    """The agent's volume commands, run as they are on a host (root, a project user made by `prepare`): a rerun
    after a volume was unmounted, or unmounted and detached, puts back just that, keeping the data; a removal
    finds every volume of the instance by name, and a second removal has nothing to do."""
    agent = [sys.executable, "-S", str(Path(__file__).resolve().parents[2] / "oasis" / "remote" / "agent.py")]
    root = Path(tempfile.mkdtemp(prefix="oasis-volumes-"))
    root.chmod(0o711)  # the project user passes through to its instance's directory
    d, where, key = root / "base" / "cluster" / "inst", root / "images", "inst1"
    user = f"oasis-vt{uuid.uuid4().hex[:8]}"
    images = [str(where / f"oasis-{key}-{n}.img") for n in (1, 2)]
    points = [str(d / "volumes" / f"disk{n}") for n in (1, 2)]

    def up() -> list[dict]:
        return json.loads(subprocess.run([*agent, "volumes-up", "loop", str(where), key, "1", str(d), user,
                                          "volumes/disk1", "volumes/disk2"], capture_output=True, text=True,
                                         check=True).stdout)

    def mounted() -> dict[str, str]:
        return {p: s for p, s in lab_volumes.mounts_under(root)}

    try:
        subprocess.run([*agent, "prepare", str(d), user, key], capture_output=True, check=True)
        first = up()
        assert [v["mount"] for v in first] == points and [v["name"] for v in first] == [f"oasis-{key}-1",
                                                                                        f"oasis-{key}-2"]
        devices = _loop_devices()
        assert [devices[v["device"]] for v in first] == images
        assert mounted() == {v["mount"]: v["device"] for v in first}
        (Path(points[0]) / "kept").write_text("data")

        assert up() == first  # nothing missing: nothing done
        subprocess.run(["umount", points[0]], check=True)  # as if the agent had died before mounting
        subprocess.run(["umount", points[1]], check=True)
        subprocess.run(["losetup", "--detach", first[1]["device"]], check=True)  # ... or before attaching
        again = up()
        assert again[0] == first[0] and [_loop_devices()[v["device"]] for v in again] == images
        assert mounted() == {v["mount"]: v["device"] for v in again}
        assert (Path(points[0]) / "kept").read_text() == "data"  # found, not made again

        for _ in range(2):
            subprocess.run([*agent, "volumes-down", "loop", str(where), key], capture_output=True, check=True)
            assert mounted() == {} and not [f for f in _loop_devices().values() if f.startswith(str(where))]
            assert not [p for p in where.iterdir() if p.name.startswith(f"oasis-{key}-")]
    finally:
        subprocess.run([*agent, "release", str(d), user, key], capture_output=True)
        lab_volumes.release(root)
        subprocess.run(["rm", "-rf", str(root)])
    assert subprocess.run(["id", user], capture_output=True).returncode != 0  # the user went with its instance


def test_spark_keeps_its_local_and_work_dirs_on_the_volumes(service: Oasis, lab: dict) -> None:
    """A Spark worker with volumes: its SPARK_LOCAL_DIRS lists them (where it and its executors keep shuffle and
    spill files) and its --work-dir is on the first; then a delete leaves none of them."""
    client = service.client
    cid = None
    body = _body(client, "lab-volumes-spark", workers=1)
    body.update(plugin_name="spark", plugin_version=wf.plugin_version(client, "spark"))
    body["node_groups"][0].update(flavor_id="2", node_processes=["master"])
    body["node_groups"][1]["flavor_id"] = "2"
    try:
        cid = wf.ok(client.post("/clusters", json=body), 202)["cluster"]["id"]
        (worker,) = Instances(lab, wf.wait_cluster(client, cid, timeout=300)).workers()
        mounted = _assert_mounted(worker)
        pid = int(Path(worker["workdir"], "proc", "worker.pid").read_text())
        env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        assert env["SPARK_LOCAL_DIRS"].split(",") == list(mounted)
        assert argv[argv.index("--work-dir") + 1] == f"{worker['workdir']}/volumes/disk1/work"
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(client, cid)
        _assert_gone(worker, mounted)
    finally:
        _cleanup(lab, client, cid)
