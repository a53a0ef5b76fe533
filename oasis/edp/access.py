"""Per-job scoped access to data sources: a job never receives a user's credentials, only signed URLs limited to
the objects and prefixes of its own data sources, valid while the job runs and withdrawn when it ends.

- Swift: prefix-based temporary URLs (tempurl middleware). oasis keeps the account's second temp-URL key slot
  (X-Account-Meta-Temp-URL-Key-2) and registers each job holding URLs signed with it as account metadata
  (X-Account-Meta-Oasis-Job-<id>: <deadline>). `revoke` removes the job's entry and, when no other live job of
  that account remains, rotates the key: every URL signed with it dies at once. While other jobs of the same
  account still run, an ended job's URLs stay valid until the last of them ends or its own deadline passes,
  whichever is first (tempurl has two account keys, not one per job).
  Signatures: GET for inputs, GET+PUT for outputs, each on `key/` (prefix) and on `key` itself (one object).
- S3: presigned GET per input object (listed at grant time) and presigned PUT per planned output object
  (`key`, `key/part-00000` … `key/part-NNNNN`, `key/_SUCCESS`). A presigned request cannot be recalled, so it is
  short-lived instead: valid for `s3_ttl_s` (OASIS_S3_ACCESS_TTL_SECONDS, default 900 s), and the engine grants
  again every TTL/3 while the job runs (oasis.engine.jobs), rewriting the job's access file. When the job ends
  the file is removed and renewal stops, so S3 access ends at most one TTL after the job.

The trade-off: Swift access is withdrawn at once (the key is rotated), S3 access only by expiry; and a job that
outlives the control plane (no engine renewing) by more than one TTL loses its S3 access, while its Swift access
lasts to its deadline. URLs a job hands to its workers inside tasks are as fresh as the file was when the driver
read it (at least 2/3 of a TTL left while renewal works).

With a proxy domain (`[proxy] domain`, oasis.identity.proxy), those swift:// sources are reached by the job
itself, as its own proxy user: its entry holds that user's id, password and trust id and the objects' storage
URL, no signature; the user's deletion at the job's end is what withdraws that access.

Swift without stored credentials (the Keystone backend): a swift:// data source with no user name is reached
with a trust-scoped token of the job's (or its cluster's) trust, on the storage URL the token's catalog gives
for the trust's project (`trusted_swift`, from the engine). The token sets the account's temp-URL key and is then
dropped: the job gets only the temp URLs, as with stored credentials.

The job receives its access map (JSON: {data source URL: entry}) in a file of its job directory, mode 0600,
named by OASIS_DATA_ACCESS_FILE (OASIS_DATA_ACCESS, the map itself in the environment, is still read by
`oasis.jobkit`). What the engine keeps to renew and revoke (`JobAccess.record`) holds no secret.
"""
from __future__ import annotations

import json
import logging
import secrets as random
import time
from dataclasses import dataclass, field
from typing import Any

from oasis.db.models import DataSource
from oasis.edp.datasources import resolve_job
from oasis.storage import Endpoints, StoreError, store_for
from oasis.storage.secrets import Secrets
from oasis.storage.swift import SwiftConnection, SwiftStore, TokenSource, sign_prefix
from oasis.storage.urls import parse

log = logging.getLogger(__name__)

ENV = "OASIS_DATA_ACCESS"
FILE_ENV = "OASIS_DATA_ACCESS_FILE"
FILE_NAME = "access.json"  # in the job's directory on the host that runs its driver
KEY_SLOT = "X-Account-Meta-Temp-URL-Key-2"
JOB_META = "X-Account-Meta-Oasis-Job-"
S3_MAX_EXPIRES = 7 * 24 * 3600  # sigv4's limit
DEFAULT_OUTPUT_PARTS = 64


class AccessError(Exception):
    pass


@dataclass
class ProxyAccess:
    """A job's proxy user (oasis.identity.proxy): what the job authenticates with at Keystone, and how the
    engine lists the job's objects as that user."""

    auth_url: str
    user_id: str
    password: str = field(repr=False)
    trust_id: str = ""
    token: TokenSource | None = None  # a token of the proxy user on its trust, and the project's storage URL


@dataclass
class JobAccess:
    env: dict[str, str]
    record: list[dict[str, Any]] = field(default_factory=list)  # what revoke needs; no secrets
    expires: int = 0


def _dir(key: str) -> str:
    return key if not key or key.endswith("/") else key + "/"


def _job_tag(job_id: str) -> str:
    return job_id.replace("-", "")[:32]


# --- Swift --------------------------------------------------------------------------------------------------


def _swift_key(store: SwiftStore, job_id: str, expires: int) -> str:
    conn = store.conn
    conn.set_account_metadata({JOB_META + _job_tag(job_id): str(expires)})
    for _ in range(3):
        key = conn.account_metadata().get(KEY_SLOT.lower())
        if not key:
            conn.set_account_metadata({KEY_SLOT: random.token_urlsafe(32)})
            continue
        return key
    raise AccessError("could not set the Swift account's temp-URL key")


def _swift_entry(store: SwiftStore, key: str, job_id: str, mode: str, expires: int) -> dict[str, Any]:
    temp_key = _swift_key(store, job_id, expires)
    storage_url = store.conn.storage_url
    methods = ["GET", "PUT"] if "w" in mode else ["GET"]

    def sigs(prefix: str) -> dict[str, str]:
        return {m: sign_prefix(temp_key, m, expires, storage_url, store.container, prefix) for m in methods}

    entry: dict[str, Any] = {"kind": "swift-tempurl", "storage_url": storage_url, "container": store.container,
                             "key": key, "expires": expires, "prefix": _dir(key), "sig": sigs(_dir(key))}
    if key and not key.endswith("/"):
        entry["object_sig"] = sigs(key)  # the object `key` itself: a prefix signature on the exact name
    entry["objects"] = _listing(store, key)
    return entry


def _proxy_entry(store: SwiftStore, key: str, mode: str, proxy: ProxyAccess) -> dict[str, Any]:
    """What a job with a proxy user needs to reach one data source itself: its Keystone credentials (the job's
    own user, trust-scoped) and where the objects are; no signature, nothing of the account's keys."""
    return {"kind": "swift-proxy", "auth_url": proxy.auth_url, "user_id": proxy.user_id,
            "password": proxy.password, "trust_id": proxy.trust_id, "storage_url": store.conn.storage_url,
            "container": store.container, "key": key, "prefix": _dir(key), "objects": _listing(store, key),
            "methods": ["GET", "PUT"] if "w" in mode else ["GET"]}


def _listing(store: Any, key: str) -> list[list[Any]]:
    """The objects a data source names: `key` itself if it is an object, else every object under `key/`."""
    objects = [o for o in store.list(key) if o.key == key or o.key.startswith(_dir(key))]
    exact = [o for o in objects if o.key == key]
    chosen = exact or [o for o in objects if o.key != key]
    return [[o.key, o.size] for o in chosen if not o.key.endswith("/")]


def _swift_revoke(store: SwiftStore, job_id: str) -> bool:
    """Withdraw a job's registration; rotate the key when no live job remains. True when rotated."""
    conn = store.conn
    conn.set_account_metadata({JOB_META + _job_tag(job_id): ""})
    now = time.time()
    live = [k for k, v in conn.account_metadata().items()
            if k.startswith(JOB_META.lower()) and v and _int(v) > now]
    if live:
        return False
    conn.set_account_metadata({KEY_SLOT: random.token_urlsafe(32)})
    return True


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        return 0


# --- S3 -----------------------------------------------------------------------------------------------------


def _s3_entry(store: Any, key: str, mode: str, expires: int, parts: int,
              ttl_s: float | None = None) -> dict[str, Any]:
    now = int(time.time())
    ttl = max(1, min(S3_MAX_EXPIRES, expires - now, int(ttl_s) if ttl_s else S3_MAX_EXPIRES))
    expires = now + ttl
    objects = _listing(store, key) if "r" in mode else []
    entry: dict[str, Any] = {"kind": "s3-presigned", "bucket": store.bucket, "key": key, "expires": expires,
                             "prefix": _dir(key),
                             "objects": [[name, size, store.presign("GET", name, ttl)] for name, size in objects]}
    if "w" in mode:
        planned = [_dir(key) + f"part-{i:05d}" for i in range(parts)] + [_dir(key) + "_SUCCESS"]
        if key and not key.endswith("/"):
            planned.append(key)
        entry["put"] = {name: store.presign("PUT", name, ttl) for name in planned}
        entry["get"] = {name: store.presign("GET", name, ttl) for name in planned}
    return entry


# --- grant and revoke ---------------------------------------------------------------------------------------


def uses_trust(url: str, creds: dict[str, Any]) -> bool:
    """A swift:// location whose credentials name no user: reached on the project's trust, not stored secrets."""
    return parse(url).kind == "swift" and not (creds.get("user") or creds.get("username"))


def reaches_swift_on_trust(session: Any, job: Any, secrets: Secrets | None) -> bool:
    """Whether a job (its row, before or after it is stored) names a swift:// data source without stored
    credentials: one reached on its project's trust, or as its proxy user where there is a proxy domain."""
    for ds_id, url in resolve_job(session, job).urls.items():
        ds = session.get(DataSource, ds_id)
        stored = dict(ds.credentials or {}) if ds is not None else {}
        if uses_trust(url, secrets.decrypt_dict(stored) if secrets else stored):
            return True
    return False


def _store(loc: Any, creds: dict[str, Any], defaults: Endpoints | None, create: bool,
           trusted_swift: TokenSource | None) -> Any:
    if loc.kind == "swift" and trusted_swift is not None and not (creds.get("user") or creds.get("username")):
        return SwiftStore(SwiftConnection.with_token(trusted_swift), loc.container, create=create)
    return store_for(loc, creds, defaults, create=create)


def grant(job_id: str, sources: list[tuple[str, str, dict[str, Any], str]], secrets: Secrets | None,
          defaults: Endpoints | None = None, lifetime_s: float = 24 * 3600,
          output_parts: int = DEFAULT_OUTPUT_PARTS, s3_ttl_s: float | None = None,
          deadline: int | None = None, trusted_swift: TokenSource | None = None,
          proxy: ProxyAccess | None = None) -> JobAccess:
    """Scoped access for one job. `sources`: (data source id, runtime URL, stored credentials, mode "r"|"rw").
    Locations that are not object stores (file://, hdfs://) pass through without an entry. Swift URLs last until
    the job's deadline (`deadline`, else now + `lifetime_s`); S3 presigned requests `s3_ttl_s` at most. A renewal
    is the same call with the first grant's `deadline`. `trusted_swift` gives a trust-scoped token and the
project's storage URL for swift:// sources without a user name (None: they need stored credentials); with a
`proxy`, the job reaches those sources itself as its proxy user instead."""
    expires = int(deadline or time.time() + lifetime_s)
    access: dict[str, Any] = {}
    record: list[dict[str, Any]] = []
    try:
        for ds_id, url, stored, mode in sources:
            loc = parse(url)
            if not loc.is_object:
                continue
            creds = secrets.decrypt_dict(stored) if secrets else dict(stored or {})
            if proxy is not None and uses_trust(url, creds):
                store = SwiftStore(SwiftConnection.with_token(proxy.token), loc.container, create="w" in mode)
                access[url] = _proxy_entry(store, loc.key, mode, proxy)
                record.append({"data_source_id": ds_id, "url": url, "kind": loc.kind, "mode": mode, "proxy": True})
                continue
            store = _store(loc, creds, defaults, "w" in mode, trusted_swift)
            if loc.kind == "swift":
                access[url] = _swift_entry(store, loc.key, job_id, mode, expires)  # type: ignore[arg-type]
            else:
                access[url] = _s3_entry(store, loc.key, mode, expires, output_parts, s3_ttl_s)
            record.append({"data_source_id": ds_id, "url": url, "kind": loc.kind, "mode": mode})
    except StoreError as e:
        revoke(job_id, [(r["url"], _creds(sources, r["data_source_id"])) for r in record], secrets, defaults,
               trusted_swift)
        raise AccessError(f"granting the job access to its data failed: {e}") from None
    return JobAccess({ENV: json.dumps(access, separators=(",", ":"))} if access else {}, record, expires)


def _creds(sources: list[tuple[str, str, dict[str, Any], str]], ds_id: str) -> dict[str, Any]:
    return next(s[2] for s in sources if s[0] == ds_id)


def revoke(job_id: str, located: list[tuple[str, dict[str, Any]]], secrets: Secrets | None,
           defaults: Endpoints | None = None, trusted_swift: TokenSource | None = None) -> list[str]:
    """Withdraw what `grant` gave a job: `located` is (URL, stored credentials) of each recorded data source
    (`trusted_swift` as for `grant`: the account of sources without stored credentials).
    Returns the problems met (already logged without secrets); revocation goes on past one failing store."""
    problems = []
    done: set[tuple[str, str]] = set()
    for url, stored in located:
        loc = parse(url)
        if loc.kind != "swift":
            continue  # presigned S3 requests end with their expiry
        creds = secrets.decrypt_dict(stored) if secrets else dict(stored or {})
        trusted = trusted_swift is not None and uses_trust(url, creds)
        ident = ("trust", "") if trusted else \
            (str(creds.get("auth_url") or (defaults and defaults.swift_auth_url)), str(creds.get("user")))
        if ident in done:
            continue
        done.add(ident)
        try:
            _swift_revoke(_store(loc, creds, defaults, False, trusted_swift), job_id)
        except StoreError as e:
            log.warning("job %s: withdrawing its Swift access failed: %s", job_id, e)
            problems.append(str(e))
    return problems


# --- the engine's side: rows in, env out --------------------------------------------------------------------


def sources_for_job(session: Any, data: Any) -> list[tuple[str, str, dict[str, Any], str]]:
    """What `grant` needs, read from the rows (credentials as stored: encrypted); call inside the session, then
    `grant` outside it (it talks to the stores)."""
    sources = []
    for ds_id, url in data.urls.items():
        ds = session.get(DataSource, ds_id)
        if ds is not None:
            sources.append((ds_id, url, dict(ds.credentials or {}), data.modes.get(ds_id, "rw")))
    return sources


def sources_for_record(session: Any, record: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any], str]]:
    """What `grant` needs to renew a job's access, from its `runtime["access"]` record (the runtime URLs it was
    granted, placeholders already expanded)."""
    sources = []
    for r in record or []:
        ds = session.get(DataSource, r.get("data_source_id") or "")
        if ds is not None:
            sources.append((ds.id, r["url"], dict(ds.credentials or {}), r.get("mode") or "rw"))
    return sources


def needs_renewal(record: list[dict[str, Any]]) -> bool:
    """Only S3 access is short-lived; Swift temp URLs last to the job's deadline and are revoked by key."""
    return any(r.get("kind") == "s3" for r in record or [])


def located_for_job(session: Any, record: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """What `revoke` needs for a job's `runtime["access"]` record."""
    located = []
    for r in record or []:
        if r.get("proxy"):
            continue  # nothing to withdraw in the store: the proxy user's deletion ends that access
        ds = session.get(DataSource, r.get("data_source_id") or "")
        if ds is not None:
            located.append((r["url"], dict(ds.credentials or {})))
    return located


def output_parts(job_configs: dict[str, Any] | None) -> int:
    value = ((job_configs or {}).get("configs") or {}).get("edp.oasis.output_parts", DEFAULT_OUTPUT_PARTS)
    try:
        return max(1, min(10000, int(value)))
    except (TypeError, ValueError):
        return DEFAULT_OUTPUT_PARTS
