"""Plugins, job types and the image registry: read-only views of what the deployment offers."""
from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.api import schemas, views
from oasis.api.errors import bad, not_found
from oasis.api.routing import V1, Ctx, Reply, Routes
from oasis.db.models import Image, PluginLabel
from oasis.plugins import get_plugin, registry
from oasis.plugins.base import Plugin

BOTH = ("v1.0", "v1.1", "v2")

# --- labels ---------------------------------------------------------------------------------------------------

# Sahara's labels: `enabled` and `hidden` may be changed by an administrator, `stable` and `deprecated` not.
LABELS: dict[str, dict[str, Any]] = {
    "enabled": {"status": True, "mutable": True, "description": "Indicates that the plugin (version) is enabled"},
    "hidden": {"status": False, "mutable": True, "description": "Indicates that the plugin (version) is hidden"},
    "stable": {"status": True, "mutable": False, "description": "Indicates that the plugin (version) is stable"},
    "deprecated": {"status": False, "mutable": False,
                   "description": "Indicates that the plugin (version) is deprecated"},
}


def _overrides(s: Session, name: str) -> dict[str, dict[str, bool]]:
    """The administrator's overrides of a plugin's labels, by version ("" for the plugin's own), from the
    database that every API process shares (Sahara keeps them in its `plugin_data` table)."""
    out: dict[str, dict[str, bool]] = {}
    for row in s.scalars(select(PluginLabel).where(PluginLabel.plugin_name == name)):
        out.setdefault(row.version, {})[row.label] = bool(row.status)
    return out


def labels(s: Session, plugin: Plugin) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(plugin_labels, version_labels) with the administrator's overrides applied."""
    over = _overrides(s, plugin.name)
    plugin_labels = copy.deepcopy(LABELS)
    for label, status in over.get("", {}).items():
        if label in plugin_labels:
            plugin_labels[label]["status"] = status
    version_labels = {}
    for version in plugin.versions():
        vl = copy.deepcopy(LABELS)
        for label, status in over.get(version, {}).items():
            if label in vl:
                vl[label]["status"] = status
        version_labels[version] = vl
    return plugin_labels, version_labels


def require_enabled(s: Session, plugin_name: str, version: str) -> None:
    """Sahara refuses create, scale and execute on a disabled plugin or version."""
    plugin = get_plugin(plugin_name)
    if plugin is None:
        return
    plugin_labels, version_labels = labels(s, plugin)
    if not plugin_labels["enabled"]["status"]:
        raise bad("INVALID_REFERENCE", f"Plugin {plugin_name} is not enabled")
    if version in version_labels and not version_labels[version]["enabled"]["status"]:
        raise bad("INVALID_REFERENCE", f"Plugin {plugin_name} version {version} is not enabled")


def _with_labels(s: Session, plugin: Plugin) -> dict[str, Any]:
    plugin_labels, version_labels = labels(s, plugin)
    return {**views.plugin(plugin), "plugin_labels": plugin_labels, "version_labels": version_labels}


def _plugin(name: str) -> Plugin:
    plugin = get_plugin(name)
    if plugin is None:
        raise not_found("Plugin", name)
    return plugin


def list_plugins(ctx: Ctx) -> Reply:
    ctx.check_params(set())
    return Reply(200, {"plugins": [views.plugin(p) for p in registry().values()]})


def show_plugin(ctx: Ctx) -> Reply:
    ctx.check_params(set())
    with ctx.db.session() as s:
        return Reply(200, {"plugin": _with_labels(s, _plugin(ctx.path["name"]))})


def show_plugin_version(ctx: Ctx) -> Reply:
    ctx.check_params(set())
    plugin = _plugin(ctx.path["name"])
    version = ctx.path["version"]
    if version not in plugin.versions():
        raise not_found(f"Plugin {plugin.name} version", version)
    with ctx.db.session() as s:
        return Reply(200, {"plugin": {**views.plugin_version(plugin, version), **_with_labels(s, plugin)}})


def update_plugin(ctx: Ctx) -> Reply:
    """Set the mutable labels of a plugin and its versions (administrators only)."""
    plugin = _plugin(ctx.path["name"])
    data = ctx.body
    changes: dict[tuple[str, str], bool] = {}  # (version or "", label) -> status

    def collect(version: str, asked: dict[str, Any], where: str) -> None:
        for label, value in asked.items():
            if label not in LABELS:
                raise bad("INVALID_DATA", f"Label '{label}' is unknown ({where})")
            if not LABELS[label]["mutable"]:
                raise bad("INVALID_DATA", f"Label '{label}' can't be updated because it's not mutable ({where})")
            changes[(version, label)] = bool(value["status"])

    collect("", data.get("plugin_labels") or {}, f"plugin {plugin.name}")
    for version, asked in (data.get("version_labels") or {}).items():
        if version not in plugin.versions():
            raise bad("INVALID_DATA", f"Plugin {plugin.name} has no version '{version}'")
        collect(version, asked, f"version {version}")
    with ctx.db.session() as s:
        for (version, label), status in changes.items():
            row = s.get(PluginLabel, (plugin.name, version, label))
            if row is None:
                s.add(PluginLabel(plugin_name=plugin.name, version=version, label=label, status=status))
            else:
                row.status = status
        s.flush()
        return Reply(202, {"plugin": _with_labels(s, plugin)})


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


def _image(s: Any, ctx: Ctx, registered_only: bool = True) -> Image:
    """An image of a site. Unregistered images exist (as Glance images without Sahara's metadata): an
    administrator may see and register them; to others they are not there."""
    row = s.get(Image, ctx.path["id"])
    if row is None or (registered_only and not row.registered and not ctx.principal.is_admin):
        raise not_found("Image", ctx.path["id"])
    return row


def show_image(ctx: Ctx) -> Reply:
    ctx.check_params(set())
    with ctx.db.session() as s:
        return Reply(200, {"image": views.image(_image(s, ctx))})


def register_image(ctx: Ctx) -> Reply:
    """Register an image in the registry, or update its username and description."""
    data = ctx.body
    with ctx.db.session() as s:
        row = _image(s, ctx, registered_only=False)
        row.username = data["username"]
        row.description = data.get("description") or ""
        row.registered = True
        s.flush()
        return Reply(202, {"image": views.image(row)})


def unregister_image(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = _image(s, ctx)
        if not row.registered:
            raise not_found("Image", ctx.path["id"])
        row.registered = False
    return Reply(204)


def _set_tags(ctx: Ctx, change) -> dict[str, Any]:  # noqa: ANN001
    with ctx.db.session() as s:
        row = _image(s, ctx)
        if not row.registered:
            raise bad("IMAGE_NOT_REGISTERED", f"Image {row.id} is not registered")
        row.tags = sorted(change(set(row.tags or [])))
        s.flush()
        return views.image(row)


def _tags(ctx: Ctx) -> list[str]:
    return list((ctx.body or {}).get("tags") or [])


def add_tags(ctx: Ctx) -> Reply:
    return Reply(202, {"image": _set_tags(ctx, lambda tags: tags | set(_tags(ctx)))})


def remove_tags(ctx: Ctx) -> Reply:
    return Reply(202, {"image": _set_tags(ctx, lambda tags: tags - set(_tags(ctx)))})


def get_tags(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"tags": sorted(_image(s, ctx).tags or [])})


def replace_tags(ctx: Ctx) -> Reply:
    """v2: the image gets exactly these tags; the image itself is answered (unwrapped, as saharaclient reads it)."""
    return Reply(200, _set_tags(ctx, lambda tags: set(_tags(ctx))))


def delete_tags(ctx: Ctx) -> Reply:
    """v2: remove the tags named in the body, or every tag without one."""
    named = (ctx.body or {}).get("tags")
    _set_tags(ctx, lambda tags: tags - set(named) if named is not None else set())
    return Reply(204)


def register(routes: Routes) -> None:
    routes.add("GET", "/plugins", list_plugins, "plugin:list", versions=BOTH, returns="plugins[]")
    routes.add("GET", "/plugins/{name}", show_plugin, "plugin:get", versions=BOTH, returns="plugin")
    routes.add("GET", "/plugins/{name}/{version}", show_plugin_version, "plugin:get-version", versions=BOTH,
               returns="plugin")
    routes.add("PATCH", "/plugins/{name}", update_plugin, "plugin:update", versions=BOTH,
               schema=schemas.PLUGIN_UPDATE, returns="plugin")
    routes.add("GET", "/job-types", list_job_types, "job-type:list", versions=("v1.1", "v2"), returns="job_types[]")

    routes.add("GET", "/images", list_images, "image:list", versions=BOTH, returns="images[]")
    routes.add("GET", "/images/{id}", show_image, "image:get", versions=BOTH, returns="image")
    routes.add("POST", "/images/{id}", register_image, "image:register", versions=BOTH,
               schema=schemas.IMAGE_REGISTER, returns="image")
    routes.add("DELETE", "/images/{id}", unregister_image, "image:unregister", versions=BOTH)
    routes.add("POST", "/images/{id}/tag", add_tags, "image:add-tags", versions=V1, schema=schemas.IMAGE_TAGS,
               returns="image")
    routes.add("POST", "/images/{id}/untag", remove_tags, "image:remove-tags", versions=V1,
               schema=schemas.IMAGE_TAGS, returns="image")
    routes.add("GET", "/images/{id}/tags", get_tags, "image:get-tags", returns="tags")
    routes.add("PUT", "/images/{id}/tags", replace_tags, "image:set-tags", schema=schemas.IMAGE_TAGS_SET,
               status=200, returns="image-unwrapped")
    routes.add("DELETE", "/images/{id}/tags", delete_tags, "image:remove-tags",
               schema={**schemas.IMAGE_TAGS, "required": []})
