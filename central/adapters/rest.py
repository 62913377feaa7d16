"""Central's REST API on Litestar: jobs, nodes, scheduler, read-only SQL, the serving
gateway, Prometheus ``/metrics``, the dashboard, and OpenAPI generated from the routes.

    app = make_app(projection, scheduler_status=sched.status, scheduler_queue=sched.queue,
                   api_key=os.environ.get("CYXWIZ_API_KEY"), gateway=gateway, live=live)
    runner, port = await serve_rest(app, "0.0.0.0", 8080)     # port 0: any free port
    ...
    await runner.cleanup()

Reads come from the DuckDB projection, each in a worker thread with its own cursor, so
the event loop never waits on DuckDB. Users' SQL runs in a pool of its own
(``QueryPool``: a few threads, a short waiting line, then 429 with ``Retry-After``)
within ``SqlLimits`` (time, bytes per value, bytes per answer: 400 for a timeout, 413
for size), so long queries never delay the API's own reads. Every error is JSON,
``{"error": {"code": 404, "message": "..."}}`` (the serving gateway keeps the shapes of
the protocols it speaks); a user's mistake is a 4xx, never a 500. With an API key
configured every ``/api/v1`` route but the OpenAPI document needs
``Authorization: Bearer <key>``; ``/api/health``, ``/metrics``, ``/docs`` and the
dashboard's static page stay open (the page asks for the key and sends it as a header).
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from central.adapters.api_routes import api_handlers
from central.adapters.dashboard import dashboard_handlers, static_handlers
from central.adapters.gateway import gateway_handlers
from central.adapters.rest_context import (API_KEY_MESSAGE, ApiContext, bearer_ok, error_response, json_response,
                                          require_key)
from central.adapters.rest_server import RestRunner, serve_rest
from central.readmodel.projection import Projection
from central.readmodel.query_pool import QueryPool, SqlBusy
from central.readmodel.sql import SqlLimits
from events import CyxwizError

__all__ = ["RestRunner", "SQL_WAITING", "SQL_WORKERS", "make_app", "openapi_document", "serve_rest"]

log = logging.getLogger(__name__)

READ_THREADS = 4  # the API's own reads of the projection
SQL_WORKERS, SQL_WAITING = 4, 4  # users' SQL: running at once, and waiting for a thread
TITLE, VERSION = "CyxWiz central", "1"
VENDOR = "/ui/vendor/swagger-ui"
_METRICS_TYPE = "; ".join(p for p in CONTENT_TYPE_LATEST.split("; ") if not p.startswith("charset="))


def make_app(
    projection: Projection | None,
    *,
    scheduler_status: Callable[[], dict],
    scheduler_queue: Callable[[], list[dict]],
    api_key: str | None = None,
    sql_limits: SqlLimits = SqlLimits(),
    sql_workers: int = SQL_WORKERS,
    sql_waiting: int = SQL_WAITING,
    gateway=None,
    live=None,
) -> Litestar:
    """The REST application over ``projection``; the two callables give the scheduler's
    live view (called on the event loop, so they must be quick and not block).
    ``gateway`` (``central.adapters.gateway.Gateway``) adds the serving routes, ``live``
    (``central.adapters.live.LiveFeed``) the dashboard's pushed updates."""
    pool = None
    reads = None
    if projection is not None:
        pool = QueryPool(functools.partial(projection.query, limits=sql_limits), workers=sql_workers,
                         waiting=sql_waiting)
        reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="cyxwiz-rest")
    context = ApiContext(projection=projection, scheduler_status=scheduler_status, scheduler_queue=scheduler_queue,
                         sql_pool=pool, reads=reads, api_key=api_key or None, live=live, gateway=gateway)

    async def close() -> None:
        if pool is not None:
            pool.close()
        if reads is not None:
            reads.shutdown(wait=False, cancel_futures=True)
        if gateway is not None:
            await gateway.close()

    guarded = Router("/api/v1", route_handlers=[*api_handlers(), *dashboard_handlers()], guards=[require_key])
    handlers = [health, metrics, openapi_json, *static_handlers(), guarded]
    if gateway is not None:
        handlers += gateway_handlers()
    return Litestar(
        route_handlers=handlers,
        openapi_config=_openapi_config(),
        exception_handlers={CyxwizError: _cyxwiz_error, HTTPException: _http_error, Exception: _bug},
        on_shutdown=[close],
        state=State({"api": context}),
        logging_config=None,
    )


def openapi_document(app: Litestar | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document generated from ``app``'s routes (by default, an app
    without the serving gateway, as ``make_app`` builds for a bare projection)."""
    if app is None:
        app = make_app(None, scheduler_status=dict, scheduler_queue=list)
    return app.openapi_schema.to_schema()


# --- routes outside /api/v1 --------------------------------------------------------------


class Health(msgspec.Struct, kw_only=True):
    status: str
    projection_seq: int


@get("/api/health", summary="liveness", security=[{}], sync_to_thread=False)
def health(request: Request) -> Response[Health]:
    context: ApiContext = request.app.state.api
    seq = context.projection.checkpoint() if context.projection is not None else 0
    return json_response(Health(status="ok", projection_seq=seq))


@get("/metrics", summary="Prometheus metrics of this process", security=[{}], media_type=_METRICS_TYPE,
     sync_to_thread=False)
def metrics() -> Response[str]:
    return Response(content=generate_latest(), media_type=_METRICS_TYPE)  # Litestar adds the charset back


@get("/api/v1/openapi.json", summary="this document", security=[{}], sync_to_thread=False)
def openapi_json(request: Request) -> Response[dict[str, Any]]:
    return json_response(request.app.openapi_schema.to_schema())


def docs_render_plugin() -> SwaggerRenderPlugin:
    """Swagger UI at ``/docs``, from the copy shipped in this package (no CDN)."""
    return SwaggerRenderPlugin(path="/", js_url=f"{VENDOR}/swagger-ui-bundle.js", css_url=f"{VENDOR}/swagger-ui.css",
                               standalone_preset_js_url=f"{VENDOR}/swagger-ui-standalone-preset.js", favicon="")


def _openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title=TITLE, version=VERSION, path="/docs", render_plugins=[docs_render_plugin()],
        components=Components(security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"apiKey": []}], create_examples=False, use_handler_docstrings=True,
    )


# --- errors ------------------------------------------------------------------------------


def _cyxwiz_error(request: Request, exc: CyxwizError) -> Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, SqlBusy) else None
    code = exc.code if 400 <= exc.code <= 599 else 500
    return error_response(code, str(exc), headers)


def _http_error(request: Request, exc: HTTPException) -> Response:
    """Litestar's own refusals (no route, wrong method, a body that does not decode) in our shape."""
    if exc.status_code == 404 and request.url.path.startswith("/api/v1/") and not bearer_ok(
            request.headers.get("Authorization", ""), request.app.state.api.api_key):
        return error_response(401, API_KEY_MESSAGE)  # as the guarded routes: nothing is told without the key
    if exc.status_code != 400:
        return error_response(exc.status_code, exc.detail or "error", dict(exc.headers or {}) or None)
    hint = request.scope.get("route_handler").opt.get("body_hint") if request.scope.get("route_handler") else None
    if isinstance(exc, ValidationException) and exc.extra and not _missing_body(exc):
        problems = "; ".join(_problem(p) for p in exc.extra if isinstance(p, dict)) or exc.detail
        return error_response(400, f"bad request body: {problems}")
    return error_response(400, hint or exc.detail or "bad request")


def _missing_body(exc: ValidationException) -> bool:
    return any(isinstance(p, dict) and p.get("key") == "data" and p.get("message") == "'data'" for p in exc.extra)


def _problem(problem: dict) -> str:
    key = problem.get("key")
    where = f" - at `$.{key}`" if key and key != "data" else ""
    return f"{problem.get('message')}{where}"


def _bug(request: Request, exc: Exception) -> Response:
    log.error("REST %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error; see the central log")

