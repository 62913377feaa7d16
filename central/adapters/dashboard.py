"""The dashboard: a page at ``GET /`` (static files shipped in this package, no build
step, no CDN) and the routes only it needs: live job updates as server-sent events
(``/api/v1/live/...``, from ``central.adapters.live``), the event log and deployments
with their serving windows. The page itself is open; everything it reads is under
``/api/v1`` and so behind the API key, which the page sends as a header (its live
streams are read with ``fetch``, so the key is never in a URL)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath
from litestar.response import File, Stream
from litestar.static_files import create_static_files_router

from central.adapters.api_routes import IntQuery, TextQuery, errors, int_param, named_query
from central.adapters.rest_context import context_of, json_response, run_read
from central.lifecycle.errors import Refused
from central.readmodel import views

__all__ = ["STATIC", "dashboard_handlers", "static_handlers"]

TypeQuery = named_query("type")
STATIC = Path(__file__).parent / "static"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventList(msgspec.Struct, kw_only=True):
    events: list[views.EventRow]
    types: list[str] = []


class DeploymentList(msgspec.Struct, kw_only=True):
    deployments: list[views.DeploymentRow]


class DeploymentMetrics(msgspec.Struct, kw_only=True):
    deployment_id: str
    metrics: list[views.DeploymentMetricRow]


def _live(request: Request):
    live = context_of(request).live
    if live is None:
        raise Refused(503, "this central has no live feed (it is not running its event subscription)")
    return live


@get("/live/jobs", summary="live: jobs that changed (server-sent events)", responses=errors(503),
     media_type="text/event-stream", sync_to_thread=False)
def live_jobs(request: Request) -> Stream:
    """``event: jobs`` with the jobs that changed, at most every 0.25 s."""
    return Stream(_live(request).list_frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


@get("/live/jobs/{job_id:str}", summary="live: one job's epochs and state (server-sent events)",
     responses=errors(503), media_type="text/event-stream", sync_to_thread=False)
def live_job(request: Request, job_id: FromPath[str]) -> Stream:
    """``event: epoch`` for every EpochCompleted of the job, ``event: job`` for its state."""
    return Stream(_live(request).job_frames(job_id), media_type="text/event-stream", headers=_SSE_HEADERS)


@get("/events", summary="the event log, newest first", responses=errors(400))
async def event_log(request: Request, type_: TypeQuery = None,
                    aggregate: TextQuery = None, before: IntQuery = None, limit: IntQuery = None) -> Response[EventList]:
    """Filter by event ``type`` and/or ``aggregate`` (a job, node or deployment id); page
    with ``before`` (the smallest ``seq`` of the page before)."""
    context = context_of(request)
    size = int_param("limit", limit, default=100, low=1, high=1000)
    older = int_param("before", before, default=0, low=0, high=2**62)
    rows = await run_read(context, lambda: views.events(context.projection, type_=type_ or None,
                                                        aggregate=aggregate or None, before=older or None, limit=size))
    types = await run_read(context, views.event_types, context.projection)
    return json_response(EventList(events=rows, types=types))


@get("/deployments", summary="deployments as the read model holds them", responses=errors())
async def deployment_list(request: Request) -> Response[DeploymentList]:
    context = context_of(request)
    return json_response(DeploymentList(deployments=await run_read(context, views.deployments, context.projection)))


@get("/deployments/{deployment_id:str}/metrics", summary="a deployment's serving windows (5 s each)",
     responses=errors(400))
async def deployment_metrics(request: Request, deployment_id: FromPath[str], limit: IntQuery = None) -> Response[DeploymentMetrics]:
    context = context_of(request)
    size = int_param("limit", limit, default=360, low=1, high=10_000)
    rows = await run_read(context, views.deployment_metrics, context.projection, deployment_id, size)
    return json_response(DeploymentMetrics(deployment_id=deployment_id, metrics=rows))


def dashboard_handlers() -> list:
    """The dashboard's routes under ``/api/v1`` (behind the API key guard)."""
    return [live_jobs, live_job, event_log, deployment_list, deployment_metrics]


@get("/", summary="the dashboard", include_in_schema=False, sync_to_thread=False)
def index() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline", media_type="text/html",
                headers={"Cache-Control": "no-cache"})


def static_handlers() -> list:
    """The page and its files (open: they hold no data)."""
    return [index, create_static_files_router("/ui", directories=[STATIC], include_in_schema=False,
                                              cache_control=None, send_as_attachment=False)]
