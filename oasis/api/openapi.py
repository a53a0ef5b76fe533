"""The OpenAPI 3.0 document of the whole API, generated from the operation table (`app.state.api_routes`: Sahara's
resources, the version documents, the site join and Keystone's identity subset) and the same JSON schemas that
validate requests, so it cannot drift from what the server does. Served without a token at `GET /openapi.json`.

Every operation is listed once per API version under its canonical path (`/v2/clusters`); the server also
answers `/v2/{project_id}/clusters` and `…/clusters.json`, as Sahara does, which the description says."""
from __future__ import annotations

import copy
import re
from typing import Any

from oasis.api import schemas
from oasis.api.routing import KEYSTONE, MICROVERSION, V1, Routes, RouteSpec, dialect
from oasis.api.views import _V1_RENAMES
from oasis.db.quotas import KEYS as QUOTA_KEYS

TITLE = "oasis: OpenStack Sahara's data processing API (v2, v1.1, v1.0) and a Keystone v3 subset"

_str = {"type": "string"}
_nstr = {"type": "string", "nullable": True}
_bool = {"type": "boolean"}
_int = {"type": "integer"}
_obj = {"type": "object"}
_ts = {"type": "string", "nullable": True}


def _item(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_OWNED = {"id": _str, "name": _str, "project_id": _str, "is_public": _bool, "is_protected": _bool,
          "created_at": _ts, "updated_at": _ts}
_OWNED_REQ = list(_OWNED)
_NG = _item(["name", "count"], {"name": _str, "count": _int, "node_processes": {"type": "array", "items": _str},
                                 "node_configs": _obj, "instances": {"type": "array", "items": _obj}})

RESOURCES: dict[str, dict[str, Any]] = {
    "cluster": _item([*_OWNED_REQ, "plugin_name", "plugin_version", "status", "status_description", "node_groups",
                      "provision_progress", "info", "is_transient", "verification"],
                     {**_OWNED, "plugin_name": _str, "plugin_version": _str, "status": _str,
                      "status_description": _str, "description": _nstr, "cluster_template_id": _nstr,
                      "default_image_id": _nstr, "management_public_key": _str, "info": _obj,
                      "is_transient": _bool, "cluster_configs": _obj,
                      "node_groups": {"type": "array", "items": _NG},
                      "provision_progress": {"type": "array", "items": _obj}, "verification": _obj,
                      # oasis: the limits in force and when each deletes the cluster (oasis/db/lifecycle.py)
                      "lifecycle": _item(["idle_delete_after", "max_age", "delete_at", "deletes"], {
                          "idle_delete_after": {**_int, "nullable": True}, "idle_delete_after_from": _str,
                          "max_age": {**_int, "nullable": True}, "delete_at": _ts, "idle_since": _ts,
                          "busy": _nstr, "last_seen_in_use": _nstr,
                          "deletes": {"type": "array", "items": _item(["limit", "at", "seconds_left"], {
                              "limit": _str, "at": _str, "seconds_left": _int})}}),
                      "autoscaling": _obj}),
    "node_group_template": _item([*_OWNED_REQ, "plugin_name", "plugin_version", "flavor_id", "node_processes"],
                                 {**_OWNED, "plugin_name": _str, "plugin_version": _str,
                                  "flavor_id": {"oneOf": [_str, _int]},
                                  "node_processes": {"type": "array", "items": _str}, "node_configs": _obj}),
    "cluster_template": _item([*_OWNED_REQ, "plugin_name", "plugin_version", "node_groups"],
                              {**_OWNED, "plugin_name": _str, "plugin_version": _str,
                               "node_groups": {"type": "array", "items": _obj}, "cluster_configs": _obj}),
    "data_source": _item([*_OWNED_REQ, "type", "url", "description"],
                         {**_OWNED, "type": _str, "url": _str, "description": _str}),
    "job_binary": _item([*_OWNED_REQ, "url", "description"], {**_OWNED, "url": _str, "description": _str}),
    "job_binary_internal": _item([*_OWNED_REQ, "datasize"], {**_OWNED, "datasize": _int}),
    "job_template": _item([*_OWNED_REQ, "type", "mains", "libs", "interface"],
                          {**_OWNED, "type": _str, "description": _str,
                           "mains": {"type": "array", "items": _obj}, "libs": {"type": "array", "items": _obj},
                           "interface": {"type": "array", "items": _obj}}),
    "job": _item(["id", "project_id", "job_template_id", "cluster_id", "info", "job_configs", "is_public",
                  "is_protected", "engine_job_id"],
                 {"id": _str, "project_id": _str, "job_template_id": _str, "cluster_id": _nstr, "input_id": _nstr,
                  "output_id": _nstr, "job_configs": _obj, "engine_job_id": _nstr, "return_code": {**_int,
                                                                                                  "nullable": True},
                  "info": _item(["status"], {"status": _str}), "is_public": _bool, "is_protected": _bool,
                  "start_time": _ts, "end_time": _ts, "data_source_urls": _obj,
                  "attempts": {"type": "array",
                               "items": _item(["number", "status"], {
                                   "number": _int, "status": _str,
                                   # where it ran (its driver: oasis/edp/driver.py); host_lost: why it ended
                                   "instance_id": _nstr, "instance": _nstr, "host": _nstr, "host_lost": _bool})}}),
    "image": _item(["id", "name", "username", "tags", "status", "description", "metadata"],
                   {"id": _str, "name": _str, "username": _str, "tags": {"type": "array", "items": _str},
                    "status": _str, "description": _nstr, "metadata": _obj}),
    "plugin": _item(["name", "title", "description", "versions"],
                    {"name": _str, "title": _str, "description": _str, "versions": {"type": "array", "items": _str},
                     "plugin_labels": _obj, "version_labels": _obj, "node_processes": _obj,
                     "configs": {"type": "array", "items": _obj},
                     "required_image_tags": {"type": "array", "items": _str}}),
    "job_type": _item(["name", "plugins"], {"name": _str, "plugins": {"type": "array", "items": _obj}}),
    "site": _item(["id", "name", "status"], {"id": _str, "name": _str, "status": _str}),
    "version": _item(["id", "status", "links"], {"id": _str, "status": _str,
                                                  "links": {"type": "array", "items": _obj}}),
    # oasis's workflows (oasis/api/workflows.py)
    "workflow": _item([*_OWNED_REQ, "description", "steps", "placement", "parameters"],
                      {**_OWNED, "description": _str, "steps": {"type": "array", "items": _item(
                          ["name", "job_template_id", "depends_on"], {
                              "name": _str, "job_template_id": _str, "depends_on": {"type": "array", "items": _str},
                              "job_configs": _obj, "input_id": _nstr, "output_id": _nstr})},
                       "placement": _obj, "parameters": _obj}),
    "workflow_run": _item(["id", "workflow_id", "project_id", "status", "steps", "parameters", "cluster_id"],
                          {"id": _str, "workflow_id": _str, "workflow_name": _str, "project_id": _str, "status": _str,
                           "status_description": _str, "parameters": _obj, "cluster_id": _nstr,
                           "managed_cluster": _bool, "start_time": _ts, "end_time": _ts, "created_at": _ts,
                           "updated_at": _ts, "steps": {"type": "array", "items": _item(
                               ["name", "status", "job_id"], {
                                   "name": _str, "job_template_id": _str, "depends_on": {"type": "array",
                                                                                        "items": _str},
                                   "status": _str, "job_id": _nstr, "start_time": _ts, "end_time": _ts,
                                   "output_url": _nstr, "reason": _str})}}),
    # oasis's warm pools (oasis/api/pools.py)
    "pool": _item(["id", "name", "project_id", "cluster_template_id", "size", "ready", "starting", "status",
                   "clusters"],
                  {"id": _str, "name": _str, "project_id": _str, "cluster_template_id": _str,
                   "availability_zone": _nstr, "plugin_name": _str, "plugin_version": _str,
                   "size": {**_int, "minimum": 0, "maximum": 100}, "max_age": {**_int, "nullable": True},
                   "ready": _int, "starting": _int, "failed": _int, "status": _str, "status_description": _str,
                   "clusters": {"type": "array", "items": _item(["id", "name", "status"],
                                                                {"id": _str, "name": _str, "status": _str})},
                   "created_at": _ts, "updated_at": _ts}),
    # Keystone's
    "token": _item(["expires_at", "user", "project", "catalog", "roles"], {
        "methods": {"type": "array", "items": _str}, "expires_at": _str, "issued_at": _str, "user": _obj,
        "project": _obj, "catalog": {"type": "array", "items": _obj}, "roles": {"type": "array", "items": _obj}}),
    "project": _item(["id", "name", "domain_id", "enabled"],
                     {"id": _str, "name": _str, "domain_id": _str, "enabled": _bool, "description": _str}),
    "user": _item(["id", "name", "domain_id", "enabled"],
                  {"id": _str, "name": _str, "domain_id": _str, "enabled": _bool, "default_project_id": _nstr}),
    "role": _item(["id", "name"], {"id": _str, "name": _str}),
    "keypair": _item(["id", "name", "project_id", "public_key", "fingerprint", "created_at"],
                     {"id": _str, "name": _str, "project_id": _str, "public_key": _str, "fingerprint": _str,
                      "created_at": _ts,
                      "private_key": {**_str, "description": "Only in the answer to a create without a "
                                                             "public_key: the generated private key, this once"}}),
}
# Envelope key → resource (the plural of each is the key plus "s", except where listed).
_ENVELOPES = {**{k: k for k in RESOURCES}, "job_execution": "job", "binaries": "job_binary", "plugins": "plugin",
              "job_types": "job_type", "sites": "site"}

_ROUTING_ERROR = {"type": "object", "required": ["error", "error_message"],  # unknown path, wrong method
                  "properties": {"error": _int, "error_message": _str}}
ERROR = {"oneOf": [
    {"type": "object", "required": ["error_code", "error_name", "error_message"],
     "properties": {"error_code": _int, "error_name": _str, "error_message": _str}},
    _ROUTING_ERROR,
]}
KEYSTONE_ERROR = {"oneOf": [
    _item(["error"], {"error": _item(["code", "title", "message"], {"code": _int, "title": _str, "message": _str})}),
    _ROUTING_ERROR,
]}
# How each `auth` of a route is published (absent: the document's default, a Keystone token).
_SECURITY = {"public": [], "join_token": [{"join_token": []}]}
MARKERS = {"type": "object", "properties": {"prev": _nstr, "next": _nstr}}

# Query parameters a list (or show) accepts, besides the paging ones (Sahara v2's whitelists).
_LIST_FILTERS = {
    "/clusters": ["plugin_name", "plugin_version", "name"],
    "/cluster-templates": ["plugin_name", "plugin_version", "name"],
    "/node-group-templates": ["plugin_name", "plugin_version", "name"],
    "/data-sources": ["type"], "/job-binaries": ["name"], "/job-binary-internals": ["name"],
    "/job-templates": ["type", "name"], "/jobs": ["status"], "/job-executions": ["status"],
    "/workflows": ["name"], "/workflow-runs": ["status", "workflow_id"],
    "/pools": ["name"],
}
_attempt = {"type": "integer", "minimum": 1}  # which run of a job (its retries); the latest by default
_OTHER_PARAMS = {
    ("GET", "/clusters/{id}"): {"show_progress": _bool},
    ("GET", "/keypairs"): {"name": _str},
    ("GET", "/jobs/{id}"): {"refresh_status": _bool},
    ("GET", "/job-executions/{id}"): {"refresh_status": _bool},
    ("GET", "/images"): {"name": _str, "tags": _str, "username": _str},
    ("GET", "/job-types"): {"type": _str, "plugin_name": _str, "plugin_version": _str, "plugin": _str,
                            "version": _str, "hints": _bool},
    ("GET", "/jobs/{id}/logs"): {"stream": {"type": "string", "enum": ["stdout", "stderr"]},
                                 "offset": {"type": "integer", "minimum": 0}, "attempt": _attempt},
    ("GET", "/projects"): {"name": _str},
    ("GET", "/users"): {"name": _str},
    ("GET", "/job-executions/{id}/logs"): {"stream": {"type": "string", "enum": ["stdout", "stderr"]},
                                           "offset": {"type": "integer", "minimum": 0}, "attempt": _attempt},
}
_PAGED = {"limit": {"type": "integer", "minimum": 1}, "marker": _str, "sort_by": _str}


def _rename_v1(schema: Any) -> Any:
    """Property names as v1.x spells them, everywhere in a (response) schema."""
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k == "properties" and isinstance(v, dict):
                out[k] = {_V1_RENAMES.get(p, p): _rename_v1(s) for p, s in v.items()}
            elif k == "required" and isinstance(v, list):
                out[k] = [_V1_RENAMES.get(p, p) for p in v]
            else:
                out[k] = _rename_v1(v)
        return out
    if isinstance(schema, list):
        return [_rename_v1(s) for s in schema]
    return schema


def _request_v1(schema: dict[str, Any]) -> dict[str, Any]:
    """v1.x request bodies say `hadoop_version` (the server also takes v2's `plugin_version`)."""
    schema = copy.deepcopy(schema)
    props = schema.get("properties") or {}
    if "plugin_version" in props:
        props["hadoop_version"] = props.pop("plugin_version")
        schema["required"] = ["hadoop_version" if r == "plugin_version" else r for r in schema.get("required", [])]
    return schema


def _body_schema(spec: RouteSpec, version: str) -> dict[str, Any] | None:
    """The schema of a successful response body (None: no body)."""
    returns = spec.returns
    if returns is None:
        return None
    if returns == "cluster-ids":
        return _item(["clusters"], {"clusters": {"type": "array", "items": _str}})
    if returns == "tags":
        return _item(["tags"], {"tags": {"type": "array", "items": _str}})
    if returns == "job_config":
        return _item(["job_config"], {"job_config": _obj})
    if returns == "quota":  # limits and usage side by side, one integer per key (-1: unlimited)
        counts = _item(list(QUOTA_KEYS), {key: _int for key in QUOTA_KEYS})
        return _item(["project_id", "quota", "usage"], {"project_id": _str, "quota": counts, "usage": counts})
    if returns == "image-unwrapped":
        return RESOURCES["image"]
    returns, _, resource = returns.partition(":")  # "jobs[]:job_template": key jobs, items job templates
    many = returns.endswith("[]")
    key = returns[:-2] if many else returns
    resource = resource or _ENVELOPES.get(key) or _ENVELOPES.get(key[:-1]) or ""
    item = RESOURCES.get(resource, _obj)
    if version == "v2" and spec.path == "/clusters" and spec.method == "POST":
        # v2 creates several clusters when the body says `count`.
        return {"oneOf": [_item(["cluster"], {"cluster": item}),
                          _item(["clusters"], {"clusters": {"type": "array",
                                                            "items": _item(["cluster"], {"cluster": item})}})]}
    if many:
        return _item([key], {key: {"type": "array", "items": item}, "markers": MARKERS})
    return _item([key], {key: item})


def _response(spec: RouteSpec, version: str, status: int) -> dict[str, Any]:
    if status == 204:
        return {"description": "Done; no content"}
    if spec.media != "application/json":
        fmt = {"type": "string", "format": "binary"} if spec.media == "application/octet-stream" else _str
        return {"description": "The content", "content": {spec.media: {"schema": fmt}}}
    body = _body_schema(spec, version)
    if spec.path == "/clusters/{id}" and spec.method == "DELETE":
        body = _item(["stack_name"], {"stack_name": _str})
    if body is None:
        body = _obj
    if version in V1:
        body = _rename_v1(body)
    return {"description": "Success", "content": {"application/json": {"schema": body}}}


def _operation(spec: RouteSpec, version: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": name, "in": "path", "required": True, "schema": _str}
                                    for name in re.findall(r"{(\w+)}", spec.path)]
    params += [{"name": name, "in": "header", "required": True, "schema": _str} for name in spec.headers]
    query: dict[str, Any] = {}
    if spec.method == "GET" and spec.returns and spec.returns.endswith("[]") and spec.path in _LIST_FILTERS:
        query.update(_PAGED)
        query.update({f: _str for f in _LIST_FILTERS[spec.path]})
    query.update(_OTHER_PARAMS.get((spec.method, spec.path), {}))
    params += [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in query.items()]
    if version == "v2":
        params.append({"name": "OpenStack-API-Version", "in": "header", "required": False,
                       "schema": {"type": "string", "enum": [f"data-processing {MICROVERSION}",
                                                             "data-processing latest"]}})
    segment = spec.path.strip("/").split("/")[0] or "versions"
    op: dict[str, Any] = {
        "operationId": f"{version}:{spec.method}:{spec.path}" if version else f"{spec.method}:{spec.path}",
        "summary": (spec.summary or "").strip().split("\n")[0] or f"{spec.action} ({version})",
        "tags": [f"{version} {segment}" if version else segment],
        "x-policy-action": spec.action,
        "parameters": params,
        "responses": {str(status): _response(spec, version, status) for status in (spec.status, *spec.extra_status)},
    }
    if spec.auth in _SECURITY:
        op["security"] = _SECURITY[spec.auth]
    keystone = dialect(version) is KEYSTONE
    error = {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/KeystoneError" if keystone else "#/components/schemas/Error"}}}}
    errors = [(400, "Invalid request"), (401, "No valid token"), (403, "Not allowed"), (404, "Not found"),
              (405, "Method not allowed")]
    if version == "v2":
        errors.append((406, "Unsupported microversion"))
    if keystone or 409 in spec.errors:
        errors.append((409, "Conflict"))
    errors += [(status, "Refused") for status in spec.errors if status != 409]
    for status, what in errors:
        op["responses"][str(status)] = {"description": what, **error}
    if spec.body == "raw":
        op["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "maxLength": spec.max_body}}}}
    elif spec.schema is not None:
        schema = spec.schema() if callable(spec.schema) else spec.schema
        schema = _request_v1(schema) if version in V1 else copy.deepcopy(schema)
        op["requestBody"] = {"required": spec.method != "DELETE",
                             "content": {"application/json": {"schema": _openapi_schema(schema)}}}
    return op


def _openapi_schema(schema: Any) -> Any:
    """JSON Schema (draft 7) → OpenAPI 3.0's dialect: `type: [x, "null"]` becomes `nullable`."""
    if isinstance(schema, list):
        return [_openapi_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi_schema(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {name: _openapi_schema(s) for name, s in schema["properties"].items()}
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}
    t = out.get("type")
    if isinstance(t, list):
        kinds = [k for k in t if k != "null"]
        nullable = len(kinds) != len(t)
        if len(kinds) == 1:
            out["type"] = kinds[0]
        else:
            del out["type"]
            rest = {k: v for k, v in out.items() if k not in ("minimum", "maxLength", "minLength", "pattern")}
            out = {**rest, "oneOf": [{"type": k, **{kk: vv for kk, vv in out.items()
                                                    if kk in ("minimum", "maxLength", "minLength", "pattern")
                                                    and _applies(kk, k)}} for k in kinds]}
        if nullable:
            out["nullable"] = True
    if "enum" in out and None in out["enum"]:
        out["enum"] = [e for e in out["enum"] if e is not None]
        out["nullable"] = True
    return out


def _applies(keyword: str, kind: str) -> bool:
    return (kind == "string") == (keyword in ("maxLength", "minLength", "pattern"))


def document(routes: Routes) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for spec in routes.specs:
        for version in spec.versions or ("",):
            paths.setdefault(spec.path_in(version), {})[spec.method.lower()] = _operation(spec, version)
    return {
        "openapi": "3.0.3",
        "info": {"title": TITLE, "version": MICROVERSION,
                 "description": "Every `/v2/...`, `/v1.1/...` and `/v1.0/...` path that takes a token is also served "
                                "with the caller's project id after the version (`/v2/{project_id}/clusters`) and "
                                "with a `.json` suffix. Request bodies are bare objects; responses are wrapped in "
                                "the resource name. Errors are `{error_code, error_name, error_message}`; under "
                                "`/v3` (identity), Keystone's `{error: {code, title, message}}`."},
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                                "join_token": {"type": "apiKey", "in": "header", "name": "X-Oasis-Join-Token"}},
            "schemas": {"Error": ERROR, "KeystoneError": KEYSTONE_ERROR,
                        **{name: schema for name, schema in RESOURCES.items()}},
        },
        "security": [{"token": []}],
    }


__all__ = ["document", "schemas"]
