"""A lean path for the busiest reads: ``GET /orders/{id}`` and ``GET /inventory/stock``.

FastAPI's routing, dependency solving and parameter validation cost more CPU than the
single query behind these reads. ``ErpApp`` serves the plain, valid forms of these two
requests itself: it parses their few parameters strictly, runs the route's own
``RoleGuard`` (same authentication, same 401/403) and calls the route's own endpoint with
the same arguments FastAPI would pass. Errors go through the app's exception handlers, so
they are the same problem documents. Anything outside that narrow form (another method,
an unknown or repeated query parameter, a value that does not parse) is left to FastAPI,
which answers it exactly as before, 422s included. The routes stay FastAPI routes, so the
OpenAPI document is unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from erp_api.deps import RoleGuard, route_guard
from erp_api.pagination import MAX_LIMIT

__all__ = ["ErpApp", "HotRoute"]

MAX_ID: Final = 2**63
STOCK_SORTS: Final = frozenset({"id", "-id", "sku", "-sku"})
MAX_CURSOR: Final = 512

Args = dict[str, Any]


def _id(text: str) -> int | None:
    """A positive BIGINT written as plain digits, else None (FastAPI then decides)."""
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value < MAX_ID else None


def _stock_query(query: bytes) -> Args | None:
    args: Args = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in args:
            return None
        if name in ("product_id", "warehouse_id"):
            args[name] = _id(value)
        elif name == "limit":
            limit = _id(value)
            args[name] = limit if limit is not None and limit <= MAX_LIMIT else None
        elif name == "sort":
            args[name] = value if value in STOCK_SORTS else None
        elif name == "cursor":
            args[name] = value if len(value) <= MAX_CURSOR else None
        else:
            return None
        if args[name] is None:
            return None
    return args


@dataclass(frozen=True, slots=True)
class HotRoute:
    """One route served on the lean path: its guard and endpoint, and how to read its arguments."""

    guard: RoleGuard
    endpoint: Callable[..., Awaitable[Response]]
    args: Callable[[str, bytes], Args | None]  # (path tail, query string) -> arguments or None


class ErpApp(FastAPI):
    """FastAPI, with ``hot`` routes (exact path or path prefix) served on the lean path."""

    hot: dict[str, HotRoute]
    hot_prefixes: tuple[tuple[str, HotRoute], ...]
    handled: tuple[type[Exception], ...]

    def install_hot_paths(self, routes: list[tuple[str, APIRoute]]) -> None:
        """Call after the routers and exception handlers are installed."""
        by_path = {(path, method): route for path, route in routes for method in route.methods or ()}
        order = by_path[("/api/v1/orders/{order_id}", "GET")]
        stock = by_path[("/api/v1/inventory/stock", "GET")]

        def order_args(tail: str, _query: bytes) -> Args | None:
            order_id = _id(tail)
            return None if order_id is None else {"order_id": order_id}

        self.hot = {"/api/v1/inventory/stock": _hot(stock, lambda _tail, query: _stock_query(query))}
        self.hot_prefixes = (("/api/v1/orders/", _hot(order, order_args)),)
        self.handled = tuple(k for k in self.exception_handlers if isinstance(k, type) and issubclass(k, Exception))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and await self._serve_hot(scope, receive, send):
            return
        await super().__call__(scope, receive, send)

    async def _serve_hot(self, scope: Scope, receive: Receive, send: Send) -> bool:
        path: str = scope["path"]
        tail = ""
        hot = self.hot.get(path)
        if hot is None:
            for prefix, candidate in self.hot_prefixes:
                if path.startswith(prefix):
                    hot, tail = candidate, path[len(prefix) :]
                    break
            else:
                return False
        args = hot.args(tail, scope["query_string"])
        if args is None:
            return False
        scope["app"] = self  # as Starlette sets it: Request.app, and so the pool, come from here
        request = Request(scope, receive)
        try:
            async with hot.guard.context(request) as ctx:
                response = await hot.endpoint(ctx=ctx, **args)
        except self.handled as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)
        return True

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The app's own exception handler for ``exc`` (most specific class first)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                return await response if inspect.isawaitable(response) else response
        raise exc


def _hot(route: APIRoute, args: Callable[[str, bytes], Args | None]) -> HotRoute:
    guard = route_guard(route)
    if guard is None:
        raise RuntimeError(f"{route.path} has no role guard; it cannot be served on the lean path")
    return HotRoute(guard=guard, endpoint=route.endpoint, args=args)
