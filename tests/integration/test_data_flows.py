"""docs/data-flows.yaml against the machine: `oasis up` on the lab, a Dask and a Spark cluster on the lab's
`central` site and on `local`, a job on each that holds its connections open (it computes with its workers, says
so, and waits for the test to release it); meanwhile every TCP and UDP socket of every process oasis started is
listed from /proc: the oasis process and its children (proxy commands), everything under the hosts' base dirs
(daemons, executors, jobs, agents), and the lab's sshds with their sessions. Each socket is read through its own
process's /proc/PID/net, so a namespace's sockets are seen in that namespace. Any socket that no entry of the
YAML describes fails the test, named (process, local and remote address, state); and every entry the run met is
needed: without it, some socket would go undescribed. Needs root (CI has it)."""
from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import data_flows
from devtools.data_flows import Socket
from oasis.procs import processes_under, wait_until
from tests.integration import workflow as wf
from tests.integration.services import Oasis
from tests.lab_fixture import site_of

pytestmark = pytest.mark.service(lab=True)

# /proc/net/tcp's states (include/net/tcp_states.h); a socket in TIME_WAIT belongs to no process any more
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}

# A Dask job: work spread over the workers, a sum whose inputs are on other workers (so they talk to each other),
# then it holds its client open until the test has listed the sockets and writes `release` in its directory.
DASK_JOB = textwrap.dedent("""
    import os, time
    from distributed import Client

    with Client(os.environ["DASK_SCHEDULER_ADDRESS"], timeout=60) as client:
        squares = client.map(lambda x: x * x, range(40))
        total = client.submit(sum, squares).result()
        print("holding", total, flush=True)
        deadline = time.monotonic() + 900
        while not os.path.exists("release") and time.monotonic() < deadline:
            time.sleep(0.2)
    print("released", flush=True)
""").encode()

# A PySpark job: a shuffle (executors fetch each other's blocks), a collect, then the session held open likewise.
SPARK_JOB = textwrap.dedent("""
    import os, time
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("data-flows").getOrCreate()
    pairs = spark.sparkContext.parallelize(range(2000), 8).map(lambda x: (x % 13, 1))
    counts = pairs.reduceByKey(lambda a, b: a + b, 4).collect()
    print("holding", len(counts), flush=True)
    deadline = time.monotonic() + 900
    while not os.path.exists("release") and time.monotonic() < deadline:
        time.sleep(0.2)
    spark.stop()
    print("released", flush=True)
""").encode()


# --- what the machine shows -----------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _all_parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = _ppid(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    found = set(roots)
    grew = True
    while grew:
        more = {p for p, pp in parents.items() if pp in found and p not in found}
        found |= more
        grew = bool(more)
    return found


def _netns_names() -> dict[int, str]:
    """inode of a network namespace -> its name (`root` for this process's own, the lab's by their names)."""
    names = {os.stat("/proc/self/ns/net").st_ino: "root"}
    for ns in Path("/run/netns").glob("*") if Path("/run/netns").exists() else []:
        try:
            names[os.stat(ns).st_ino] = ns.name
        except OSError:
            pass
    return names


def _address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    # /proc/net prints each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def _endpoint(text: str) -> tuple[str, int]:
    addr, port = text.split(":")
    return _address(addr), int(port, 16)


def _net_table(pid: int) -> dict[int, tuple[str, str, tuple[str, int], tuple[str, int]]]:
    """socket inode -> (transport, state, local, remote), from the process's own namespace's tables."""
    out = {}
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            inode = int(f[9])
            if inode:
                transport = name.rstrip("6")
                state = TCP_STATES.get(f[3], f[3]) if transport == "tcp" else ("UNCONN" if f[3] == "07" else "CONN")
                out[inode] = (transport, state, _endpoint(f[1]), _endpoint(f[2]))
    return out


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


class Context:
    """What the test knows of addresses and ports: the API's, the lab's, the instances' allocations."""

    def __init__(self, service: Oasis, lab: dict) -> None:
        self.api_port, self.connect_port = service.port, service.connect_port
        manifest, spec = lab["manifest"], lab["spec"]
        self.lab_controller = {spec.controller_address, spec.spine_controller_address}
        self.lab_hosts, self.lab_gateways, self.lab_floating, self.dnat = set(), set(), set(), {}
        for site in manifest["sites"]:
            gw = site.get("gateway") or {}
            self.lab_gateways |= {gw.get("address"), *(gw.get("addresses") or {}).values()} - {None}
            for h in site["hosts"]:
                self.lab_hosts |= set(h["addresses"].values())
                if h.get("floating_address"):
                    self.lab_floating.add(h["floating_address"])
                    self.dnat[h["floating_address"]] = next(iter(h["addresses"].values()))
        self.ephemeral = tuple(int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        # (address, port) -> the names of the port in its instance's allocation, and the instances' addresses
        self.allocated: dict[tuple[str, int], set[str]] = {}
        self.instances: set[str] = set()
        db = sqlite3.connect(f"file:{service.state_dir / 'oasis.db'}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT internal_ip, management_ip, ports FROM instances").fetchall()
        finally:
            db.close()
        for internal, management, ports in rows:
            self.instances |= {internal, management}
            for name, port in (json.loads(ports) if isinstance(ports, str) else ports or {}).items():
                for address in {internal, management}:
                    self.allocated.setdefault((address, int(port)), set()).add(name)

    def kinds(self, address: str) -> frozenset[str]:
        ip = ipaddress.ip_address(address)
        out = set()
        if ip.is_loopback:
            out.add("loopback")
        if ip.is_unspecified:
            out.add("wildcard")
        if address == "127.0.0.1":
            out.add("api-host")  # the service's --host
        for kind, members in (("instance", self.instances), ("lab-host", self.lab_hosts),
                              ("lab-gateway", self.lab_gateways), ("lab-floating", self.lab_floating),
                              ("lab-controller", self.lab_controller)):
            if address in members:
                out.add(kind)
        return frozenset(out or {"other"})

    def sources(self, address: str, port: int) -> frozenset[str]:
        out = {f"fixed:{port}"}
        if port == self.api_port:
            out.add("api")
        if port == self.connect_port:
            out.add("connect")
        if port == 22:
            out.add("ssh")
        if self.ephemeral[0] <= port <= self.ephemeral[1]:
            out.add("ephemeral")
        names = self.allocated.get((self.dnat.get(address, address), port), set())
        if ipaddress.ip_address(address).is_unspecified:  # a wildcard listener: whatever instance it serves
            names = {n for (_, p), ns in self.allocated.items() if p == port for n in ns}
        out |= {f"alloc:{n}" for n in names}
        return frozenset(out)


def oasis_processes(service: Oasis, lab: dict) -> set[int]:
    """Every process oasis started: the oasis process and its descendants, every process under a host's base
    dir (lab hosts, gateways, `local`), and the lab's sshds with theirs."""
    parents = _all_parents()
    roots = {p.pid for p in service.procs if p.poll() is None}
    sshds = set()
    for host in lab["spec"].hosts:
        pidfile = lab["state_dir"] / "hosts" / host.name / "sshd" / "sshd.pid"
        if pidfile.exists():
            sshds.add(int(pidfile.read_text().split()[0]))
    bases = [Path(h["base_dir"]) for s in lab["manifest"]["sites"] for h in [*s["hosts"], s.get("gateway") or {}]
             if h.get("base_dir")] + [service.state_dir / "hosts" / "localhost"]
    under = {pid for b in bases for pid in processes_under(b)}
    return _descendants(roots | sshds | under, parents)


def observe(service: Oasis, lab: dict, doc: dict) -> list[Socket]:
    ctx, netns = Context(service, lab), _netns_names()
    pids = oasis_processes(service, lab)
    parents = _all_parents()
    cmdlines: dict[int, str] = {}
    for pid in pids | set(parents.values()):
        try:
            cmdlines[pid] = _cmdline(pid)
        except OSError:
            pass
    roles: dict[int, str] = {}

    def role(pid: int) -> str | None:
        if pid not in cmdlines:
            return None
        if pid not in roles:
            roles[pid] = data_flows.role_of(doc["roles"], cmdlines[pid], role(parents.get(pid, 0)))
        return roles[pid]

    raw = []
    for pid in sorted(pids):
        try:
            ns = netns.get(os.stat(f"/proc/{pid}/ns/net").st_ino, "other")
            inodes, table = _socket_inodes(pid), _net_table(pid)
        except OSError:
            continue  # ended meanwhile
        for inode in inodes & set(table):
            transport, state, local, remote = table[inode]
            if state != "TIME_WAIT":
                raw.append((pid, ns, transport, state, local, remote))
    listening = {(ns, local) for _, ns, t, state, local, _ in raw if state in ("LISTEN", "UNCONN")}
    wild = {(ns, port) for ns, (addr, port) in listening if ipaddress.ip_address(addr).is_unspecified}

    def key(ns: str, a: tuple[str, int], b: tuple[str, int]) -> tuple:
        loop = ipaddress.ip_address(a[0]).is_loopback
        b = (ctx.dnat.get(b[0], b[0]), b[1])
        return (ns if loop else None, a, b)

    owners = {key(ns, local, remote): pid for pid, ns, _, _, local, remote in raw}
    out = []
    for pid, ns, transport, state, local, remote in raw:
        if state in ("LISTEN", "UNCONN"):
            side = "listen"
        elif (ns, local) in listening or (ns, local[1]) in wild:
            side = "server"
        else:
            side = "client"
        peer = owners.get(key(ns, (ctx.dnat.get(remote[0], remote[0]), remote[1]), local))
        if peer is None:  # the other end seen from its side: (its local, its remote) is our (remote, local)
            peer = next((p for (n, a, b), p in owners.items()
                         if a == (ctx.dnat.get(remote[0], remote[0]), remote[1]) and b == local
                         and (n is None or n == ns)), None)
        out.append(Socket(pid=pid, role=role(pid) or "unknown", netns=ns, transport=transport, state=state,
                          side=side, local=f"{local[0]}:{local[1]}", remote=f"{remote[0]}:{remote[1]}",
                          local_kinds=ctx.kinds(local[0]), remote_kinds=ctx.kinds(remote[0]),
                          local_sources=ctx.sources(*local), remote_sources=ctx.sources(*remote),
                          peer_role=role(peer) if peer is not None else None))
    return out


# --- the run --------------------------------------------------------------------------------------------------


def _cluster(client, plugin: str, name: str, site: str) -> str:
    if site == "local":
        # the local host has the machine's cores only: one instance with the master and a worker
        version = wf.plugin_version(client, plugin)
        body = {"name": name, "plugin_name": plugin, "plugin_version": version, "availability_zone": site,
                "node_groups": [{"name": "all", "flavor_id": "1", "count": 1,
                                 "node_processes": [wf.MASTER[plugin], "worker"]}]}
        return wf.ok(client.post("/clusters", json=body), 202)["cluster"]["id"]
    # m1.tiny everywhere: the lab's three hosts then hold both clusters (two vCPUs and 20 GB of disk each)
    return wf.create_cluster(client, plugin, name, workers=2, flavor="1", availability_zone=site)


def _job_dir(bases: list[Path], jid: str) -> Path | None:
    return next((d for b in bases for d in b.glob(f"*/*/jobs/{jid}")), None)


@pytest.fixture(scope="module")
def running(service: Oasis, lab: dict) -> Iterator[dict]:
    """Four clusters, each with a job holding its connections open: {"jobs": {jid: job dir}, "clusters": [...]}."""
    client = service.client
    made = [(plugin, site, _cluster(client, plugin, f"flows-{plugin}-{site}", site))
            for site in ("central", "local") for plugin in ("dask", "spark")]
    bases = [Path(h["base_dir"]) for h in site_of(lab, "central")["hosts"]] + [service.state_dir / "hosts" / "localhost"]
    jobs: dict[str, Path] = {}
    try:
        for _, _, cid in made:
            wf.wait_cluster(client, cid, timeout=600)
        for plugin, site, cid in made:
            main = wf.upload_binary(client, f"flows-{plugin}-{site}.py", DASK_JOB if plugin == "dask" else SPARK_JOB)
            template = wf.job_template(client, f"flows-{plugin}-{site}", wf.JOB_TYPE[plugin], main)
            # a worker of m1.tiny offers 512 MB: executors of that size (Spark's least)
            configs = {"configs": {"spark.executor.memory": "512m", "spark.driver.memory": "512m"}}
            jobs[wf.run_job(client, template, cid, job_configs=configs if plugin == "spark" else {})] = Path()

        def holding() -> bool:
            for jid in jobs:
                j = wf.job(client, jid)
                assert j["info"]["status"] not in ("FAILED", "KILLED", "DONEWITHERROR"), \
                    f"{jid}: {j['info']}\n{wf.logs(client, jid, 'stderr')[-3000:]}"
                d = _job_dir(bases, jid)
                if d is None or not (d / "stdout").exists() or "holding" not in (d / "stdout").read_text():
                    return False
                jobs[jid] = d
            return True

        wait_until(holding, 600, "every job to hold its connections", 0.5)
        yield {"jobs": jobs, "clusters": [cid for _, _, cid in made]}
    finally:
        for d in jobs.values():
            if d != Path():
                (d / "release").touch()
        for jid in jobs:
            try:
                wf.wait_job(client, jid, timeout=300)
            except TimeoutError:
                pass
        for _, _, cid in made:
            client.delete(f"/clusters/{cid}")
        for _, _, cid in made:
            wf.wait_gone(client, cid, timeout=300)


def test_every_socket_is_a_described_flow(service: Oasis, lab: dict, running: dict) -> None:
    doc = data_flows.load()
    assert not data_flows.problems(doc)
    sockets = observe(service, lab, doc)
    missing = data_flows.undescribed(doc["flows"], sockets)
    assert not missing, "sockets that docs/data-flows.yaml does not describe:\n" + "\n".join(
        sorted({s.describe() for s in missing}))
    met = [f for f in doc["flows"] if any(data_flows.matches(f, s) for s in sockets)]
    # the listing sees the frameworks at work, not an empty machine
    wanted = {"dask-scheduler", "dask-worker", "dask-nanny", "spark-master", "spark-worker", "spark-executor",
              "spark-driver", "lab-sshd", "oasis"}
    assert wanted <= {s.role for s in sockets}, sorted({s.role for s in sockets})
    # every entry met by a connection is needed: without it, some connection would go undescribed (so such an
    # entry removed from the file fails this test, and none hides behind a broader one)
    connections = [s for s in sockets if s.side != "listen"]  # a listener may serve several flows
    redundant = [f["id"] for f in met if any(data_flows.matches(f, s) for s in connections)
                 and not data_flows.undescribed([o for o in doc["flows"] if o is not f], connections)]
    assert not redundant, f"entries whose every socket another entry describes too: {redundant}"
    # what was seen, for whoever reads the run (pytest -rP)
    for flow in met:
        seen = sorted({(s.role, s.side) for s in sockets if data_flows.matches(flow, s)})
        print(f"{flow['id']}: {len([s for s in sockets if data_flows.matches(flow, s)])} sockets {seen}")
    for jid, d in running["jobs"].items():
        (d / "release").touch()
    for jid in running["jobs"]:
        j = wf.wait_job(service.client, jid, timeout=300)
        assert j["info"]["status"] == "SUCCEEDED", wf.logs(service.client, jid, "stderr")[-3000:]
