"""Rows as Sahara shows them. Secrets are never read here: no private key, credentials, `extra`, op or lease."""
from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.db import lifecycle
from oasis.db.models import (Cluster, ClusterTemplate, DataSource, Image, Instance, Job, JobBinary,
                             JobBinaryInternal, JobTemplate, NodeGroup, NodeGroupTemplate, ProvisionEvent,
                             ProvisionStep, shown_time, utcnow)
from oasis.db.states import CONNECT_STARTED
from oasis.edp import retries
from oasis.plugins.base import Plugin

# What the engine keeps in a cluster's spec besides the request: shown in fields of their own, or not at all.
ENGINE_KEYS = frozenset({"verification", "lifecycle", "activity", "autoscaler", CONNECT_STARTED})

# Sahara's defaults for the optional node group fields, shown when a request left them out.
NG_DEFAULTS: dict[str, Any] = {
    "description": "", "image_id": None, "node_configs": {}, "volumes_per_node": 0, "volumes_size": 0,
    "volume_type": None, "volumes_availability_zone": None, "volume_mount_prefix": "/volumes/disk",
    "volume_local_to_instance": False, "floating_ip_pool": None, "security_groups": None,
    "auto_security_group": False, "availability_zone": None, "is_proxy_gateway": False, "use_autoconfig": True,
    "shares": [], "boot_from_volume": False, "boot_volume_type": None, "boot_volume_availability_zone": None,
    "boot_volume_local_to_instance": False,
}
CLUSTER_DEFAULTS: dict[str, Any] = {
    "description": "", "cluster_configs": {}, "anti_affinity": [], "default_image_id": None,
    "neutron_management_network": None, "use_autoconfig": True, "shares": [], "domain_name": None,
}

_V1_RENAMES = {"project_id": "tenant_id", "plugin_version": "hadoop_version", "job_template_id": "job_id",
               "engine_job_id": "oozie_job_id"}
# Maps whose keys are user data (configs, URLs by data source id): never renamed.
_USER_MAPS = {"cluster_configs", "node_configs", "job_configs", "configs", "params", "data_source_urls", "info",
              "extra", "credentials", "interface", "version_labels", "node_processes"}


def ts(value: datetime | None) -> str | None:
    return shown_time(value)


def for_version(data: Any, version: str) -> Any:
    """v1.1 spells some fields differently; v2 names are used everywhere inside oasis."""
    if version not in ("v1.1", "v1.0"):
        return data
    if isinstance(data, dict):
        return {_V1_RENAMES.get(k, k): (v if k in _USER_MAPS else for_version(v, version)) for k, v in data.items()}
    if isinstance(data, list):
        return [for_version(v, version) for v in data]
    return data


def _owned(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "project_id": row.project_id, "is_public": bool(row.is_public),
            "is_protected": bool(row.is_protected), "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


def node_group_template(row: NodeGroupTemplate) -> dict[str, Any]:
    return {**NG_DEFAULTS, **row.spec, **_owned(row), "plugin_name": row.plugin_name,
            "plugin_version": row.plugin_version}


def cluster_template(row: ClusterTemplate) -> dict[str, Any]:
    spec = dict(row.spec)
    spec["node_groups"] = [{**NG_DEFAULTS, **ng} for ng in spec.get("node_groups") or []]
    return {**CLUSTER_DEFAULTS, **spec, **_owned(row), "plugin_name": row.plugin_name,
            "plugin_version": row.plugin_version}


def instance(row: Instance) -> dict[str, Any]:
    return {"id": row.id, "instance_id": row.id, "instance_name": row.name, "internal_ip": row.internal_ip,
            "management_ip": row.management_ip, "dns_hostname": row.name, "storage_devices_number": 0,
            "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


def event(row: ProvisionEvent) -> dict[str, Any]:
    return {"id": row.id, "step_id": row.step_id, "node_group_id": row.node_group_id,
            "instance_id": row.instance_id, "instance_name": row.instance_name, "event_info": row.event_info,
            "successful": row.successful, "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


def step(row: ProvisionStep, events: list[ProvisionEvent] | None) -> dict[str, Any]:
    out = {"id": row.id, "cluster_id": row.cluster_id, "project_id": row.project_id, "step_name": row.step_name,
           "step_type": row.step_type, "total": row.total, "successful": row.successful,
           "created_at": ts(row.created_at), "updated_at": ts(row.updated_at), "duration": row.duration}
    if events is not None:
        out["events"] = [event(e) for e in events]
    return out


def clusters(s: Session, rows: list[Cluster], show_progress: bool = False,
             limits: tuple[float, float] = (0.0, 0.0)) -> list[dict[str, Any]]:
    """Many clusters in a handful of queries (a list page must not cost a query per node group). `limits`: the
    deployment's idle default and error grace, shown in each cluster's `lifecycle` beside its own limits."""
    if not rows:
        return []
    ids = [c.id for c in rows]
    used, now = lifecycle.activity(s, ids), utcnow()
    groups: dict[str, list[NodeGroup]] = {i: [] for i in ids}
    for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id.in_(ids)).order_by(NodeGroup.created_at,
                                                                                          NodeGroup.name)):
        groups[ng.cluster_id].append(ng)
    insts: dict[str, list[Instance]] = {}
    for inst in s.scalars(select(Instance).where(Instance.cluster_id.in_(ids)).order_by(Instance.name)):
        insts.setdefault(inst.node_group_id, []).append(inst)
    steps: dict[str, list[ProvisionStep]] = {i: [] for i in ids}
    for st in s.scalars(select(ProvisionStep).where(ProvisionStep.cluster_id.in_(ids))
                        .order_by(ProvisionStep.created_at)):
        steps[st.cluster_id].append(st)
    events: dict[str, list[ProvisionEvent]] = {}
    if show_progress:
        step_ids = [st.id for sts in steps.values() for st in sts]
        if step_ids:
            for ev in s.scalars(select(ProvisionEvent).where(ProvisionEvent.step_id.in_(step_ids))
                                .order_by(ProvisionEvent.created_at)):
                events.setdefault(ev.step_id, []).append(ev)
    out = []
    for c in rows:
        spec = {k: v for k, v in c.spec.items() if k not in ENGINE_KEYS}
        out.append({
            **CLUSTER_DEFAULTS, **spec, **_owned(c),
            "plugin_name": c.plugin_name, "plugin_version": c.plugin_version,
            "cluster_template_id": c.cluster_template_id, "user_keypair_id": c.spec.get("user_keypair_id"),
            "management_public_key": c.management_public_key, "status": c.status,
            "status_description": c.status_description or "", "info": c.info or {},
            "is_transient": bool(c.is_transient), "trust_id": c.trust_id,
            "node_groups": [node_group(ng, insts.get(ng.id, [])) for ng in groups[c.id]],
            "provision_progress": [step(st, events.get(st.id, []) if show_progress else None)
                                   for st in steps[c.id]],
            "verification": c.spec.get("verification") or {"status": None, "checks": []},
            "lifecycle": lifecycle.view(c, used[c.id], *limits, now),
        })
    return out


def cluster(s: Session, row: Cluster, show_progress: bool = False,
            limits: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    return clusters(s, [row], show_progress, limits)[0]


def node_group(ng: NodeGroup, instances: list[Instance]) -> dict[str, Any]:
    defaults = {k: v for k, v in NG_DEFAULTS.items() if k != "description"}
    return {**defaults, "node_group_template_id": None, **ng.spec, "id": ng.id, "name": ng.name,
            "count": ng.count, "instances": [instance(i) for i in instances],
            "created_at": ts(ng.created_at), "updated_at": ts(ng.updated_at)}


def job_binary(row: JobBinary) -> dict[str, Any]:
    return {**_owned(row), "url": row.url, "description": row.description or ""}


def job_binary_internal(row: JobBinaryInternal) -> dict[str, Any]:
    return {**_owned(row), "datasize": row.datasize}


def data_source(row: DataSource) -> dict[str, Any]:
    return {**_owned(row), "type": row.type, "url": row.url, "description": row.description or ""}


def job_template(s: Session, row: JobTemplate) -> dict[str, Any]:
    """mains and libs are expanded into the job binaries they name (a deleted one is left out)."""
    wanted = [*row.mains, *row.libs]
    found = {b.id: b for b in s.scalars(select(JobBinary).where(JobBinary.id.in_(wanted)))} if wanted else {}
    return {**_owned(row), "type": row.type, "description": row.description or "",
            "mains": [job_binary(found[i]) for i in row.mains if i in found],
            "libs": [job_binary(found[i]) for i in row.libs if i in found],
            "interface": row.interface or []}


# Config names whose values are secrets (Swift and S3 credentials as Hadoop, Spark and Sahara spell them).
_SECRET = re.compile(r"(password|secret|access[._-]?key|token)", re.I)


def sanitize_job_configs(configs: dict[str, Any]) -> dict[str, Any]:
    """Sahara blanks credentials and drops proxy and trust settings before showing job_configs."""
    out = {k: v for k, v in (configs or {}).items() if k not in ("proxy_configs", "trusts")}
    for section in ("configs", "params"):
        if isinstance(out.get(section), dict):
            out[section] = {k: ("" if _is_secret(str(k)) else v) for k, v in out[section].items()}
    return out


@lru_cache(maxsize=4096)
def _is_secret(name: str) -> bool:
    """Config names repeat across a page of jobs: each is matched once."""
    return _SECRET.search(name) is not None


def job(row: Job) -> dict[str, Any]:
    return {"id": row.id, "job_template_id": row.job_template_id, "cluster_id": row.cluster_id,
            "input_id": row.input_id, "output_id": row.output_id,
            "job_configs": sanitize_job_configs(row.job_configs), "interface": row.interface or {},
            "info": {**(row.info or {}), "status": row.status}, "engine_job_id": row.engine_job_id,
            "return_code": row.return_code, "start_time": ts(row.start_time), "end_time": ts(row.end_time),
            "data_source_urls": row.data_source_urls or {}, "is_public": bool(row.is_public),
            "is_protected": bool(row.is_protected), "project_id": row.project_id,
            "created_at": ts(row.created_at), "updated_at": ts(row.updated_at),
            # oasis: every run of the job (its retries), the current one last
            "attempts": retries.attempts_view(row.status, row.return_code, ts(row.start_time), ts(row.end_time),
                                              row.runtime, row.engine_job_id,
                                              (row.info or {}).get("status_description"))}


def image(row: Image) -> dict[str, Any]:
    tags = list(row.tags or [])
    metadata = {"_sahara_username": row.username, "_sahara_description": row.description,
                **{f"_sahara_tag_{t}": True for t in tags}}
    return {"id": row.id, "name": row.name, "status": "ACTIVE", "username": row.username,
            "description": row.description, "tags": tags, "minDisk": 0, "minRam": 0, "progress": 100,
            "metadata": metadata, "created": ts(row.created_at), "updated": ts(row.updated_at or row.created_at)}


def plugin(p: Plugin) -> dict[str, Any]:
    return {"name": p.name, "title": p.title, "description": p.description, "versions": p.versions()}


def plugin_with_labels(p: Plugin) -> dict[str, Any]:
    # Labels are static: every plugin and version shipped is enabled and stable.
    labels = {"enabled": {"status": True, "mutable": True, "description": "Plugin is enabled"},
              "stable": {"status": True, "mutable": False, "description": "Plugin is stable"}}
    return {**plugin(p), "plugin_labels": labels, "version_labels": {v: labels for v in p.versions()}}


def plugin_version(p: Plugin, version: str) -> dict[str, Any]:
    return {**plugin_with_labels(p), "node_processes": p.node_processes(version), "configs": p.configs(version),
            "required_image_tags": p.required_image_tags(version)}
