"""An in-memory host for unit tests of the engine: files and directories, and the oasis-agent's commands
interpreted (daemons started at most once, jobs that end at once, authorized_keys edited), so that an operation
runs in milliseconds and its effects on the host can be compared. Only for unit tests: the integration tests
run the real agent on real hosts."""
from __future__ import annotations

import json
from typing import Any

from oasis.remote.base import CommandFailed, RemoteError, Result, quote
from oasis.remote.hosts import Remotes


class FakeHost:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.daemons: dict[str, int] = {}  # "DIR/NAME" -> pid
        self.jobs: dict[str, dict[str, Any]] = {}  # DIR -> its launch
        self.users: dict[str, set[str]] = {}  # project user -> the instances (keys) that hold it
        self.volumes: dict[str, str] = {}  # WHERE/oasis-KEY-N (a volume) -> where it is mounted
        self._pid = 1000

    def state(self) -> dict[str, Any]:
        """What can be compared between two runs (pids are not: they count starts, compared by `starts`)."""
        return {"files": dict(self.files), "dirs": set(self.dirs), "daemons": set(self.daemons),
                "users": {u: set(keys) for u, keys in self.users.items()}, "volumes": dict(self.volumes),
                "jobs": {d: (j["argv"], j.get("stopped", False), j.get("cancelled", False))
                         for d, j in self.jobs.items()}}

    def _new_pid(self) -> int:
        self._pid += 1
        return self._pid

    def _under(self, path: str) -> list[str]:
        return [p for p in {*self.files, *self.dirs, *self.daemons, *self.jobs}
                if p == path or p.startswith(path.rstrip("/") + "/")]

    def remove(self, path: str) -> None:
        for p in self._under(path):
            self.files.pop(p, None)
            self.dirs.discard(p)
            self.daemons.pop(p, None)
            self.jobs.pop(p, None)

    def agent(self, args: list[str], stdin: bytes | None = None) -> str:
        command, rest = args[0], args[1:]
        if command == "provision":  # prepare, the ports check (nothing held here), then the volumes
            spec = json.loads(stdin or b"{}")
            owner = json.loads(self.agent(["prepare", spec["dir"], spec["user"], spec["key"]]))
            out = {"owner": owner, "busy": [], "volumes": [], "done": ["prepare", "ports"]}
            vol = spec.get("volumes")
            if vol and vol.get("mounts"):
                out["volumes"] = json.loads(self.agent(["volumes-up", vol["backend"], vol["where"], spec["key"],
                                                        str(vol["size_gb"]), spec["dir"], spec["user"],
                                                        *vol["mounts"]]))
                out["done"].append("volumes")
            return json.dumps(out)
        if command == "is-dir":
            if rest[0] not in self.dirs:
                raise CommandFailed(f"is-dir {rest[0]}", Result(1, "", f"{rest[0]}: no such directory"))
            return ""
        if rest[:1] == ["--user"]:  # acting as an instance's user: the fake has no users to switch to
            rest = rest[2:]
            if rest[:1] == ["--home"]:
                rest = rest[2:]
        if command == "prepare":  # the instance's directories, owned by its project's user (made on first use)
            d, user, key = rest
            self.dirs.update({d, f"{d}/proc"})
            self.users.setdefault(user, set()).add(key)
            return json.dumps({"name": user, "uid": 2000 + sorted(self.users).index(user), "gid": 2000})
        if command == "release":
            d, user, key = rest
            self.remove(d)
            keys = self.users.get(user, set())
            keys.discard(key)
            if not keys:
                self.users.pop(user, None)
            return ""
        if command == "volumes-up":  # one volume per mount point, made (and mounted) once
            _kind, where, key, _size, d, _user, *relative = rest
            made = []
            for n, rel in enumerate(relative, 1):
                name = f"{where}/oasis-{key}-{n}"
                self.volumes[name] = f"{d}/{rel}"
                self.dirs.add(f"{d}/{rel}")
                made.append({"name": name.rsplit("/", 1)[1], "device": f"/dev/loop{n}", "mount": f"{d}/{rel}"})
            return json.dumps(made)
        if command == "volumes-down":  # found by name, however many are left
            _kind, where, key = rest
            for name in [v for v in self.volumes if v.startswith(f"{where}/oasis-{key}-")]:
                self.dirs.discard(self.volumes.pop(name))
            return ""
        if command == "start":
            d, name = rest[0], rest[1]
            key = f"{d}/{name}"
            if key not in self.daemons:  # the real agent starts a daemon at most once (a lock per daemon)
                self.daemons[key] = self._new_pid()
            return f"{self.daemons[key]}\n"
        if command == "stop":
            self.daemons.pop(f"{rest[0]}/{rest[1]}", None)
            return ""
        if command == "stop-all":
            for key in [k for k in self.daemons if k.startswith(rest[0].rstrip("/") + "/")]:
                del self.daemons[key]
            return ""
        if command == "busy-ports":
            return "[]"
        if command in ("authorize", "unauthorize"):
            path, arg = rest
            lines = self.files.get(path, b"").decode().splitlines()
            if command == "authorize":
                lines = lines if arg in lines else [*lines, arg]
            else:
                lines = [line for line in lines if arg not in line]
            self.files[path] = "".join(f"{line}\n" for line in lines).encode()
            return ""
        if command == "run":
            d, argv = rest[0], rest[rest.index("--") + 1:]
            job = self.jobs.setdefault(d, {"pid": self._new_pid(), "argv": argv})  # launched once per directory
            return f"{job['pid']}\n"
        if command == "wait":
            job = self.jobs.get(rest[0])
            if job is None:
                return json.dumps({"done": True, "rc": None, "lost": True})
            return json.dumps({"done": True, "rc": 0, "started": 1.7e9, "ended": 1.7e9 + 1,
                               "cancelled": bool(job.get("cancelled"))})
        if command == "cancel":
            if rest[0] in self.jobs:
                self.jobs[rest[0]]["cancelled"] = True
            return ""
        if command == "signal":  # STOP or CONT: a job's process group stopped or going again
            if rest[0] in self.jobs:
                self.jobs[rest[0]]["stopped"] = rest[1] == "STOP"
            return json.dumps({"running": rest[0] in self.jobs})
        raise RemoteError(f"fake agent: unknown command {command}")


class FakeRemote:
    def __init__(self, host: FakeHost, address: str) -> None:
        self.host, self.address = host, address

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Result:
        out, rc = "", 0
        if len(argv) > 2 and argv[1] == "-S":  # python -S oasis-agent-….py COMMAND …
            if argv[2] not in self.host.files:
                rc, out = 2, ""
                result = Result(rc, "", f"python: can't open file '{argv[2]}'")
                raise CommandFailed(quote(argv), result)
            out = self.host.agent(argv[3:], stdin)
        elif argv[:2] == ["mkdir", "-p"]:
            self.host.dirs.update(argv[2:])
        elif argv[:2] == ["test", "-d"]:
            rc = 0 if argv[2] in self.host.dirs else 1
        elif argv[:2] in (["rm", "-rf"], ["rm", "-f"]):
            for path in argv[2:]:
                self.host.remove(path)
        elif argv == ["true"]:
            pass
        elif argv == ["hostname"]:
            out = "fake\n"
        elif argv == ["nproc"]:
            out = "8\n"
        elif argv == ["cat", "/proc/meminfo"]:
            out = "MemTotal:       16384000 kB\n"
        elif len(argv) > 2 and argv[1] == "-c":  # the runtime probe of a site's enrollment
            out = "2026.1.0 4.0.0\n"
        elif argv[-1] == "-version":
            out = 'openjdk version "17"\n'
        else:
            raise RemoteError(f"fake host: unexpected command {quote(argv)}")
        result = Result(rc, out, "")
        if check and rc != 0:
            raise CommandFailed(quote(argv), result)
        return result

    async def put(self, path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        self.host.files[path] = data

    async def get(self, path: str) -> bytes:
        if path not in self.host.files:
            raise RemoteError(f"{path}: no such file")
        return self.host.files[path]

    async def http_get(self, port: int, path: str, timeout: float = 10) -> bytes:
        raise RemoteError("fake host: no HTTP")


class FakeRemotes(Remotes):
    """Every host of every site reached as one in-memory host per host row."""

    def __init__(self, hosts: dict[str, FakeHost]) -> None:
        super().__init__()
        self.hosts = hosts

    def for_host(self, host, site=None, via=None, context=None, client_key=None):  # noqa: ANN001, ANN201
        return FakeRemote(self.hosts.setdefault(host.id, FakeHost()), host.address)
