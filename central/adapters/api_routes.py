"""The ``/api/v1`` routes over the read model and the scheduler: jobs (paged, filtered),
one job with its epochs, nodes and their metrics, the scheduler's queue and status, and
users' read-only SQL. Mounted by ``central.adapters.rest.make_app`` under the API key
guard."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from central.adapters.rest_context import ErrorBody, context_of, json_response, run_read
from central.lifecycle.errors import Refused
from central.readmodel.projection import JobDetail, JobRow, NodeMetricRow, NodeRow
from central.readmodel.sql import MAX_ROWS, QueryResult

__all__ = ["JobList", "NodeList", "NodeMetrics", "SqlRequest", "api_handlers", "errors", "int_param", "IntQuery",
           "TextQuery", "named_query"]

MAX_LIMIT = 10_000


class JobList(msgspec.Struct, kw_only=True):
    jobs: list[JobRow]
    total: int | None = None  # jobs matching the filters (all pages)
    counts: dict[str, int] = {}  # jobs matching the search, by state


class NodeList(msgspec.Struct, kw_only=True):
    nodes: list[NodeRow]


class NodeMetrics(msgspec.Struct, kw_only=True):
    node_id: str
    metrics: list[NodeMetricRow]


class SqlRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sql: str
    max_rows: int = MAX_ROWS


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI answers of a route's errors (401 on every guarded route)."""
    return {code: ResponseSpec(ErrorBody, description="error", generate_examples=False) for code in (400, *codes, 401)}


# Query parameters are read as text and checked here, so a bad one gets our message
# (the schema still says integer).
IntQuery = Annotated[str | None, QueryParameter(schema_extra={"type": "integer", "one_of": None})]
TextQuery = Annotated[str | None, QueryParameter(schema_extra={"type": "string", "one_of": None})]


def named_query(name: str) -> Any:
    """A text query parameter whose name is a word Litestar keeps for itself (``state``)."""
    return Annotated[str | None, QueryParameter(name=name, schema_extra={"type": "string", "one_of": None})]


StateQuery = named_query("state")


def int_param(name: str, raw: str | None, *, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refused(400, f"{name} must be an integer (got {raw!r})") from None
    if not low <= value <= high:
        raise Refused(400, f"{name} must be between {low} and {high} (got {value})")
    return value


@get("/jobs", summary="jobs, newest first", responses=errors(400))
async def jobs(request: Request, state_: StateQuery = None,
               limit: IntQuery = None, offset: IntQuery = None, q: TextQuery = None) -> Response[JobList]:
    """Paged: ``limit`` (1..10000, 100) from ``offset``; ``state`` filters by state,
    ``q`` by a part of the job id or name. ``total`` counts every page."""
    context = context_of(request)
    size = int_param("limit", limit, default=100, low=1, high=MAX_LIMIT)
    skip = int_param("offset", offset, default=0, low=0, high=10**9)
    search = (q or "").strip()[:200] or None
    projection = context.projection
    rows = await run_read(context, projection.jobs, state_ or None, size, skip, search)
    counts = await run_read(context, projection.job_counts, search)
    total = counts.get(state_, 0) if state_ else sum(counts.values())
    return json_response(JobList(jobs=rows, total=total, counts=counts))


@get("/jobs/{job_id:str}", summary="one job with its epochs", responses=errors(404))
async def job(request: Request, job_id: FromPath[str]) -> Response[JobDetail]:
    context = context_of(request)
    detail = await run_read(context, context.projection.job, job_id)
    if detail is None:
        raise Refused(404, f"no job {job_id!r}")
    return json_response(detail)


@get("/nodes", summary="nodes", responses=errors())
async def nodes(request: Request) -> Response[NodeList]:
    context = context_of(request)
    return json_response(NodeList(nodes=await run_read(context, context.projection.nodes)))


@get("/nodes/{node_id:str}/metrics", summary="a node's recent heartbeats", responses=errors(400, 404))
async def node_metrics(request: Request, node_id: FromPath[str], limit: IntQuery = None) -> Response[NodeMetrics]:
    context = context_of(request)
    size = int_param("limit", limit, default=100, low=1, high=MAX_LIMIT)
    if not await run_read(context, context.projection.node_exists, node_id):
        raise Refused(404, f"no node {node_id!r}")
    rows = await run_read(context, context.projection.node_metrics, node_id, size)
    return json_response(NodeMetrics(node_id=node_id, metrics=rows))


@get("/scheduler/queue", summary="queued jobs in scheduling order", responses=errors(), sync_to_thread=False)
def queue(request: Request) -> Response[dict[str, list[dict[str, Any]]]]:
    return json_response({"queue": context_of(request).scheduler_queue()})


@get("/scheduler/status", summary="scheduler state", responses=errors(), sync_to_thread=False)
def status(request: Request) -> Response[dict[str, Any]]:
    return json_response(context_of(request).scheduler_status())


@post("/sql", summary="read-only SQL over the projection", status_code=200, responses=errors(400, 413, 429),
      opt={"body_hint": 'the body must be JSON like {"sql": "SELECT ..."}'})
async def sql(request: Request, data: JSONBody[SqlRequest]) -> Response[QueryResult]:
    """One read statement (or several); 429 with ``Retry-After`` while the pool is full."""
    if not 1 <= data.max_rows <= 100_000:
        raise Refused(400, f"max_rows must be between 1 and 100000 (got {data.max_rows})")
    pool = context_of(request).sql_pool
    if pool is None:
        raise Refused(503, "this central has no read model yet")
    return json_response(await pool.run(data.sql, max_rows=data.max_rows))


def api_handlers() -> list:
    return [jobs, job, nodes, node_metrics, queue, status, sql]
