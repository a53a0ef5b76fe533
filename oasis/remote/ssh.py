"""SshRemote: a host reached over SSH with asyncssh. One pooled connection per host (commands are channels on
it, not new connections), host keys pinned, a limit on concurrent channels, and three ways in: direct, through
a gateway host's connection (`tunnel`), or through a proxy command."""
from __future__ import annotations

import asyncio
import posixpath
import shlex
import uuid
import weakref
from dataclasses import dataclass, field

import asyncssh

from oasis import metrics

from oasis.remote.base import Channel, CommandFailed, RemoteError, Result, Unreachable, quote


def transport_reason(e: BaseException) -> str | None:
    """A short reason if `e` means the host could not be reached (rather than refusing us or failing a command);
    None otherwise. An authentication failure or an SFTP error is an answer from the host, not a transport one."""
    if isinstance(e, (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable, asyncssh.SFTPError)):
        return None
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "connection timed out"
    if isinstance(e, asyncssh.ChannelOpenError):
        return f"could not open a channel: {e.reason}"
    if isinstance(e, asyncssh.DisconnectError):
        return f"connection lost: {e.reason}" if e.reason else "connection lost"
    if isinstance(e, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):  # e.g. a proxy command died
        return f"connection lost: {(e.strerror or type(e).__name__).lower()}"
    if isinstance(e, OSError):
        return (e.strerror or str(e) or type(e).__name__).lower()
    return None


# Every SshRemote of the process, for the pool-size gauge (read at scrape time: a closed one counts no more).
_REMOTES: "weakref.WeakSet[SshRemote]" = weakref.WeakSet()
metrics.SSH_CONNECTIONS.set_function(lambda: sum(1 for r in list(_REMOTES) if not r._gone()))


class HostKeyMismatch(RemoteError):
    pass


@dataclass
class SshTarget:
    address: str
    host_key: str  # the pinned public key line ("ssh-ed25519 AAAA...")
    client_key: str  # private key, OpenSSH format
    username: str = "root"
    port: int = 22
    proxy_command: str | None = None  # already filled in: "ip netns exec gw nc 10.0.0.5 22"
    gateway: "SshTarget | None" = None
    connect_timeout: float = 15.0
    max_channels: int = 8
    label: str = field(default="")


class SshRemote:
    def __init__(self, target: SshTarget, gateway: "SshRemote | None" = None) -> None:
        self.target = target
        self.address = target.address
        self.name = target.label or target.address  # in error messages
        self.gateway = gateway
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(target.max_channels)
        # forwarded ports (`tunnel`), each with the connection it rides on
        self._tunnels: dict[tuple[str, int], tuple[asyncssh.SSHClientConnection, asyncssh.SSHListener]] = {}
        _REMOTES.add(self)

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            t = self.target
            options = dict(
                host=t.address, port=t.port, username=t.username,
                client_keys=[asyncssh.import_private_key(t.client_key)],
                known_hosts=asyncssh.import_known_hosts(f"{t.address} {t.host_key}\n[{t.address}]:{t.port} {t.host_key}\n"),
                connect_timeout=t.connect_timeout, keepalive_interval=15, keepalive_count_max=3,
            )
            if self.gateway is not None:
                try:
                    options["tunnel"] = await self.gateway.connection()
                except Unreachable as e:
                    raise Unreachable(self.name, f"its way in, {e.host}, is unreachable: {e.reason}") from e
            elif t.proxy_command:
                options["proxy_command"] = shlex.split(t.proxy_command)
            try:
                self._conn = await asyncssh.connect(**options)
            except asyncssh.HostKeyNotVerifiable as e:
                raise HostKeyMismatch(f"{t.label or t.address}: host key does not match the pinned one ({e})") from e
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
                reason = transport_reason(e)
                if reason is not None:
                    raise Unreachable(self.name, reason) from e
                raise RemoteError(f"{t.label or t.address}: cannot connect over SSH: {e}") from e
            self._sftp = None
            return self._conn

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Result:
        conn = await self.connection()
        command = quote(argv)
        async with self._channels:
            with metrics.SSH_CHANNELS.track_inprogress():
                try:
                    r = await conn.run(command, input=stdin.decode() if stdin is not None else None, timeout=timeout,
                                       check=False)
                except asyncssh.TimeoutError as e:
                    raise RemoteError(f"{self.name}: timed out after {timeout}s: {command}") from e
                except (OSError, asyncssh.Error) as e:
                    reason = transport_reason(e)
                    if reason is not None:
                        raise Unreachable(self.name, reason) from e
                    raise RemoteError(f"{self.name}: connection lost: {e}") from e
        result = Result(r.exit_status if r.exit_status is not None else -1, str(r.stdout or ""), str(r.stderr or ""))
        if check and result.rc != 0:
            raise CommandFailed(command, result)
        return result

    async def open_channel(self, argv: list[str]) -> Channel:
        """One session channel on the pooled connection, for as long as the command lives. It takes none of
        the channel slots, which limit commands run at once: it is one channel whatever it carries."""
        conn = await self.connection()
        try:
            proc = await conn.create_process(quote(argv), encoding=None)
        except (OSError, asyncssh.Error) as e:
            reason = transport_reason(e)
            if reason is not None:
                raise Unreachable(self.name, reason) from e
            raise RemoteError(f"{self.name}: cannot start {quote(argv)}: {e}") from e

        async def close() -> None:
            try:
                proc.stdin.write_eof()
            except (OSError, asyncssh.Error):
                pass  # gone already
            proc.close()
            try:
                await asyncio.wait_for(proc.wait_closed(), 5)
            except (asyncio.TimeoutError, OSError, asyncssh.Error):
                pass

        return Channel(proc.stdin, proc.stdout, proc.stderr, close)

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        conn = await self.connection()
        if self._sftp is None:
            self._sftp = await conn.start_sftp_client()
        return self._sftp

    async def put(self, path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        try:
            sftp = await self._sftp_client()
            await sftp.makedirs(posixpath.dirname(path), exist_ok=True)
            # a name of this put's own, created exclusively with its final mode: two puts of one path never
            # write into one file, and a private file (a job's access file) is never readable by others
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            async with sftp.open(tmp, "xb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                await f.write(data)
            # mode and owner in one request (no more round trips than a chmod), before the rename
            uid, gid = owner if owner is not None else (None, None)
            await sftp.setstat(tmp, asyncssh.SFTPAttrs(permissions=mode, uid=uid, gid=gid))
            await sftp.posix_rename(tmp, path)
        except (OSError, asyncssh.Error) as e:
            reason = transport_reason(e)
            if reason is not None and (isinstance(e, asyncssh.Error) or self._gone()):
                raise Unreachable(self.name, reason) from e
            raise RemoteError(f"{self.name}: cannot write {path}: {e}") from e

    async def get(self, path: str) -> bytes:
        try:
            sftp = await self._sftp_client()
            async with sftp.open(path, "rb") as f:
                return await f.read()
        except (OSError, asyncssh.Error) as e:
            reason = transport_reason(e)
            if reason is not None and (isinstance(e, asyncssh.Error) or self._gone()):
                raise Unreachable(self.name, reason) from e
            raise RemoteError(f"{self.name}: cannot read {path}: {e}") from e

    def _gone(self) -> bool:
        """Whether the connection died: a local file error (OSError) on a live connection is not a transport one."""
        return self._conn is None or self._conn.is_closed()

    async def http_get(self, port: int, path: str, timeout: float = 10) -> bytes:
        """HTTP/1.0 GET to a port of this host, through the SSH connection: works wherever SSH does."""
        conn = await self.connection()
        reader, writer = await conn.open_connection(self.address, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {self.address}:{port}\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1:2]
        if not status or not status[0].startswith(b"2"):
            raise RemoteError(f"{self.address}:{port}{path}: HTTP {head[:80]!r}")
        return body

    async def tunnel(self, address: str, port: int) -> tuple[str, int]:
        conn = await self.connection()
        have = self._tunnels.get((address, port))
        if have is not None and have[0] is conn:
            return "127.0.0.1", have[1].get_port()
        try:
            listener = await conn.forward_local_port("127.0.0.1", 0, address, port)
        except (OSError, asyncssh.Error) as e:
            reason = transport_reason(e)
            if reason is not None:
                raise Unreachable(self.name, reason) from e
            raise RemoteError(f"{self.name}: cannot forward a port to {address}:{port}: {e}") from e
        if have is not None:
            have[1].close()
        self._tunnels[(address, port)] = (conn, listener)
        return "127.0.0.1", listener.get_port()

    async def close(self) -> None:
        for _, listener in self._tunnels.values():
            listener.close()
        self._tunnels.clear()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None
