"""Data sources in a job: input and output URLs, Sahara's substitution of references in arguments, and the
per-execution expansion of URL placeholders (%RANDSTR(n)%, %JOB_EXEC_ID%)."""
from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.db.models import DataSource

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PREFIX = "datasource://"
RANDSTR = re.compile(r"%RANDSTR\((\d+)\)%")
JOB_EXEC_ID = "%JOB_EXEC_ID%"
MAX_RANDSTR = 1024


def _truthy(v: Any) -> bool:
    return v is True or str(v).lower() == "true"


def runtime_url(url: str, job_id: str | None) -> str:
    """A data source URL as one execution uses it: each %RANDSTR(n)% becomes n random lowercase letters and
    %JOB_EXEC_ID% the job's id (Sahara's data_sources/base.py)."""
    def rand(m: re.Match[str]) -> str:
        n = min(int(m.group(1)), MAX_RANDSTR)
        return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))

    url = RANDSTR.sub(rand, url)
    return url.replace(JOB_EXEC_ID, job_id) if job_id else url


def substitute(session: Session, project_id: str, job_configs: dict[str, Any], job_id: str | None = None,
               resolved: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Replace `datasource://name` (when edp.substitute_data_source_for_name) and data source ids (when
    edp.substitute_data_source_for_uuid) in args, configs and params by their runtime URLs.
    Returns the new job_configs and the URLs used, by data source id. A data source resolves to one URL per
    execution however often it is named; `resolved` carries URLs already resolved (input and output)."""
    configs = job_configs.get("configs") or {}
    by_name, by_id = _truthy(configs.get("edp.substitute_data_source_for_name")), \
        _truthy(configs.get("edp.substitute_data_source_for_uuid"))
    known = resolved if resolved is not None else {}
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
            if ds is not None and ds.project_id != project_id and not ds.is_public:
                ds = None
        if ds is None:
            return value
        if ds.id not in known:
            known[ds.id] = runtime_url(ds.url, job_id)
        used[ds.id] = known[ds.id]
        return known[ds.id]

    out = dict(job_configs)
    out["args"] = [resolve(a) for a in job_configs.get("args") or []]
    out["configs"] = {k: resolve(v) for k, v in configs.items()}
    out["params"] = {k: resolve(v) for k, v in (job_configs.get("params") or {}).items()}
    return out, used


@dataclass
class JobData:
    """What a job reads and writes, as one execution sees it."""

    job_configs: dict[str, Any]
    urls: dict[str, str]  # data source id -> runtime URL: the job's `data_source_urls`
    env: dict[str, str]  # OASIS_INPUT_URL / OASIS_OUTPUT_URL
    modes: dict[str, str] = field(default_factory=dict)  # data source id -> "r" (input) | "rw"


def resolve_job(session: Session, job: Any) -> JobData:
    """Input, output and referenced data sources of a job, placeholders expanded once for this execution."""
    resolved: dict[str, str] = {}
    env: dict[str, str] = {}
    modes: dict[str, str] = {}
    for key, ds_id, mode in (("OASIS_INPUT_URL", job.input_id, "r"), ("OASIS_OUTPUT_URL", job.output_id, "rw")):
        ds = session.get(DataSource, ds_id or "")
        if ds is not None:
            resolved.setdefault(ds.id, runtime_url(ds.url, job.id))
            env[key] = resolved[ds.id]
            modes[ds.id] = "rw" if modes.get(ds.id) == "rw" else mode
    configs, used = substitute(session, job.project_id, job.job_configs or {}, job.id, resolved)
    for ds_id in used:
        modes.setdefault(ds_id, "rw")  # a reference in the arguments may be read or written
    urls = {ds_id: resolved[ds_id] for ds_id in [*modes]}
    return JobData(configs, urls, env, modes)
