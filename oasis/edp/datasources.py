"""Data sources in a job: input and output URLs, and Sahara's substitution of references in arguments."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.db.models import DataSource

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PREFIX = "datasource://"


def _truthy(v: Any) -> bool:
    return v is True or str(v).lower() == "true"


def substitute(session: Session, project_id: str, job_configs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Replace `datasource://name` (when edp.substitute_data_source_for_name) and data source ids (when
    edp.substitute_data_source_for_uuid) in args, configs and params by their URLs.
    Returns the new job_configs and the URLs used, by data source id."""
    configs = job_configs.get("configs") or {}
    by_name, by_id = _truthy(configs.get("edp.substitute_data_source_for_name")), \
        _truthy(configs.get("edp.substitute_data_source_for_uuid"))
    used: dict[str, str] = {}

    def resolve(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        ds = None
        if by_name and value.startswith(PREFIX):
            ds = session.scalars(select(DataSource).where(
                DataSource.name == value[len(PREFIX):],
                (DataSource.project_id == project_id) | DataSource.is_public)).first()
        elif by_id and UUID.match(value):
            ds = session.get(DataSource, value)
        if ds is None:
            return value
        used[ds.id] = ds.url
        return ds.url

    out = dict(job_configs)
    out["args"] = [resolve(a) for a in job_configs.get("args") or []]
    out["configs"] = {k: resolve(v) for k, v in configs.items()}
    out["params"] = {k: resolve(v) for k, v in (job_configs.get("params") or {}).items()}
    return out, used
