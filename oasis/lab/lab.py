"""Build, inspect and tear down a lab (see model.py for the topology).

`up` checks before it creates, so a second run changes nothing and a half-built lab is completed.
Everything `up` creates in the root namespace, every namespace, nft table and process is written to
<state dir>/state.json as it is created, in order; `down` removes what is recorded there, then sweeps
whatever a crashed `up` may have left under the lab's own name prefixes, and removes the
`unreachable` guard route last, only once no lab namespace is left.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oasis.lab import net, volumes
from oasis.lab.manifest import write_known_hosts, write_manifest
from oasis.lab.model import (
    BRIDGE,
    HOST_LINK,
    LINK_PREFIX,
    NFT_TABLE,
    NS_PREFIX,
    ROOT_LINK,
    SPINE_NS,
    SPINE_ROOT_LINK,
    UPLINK,
    Host,
    Lab,
    Leaf,
    load_lab,
)
from oasis.lab.paths import SSH_PORT, Paths

DEFAULT_STATE_DIR = Path("/var/lib/oasis-lab")
SSHD = "/usr/sbin/sshd"
NETNS_ETC = Path("/etc/netns")  # per-namespace files that `ip netns exec` bind-mounts over /etc
GLOBAL_LOCK = Path("/run/oasis-lab.lock")  # namespaces are machine-wide, so is the lock
USE_LOCK = Path("/run/oasis-lab-use.lock")  # held by a test run for as long as it uses a lab


class LabError(RuntimeError):
    """A lab operation could not be done; the message says why, for the user."""


def state_dir_from_env(value: str | os.PathLike[str] | None = None) -> Path:
    if value:
        return Path(value)
    return Path(os.environ.get("OASIS_LAB_DIR") or DEFAULT_STATE_DIR)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("oasis lab needs root (it creates network namespaces, links and routes); run it with sudo")


# --- state -------------------------------------------------------------------------------------


class State:
    """The record of what this lab created, saved after every change so a crash loses nothing."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.data: dict = {"version": 1, "created": [], "processes": {}}
        if paths.state_file.exists():
            self.data = json.loads(paths.state_file.read_text())

    @property
    def created(self) -> list[dict]:
        return self.data["created"]

    @property
    def processes(self) -> dict[str, dict]:
        return self.data["processes"]

    def record(self, item: dict) -> None:
        item = dict(item, seq=len(self.created), at=time.time())
        self.created.append(item)
        self.save()

    def save(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        tmp = self.paths.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.paths.state_file)


@contextmanager
def _locked() -> Iterator[None]:
    GLOBAL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(GLOBAL_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def exclusive_use() -> Iterator[None]:
    """Held by whoever builds a lab for the length of a test run: namespace names are global, so
    two test runs on one machine must take turns rather than tear down each other's hosts."""
    USE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(USE_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- up ------------------------------------------------------------------------------------


@dataclass
class UpResult:
    manifest: Path
    created: int  # how many objects this run created (0 on a lab that was already up)
    seconds: float


class _Builder:
    def __init__(self, lab: Lab, paths: Paths, state: State, log: Callable[[str], None]) -> None:
        self.lab = lab
        self.paths = paths
        self.state = state
        self.log = log
        self.created = 0
        self._links: dict[str | None, dict[str, dict]] = {}

    # each helper checks, creates, and records only what is created in the root namespace or
    # cannot be cleaned up by deleting a namespace

    def _record(self, item: dict) -> None:
        self.created += 1
        self.state.record(item)

    def links(self, ns: str | None) -> dict[str, dict]:
        if ns not in self._links:
            self._links[ns] = net.links(ns)
        return self._links[ns]

    def guard(self) -> None:
        rng = str(self.lab.range)
        if not net.has_route(rng, type_="unreachable"):
            net.ip("route", "add", "unreachable", rng)
            self._record({"kind": "route", "ns": None, "spec": ["unreachable", rng]})
        # belt and braces: never go on unless the guard is really in place
        probe = net.route_get(str(self.lab.range.network_address + 1))
        if "unreachable" not in probe and "No route to host" not in probe:
            raise LabError(f"the unreachable route for {rng} is not effective; refusing to build")

    def namespace(self, ns: str, router: bool = False) -> None:
        if ns not in self.existing_ns:
            net.ip("netns", "add", ns)
            self.existing_ns.add(ns)
            self._record({"kind": "netns", "name": ns})
            self._links[ns] = {}
        net.prepare_ns(ns, forwarding=router)  # before any link, so none gets IPv6
        net.ip("link", "set", "lo", "up", ns=ns)

    def veth(self, ns_a: str | None, name_a: str, ns_b: str, name_b: str, mac_a: str, mac_b: str) -> None:
        """A veth pair created straight into its two namespaces (nothing passes through root),
        with fixed MACs: a host or gateway rebuilt by a later `up` keeps its MAC, so the
        neighbour caches of everything that talked to it stay right."""
        have_a = name_a in self.links(ns_a)
        have_b = name_b in self.links(ns_b)
        if have_a and have_b:
            return
        if have_a:  # half a pair cannot exist, but a same-named stray can: replace it
            net.ip("link", "del", name_a, ns=ns_a)
        if have_b:
            net.ip("link", "del", name_b, ns=ns_b)
        net.ip(
            "link", "add", name_a, "address", mac_a, "type", "veth",
            "peer", "name", name_b, "address", mac_b, "netns", ns_b, ns=ns_a,
        )
        self._links.pop(ns_a, None)
        self._links.pop(ns_b, None)
        if ns_a is None:
            self._record({"kind": "link", "ns": None, "name": name_a})
        else:
            self.created += 1

    def bridge(self, ns: str, mac: str) -> None:
        # an explicit MAC, else the bridge takes its lowest port's and changes it as ports come and go
        if BRIDGE not in self.links(ns):
            net.ip("link", "add", BRIDGE, "address", mac, "type", "bridge", ns=ns)
            self._links.pop(ns, None)
            self.created += 1

    def root_route(self, dst: str, via: str) -> None:
        if not net.has_route(dst):
            net.ip("route", "replace", dst, "via", via)
            self._record({"kind": "route", "ns": None, "spec": [dst, "via", via]})

    def nft(self, ns: str, family: str, body: str) -> None:
        # declare, delete and redefine in one nft transaction: atomic, and the same ruleset
        # whether or not the table existed
        script = f"table {family} {NFT_TABLE}\ndelete table {family} {NFT_TABLE}\ntable {family} {NFT_TABLE} {{\n{body}}}\n"
        existed = (family, NFT_TABLE) in net.nft_tables(ns)
        net.nft_apply(script, ns=ns)
        if not existed:
            self._record({"kind": "nft", "ns": ns, "family": family, "name": NFT_TABLE})

    # --- the topology

    def build(self) -> None:
        lab = self.lab
        self.existing_ns = set(net.namespaces())
        self.guard()  # before any namespace, address or link

        # the spine and its link to the controller
        self.namespace(SPINE_NS, router=True)
        self.veth(
            None, ROOT_LINK, SPINE_NS, SPINE_ROOT_LINK, mac(lab.controller_address), mac(lab.spine_controller_address)
        )
        net.disable_ipv6_on(ROOT_LINK)
        plen = lab.controller_link.prefixlen
        net.ip("addr", "replace", f"{lab.controller_address}/{plen}", "dev", ROOT_LINK)
        net.ip("link", "set", ROOT_LINK, "up")
        net.ip("addr", "replace", f"{lab.spine_controller_address}/{plen}", "dev", SPINE_ROOT_LINK, ns=SPINE_NS)
        net.ip("link", "set", SPINE_ROOT_LINK, "up", ns=SPINE_NS)

        for leaf in lab.leaves:
            self.build_leaf(leaf)

        self.nft(SPINE_NS, "inet", self.spine_rules())
        for dst in lab.controller_routes():
            self.root_route(dst, lab.spine_controller_address)

    def build_leaf(self, leaf: Leaf) -> None:
        gw = leaf.gateway
        gns = gw.namespace
        self.namespace(gns, router=True)
        self.bridge(gns, mac(gw.address))
        net.ip("addr", "replace", f"{gw.address}/{leaf.prefix_len}", "dev", BRIDGE, ns=gns)
        net.ip("link", "set", BRIDGE, "up", ns=gns)
        # uplink to the spine
        self.veth(SPINE_NS, leaf.spine_link, gns, UPLINK, mac(leaf.spine_address), mac(gw.uplink_address))
        net.ip("addr", "replace", f"{leaf.spine_address}/30", "dev", leaf.spine_link, ns=SPINE_NS)
        net.ip("link", "set", leaf.spine_link, "up", ns=SPINE_NS)
        net.ip("addr", "replace", f"{gw.uplink_address}/30", "dev", UPLINK, ns=gns)
        net.ip("link", "set", UPLINK, "up", ns=gns)
        net.ip("route", "replace", "default", "via", leaf.spine_address, ns=gns)
        net.ip("route", "replace", str(leaf.cidr), "via", gw.uplink_address, ns=SPINE_NS)
        if leaf.floating_range is not None:
            net.ip("route", "replace", str(leaf.floating_range), "via", gw.uplink_address, ns=SPINE_NS)
            # an unassigned floating address is refused here instead of bouncing back to the spine
            net.ip("route", "replace", "unreachable", str(leaf.floating_range), ns=gns)
            self.nft(gns, "ip", self.floating_rules(leaf))
        for i, host in enumerate(leaf.hosts):
            self.build_host(leaf, host, i)

    def build_host(self, leaf: Leaf, host: Host, i: int) -> None:
        ns = host.namespace
        self.namespace(ns)
        port = f"{LINK_PREFIX}h{i}"
        self.veth(leaf.gateway.namespace, port, ns, HOST_LINK, mac(host.address, port=True), mac(host.address))
        net.ip("link", "set", port, "master", BRIDGE, "up", ns=leaf.gateway.namespace)
        net.ip("addr", "replace", f"{host.address}/{leaf.prefix_len}", "dev", HOST_LINK, ns=ns)
        net.ip("link", "set", HOST_LINK, "up", ns=ns)
        net.ip("route", "replace", "default", "via", leaf.gateway.address, ns=ns)

    def spine_rules(self) -> str:
        lab = self.lab
        leaves = {leaf.name: leaf for leaf in lab.leaves}
        rules = ["ct state established,related accept"]
        ctl = lab.controller_routes()
        if ctl:  # nft rejects an empty anonymous set, so the rule exists only with members
            members = ", ".join(ctl)
            rules.append(f'iifname "{SPINE_ROOT_LINK}" ip daddr {{ {members} }} accept')
            rules.append(f'oifname "{SPINE_ROOT_LINK}" ip saddr {{ {members} }} accept')
        for a, b in lab.joins:
            for src, dst in ((leaves[a], leaves[b]), (leaves[b], leaves[a])):
                targets = [str(dst.cidr)] + ([str(dst.floating_range)] if dst.floating_range else [])
                rules.append(f"ip saddr {src.cidr} ip daddr {{ {', '.join(targets)} }} accept")
        # refuse rather than drop, so a path the lab file does not open fails at once
        rules.append("reject with icmpx type admin-prohibited")
        body = "\n".join("    " + r for r in rules)
        return f"  chain forward {{\n    type filter hook forward priority 0; policy drop;\n{body}\n  }}\n"

    def floating_rules(self, leaf: Leaf) -> str:
        joined = [
            str(other.cidr)
            for other in self.lab.leaves
            for a, b in self.lab.joins
            if leaf.name in (a, b) and other.name in (a, b) and other.name != leaf.name
        ]
        pre, post = [], []
        for h in leaf.hosts:
            if h.floating is None:
                continue
            pre.append(f"ip daddr {h.floating} dnat to {h.address}")
            # a host's own connections out of the site look like they come from its floating
            # address (as behind an OpenStack router), except towards joined leaves, which are
            # routed as they are
            cond = f"ip daddr != {{ {', '.join(joined)} }} " if joined else ""
            post.append(f'oifname "{UPLINK}" ip saddr {h.address} {cond}snat to {h.floating}')
        pre_body = "\n".join("    " + r for r in pre)
        post_body = "\n".join("    " + r for r in post)
        return (
            "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n"
            f"{pre_body}\n  }}\n"
            "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n"
            f"{post_body}\n  }}\n"
        )

    # --- keys and sshd

    def keys(self) -> None:
        import asyncssh  # lazy for start-up: `status` and `down` never make keys

        def ensure(path: Path, comment: str) -> None:
            if path.exists() and path.with_suffix(".pub").exists():
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
            path.write_bytes(key.export_private_key())
            path.chmod(0o600)
            path.with_suffix(".pub").write_bytes(key.export_public_key())

        ensure(self.paths.client_key, "oasis-lab-controller")
        client_pub = self.paths.client_key.with_suffix(".pub").read_text()
        for host in self.lab.hosts:
            ensure(self.paths.host_key(host.name), f"oasis-lab-host-{host.name}")
            ak = self.paths.sshd_dir(host.name) / "authorized_keys"
            if not ak.exists() or client_pub not in ak.read_text():
                with open(ak, "a") as fh:
                    fh.write(client_pub if client_pub.endswith("\n") else client_pub + "\n")
            self.paths.base_dir(host.name).mkdir(parents=True, exist_ok=True)
            # instances run as their projects' users, who pass through (not list) the way to their directories
            for d in (self.paths.root, self.paths.root / "hosts", self.paths.host_dir(host.name)):
                d.chmod(d.stat().st_mode | 0o111)

    def sshd_config(self, host: Host) -> Path:
        d = self.paths.sshd_dir(host.name)
        listen = "\n".join(f"ListenAddress {a}" for a in host.addresses)
        text = f"""\
# generated by oasis lab for host {host.name}; rewritten on every `oasis lab up`
Port {SSH_PORT}
{listen}
HostKey {self.paths.host_key(host.name)}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
# no PAM stack in a namespace, and the state dir may sit under a world-writable parent
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
MaxSessions 32
MaxStartups 64
SetEnv OASIS_LAB_HOST={host.name} OASIS_BASE_DIR={self.paths.base_dir(host.name)}
"""
        cfg = d / "sshd_config"
        if not cfg.exists() or cfg.read_text() != text:
            cfg.write_text(text)
        return cfg

    def sshd_running(self, host: Host) -> bool:
        rec = self.state.processes.get(host.name)
        if rec and net.alive(rec["pid"], rec["start"]):
            return True
        # state lost but the daemon survived: adopt it when it is really sshd in that namespace
        pidfile = self.paths.sshd_dir(host.name) / "sshd.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if _pid_in_ns(pid, host.namespace) and _comm(pid) == "sshd":
            self.state.processes[host.name] = {"pid": pid, "start": net.start_time(pid), "ns": host.namespace}
            self.state.save()
            return True
        return False

    def name_files(self) -> None:
        """Every lab host resolves every lab host's name from its own /etc/hosts (`ip netns exec` bind-mounts
        /etc/netns/<ns>/*), and has no name server: a lookup that would wait seconds for the machine's resolver
        fails at once instead (Java looks its own hostname up when it starts)."""
        hosts = "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in self.lab.hosts)
        for host in self.lab.hosts:
            d = NETNS_ETC / host.namespace
            d.mkdir(parents=True, exist_ok=True)
            for name, text in (("hosts", hosts), ("resolv.conf", "options timeout:1 attempts:1\n")):
                if not (d / name).exists() or (d / name).read_text() != text:
                    (d / name).write_text(text)

    def start_sshds(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.name_files()
        starting: list[tuple[Host, subprocess.Popen, Path]] = []
        for host in self.lab.hosts:
            cfg = self.sshd_config(host)
            if self.sshd_running(host):
                continue
            pidfile = self.paths.sshd_dir(host.name) / "sshd.pid"
            pidfile.unlink(missing_ok=True)
            log = self.paths.sshd_dir(host.name) / "sshd.log"
            # unshare --uts gives the host its own hostname; sshd then daemonizes and writes its
            # pid file once it listens, so the pid file is both the record and the readiness sign
            proc = subprocess.Popen(
                [
                    "ip", "netns", "exec", host.namespace, "unshare", "--uts", "sh", "-c",
                    'hostname "$0" && exec "$1" -f "$2" -E "$3"', host.name, SSHD, str(cfg), str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            starting.append((host, proc, pidfile))
        for host, proc, pidfile in starting:
            _, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                log = self.paths.sshd_dir(host.name) / "sshd.log"
                tail = log.read_text()[-500:] if log.exists() else ""
                raise LabError(f"sshd for {host.name} failed to start: {err.decode().strip()} {tail}".strip())
            deadline = time.monotonic() + 10
            pid = None
            while time.monotonic() < deadline:
                try:
                    pid = int(pidfile.read_text().split()[0])
                    break
                except (OSError, ValueError, IndexError):
                    time.sleep(0.01)
            if pid is None:
                raise LabError(f"sshd for {host.name} wrote no pid file {pidfile}")
            self.state.processes[host.name] = {"pid": pid, "start": net.start_time(pid), "ns": host.namespace}
            self._record({"kind": "process", "ns": host.namespace, "host": host.name, "pid": pid})


def mac(addr: str, port: bool = False) -> str:
    """A locally administered unicast MAC made from an interface's IPv4 address (02:00:a.b.c.d);
    the gateway-side bridge port of a host uses 06:00:<host address>."""
    octets = [int(o) for o in addr.split(".")]
    return ":".join(f"{b:02x}" for b in [0x06 if port else 0x02, 0x00, *octets])


def _pid_in_ns(pid: int, ns: str) -> bool:
    try:
        a = os.stat(f"/proc/{pid}/ns/net")
        b = os.stat(net.NETNS_DIR / ns)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def up(
    lab: Lab,
    state_dir: str | os.PathLike[str] | None = None,
    *,
    lab_file: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> UpResult:
    """Build (or complete) the lab; return where the manifest is. Idempotent."""
    require_root()
    t0 = time.monotonic()
    paths = Paths(state_dir_from_env(state_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    with _locked():
        state = State(paths)
        recorded = state.data.get("range")
        if recorded and recorded != str(lab.range):
            raise LabError(
                f"{paths.root} holds a lab on {recorded}, not {lab.range}; run `oasis lab down` first"
            )
        ours = {i["name"] for i in state.created if i["kind"] == "netns"}
        if SPINE_NS in net.namespaces() and SPINE_NS not in ours:
            raise LabError(
                f"a lab is already up (namespace {SPINE_NS} exists) but {paths.state_file} does not record it;"
                " use that lab's --state-dir, or run `oasis lab down` first"
            )
        state.data.update(range=str(lab.range), lab=lab.name, lab_file=lab_file)
        state.save()
        b = _Builder(lab, paths, state, log)
        b.build()
        b.keys()
        b.start_sshds()
        manifest = write_manifest(lab, paths)
        write_known_hosts(lab, paths)
        log(f"lab {lab.name!r} up: {len(lab.namespaces)} namespaces, {b.created} objects created")
        return UpResult(manifest=manifest, created=b.created, seconds=time.monotonic() - t0)


# --- down ----------------------------------------------------------------------------------


@dataclass
class DownResult:
    removed: list[str]
    seconds: float


def down(
    state_dir: str | os.PathLike[str] | None = None,
    lab: Lab | None = None,
    *,
    purge: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> DownResult:
    """Remove everything the lab made; safe to run any number of times."""
    require_root()
    t0 = time.monotonic()
    paths = Paths(state_dir_from_env(state_dir))
    removed: list[str] = []
    with _locked():
        state = State(paths) if paths.state_file.exists() else None
        created = state.created if state else []
        rng = (state.data.get("range") if state else None) or (str(lab.range) if lab else None)
        if rng is None:
            rng = str(load_lab().range)

        # 1. processes: recorded daemons first (only if still the same process), then anything
        #    left inside the lab's namespaces (sessions, daemons instances started over SSH)
        recorded = [(r["pid"], r.get("start")) for r in (state.processes if state else {}).values()]
        removed += [f"process {pid} (sshd)" for pid in net.kill_all(recorded)]
        lab_ns = [n for n in net.namespaces() if n.startswith(NS_PREFIX)]
        lab_ns += [i["name"] for i in created if i["kind"] == "netns" and i["name"] not in lab_ns]
        inside = [(pid, net.start_time(pid)) for ns in lab_ns for pid in net.netns_pids(ns)]
        removed += [f"process {pid} (in a lab namespace)" for pid in net.kill_all(inside)]
        # ... then the hosts' volumes: mounts under the lab's root, and the loop devices of its image files
        removed += volumes.release(paths.root)

        # 2. namespaces: their links, addresses, routes and nft tables go with them
        existing = set(net.namespaces())
        for ns in lab_ns:
            if ns in existing:
                net.ip("netns", "del", ns)
                removed.append(f"netns {ns}")
        for d in NETNS_ETC.glob(f"{NS_PREFIX}*"):  # the namespaces' /etc files (name_files)
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"files {d}")

        # 3. root namespace objects: recorded links and routes, then prefix sweep
        root_links = net.links()
        for item in created:
            if item["kind"] == "link" and item["ns"] is None and item["name"] in root_links:
                net.ip("link", "del", item["name"], check=False)
                removed.append(f"link {item['name']}")
        for name, entry in net.links().items():
            kind = entry.get("linkinfo", {}).get("info_kind")
            if name.startswith(LINK_PREFIX) and kind in ("veth", "bridge"):
                net.ip("link", "del", name, check=False)
                removed.append(f"link {name}")
        for item in created:
            if item["kind"] == "route" and item["ns"] is None and item["spec"][0] != "unreachable":
                if net.ip("route", "del", *item["spec"], check=False).returncode == 0:
                    removed.append(f"route {' '.join(item['spec'])}")
        for family, table in net.nft_tables():
            if table == NFT_TABLE:
                net.nft_delete_table(family, table)
                removed.append(f"nft table {family} {table}")

        # 4. the guard goes last, and only when no lab namespace is left
        left = [n for n in net.namespaces() if n.startswith(NS_PREFIX)]
        if left:
            raise LabError(f"namespaces still present: {', '.join(left)}; kept the unreachable route for {rng}")
        if net.has_route(rng, type_="unreachable"):
            net.ip("route", "del", "unreachable", rng)
            removed.append(f"route unreachable {rng}")

        # 5. files: the record and manifest always; keys and host dirs only with purge, so that a
        #    lab brought up again keeps the host keys the controller has pinned
        for p in (paths.state_file, paths.manifest, paths.known_hosts):
            p.unlink(missing_ok=True)
        for host_dir in (paths.root / "hosts").glob("*/sshd"):
            for f in ("sshd.pid", "sshd.log"):
                (host_dir / f).unlink(missing_ok=True)
        if purge and paths.root.exists():
            shutil.rmtree(paths.root)
    for r in removed:
        log(f"removed {r}")
    return DownResult(removed=removed, seconds=time.monotonic() - t0)


# --- status --------------------------------------------------------------------------------


@dataclass
class HostStatus:
    site: str
    leaf: str
    host: str
    role: str  # "gateway" or "host"
    address: str
    floating: str | None
    namespace: bool
    sshd_pid: int | None
    sshd_alive: bool
    port_open: bool


def _port_open_from(ns: str, addr: str, port: int = SSH_PORT) -> bool:
    # checked from the leaf's gateway namespace, which reaches every host of the leaf whatever the
    # controller's access mode is
    proc = net.run(["ip", "netns", "exec", ns, "nc", "-z", "-w", "1", addr, str(port)], check=False)
    return proc.returncode == 0


def status(lab: Lab, state_dir: str | os.PathLike[str] | None = None) -> list[HostStatus]:
    require_root()
    paths = Paths(state_dir_from_env(state_dir))
    state = State(paths) if paths.state_file.exists() else None
    present = set(net.namespaces())
    out: list[HostStatus] = []
    for leaf in lab.leaves:
        for host in (leaf.gateway, *leaf.hosts):
            rec = state.processes.get(host.name) if state else None
            alive = bool(rec) and net.alive(rec["pid"], rec.get("start"))
            ns_ok = host.namespace in present
            port = ns_ok and leaf.gateway.namespace in present and _port_open_from(leaf.gateway.namespace, host.address)
            out.append(
                HostStatus(
                    site=leaf.site,
                    leaf=leaf.name,
                    host=host.name,
                    role="gateway" if host.is_gateway else "host",
                    address=host.address,
                    floating=host.floating,
                    namespace=ns_ok,
                    sshd_pid=rec["pid"] if rec else None,
                    sshd_alive=alive,
                    port_open=port,
                )
            )
    return out


def tcp_reachable(addr: str, port: int = SSH_PORT, timeout: float = 1.0) -> bool:
    """From the root namespace; used by tests and status to show what the controller can reach."""
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False
