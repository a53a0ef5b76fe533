"""Thin wrappers over ip(8), nft(8) and /proc that the lab builds with.

Every function either reads state or makes one change; callers check existence first so that
`up` twice changes nothing. Commands go through `run` so failures carry the command and stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

IP = "ip"
NFT = "nft"
NETNS_DIR = Path("/run/netns")


class LabCommandError(RuntimeError):
    def __init__(self, args: Sequence[str], code: int, stderr: str) -> None:
        self.cmd = list(args)
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"`{' '.join(self.cmd)}` failed ({code}): {self.stderr}")


def run(args: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabCommandError(args, proc.returncode, proc.stderr)
    return proc


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = [IP] if ns is None else [IP, "-n", ns]
    return run([*prefix, *args], check=check)


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([IP, "netns", "exec", ns, *args], check=check)


# --- reading -------------------------------------------------------------------------------


def namespaces() -> list[str]:
    out = ip("-j", "netns", "list").stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def links(ns: str | None = None) -> dict[str, dict]:
    """name -> ip -j link entry, in the given namespace (root when None)."""
    out = ip("-j", "-d", "link", "show", ns=ns).stdout.strip()
    return {entry["ifname"]: entry for entry in json.loads(out)} if out else {}


def routes(ns: str | None = None, table: str = "main") -> list[dict]:
    out = ip("-j", "route", "show", "table", table, ns=ns).stdout.strip()
    return json.loads(out) if out else []


def has_route(dst: str, ns: str | None = None, type_: str | None = None) -> bool:
    for r in routes(ns):
        if r.get("dst") == dst or (dst.endswith("/32") and r.get("dst") == dst[:-3]):
            if type_ is None or r.get("type", "unicast") == type_:
                return True
    return False


def route_get(addr: str, ns: str | None = None) -> str:
    """`ip route get` text, or the error text when the kernel refuses (e.g. unreachable)."""
    proc = ip("route", "get", addr, ns=ns, check=False)
    return (proc.stdout or proc.stderr).strip()


def nft_tables(ns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every nft table in the namespace."""
    args = [NFT, "-j", "list", "tables"]
    if ns is not None:
        args = [IP, "netns", "exec", ns, *args]
    proc = run(args, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [
        (item["table"]["family"], item["table"]["name"])
        for item in json.loads(proc.stdout)["nftables"]
        if "table" in item
    ]


def nft_apply(script: str, ns: str | None = None) -> None:
    args = [NFT, "-f", "-"]
    if ns is not None:
        args = [IP, "netns", "exec", ns, *args]
    run(args, input=script)


def nft_delete_table(family: str, name: str, ns: str | None = None) -> None:
    args = [NFT, "delete", "table", family, name]
    if ns is not None:
        args = [IP, "netns", "exec", ns, *args]
    run(args, check=False)


def netns_pids(ns: str) -> list[int]:
    proc = ip("netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


# --- processes -----------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """Kernel start time of a pid (clock ticks since boot): with the pid it names one process,
    so a recorded pid that the kernel later gave to someone else is never mistaken for ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses; fields resume after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is already dead
        return None
    return int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    return pid > 0 and started is not None and start_time(pid) == started


def kill(pid: int, started: int | None, timeout: float = 3.0) -> bool:
    """SIGTERM then SIGKILL one process we started, only if it is still that process."""
    if not alive(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def kill_all(procs: list[tuple[int, int | None]], timeout: float = 3.0) -> list[int]:
    """SIGTERM every listed process that is still the one recorded, wait for all of them together,
    SIGKILL what is left; return the pids that were signalled."""
    targets = [(pid, st) for pid, st in procs if alive(pid, st)]
    for pid, _ in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p, s) for p, s in targets):
        time.sleep(0.02)
    for pid, st in targets:
        if alive(pid, st):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return [pid for pid, _ in targets]


def prepare_ns(ns: str, forwarding: bool) -> None:
    """IPv4 only (the unreachable guard is IPv4; no IPv6 link-local chatter or addresses that
    appear later and make two snapshots differ), and forwarding for routers.
    Per-namespace sysctls, written through /proc so procps is not needed."""
    script = (
        "if [ -d /proc/sys/net/ipv6 ]; then echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6;"
        " echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; fi;"
        f" echo {1 if forwarding else 0} > /proc/sys/net/ipv4/ip_forward"
    )
    in_ns(ns, "sh", "-c", script)


def disable_ipv6_on(link: str) -> None:
    """For the one lab link in the root namespace."""
    path = Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6")
    if path.exists():
        path.write_text("1")
