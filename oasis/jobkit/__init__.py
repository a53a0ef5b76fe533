"""What job scripts import to read and write their data sources: `from oasis import jobkit`.

A job holds no credential: oasis hands it signed URLs scoped to its own data sources (Swift temporary URLs with a
prefix, S3 presigned requests), in the file OASIS_DATA_ACCESS_FILE names (or, from older engines, in
OASIS_DATA_ACCESS itself). S3 URLs are short-lived and the engine rewrites the file with fresh ones while the job
runs: this module reads the file again whenever it changed, and once more when a store refuses a URL, so a job
longer than the URLs' lifetime keeps working. URLs handed to workers inside tasks are as fresh as the file was
when the driver built the task. This module turns data source
URLs (swift://container/path, s3://bucket/key, file:///path) into reads and writes through those URLs, with
nothing but the standard library, so that it works on the driver and on every worker of a multi-host cluster:

    jobkit.list_objects(url)          -> ["swift://c/in/a.txt", ...]   (the objects under a data source)
    jobkit.read_bytes(url) / read_text(url)
    jobkit.write_bytes(url, data) / write_text(url, text)

Dask:   bag = jobkit.dask_bag_from(url)            one partition per object, fetched on the workers
        jobkit.dask_write_text(bag, url)           one object per partition: url/part-00000 …
Spark:  rdd = jobkit.spark_lines(spark, url)       the driver lists, each executor fetches its own objects
        jobkit.spark_save_text(rdd, url)           each executor writes its partition: url/part-00000 …

Where the deployment has a proxy domain, a job that reads or writes its project's Swift without stored
credentials holds instead the credentials of its own proxy user (a Keystone user made for this job alone, with a
trust from the job's owner that ends with the job): the driver takes a trust-scoped token from Keystone with
them, and the tasks carry that token with each object's plain URL. Deleting the user at the job's end revokes the
token, so the workers' access ends with the job as well.

The pyspark wheel has no Hadoop S3 or Swift filesystem (no hadoop-aws, no hadoop-openstack), and giving Hadoop
the user's keys would put a long-lived credential on every instance; this is the way Spark jobs reach object
storage in oasis. Only the signed URLs travel to the workers, inside the tasks.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Iterable, Iterator
from urllib.parse import quote, unquote

ENV = "OASIS_DATA_ACCESS"
FILE_ENV = "OASIS_DATA_ACCESS_FILE"
RETRIES = 3


class AccessDenied(PermissionError):
    """No scoped access covers this location, or the store refused it (outside the prefix, or expired)."""


# --- locations ----------------------------------------------------------------------------------------------


def _split(url: str) -> tuple[str, str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "file", "", url
    scheme = "s3" if scheme == "s3a" else scheme
    if scheme in ("swift", "s3"):
        container, _, key = rest.partition("/")
        if scheme == "swift" and container.endswith(".sahara"):
            container = container[: -len(".sahara")]
        return scheme, unquote(container), unquote(key)
    return scheme, "", rest


def _dir(key: str) -> str:
    return key if not key or key.endswith("/") else key + "/"


def join(url: str, name: str) -> str:
    return (url if url.endswith("/") else url + "/") + name


_access_cache: tuple[Any, dict[str, Any]] | None = None


def access(reload: bool = False) -> dict[str, Any]:
    """The job's scoped access: {data source URL: entry}, from the file OASIS_DATA_ACCESS_FILE names (read again
    when it changed, or when `reload`), else from OASIS_DATA_ACCESS."""
    global _access_cache
    path = os.environ.get(FILE_ENV, "")
    if path:
        try:
            st = os.stat(path)
        except FileNotFoundError:  # removed: the job has ended, its access with it
            raise AccessDenied("this job's data access has been withdrawn (its access file is gone)") from None
        stamp: Any = (path, st.st_mtime_ns, st.st_size, st.st_ino)
        if reload or _access_cache is None or _access_cache[0] != stamp:
            with open(path, encoding="utf-8") as f:
                _access_cache = (stamp, json.load(f))
        return _access_cache[1]
    raw = os.environ.get(ENV, "")
    if _access_cache is None or _access_cache[0] != raw:
        _access_cache = (raw, json.loads(raw) if raw else {})
    return _access_cache[1]


def _fresh(url: str, method: str, act):
    """Run `act(target)`; when the store refuses it (expired), read the access file again, take a new token,
    and retry once."""
    try:
        return act(target(url, method))
    except AccessDenied:
        if not os.environ.get(FILE_ENV):
            raise
        access(reload=True)
        _tokens.clear()
        return act(target(url, method))


def _entry(url: str) -> tuple[dict[str, Any], str]:
    """The access entry covering an object URL, and the object's key."""
    scheme, container, key = _split(url)
    for entry in access().values():
        ekind = "swift" if entry["kind"].startswith("swift") else "s3"
        econt = entry.get("container") or entry.get("bucket")
        if ekind != scheme or econt != container:
            continue
        if key == entry["key"] or key.startswith(entry["prefix"]):
            return entry, key
    raise AccessDenied(f"this job has no access to {url}: only its own data sources are reachable")


_tokens: dict[tuple[str, str], str] = {}


def _proxy_token(entry: dict[str, Any]) -> str:
    """A token of the job's proxy user on its trust, from Keystone (kept for the job's later requests)."""
    key = (entry["user_id"], entry["trust_id"])
    if key not in _tokens:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": entry["user_id"], "password": entry["password"]}}},
            "scope": {"OS-TRUST:trust": {"id": entry["trust_id"]}}}}
        req = urllib.request.Request(entry["auth_url"].rstrip("/") + "/auth/tokens", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                _tokens[key] = r.headers["X-Subject-Token"]
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404):
                raise AccessDenied(f"this job's proxy user was refused by the identity service ({e.code}): "
                                   f"the job has ended or its access was withdrawn") from None
            raise OSError(f"POST {entry['auth_url']}/auth/tokens: HTTP {e.code}") from None
        except urllib.error.URLError as e:
            raise OSError(f"POST {entry['auth_url']}/auth/tokens: {e.reason}") from None
    return _tokens[key]


def target(url: str, method: str = "GET") -> Any:
    """What performs `method` (GET or PUT) on one object for this job: its signed URL, or (with a proxy user)
    its URL and the headers with the job's token."""
    entry, key = _entry(url)
    if entry["kind"] == "swift-proxy":
        if method not in entry.get("methods", ("GET", "PUT")):
            raise AccessDenied(f"this job may not {method} {url}")
        return (f"{entry['storage_url'].rstrip('/')}/{quote(entry['container'])}/{quote(key)}",
                {"X-Auth-Token": _proxy_token(entry)})
    return signed_url(url, method)


def signed_url(url: str, method: str = "GET") -> str:
    """The HTTP URL that performs `method` (GET or PUT) on one object, signed for this job (with a proxy user:
    the object's URL, which needs the job's token; see `target`)."""
    entry, key = _entry(url)
    if entry["kind"] == "swift-proxy":
        return target(url, method)[0]
    if entry["kind"] == "swift-tempurl":
        exact = key == entry["key"] and "object_sig" in entry
        sigs, prefix = (entry["object_sig"], key) if exact else (entry["sig"], entry["prefix"])
        if method not in sigs:
            raise AccessDenied(f"this job may not {method} {url}")
        return (f"{entry['storage_url'].rstrip('/')}/{quote(entry['container'])}/{quote(key)}"
                f"?temp_url_sig={sigs[method]}&temp_url_expires={entry['expires']}"
                f"&temp_url_prefix={quote(prefix, safe='')}")
    if method == "GET":
        for name, _size, get in entry.get("objects", []):
            if name == key:
                return get
        if key in entry.get("get", {}):
            return entry["get"][key]
    elif method == "PUT" and key in entry.get("put", {}):
        return entry["put"][key]
    raise AccessDenied(f"this job has no presigned {method} for {url} (S3 output objects are "
                       f"{entry.get('prefix', '')}part-00000 … and {entry.get('prefix', '')}_SUCCESS)")


# --- plain HTTP, for the driver and the workers alike -----------------------------------------------------


def _redact(url: str) -> str:
    return url.split("?", 1)[0]


def http_get(where: Any) -> bytes:
    """GET a target: a URL, or a URL and its headers."""
    return _http("GET", where)


def http_put(where: Any, data: bytes) -> None:
    _http("PUT", where, data)


def _http(method: str, where: Any, data: bytes | None = None) -> bytes:
    url, headers = (where, {}) if isinstance(where, str) else where
    for attempt in range(RETRIES):
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
        if data is not None:
            req.add_header("Content-Length", str(len(data)))
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise AccessDenied(f"{method} {_redact(url)}: refused ({e.code})") from None
            if e.code == 404:
                raise FileNotFoundError(_redact(url)) from None
            if e.code < 500 or attempt == RETRIES - 1:
                raise OSError(f"{method} {_redact(url)}: HTTP {e.code}") from None
        except urllib.error.URLError as e:
            if attempt == RETRIES - 1:
                raise OSError(f"{method} {_redact(url)}: {e.reason}") from None
        time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


# --- reading and writing by data source URL ----------------------------------------------------------------


def list_objects(url: str) -> list[str]:
    """The object URLs a data source names (listed by oasis when the job started), or the files of a
    directory for file://."""
    scheme, container, key = _split(url)
    if scheme == "file":
        if os.path.isdir(key):
            return sorted("file://" + os.path.join(root, f) for root, _d, files in os.walk(key) for f in files
                          if not f.startswith((".", "_")))
        return ["file://" + key]
    entry, _ = _entry(url)
    names = [o[0] for o in entry.get("objects", [])]
    wanted = [n for n in names if n == key or n.startswith(_dir(key))] if key != entry["key"] else names
    return [f"{scheme}://{container}/{n}" for n in wanted if not n.rsplit("/", 1)[-1].startswith(("_", "."))]


def read_bytes(url: str) -> bytes:
    scheme, _container, key = _split(url)
    if scheme == "file":
        with open(key, "rb") as f:
            return f.read()
    return _fresh(url, "GET", http_get)


def read_text(url: str, encoding: str = "utf-8") -> str:
    """One object, or all the objects under a data source URL one after the other."""
    objects = list_objects(url) if _split(url)[0] != "file" or os.path.isdir(_split(url)[2]) else [url]
    if len(objects) == 1 and objects[0] == url:
        return read_bytes(url).decode(encoding)
    return "".join(read_bytes(o).decode(encoding) for o in objects)


def write_bytes(url: str, data: bytes) -> None:
    scheme, _container, key = _split(url)
    if scheme == "file":
        os.makedirs(os.path.dirname(key) or ".", exist_ok=True)
        with open(key, "wb") as f:
            f.write(data)
        return
    _fresh(url, "PUT", lambda signed: http_put(signed, data))


def write_text(url: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(url, text.encode(encoding))


def _part(url: str, index: int) -> str:
    return join(url, f"part-{index:05d}")


def reader_urls(url: str) -> list[Any]:
    """Per object: a target any worker can GET with nothing but HTTP (a signed URL, or a URL and the job's
    token), or a file:// URL."""
    return [o if o.startswith("file://") else target(o, "GET") for o in list_objects(url)]


def writer_urls(url: str, parts: int) -> list[Any]:
    return [_part(url, i) if url.startswith("file://") else target(_part(url, i), "PUT") for i in range(parts)]


# --- functions run on the workers: plain HTTP with a signed URL, nothing else ---------------------------------


def _is_file(where: Any) -> bool:
    return isinstance(where, str) and where.startswith("file://")


def fetch_lines(url: Any) -> list[str]:
    if _is_file(url):
        with open(url[len("file://"):], encoding="utf-8") as f:
            return f.read().splitlines()
    return http_get(url).decode("utf-8").splitlines()


def store_lines(url: Any, lines: Iterable[Any]) -> int:
    text = "".join(f"{line}\n" for line in lines)
    if _is_file(url):
        path = url[len("file://"):]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        http_put(url, text.encode("utf-8"))
    return text.count("\n")


def _by_value() -> None:
    """Ship this module inside the tasks, so that workers need nothing of oasis installed."""
    for name in ("cloudpickle", "pyspark.cloudpickle"):
        try:
            module = __import__(name, fromlist=["register_pickle_by_value"])
            module.register_pickle_by_value(sys.modules[__name__])
        except (ImportError, AttributeError, ValueError):
            pass


# --- Dask ---------------------------------------------------------------------------------------------------


def dask_bag_from(url: str):
    """A dask bag of the lines of every object of a data source: one partition per object, each fetched on a
    worker through its signed URL."""
    import dask.bag as db  # only in a Dask job: jobkit itself needs the standard library alone
    from dask import delayed

    _by_value()
    urls = reader_urls(url)
    if not urls:
        return db.from_sequence([], npartitions=1)
    return db.from_delayed([delayed(fetch_lines)(u) for u in urls])


def dask_write_text(bag: Any, url: str) -> int:
    """Write each partition of a bag of lines to url/part-NNNNN from the workers; returns the line count."""
    import dask  # only in a Dask job, as above

    _by_value()
    parts = bag.to_delayed()
    targets = writer_urls(url, len(parts))
    counts = dask.compute(*[dask.delayed(store_lines)(t, p) for t, p in zip(targets, parts)])
    _success(url)
    return int(sum(counts))


# --- Spark --------------------------------------------------------------------------------------------------


def spark_lines(spark: Any, url: str):
    """An RDD of the lines of every object of a data source: the driver lists (from the job's access), the
    object URLs are parallelized one per partition, and each executor fetches its own objects over HTTP."""
    _by_value()
    sc = getattr(spark, "sparkContext", spark)
    urls = reader_urls(url)
    return sc.parallelize(urls, max(1, len(urls))).flatMap(fetch_lines)


def spark_save_text(rdd: Any, url: str) -> int:
    """Write each partition of an RDD of lines to url/part-NNNNN from the executors; returns the line count."""
    _by_value()
    n = rdd.getNumPartitions()
    scheme, _c, _k = _split(url)
    if scheme == "s3":  # presigned: only the planned part names exist
        entry, _ = _entry(join(url, "part-00000"))
        planned = sum(1 for k in entry.get("put", {}) if k.rsplit("/", 1)[-1].startswith("part-"))
        if n > planned:
            rdd, n = rdd.coalesce(planned), planned
    targets = writer_urls(url, n)

    def write(index: int, lines: Iterator[Any]) -> Iterator[int]:
        yield store_lines(targets[index], lines)

    total = sum(rdd.mapPartitionsWithIndex(write).collect())
    _success(url)
    return total


def _success(url: str) -> None:
    """Hadoop's marker of a complete output."""
    try:
        write_bytes(join(url, "_SUCCESS"), b"")
    except AccessDenied:
        pass
