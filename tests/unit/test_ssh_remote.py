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
