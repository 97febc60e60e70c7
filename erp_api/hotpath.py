"""The lean path: the app's own routes, served without FastAPI's per-request machinery.

FastAPI's routing, dependency solving and parameter validation cost more CPU than the one
SQL statement behind most ERP calls. ``ErpApp`` reads the route table once, when the app
is built, and serves every route of one plain form itself: its only dependency is its
``RoleGuard``, its parameters are path, query and header parameters and at most one JSON
body model, and its endpoint returns a ``Response``. Nothing here names a route; a new
route of that form is on the lean path, and a route of another form (the token endpoints,
lists that return models) is FastAPI's.

For such a route the call goes exactly the way FastAPI takes it, with FastAPI's own parts:
the route is found as Starlette finds it (each route's path compiled by Starlette's
``compile_path``, tried in the router's order, the method checked last); path, query and
header parameters are validated by FastAPI's ``request_params_to_args`` against the route's
``Dependant``; the body by the route's body field; the guard runs as a dependency would, and
the endpoint gets the arguments FastAPI would pass. Errors go through the app's exception
handlers, so they are the same problem documents. When anything does not validate (or the
body is not plain JSON, or is larger than ``MAX_BODY``), the request goes on to FastAPI with
its body replayed, which answers it as always, 422s included. The OpenAPI document is
FastAPI's, unchanged.

Every request gets its id (``erp_api.audit.request_id``), answered in ``X-Request-Id``.
Before either path, every request with a body passes one check: larger than
``max_content`` is 413, JSON nested deeper than ``MAX_DEPTH`` is 422, both before the body
is parsed or the caller authenticated.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, get_type_hints

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.convertors import Convertor
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from erp_api.audit import request_id
from erp_api.config import MAX_CONTENT
from erp_api.deps import RoleGuard
from erp_api.errors import ContentTooLargeError, ErpError, UnprocessableError
from factory.metrics import Histogram

__all__ = ["MAX_BODY", "ErpApp", "LeanRoute"]

MAX_BODY: Final = 64 * 1024  # larger bodies go to FastAPI
ROUTE_OTHER: Final = "other"  # the route label of a path no route has (404s): one series, not one per path
OWN_PATHS: Final = frozenset({"/healthz", "/metrics", "/docs", "/openapi.json"})
MAX_DEPTH: Final = 32  # nor nest JSON deeper; the deepest request document has 4 levels
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_STEP: Final = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

Args = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LeanRoute:
    """What the lean path needs of one route: its parameters, guard, body and endpoint."""

    dependant: Dependant
    guard: RoleGuard
    guard_name: str  # the endpoint parameter the guard's context goes to
    body_name: str | None
    body_field: Any  # FastAPI's field for the body (validates as FastAPI validates)
    endpoint: Callable[..., Awaitable[Response]]

    @classmethod
    def of(cls, route: APIRoute) -> LeanRoute | None:
        """The route's lean form, or None when FastAPI must serve it."""
        if not inspect.iscoroutinefunction(route.endpoint):
            return None
        dependant = route.dependant
        others = (
            dependant.cookie_params,
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
            dependant.response_param_name,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
        )
        if len(dependant.dependencies) != 1 or len(dependant.body_params) > 1 or any(others):
            return None
        guard = dependant.dependencies[0]
        if not isinstance(guard.call, RoleGuard) or guard.name is None or guard.dependencies[1:]:
            return None
        returns = get_type_hints(route.endpoint).get("return")
        if not (isinstance(returns, type) and issubclass(returns, Response)):
            return None
        body = dependant.body_params[0] if dependant.body_params else None
        if body is not None and not (
            isinstance(body.field_info.annotation, type)
            and issubclass(body.field_info.annotation, BaseModel)
            and not getattr(body.field_info, "embed", False)
        ):
            return None
        return cls(
            dependant=dependant,
            guard=guard.call,
            guard_name=guard.name,
            body_name=body.name if body is not None else None,
            body_field=body,
            endpoint=route.endpoint,
        )

    def arguments(self, request: Request) -> Args | None:
        """Path, query and header arguments as FastAPI reads them, or None when one does not validate."""
        args: Args = {}
        for fields, received in (
            (self.dependant.path_params, request.path_params),
            (self.dependant.query_params, request.query_params),
            (self.dependant.header_params, request.headers),
        ):
            values, errors = request_params_to_args(fields, received)
            if errors:
                return None
            args.update(values)
        if self.dependant.request_param_name is not None:
            args[self.dependant.request_param_name] = request
        return args

    def body(self, request: Request, raw: bytes) -> BaseModel | None:
        """The JSON body validated by the route's own field, or None (FastAPI then decides)."""
        content_type = request.headers.get("content-type", "")
        if content_type.strip().lower() != "application/json":
            return None
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        value, errors = self.body_field.validate(parsed, {}, loc=("body",))
        return None if errors else value


@dataclass(frozen=True, slots=True)
class Routed:
    """One route as Starlette matches it, with its lean form (None: FastAPI serves it)."""

    path: str
    pattern: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    methods: frozenset[str]
    lean: LeanRoute | None

    @classmethod
    def of(cls, path: str, route: APIRoute) -> Routed:
        pattern, _, convertors = compile_path(path)
        return cls(path, pattern, convertors, frozenset(route.methods or ()), LeanRoute.of(route))

    def path_params(self, path: str) -> dict[str, Any] | None:
        match = self.pattern.match(path)
        if match is None:
            return None
        return {name: self.convertors[name].convert(value) for name, value in match.groupdict().items()}


class ErpApp(FastAPI):
    """FastAPI, with the routes of the plain form served on the lean path."""

    lean: tuple[Routed, ...] = ()  # the API's routes in the router's order

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests = Histogram(
            "factory_erp_request_duration_seconds", "Requests answered, by method, route and status, and their time.",
            ("method", "route", "status"), (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )  # fmt: skip

    max_content: int = MAX_CONTENT
    handled: tuple[type[Exception], ...] = ()

    def install_lean_path(self, routes: list[tuple[str, APIRoute]]) -> None:
        """Call with every API route (full path, route) after the routes and exception handlers are installed."""
        if self.user_middleware:
            raise RuntimeError("the lean path would pass by the app's middleware")
        self.lean = tuple(Routed.of(path, route) for path, route in routes)
        self.handled = tuple(k for k in self.exception_handlers if isinstance(k, type) and issubclass(k, Exception))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what a request that fails before answering counts as
        route = [ROUTE_OTHER]
        rid = request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        echo = (b"x-request-id", rid.encode())

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echo]}
            await send(message)

        try:
            await self._http(scope, receive, sending, route)
        finally:
            seconds = time.perf_counter() - started
            self.requests.observe((scope["method"], route[0], str(status)), seconds)

    async def _http(self, scope: Scope, receive: Receive, send: Send, route: list[str]) -> None:
        if (checked := await self._checked(scope, receive, send)) is None:
            return
        onward: Receive | None = checked
        if not scope.get("root_path"):
            onward = await self._lean(scope, checked, send, route)
        if onward is not None:
            if route[0] == ROUTE_OTHER and scope["path"] in OWN_PATHS:
                route[0] = scope["path"]
            await super().__call__(scope, onward, send)

    async def _lean(self, scope: Scope, receive: Receive, send: Send, route: list[str]) -> Receive | None:
        """Serve the call on the lean path, or return what FastAPI should receive instead;
        ``route`` gets the matched route's path template."""
        for routed in self.lean:
            if (params := routed.path_params(scope["path"])) is None or scope["method"] not in routed.methods:
                continue
            route[0] = routed.path
            if routed.lean is not None:
                return await self._serve(routed.lean, {**scope, "path_params": params, "app": self}, receive, send)
            break
        return receive

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Refuse a body larger than ``max_content`` (413) or a JSON body nested deeper than
        ``MAX_DEPTH`` (422) before anything reads it, authentication included. Returns what
        to receive instead (the body replayed), or None when the request was answered."""
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            return receive  # no body
        refusal: ErpError | None = None
        if length is not None and length.isdigit() and int(length) > self.max_content:
            refusal = ContentTooLargeError(f"the body may have at most {self.max_content} bytes")
        else:
            raw, complete = await _read_body(receive, self.max_content)
            receive = _replaying(raw, complete, receive)
            if len(raw) > self.max_content:
                refusal = ContentTooLargeError(f"the body may have at most {self.max_content} bytes")
            elif b"json" in headers.get(b"content-type", b"").lower() and _nesting(raw) > MAX_DEPTH:
                refusal = UnprocessableError.on_field("body", f"JSON may nest at most {MAX_DEPTH} levels deep")
        if refusal is None:
            return receive
        response = await self._handle(Request(scope, receive), refusal)
        await response(scope, receive, send)
        return None

    async def _serve(self, lean: LeanRoute, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Serve the call, or return what FastAPI should receive instead (the body replayed)."""
        raw, complete = b"", True
        if lean.body_name is not None:
            raw, complete = await _read_body(receive, MAX_BODY)
            receive = _replaying(raw, complete, receive)
        request = Request(scope, receive)
        if (args := lean.arguments(request)) is None:
            return receive
        if lean.body_name is not None:
            if not complete or (body := lean.body(request, raw)) is None:
                return receive
            args[lean.body_name] = body
        try:
            async with lean.guard.context(request) as ctx:
                response = await lean.endpoint(**{lean.guard_name: ctx}, **args)
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


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body and True, or what was read and False (past ``limit``, or a disconnect)."""
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
        if size > limit:
            return b"".join(chunks), False


def _nesting(raw: bytes) -> int:
    """How deep JSON in ``raw`` nests (brackets inside strings do not count); cheap for the
    usual body, which has few brackets at all."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0)


def _replaying(body: bytes, complete: bool, receive: Receive) -> Receive:
    """``receive`` as if nothing had been read yet."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
