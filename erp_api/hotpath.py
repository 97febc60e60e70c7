"""A lean path for the busiest calls: the two hot reads and the four order-flow commands.

FastAPI's routing, dependency solving and parameter validation cost more CPU than the one
SQL statement behind each of these calls. ``ErpApp`` serves their plain, valid forms
itself: it reads their few parameters strictly (the id in the path, the stock page's
query, ``Idempotency-Key`` and ``If-Match``, the JSON body validated by the route's own
model as FastAPI validates it), runs the route's own ``RoleGuard`` (same authentication,
same 401/403) and calls the route's own endpoint with the arguments FastAPI would pass.
Errors go through the app's exception handlers, so they are the same problem documents.
Anything outside that narrow form (an unknown or repeated query parameter or header, a
value or body that does not validate, another content type) is handed to FastAPI, with
the body replayed, which answers it exactly as before, 422s included. The routes stay
FastAPI routes, so the OpenAPI document is unchanged.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, get_type_hints
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from erp_api.deps import RoleGuard, route_guard
from erp_api.pagination import MAX_LIMIT

__all__ = ["HOT_ROUTES", "ErpApp", "HotRoute"]

# (method, path): what is served on the lean path.
HOT_ROUTES: Final = (
    ("GET", "/api/v1/orders/{order_id}"),
    ("GET", "/api/v1/inventory/stock"),
    ("POST", "/api/v1/orders"),
    ("POST", "/api/v1/orders/{order_id}/confirm"),
    ("POST", "/api/v1/invoices"),
    ("POST", "/api/v1/invoices/{invoice_id}/payments"),
)
MAX_ID: Final = 2**63
MAX_BODY: Final = 64 * 1024  # larger bodies go to FastAPI (and its own limit)
STOCK_SORTS: Final = frozenset({"id", "-id", "sku", "-sku"})
MAX_CURSOR: Final = 512
HEADERS: Final = {"key": b"idempotency-key", "if_match": b"if-match"}  # endpoint parameter -> header
MAX_KEY: Final = 255

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


QUERIES: Final[dict[str, Callable[[bytes], Args | None]]] = {"/api/v1/inventory/stock": _stock_query}


@dataclass(frozen=True, slots=True)
class HotRoute:
    """One route on the lean path: how to read its arguments, its guard and its endpoint."""

    pattern: re.Pattern[str]
    id_name: str | None  # the path parameter, if any
    query: Callable[[bytes], Args | None] | None  # None: no query parameters (others are ignored, as FastAPI does)
    headers: dict[bytes, str]  # header name -> endpoint parameter
    body: type[BaseModel] | None
    wants_request: bool
    guard: RoleGuard
    endpoint: Callable[..., Awaitable[Response]]

    @classmethod
    def of(cls, path: str, route: APIRoute) -> HotRoute:
        guard = route_guard(route)
        if guard is None:
            raise RuntimeError(f"{path} has no role guard; it cannot be served on the lean path")
        ids = re.findall(r"\{([^}]+)\}", path)
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "([0-9]{1,19})", re.escape(path)) + "$")
        params = set(inspect.signature(route.endpoint).parameters) - {"ctx", *ids}
        query = QUERIES.get(path)
        body = get_type_hints(route.endpoint)["body"] if "body" in params else None
        unknown = set() if query else params - {"request", "body", *HEADERS}
        if len(ids) > 1 or unknown:
            raise RuntimeError(f"{path}: the lean path cannot read {sorted(unknown) or ids}")
        return cls(
            pattern=pattern,
            id_name=ids[0] if ids else None,
            query=query,
            headers={header: name for name, header in HEADERS.items() if name in params},
            body=body,
            wants_request="request" in params,
            guard=guard,
            endpoint=route.endpoint,
        )

    def path_args(self, scope: Scope) -> Args | None:
        match = self.pattern.match(scope["path"])
        if match is None:
            return None
        args: Args = {}
        if self.id_name is not None:
            if (value := _id(match.group(1))) is None:
                return None
            args[self.id_name] = value
        if self.query is not None:
            if (query := self.query(scope["query_string"])) is None:
                return None
            args.update(query)
        if self.headers and not self._header_args(scope["headers"], args):
            return None
        return args

    def _header_args(self, raw: list[tuple[bytes, bytes]], args: Args) -> bool:
        for header, value in raw:
            name = self.headers.get(header.lower())
            if name is None:
                continue
            if name in args:
                return False  # repeated
            text = value.decode("latin-1")
            if name == "key" and not 0 < len(text) <= MAX_KEY:
                return False
            args[name] = text
        return True

    def body_arg(self, scope: Scope, raw: bytes) -> BaseModel | None:
        content_type = next((v for k, v in scope["headers"] if k.lower() == b"content-type"), b"")
        if content_type.strip().lower() != b"application/json" or self.body is None:
            return None
        try:
            return self.body.model_validate(json.loads(raw), from_attributes=True)  # as FastAPI validates
        except (ValueError, ValidationError):
            return None


class ErpApp(FastAPI):
    """FastAPI, with ``HOT_ROUTES`` served on the lean path."""

    hot: dict[str, tuple[HotRoute, ...]]  # by method
    handled: tuple[type[Exception], ...]

    def install_hot_paths(self, routes: list[tuple[str, APIRoute]]) -> None:
        """Call after the routers and exception handlers are installed."""
        by_key = {(method, path): route for path, route in routes for method in route.methods or ()}
        hot: dict[str, list[HotRoute]] = {}
        for method, path in HOT_ROUTES:
            hot.setdefault(method, []).append(HotRoute.of(path, by_key[(method, path)]))
        self.hot = {method: tuple(found) for method, found in hot.items()}
        self.handled = tuple(k for k in self.exception_handlers if isinstance(k, type) and issubclass(k, Exception))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (candidates := self.hot.get(scope["method"])):
            for hot in candidates:
                if (args := hot.path_args(scope)) is not None:
                    onward = await self._serve(hot, args, scope, receive, send)
                    if onward is None:
                        return
                    receive = onward
                    break
        await super().__call__(scope, receive, send)

    async def _serve(self, hot: HotRoute, args: Args, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Serve the call, or return what FastAPI should receive instead (the body replayed)."""
        if hot.body is not None:
            raw, complete = await _read_body(receive)
            replay = _replaying(raw, complete, receive)
            if not complete or (body := hot.body_arg(scope, raw)) is None:
                return replay
            args["body"], receive = body, replay
        scope["app"] = self  # as Starlette sets it: Request.app, and so the pool, come from here
        request = Request(scope, receive)
        if hot.wants_request:
            args["request"] = request
        try:
            async with hot.guard.context(request) as ctx:
                response = await hot.endpoint(ctx=ctx, **args)
        except self.handled as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)
        return None

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The app's own exception handler for ``exc`` (most specific class first)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                return await response if inspect.isawaitable(response) else response
        raise exc


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body and True, or what was read and False (past ``MAX_BODY``, or a disconnect)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > MAX_BODY:
            return b"".join(chunks), False


def _replaying(body: bytes, complete: bool, receive: Receive) -> Receive:
    """``receive`` as if nothing had been read yet."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
