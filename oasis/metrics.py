"""Prometheus metrics of every oasis process (`prometheus_client`'s default registry): the API's requests, the
engine's operations and steps, leases, retries, the job end → seen lag, hosts reachable per site and pool sizes.

Labels hold no project's data and no ids: a route is its template (`/v2/clusters/{id}`), an operation is its
model and name (`cluster`, `create`), a site is its name (an operator's word, a handful per deployment). The
`oasis api` process serves them at `GET /metrics`; `oasis engine --metrics-port` on a port of its own (`serve`);
`oasis up` has both in one process and one registry, at the API's `/metrics`. docs/metrics.md lists them all."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# --- the API ---------------------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("oasis_http_requests", "HTTP requests answered, by method, route template and status code",
                        ["method", "route", "code"])
HTTP_DURATION = Histogram("oasis_http_request_duration_seconds", "Time to answer an HTTP request, by method and "
                          "route template", ["method", "route"])

# --- the engine ------------------------------------------------------------------------------------------------

STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
OPERATIONS_IN_FLIGHT = Gauge("oasis_operations_in_flight", "Operations this engine is driving now",
                             ["model", "operation"])
STEP_DURATION = Histogram("oasis_step_duration_seconds", "Time a step of an operation took (one run of it, "
                          "waits for unreachable hosts included)", ["model", "operation", "step"],
                          buckets=STEP_BUCKETS)
OPERATIONS = Counter("oasis_operations", "Operations ended by this engine, by outcome: done (finished), failed "
                     "(rolled back with the user's reason), error (an engine bug: retried from its step), "
                     "lost (another engine took the lease)", ["model", "operation", "outcome"])
LEASE_TAKEOVERS = Counter("oasis_lease_takeovers", "Operations this engine took over from another engine (whose "
                          "lease ran out or whose heartbeat stopped)", ["model"])
RETRIES = Counter("oasis_operation_retries", "Steps run again: after an engine bug (engine_error) or while hosts "
                  "cannot be reached (unreachable)", ["model", "operation", "reason"])
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 45, 60, 120, 300, float("inf"))
JOB_END_LAG = Histogram("oasis_job_end_seen_lag_seconds", "From a job's end, as its host's agent reports it, to "
                        "the engine recording it", buckets=LAG_BUCKETS)

# --- pools -----------------------------------------------------------------------------------------------------

SSH_CONNECTIONS = Gauge("oasis_ssh_connections", "Open pooled SSH connections of this process")
SSH_CHANNELS = Gauge("oasis_ssh_channels_in_use", "SSH channels (commands) running now on pooled connections")
DB_CONNECTIONS = Gauge("oasis_db_connections_in_use", "Database connections checked out of this process's pool")


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request (`oasis.logconfig.RequestContext` calls it)."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def observe_job_end(ended: float | None) -> None:
    """A job's end (epoch seconds, as its agent saw it) has just been recorded."""
    if ended:
        JOB_END_LAG.observe(max(0.0, time.time() - float(ended)))


def model_name(tablename: str) -> str:
    """A model's label from its table: `clusters` → `cluster`."""
    return tablename[:-1] if tablename.endswith("s") else tablename


# --- hosts reachable, read at scrape time ----------------------------------------------------------------------

# site name -> (hosts reachable, hosts); a callable set by the process (it reads the health checks' records in the
# database, so every API and engine process reports the same numbers, whichever engine checked the site).
HostsSource = Callable[[], Mapping[str, tuple[int, int]]]
_hosts_source: HostsSource | None = None


def watch_hosts(source: HostsSource | None) -> None:
    global _hosts_source
    _hosts_source = source


class _HostsCollector(Collector):
    def collect(self) -> Iterable[GaugeMetricFamily]:
        if _hosts_source is None:
            return []
        try:
            counts = _hosts_source()
        except Exception:  # noqa: BLE001 - the database away for a moment: the other metrics still answer
            return []
        reachable = GaugeMetricFamily("oasis_hosts_reachable", "Hosts whose last health check answered, by site",
                                      labels=["site"])
        hosts = GaugeMetricFamily("oasis_hosts", "Hosts of each site", labels=["site"])
        for site, (up, total) in sorted(counts.items()):
            reachable.add_metric([site], up)
            hosts.add_metric([site], total)
        return [reachable, hosts]


REGISTRY.register(_HostsCollector())


def watch_db_pool(checked_out: Callable[[], int]) -> None:
    DB_CONNECTIONS.set_function(checked_out)


# --- exposition ------------------------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process's registry and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve `/metrics` on a port of its own (an engine process), from a daemon thread."""
    start_http_server(port, addr=host)
