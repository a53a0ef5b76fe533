"""Object stores: the filesystem (embedded default), OpenStack Swift (native API) and any S3-compatible endpoint.

- `open_store(spec, objects_dir)`: the deployment's own store (where `internal-db://` binaries and job logs live),
  configured once: `file:///path` (default), `swift+http://USER:KEY@host:port/auth/v1.0?container=oasis`
  (or `.../v3?container=oasis&project=P` for Keystone), `s3+http://ACCESS:SECRET@host:port?bucket=oasis`;
  user names and secrets percent-encoded (tempauth's `test:tester` is `test%3Atester`).
- `store_for(location, credentials, defaults)`: a store for a data source's or a binary's own location, with its
  own endpoint and credentials (Sahara's `credentials` / `extra` names), falling back on the deployment's
  endpoints (`Endpoints`) where the credentials name none.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from oasis.storage import s3
from oasis.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, StoreError
from oasis.storage.endpoints import EndpointRefused, current_policy
from oasis.storage.filesystem import FilesystemStore
from oasis.storage.swift import SwiftConnection, SwiftStore
from oasis.storage.urls import Location, parse

__all__ = ["Endpoints", "ObjectInfo", "ObjectNotFound", "ObjectStore", "StoreError", "open_store", "store_for",
           "parse", "Location", "endpoints_of"]


@dataclass(frozen=True)
class Endpoints:
    """Where swift:// and s3:// locations are served when their credentials name no endpoint."""

    swift_auth_url: str | None = None
    s3_endpoint: str | None = None


def endpoints_of(store: Any) -> Endpoints:
    return getattr(store, "endpoints", None) or Endpoints()


def open_store(spec: str | None, objects_dir: Path) -> ObjectStore:
    """The deployment's store from `--object-store` / OASIS_OBJECT_STORE. Secrets in the spec are never logged;
    the returned store's repr shows the endpoint only."""
    if not spec or spec == "file" or spec.startswith("file://"):
        root = Path(spec[len("file://"):]) if spec and spec.startswith("file://") else objects_dir
        store: Any = FilesystemStore(root)
        store.endpoints = Endpoints()
        return store
    parts = urlsplit(spec)
    kind, _, transport = parts.scheme.partition("+")
    transport = transport or "https"
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    user, secret = unquote(parts.username or ""), unquote(parts.password or "")
    host = f"{transport}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    if kind == "swift":
        auth_url = host + (parts.path or "/auth/v1.0")
        conn = SwiftConnection(auth_url, user, secret, project=query.get("project"),
                               domain=query.get("domain", "Default"))
        store = SwiftStore(conn, query.get("container", "oasis"))
        store.endpoints = Endpoints(swift_auth_url=auth_url)
        return store
    if kind == "s3":
        client = s3.client(host, user, secret, region=query.get("region", "us-east-1"),
                           path_style=query.get("path_style", "true").lower() != "false")
        store = s3.S3Store(client, query.get("bucket", "oasis"))
        store.endpoints = Endpoints(s3_endpoint=host)
        return store
    raise ValueError(f"unknown object store kind {parts.scheme!r}: use file://, swift+http(s):// or s3+http(s)://")


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value is True or str(value).lower() in ("true", "1", "yes")


def s3_endpoint(credentials: dict[str, Any], defaults: Endpoints) -> str | None:
    endpoint = credentials.get("endpoint") or defaults.s3_endpoint
    if endpoint and "://" not in endpoint:  # Sahara's form: a host name, and `ssl` saying which scheme
        endpoint = ("https://" if _truthy(credentials.get("ssl"), True) else "http://") + endpoint
    return endpoint


def swift_connection(credentials: dict[str, Any], defaults: Endpoints):
    auth_url = credentials.get("auth_url") or defaults.swift_auth_url
    user = credentials.get("user") or credentials.get("username")
    key = credentials.get("password") or credentials.get("key")
    if not (auth_url and user and key):
        raise StoreError("a swift:// location needs credentials user and password (and auth_url where the "
                         "deployment has no Swift of its own)")
    return SwiftConnection(auth_url, user, key, project=credentials.get("project") or credentials.get("tenant"),
                           domain=credentials.get("domain") or "Default",
                           storage_url=credentials.get("storage_url"))


def store_for(location: Location | str, credentials: dict[str, Any], defaults: Endpoints | None = None,
              create: bool = False) -> ObjectStore:
    """The store holding an object URL's container or bucket, reached with the location's own credentials."""
    loc = parse(location) if isinstance(location, str) else location
    defaults = defaults or Endpoints()
    try:  # again just before connecting: a name may resolve elsewhere now than when the API checked it
        current_policy().check_credentials(credentials, "credentials")
    except EndpointRefused as e:
        raise StoreError(str(e)) from None
    if loc.kind == "swift":
        return SwiftStore(swift_connection(credentials, defaults), loc.container, create=create)
    if loc.kind == "s3":
        access, secret = credentials.get("accesskey"), credentials.get("secretkey")
        if not (access and secret):
            raise StoreError("an s3:// location needs credentials accesskey and secretkey")
        client = s3.client(s3_endpoint(credentials, defaults), access, secret,
                           region=credentials.get("region") or "us-east-1",
                           path_style=_truthy(credentials.get("bucket_in_path"), True))
        return s3.S3Store(client, loc.container, create=create)
    raise StoreError(f"{loc.scheme}:// is not an object store location")
