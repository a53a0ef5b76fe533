"""Node group templates and cluster templates: list, create, show, update (PATCH), delete, export."""
from __future__ import annotations

import re

from typing import Any
from xml.etree import ElementTree

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.api import schemas, topology, views
from oasis.api.errors import bad
from oasis.api.query import (check_delete_allowed, check_update_allowed, ensure_unique_name, get_visible, listing,
                             page)
from oasis.api.routing import Ctx, Reply, Routes, validate
from oasis.db.models import Cluster, ClusterTemplate, NodeGroup, NodeGroupTemplate
from oasis.identity.principal import Principal

NGT, CT = "Node group template", "Cluster template"
GENERAL = "general"  # the plugins' cluster-wide config section (Sahara's `applicable_target` "general")
MAX_CONFIG_FILE = 1024 * 1024
# Row columns; everything else a request carries goes into `spec`.
_COLUMNS = {"name", "plugin_name", "plugin_version", "is_public", "is_protected"}


def _filters(model: Any) -> dict[str, Any]:
    return {"plugin_name": model.plugin_name, "plugin_version": model.plugin_version, "name": model.name}


def _sorts(model: Any) -> dict[str, Any]:
    return {"id": model.id, "name": model.name, "plugin_name": model.plugin_name,
            "plugin_version": model.plugin_version, "hadoop_version": model.plugin_version,
            "created_at": model.created_at, "updated_at": model.updated_at}


def _split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({k: v for k, v in data.items() if k in _COLUMNS}, {k: v for k, v in data.items() if k not in _COLUMNS})


def _apply(row: Any, data: dict[str, Any]) -> None:
    columns, spec = _split(data)
    for k, v in columns.items():
        setattr(row, k, v)
    row.spec = {**(row.spec or {}), **spec}


def _current(row: Any) -> dict[str, Any]:
    """A template's values as a request would spell them (for the protection rule)."""
    return {**row.spec, "name": row.name, "plugin_name": row.plugin_name, "plugin_version": row.plugin_version}


# --- node group templates -------------------------------------------------------------------------------------


def _check_ngt(s: Session, data: dict[str, Any]) -> dict[str, Any]:
    plugin = topology.plugin_for(data["plugin_name"], data["plugin_version"])
    data = topology.check_node_group(s, plugin, data["plugin_version"], data)
    if data.get("availability_zone"):
        topology.site_named(s, data["availability_zone"])
    return data


def list_ngts(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, NodeGroupTemplate, NGT, filters=_filters(NodeGroupTemplate),
                             sorts=_sorts(NodeGroupTemplate))
        return Reply(200, listing("node_group_templates", [views.node_group_template(r) for r in rows], markers))


def create_ngt(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        data = _check_ngt(s, data)
        ensure_unique_name(s, NodeGroupTemplate, ctx.principal.project_id, data["name"], NGT)
        row = NodeGroupTemplate(project_id=ctx.principal.project_id, spec={})
        _apply(row, data)
        s.add(row)
        s.flush()
        return Reply(202, {"node_group_template": views.node_group_template(row)})


def show_ngt(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, NodeGroupTemplate, ctx.path["id"], ctx.principal, NGT)
        return Reply(200, {"node_group_template": views.node_group_template(row)})


def update_ngt(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, NodeGroupTemplate, ctx.path["id"], ctx.principal, NGT)
        check_update_allowed(row, data, ctx.principal, NGT, _current(row))
        merged = _check_ngt(s, {**_current(row), **data})
        if "name" in data:
            ensure_unique_name(s, NodeGroupTemplate, row.project_id, data["name"], NGT, exclude_id=row.id)
        _apply(row, {k: merged[k] for k in data} | {"flavor_id": merged["flavor_id"]})
        s.flush()
        return Reply(202, {"node_group_template": views.node_group_template(row)})


def _ngt_users(s: Session, ngt_id: str) -> tuple[list[str], list[str]]:
    templates = [ct.name for ct in s.scalars(select(ClusterTemplate))
                 if any(ng.get("node_group_template_id") == ngt_id for ng in ct.spec.get("node_groups") or [])]
    clusters = sorted({c.name for ng, c in s.execute(select(NodeGroup, Cluster).join(Cluster,
                                                                                     Cluster.id == NodeGroup.cluster_id))
                       if ng.spec.get("node_group_template_id") == ngt_id})
    return templates, clusters


def delete_ngt(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, NodeGroupTemplate, ctx.path["id"], ctx.principal, NGT)
        check_delete_allowed(row, ctx.principal, NGT)
        templates, clusters = _ngt_users(s, row.id)
        if templates or clusters:
            raise bad("INVALID_REFERENCE", f"Node group template {row.id} is in use by cluster templates: "
                                           f"{', '.join(templates) or 'none'}; and clusters: {', '.join(clusters) or 'none'}")
        s.delete(row)
    return Reply(204)


def export_ngt(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, NodeGroupTemplate, ctx.path["id"], ctx.principal, NGT)
        out = _exportable(views.node_group_template(row))
        # Site-specific values become placeholders to fill in on import, as Sahara's export does.
        out.update(flavor_id="{flavor_id}", image_id="{image_id}", floating_ip_pool="{floating_ip_pool}",
                   security_groups="{security_groups}")
        return Reply(200, {"node_group_template": out}, _attachment(row.name))


def _exportable(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in ("id", "project_id", "created_at", "updated_at")}


def _attachment(name: str) -> dict[str, str]:
    # Only characters that cannot end the header or its quoted string: a name stored before names were checked
    # strictly (a newline, a quote) never reaches the header.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "template"
    return {"Content-Disposition": f'attachment; filename="{safe}.json"'}


# --- cluster templates ----------------------------------------------------------------------------------------


def check_cluster_groups(s: Session, principal: Principal, plugin_name: str, version: str,
                         groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node groups of a cluster (template) merged over their templates and checked one by one."""
    plugin = topology.plugin_for(plugin_name, version)
    merged = [topology.check_node_group(s, plugin, version,
                                        topology.merge_node_group(s, principal, ng, plugin_name, version))
              for ng in groups]
    topology.unique_group_names(merged)
    return merged


def _check_ct(s: Session, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
    topology.check_configs(topology.plugin_for(data["plugin_name"], data["plugin_version"]),
                           data.get("cluster_configs"))
    # The request's node groups are kept as written (a template reference stays a reference); only the
    # flavor is normalised to its id.
    checked = check_cluster_groups(s, principal, data["plugin_name"], data["plugin_version"],
                                   data.get("node_groups") or [])
    data = dict(data)
    if data.get("node_groups"):
        data["node_groups"] = [{**ng, **({"flavor_id": c["flavor_id"]} if "flavor_id" in ng else {})}
                               for ng, c in zip(data["node_groups"], checked)]
    if data.get("default_image_id"):
        topology.image(s, data["default_image_id"])
    return data


def list_cts(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, ClusterTemplate, CT, filters=_filters(ClusterTemplate),
                             sorts=_sorts(ClusterTemplate))
        return Reply(200, listing("cluster_templates", [views.cluster_template(r) for r in rows], markers))


def create_ct(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(202, {"cluster_template": _create_ct(s, ctx.principal, ctx.body)})


def _create_ct(s: Session, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    data = _check_ct(s, principal, body)
    ensure_unique_name(s, ClusterTemplate, principal.project_id, data["name"], CT)
    row = ClusterTemplate(project_id=principal.project_id, spec={})
    _apply(row, data)
    s.add(row)
    s.flush()
    return views.cluster_template(row)


def convert_config(ctx: Ctx) -> Reply:
    """v1.x: a cluster template from a Hadoop-style XML configuration file (the request body). Its properties
    become the template's cluster configs in the plugin's general section; node groups are not described by
    such a file, so the template has none and a cluster made from it must bring its own."""
    plugin = topology.plugin_for(ctx.path["name"], ctx.path["version"])
    body = {"name": ctx.path["template"], "plugin_name": plugin.name, "plugin_version": ctx.path["version"],
            "cluster_configs": {GENERAL: _typed(plugin, ctx.path["version"], parse_hadoop_xml(ctx.body))},
            "description": "Converted from a configuration file", "node_groups": []}
    validate(schemas.CLUSTER_TEMPLATE_CREATE, body)
    with ctx.db.session() as s:
        return Reply(202, {"cluster_template": _create_ct(s, ctx.principal, body)})


def parse_hadoop_xml(raw: bytes) -> dict[str, str]:
    """`<configuration><property><name>k</name><value>v</value></property>...</configuration>` as {k: v}.
    Anything else is the caller's mistake: a VALIDATION_ERROR naming what is wrong."""
    try:
        root = ElementTree.fromstring(raw)
    except (ElementTree.ParseError, ValueError) as e:  # expat refuses entity expansion bombs as well
        raise bad("VALIDATION_ERROR", f"The configuration file is not well-formed XML: {e}") from None
    if root.tag != "configuration":
        raise bad("VALIDATION_ERROR", f"The configuration file's root element must be <configuration>, not "
                                      f"<{root.tag}>")
    out: dict[str, str] = {}
    for i, prop in enumerate(root.findall("property"), 1):
        name = (prop.findtext("name") or "").strip()
        if not name:
            raise bad("VALIDATION_ERROR", f"Property {i} of the configuration file has no <name>")
        out[name] = (prop.findtext("value") or "").strip()
    return out


def _typed(plugin: Any, version: str, values: dict[str, str]) -> dict[str, Any]:
    """Values of configs the plugin declares as int or bool become numbers and booleans; the rest stay text."""
    kinds = {c["name"]: c.get("config_type") for c in plugin.configs(version)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if kinds.get(name) == "int" and value.lstrip("-").isdigit():
            out[name] = int(value)
        elif kinds.get(name) == "bool" and value.lower() in ("true", "false"):
            out[name] = value.lower() == "true"
        else:
            out[name] = value
    return out


def show_ct(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, ClusterTemplate, ctx.path["id"], ctx.principal, CT)
        return Reply(200, {"cluster_template": views.cluster_template(row)})


def update_ct(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, ClusterTemplate, ctx.path["id"], ctx.principal, CT)
        check_update_allowed(row, data, ctx.principal, CT, _current(row))
        merged = _check_ct(s, ctx.principal, {**_current(row), **data})
        if "name" in data:
            ensure_unique_name(s, ClusterTemplate, row.project_id, data["name"], CT, exclude_id=row.id)
        _apply(row, {k: merged[k] for k in data})
        s.flush()
        return Reply(202, {"cluster_template": views.cluster_template(row)})


def delete_ct(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, ClusterTemplate, ctx.path["id"], ctx.principal, CT)
        check_delete_allowed(row, ctx.principal, CT)
        users = sorted(s.scalars(select(Cluster.name).where(Cluster.cluster_template_id == row.id)))
        if users:
            raise bad("INVALID_REFERENCE", f"Cluster template {row.id} in use by {', '.join(users)}")
        s.delete(row)
    return Reply(204)


def export_ct(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, ClusterTemplate, ctx.path["id"], ctx.principal, CT)
        out = _exportable(views.cluster_template(row))
        out.update(default_image_id="{default_image_id}", node_groups="{node_groups}")
        return Reply(200, {"cluster_template": out}, _attachment(row.name))


def register(routes: Routes) -> None:
    every = ("v1.0", "v1.1", "v2")
    for path, kind, (lst, create, show, update, delete, export), create_schema, update_schema in (
            ("/node-group-templates", "node_group_template",
             (list_ngts, create_ngt, show_ngt, update_ngt, delete_ngt, export_ngt),
             schemas.NODE_GROUP_TEMPLATE_CREATE, schemas.NODE_GROUP_TEMPLATE_UPDATE),
            ("/cluster-templates", "cluster_template", (list_cts, create_ct, show_ct, update_ct, delete_ct, export_ct),
             schemas.CLUSTER_TEMPLATE_CREATE, schemas.CLUSTER_TEMPLATE_UPDATE)):
        routes.add("GET", path, lst, f"{kind}:list", versions=every, returns=f"{kind}s[]")
        routes.add("POST", path, create, f"{kind}:create", schema=create_schema, versions=every, returns=kind)
        routes.add("GET", f"{path}/{{id}}", show, f"{kind}:get", versions=every, returns=kind)
        routes.add("PATCH", f"{path}/{{id}}", update, f"{kind}:update", schema=update_schema, returns=kind)
        # v1.x updates with PUT (and, like Sahara's v1 validators, takes the whole template or a part of it).
        routes.add("PUT", f"{path}/{{id}}", update, f"{kind}:update", schema=update_schema, versions=("v1.0", "v1.1"),
                   returns=kind)
        routes.add("DELETE", f"{path}/{{id}}", delete, f"{kind}:delete", versions=every)
        routes.add("GET", f"{path}/{{id}}/export", export, f"{kind}:get", versions=every, returns=kind)
    # v1.x only (v2 dropped it): the raw body is the configuration file.
    routes.add("POST", "/plugins/{name}/{version}/convert-config/{template}", convert_config,
               "plugin:convert-config", versions=("v1.0", "v1.1"), body="raw", max_body=MAX_CONFIG_FILE,
               returns="cluster_template")
