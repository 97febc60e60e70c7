"""The FastAPI application: routers under /api/v1, problem documents, pool and outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, SecretStr
from starlette.exceptions import HTTPException

from erp_api.backorders import fill_forever
from erp_api.config import DEFAULT_LOGIN, MAX_CONTENT, OUTBOX_DAYS, ErpConfig, LoginPolicy, resolve_jwt_secret
from erp_api.errors import ErpError, FieldProblem, Problem
from erp_api.hotpath import ErpApp
from erp_api.openapi import install_openapi
from erp_api.outbox import OutboxRelay
from erp_api.retention import purge_forever
from erp_api.routes import (
    audit,
    auth,
    customers,
    inventory,
    invoices,
    ledger,
    orders,
    problem_response,
    products,
    purchase_orders,
    reorder,
    setpoints,
    supplier_invoices,
    suppliers,
    warehouses,
    work_orders,
)
from erp_api.security import SignInGate, TokenService
from erp_api.setpoints import DEFAULT_TIMEOUT_S, SetpointSender
from erp_api.users import Revocations
from factory import __version__
from factory.events import OutboxLag, lag_metrics, outbox_lag
from factory.metrics import CONTENT_TYPE, Labels, Metric, render

__all__ = ["API_PREFIX", "ROUTERS", "Health", "api_routes", "create_app", "metrics"]

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
# Busiest first: FastAPI tries routes in order, and matching is a real part of a request's cost.
ROUTERS: tuple[APIRouter, ...] = (
    orders.router,
    invoices.router,
    inventory.router,
    work_orders.router,
    products.router,
    customers.router,
    warehouses.router,
    purchase_orders.router,
    supplier_invoices.router,
    suppliers.router,
    suppliers.items_router,
    reorder.router,
    ledger.router,
    setpoints.router,
    audit.router,
    auth.router,
)
OPENAPI_TAGS = [
    {"name": name, "description": text}
    for name, text in (
        ("auth", "Tokens for users (OAuth2 password flow), API keys for services."),
        ("products", "The catalog, with optional bills of materials."),
        ("customers", "Who buys, and their payment terms."),
        ("warehouses", "Where stock is kept."),
        ("inventory", "Stock per product and warehouse, the movement ledger, receipts, adjustments, transfers."),
        ("orders", "Sales orders: draft, confirmed (stock reserved), shipped, invoiced, cancelled."),
        ("invoices", "Invoices with gapless numbers, payments, credit notes."),
        ("ledger", "The double-entry journal, trial balance and receivables aging."),
        ("work orders", "Production (BOM consumption) and maintenance (spare parts reserved)."),
        ("setpoints", "Write a value to a machine through its edge agent, and wait for the device's answer."),
        ("suppliers", "Who we buy from, and what each sells: price, lead time, minimum order, preference."),
        (
            "purchasing",
            "Purchase orders, receipts, supplier invoices (three-way match), payments, reorder suggestions.",
        ),
        ("audit", "Who changed what, when and in which request: every change, append-only."),
        ("operations", "Health and Prometheus metrics."),
    )
]


def api_routes() -> list[tuple[str, APIRoute]]:
    """Every route under /api/v1 with its full path."""
    return [(API_PREFIX + r.path_format, r) for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    version: str


def create_app(
    database_url: str,
    *,
    jwt_secret: str | None = None,
    dev: bool = False,
    mqtt_url: str | None = None,
    events_url: str | None = None,
    pool_max_size: int = 10,
    max_content: int = MAX_CONTENT,
    login: LoginPolicy = DEFAULT_LOGIN,
    outbox_days: int = OUTBOX_DAYS,
    relay: bool = True,
    setpoint_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> FastAPI:
    """The ERP app. ``jwt_secret`` is required unless ``dev`` (then the dev secret signs);
    with ``mqtt_url`` the app sends setpoints to devices (waiting ``setpoint_timeout_s`` for
    each reply) and, unless not ``relay``, runs the outbox relay while it serves, publishing
    to ``events_url`` (an MQTT broker or a NATS cluster; default ``mqtt_url``). No request
    body may be larger than ``max_content`` bytes."""
    config = ErpConfig(
        database_url=SecretStr(database_url),
        jwt_secret=SecretStr(resolve_jwt_secret(jwt_secret, dev=dev)),
        mqtt_url=SecretStr(mqtt_url) if mqtt_url else None,
        events_url=SecretStr(events_url) if events_url else None,
        pool_max_size=pool_max_size,
        max_content=max_content,
        login=login,
        outbox_days=outbox_days,
        relay=relay,
        setpoint_timeout_s=setpoint_timeout_s,
    )
    return build_app(config)


def build_app(config: ErpConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            config.database_url.get_secret_value(),
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            open=False,
            timeout=5,
            kwargs={"autocommit": True},
        )
        await pool.open(wait=False)
        app.state.pool = pool
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(pool.close)
            purge = asyncio.create_task(purge_forever(pool, outbox_days=config.outbox_days), name="erp-purge")
            stack.push_async_callback(_stop, purge)
            revoked = asyncio.create_task(app.state.revocations.follow(pool), name="erp-token-revocations")
            stack.push_async_callback(_stop, revoked)
            filler = asyncio.create_task(fill_forever(pool), name="erp-backorders")
            stack.push_async_callback(_stop, filler)
            events_url = config.events_url or config.mqtt_url
            if events_url is not None and config.relay:
                relay = OutboxRelay(config.database_url.get_secret_value(), events_url.get_secret_value())
                task = asyncio.create_task(relay.run(), name="erp-outbox-relay")
                stack.push_async_callback(_stop, task)
                app.state.relay = relay
            yield

    app = ErpApp(
        title="Factory ERP API",
        version=__version__,
        summary="Orders, inventory, billing and work orders for the plant.",
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
    )
    app.max_content = config.max_content
    if config.mqtt_url is not None:
        app.state.setpoints = SetpointSender(config.mqtt_url.get_secret_value(), timeout_s=config.setpoint_timeout_s)
    app.state.passwords = SignInGate(config.password_checks, config.password_waiting)
    app.state.login_policy = config.login
    app.state.revocations = Revocations(keep_s=config.access_token_ttl_s + 60)
    app.state.tokens = TokenService(
        config.jwt_secret.get_secret_value(),
        access_ttl_s=config.access_token_ttl_s,
        refresh_ttl_s=config.refresh_token_ttl_s,
    )
    _install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    _operations(app)
    routes = api_routes()
    install_openapi(app, routes)
    app.install_lean_path(routes)
    return app


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# psycopg_pool's figures (``get_stats``) that /metrics shows: name -> (stat, kind, help)
_POOL_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("factory_erp_db_pool_connections", "pool_size", "gauge", "Connections the pool holds."),
    ("factory_erp_db_pool_idle", "pool_available", "gauge", "Connections idle in the pool."),
    ("factory_erp_db_pool_waiting", "requests_waiting", "gauge", "Requests waiting for a connection now."),
    ("factory_erp_db_pool_requests_total", "requests_num", "counter", "Connections asked of the pool."),
    ("factory_erp_db_pool_queued_total", "requests_queued", "counter", "Requests that had to wait for one."),
    ("factory_erp_db_pool_timeouts_total", "requests_errors", "counter", "Requests that gave up waiting."),
    ("factory_erp_db_pool_lost_total", "connections_lost", "counter", "Connections found broken."),
)


def metrics(app: ErpApp) -> list[Metric]:
    """What /metrics shows: requests by route, the database pool and the outbox relay, read when scraped."""

    def pool_stat(stat: str) -> Callable[[], list[tuple[Labels, float]]]:
        return lambda: [((), float(app.state.pool.get_stats().get(stat, 0)))]

    def relay(read: Callable[[OutboxRelay], float]) -> Callable[[], list[tuple[Labels, float]]]:
        return lambda: [((), read(app.state.relay))] if getattr(app.state, "relay", None) else []

    return [
        Metric("factory_erp_info", "This ERP process.", "gauge", lambda: [((("version", __version__),), 1.0)]),
        *(Metric(name, text, kind, pool_stat(stat)) for name, stat, kind, text in _POOL_METRICS),
        Metric("factory_erp_outbox_published_total", "Events the outbox relay published.", "counter",
               relay(lambda r: float(r.published))),
        Metric("factory_erp_outbox_leading", "1 while this process's relay is the one publishing.", "gauge",
               relay(lambda r: float(r.leading.is_set()))),
        *lag_metrics("factory_erp", lambda: getattr(app.state, "outbox_lag", None)),
        app.requests.metric(),
    ]  # fmt: skip


def _operations(app: ErpApp) -> None:
    shown = metrics(app)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        """Prometheus text format: requests, the database pool, the outbox relay and its lag."""
        request.app.state.outbox_lag = await _outbox_lag(request.app.state.pool)
        return PlainTextResponse(render(shown), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"], responses={503: {"model": Health}})
    async def healthz(request: Request, response: Response) -> Health:
        """Liveness and database reachability, for load balancers and `factory demo`."""
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        try:
            async with pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("healthz: database unreachable: %s", exc)
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            return Health(status="degraded", database="unreachable", version=__version__)
        return Health(status="ok", database="ok", version=__version__)


async def _outbox_lag(pool: AsyncConnectionPool[Any]) -> OutboxLag | None:
    """Read at every scrape, so it is right whichever process's relay publishes (or none
    does); None (NaN on /metrics) while the database does not answer."""
    try:
        async with pool.connection(timeout=2) as conn:
            return await outbox_lag(conn, "erp")
    except (psycopg.Error, TimeoutError) as exc:
        log.warning("metrics: outbox lag unknown: %s", exc)
        return None


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _install_problem_handlers(app: FastAPI) -> None:
    async def erp_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ErpError)
        return problem_response(exc.problem(request.url.path), exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [FieldProblem(field=_field(tuple(e["loc"])), reason=e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5])
        return problem_response(
            Problem(
                type="urn:factory:erp:problem:validation",
                title="The request is not valid",
                status=422,
                detail=detail,
                instance=request.url.path,
                errors=errors,
            )
        )

    allowed = _allowed_methods()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        problem = Problem(
            title=_title(exc.status_code), status=exc.status_code, detail=str(exc.detail), instance=request.url.path
        )
        headers = dict(exc.headers or {})
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            # Starlette names only the first route's methods when several share a path.
            methods = {m for pattern, ms in allowed if pattern.fullmatch(request.url.path) for m in ms}
            headers["Allow"] = ", ".join(sorted(methods))
        return problem_response(problem, headers)

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable for %s: %s", request.url.path, exc)
        problem = Problem(
            type="urn:factory:erp:problem:unavailable",
            title="Database unavailable",
            status=503,
            detail="the database did not answer in time; retry later",
            instance=request.url.path,
        )
        return problem_response(problem, {"Retry-After": "1"})

    app.add_exception_handler(ErpError, erp_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)

    async def unstorable(request: Request, exc: Exception) -> Response:
        log.info("refused a value the database cannot take on %s: %s", request.url.path, exc)
        problem = Problem(
            type="urn:factory:erp:problem:validation",
            title="The request is not valid",
            status=422,
            detail="a value cannot be stored or compared (out of range, malformed, or containing NUL characters)",
            instance=request.url.path,
        )
        return problem_response(problem)

    app.add_exception_handler(psycopg.DataError, unstorable)
    app.add_exception_handler(PoolTimeout, unavailable)
    app.add_exception_handler(psycopg.OperationalError, unavailable)


def _allowed_methods() -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) for every API route, for correct Allow headers on 405."""
    table: dict[str, set[str]] = {}
    for path, route in api_routes():
        table.setdefault(path, set()).update(route.methods or ())
    return [(re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", path)), methods) for path, methods in table.items()]


def _title(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"
