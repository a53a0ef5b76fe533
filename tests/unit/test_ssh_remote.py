"""SshRemote against an in-process asyncssh server (a fast fake; the lab tests use real sshd)."""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh
import pytest

from oasis.remote.base import CommandFailed
from oasis.remote.ssh import HostKeyMismatch, SshRemote, SshTarget


class Server(asyncssh.SSHServer):
    connections = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        Server.connections += 1

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return dest_host == "127.0.0.1"  # direct-tcpip to loopback only, as sshd's forwarding would


async def handle(process: asyncssh.SSHServerProcess) -> None:
    # Run the command for real with a shell, as sshd would.
    proc = subprocess.run(process.command, shell=True, capture_output=True, text=True)
    process.stdout.write(proc.stdout)
    process.stderr.write(proc.stderr)
    process.exit(proc.returncode)


@pytest.fixture
def keys():
    host = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    return host, client


async def serve(host_key, client_key, root: Path):
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    return await asyncssh.create_server(
        Server, "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
        process_factory=handle, sftp_factory=True)


def target(port: int, host_key, client_key) -> SshTarget:
    return SshTarget(address="127.0.0.1", port=port, host_key=host_key.export_public_key().decode().strip(),
                     client_key=client_key.export_private_key().decode())


def test_commands_share_one_pooled_connection(keys, tmp_path: Path) -> None:
    async def main() -> None:
        server = await serve(*keys, tmp_path)
        port = server.sockets[0].getsockname()[1]
        remote = SshRemote(target(port, *keys))
        Server.connections = 0
        results = await asyncio.gather(*(remote.run(["echo", f"n{i}"]) for i in range(20)))
        assert [r.stdout.strip() for r in results] == [f"n{i}" for i in range(20)]
        assert Server.connections == 1
        with pytest.raises(CommandFailed) as e:
            await remote.run(["sh", "-c", "echo nope >&2; exit 4"])
        assert e.value.result.rc == 4 and "nope" in str(e.value)
        await remote.put(str(tmp_path / "a" / "b.txt"), b"hello", 0o600)
        assert await remote.get(str(tmp_path / "a" / "b.txt")) == b"hello"
        assert (tmp_path / "a" / "b.txt").stat().st_mode & 0o777 == 0o600
        await remote.close()
        server.close()

    asyncio.run(main())


def test_a_host_key_other_than_the_pinned_one_is_refused(keys, tmp_path: Path) -> None:
    async def main() -> None:
        server = await serve(*keys, tmp_path)
        port = server.sockets[0].getsockname()[1]
        impostor = asyncssh.generate_private_key("ssh-ed25519")
        remote = SshRemote(target(port, impostor, keys[1]))
        with pytest.raises(HostKeyMismatch):
            await remote.run(["true"])
        server.close()

    asyncio.run(main())


def test_http_to_a_port_of_the_host_rides_the_ssh_connection(keys, tmp_path: Path) -> None:
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = f"hello {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=web.serve_forever, daemon=True).start()

    async def main() -> None:
        server = await serve(*keys, tmp_path)
        remote = SshRemote(target(server.sockets[0].getsockname()[1], *keys))
        assert await remote.http_get(web.server_address[1], "/json/") == b"hello /json/"
        await remote.close()
        server.close()

    try:
        asyncio.run(main())
    finally:
        web.shutdown()


def test_limits_hold_concurrency_overall_and_per_cluster() -> None:
    from oasis.remote.base import Result
    from oasis.remote.limits import Limited

    class Slow:
        address = "x"
        running = peak = 0

        async def run(self, argv, *, timeout=300, check=True, stdin=None):  # type: ignore[no-untyped-def]
            Slow.running += 1
            Slow.peak = max(Slow.peak, Slow.running)
            await asyncio.sleep(0.01)
            Slow.running -= 1
            return Result(0, "", "")

    async def main() -> None:
        overall, cluster_a, cluster_b = asyncio.Semaphore(5), asyncio.Semaphore(3), asyncio.Semaphore(3)
        a, b = Limited(Slow(), cluster_a, overall), Limited(Slow(), cluster_b, overall)
        await asyncio.gather(*(a.run(["true"]) for _ in range(20)))
        assert Slow.peak == 3  # one cluster alone: its own limit
        Slow.peak = 0
        await asyncio.gather(*(r.run(["true"]) for r in (a, b) for _ in range(20)))
        assert Slow.peak == 5  # two clusters: the overall limit

    asyncio.run(main())
