"""The lab, for real: namespaces, sshd, routes and nft on this machine (needs root, as CI is).

One default lab is built for the module into a temporary state dir and torn down at the end even
when tests fail. Tests that change the lab (partial rebuild, down) run in file order, last.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from oasis.lab import lab as labmod
from oasis.lab import net
from oasis.lab.model import DEFAULT_LAB_YAML, NFT_TABLE, LabFileError, load_lab, parse_lab

asyncssh = pytest.importorskip("asyncssh")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (CI runs as root)")
TIMINGS: dict[str, float] = {}


# --- fixtures ------------------------------------------------------------------------------


def _lab_leftovers() -> dict[str, list]:
    """Everything of a lab visible from the root namespace."""
    lab_range = ipaddress.ip_network("10.213.0.0/16")
    routes = []
    for r in net.routes():
        dst = r.get("dst", "")
        if dst != "default" and ipaddress.ip_network(dst if "/" in dst else dst + "/32").subnet_of(lab_range):
            routes.append(r)
    return {
        "namespaces": [n for n in net.namespaces() if n.startswith("oasis-")],
        "links": [n for n in net.links() if n.startswith("ol")],
        "routes": routes,
        "nft": [t for t in net.nft_tables() if t[1] == NFT_TABLE],
    }


@pytest.fixture(scope="module")
def built() -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (CI runs as root)")
    from oasis.lab.requirements import ensure_packages

    ensure_packages()
    state_dir = Path(tempfile.mkdtemp(prefix="oasis-lab-test-"))
    lab = load_lab()
    with labmod.exclusive_use():
        try:
            # a crashed earlier run may have left the lab's own objects; sweep them by prefix
            if any(_lab_leftovers().values()):
                labmod.down(state_dir, lab)
            t0 = time.monotonic()
            result = labmod.up(lab, state_dir)
            TIMINGS["up"] = time.monotonic() - t0
            manifest = yaml.safe_load(result.manifest.read_text())
            yield {"lab": lab, "state_dir": state_dir, "manifest": manifest, "result": result}
        finally:
            try:
                labmod.down(state_dir, lab)
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)
                if TIMINGS:
                    print("\nlab timings: " + ", ".join(f"{k}={v:.3f}s" for k, v in TIMINGS.items()))


def _hosts(manifest: dict) -> dict[str, dict]:
    return {h["name"]: h for s in manifest["sites"] for h in s["hosts"]}


def _site(manifest: dict, name: str) -> dict:
    return next(s for s in manifest["sites"] if s["name"] == name)


def _known_hosts(manifest: dict) -> asyncssh.SSHKnownHosts:
    """known_hosts built from the manifest's pinned keys (not from the lab's own file)."""
    lines = []
    for site in manifest["sites"]:
        for net_ in site["networks"]:
            gw = net_["gateway"]
            lines.append(f"{','.join(gw['addresses'].values())} {gw['host_key']}")
        for h in site["hosts"]:
            names = list(h["addresses"].values()) + ([h["floating_address"]] if h["floating_address"] else [])
            lines.append(f"{','.join(names)} {h['host_key']}")
    return asyncssh.import_known_hosts("\n".join(lines) + "\n")


def _ssh_opts(manifest: dict) -> dict:
    return {
        "username": "root",
        "known_hosts": _known_hosts(manifest),
        "client_keys": [manifest["controller"]["private_key"]],
        "connect_timeout": 10,
    }


async def _run(host: str, command: str, **opts) -> str:
    async with asyncssh.connect(host, **opts) as conn:
        result = await conn.run(command, check=True)
        return result.stdout.strip()


# --- the lab file (no root needed) ---------------------------------------------------------


def test_default_lab_file_matches_embedded() -> None:
    shipped = Path(labmod.__file__).with_name("default.yaml").read_text()
    assert yaml.safe_load(shipped) == yaml.safe_load(DEFAULT_LAB_YAML)
    lab = load_lab()
    assert [s.name for s in lab.sites] == ["central", "edge-1", "edge-2"]
    assert [len(leaf.hosts) for leaf in lab.leaves] == [3, 3, 2]
    assert lab.controller_routes() == ["10.213.1.0/24", "10.213.254.6/32", "10.213.102.0/24"]
    assert lab.joins == (("central-net", "edge-1-net"),)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["sites"][1]["leaves"][0].update(cidr="10.213.1.0/24"), "sites[1].leaves[0].cidr"),
        (lambda d: d["sites"][0]["leaves"][0].update(cidr="192.168.1.0/24"), "sites[0].leaves[0].cidr"),
        (lambda d: d["sites"][0]["leaves"][0].update(access="vpn"), "sites[0].leaves[0].access"),
        (lambda d: d["sites"][0]["leaves"][0].update(acess="direct"), "sites[0].leaves[0]"),
        (lambda d: d["sites"][2].update(name="central"), "sites[2].name"),
        (lambda d: d["sites"][0]["leaves"][0].update(hosts="three"), "sites[0].leaves[0].hosts"),
        (lambda d: d.update(joins=[["central", "nowhere"]]), "joins[0]"),
        (lambda d: d["sites"][2]["leaves"][0].update(floating_range="10.213.103.0/24"), "floating_range"),
        (lambda d: d.update(host_capacity={"vcpus": 0}), "host_capacity.vcpus"),
    ],
)
def test_lab_file_errors_name_the_field(mutate, field) -> None:
    data = yaml.safe_load(DEFAULT_LAB_YAML)
    mutate(data)
    with pytest.raises(LabFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_lab(data)


def test_cli_refuses_without_root(monkeypatch) -> None:
    from typer.testing import CliRunner

    from oasis.cli.lab import lab_app

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for cmd in (["up"], ["status"], ["down"]):
        result = CliRunner().invoke(lab_app, cmd)
        assert result.exit_code == 2, result.output
        assert "needs root" in result.output
        assert "Traceback" not in result.output


# --- the built lab -------------------------------------------------------------------------


@needs_root
def test_guard_route_comes_first(built) -> None:
    created = json.loads((built["state_dir"] / "state.json").read_text())["created"]
    assert created[0]["kind"] == "route" and created[0]["spec"] == ["unreachable", "10.213.0.0/16"]
    assert all(item["seq"] > created[0]["seq"] for item in created if item["kind"] in ("netns", "link"))
    assert net.has_route("10.213.0.0/16", type_="unreachable")
    # an address the controller has no route for is refused locally, never sent off the machine
    assert "No route to host" in net.route_get("10.213.2.5")
    assert "No route to host" in net.route_get("10.213.77.1")


@needs_root
def test_controller_has_no_route_to_edge_leaves(built) -> None:
    for addr in ("10.213.2.11", "10.213.3.11", "10.213.3.1"):
        assert "No route to host" in net.route_get(addr)
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            socket.create_connection((addr, 22), timeout=5).close()
        assert exc.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        assert time.monotonic() - t0 < 0.5  # refused at once, not timed out


@needs_root
def test_manifest(built) -> None:
    m = built["manifest"]
    assert m["version"] == 1 and m["lab"] == "default"
    assert "&id" not in (built["state_dir"] / "manifest.yaml").read_text()  # plain YAML, no aliases
    assert set(m["controller"]) == {"address", "ssh_user", "private_key", "public_key", "known_hosts"}
    assert [s["name"] for s in m["sites"]] == ["central", "edge-1", "edge-2"]
    access = {s["name"]: s["access"] for s in m["sites"]}
    assert access == {"central": "direct", "edge-1": "gateway", "edge-2": "proxy_command"}
    assert _site(m, "edge-2")["proxy_command"] == "ip netns exec oasis-edge-2-gw nc {host} {port}"
    assert _site(m, "edge-1")["gateway"]["address"] == "10.213.254.6"
    assert _site(m, "edge-1")["floating_range"] == "10.213.102.0/24"
    assert _site(m, "central")["networks"][0]["joined_with"] == ["edge-1-net"]
    hosts = _hosts(m)
    assert sorted(hosts) == sorted(
        ["central-1", "central-2", "central-3", "edge-1-1", "edge-1-2", "edge-1-3", "edge-2-1", "edge-2-2"]
    )
    h = hosts["edge-1-2"]
    assert set(h) == {
        "name", "network", "addresses", "floating_address", "ssh_user", "ssh_port", "host_key",
        "base_dir", "authorized_keys", "capacity", "volumes", "namespace",
    }
    assert h["addresses"] == {"edge-1-net": "10.213.2.12"} and h["floating_address"] == "10.213.102.12"
    assert (h["ssh_user"], h["ssh_port"]) == ("root", 22)
    assert h["capacity"] == {"vcpus": 2, "ram_mb": 4096, "disk_gb": 20}
    assert h["volumes"] == {"backend": "loop", "dir": str(built["state_dir"] / "hosts" / "edge-1-2" / "volumes"),
                            "size_gb": 20}
    assert h["host_key"].startswith("ssh-ed25519 ")
    assert Path(h["base_dir"]).is_dir()
    assert len({x["host_key"] for x in hosts.values()}) == len(hosts)  # a key per host


@needs_root
def test_ssh_direct(built) -> None:
    m = built["manifest"]
    t0 = time.monotonic()
    out = asyncio.run(_run("10.213.1.11", "hostname; echo $OASIS_BASE_DIR", **_ssh_opts(m)))
    TIMINGS["ssh_direct"] = time.monotonic() - t0
    base_dir = _hosts(m)["central-1"]["base_dir"]
    assert out.split() == ["central-1", base_dir]

    async def sftp_put() -> None:
        async with asyncssh.connect("10.213.1.11", **_ssh_opts(m)) as conn:
            async with conn.start_sftp_client() as sftp:
                async with sftp.open(f"{base_dir}/probe.txt", "w") as fh:
                    await fh.write("written over sftp\n")

    asyncio.run(sftp_put())
    assert (Path(base_dir) / "probe.txt").read_text() == "written over sftp\n"


@needs_root
def test_ssh_through_gateway(built) -> None:
    m = built["manifest"]
    gw = _site(m, "edge-1")["gateway"]
    opts = _ssh_opts(m)

    async def go() -> str:
        async with asyncssh.connect(gw["address"], **opts) as tunnel:
            assert (await tunnel.run("hostname", check=True)).stdout.strip() == "edge-1-gw"
            t0 = time.monotonic()
            async with asyncssh.connect("10.213.2.11", tunnel=tunnel, **opts) as conn:
                out = (await conn.run("hostname", check=True)).stdout.strip()
            TIMINGS["ssh_gateway_hop"] = time.monotonic() - t0
            return out

    t0 = time.monotonic()
    assert asyncio.run(go()) == "edge-1-1"
    TIMINGS["ssh_gateway_total"] = time.monotonic() - t0


@needs_root
def test_ssh_floating(built) -> None:
    m = built["manifest"]
    t0 = time.monotonic()
    out = asyncio.run(_run(_hosts(m)["edge-1-2"]["floating_address"], "hostname", **_ssh_opts(m)))
    TIMINGS["ssh_floating"] = time.monotonic() - t0
    assert out == "edge-1-2"


@needs_root
def test_ssh_proxy_command(built) -> None:
    m = built["manifest"]
    cmd = _site(m, "edge-2")["proxy_command"].format(host="10.213.3.12", port=22)
    t0 = time.monotonic()
    out = asyncio.run(_run("10.213.3.12", "hostname", proxy_command=cmd, **_ssh_opts(m)))
    TIMINGS["ssh_proxy_command"] = time.monotonic() - t0
    assert out == "edge-2-2"


@needs_root
def test_agent_calls_on_a_warm_session_are_one_channel(built) -> None:
    """Every agent call rides the host's one session channel on the pooled connection: after the first, calls open
    no channel (counted on the real connection to the host's sshd) and run on the host itself."""
    import sys

    from oasis.remote.agent_client import AGENT_NAME, Agent
    from oasis.remote.agent_session import AgentSession
    from oasis.remote.ssh import SshRemote, SshTarget

    m = built["manifest"]
    host = _hosts(m)["central-1"]
    target = SshTarget(address="10.213.1.11", host_key=host["host_key"],
                       client_key=Path(m["controller"]["private_key"]).read_text(), label="central-1")
    path = f"{host['base_dir']}/{AGENT_NAME}"
    procdir = f"{host['base_dir']}/session-test/proc"

    async def go() -> None:
        remote = SshRemote(target)
        session = AgentSession(remote, sys.executable, path)
        agent = Agent(remote, sys.executable, path, session=session)
        try:
            assert await agent.busy_ports("10.213.1.11", [22, 1]) == [22]  # sshd holds 22 on the host
            conn = await remote.connection()
            opened = []
            real = conn.create_session

            async def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                opened.append(args)
                return await real(*args, **kwargs)

            conn.create_session = counting  # type: ignore[method-assign]
            t0 = time.monotonic()
            results = await asyncio.gather(*(agent.busy_ports("10.213.1.11", [22, p]) for p in range(2, 22)))
            TIMINGS["agent_20_warm_calls"] = time.monotonic() - t0
            assert results == [[22]] * 20
            pid = await agent.start(procdir, "svc", ["sh", "-c", "hostname; echo up; exec sleep 60"], {},
                                    ready="up", timeout=20)
            await agent.stop(procdir, "svc", grace=5)
            assert opened == [] and session.opened == 1
            assert (Path(procdir) / "svc.log").read_text().split()[:2] == ["central-1", "up"] and pid > 0
        finally:
            await session.close()
            await remote.close()
            shutil.rmtree(Path(procdir).parent, ignore_errors=True)

    asyncio.run(go())


@needs_root
def test_wrong_host_key_is_refused(built) -> None:
    m = built["manifest"]
    hosts = _hosts(m)
    wrong = asyncssh.import_known_hosts(f"10.213.1.11 {hosts['central-2']['host_key']}\n")
    opts = dict(_ssh_opts(m), known_hosts=wrong)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(_run("10.213.1.11", "true", **opts))
    # and a floating address answered by anything but its own host is caught the same way
    wrong_fip = asyncssh.import_known_hosts(f"10.213.102.11 {hosts['edge-1-2']['host_key']}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(_run("10.213.102.11", "true", **dict(opts, known_hosts=wrong_fip)))


@needs_root
def test_joined_leaves_reach_each_other_and_others_do_not(built) -> None:
    def reach(src_ns: str, addr: str) -> bool:
        return net.run(["ip", "netns", "exec", src_ns, "nc", "-z", "-w", "2", addr, "22"], check=False).returncode == 0

    assert reach("oasis-central-1", "10.213.2.11")  # central <-> edge-1 are joined
    assert reach("oasis-edge-1-3", "10.213.1.12")
    assert not reach("oasis-central-1", "10.213.3.11")  # edge-2 is joined with nobody
    assert not reach("oasis-edge-2-1", "10.213.1.11")
    assert not reach("oasis-edge-1-1", "10.213.3.11")


@needs_root
def test_status_all_up(built) -> None:
    rows = labmod.status(built["lab"], built["state_dir"])
    assert len(rows) == 11
    assert all(r.namespace and r.sshd_alive and r.port_open for r in rows), rows


@needs_root
def test_cli_status_and_a_second_lab_is_refused(built, tmp_path) -> None:
    from typer.testing import CliRunner

    from oasis.cli.lab import lab_app

    result = CliRunner().invoke(lab_app, ["status", "--state-dir", str(built["state_dir"])])
    assert result.exit_code == 0, result.output
    assert "edge-2-2" in result.output
    # another state dir would start a second set of sshds on the same namespaces: refused
    with pytest.raises(labmod.LabError, match="already up"):
        labmod.up(built["lab"], tmp_path / "other")


def _snapshot() -> dict:
    snap = {"netns": sorted(net.namespaces()), "root_links": sorted(net.links()), "root_routes": net.routes()}
    snap["nft_root"] = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    for ns in snap["netns"]:
        if ns.startswith("oasis-"):
            snap[ns] = {
                "links": sorted(net.links(ns)),
                "addrs": net.ip("-o", "addr", ns=ns).stdout,
                "routes": net.routes(ns),
                "nft": net.in_ns(ns, "nft", "list", "ruleset").stdout,
                "pids": sorted(net.netns_pids(ns)),
            }
    return snap


@needs_root
def test_up_twice_creates_nothing(built) -> None:
    before = _snapshot()
    state_before = json.loads((built["state_dir"] / "state.json").read_text())
    manifest_before = (built["state_dir"] / "manifest.yaml").read_text()
    result = labmod.up(built["lab"], built["state_dir"])
    assert result.created == 0
    assert _snapshot() == before
    assert json.loads((built["state_dir"] / "state.json").read_text()) == state_before
    assert (built["state_dir"] / "manifest.yaml").read_text() == manifest_before


@needs_root
def test_up_completes_a_partial_lab(built) -> None:
    state = json.loads((built["state_dir"] / "state.json").read_text())
    rec = state["processes"]["edge-2-2"]
    assert net.kill(rec["pid"], rec["start"])
    net.ip("netns", "del", "oasis-edge-2-2")
    result = labmod.up(built["lab"], built["state_dir"])
    assert result.created > 0
    m = built["manifest"]
    cmd = _site(m, "edge-2")["proxy_command"].format(host="10.213.3.12", port=22)
    assert asyncio.run(_run("10.213.3.12", "hostname", proxy_command=cmd, **_ssh_opts(m))) == "edge-2-2"


@needs_root
def test_down_twice_leaves_nothing(built) -> None:
    state = json.loads((built["state_dir"] / "state.json").read_text())
    pids = [(p["pid"], p["start"]) for p in state["processes"].values()]
    t0 = time.monotonic()
    first = labmod.down(built["state_dir"], built["lab"])
    TIMINGS["down"] = time.monotonic() - t0
    assert first.removed
    second = labmod.down(built["state_dir"], built["lab"])
    assert second.removed == []
    assert _lab_leftovers() == {"namespaces": [], "links": [], "routes": [], "nft": []}
    assert not any(net.alive(pid, start) for pid, start in pids)
    assert not (built["state_dir"] / "state.json").exists()


@needs_root
def test_down_without_a_record_sweeps_by_prefix(built) -> None:
    """What a crashed `up` leaves (no usable state file) is still removed by the lab's prefixes."""
    labmod.up(built["lab"], built["state_dir"])
    state = json.loads((built["state_dir"] / "state.json").read_text())
    pids = [(p["pid"], p["start"]) for p in state["processes"].values()]
    assert all(net.alive(pid, start) for pid, start in pids)
    empty = Path(tempfile.mkdtemp(prefix="oasis-lab-empty-"))
    try:
        labmod.down(empty, built["lab"])
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    assert _lab_leftovers() == {"namespaces": [], "links": [], "routes": [], "nft": []}
    assert not any(net.alive(pid, start) for pid, start in pids)
