"""Settings shared by every process: read once from arguments and the environment, passed down explicitly."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TLS_OFF = ("", "off", "no", "false", "0")  # values of `tls` (OASIS_TLS) that mean plain HTTP


# The most instances one request may ask for, all node groups of all its clusters together (a node group's count, a
# cluster create's `count`, a scale's counts); the hosts' capacity bounds them further. Refused at once, before
# anything is allocated. A module constant: the request schemas are built from it at import.
MAX_INSTANCES = int(os.environ.get("OASIS_MAX_INSTANCES", "1000"))


@dataclass
class KeystoneAuth:
    """The `[keystone_authtoken]` section: where Keystone is and oasis's own service user there (what
    keystonemiddleware's options of the same names mean)."""

    auth_url: str  # where oasis authenticates and validates tokens, e.g. http://keystone:5000/v3
    username: str
    password: str = field(repr=False)
    project_name: str = "service"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    # What a client is told to authenticate at (the 401's WWW-Authenticate); default: auth_url.
    www_authenticate_uri: str = ""
    # Seconds a validated token is trusted without asking Keystone again (never beyond its expiry); 0: ask on
    # every request. A token revoked in Keystone is refused at most this long after.
    token_cache_time: float = 30.0
    cafile: str | None = None  # the CA that signed Keystone's certificate (default: the system's)

    def __post_init__(self) -> None:
        if not self.www_authenticate_uri:
            self.www_authenticate_uri = self.auth_url


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@dataclass
class Settings:
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("OASIS_STATE_DIR", "~/.oasis")).expanduser())
    database_url: str | None = None  # default: SQLite in the state dir
    host: str = "127.0.0.1"
    port: int = 8386
    lease_seconds: float = float(os.environ.get("OASIS_LEASE_SECONDS", "15"))
    poll_seconds: float = float(os.environ.get("OASIS_POLL_SECONDS", "0.2"))
    # How long an operation waits for hosts it cannot reach (site cut off) before it fails and rolls back.
    unreachable_grace_seconds: float = float(os.environ.get("OASIS_UNREACHABLE_GRACE_SECONDS", "1800"))
    # How long a token of the builtin identity lasts (a fraction: `0.001` is 3.6 s, what tests of trusts use).
    token_hours: float = float(os.environ.get("OASIS_TOKEN_HOURS", "24"))
    # Ports the `local` host hands to instances; several oasis on one machine should not share a range.
    local_ports: str = os.environ.get("OASIS_LOCAL_PORTS", "20000-29999")
    # The deployment's own store (see oasis.storage.open_store); None: files under the state dir.
    object_store: str | None = None
    # How long a job's S3 presigned requests live; the engine renews them every third of it while the job runs,
    # so a job's S3 access ends at most this long after the job (see oasis.edp.access).
    s3_access_ttl_seconds: float = float(os.environ.get("OASIS_S3_ACCESS_TTL_SECONDS", "900"))
    # Days a job's logs (and, once its cluster is gone, its row) are kept after it ended; 0 keeps them forever.
    job_retention_days: float = float(os.environ.get("OASIS_JOB_RETENTION_DAYS", "30"))
    # How often each Active cluster is verified (its framework and its hosts: oasis.engine.verification); 0: only
    # when asked (Sahara's verification PATCH).
    verification_seconds: float = float(os.environ.get("OASIS_VERIFICATION_SECONDS", "300"))
    # Lifecycle (oasis.db.lifecycle): an Active cluster with no job and no client for this long is deleted unless
    # it set its own `idle_delete_after` (0: never); a day, so that nothing leaks for long by default while no
    # working cluster is lost overnight. 0 turns the default off. And a cluster left in Error with no operation is
    # deleted after `error_cluster_grace_seconds` (0: never), time enough to read why it failed.
    idle_delete_after_seconds: float = float(os.environ.get("OASIS_IDLE_DELETE_AFTER_SECONDS", "86400"))
    error_cluster_grace_seconds: float = float(os.environ.get("OASIS_ERROR_CLUSTER_GRACE_SECONDS", "3600"))
    # TLS on the API (oasis.tls): "auto" makes a CA in the state dir and serves with a certificate from it; or
    # the operator's certificate and key, with the CA that signed them. `tls_ca` is what clients verify with.
    tls: str = field(default_factory=lambda: os.environ.get("OASIS_TLS", ""))
    tls_cert: Path | None = field(default_factory=lambda: _path_env("OASIS_TLS_CERT"))
    tls_key: Path | None = field(default_factory=lambda: _path_env("OASIS_TLS_KEY"))
    tls_ca: Path | None = field(default_factory=lambda: _path_env("OASIS_TLS_CA"))

    # Where the controller may connect on a user's behalf although the address is its own, loopback or link-local
    # (see oasis.storage.endpoints): `host`, `host:port` or CIDRs, comma-separated in OASIS_ALLOWED_ENDPOINTS.
    allowed_endpoints: list[str] = field(default_factory=lambda: _list(os.environ.get("OASIS_ALLOWED_ENDPOINTS")))

    # Logs: "text" (the default) or "json", one object per line (oasis.logconfig).
    log_format: str = field(default_factory=lambda: os.environ.get("OASIS_LOG_FORMAT", "text"))
    # The port an `oasis engine` serves /metrics on (on `host`); None: none. The API serves them on its own port.
    metrics_port: int | None = field(default_factory=lambda: _int_env("OASIS_METRICS_PORT"))
    # The Spark Connect gateway's port (oasis.gateway; on `host`), served by `oasis up` and `oasis gateway`;
    # 0: none. What `oasis cluster connect` names in its sc:// string.
    connect_port: int = field(default_factory=lambda: _connect_port_env())
    # The policy file (oslo.policy's YAML; `[oslo_policy] policy_file` of the configuration file) that overrides
    # the default rules (docs/policy.md); None: the defaults.
    policy_file: Path | None = field(default_factory=lambda: _path_env("OASIS_POLICY_FILE"))

    # Every project's limits unless an administrator set its own (PUT /v2/quotas/{project_id}; oasis/db/quotas.py):
    # -1 (or unset) is unlimited, the default, since a site's capacity and quotas already bound what it takes.
    quota_clusters: int = field(default_factory=lambda: _quota_env("OASIS_QUOTA_CLUSTERS"))
    quota_instances: int = field(default_factory=lambda: _quota_env("OASIS_QUOTA_INSTANCES"))
    quota_vcpus: int = field(default_factory=lambda: _quota_env("OASIS_QUOTA_VCPUS"))
    quota_ram_mb: int = field(default_factory=lambda: _quota_env("OASIS_QUOTA_RAM_MB"))
    quota_volume_gb: int = field(default_factory=lambda: _quota_env("OASIS_QUOTA_VOLUME_GB"))
    quota_running_jobs: int = field(default_factory=lambda: _quota_env("OASIS_QUOTA_RUNNING_JOBS"))

    # Who checks tokens: "builtin" (oasis's own database) or "keystone" (`keystone` says where; oasis.configfile).
    identity_backend: str = "builtin"
    keystone: KeystoneAuth | None = None
    # `[proxy] domain`: the Keystone domain where each job that reads or writes Swift gets a user of its own
    # (oasis.identity.proxy); None: jobs reach Swift through scoped temporary URLs. `roles`: what the job's trust
    # delegates to that user (what the project's Swift needs of a user to read and write its account).
    proxy_domain: str | None = None
    proxy_roles: list[str] = field(default_factory=lambda: ["member"])

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.state_dir / 'oasis.db'}"

    @property
    def quota_defaults(self) -> dict[str, int]:
        """The deployment's default limit per quota key (clusters, instances, ...); -1: unlimited."""
        return {key.removeprefix("quota_"): value for key, value in vars(self).items() if key.startswith("quota_")}

    @property
    def objects_dir(self) -> Path:
        return self.state_dir / "objects"

    @property
    def hosts_dir(self) -> Path:
        """Where the `local` site's host keeps its instances."""
        return self.state_dir / "hosts"

    @property
    def tls_on(self) -> bool:
        return self.tls_cert is not None or self.tls.strip().lower() not in TLS_OFF

    @property
    def public_url(self) -> str:
        return f"{'https' if self.tls_on else 'http'}://{self.host}:{self.port}"


DEFAULT_CONNECT_PORT = 15002  # Spark Connect's own default port


def _connect_port_env() -> int:
    port = _int_env("OASIS_CONNECT_PORT")
    return DEFAULT_CONNECT_PORT if port is None else port


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


# The largest quota limit: what a 32-bit integer column holds (PostgreSQL's INTEGER); ram_mb's is 2 PiB.
QUOTA_MAX = 2**31 - 1


def quota_limit(value: str) -> int:
    """A quota limit as the environment or the configuration file gives it: an integer 0 or more, or -1 (or
    nothing) for unlimited."""
    value = value.strip()
    if not value:
        return -1
    try:
        limit = int(value)
    except ValueError:
        limit = -2
    if not -1 <= limit <= QUOTA_MAX:
        raise ValueError(f"must be an integer from 0 to {QUOTA_MAX}, or -1 for unlimited")
    return limit


def _quota_env(name: str) -> int:
    try:
        return quota_limit(os.environ.get(name, ""))
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _path_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
