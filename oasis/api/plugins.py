"""Plugins, job types and the image registry: read-only views of what the deployment offers."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from oasis.api import views
from oasis.api.errors import not_found
from oasis.api.routing import Ctx, Reply, Routes
from oasis.db.models import Image
from oasis.plugins import get_plugin, registry
from oasis.plugins.base import Plugin


def _plugin(name: str) -> Plugin:
    plugin = get_plugin(name)
    if plugin is None:
        raise not_found("Plugin", name)
    return plugin


def list_plugins(ctx: Ctx) -> Reply:
    ctx.check_params(set())
    return Reply(200, {"plugins": [views.plugin(p) for p in registry().values()]})


def show_plugin(ctx: Ctx) -> Reply:
    return Reply(200, {"plugin": views.plugin_with_labels(_plugin(ctx.path["name"]))})


def show_plugin_version(ctx: Ctx) -> Reply:
    plugin = _plugin(ctx.path["name"])
    version = ctx.path["version"]
    if version not in plugin.versions():
        raise not_found(f"Plugin {plugin.name} version", version)
    return Reply(200, {"plugin": views.plugin_version(plugin, version)})


def all_job_types() -> list[str]:
    """Every job type some plugin runs, in a stable order."""
    seen: dict[str, None] = {}
    for plugin in registry().values():
        seen.update(dict.fromkeys(plugin.job_types))
    return list(seen)


def config_hints(job_type: str) -> dict[str, Any]:
    """The hints of every plugin that runs the type, configs de-duplicated by name."""
    hints: dict[str, Any] = {"configs": [], "args": [], "params": {}}
    names: set[str] = set()
    for plugin in registry().values():
        if job_type not in plugin.job_types:
            continue
        h = plugin.config_hints(job_type)
        for c in h.get("configs") or []:
            if c.get("name") not in names:
                names.add(c.get("name"))
                hints["configs"].append(c)
        hints["args"] += [a for a in h.get("args") or [] if a not in hints["args"]]
        hints["params"].update(h.get("params") or {})
    return hints


def list_job_types(ctx: Ctx) -> Reply:
    # v2 whitelists plugin_name/plugin_version but Sahara's service reads plugin/version; both are accepted.
    ctx.check_params({"type", "plugin_name", "plugin_version", "plugin", "version", "hints"})
    want_type = ctx.query.get("type")
    want_plugin = ctx.query.get("plugin_name") or ctx.query.get("plugin")
    want_version = ctx.query.get("plugin_version") or ctx.query.get("version")
    hints = str(ctx.query.get("hints", "false")).lower() == "true"
    out = []
    for job_type in all_job_types():
        if want_type and job_type != want_type:
            continue
        entries = []
        for plugin in registry().values():
            if job_type not in plugin.job_types or (want_plugin and plugin.name != want_plugin):
                continue
            versions = [v for v in plugin.versions() if not want_version or v == want_version]
            if versions:
                entries.append({**views.plugin(plugin), "versions": {
                    v: ({"job_config": plugin.config_hints(job_type)} if hints else {}) for v in versions}})
        if entries:
            out.append({"name": job_type, "plugins": entries})
    return Reply(200, {"job_types": out})


def list_images(ctx: Ctx) -> Reply:
    ctx.check_params({"name", "tags", "username"})
    stmt = select(Image).where(Image.registered.is_(True)).order_by(Image.name, Image.id)
    if ctx.query.get("name"):
        stmt = stmt.where(Image.name == ctx.query["name"])
    if ctx.query.get("username"):
        stmt = stmt.where(Image.username == ctx.query["username"])
    # tags=a&tags=b (what saharaclient sends) or tags=a,b: an image must carry all of them.
    tags = {t for value in ctx.query.getlist("tags") for t in value.split(",") if t}
    with ctx.db.session() as s:
        rows = [r for r in s.scalars(stmt) if tags <= set(r.tags or [])]
        return Reply(200, {"images": [views.image(r) for r in rows]})


def show_image(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = s.get(Image, ctx.path["id"])
        if row is None or not row.registered:
            raise not_found("Image", ctx.path["id"])
        return Reply(200, {"image": views.image(row)})


def register(routes: Routes) -> None:
    routes.add("GET", "/plugins", list_plugins, "plugin:list")
    routes.add("GET", "/plugins/{name}", show_plugin, "plugin:get")
    routes.add("GET", "/plugins/{name}/{version}", show_plugin_version, "plugin:get-version")
    routes.add("GET", "/job-types", list_job_types, "job-type:list")
    routes.add("GET", "/images", list_images, "image:list")
    routes.add("GET", "/images/{id}", show_image, "image:get")
