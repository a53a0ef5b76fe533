#!/usr/bin/env python3
"""The ceiling of bench/api_load.py: a bare Starlette app whose handlers run, on the same database, the SQL that
answers the same requests as `oasis api` (the same rows, the same tables read, the same paging queries), with
nothing else: no policy, no schema validation, no ORM, no middleware. Served the way `oasis api` is served (oasis.server._serve: uvicorn, one
process, the same keep-alive).

    .venv/bin/python bench/api_load_ceiling.py --database-url URL --port PORT

Authentication is included, as in oasis: every request's X-Auth-Token is looked up in `tokens` (by its SHA-256,
as the built-in identity stores it) with its role on the project, in one query. The responses carry the same
rows (clusters with node groups, instances and provision steps, and each cluster's job activity; jobs; cluster
templates) as plain JSON of the columns, without Sahara's field defaults."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oasis.db.quotas import JOB_ENDED  # noqa: E402
from oasis.db.session import Database  # noqa: E402
from oasis.server import KEEP_ALIVE_SECONDS  # noqa: E402

DB: Database
CLUSTER_COLS = ("id", "name", "project_id", "is_public", "is_protected", "created_at", "updated_at", "plugin_name",
                "plugin_version", "cluster_template_id", "status", "status_description", "is_transient", "trust_id",
                "spec", "info", "management_public_key")
JOB_COLS = ("id", "project_id", "job_template_id", "cluster_id", "input_id", "output_id", "job_configs", "interface",
            "status", "engine_job_id", "return_code", "start_time", "end_time", "is_public", "is_protected",
            "data_source_urls", "info", "created_at", "updated_at")
ENDED = ", ".join(f"'{s}'" for s in sorted(JOB_ENDED))


def _row(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.strftime("%Y-%m-%dT%H:%M:%S")
        elif isinstance(v, str) and k in ("spec", "info", "job_configs", "interface", "data_source_urls"):
            out[k] = json.loads(v)  # SQLite gives JSON columns back as text
    return out


def _auth(conn: Any, request: Request) -> str | None:
    token = request.headers.get("x-auth-token", "")
    row = conn.execute(text(
        "SELECT t.project_id FROM tokens t JOIN role_assignments r ON r.user_id = t.user_id "
        "AND r.project_id = t.project_id WHERE t.id_hash = :h AND t.expires_at > :now LIMIT 1"),
        {"h": hashlib.sha256(token.encode()).hexdigest(),
         "now": datetime.now(timezone.utc).replace(tzinfo=None)}).first()
    return row[0] if row else None


def _page(conn: Any, table: str, cols: tuple[str, ...], project: str, query: Any, filters: tuple[str, ...]) \
        -> tuple[list[dict[str, Any]], dict | None]:
    """Keyset paging on (created_at, id) with Sahara's markers, as oasis.api.query.page reads it: the project's
    rows and other projects' public rows each read in index order and cut, then merged."""
    where, params = [], {"p": project}
    for name in filters:
        values = query.getlist(name)
        if values:
            names = [f"{name}{i}" for i in range(len(values))]
            where.append(f"{name} IN ({', '.join(':' + n for n in names)})")
            params.update(zip(names, values))
    parts = ["project_id = :p", f"is_public = {_true()} AND project_id != :p"]
    limit = int(query.get("limit", 100))
    marker = query.get("marker")

    def ids(extra: str, desc: bool, n: int, offset: int = 0) -> list[str]:
        way = "DESC" if desc else "ASC"
        members = [f"SELECT * FROM (SELECT created_at AS k0, id AS k1 FROM {table} WHERE "
                   f"{' AND '.join([*where, part, *([extra] if extra else [])])} ORDER BY created_at {way}, id {way} "
                   f"LIMIT {n + offset}) AS m{i}" for i, part in enumerate(parts)]
        sql = f"SELECT k1 FROM ({' UNION ALL '.join(members)}) AS u ORDER BY k0 {way}, k1 {way} LIMIT {n} OFFSET {offset}"
        return [r[0] for r in conn.execute(text(sql), params)]

    prev, after = None, ""
    if marker:
        visible = " AND ".join([*where, "(project_id = :p OR is_public = " + _true() + ")"])
        m = conn.execute(text(f"SELECT created_at, id FROM {table} WHERE id = :m AND {visible}"),
                         {**params, "m": marker}).first()
        if m is None:
            return [], {"prev": None, "next": None}
        params.update(mc=m[0], mi=m[1])
        before = ids("(created_at, id) < (:mc, :mi)", True, 1, limit - 1)
        prev = before[0] if before else None
        after = "(created_at, id) > (:mc, :mi)"
    chosen = ids(after, False, limit + 1)
    nxt = chosen[limit - 1] if len(chosen) > limit else None
    chosen = chosen[:limit]
    rows: list[dict[str, Any]] = []
    if chosen:
        marks, named = _in(chosen)
        found = {r.id: r for r in conn.execute(text(f"SELECT {', '.join(cols)} FROM {table} WHERE id IN ({marks})"),
                                               named)}
        rows = [_row(found[i]) for i in chosen]
    return rows, ({"prev": prev, "next": nxt} if marker or nxt or prev else None)


def _true() -> str:
    return "1" if DB.url.startswith("sqlite") else "true"


def _in(ids: list[str]) -> tuple[str, dict[str, str]]:
    names = {f"i{n}": i for n, i in enumerate(ids)}
    return ", ".join(":" + n for n in names), names


def _clusters(conn: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node groups, instances, provision steps and job activity of a page of clusters: one query each."""
    if not rows:
        return rows
    marks, params = _in([r["id"] for r in rows])
    groups: dict[str, list[dict]] = {r["id"]: [] for r in rows}
    for ng in conn.execute(text(f"SELECT id, cluster_id, name, count, spec, created_at, updated_at FROM node_groups "
                                f"WHERE cluster_id IN ({marks}) ORDER BY created_at, name"), params):
        groups[ng.cluster_id].append({**_row(ng), "instances": []})
    by_group = {g["id"]: g for gs in groups.values() for g in gs}
    for inst in conn.execute(text(f"SELECT id, node_group_id, name, internal_ip, management_ip, created_at, "
                                  f"updated_at FROM instances WHERE cluster_id IN ({marks}) ORDER BY name"), params):
        by_group[inst.node_group_id]["instances"].append(_row(inst))
    steps: dict[str, list[dict]] = {r["id"]: [] for r in rows}
    for st in conn.execute(text(f"SELECT * FROM provision_steps WHERE cluster_id IN ({marks}) ORDER BY created_at"),
                           params):
        steps[st.cluster_id].append(_row(st))
    running = dict(conn.execute(text(f"SELECT cluster_id, count(*) FROM jobs WHERE cluster_id IN ({marks}) AND "
                                     f"status NOT IN ({ENDED}) GROUP BY cluster_id"), params).all())
    latest = {r[0]: r[1:] for r in conn.execute(text(
        f"SELECT cluster_id, max(created_at), max(start_time), max(end_time) FROM jobs WHERE cluster_id IN ({marks}) "
        f"GROUP BY cluster_id"), params)}
    for r in rows:
        times = [t for t in latest.get(r["id"], ()) if t is not None]
        r.update(node_groups=groups[r["id"]], provision_progress=steps[r["id"]],
                 lifecycle={"jobs_running": running.get(r["id"], 0), "last_job": str(max(times)) if times else None})
    return rows


def _run(request: Request, work: Any) -> Response:
    with DB.engine.connect() as conn:
        project = _auth(conn, request)
        if project is None:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        status, body = work(conn, project)
        conn.commit()
    return Response(status_code=status) if body is None else JSONResponse(body, status_code=status)


async def list_clusters(request: Request) -> Response:
    def work(conn: Any, project: str) -> tuple[int, Any]:
        rows, markers = _page(conn, "clusters", CLUSTER_COLS, project, request.query_params,
                              ("plugin_name", "plugin_version", "name"))
        body: dict[str, Any] = {"clusters": _clusters(conn, rows)}
        if markers is not None:
            body["markers"] = markers
        return 200, body
    return await run_in_threadpool(_run, request, work)


async def list_jobs(request: Request) -> Response:
    def work(conn: Any, project: str) -> tuple[int, Any]:
        rows, markers = _page(conn, "jobs", JOB_COLS, project, request.query_params, ("status",))
        body: dict[str, Any] = {"jobs": rows}
        if markers is not None:
            body["markers"] = markers
        return 200, body
    return await run_in_threadpool(_run, request, work)


def _one(conn: Any, table: str, cols: tuple[str, ...], object_id: str, project: str) -> dict[str, Any] | None:
    row = conn.execute(text(f"SELECT {', '.join(cols)} FROM {table} WHERE id = :id AND "
                            f"(project_id = :p OR is_public = {_true()})"), {"id": object_id, "p": project}).first()
    return _row(row) if row is not None else None


async def show_cluster(request: Request) -> Response:
    def work(conn: Any, project: str) -> tuple[int, Any]:
        row = _one(conn, "clusters", CLUSTER_COLS, request.path_params["id"], project)
        return (404, {"error": "not found"}) if row is None else (200, {"cluster": _clusters(conn, [row])[0]})
    return await run_in_threadpool(_run, request, work)


async def show_job(request: Request) -> Response:
    def work(conn: Any, project: str) -> tuple[int, Any]:
        row = _one(conn, "jobs", JOB_COLS, request.path_params["id"], project)
        return (404, {"error": "not found"}) if row is None else (200, {"job": row})
    return await run_in_threadpool(_run, request, work)


async def create_template(request: Request) -> Response:
    data = json.loads(await request.body())

    def work(conn: Any, project: str) -> tuple[int, Any]:
        if conn.execute(text("SELECT id FROM cluster_templates WHERE project_id = :p AND name = :n"),
                        {"p": project, "n": data["name"]}).first():
            return 400, {"error": "NAME_ALREADY_EXISTS"}
        spec = {k: v for k, v in data.items() if k not in ("name", "plugin_name", "plugin_version")}
        row = {"id": str(uuid.uuid4()), "project_id": project, "name": data["name"], "is_public": False,
               "is_protected": False, "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
               "plugin_name": data["plugin_name"], "plugin_version": data["plugin_version"], "spec": json.dumps(spec)}
        conn.execute(text(f"INSERT INTO cluster_templates ({', '.join(row)}) VALUES "
                          f"({', '.join(':' + k for k in row)})"), row)
        return 202, {"cluster_template": {**row, "spec": spec, "created_at": row["created_at"].isoformat()}}
    return await run_in_threadpool(_run, request, work)


async def delete_template(request: Request) -> Response:
    def work(conn: Any, project: str) -> tuple[int, Any]:
        tid = request.path_params["id"]
        if not conn.execute(text("SELECT id FROM cluster_templates WHERE id = :id AND project_id = :p"),
                            {"id": tid, "p": project}).first():
            return 404, {"error": "not found"}
        if conn.execute(text("SELECT name FROM clusters WHERE cluster_template_id = :id"), {"id": tid}).first():
            return 400, {"error": "INVALID_REFERENCE"}
        conn.execute(text("DELETE FROM cluster_templates WHERE id = :id"), {"id": tid})
        return 204, None
    return await run_in_threadpool(_run, request, work)


async def root(_request: Request) -> Response:
    return JSONResponse({"versions": []})


def app() -> Starlette:
    return Starlette(routes=[
        Route("/", root), Route("/v2/clusters", list_clusters), Route("/v2/clusters/{id}", show_cluster),
        Route("/v2/jobs", list_jobs), Route("/v2/jobs/{id}", show_job),
        Route("/v2/cluster-templates", create_template, methods=["POST"]),
        Route("/v2/cluster-templates/{id}", delete_template, methods=["DELETE"])])


def main() -> None:
    global DB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    DB = Database(args.database_url)  # the same engine, pool and SQLite pragmas as oasis; no secret is read
    uvicorn.run(app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, log_config=None,
                timeout_keep_alive=KEEP_ALIVE_SECONDS)


if __name__ == "__main__":
    main()
