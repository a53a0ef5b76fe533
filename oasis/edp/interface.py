"""Sahara's job interface (the "unified job interface map"): a job template declares named arguments, each mapped
to a positional argument (`args`, its index as the location), a config or a param (the key as the location); a
job then passes `{name: value}` and the values land in its `job_configs` before it is stored.

Pure functions: the API hands in how to look a data source up, so that this module knows nothing of the database.
Every refusal is an `InterfaceError`, which the API answers with 400 INVALID_DATA.

Where oasis departs from Sahara's code (sahara/service/validations/edp/job_interface.py and the merge in
sahara/db/sqlalchemy/api.py), it follows Sahara's specification instead: a required argument may not have a
default (it would never be used), a number is any decimal number (Sahara's check took only digits), a job without
an `interface` map is a job with an empty one (Sahara refused it when the template had an interface), and a
`data_source` value is a data source id only (not a bare URL, which would bypass the job's scoped access).
"""
from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any

MAPPING_TYPES = ("args", "configs", "params")
VALUE_TYPES = ("string", "number", "data_source")
# What each job type reads of its job_configs (Sahara's JOB_TYPES_ACCEPTABLE_CONFIGS; Dask passes only args and
# reads its edp.* configs, as Spark does). A type not named here takes all three.
ACCEPTED = {
    "Spark": ("configs", "args"), "Java": ("configs", "args"), "Dask": ("configs", "args"),
    "Shell": ("configs", "params", "args"), "Pig": ("configs", "params", "args"), "Hive": ("configs", "params"),
    "MapReduce": ("configs",), "MapReduce.Streaming": ("configs",), "Storm": ("args",),
}
# The engine resolves data source ids in a job's configuration to their per-execution URLs (and grants the job
# access to them) only when this config is on: a data_source argument switches it on for its job.
SUBSTITUTE_BY_ID = "edp.substitute_data_source_for_uuid"
# The keys whose values the API blanks when it shows a job's configs and params (oasis.api.views): a job shows its
# interface values as given, so a credential may not go through the interface to one of them.
SECRET_KEY = re.compile(r"(password|secret|access[._-]?key|token)", re.I)
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"[0-9]+")

# Given a data source id (a string), return it if the caller may use it; raise (a 400 of the caller's) if not.
DataSourceCheck = Callable[[str], str]


class InterfaceError(ValueError):
    pass


def check_template(job_type: str, interface: list[dict[str, Any]] | None,
                   data_source: DataSourceCheck) -> list[dict[str, Any]]:
    """A job template's interface as it is stored: every argument with all its fields (value_type `string` and
    required false unless given), after Sahara's checks."""
    args = [_normalized(a) for a in interface or []]
    names = [a["name"] for a in args]
    if len(names) != len(set(names)):
        raise InterfaceError("Name must be unique within the interface for any job")
    accepted = ACCEPTED.get(job_type, MAPPING_TYPES)
    for a in args:
        if a["mapping_type"] not in accepted:
            raise InterfaceError(f"Only mapping types {list(accepted)} are allowed for job type {job_type}; "
                                 f"argument '{a['name']}' has '{a['mapping_type']}'")
    positional = [a for a in args if a["mapping_type"] == "args"]
    if not all(_INDEX.fullmatch(a["location"]) for a in positional) or \
            sorted(int(a["location"]) for a in positional) != list(range(len(positional))):
        raise InterfaceError("Locations of positional arguments must be an unbroken integer sequence ascending "
                             "from 0")
    mappings = {(a["mapping_type"], a["location"]) for a in args}
    if len(mappings) != len(args):
        raise InterfaceError("The combination of mapping type and location must be unique within the interface "
                             "for any job")
    for a in args:
        if a["mapping_type"] != "args" and SECRET_KEY.search(a["location"]):
            raise InterfaceError(f"Argument '{a['name']}' maps to '{a['mapping_type']}'.'{a['location']}', a "
                                 f"credential: a job shows its interface values, so pass it in job_configs")
        if a["required"] and a["default"] is not None:
            raise InterfaceError(f"Argument '{a['name']}' is required, so it cannot have a default")
        if a["mapping_type"] == "args" and not a["required"] and a["default"] is None:
            raise InterfaceError(f"Positional argument '{a['name']}' must be given a default value if it is not "
                                 f"required")
        if a["default"] is not None:
            _value(a, a["default"], data_source, what="default")
    return args


def apply(interface: list[dict[str, Any]], values: dict[str, Any] | None, job_configs: dict[str, Any],
          data_source: DataSourceCheck) -> dict[str, Any]:
    """The job's `job_configs` with its interface values (or the template's defaults) in place: positional
    arguments first, then the job's own `args` (Sahara's `*args`); configs and params set by key. A value given
    through the interface that differs from an explicit entry at the same location is refused; a default yields
    to an explicit entry (Sahara's merge)."""
    args = [_normalized(a) for a in interface or []]
    values = values or {}
    unknown = sorted(set(values) - {a["name"] for a in args})
    if unknown:
        raise InterfaceError(f"Argument names {unknown} were not found in the interface for this job")
    missing = [a["name"] for a in args if a["required"] and a["name"] not in values]
    if missing:
        raise InterfaceError(f"Argument names {missing} are required for this job")
    out = copy.deepcopy(job_configs)
    positional: dict[int, Any] = {}
    sources = False
    for a in args:
        given = a["name"] in values
        if not given and a["default"] is None:
            continue
        value = _value(a, values[a["name"]] if given else a["default"], data_source)
        if a["mapping_type"] == "args":
            positional[int(a["location"])] = value
        else:
            section = out.setdefault(a["mapping_type"], {})
            if a["location"] in section:
                if not given:
                    continue  # the job's own entry wins over a default; its data source is its own affair
                if section[a["location"]] != value:
                    raise InterfaceError(f"Argument '{a['name']}' was passed both through the interface and in "
                                         f"location '{a['mapping_type']}'.'{a['location']}'; pass it through "
                                         f"either the interface or the configuration maps, not both")
            section[a["location"]] = value
        sources = sources or a["value_type"] == "data_source"
    if positional:  # dense: every positional argument is required or has a default
        out["args"] = [positional[i] for i in sorted(positional)] + list(out.get("args") or [])
    if sources:
        configs = out.setdefault("configs", {})
        if str(configs.get(SUBSTITUTE_BY_ID, True)).lower() != "true":
            raise InterfaceError(f"A data_source argument needs the data source's URL substituted for its id; "
                                 f"configs '{SUBSTITUTE_BY_ID}' must not be false")
        configs[SUBSTITUTE_BY_ID] = True
    return out


def _normalized(arg: dict[str, Any]) -> dict[str, Any]:
    out = {"name": arg["name"], "description": arg.get("description") or "",
           "mapping_type": arg["mapping_type"], "location": arg["location"],
           "value_type": arg.get("value_type") or "string", "required": bool(arg.get("required", False)),
           "default": arg.get("default")}
    if out["mapping_type"] not in MAPPING_TYPES:
        raise InterfaceError(f"Argument '{out['name']}': mapping_type must be one of {list(MAPPING_TYPES)}")
    if out["value_type"] not in VALUE_TYPES:
        raise InterfaceError(f"Argument '{out['name']}': value_type must be one of {list(VALUE_TYPES)}")
    return out


def _value(arg: dict[str, Any], value: Any, data_source: DataSourceCheck, what: str = "value") -> Any:
    """The value checked against the argument's type (a data source's id as the caller may use it)."""
    kind, name = arg["value_type"], arg["name"]
    shown = str(value)[:80]
    if kind == "number":
        if isinstance(value, bool) or not (
                (isinstance(value, (int, float)) and math.isfinite(value))
                or (isinstance(value, str) and _NUMBER.fullmatch(value.strip()))):
            raise InterfaceError(f"The {what} '{shown}' of argument '{name}' is not a valid number")
        return value
    if not isinstance(value, str):
        raise InterfaceError(f"The {what} '{shown}' of argument '{name}' is not a valid "
                             f"{'string' if kind == 'string' else 'data source id'}")
    if kind == "data_source":
        return data_source(value)
    return value
