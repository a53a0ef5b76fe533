"""Serving the gateway: `oasis up` runs it on a thread of its own beside the API and the engine, `oasis gateway`
as a process of its own (any number of them: they keep nothing). TLS with the API's certificate (the
deployment's CA, `--tls`) when it is on; otherwise gRPC's local credentials, which take connections from this
machine only (loopback), whatever address the gateway listens on: the stock client's `sc://localhost:PORT/;token=`
uses exactly those, and no token crosses a network in the clear."""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path
from typing import Callable

import grpc

from oasis.config import Settings
from oasis.db.session import Database
from oasis.gateway.proxy import CHANNEL_OPTIONS, Gateway
from oasis.gateway.routes import Router
from oasis.identity import open_identity, policy
from oasis.remote.hosts import Remotes

log = logging.getLogger("oasis.gateway")
GRACE = 5.0
_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\s*", re.S)


class GatewayError(Exception):
    """The gateway cannot serve (its port is taken, its certificate unreadable): the message says why."""


def pem_blocks(data: bytes, kind: str) -> bytes:
    """The PEM blocks of `data` whose type ends with `kind` ("PRIVATE KEY", "CERTIFICATE"), in order: the API's
    key and certificate may share one file (oasis.tls), and gRPC takes them apart."""
    return b"".join(m.group(0) for m in _PEM.finditer(data) if m.group(1).endswith(kind.encode()))


def credentials(settings: Settings) -> grpc.ServerCredentials:
    if settings.tls_cert is None:
        return grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    try:
        key = pem_blocks(Path(settings.tls_key or settings.tls_cert).read_bytes(), "PRIVATE KEY")
        chain = pem_blocks(Path(settings.tls_cert).read_bytes(), "CERTIFICATE")
    except OSError as e:
        raise GatewayError(f"cannot read the TLS certificate or key: {e}") from e
    if not key or not chain:
        raise GatewayError("the TLS files hold no private key or no certificate")
    return grpc.ssl_server_credentials([(key, chain)])


def address(settings: Settings) -> str:
    host = settings.host
    return f"[{host}]:{settings.connect_port}" if ":" in host else f"{host}:{settings.connect_port}"


async def serve(settings: Settings, db: Database, stop: asyncio.Event, started: threading.Event | None = None,
                notify: Callable[[], None] = lambda: None) -> None:
    """Serve until `stop` is set, then give calls in flight GRACE seconds (a client reattaches to what it had).
    `notify` wakes the engine of this process, if any, when the gateway asks it for work."""
    remotes = Remotes()
    router = Router(db, open_identity(settings, db), remotes, policy.load(settings.policy_file))
    gateway = Gateway(router, notify=notify)
    # no SO_REUSEPORT (gRPC's default): a second gateway on a taken port must fail, not share it unseen
    server = grpc.aio.server(options=[*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((gateway.handler(),))
    try:
        bound = server.add_secure_port(address(settings), credentials(settings))
    except RuntimeError as e:  # gRPC's word for a port it could not bind
        raise GatewayError(f"cannot listen on {address(settings)}: {e}") from e
    if not bound:
        raise GatewayError(f"cannot listen on {address(settings)}: the port is taken or the address not this "
                           "machine's")
    await server.start()
    log.info("spark connect gateway on %s (%s)", address(settings),
             "TLS" if settings.tls_cert is not None else "local connections only, no TLS")
    if started is not None:
        started.set()
    warm = asyncio.create_task(router.keep_warm(stop))
    try:
        await stop.wait()
    finally:
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        await server.stop(GRACE)
        await gateway.upstreams.close()
        await remotes.close()


def start_thread(settings: Settings, db: Database, notify: Callable[[], None] = lambda: None
                 ) -> tuple[threading.Thread, asyncio.AbstractEventLoop, asyncio.Event] | None:
    """The gateway on a thread and event loop of its own (for `oasis up`); None, with the reason logged, where it
    cannot serve: the API and the engine go on without it."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(serve(settings, db, stop, started, notify))
        except GatewayError as e:
            failed.append(e)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    started.wait(60)
    if failed:
        log.error("the spark connect gateway is off: %s (give another --connect-port, or 0 for none)", failed[0])
        return None
    return thread, loop, stop
