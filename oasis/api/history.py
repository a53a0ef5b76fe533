"""A job's history (an oasis extension): what it left in the deployment's store besides its logs, its Spark event
logs and its Dask performance report (oasis/edp/history.py), readable after its cluster is gone.

Only the job's own project (and administrators) see them: a public job is visible to every project, its history
is not, so another project gets the 404 of a job that does not exist."""
from __future__ import annotations

from starlette.responses import Response

from oasis.api.errors import ApiError, bad, not_found
from oasis.api.routing import Ctx, Reply, Routes
from oasis.db.models import Job
from oasis.edp import history
from oasis.storage.base import ObjectNotFound

# The Dask report is HTML that runs scripts: served as a download, and sandboxed should a browser render it
# anyway, so that it can never act on the oasis origin (its cookies, its API with the reader's token).
_DOWNLOAD_HEADERS = {"Content-Security-Policy": "sandbox allow-scripts", "X-Content-Type-Options": "nosniff",
                     "Cache-Control": "private, no-store"}
_MEDIA = {history.DASK_KIND: "text/html; charset=utf-8", history.SPARK_EVENT_LOG: "application/octet-stream"}


def _own_job(ctx: Ctx) -> str:
    """The id of the job in the path if it is the caller's project's (or the caller an administrator)."""
    with ctx.db.session() as s:
        job = s.get(Job, ctx.path["id"])
        if job is None or not (ctx.principal.is_admin or job.project_id == ctx.principal.project_id):
            raise not_found("Job", ctx.path["id"])
        return job.id


def list_history(ctx: Ctx) -> Reply:
    """What a job left behind: its Spark event logs and its Dask performance report, by name."""
    ctx.check_params(set())
    return Reply(200, {"history": history.listing(ctx.store, _own_job(ctx))})


def get_history_file(ctx: Ctx) -> Response:
    """One of a job's history files, as a download."""
    ctx.check_params(set())
    job_id, name = _own_job(ctx), ctx.path["name"]
    try:
        data = history.read(ctx.store, job_id, name)
    except history.HistoryError as e:
        raise bad("INVALID_DATA", str(e)) from None
    except ObjectNotFound:
        raise ApiError(404, "NOT_FOUND", f"Job with id '{job_id}' left no history file '{name}'") from None
    headers = {**_DOWNLOAD_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(data, media_type=_MEDIA[history.kind_of(name) or ""], headers=headers)


def register(routes: Routes) -> None:
    routes.add("GET", "/jobs/{id}/history", list_history, "job:get-history", returns="history[]")
    # no `.json` variant: a name is taken as it is (the names a job leaves never end in .json)
    routes.add("GET", "/jobs/{id}/history/{name}", get_history_file, "job:get-history",
               media="application/octet-stream", json_suffix=False)
