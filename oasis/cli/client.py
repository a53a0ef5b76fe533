"""A small client for oasis's Sahara v2 API: Keystone v3 password auth from clouds.yaml (or a URL and a token),
unwrapped request bodies, wrapped responses, and one typed error for everything that is not a 2xx."""
from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I)

# resource path -> (singular key, list key)
KEYS = {
    "plugins": ("plugin", "plugins"),
    "images": ("image", "images"),
    "node-group-templates": ("node_group_template", "node_group_templates"),
    "cluster-templates": ("cluster_template", "cluster_templates"),
    "clusters": ("cluster", "clusters"),
    "job-binaries": ("job_binary", "binaries"),
    "data-sources": ("data_source", "data_sources"),
    "job-templates": ("job_template", "job_templates"),
    "jobs": ("job", "jobs"),
    "pools": ("pool", "pools"),
}


class OasisError(Exception):
    """Anything the CLI reports as a plain message rather than a traceback."""


class ConfigError(OasisError):
    pass


class UnreachableError(OasisError):
    pass


class ApiError(OasisError):
    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(f"{code} {name}: {message}")
        self.code, self.name, self.message = code, name, message


def default_state_dir() -> Path:
    return Path(os.environ.get("OASIS_STATE_DIR", "~/.oasis")).expanduser()


def clouds_yaml_candidates(state_dir: Path | None = None) -> list[Path]:
    """Where clouds.yaml is looked for, first match wins (openstacksdk's order, then oasis's state dir)."""
    paths = []
    if os.environ.get("OS_CLIENT_CONFIG_FILE"):
        paths.append(Path(os.environ["OS_CLIENT_CONFIG_FILE"]).expanduser())
    paths += [Path.cwd() / "clouds.yaml", Path("~/.config/openstack/clouds.yaml").expanduser(),
              Path("/etc/openstack/clouds.yaml"), (state_dir or default_state_dir()) / "clouds.yaml"]
    return paths


def load_cloud(name: str, state_dir: Path | None = None, path: Path | None = None) -> dict[str, Any]:
    """The named cloud's entry from the first clouds.yaml that has it."""
    candidates = [path] if path else clouds_yaml_candidates(state_dir)
    seen = []
    for p in candidates:
        if not p.is_file():
            continue
        seen.append(str(p))
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {p}: {e}") from None
        cloud = (data.get("clouds") or {}).get(name)
        if cloud is not None:
            cloud = dict(cloud)
            cloud["_path"] = str(p)
            return cloud
    where = ", ".join(seen) if seen else "none of " + ", ".join(str(p) for p in candidates)
    raise ConfigError(f"no cloud named '{name}' in clouds.yaml (looked in {where}); "
                      "start a service with `oasis up`, or pass --url and --token")


def verify_for(cloud: dict[str, Any] | None, cacert: str | Path | None = None) -> ssl.SSLContext | bool:
    """How HTTPS to the service is verified: with `cacert` (--os-cacert, OS_CACERT), else the cloud's `cacert`
    (what `oasis up --tls auto` writes), else the system's CAs; `verify: false` in clouds.yaml turns it off, as
    it does for openstacksdk."""
    cloud = cloud or {}
    path = cacert or cloud.get("cacert")
    if not path:
        return cloud.get("verify", True) is not False
    path = Path(str(path)).expanduser()
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as e:
        where = f" (cacert in {cloud['_path']})" if not cacert and cloud.get("_path") else ""
        raise ConfigError(f"cannot use the CA file {path}{where}: {getattr(e, 'strerror', None) or e}") from None


def error_from(response: httpx.Response) -> ApiError:
    """Sahara's {"error_code","error_name","error_message"}, Werkzeug's {"error","error_message"} and
    Keystone's {"error": {"code","title","message"}}, or whatever text came back."""
    code, name, message = response.status_code, response.reason_phrase.upper().replace(" ", "_"), response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if "error_name" in body or "error_message" in body:
            name = str(body.get("error_name") or name)
            message = str(body.get("error_message") or "")
        elif isinstance(body.get("error"), dict):
            err = body["error"]
            name = str(err.get("title") or name).upper().replace(" ", "_")
            message = str(err.get("message") or "")
    message = re.sub(r"\s*Error ID: [0-9a-f-]+\s*$", "", message.strip())
    return ApiError(code, name, message or response.reason_phrase)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def endpoint_for(url: str) -> str:
    """A service URL as given by a user (`http://host:8386`, `.../v2`, `.../v2/<project>`) -> the v2 endpoint."""
    url = url.rstrip("/")
    return url if re.search(r"/v2(/[^/]+)?$", url) else url + "/v2"


@dataclass
class Session:
    endpoint: str
    token: str
    project_id: str | None = None
    user: str | None = None


def authenticate(cloud: dict[str, Any], transport: httpx.BaseTransport | None = None,
                 auth_url: str | None = None, timeout: float = 30,
                 verify: ssl.SSLContext | bool | None = None) -> Session:
    """Keystone v3 password auth scoped to a project; the data-processing endpoint from the catalog. HTTPS is
    verified as `verify` says (default: as the cloud says, see verify_for)."""
    if verify is None:
        verify = verify_for(cloud)
    auth = cloud.get("auth") or {}
    auth_url = (auth_url or auth.get("auth_url") or "").rstrip("/")
    if not auth_url:
        raise ConfigError(f"cloud in {cloud.get('_path', 'clouds.yaml')} has no auth.auth_url")
    if not auth_url.endswith("/v3"):
        auth_url += "/v3"
    if auth.get("token") and cloud.get("endpoint_override"):
        return Session(endpoint_for(cloud["endpoint_override"]), auth["token"])
    if not auth.get("password"):
        raise ConfigError(f"the cloud in {cloud.get('_path', 'clouds.yaml')} names no user: add your "
                          f"auth.username, auth.password and auth.project_name (at {auth_url})")
    user: dict[str, Any] = {"password": auth.get("password", "")}
    if auth.get("user_id"):
        user["id"] = auth["user_id"]
    else:
        user["name"] = auth.get("username", "")
        user["domain"] = ({"id": auth["user_domain_id"]} if auth.get("user_domain_id")
                          else {"name": auth.get("user_domain_name", "Default")})
    if auth.get("project_id"):
        project: dict[str, Any] = {"id": auth["project_id"]}
    else:
        project = {"name": auth.get("project_name", ""),
                   "domain": ({"id": auth["project_domain_id"]} if auth.get("project_domain_id")
                              else {"name": auth.get("project_domain_name", "Default")})}
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}},
                     "scope": {"project": project}}}
    try:
        with httpx.Client(transport=transport, timeout=timeout, verify=verify) as http:
            r = http.post(f"{auth_url}/auth/tokens", json=body)
    except httpx.TransportError as e:
        raise UnreachableError(f"cannot reach the identity service at {auth_url}: {_reason(e)}") from None
    if r.status_code not in (200, 201):
        err = error_from(r)
        if r.status_code == 401:
            raise ApiError(401, "UNAUTHORIZED", f"authentication failed at {auth_url}: {err.message}")
        raise err
    token = r.headers.get("X-Subject-Token")
    if not token:
        raise ApiError(r.status_code, "BAD_RESPONSE", f"{auth_url}/auth/tokens returned no X-Subject-Token")
    info = (r.json() if r.content else {}).get("token") or {}
    endpoint = _catalog_endpoint(info.get("catalog") or [], cloud.get("interface", "public"),
                                 cloud.get("region_name"))
    return Session(endpoint_for(endpoint or _origin(auth_url)), token, (info.get("project") or {}).get("id"),
                   (info.get("user") or {}).get("name"))


def _catalog_endpoint(catalog: list[dict[str, Any]], interface: str, region: str | None) -> str | None:
    for service in catalog:
        if service.get("type") != "data-processing":
            continue
        endpoints = [e for e in service.get("endpoints") or [] if e.get("interface", "public") == interface]
        if region:
            endpoints = [e for e in endpoints if e.get("region") in (None, region)
                         or e.get("region_id") == region] or endpoints
        if endpoints:
            return endpoints[0]["url"]
    return None


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        why = re.search(r"certificate verify failed: ([^(]+)", text)
        return (f"its TLS certificate is not trusted ({why.group(1).strip() if why else 'verify failed'}); give "
                "the CA that signed it: cacert in clouds.yaml, --os-cacert or OS_CACERT")
    return text.split("] ")[-1] if text.startswith("[Errno") else text


class OasisClient:
    def __init__(self, endpoint: str, token: str, transport: httpx.BaseTransport | None = None,
                 timeout: float = 30, verify: ssl.SSLContext | bool = True) -> None:
        self.endpoint = endpoint_for(endpoint)
        self.token = token
        self.http = httpx.Client(base_url=self.endpoint, transport=transport, timeout=timeout, verify=verify,
                                 headers={"X-Auth-Token": token, "User-Agent": "oasis-cli"})

    @classmethod
    def connect(cls, os_cloud: str = "oasis", url: str | None = None, token: str | None = None,
                state_dir: Path | None = None, transport: httpx.BaseTransport | None = None,
                clouds_path: Path | None = None, cacert: str | Path | None = None) -> OasisClient:
        """--url and --token as given; otherwise the cloud's credentials (against --url's /v3 if one is given).
        HTTPS is verified with `cacert`, else the cloud's `cacert`, else the system's CAs."""
        if url and token:
            return cls(url, token, transport, verify=verify_for(None, cacert))
        if token and not url:
            raise ConfigError("--token needs --url")
        cloud = load_cloud(os_cloud, state_dir, clouds_path)
        verify = verify_for(cloud, cacert)
        session = authenticate(cloud, transport, auth_url=f"{_origin(url)}/v3" if url else None, verify=verify)
        return cls(endpoint_for(url) if url else session.endpoint, session.token, transport, verify=verify)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OasisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP -----------------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise UnreachableError(f"cannot reach oasis at {self.endpoint}: {_reason(e)}") from None
        if r.status_code >= 300:
            raise error_from(r)
        return r

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self.request(method, path, **kwargs)
        if not r.content:
            return {}
        try:
            return r.json()
        except ValueError:
            raise ApiError(r.status_code, "BAD_RESPONSE", f"{method} {path} did not return JSON") from None

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.json("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.json("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.json("PATCH", path, json=body)

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.json("PUT", path, json=body)

    def delete(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.json("DELETE", path, json=body) if body is not None else self.json("DELETE", path)

    # --- resources ----------------------------------------------------------------------------------------------

    def list(self, resource: str, **params: Any) -> list[dict[str, Any]]:
        """Every object of a resource, following Sahara's markers when the server paginates."""
        key = KEYS[resource][1]
        out: list[dict[str, Any]] = []
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self.get(f"/{resource}", **query)
            items = page.get(key) or []
            out += items
            nxt = (page.get("markers") or {}).get("next")
            if not nxt or not items or query.get("marker") == nxt:
                return out
            query["marker"] = nxt

    def show(self, resource: str, object_id: str, **params: Any) -> dict[str, Any]:
        return self.get(f"/{resource}/{object_id}", **params)[KEYS[resource][0]]

    def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"/{resource}", body)[KEYS[resource][0]]

    def find(self, resource: str, ref: str) -> dict[str, Any]:
        """An object by id or by exact name."""
        if UUID.match(ref):
            try:
                return self.show(resource, ref)
            except ApiError as e:
                if e.code != 404:
                    raise
        matches = [o for o in self.list(resource) if o.get("name") == ref or o.get("id") == ref]
        kind = KEYS[resource][0].replace("_", " ")
        if not matches:
            raise ApiError(404, "NOT_FOUND", f"no {kind} named or with id '{ref}'")
        if len(matches) > 1:
            raise ApiError(409, "AMBIGUOUS", f"{len(matches)} {kind}s are named '{ref}': use an id")
        return matches[0]

    def find_optional(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            return self.find(resource, name)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def cluster_or_none(self, cluster_id: str, progress: bool = False) -> dict[str, Any] | None:
        try:
            return self.show("clusters", cluster_id, **({"show_progress": "true"} if progress else {}))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def upload_internal(self, name: str, data: bytes) -> dict[str, Any]:
        """oasis's extension: raw bytes stored by the service, referenced as internal-db://<id>."""
        r = self.json("PUT", f"/job-binary-internals/{name}", content=data,
                      headers={"Content-Type": "application/octet-stream"})
        return r["job_binary_internal"]

    def upload_binary(self, name: str, data: bytes, description: str = "") -> dict[str, Any]:
        internal = self.upload_internal(name, data)
        body = {"name": name, "url": f"internal-db://{internal['id']}"}
        if description:
            body["description"] = description
        return self.create("job-binaries", body)

    def client_config(self, cluster_id: str) -> dict[str, Any]:
        """A cluster's addresses and client credentials (for members of its project only)."""
        return self.get(f"/clusters/{cluster_id}/client-config")["client_config"]

    def logs(self, job_id: str, stream: str = "stdout") -> str:
        return self.request("GET", f"/jobs/{job_id}/logs", params={"stream": stream}).text

    def log_piece(self, job_id: str, stream: str = "stdout", offset: int = 0) -> tuple[bytes, int, bool]:
        """A job's log from byte `offset`: (the bytes, the size known so far, whether the log is complete)."""
        r = self.request("GET", f"/jobs/{job_id}/logs", params={"stream": stream, "offset": offset})
        size = int(r.headers.get("X-Oasis-Log-Size", offset + len(r.content)))
        return r.content, size, r.headers.get("X-Oasis-Log-Complete", "true") == "true"
