"""The processes: `oasis up` (API and engine in one process), `oasis api` and `oasis engine`."""
from __future__ import annotations

import asyncio
import gc
import getpass
import logging
import signal
import threading

import uvicorn

from oasis import logconfig, metrics, tls
from oasis.api.app import create_app
from oasis.bootstrap import bootstrap, local_single_user, private_state_dir
from oasis.config import Settings
from oasis.db.encrypted import load_key
from oasis.db.session import Database
from oasis.engine.health import reachable_by_site
from oasis.engine.runner import Engine
from oasis.gateway.serve import GatewayError, serve, start_thread
from oasis.storage import ObjectStore, open_store
from oasis.storage.endpoints import deployment_policy, set_policy

log = logging.getLogger("oasis")
KEEP_ALIVE_SECONDS = 75


def _prepare(settings: Settings, serves_api: bool = True) -> tuple[Database, ObjectStore]:
    private_state_dir(settings.state_dir)
    # The database's secret columns use the state key, as the data sources' credentials do: one key per
    # deployment, shared by every replica through the state dir's secret.key or OASIS_SECRET_KEY.
    db = Database(settings.database_url, key=load_key(settings.state_dir))
    with db.setup_lock():  # replicas starting together: one migrates and bootstraps, the others then find it done
        db.migrate()
        bootstrap(settings, db, admin=serves_api)
    if local_single_user():
        log.warning("the local site is single-user: oasis runs unprivileged, so its instances run as this user "
                    "(%s), not as their projects' users; run oasis as root to keep projects apart", getpass.getuser())
    store = open_store(settings.object_store, settings.objects_dir)
    set_policy(deployment_policy(settings, store))  # what the engine checks again before it connects
    metrics.watch_hosts(lambda: reachable_by_site(db))
    metrics.watch_db_pool(lambda: getattr(db.engine.pool, "checkedout", lambda: 0)())
    return db, store


def _freeze_heap() -> None:
    """What starting made (modules, the app, the mappers: most of the process's objects) lives as long as the
    process; moved out of the collector's sight, a full collection while serving walks only what serving made.
    Before, one took about 90 ms, on whichever thread it fell: in the middle of a cluster's placement, say."""
    gc.collect()
    gc.freeze()


def _serve(settings: Settings, app) -> None:  # type: ignore[no-untyped-def]
    """Serve `app`; over TLS when the settings (made by oasis.tls.prepare) name a certificate."""
    ssl: dict = {}
    if settings.tls_cert is not None:
        ssl = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    # Keep-alive well beyond a client's polling interval: `openstack ... --wait` and saharaclient poll every few
    # seconds over one pooled connection, and a server that closes it after uvicorn's default 5 s of quiet races
    # the next request ("Remote end closed connection without response").
    # log_config=None: uvicorn's lines go through the process's own handler (oasis.logconfig), JSON included.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False, log_config=None,
                timeout_keep_alive=KEEP_ALIVE_SECONDS, **ssl)


def run_api(settings: Settings) -> None:
    logconfig.setup(settings.log_format)
    settings = tls.prepare(settings)  # before the first start writes clouds.yaml, which names the CA
    db, store = _prepare(settings)
    log.info("oasis api on %s", settings.public_url)
    app = create_app(settings, db, store)
    _freeze_heap()
    _serve(settings, app)


def run_engine(settings: Settings) -> None:
    logconfig.setup(settings.log_format)
    db, store = _prepare(settings, serves_api=False)
    engine = Engine(settings, db, store)
    if settings.metrics_port is not None:
        try:
            metrics.serve(settings.metrics_port, settings.host)
        except OSError as e:  # the port taken, or an address not of this machine: one line, not a traceback
            log.error("cannot serve metrics on %s:%d: %s", settings.host, settings.metrics_port, e.strerror or e)
            raise SystemExit(2) from None
        log.info("engine metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await engine.run(stop)

    _freeze_heap()
    asyncio.run(main())


def run_up(settings: Settings) -> None:
    """The embedded default: API and engine in one process, the engine on its own thread and event loop so
    that neither can stall the other. One registry: the engine's metrics are at the API's /metrics."""
    logconfig.setup(settings.log_format)
    settings = tls.prepare(settings)  # before the first start writes clouds.yaml, which names the CA
    db, store = _prepare(settings)
    engine = Engine(settings, db, store)
    app = create_app(settings, db, store, notify=engine.wake)
    _freeze_heap()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(engine.run(stop),), name="engine", daemon=True)
    thread.start()
    gateway = start_thread(settings, db, engine.wake) if settings.connect_port else None
    log.info("oasis up on %s (state in %s)", settings.public_url, settings.state_dir)
    try:
        _serve(settings, app)
    finally:
        loop.call_soon_threadsafe(stop.set)
        if gateway is not None:
            gateway[1].call_soon_threadsafe(gateway[2].set)
            gateway[0].join(timeout=30)
        thread.join(timeout=30)


def run_gateway(settings: Settings) -> None:
    """The Spark Connect gateway alone (stateless: as many as you like, on one database)."""
    logconfig.setup(settings.log_format)
    if not settings.connect_port:
        log.error("oasis gateway needs a port: --connect-port (or OASIS_CONNECT_PORT) is 0")
        raise SystemExit(2)
    settings = tls.prepare(settings)  # the API's certificate, from the deployment's CA
    db, _ = _prepare(settings, serves_api=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, db, stop)

    try:
        asyncio.run(main())
    except GatewayError as e:
        log.error("%s", e)
        raise SystemExit(2) from None
