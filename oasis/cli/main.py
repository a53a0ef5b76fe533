"""`oasis`: run the service (`up`, `api`, `engine`), try it (`demo`), and use it (plugins, templates, clusters,
binaries, data sources, jobs)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from oasis.cli import (binaries, clusters, datasources, export, history, identity, jobs, keypairs, keystone, lab,
                       plugins, pools, quotas, sites, templates, workflows)
from oasis.cli.common import Options, command, fail, options
from oasis.cli.demo import Demo
from oasis.config import Settings

app = typer.Typer(help="oasis: Spark and Dask clusters and jobs, behind OpenStack Sahara's API.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def main(ctx: typer.Context,
         os_cloud: str = typer.Option("oasis", envvar="OS_CLOUD", help="Cloud name in clouds.yaml"),
         url: Optional[str] = typer.Option(None, envvar="OASIS_URL", help="Service URL (e.g. http://127.0.0.1:8386)"),
         token: Optional[str] = typer.Option(None, envvar="OS_TOKEN", help="Token to use with --url"),
         state_dir: Optional[Path] = typer.Option(None, envvar="OASIS_STATE_DIR",
                                                  help="Where `oasis up` keeps its clouds.yaml (default ~/.oasis)"),
         os_cacert: Optional[Path] = typer.Option(None, "--os-cacert", envvar="OS_CACERT",
                                                  help="CA certificate to verify the service's HTTPS with "
                                                       "(default: the cloud's cacert, else the system's CAs)"),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables")) -> None:
    ctx.obj = Options(os_cloud=os_cloud, url=url, token=token, state_dir=state_dir, as_json=as_json,
                      cacert=os_cacert)


def _settings(state_dir: Optional[Path], database_url: Optional[str], host: str, port: int,
              object_store: Optional[str] = None, tls: Optional[str] = None, tls_cert: Optional[Path] = None,
              tls_key: Optional[Path] = None, tls_ca: Optional[Path] = None, log_format: Optional[str] = None,
              metrics_port: Optional[int] = None, ctx: Optional[typer.Context] = None,
              config: Optional[Path] = None, connect_port: Optional[int] = None) -> Settings:
    kwargs: dict = {"database_url": database_url, "host": host, "port": port, "object_store": object_store,
                    "metrics_port": metrics_port}
    if connect_port is not None:
        kwargs["connect_port"] = connect_port
    if log_format is not None:
        kwargs["log_format"] = log_format
    if state_dir is not None:
        kwargs["state_dir"] = state_dir
    # unset options keep the settings' own defaults (the OASIS_TLS* environment)
    given = {"tls": tls, "tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca}
    kwargs.update({k: v for k, v in given.items() if v is not None})
    if config is not None:
        kwargs.update(_from_file(ctx, config))
    try:
        return Settings(**kwargs)
    except ValueError as e:  # a setting of the environment that cannot be used (OASIS_QUOTA_VCPUS=many): one line
        raise fail(str(e)) from None


def _from_file(ctx: Optional[typer.Context], config: Path) -> dict:
    """What the configuration file sets, less what the command line itself gave (which wins); the file wins over
    the environment and the defaults."""
    from oasis.configfile import ConfigError, read_config

    try:
        values = read_config(config)
    except ConfigError as e:
        from rich.markup import escape  # "[section]" is not console markup here

        raise fail(escape(str(e)), 2) from None
    contexts = [c for c in (ctx, ctx.parent if ctx else None) if c is not None]

    def on_command_line(name: str) -> bool:
        # by name: typer's click and the click package may be two copies, each with its own enum
        return any(getattr(c.get_parameter_source(name), "name", "") == "COMMANDLINE" for c in contexts)

    return {name: value for name, value in values.items() if not on_command_line(name)}


def _run(run, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Start a server process; TLS settings or a policy file that cannot be used are one line, not a traceback."""
    from oasis.identity.policy import PolicyError, load
    from oasis.tls import TlsError

    try:
        load(settings.policy_file)  # before anything starts; the API's routes then reuse it
        run(settings)
    except (TlsError, PolicyError) as e:
        raise fail(str(e), 2) from None


STATE_DIR = typer.Option(None, "--state-dir", help="State directory (default ~/.oasis or $OASIS_STATE_DIR)")
DATABASE_URL = typer.Option(None, "--database-url", envvar="OASIS_DATABASE_URL",
                            help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite)")
OBJECT_STORE = typer.Option(None, "--object-store", envvar="OASIS_OBJECT_STORE", show_envvar=False,
                            help="The deployment's own store (internal-db:// binaries, job logs): file (default), "
                                 "swift+http://user:key@host:port/auth/v1.0?container=C or "
                                 "s3+http://access:secret@host:port?bucket=B")
HOST = typer.Option("127.0.0.1", help="Address to listen on")
PORT = typer.Option(8386, help="Port to listen on")
TLS = typer.Option(None, "--tls", envvar="OASIS_TLS", show_envvar=False, metavar="auto",
                   help="Serve HTTPS with a certificate from a CA made once in the state dir; clouds.yaml names "
                        "the CA (cacert) so that clients verify it")
TLS_CERT = typer.Option(None, "--tls-cert", envvar="OASIS_TLS_CERT", show_envvar=False, metavar="FILE",
                        help="Serve HTTPS with this certificate (PEM, with its chain); needs --tls-key")
TLS_KEY = typer.Option(None, "--tls-key", envvar="OASIS_TLS_KEY", show_envvar=False, metavar="FILE",
                       help="The private key of --tls-cert (PEM)")
TLS_CA = typer.Option(None, "--tls-ca", envvar="OASIS_TLS_CA", show_envvar=False, metavar="FILE",
                      help="The CA certificate that signed --tls-cert, for clients and sites to verify with "
                           "(default: the certificate itself if it is self-signed, else the system's CAs)")
CONFIG = typer.Option(None, "--config", envvar="OASIS_CONFIG", show_envvar=False, metavar="FILE",
                      help="Configuration file (INI: [identity], [keystone_authtoken], [database], [object_store]; "
                           "see docs/keystone.md); options given here win over it")


class LogFormat(str, Enum):
    text = "text"
    json = "json"


LOG_FORMAT = typer.Option(LogFormat.text, "--log-format", envvar="OASIS_LOG_FORMAT", show_envvar=False,
                          case_sensitive=False, help="Log lines as text, or as one JSON object per line with the request id and operation")
METRICS_PORT = typer.Option(None, "--metrics-port", envvar="OASIS_METRICS_PORT", show_envvar=False, min=1, max=65535,
                            help="Serve Prometheus metrics at http://HOST:PORT/metrics (default: not served)")

CONNECT_PORT = typer.Option(None, "--connect-port", envvar="OASIS_CONNECT_PORT", show_envvar=False, min=0,
                            max=65535, help="Port of the Spark Connect gateway on --host (default 15002; 0: none)")


@app.command()
def up(ctx: typer.Context, host: str = HOST, port: int = PORT, state_dir: Optional[Path] = STATE_DIR,
       database_url: Optional[str] = DATABASE_URL, object_store: Optional[str] = OBJECT_STORE,
       tls: Optional[str] = TLS, tls_cert: Optional[Path] = TLS_CERT, tls_key: Optional[Path] = TLS_KEY,
       tls_ca: Optional[Path] = TLS_CA, log_format: LogFormat = LOG_FORMAT, config: Optional[Path] = CONFIG,
       connect_port: Optional[int] = CONNECT_PORT) -> None:
    """Run the API, the engine and the Spark Connect gateway in one process (the embedded default: SQLite, the
    `local` site)."""
    from oasis.server import run_up  # lazy for start-up: the client commands never load the server

    _run(run_up, _settings(state_dir or options(ctx).state_dir, database_url, host, port, object_store,
                           tls, tls_cert, tls_key, tls_ca, log_format.value, ctx=ctx, config=config,
                           connect_port=connect_port))


@app.command()
def gateway(ctx: typer.Context, host: str = HOST, connect_port: Optional[int] = CONNECT_PORT,
            state_dir: Optional[Path] = STATE_DIR, database_url: Optional[str] = DATABASE_URL,
            tls: Optional[str] = TLS, tls_cert: Optional[Path] = TLS_CERT, tls_key: Optional[Path] = TLS_KEY,
            tls_ca: Optional[Path] = TLS_CA, log_format: LogFormat = LOG_FORMAT,
            config: Optional[Path] = CONFIG) -> None:
    """Run the Spark Connect gateway only (stateless: run as many as you like on one database)."""
    from oasis.server import run_gateway  # lazy for start-up: the client commands never load the server

    _run(run_gateway, _settings(state_dir or options(ctx).state_dir, database_url, host, 8386, None,
                                tls, tls_cert, tls_key, tls_ca, log_format.value, ctx=ctx, config=config,
                                connect_port=connect_port))


@app.command()
def api(ctx: typer.Context, host: str = HOST, port: int = PORT, state_dir: Optional[Path] = STATE_DIR,
        database_url: Optional[str] = DATABASE_URL, object_store: Optional[str] = OBJECT_STORE,
        tls: Optional[str] = TLS, tls_cert: Optional[Path] = TLS_CERT, tls_key: Optional[Path] = TLS_KEY,
        tls_ca: Optional[Path] = TLS_CA, log_format: LogFormat = LOG_FORMAT,
        config: Optional[Path] = CONFIG) -> None:
    """Run the HTTP API only (stateless: run as many as you like on one database; replicas behind one name
    share one certificate: give them --tls-cert/--tls-key)."""
    from oasis.server import run_api  # lazy for start-up: the client commands never load the server

    _run(run_api, _settings(state_dir or options(ctx).state_dir, database_url, host, port, object_store,
                            tls, tls_cert, tls_key, tls_ca, log_format.value, ctx=ctx, config=config))


@app.command()
def engine(ctx: typer.Context, state_dir: Optional[Path] = STATE_DIR,
           database_url: Optional[str] = DATABASE_URL, object_store: Optional[str] = OBJECT_STORE,
           log_format: LogFormat = LOG_FORMAT, metrics_port: Optional[int] = METRICS_PORT,
           host: str = typer.Option("127.0.0.1", help="Address the metrics port listens on"),
           config: Optional[Path] = CONFIG) -> None:
    """Run the engine only: the operation machines and periodic work (run as many as you like on one database)."""
    from oasis.server import run_engine  # lazy for start-up: the client commands never load the server

    run_engine(_settings(state_dir or options(ctx).state_dir, database_url, host, 8386, object_store,
                         log_format=log_format.value, metrics_port=metrics_port, ctx=ctx, config=config))


@command(app, "demo")
def demo(ctx: typer.Context,
         os_cloud: Optional[str] = typer.Option(None, "--os-cloud", help="Use this cloud from clouds.yaml"),
         url: Optional[str] = typer.Option(None, help="Use the oasis service at this URL"),
         token: Optional[str] = typer.Option(None, help="Token to use with --url"),
         state_dir: Optional[Path] = typer.Option(None, "--state-dir",
                                                  help="State directory of the embedded service (default: a new "
                                                       "temporary one)"),
         keep: bool = typer.Option(False, "--keep", help="Keep the clusters (and an embedded service) running"),
         workers: int = typer.Option(2, help="Workers per cluster"),
         only: Optional[str] = typer.Option(None, help="Only this plugin: dask or spark"),
         object_store: str = typer.Option("file", "--object-store",
                                          help="file, or swift: start a real OpenStack Swift for the demo, keep the "
                                               "service's binaries there and read the input from it")) -> None:
    """Bring up a Dask and a Spark cluster, run a wordcount on each, show the steps and timings, clean up.

    Uses a running service if one is found (--url, --os-cloud, or ~/.oasis/clouds.yaml); otherwise starts an
    embedded `oasis up` for the duration of the demo."""
    root = options(ctx)
    Demo(os_cloud=os_cloud or root.os_cloud, explicit_cloud=os_cloud is not None, url=url or root.url,
         token=token or root.token, state_dir=state_dir, keep=keep, workers=workers, only=only,
         object_store=object_store).run()


app.add_typer(plugins.app, name="plugin")
app.add_typer(templates.app, name="template")
app.add_typer(clusters.app, name="cluster")
app.add_typer(binaries.app, name="binary")
app.add_typer(datasources.app, name="datasource")
app.add_typer(jobs.app, name="job")
app.add_typer(sites.app, name="site")
app.add_typer(keypairs.app, name="keypair")
app.add_typer(quotas.app, name="quota")
app.add_typer(workflows.app, name="workflow")
app.add_typer(pools.app, name="pool")
app.add_typer(identity.projects, name="project")
app.add_typer(identity.users, name="user")
export.register(app)  # `oasis export`
history.register(app)  # `oasis history JOB`

app.add_typer(lab.lab_app, name="lab")
app.add_typer(keystone.app, name="keystone")


if __name__ == "__main__":
    app()
