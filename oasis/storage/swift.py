"""OpenStack Swift through its native API (plain httpx): tempauth v1 or Keystone v3 authentication, or a token
handed in by the caller (`token_source`: a trust-scoped token and the project's storage URL), objects in a
container, and the account's temp-URL keys with which per-job scoped URLs are signed (see oasis.edp.access).

Objects are streamed both ways: uploads go out chunked (Transfer-Encoding: chunked, CHUNK bytes at a time, from
bytes, a binary file or an iterator of chunks) and downloads come in as raw chunks, so neither side builds a second
copy of a large object, and `put_stream` / `get_stream` / `download` never hold a whole object at all."""
from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote, urlsplit

import httpx

from oasis.storage.base import ObjectInfo, ObjectNotFound, StoreError

LISTING_LIMIT = 10000
CHUNK = 1 << 20  # bytes per chunk sent or received: large enough that per-chunk costs vanish

Source = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
# Gives (token, storage URL) each time the connection needs a token: the first time and after a 401.
TokenSource = Callable[[], tuple[str, str]]


def _chunks(source: Source, size: int = CHUNK) -> Iterator[bytes]:
    """A body as chunks, without copying it: slices of a buffer, reads of a file, or the iterator's own chunks."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for start in range(0, len(view), size):
            yield view[start:start + size]  # type: ignore[misc]  # h11 sends any bytes-like object
    elif hasattr(source, "read"):
        while chunk := source.read(size):  # type: ignore[union-attr]
            yield chunk
    else:
        yield from source  # type: ignore[misc]


def _rewinder(source: Source):
    """How to send `source` again after a 401 (a new token): None when it cannot be read twice."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return lambda: None
    seek, tell = getattr(source, "seek", None), getattr(source, "tell", None)
    if seek is not None and tell is not None and getattr(source, "seekable", lambda: False)():
        start = tell()
        return lambda: seek(start)
    return None


class SwiftConnection:
    """One Swift account: authenticates lazily, re-authenticates once on 401. Thread-safe."""

    def __init__(self, auth_url: str, user: str, key: str, *, project: str | None = None,
                 domain: str = "Default", storage_url: str | None = None, timeout: float = 60,
                 token_source: TokenSource | None = None) -> None:
        self.auth_url, self.user, self._key = auth_url.rstrip("/"), user, key
        self.project, self.domain = project, domain
        self._storage_url, self._token = storage_url, None
        self._token_source = token_source
        self._lock = threading.Lock()
        self.http = httpx.Client(timeout=timeout)

    def __repr__(self) -> str:  # never the key or the token
        return f"SwiftConnection({self.auth_url!r}, user={self.user!r})"

    def close(self) -> None:
        self.http.close()

    # --- authentication -------------------------------------------------------------------------------------

    @classmethod
    def with_token(cls, token_source: TokenSource, timeout: float = 60) -> "SwiftConnection":
        """An account reached with tokens someone else obtains (oasis's trust-scoped ones): no user, no key."""
        return cls("", "", "", timeout=timeout, token_source=token_source)

    def _authenticate(self) -> None:
        if self._token_source is not None:
            self._token, url = self._token_source()
            self._storage_url = self._storage_url or url
            return
        try:
            if self.auth_url.endswith("/v3"):
                self._keystone_v3()
            else:
                r = self.http.get(self.auth_url, headers={"X-Auth-User": self.user, "X-Auth-Key": self._key})
                if r.status_code >= 300:
                    raise StoreError(f"Swift authentication of {self.user!r} at {self.auth_url} failed: "
                                     f"HTTP {r.status_code}", r.status_code)
                self._token = r.headers["X-Auth-Token"]
                self._storage_url = self._storage_url or r.headers["X-Storage-Url"]
        except httpx.TransportError as e:
            raise StoreError(f"Swift at {self.auth_url} unreachable: {type(e).__name__}") from None

    def _keystone_v3(self) -> None:
        body: dict[str, Any] = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": self.user, "password": self._key, "domain": {"name": self.domain}}}}}}
        if self.project:
            body["auth"]["scope"] = {"project": {"name": self.project, "domain": {"name": self.domain}}}
        r = self.http.post(self.auth_url + "/auth/tokens", json=body)
        if r.status_code >= 300:
            raise StoreError(f"Keystone authentication of {self.user!r} failed: HTTP {r.status_code}", r.status_code)
        self._token = r.headers["X-Subject-Token"]
        if not self._storage_url:
            for service in r.json()["token"].get("catalog", []):
                if service.get("type") == "object-store":
                    self._storage_url = next(e["url"] for e in service["endpoints"] if e["interface"] == "public")
            if not self._storage_url:
                raise StoreError("Keystone's catalog has no object-store endpoint")

    @property
    def storage_url(self) -> str:
        with self._lock:
            if self._storage_url is None:
                self._authenticate()
        return self._storage_url  # type: ignore[return-value]

    def _current_token(self, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None:
                self._authenticate()
            return self._token  # type: ignore[return-value]

    # --- requests -------------------------------------------------------------------------------------------

    def request(self, method: str, path: str = "", *, headers: dict[str, str] | None = None,
                params: dict[str, Any] | None = None, content: bytes | None = None) -> httpx.Response:
        """`path` is relative to the account: "", "container", "container/object" (already quoted)."""
        url = self.storage_url.rstrip("/") + ("/" + path if path else "")
        for attempt in (0, 1):
            token = self._current_token(renew=attempt == 1)
            try:
                r = self.http.request(method, url, headers={**(headers or {}), "X-Auth-Token": token},
                                      params=params, content=content)
            except httpx.TransportError as e:
                raise StoreError(f"Swift {method} /{path}: {type(e).__name__}") from None
            if r.status_code != 401:
                return r
        raise StoreError(f"Swift {method} /{path}: unauthorized", 401)

    def upload(self, path: str, source: Source, *, headers: dict[str, str] | None = None,
               chunk_size: int = CHUNK) -> httpx.Response:
        """PUT an object chunked from bytes, a binary file or an iterator of chunks. After a 401 the body is sent
        again with a new token where it can be read again (bytes, a seekable file); an iterator cannot."""
        url = self.storage_url.rstrip("/") + "/" + path
        rewind = _rewinder(source)
        for attempt in (0, 1):
            token = self._current_token(renew=attempt == 1)
            try:
                r = self.http.request("PUT", url, headers={**(headers or {}), "X-Auth-Token": token},
                                      content=_chunks(source, chunk_size))
            except httpx.TransportError as e:
                raise StoreError(f"Swift PUT /{path}: {type(e).__name__}") from None
            if r.status_code != 401 or rewind is None:
                break
            rewind()
        if r.status_code == 401:
            raise StoreError(f"Swift PUT /{path}: unauthorized", 401)
        return r

    @contextmanager
    def download(self, path: str) -> Iterator[httpx.Response]:
        """GET an object as an open streaming response (read it with iter_raw); re-authenticates once on 401."""
        url = self.storage_url.rstrip("/") + "/" + path
        for attempt in (0, 1):
            token = self._current_token(renew=attempt == 1)
            try:
                with self.http.stream("GET", url, headers={"X-Auth-Token": token}) as r:
                    if r.status_code == 401 and attempt == 0:
                        continue
                    yield r
                    return
            except httpx.TransportError as e:
                raise StoreError(f"Swift GET /{path}: {type(e).__name__}") from None
        raise StoreError(f"Swift GET /{path}: unauthorized", 401)

    def account_metadata(self) -> dict[str, str]:
        r = self.request("HEAD")
        _check(r, "HEAD account")
        return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("x-account-meta-")}

    def set_account_metadata(self, headers: dict[str, str]) -> None:
        _check(self.request("POST", headers=headers), "POST account metadata")

    def ensure_container(self, container: str) -> None:
        _check(self.request("PUT", quote(container)), f"PUT container {container}")

    def list(self, container: str, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        marker = ""
        while True:
            r = self.request("GET", quote(container), params={"format": "json", "prefix": prefix, "marker": marker,
                                                               "limit": LISTING_LIMIT})
            if r.status_code == 404:
                return found
            _check(r, f"list {container}/{prefix}")
            page = r.json()
            found += [ObjectInfo(o["name"], int(o["bytes"])) for o in page if "name" in o]
            if len(page) < LISTING_LIMIT:
                return found
            marker = page[-1]["name"]


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code >= 300:
        raise StoreError(f"Swift {what}: HTTP {r.status_code}", r.status_code)


def object_path(container: str, key: str) -> str:
    return f"{quote(container)}/{quote(key)}"


class SwiftStore:
    """One container of a Swift account as an ObjectStore."""

    kind = "swift"

    def __init__(self, conn: SwiftConnection, container: str, create: bool = True) -> None:
        self.conn, self.container = conn, container
        if create:
            conn.ensure_container(container)

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, data)

    def put_stream(self, key: str, source: Source, chunk_size: int = CHUNK) -> None:
        """Upload from bytes, a binary file or an iterator of chunks, chunked, never holding the whole object."""
        _check(self.conn.upload(object_path(self.container, key), source, chunk_size=chunk_size), f"PUT {key}")

    def get(self, key: str) -> bytes:
        return b"".join(self.get_stream(key))

    def get_stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object's bytes as they arrive, in chunks of at most `chunk_size`."""
        with self.conn.download(object_path(self.container, key)) as r:
            if r.status_code == 404:
                raise ObjectNotFound(key)
            _check(r, f"GET {key}")
            try:
                yield from r.iter_raw(chunk_size)
            except httpx.TransportError as e:
                raise StoreError(f"Swift GET {key}: {type(e).__name__}") from None

    def download(self, key: str, target: IO[bytes], chunk_size: int = CHUNK) -> int:
        """Write the object into a binary file as it arrives; returns the bytes written."""
        written = 0
        for chunk in self.get_stream(key, chunk_size):
            target.write(chunk)
            written += len(chunk)
        return written

    def delete(self, key: str) -> None:
        r = self.conn.request("DELETE", object_path(self.container, key))
        if r.status_code != 404:
            _check(r, f"DELETE {key}")

    def exists(self, key: str) -> bool:
        r = self.conn.request("HEAD", object_path(self.container, key))
        if r.status_code == 404:
            return False
        _check(r, f"HEAD {key}")
        return True

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.conn.list(self.container, prefix)


# --- temporary URLs -----------------------------------------------------------------------------------------


def sign_prefix(key: str, method: str, expires: int, storage_url: str, container: str, prefix: str) -> str:
    """The signature of a prefix-based temp URL: valid for `method` on every object of `container` whose name
    starts with `prefix`, until `expires` (a UNIX time), while `key` is one of the account's temp-URL keys."""
    path = urlsplit(storage_url).path.rstrip("/")
    body = f"{method}\n{expires}\nprefix:{path}/{container}/{prefix}"
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def temp_url(storage_url: str, container: str, name: str, sig: str, expires: int, prefix: str) -> str:
    query = f"temp_url_sig={quote(sig, safe='')}&temp_url_expires={expires}&temp_url_prefix={quote(prefix, safe='')}"
    return f"{storage_url.rstrip('/')}/{quote(container)}/{quote(name)}?{query}"
