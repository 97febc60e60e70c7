"""FastAPI dependencies as ``Annotated`` aliases: the connection, the caller and their role.

Every route under /api/v1 (except the token endpoints) takes one of the role aliases
below; its ``Guard`` authenticates (bearer JWT or ``X-API-Key``), then authorises:
401 without valid credentials, 403 when the role is not among those allowed. A
``RoleGuard`` then lends a pooled connection for the request; a ``CallerGuard`` (setpoints,
which wait on a device) lends none. The app
reads the guards back from the routes to document each operation's roles in OpenAPI
(``x-roles``), and a test walks every route with every role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Header, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from psycopg_pool import AsyncConnectionPool

from erp_api import users
from erp_api.audit import Actor
from erp_api.errors import ForbiddenError, UnauthenticatedError
from erp_api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from erp_api.responses import IF_MATCH_PATTERN
from erp_api.security import ALL_ROLES, Principal, Role, TokenService

__all__ = [
    "Accounting",
    "Admin",
    "AnyRole",
    "Caller",
    "CallerGuard",
    "Clerical",
    "Conn",
    "Ctx",
    "Cursor",
    "Guard",
    "IdempotencyKey",
    "IfMatch",
    "Limit",
    "Maintenance",
    "Operating",
    "Planning",
    "Production",
    "Purchasing",
    "Reader",
    "RoleGuard",
    "Sales",
    "route_guard",
]


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a guarded route works with: the caller, a pooled connection, the ledger currency,
    the request's id."""

    who: Principal
    conn: psycopg.AsyncConnection[Any]
    currency: str
    request_id: str | None = None

    @property
    def actor(self) -> Actor:
        """The caller, as the audit trail records them."""
        return Actor(self.who.name, self.request_id)


@dataclass(frozen=True, slots=True)
class Caller:
    """What a route that waits on something other than the database works with: the caller,
    the pool (to borrow a connection only for its own short statements), the request's id."""

    who: Principal
    pool: AsyncConnectionPool[Any]
    request_id: str | None = None

    @property
    def actor(self) -> Actor:
        """The caller, as the audit trail records them."""
        return Actor(self.who.name, self.request_id)


class Guard:
    """Authenticates the caller and admits only ``roles``: 401 without valid credentials,
    403 for another role. The security schemes it reads (bearer token, ``X-API-Key``) are
    declared in the OpenAPI document by ``erp_api.openapi``."""

    def __init__(self, *roles: Role) -> None:
        self.roles: frozenset[Role] = frozenset(roles)

    async def admit(self, request: Request) -> Principal:
        who = await authenticate(request)
        if who.role not in self.roles:
            allowed = ", ".join(sorted(self.roles))
            raise ForbiddenError(f"role {who.role!r} may not do this; allowed: {allowed}")
        return who


class RoleGuard(Guard):
    """The guard of nearly every route: admits the caller, then lends a pooled connection.

    One dependency instead of several (scheme, guard, connection, currency): FastAPI's cost
    per request grows with the number of dependencies, and this is every request.
    """

    async def __call__(self, request: Request) -> AsyncIterator[Ctx]:
        async with self.context(request) as ctx:
            yield ctx

    @asynccontextmanager
    async def context(self, request: Request) -> AsyncIterator[Ctx]:
        """The check itself, also used by ``erp_api.hotpath`` outside FastAPI's dependency solving."""
        who = await self.admit(request)
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        async with pool.connection() as conn:
            yield Ctx(who, conn, await _currency(request, conn), request.scope.get("state", {}).get("request_id"))


class CallerGuard(Guard):
    """Admits the caller and lends no connection: for a route that waits seconds on a device,
    which must not hold one of the pool's few connections meanwhile."""

    async def __call__(self, request: Request) -> Caller:
        who = await self.admit(request)
        return Caller(who, request.app.state.pool, request.scope.get("state", {}).get("request_id"))


def route_guard(route: APIRoute) -> Guard | None:
    """The guard of a route, or None when it needs no credentials."""

    def walk(dependant: Dependant) -> Guard | None:
        if isinstance(dependant.call, Guard):
            return dependant.call
        for sub in dependant.dependencies:
            if (found := walk(sub)) is not None:
                return found
        return None

    return walk(route.dependant)


async def authenticate(request: Request) -> Principal:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("send Authorization: Bearer <access token>")
        tokens: TokenService = request.app.state.tokens
        bearer = tokens.decode(token.strip(), "access")
        if request.app.state.revocations.refuses(bearer):
            raise UnauthenticatedError(
                "the token was revoked (password reset, user disabled or deleted); sign in again"
            )
        return bearer
    if api_key := request.headers.get("x-api-key"):
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        async with pool.connection() as conn:
            who = await users.principal_for_api_key(conn, api_key)
        if who is None:
            raise UnauthenticatedError("the API key is not valid or was revoked")
        return who
    raise UnauthenticatedError


async def _currency(request: Request, conn: psycopg.AsyncConnection[Any]) -> str:
    """The ledger currency (``erp.company``), read once per process."""
    cached: str | None = getattr(request.app.state, "currency", None)
    if cached is None:
        cur = await conn.execute("SELECT currency FROM erp.company")
        row = await cur.fetchone()
        cached = str(row[0]) if row else "EUR"
        request.app.state.currency = cached
    return cached


async def _connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn:
        yield conn


# For the few routes that need no credentials (the token endpoints).
Conn = Annotated[psycopg.AsyncConnection[Any], Depends(_connection)]

# Who may do what. Reads are open to every role that has a business reason to see them.
AnyRole = Annotated[Ctx, Depends(RoleGuard(*ALL_ROLES))]
Reader = Annotated[Ctx, Depends(RoleGuard("admin", "planner", "accountant", "clerk", "operator"))]
Planning = Annotated[Ctx, Depends(RoleGuard("admin", "planner"))]
Clerical = Annotated[Ctx, Depends(RoleGuard("admin", "planner", "clerk"))]  # orders, receipts, transfers
Sales = Annotated[Ctx, Depends(RoleGuard("admin", "planner", "accountant", "clerk"))]
Accounting = Annotated[Ctx, Depends(RoleGuard("admin", "accountant"))]
Purchasing = Annotated[Ctx, Depends(RoleGuard("admin", "planner", "accountant"))]  # suppliers and what they sell
Maintenance = Annotated[Ctx, Depends(RoleGuard("admin", "planner", "service"))]
# Production counts: planners by hand, services (the analytics counts job) from the machines' counters.
Production = Annotated[Ctx, Depends(RoleGuard("admin", "planner", "service"))]
Admin = Annotated[Ctx, Depends(RoleGuard("admin"))]
Operating = Annotated[Caller, Depends(CallerGuard("admin", "planner", "operator"))]  # setpoints on the machines

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes the POST safe to retry: a replay returns the original response; "
        "the same key with a different request is 409.",
        examples=["order-4711-confirm"],
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        pattern=IF_MATCH_PATTERN,
        description='The ETag from your last read, e.g. "3", or *. Required by every PATCH (428 without).',
        examples=['"1"'],
    ),
]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).")
]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` from the previous page.")]
