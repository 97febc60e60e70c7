"""Authentication: OAuth2 password flow, token refresh, the caller, and service API keys.

These POSTs do not take Idempotency-Key: they mint credentials, and a recorded response
would keep a secret in the database.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field

from erp_api import users
from erp_api.deps import Admin, AnyRole, Conn, Ctx
from erp_api.errors import ConflictError, NotFoundError, UnauthenticatedError
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.common import Flag, Input
from erp_api.security import Role, TokenPair, TokenService

__all__ = ["router"]

REFRESH_REFUSALS: Final = {
    "unknown": "the refresh token is not one this service issued, or its user was deleted",
    "revoked": "the session was ended (signed out, password reset, or the user disabled); sign in again",
    "reused": "the refresh token was used before, so it may have leaked: its session is ended; sign in again",
    "expired": "the session has expired; sign in again",
}

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenPublic(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")

    @classmethod
    def of(cls, pair: TokenPair) -> TokenPublic:
        return cls(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


class RefreshRequest(Input):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=4096)


class PrincipalPublic(BaseModel):
    name: str
    role: Role
    via: Literal["token", "api_key"]


class ApiKeyCreate(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "analytics-scheduler", "role": "service"}]}
    )
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    role: Role = "service"


class ApiKeyCreated(BaseModel):
    id: int
    name: str
    role: Role
    key: str = Field(description="Send as `X-API-Key`. Shown only once; store it in a secret manager.")


class ApiKeyPublic(BaseModel):
    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


def _tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


@router.post("/token", responses=problems(401, 422, 429, 503))
async def issue_token(*, request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenPublic:
    """OAuth2 password flow: exchange username and password for access and refresh tokens.
    429 with Retry-After while the name or the caller's address is locked after failed
    sign-ins; 503 with Retry-After while too many sign-ins are being checked at once."""
    state = request.app.state
    address = request.client.host if request.client else "unknown"
    user = await users.authenticate(
        state.pool, state.passwords, state.login_policy, username=form.username, password=form.password, address=address
    )
    if user is None:
        raise UnauthenticatedError("unknown user, wrong password, or the user is disabled")
    pair = _tokens(request).issue(user.username, user.role)
    async with state.pool.connection(timeout=5) as conn:
        await users.record_refresh(conn, pair, user.username)
    return TokenPublic.of(pair)


@router.post("/refresh", responses=problems(401, 422))
async def refresh_token(*, request: Request, body: RefreshRequest, conn: Conn) -> TokenPublic:
    """A new token pair for a refresh token, which is spent: each refresh token works once.
    The new refresh token expires when the session does (7 days after its sign-in); the role
    is read again. Using a spent refresh token again ends its whole session."""
    tokens = _tokens(request)
    claimed = tokens.decode(body.refresh_token, "refresh")
    next_id = str(uuid.uuid4())
    rotated = await users.rotate_refresh(conn, claimed.token_id, next_id)
    if rotated.outcome != "ok" or rotated.username is None or rotated.role is None:
        raise UnauthenticatedError(REFRESH_REFUSALS.get(rotated.outcome, "the refresh token is not valid"))
    return TokenPublic.of(
        tokens.issue(rotated.username, rotated.role, refresh_id=next_id, refresh_expires=rotated.expires)
    )


@router.get("/me")
async def me(*, ctx: AnyRole) -> PrincipalPublic:
    """Who the credentials belong to, and their role."""
    return PrincipalPublic(name=ctx.who.name, role=ctx.who.role, via=ctx.who.via)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, responses=problems(409, 422))
async def create_api_key(*, body: ApiKeyCreate, ctx: Admin) -> ApiKeyCreated:
    """Create an API key for a service (e.g. the analytics scheduler, with role `service`)."""
    key = await users.create_api_key(ctx.conn, body.name, body.role, by=ctx.actor)
    return ApiKeyCreated(id=key.id, name=key.name, role=key.role, key=key.key)


class UserPublic(BaseModel):
    id: int
    username: str
    role: Role
    active: bool
    created_at: datetime
    updated_at: datetime


class UserCreate(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"username": "alice", "role": "planner", "password": "..."}]}
    )
    username: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.@-]*$")
    role: Role
    password: str = Field(min_length=12, max_length=1024, pattern=NO_NUL)


class UserChange(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"active": False}]})
    role: Role | None = None
    active: Flag | None = Field(default=None, description="false: the user's sessions end at once.")


class PasswordReset(Input):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=12, max_length=1024, pattern=NO_NUL)


Username = Annotated[str, Path(max_length=64, pattern=NO_NUL)]


@router.get("/users")
async def list_users(*, ctx: Admin) -> list[UserPublic]:
    """Every user, disabled ones included (never a password hash)."""
    return [UserPublic.model_validate(row) for row in await users.list_users(ctx.conn)]


@router.post("/users", status_code=status.HTTP_201_CREATED, responses=problems(409, 422))
async def create_user(*, body: UserCreate, ctx: Admin) -> UserPublic:
    """Create a user with a role and a first password (at least 12 characters)."""
    await users.create_user(ctx.conn, body.username, body.role, body.password, by=ctx.actor)
    return await _user(ctx, body.username)


@router.patch("/users/{username}", responses=problems(404, 409, 422))
async def change_user(*, request: Request, username: Username, body: UserChange, ctx: Admin) -> UserPublic:
    """Change a user's role or disable (or enable) them. Disabling or a new role ends the
    user's sessions at once: refresh tokens are revoked and access tokens refused."""
    if body.active is False:
        _not_yourself(ctx, username, "disable")
    if await users.change_user(ctx.conn, username, role=body.role, active=body.active, by=ctx.actor) is None:
        raise NotFoundError(f"no user named {username!r}")
    await request.app.state.revocations.read(ctx.conn)
    return await _user(ctx, username)


@router.put("/users/{username}/password", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404, 422))
async def reset_password(*, request: Request, username: Username, body: PasswordReset, ctx: Admin) -> None:
    """Set a new password; every session of the user ends (their tokens are refused)."""
    if not await users.set_password(ctx.conn, username, body.password, by=ctx.actor):
        raise NotFoundError(f"no user named {username!r}")
    await request.app.state.revocations.read(ctx.conn)


@router.delete("/users/{username}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404, 409))
async def delete_user(*, request: Request, username: Username, ctx: Admin) -> None:
    """Delete a user; their tokens are refused from now on."""
    _not_yourself(ctx, username, "delete")
    if not await users.delete_user(ctx.conn, username, by=ctx.actor):
        raise NotFoundError(f"no user named {username!r}")
    await request.app.state.revocations.read(ctx.conn)


def _not_yourself(ctx: Ctx, username: str, what: str) -> None:
    if ctx.who.name == username:
        raise ConflictError(f"you cannot {what} yourself; another admin can")


async def _user(ctx: Ctx, username: str) -> UserPublic:
    found = await users.list_users(ctx.conn, username)
    if not found:
        raise NotFoundError(f"no user named {username!r}")
    return UserPublic.model_validate(found[0])


class LoginLockPublic(BaseModel):
    kind: Literal["account", "address"]
    key: str = Field(description="The account name or the client address.")
    failures: int = Field(description="Failed sign-ins counted (forgotten an hour after the last).")
    last_failure_at: datetime
    locked: bool
    locked_until: datetime | None


@router.get("/locks")
async def list_locks(*, ctx: Admin) -> list[LoginLockPublic]:
    """Account names and client addresses with failed sign-ins in the last hour, locked or not."""
    return [LoginLockPublic.model_validate(row) for row in await users.list_locks(ctx.conn)]


@router.delete("/locks/{kind}/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404))
async def unlock(
    *, kind: Literal["account", "address"], key: Annotated[str, Path(max_length=255, pattern=NO_NUL)], ctx: Admin
) -> None:
    """Unlock an account name or a client address and forget its failed sign-ins."""
    if not await users.unlock(ctx.conn, kind, key, by=ctx.actor):
        raise NotFoundError(f"no failed sign-ins recorded for {kind} {key!r}")


@router.get("/api-keys")
async def list_api_keys(*, ctx: Admin) -> list[ApiKeyPublic]:
    """Every API key, revoked ones included (never the key itself)."""
    return [ApiKeyPublic.model_validate(row) for row in await users.list_api_keys(ctx.conn)]


@router.delete("/api-keys/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404))
async def revoke_api_key(*, name: Annotated[str, Path(max_length=64, pattern=NO_NUL)], ctx: Admin) -> None:
    """Revoke an API key; requests with it get 401 from now on."""
    if not await users.revoke_api_key(ctx.conn, name, by=ctx.actor):
        raise NotFoundError(f"no active API key named {name!r}")
