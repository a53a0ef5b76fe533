"""The dashboard's pages: overview, clusters (list, detail, create, scale, delete), jobs (list, detail, run) and
the lists of templates, job templates, job binaries and data sources. Each asks the API for what it shows and
for every change it makes, as the signed-in user."""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from oasis.web.client import Api, ApiFailure, failure_of
from oasis.web.guard import signed_in
from oasis.web.logs import read_log
from oasis.web.render import page
from oasis.web.session import ROOT, Session

FINAL_JOB = frozenset({"SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR", "SUSPENDFAILED"})
# A cluster's statuses where nothing moves until a user asks again (the live timeline then stops).
SETTLED_CLUSTER = frozenset({"Active", "Error"})
SUBSTITUTE = "edp.substitute_data_source_for_name"


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(f"{ROOT}{path}", status_code=303)


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


# --- overview -----------------------------------------------------------------------------------------------


@signed_in
async def overview(request: Request, api: Api, session: Session) -> Response:
    sites, clusters, jobs = await asyncio.gather(api.listing("/v2/sites", "sites"),
                                                 api.listing("/v2/clusters", "clusters"),
                                                 api.listing("/v2/jobs", "jobs"))
    details = await asyncio.gather(*(api.get(f"/v2/sites/{s['id']}") for s in sites))
    hosts = {d["site"]["id"]: d["site"].get("hosts") or [] for d in details}
    return page(request, "overview.html", session, sites=sites, hosts=hosts,
                cluster_counts=sorted(Counter(c["status"] for c in clusters).items()),
                job_counts=sorted(Counter(j["info"]["status"] for j in jobs).items()),
                clusters=len(clusters), jobs=len(jobs))


# --- clusters -----------------------------------------------------------------------------------------------


@signed_in
async def clusters(request: Request, api: Api, session: Session) -> Response:
    # A warm pool's clusters are not the user's until claimed (the API lists them under their pool, not as clusters)
    rows, pools = await asyncio.gather(api.listing("/v2/clusters", "clusters"), api.listing("/v2/pools", "pools"))
    return page(request, "clusters.html", session, clusters=sorted(rows, key=lambda c: c["name"]),
                pools=sorted(pools, key=lambda p: p["name"]))


async def _cluster_page(request: Request, api: Api, session: Session, cluster_id: str, status: int = 200,
                        **errors: str) -> Response:
    cluster = (await api.get(f"/v2/clusters/{cluster_id}", show_progress="true"))["cluster"]
    template = None
    if cluster.get("cluster_template_id"):
        try:
            template = (await api.get(f"/v2/cluster-templates/{cluster['cluster_template_id']}"))["cluster_template"]
        except ApiFailure:
            template = None  # deleted since, or another project's: the id is shown instead
    return page(request, "cluster.html", session, status, cluster=cluster, template=template,
                settled=cluster["status"] in SETTLED_CLUSTER, **errors)


@signed_in
async def cluster(request: Request, api: Api, session: Session) -> Response:
    return await _cluster_page(request, api, session, request.path_params["id"])


async def _new_cluster_form(request: Request, api: Api, session: Session, status: int = 200,
                            error: str | None = None, form: dict[str, str] | None = None) -> Response:
    templates, images = await asyncio.gather(api.listing("/v2/cluster-templates", "cluster_templates"),
                                             api.listing("/v2/images", "images"))
    return page(request, "cluster_new.html", session, status, templates=sorted(templates, key=lambda t: t["name"]),
                images=images, error=error, form=form or {"cluster_template_id": request.query_params.get("template",
                                                                                                        "")})


@signed_in
async def new_cluster(request: Request, api: Api, session: Session) -> Response:
    return await _new_cluster_form(request, api, session)


@signed_in
async def create_cluster(request: Request, api: Api, session: Session) -> Response:
    """A cluster from a cluster template: the plugin and its version are the template's."""
    form = request.state.form
    template_id = form.get("cluster_template_id", "")
    if not template_id:
        return await _new_cluster_form(request, api, session, 400, "Choose a cluster template.", form)
    try:
        template = (await api.get(f"/v2/cluster-templates/{template_id}"))["cluster_template"]
        body: dict[str, Any] = {"name": form.get("name", ""), "plugin_name": template["plugin_name"],
                                "plugin_version": template["plugin_version"], "cluster_template_id": template_id}
        if form.get("default_image_id"):
            body["default_image_id"] = form["default_image_id"]
        if form.get("description"):
            body["description"] = form["description"]
        made = (await api.post("/v2/clusters", body))["cluster"]
    except ApiFailure as e:
        if e.status == 401:
            raise
        return await _new_cluster_form(request, api, session, e.status, e.message, form)
    return see_other(f"/clusters/{made['id']}")


@signed_in
async def scale_cluster(request: Request, api: Api, session: Session) -> Response:
    cluster_id = request.path_params["id"]
    form = request.state.form
    current = (await api.get(f"/v2/clusters/{cluster_id}"))["cluster"]
    resize = []
    for ng in current["node_groups"]:
        wanted = form.get(f"count-{ng['name']}", "").strip()
        if not wanted:
            continue
        if not wanted.isdigit():
            return await _cluster_page(request, api, session, cluster_id, 400,
                                       scale_error=f"The count of {ng['name']} must be a whole number, not {wanted!r}.")
        if int(wanted) != ng["count"]:
            resize.append({"name": ng["name"], "count": int(wanted)})
    if resize:
        try:
            await api.put(f"/v2/clusters/{cluster_id}", {"resize_node_groups": resize})
        except ApiFailure as e:
            if e.status in (401, 404):
                raise
            return await _cluster_page(request, api, session, cluster_id, e.status, scale_error=e.message)
    return see_other(f"/clusters/{cluster_id}")


@signed_in
async def delete_cluster(request: Request, api: Api, session: Session) -> Response:
    cluster_id = request.path_params["id"]
    if request.state.form.get("confirm") != "yes":
        return await _cluster_page(request, api, session, cluster_id, 400,
                                   delete_error="Tick the box to confirm the deletion.")
    try:
        await api.delete(f"/v2/clusters/{cluster_id}")
    except ApiFailure as e:
        if e.status in (401, 404):
            raise
        return await _cluster_page(request, api, session, cluster_id, e.status, delete_error=e.message)
    return see_other(f"/clusters/{cluster_id}")


# --- jobs ---------------------------------------------------------------------------------------------------


@signed_in
async def jobs(request: Request, api: Api, session: Session) -> Response:
    rows, templates, clusters_ = await asyncio.gather(api.listing("/v2/jobs", "jobs"),
                                                      api.listing("/v2/job-templates", "job_templates"),
                                                      api.listing("/v2/clusters", "clusters"))
    rows.sort(key=lambda j: j.get("created_at") or "", reverse=True)
    return page(request, "jobs.html", session, jobs=rows, templates=by_id(templates), clusters=by_id(clusters_))


@signed_in
async def job(request: Request, api: Api, session: Session) -> Response:
    job_id = request.path_params["id"]
    row = (await api.get(f"/v2/jobs/{job_id}"))["job"]
    final = row["info"]["status"] in FINAL_JOB
    logs = {stream: await read_log(api, job_id, stream, 0, final) for stream in ("stdout", "stderr")}
    # what the job left behind (oasis.edp.history), collected once it has ended
    history = (await api.get(f"/v2/jobs/{job_id}/history"))["history"] if final else []
    templates, clusters_, sources = await asyncio.gather(api.listing("/v2/job-templates", "job_templates"),
                                                         api.listing("/v2/clusters", "clusters"),
                                                         api.listing("/v2/data-sources", "data_sources"))
    return page(request, "job.html", session, job=row, logs=logs, final=final, history=history,
                templates=by_id(templates),
                clusters=by_id(clusters_), sources=by_id(sources), live_url=f"{ROOT}/jobs/{job_id}/logs/events",
                args=(row.get("job_configs") or {}).get("args") or [])


# The API's own headers of a history file go with it: an attachment, and a sandbox for the Dask report's scripts.
_HISTORY_HEADERS = ("content-type", "content-disposition", "content-security-policy", "x-content-type-options")


@signed_in
async def job_history_file(request: Request, api: Api, session: Session) -> Response:
    """One of the files a job left, downloaded through the API with the session's token."""
    job_id, name = request.path_params["id"], request.path_params["name"]
    response = await api.call("GET", f"/v2/jobs/{job_id}/history/{name}")
    if response.status_code >= 400:
        raise failure_of(response)
    headers = {k: v for k, v in response.headers.items() if k.lower() in _HISTORY_HEADERS}
    return Response(response.content, headers={**headers, "Cache-Control": "no-store"})


async def _new_job_form(request: Request, api: Api, session: Session, status: int = 200, error: str | None = None,
                        form: dict[str, str] | None = None) -> Response:
    templates, clusters_, sources = await asyncio.gather(api.listing("/v2/job-templates", "job_templates"),
                                                         api.listing("/v2/clusters", "clusters"),
                                                         api.listing("/v2/data-sources", "data_sources"))
    defaults = {"cluster_id": request.query_params.get("cluster", "")}
    return page(request, "job_new.html", session, status, templates=sorted(templates, key=lambda t: t["name"]),
                clusters=sorted(clusters_, key=lambda c: c["name"]), sources=sorted(sources, key=lambda d: d["name"]),
                error=error, form=form or defaults)


@signed_in
async def new_job(request: Request, api: Api, session: Session) -> Response:
    return await _new_job_form(request, api, session)


@signed_in
async def run_job(request: Request, api: Api, session: Session) -> Response:
    form = request.state.form
    body: dict[str, Any] = {"job_template_id": form.get("job_template_id", ""), "cluster_id": form.get("cluster_id", "")}
    for key in ("input_id", "output_id"):
        if form.get(key):
            body[key] = form[key]
    configs: dict[str, Any] = {}
    args = [line.strip() for line in form.get("args", "").splitlines() if line.strip()]
    if args:
        configs["args"] = args
    if form.get("substitute") == "yes":
        configs["configs"] = {SUBSTITUTE: True}
    if configs:
        body["job_configs"] = configs
    try:
        made = (await api.post("/v2/jobs", body))["job"]
    except ApiFailure as e:
        if e.status == 401:
            raise
        return await _new_job_form(request, api, session, e.status, e.message, form)
    return see_other(f"/jobs/{made['id']}")


# --- templates, binaries, data sources ----------------------------------------------------------------------


@signed_in
async def templates(request: Request, api: Api, session: Session) -> Response:
    groups, clusters_ = await asyncio.gather(api.listing("/v2/node-group-templates", "node_group_templates"),
                                             api.listing("/v2/cluster-templates", "cluster_templates"))
    return page(request, "templates.html", session, node_group_templates=sorted(groups, key=lambda t: t["name"]),
                cluster_templates=sorted(clusters_, key=lambda t: t["name"]))


@signed_in
async def job_templates(request: Request, api: Api, session: Session) -> Response:
    rows = await api.listing("/v2/job-templates", "job_templates")
    return page(request, "job_templates.html", session, rows=sorted(rows, key=lambda t: t["name"]))


@signed_in
async def job_binaries(request: Request, api: Api, session: Session) -> Response:
    rows = await api.listing("/v2/job-binaries", "binaries")
    return page(request, "job_binaries.html", session, rows=sorted(rows, key=lambda t: t["name"]))


@signed_in
async def data_sources(request: Request, api: Api, session: Session) -> Response:
    rows = await api.listing("/v2/data-sources", "data_sources")
    return page(request, "data_sources.html", session, rows=sorted(rows, key=lambda t: t["name"]))
