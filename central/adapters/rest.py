"""Central's REST API (aiohttp): jobs, nodes, scheduler, read-only SQL, OpenAPI.

    app = make_app(projection, scheduler_status=sched.status, scheduler_queue=sched.queue,
                   api_key=os.environ.get("CYXWIZ_API_KEY"))
    runner, port = await serve_rest(app, "0.0.0.0", 8080)     # port 0: any free port
    ...
    await runner.cleanup()

Reads come from the DuckDB projection, each in a worker thread with its own cursor, so
the event loop never waits on DuckDB. Users' SQL runs in a pool of its own
(``QueryPool``: a few threads, a short waiting line, then 429 with ``Retry-After``)
within ``SqlLimits`` (time, bytes per value, bytes per answer: 400 for a timeout, 413
for size), so long queries never delay the API's own reads. Every error is JSON,
``{"error": {"code": 404, "message": "..."}}``; a user's mistake is a 4xx, never a 500.
With an API key configured every ``/api/v1`` path but the OpenAPI document needs
``Authorization: Bearer <key>``; ``/api/health`` stays open for probes.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import msgspec
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from central.readmodel.projection import JobDetail, JobRow, NodeMetricRow, NodeRow, Projection
from central.readmodel.query_pool import QueryPool, SqlBusy
from central.readmodel.sql import MAX_ROWS, QueryResult, SqlError, SqlLimits, SqlRefused, SqlTooLarge

log = logging.getLogger(__name__)

PROJECTION = web.AppKey("projection", Projection)
_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=str)  # str: any odd SQL value type
READ_THREADS = 4  # the API's own reads of the projection
SQL_WORKERS, SQL_WAITING = 4, 4  # users' SQL: running at once, and waiting for a thread


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: int
    message: str


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


class Health(msgspec.Struct, kw_only=True):
    status: str
    projection_seq: int


class JobList(msgspec.Struct, kw_only=True):
    jobs: list[JobRow]


class NodeList(msgspec.Struct, kw_only=True):
    nodes: list[NodeRow]


class NodeMetrics(msgspec.Struct, kw_only=True):
    node_id: str
    metrics: list[NodeMetricRow]


class SqlRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sql: str
    max_rows: int = MAX_ROWS


class ApiError(Exception):
    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")


def error_response(code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = json_response(ErrorBody(error=ErrorDetail(code=code, message=message)), status=code)
    response.headers.update(headers or {})
    return response


def make_app(
    projection: Projection,
    *,
    scheduler_status: Callable[[], dict],
    scheduler_queue: Callable[[], list[dict]],
    api_key: str | None = None,
    sql_limits: SqlLimits = SqlLimits(),
    sql_workers: int = SQL_WORKERS,
    sql_waiting: int = SQL_WAITING,
) -> web.Application:
    """The REST application over ``projection``; the two callables give the scheduler's
    live view (called on the event loop, so they must be quick and not block)."""
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware(api_key)])
    app[PROJECTION] = projection
    pool = QueryPool(functools.partial(projection.query, limits=sql_limits), workers=sql_workers, waiting=sql_waiting)
    routes = _Routes(projection, scheduler_status, scheduler_queue, pool)
    app.on_cleanup.append(routes.close)
    app.router.add_get("/api/health", routes.health)
    app.router.add_get("/api/v1/jobs", routes.jobs)
    app.router.add_get("/api/v1/jobs/{job_id}", routes.job)
    app.router.add_get("/api/v1/nodes", routes.nodes)
    app.router.add_get("/api/v1/nodes/{node_id}/metrics", routes.node_metrics)
    app.router.add_get("/api/v1/scheduler/queue", routes.queue)
    app.router.add_get("/api/v1/scheduler/status", routes.status)
    app.router.add_post("/api/v1/sql", routes.sql)
    app.router.add_get("/api/v1/openapi.json", routes.openapi)
    app.router.add_get("/metrics", make_aiohttp_handler())  # central's Prometheus metrics (central.metrics)
    return app


async def serve_rest(app: web.Application, host: str = "0.0.0.0", port: int = 8080) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner (``await runner.cleanup()`` stops it)
    and the port actually bound (useful with ``port=0``)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server else []  # aiohttp exposes no public accessor
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


class _Routes:
    def __init__(self, projection: Projection, status: Callable[[], dict], queue: Callable[[], list[dict]],
                 pool: QueryPool) -> None:
        self.projection = projection
        self.scheduler_status = status
        self.scheduler_queue = queue
        self.sql_pool = pool
        self._reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="cyxwiz-rest")

    async def close(self, app: web.Application) -> None:
        self.sql_pool.close()
        self._reads.shutdown(wait=False, cancel_futures=True)

    async def _read(self, read: Callable, *args: Any) -> Any:
        """``read(*args)`` on the API's own read threads (never behind users' SQL)."""
        return await asyncio.get_running_loop().run_in_executor(self._reads, functools.partial(read, *args))

    async def health(self, request: web.Request) -> web.Response:
        return json_response(Health(status="ok", projection_seq=self.projection.checkpoint()))

    async def jobs(self, request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        limit = _int_param(request, "limit", default=100, low=1, high=10_000)
        rows = await self._read(self.projection.jobs, state, limit)
        return json_response(JobList(jobs=rows))

    async def job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        detail = await self._read(self.projection.job, job_id)
        if detail is None:
            raise ApiError(404, f"no job {job_id!r}")
        return json_response(detail)

    async def nodes(self, request: web.Request) -> web.Response:
        return json_response(NodeList(nodes=await self._read(self.projection.nodes)))

    async def node_metrics(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        limit = _int_param(request, "limit", default=100, low=1, high=10_000)
        if not await self._read(self.projection.node_exists, node_id):
            raise ApiError(404, f"no node {node_id!r}")
        rows = await self._read(self.projection.node_metrics, node_id, limit)
        return json_response(NodeMetrics(node_id=node_id, metrics=rows))

    async def queue(self, request: web.Request) -> web.Response:
        return json_response({"queue": self.scheduler_queue()})

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self.scheduler_status())

    async def sql(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            query = msgspec.json.decode(body, type=SqlRequest)
        except msgspec.ValidationError as exc:
            raise ApiError(400, f"bad request body: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ApiError(400, 'the body must be JSON like {"sql": "SELECT ..."}') from exc
        if not 1 <= query.max_rows <= 100_000:
            raise ApiError(400, f"max_rows must be between 1 and 100000 (got {query.max_rows})")
        try:
            result = await self.sql_pool.run(query.sql, max_rows=query.max_rows)
        except SqlTooLarge as exc:
            raise ApiError(413, str(exc)) from exc
        except (SqlRefused, SqlError) as exc:
            raise ApiError(400, str(exc)) from exc
        except SqlBusy as exc:
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after_s)}) from exc
        return json_response(result)

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document())


def _int_param(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer (got {raw!r})") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high} (got {value})")
    return value


@web.middleware
async def _errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every failure as a JSON error body; a bug is logged and answered 500, never leaked."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason or "error")
    except Exception:
        log.exception("REST %s %s failed", request.method, request.path)
        return error_response(500, "internal error; see the central log")


def _auth_middleware(api_key: str | None):
    @web.middleware
    async def auth(request: web.Request, handler) -> web.StreamResponse:
        if api_key and request.path.startswith("/api/v1/") and request.path != "/api/v1/openapi.json":
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
        return await handler(request)

    return auth


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for this API; the schemas come from the msgspec types it returns."""
    (health, jobs, job, nodes, metrics, sql_req, sql_res, err), components = msgspec.json.schema_components(
        [Health, JobList, JobDetail, NodeList, NodeMetrics, SqlRequest, QueryResult, ErrorBody],
        ref_template="#/components/schemas/{name}",
    )
    any_object = {"type": "object", "additionalProperties": True}

    def answer(schema: dict, *errors: int) -> dict:
        responses = {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}
        for code in (*errors, 401):
            responses[str(code)] = {"description": "error", "content": {"application/json": {"schema": err}}}
        return responses

    def param(name: str, where: str, kind: str, required: bool = False) -> dict:
        return {"name": name, "in": where, "required": required, "schema": {"type": kind}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "CyxWiz central", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/api/health": {"get": {"summary": "liveness", "security": [], "responses": answer(health)}},
            "/api/v1/jobs": {"get": {
                "summary": "jobs, newest first",
                "parameters": [param("state", "query", "string"), param("limit", "query", "integer")],
                "responses": answer(jobs, 400)}},
            "/api/v1/jobs/{job_id}": {"get": {
                "summary": "one job with its epochs", "parameters": [param("job_id", "path", "string", True)],
                "responses": answer(job, 404)}},
            "/api/v1/nodes": {"get": {"summary": "nodes", "responses": answer(nodes)}},
            "/api/v1/nodes/{node_id}/metrics": {"get": {
                "summary": "a node's recent heartbeats",
                "parameters": [param("node_id", "path", "string", True), param("limit", "query", "integer")],
                "responses": answer(metrics, 400, 404)}},
            "/api/v1/scheduler/queue": {"get": {"summary": "queued jobs in scheduling order", "responses": answer(
                {"type": "object", "properties": {"queue": {"type": "array", "items": any_object}}})}},
            "/api/v1/scheduler/status": {"get": {"summary": "scheduler state", "responses": answer(any_object)}},
            "/api/v1/sql": {"post": {
                "summary": "read-only SQL over the projection",
                "requestBody": {"required": True, "content": {"application/json": {"schema": sql_req}}},
                "responses": answer(sql_res, 400, 413, 429)}},
            "/api/v1/openapi.json": {"get": {"summary": "this document", "security": [], "responses": answer(any_object)}},
        },
    }
