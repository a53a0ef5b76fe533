"""The `autoscaling` field of a cluster (an oasis extension of cluster create and update): a policy per worker
node group, `{"node_groups": {"worker": {"min": 1, "max": 4, "cooldown": 30}}}`, kept in the cluster's `spec`
and carried out by the engine (oasis/engine/autoscale.py). Checked here against the cluster's node groups."""
from __future__ import annotations

from typing import Any

from oasis.api.errors import bad
from oasis.config import MAX_INSTANCES
from oasis.plugins.base import Plugin

MAX_COOLDOWN = 86400

POLICY = {"type": "object", "additionalProperties": False, "required": ["min", "max"], "properties": {
    "min": {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES},
    "max": {"type": "integer", "minimum": 1, "maximum": MAX_INSTANCES},
    "cooldown": {"type": "number", "minimum": 0, "maximum": MAX_COOLDOWN}}}
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["node_groups"], "properties": {
    "node_groups": {"type": "object", "maxProperties": 100, "additionalProperties": POLICY}}}


def check(plugin: Plugin, groups: dict[str, tuple[list[str], int]], policy: dict[str, Any]) -> dict[str, Any]:
    """The policy, normalised (cooldown given), if it fits the cluster's node groups ({name: (processes,
    count)}): each names a node group that runs the plugin's worker and not its master, min <= max, and the
    cluster keeps a worker at the minimum. A 400 naming what is wrong otherwise."""
    out: dict[str, dict[str, Any]] = {}
    canonical = {name: {plugin.canonical(p) for p in procs} for name, (procs, _) in groups.items()}
    for name, p in sorted((policy.get("node_groups") or {}).items()):
        if name not in groups:
            raise bad("INVALID_REFERENCE", f"Autoscaling names node group '{name}', which the cluster does not have")
        if plugin.master_process in canonical[name]:
            raise bad("INVALID_DATA", f"Autoscaling: node group '{name}' runs the {plugin.master_process}; only "
                                      f"node groups of {plugin.worker_process}s scale")
        if plugin.worker_process not in canonical[name]:
            raise bad("INVALID_DATA", f"Autoscaling: node group '{name}' runs no {plugin.worker_process}")
        if p["min"] > p["max"]:
            raise bad("INVALID_DATA", f"Autoscaling: node group '{name}' has min {p['min']} above max {p['max']}")
        out[name] = {"min": p["min"], "max": p["max"], "cooldown": p.get("cooldown", 0)}
    fixed = sum(count for name, (_, count) in groups.items()
                if name not in out and plugin.worker_process in canonical[name])
    if out and fixed + sum(p["min"] for p in out.values()) < 1:
        raise bad("INVALID_DATA", f"Autoscaling: the cluster needs at least one {plugin.worker_process}; give a "
                                  "node group a min of 1")
    return {"node_groups": out}
