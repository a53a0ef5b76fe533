"""Workflows (an oasis extension): a DAG of job templates whose steps pass values to each other. The pure part,
shared by the API (validation at create and run) and the engine (what runs next, what a failure stops, the
values a step's job is given): no database, no I/O.

A run keeps one record per step (`{"status", "job_id", "start_time", "end_time", "output_url", "reason"}`,
by step name); these functions take and return those records."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

RUN_OP = "run"  # a run's operation; a restart is it again, over the steps left to do
CANCEL_OP = "cancel"  # `POST /v2/workflow-runs/{id}/cancel`: kill the running steps' jobs, run nothing more

# A run's status, and each step's; TOBEKILLED (a run being cancelled) and KILLED as a job's (Sahara's words)
PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED"
TOBEKILLED, KILLED = "TOBEKILLED", "KILLED"
STEP_DONE = frozenset({SUCCEEDED, FAILED, SKIPPED, KILLED})
RESTARTABLE = frozenset({FAILED, KILLED})  # the ends of a run that `restart` takes
# `{{ name }}`, `{{ steps.NAME.output }}`, `{{ steps.NAME.job_id }}`; names are plain words
REFERENCE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
STEP_FIELDS = ("output", "job_id")
# A step's record may hold, until its job is written, the proxy user the API made for it: {"job_id": the job's
# id to be, "user": the proxy record, encrypted}; never shown.
PROXY = "proxy"


class WorkflowError(ValueError):
    """A workflow or a run that cannot be: the message is the user's 400."""


# --- the template ---------------------------------------------------------------------------------------------


def order(steps: list[dict[str, Any]]) -> list[str]:
    """The step names in an order where each comes after its dependencies; refuses duplicate names, unknown
    dependencies and cycles (naming the cycle)."""
    names = [str(step["name"]) for step in steps]
    for name in names:
        if not NAME.match(name):
            raise WorkflowError(f"step name {name[:80]!r} must be letters, digits, '-' or '_' (at most 80)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WorkflowError(f"step names must be unique: {', '.join(dupes)} given more than once")
    deps = dependencies(steps)
    for name, wanted in deps.items():
        unknown = [d for d in wanted if d not in deps]
        if unknown:
            raise WorkflowError(f"step '{name}' depends on unknown step(s): {', '.join(unknown)}")
    done: list[str] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name):] + [name]
            raise WorkflowError(f"the steps' dependencies make a cycle: {' -> '.join(cycle)}")
        state[name] = "visiting"
        for dep in deps[name]:
            visit(dep, [*path, name])
        state[name] = "done"
        done.append(name)

    for name in names:
        visit(name, [])
    return done


def dependencies(steps: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    return {str(step["name"]): [str(d) for d in step.get("depends_on") or []] for step in steps}


def ancestors(steps: list[dict[str, Any]], name: str) -> set[str]:
    """Every step `name` waits for, directly or not."""
    deps = dependencies(steps)
    seen: set[str] = set()
    todo = list(deps.get(name, []))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(deps.get(dep, []))
    return seen


def references(value: Any) -> list[str]:
    """Every `{{ ... }}` name in a step's job_configs (configs' and params' values, args)."""
    found: list[str] = []
    for text in _strings(value):
        found.extend(REFERENCE.findall(text))
    return found


def check_references(steps: list[dict[str, Any]], parameters: Mapping[str, Any]) -> None:
    """Each step refers only to declared parameters and to the steps it waits for (whose values exist by then)."""
    for step in steps:
        name = step["name"]
        before = ancestors(steps, name)
        for ref in references(step.get("job_configs") or {}):
            if ref.startswith("steps."):
                other, field = _step_ref(ref)
                if other not in before:
                    raise WorkflowError(f"step '{name}' uses {{{{ {ref} }}}}, but '{other}' is not a step it "
                                        f"depends on (directly or not)")
                if field == "output" and not _has_output(steps, other):
                    raise WorkflowError(f"step '{name}' uses {{{{ {ref} }}}}, but step '{other}' has no output_id")
            elif ref not in parameters:
                raise WorkflowError(f"step '{name}' uses {{{{ {ref} }}}}, which is not one of the workflow's "
                                    f"parameters ({', '.join(sorted(parameters)) or 'none'})")


def _has_output(steps: list[dict[str, Any]], name: str) -> bool:
    return any(s["name"] == name and s.get("output_id") for s in steps)


def _step_ref(ref: str) -> tuple[str, str]:
    parts = ref.split(".")
    if len(parts) != 3 or parts[2] not in STEP_FIELDS:
        raise WorkflowError(f"{{{{ {ref} }}}}: a step's value is {{{{ steps.NAME.output }}}} or "
                            f"{{{{ steps.NAME.job_id }}}}")
    return parts[1], parts[2]


def parameter_values(declared: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, str]:
    """A run's parameter values: the given ones over the declared defaults; every parameter needs one."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise WorkflowError(f"unknown parameter(s): {', '.join(unknown)}; the workflow's are "
                            f"{', '.join(sorted(declared)) or 'none'}")
    values = {k: v for k, v in declared.items() if v is not None} | {k: v for k, v in given.items()}
    missing = sorted(set(declared) - set(values))
    if missing:
        raise WorkflowError(f"parameter(s) without a value or a default: {', '.join(missing)}")
    return {k: str(v) for k, v in values.items()}


# --- a run ----------------------------------------------------------------------------------------------------


def new_records(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {step["name"]: record() for step in steps}


def record(status: str = PENDING) -> dict[str, Any]:
    return {"status": status, "job_id": None, "start_time": None, "end_time": None, "output_url": None,
            "reason": ""}


def shown(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A step's record as the API shows it."""
    return {k: v for k, v in rec.items() if k != PROXY}


def planned_proxies(records: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The proxy users made for steps whose job was not written (yet): step name -> {"job_id", "user"}."""
    return {name: rec[PROXY] for name, rec in records.items() if rec.get(PROXY)}


def ready(steps: list[dict[str, Any]], records: Mapping[str, dict[str, Any]]) -> list[str]:
    """The steps to start now: PENDING, with every dependency SUCCEEDED (in the template's order)."""
    deps = dependencies(steps)
    return [name for name in deps if records[name]["status"] == PENDING
            and all(records[d]["status"] == SUCCEEDED for d in deps[name])]


def stopped(steps: list[dict[str, Any]], records: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """PENDING steps that can no longer run, a dependency having FAILED or been SKIPPED (through the whole
    chain): name -> why."""
    deps = dependencies(steps)
    status = {name: records[name]["status"] for name in deps}
    why: dict[str, str] = {}
    for name in order(steps):
        if status[name] != PENDING:
            continue
        bad = [d for d in deps[name] if status[d] in (FAILED, SKIPPED)]
        if bad:
            status[name] = SKIPPED
            why[name] = f"not run: step '{bad[0]}' {status[bad[0]].lower()}"
    return why


def outcome(records: Mapping[str, dict[str, Any]]) -> str | None:
    """The run's end once every step is done (SUCCEEDED only if all did), else None."""
    statuses = [r["status"] for r in records.values()]
    if not all(s in STEP_DONE for s in statuses):
        return None
    return SUCCEEDED if all(s == SUCCEEDED for s in statuses) else FAILED


def for_restart(records: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records of a restarted run: what SUCCEEDED is kept, the failed, killed and stopped steps start over
    (their dependants were stopped, so they start over too)."""
    if not any(r["status"] in (FAILED, SKIPPED, KILLED) for r in records.values()):
        raise WorkflowError("only a run with a failed, killed or skipped step can be restarted")
    return {name: (dict(r) if r["status"] == SUCCEEDED else record()) for name, r in records.items()}


def cancelled(records: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records once a cancel has been asked: what has not started never will."""
    out = {name: dict(r) for name, r in records.items()}
    for rec in out.values():
        if rec["status"] == PENDING:
            rec.update(status=SKIPPED, reason="not run: the run was cancelled")
    return out


def substitute(job_configs: dict[str, Any], parameters: Mapping[str, str],
               records: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The step's job_configs with every `{{ ... }}` replaced by its value (plain string substitution)."""
    def value(match: re.Match[str]) -> str:
        ref = match.group(1)
        if not ref.startswith("steps."):
            if ref not in parameters:
                raise WorkflowError(f"{{{{ {ref} }}}}: no parameter of that name")
            return parameters[ref]
        other, field = _step_ref(ref)
        rec = records.get(other)
        if rec is None:
            raise WorkflowError(f"{{{{ {ref} }}}}: no step named '{other}'")
        found = rec.get("output_url") if field == "output" else rec.get("job_id")
        if not found:
            raise WorkflowError(f"{{{{ {ref} }}}}: step '{other}' has no {field.replace('_', ' ')}")
        return str(found)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return REFERENCE.sub(value, item)
        if isinstance(item, list):
            return [walk(i) for i in item]
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        return item

    return walk(job_configs)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
