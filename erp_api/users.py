"""Users and API keys (``erp.app_user``, ``erp.api_key``): all SQL that writes them."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from erp_api import audit
from erp_api.audit import Actor
from erp_api.config import LoginPolicy
from erp_api.errors import BusyError, ConflictError, TooManyAttemptsError, UnprocessableError
from erp_api.security import (
    ALL_ROLES,
    Principal,
    Role,
    SignInGate,
    TokenPair,
    hash_api_key,
    hash_password,
    new_api_key,
)

__all__ = [
    "ApiKey",
    "Revocations",
    "Rotated",
    "User",
    "authenticate",
    "change_user",
    "create_api_key",
    "create_user",
    "delete_user",
    "end_sessions",
    "list_api_keys",
    "list_locks",
    "list_users",
    "principal_for_api_key",
    "record_refresh",
    "revoke_api_key",
    "rotate_refresh",
    "set_password",
    "unlock",
    "user_by_name",
]

log = logging.getLogger(__name__)
USERNAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
MIN_PASSWORD: Final = 12

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    active: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    role: Role
    key: str  # shown once, at creation


def _check_role(role: str) -> Role:
    if role not in ALL_ROLES:
        raise UnprocessableError.on_field("role", f"must be one of {', '.join(sorted(ALL_ROLES))}")
    return role


async def create_user(conn: Conn, username: str, role: str, password: str, *, by: Actor, replace: bool = False) -> User:
    """Create a user (or, with ``replace``, reset an existing user's role and password)."""
    if not USERNAME_RE.match(username):
        raise UnprocessableError.on_field("username", "1-64 of a-z 0-9 _ . @ -, starting with a letter or digit")
    checked = _check_role(role)
    if len(password) < MIN_PASSWORD:
        raise UnprocessableError.on_field("password", f"at least {MIN_PASSWORD} characters")
    digest = await hash_password(password)
    conflict = (
        "DO UPDATE SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash, active = true, updated_at = now()"
        if replace
        else "DO NOTHING"
    )
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO erp.app_user (username, role, password_hash) VALUES (%s, %s, %s)"
            f" ON CONFLICT (username) {conflict} RETURNING id, xmax = 0",
            (username, checked, digest),
        )
        row = await cur.fetchone()
        if row is None:
            raise ConflictError.on_field("username", f"user {username!r} already exists")
        if not row[1]:
            await end_sessions(conn, username)
        action = "user.created" if row[1] else "user.replaced"
        await audit.note(conn, by, action, ("user", username), {"role": checked})
    return User(id=row[0], username=username, role=checked, active=True)


async def list_users(conn: Conn, username: str | None = None) -> list[dict[str, Any]]:
    """Every user, or the one named ``username`` (never a password hash)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, username, role, active, created_at, updated_at FROM erp.app_user"
            " WHERE %s::text IS NULL OR username = %s ORDER BY username",
            (username, username),
        )
        return await cur.fetchall()


async def change_user(conn: Conn, username: str, *, role: str | None, active: bool | None, by: Actor) -> User | None:
    """A new role or state for the user (None: unchanged); a disabled user's sessions end at once."""
    checked = None if role is None else _check_role(role)
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE erp.app_user SET role = coalesce(%s, role), active = coalesce(%s, active), updated_at = now()"
            " WHERE username = %s RETURNING id, username, role, active",
            (checked, active, username),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        if active is False or (role is not None):
            await end_sessions(conn, username)  # a new role takes effect on the next sign-in
        changes = {k: v for k, v in (("role", checked), ("active", active)) if v is not None}
        await audit.note(conn, by, "user.changed", ("user", username), changes)
    return User(id=row[0], username=row[1], role=row[2], active=row[3])


async def set_password(conn: Conn, username: str, password: str, *, by: Actor) -> bool:
    """A new password; the user's sessions end (every token issued so far is refused)."""
    if len(password) < MIN_PASSWORD:
        raise UnprocessableError.on_field("password", f"at least {MIN_PASSWORD} characters")
    digest = await hash_password(password)
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE erp.app_user SET password_hash = %s, updated_at = now() WHERE username = %s RETURNING id",
            (digest, username),
        )
        if await cur.fetchone() is None:
            return False
        await end_sessions(conn, username)
        await audit.note(conn, by, "user.password_reset", ("user", username), {})
    return True


async def delete_user(conn: Conn, username: str, *, by: Actor) -> bool:
    """Delete the user; their tokens are refused from now on."""
    async with conn.transaction():
        cur = await conn.execute("DELETE FROM erp.app_user WHERE username = %s RETURNING role", (username,))
        if (row := await cur.fetchone()) is None:
            return False
        await end_sessions(conn, username)
        await audit.note(conn, by, "user.deleted", ("user", username), {"role": row[0]})
    return True


async def end_sessions(conn: Conn, username: str) -> None:
    """Refresh tokens revoked, access tokens issued until now refused (``erp.end_sessions``)."""
    await conn.execute("SELECT erp.end_sessions(%s)", (username,))


async def record_refresh(conn: Conn, pair: TokenPair, username: str) -> None:
    """A sign-in starts a session: its refresh token is the first of a new family."""
    await conn.execute(
        "INSERT INTO erp.refresh_token (jti, family, username, expires_at) VALUES (%s, %s, %s, to_timestamp(%s))",
        (pair.refresh_id, pair.refresh_id, username, pair.refresh_expires),
    )


@dataclass(frozen=True, slots=True)
class Rotated:
    outcome: str  # ok, unknown, revoked, reused, expired
    username: str | None
    role: Role | None
    expires: int | None  # the family's expiry, epoch seconds


async def rotate_refresh(conn: Conn, token_id: str, new_id: str) -> Rotated:
    """Spend refresh token ``token_id`` for ``new_id`` (``erp.rotate_refresh``)."""
    try:
        cur = await conn.execute("SELECT * FROM erp.rotate_refresh(%s::uuid, %s::uuid)", (token_id, new_id))
    except psycopg.errors.InvalidTextRepresentation:
        return Rotated("unknown", None, None, None)  # a jti that is no uuid: not one of ours
    row = await cur.fetchone()
    assert row is not None
    outcome, username, role, expires = row
    return Rotated(outcome, username, role, None if expires is None else int(expires.timestamp()))


class Revocations:
    """The moments after which each user's tokens count (``erp.token_revocation``), read from
    the database every ``every_s`` by each API process, so a disabled, deleted or reset user's
    access tokens are refused everywhere within that time, and at once in the process that
    made the change."""

    def __init__(self, keep_s: int) -> None:
        self.keep_s = keep_s  # rows older than the longest access token no longer matter
        self.after: dict[str, float] = {}

    def refuses(self, who: Principal) -> bool:
        return who.via == "token" and who.issued_at < self.after.get(who.name, 0.0)

    async def read(self, conn: Conn) -> None:
        cur = await conn.execute(
            "SELECT username, extract(epoch FROM after)::float8 FROM erp.token_revocation"
            " WHERE after > now() - make_interval(secs => %s)",
            (self.keep_s,),
        )
        self.after = {str(name): float(at) for name, at in await cur.fetchall()}

    async def follow(self, pool: AsyncConnectionPool[Any], every_s: float = 1.0) -> None:
        """Read the revocations until cancelled; a failed read is retried at the next tick."""
        while True:
            try:
                async with pool.connection(timeout=5) as conn:
                    await self.read(conn)
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("reading token revocations failed (will retry): %s", exc)
            await asyncio.sleep(every_s)


async def user_by_name(conn: Conn, username: str) -> tuple[User, str] | None:
    cur = await conn.execute(
        "SELECT id, username, role, active, password_hash FROM erp.app_user WHERE username = %s", (username,)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return User(id=row[0], username=row[1], role=row[2], active=row[3]), row[4]


async def authenticate(
    pool: AsyncConnectionPool[Any],
    gate: SignInGate,
    policy: LoginPolicy,
    *,
    username: str,
    password: str,
    address: str,
) -> User | None:
    """The active user with this password, or None (same effort either way: a name that is no
    user's is checked against a dummy hash); while the name or the address is locked,
    TooManyAttemptsError before the password is checked. The whole sign-in passes ``gate``
    (BusyError when too many are in progress); pooled connections are back in the pool while
    the password is checked: hashing holds none. Both refusals come ``policy.refusal_delay_s``
    late."""
    account = username[:255]
    try:
        async with gate.admitted():
            async with gate.lookup(), pool.connection(timeout=5) as conn:
                cur = await conn.execute("SELECT erp.login_locked(%s, %s)", (account, address))
                locked = (await cur.fetchone() or (0,))[0]
                if locked:
                    raise TooManyAttemptsError(f"too many failed sign-ins; try again in {locked} s",
                                               headers={"Retry-After": str(locked)})  # fmt: skip
                found = await user_by_name(conn, username)
            matches = await gate.verify(password, found[1] if found else None)  # an unknown name costs the same
            user = found[0] if found and matches and found[0].active else None
            async with gate.lookup(), pool.connection(timeout=5) as conn:
                if user is not None:
                    await conn.execute("DELETE FROM erp.login_guard WHERE kind = 'account' AND key = %s", (account,))
                else:
                    await conn.execute(
                        "SELECT erp.login_failed(%s, %s, %s, %s, %s)",
                        (account, address, policy.free_account, policy.free_address, policy.max_lock_s),
                    )
    except (BusyError, TooManyAttemptsError):
        await asyncio.sleep(policy.refusal_delay_s)  # holding nothing: no slot, no connection
        raise
    return user


async def list_locks(conn: Conn) -> list[dict[str, Any]]:
    """Names and addresses with failed sign-ins in the last hour, or locked now."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT kind, key, failures, last_failure_at, coalesce(locked_until > now(), false) AS locked, locked_until"
            "  FROM erp.login_guard WHERE last_failure_at > now() - interval '1 hour' OR locked_until > now()"
            " ORDER BY kind, key"
        )
        return await cur.fetchall()


async def unlock(conn: Conn, kind: str, key: str, *, by: Actor) -> bool:
    """Forget the failed sign-ins of an account name or an address; False when there were none."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM erp.login_guard WHERE kind = %s AND key = %s RETURNING failures", (kind, key)
        )
        if (row := await cur.fetchone()) is None:
            return False
        await audit.note(conn, by, "login_lock.cleared", ("login_lock", f"{kind}:{key}"), {"failures": row[0]})
    return True


async def create_api_key(conn: Conn, name: str, role: str, *, by: Actor) -> ApiKey:
    checked = _check_role(role)
    key = new_api_key()
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO erp.api_key (name, prefix, key_hash, role) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, key[:10], hash_api_key(key), checked),
        )
        row = await cur.fetchone()
        if row is None:
            raise ConflictError.on_field("name", f"an API key named {name!r} already exists")
        await audit.note(conn, by, "api_key.created", ("api_key", name), {"role": checked, "prefix": key[:10]})
    return ApiKey(id=row[0], name=name, role=checked, key=key)


async def list_api_keys(conn: Conn) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, name, prefix, role, created_at, revoked_at FROM erp.api_key ORDER BY id")
        return await cur.fetchall()


async def revoke_api_key(conn: Conn, name: str, *, by: Actor) -> bool:
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE erp.api_key SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING id", (name,)
        )
        if await cur.fetchone() is None:
            return False
        await audit.note(conn, by, "api_key.revoked", ("api_key", name), {})
    return True


async def principal_for_api_key(conn: Conn, key: str) -> Principal | None:
    cur = await conn.execute(
        "SELECT name, role FROM erp.api_key WHERE key_hash = %s AND revoked_at IS NULL", (hash_api_key(key),)
    )
    row = await cur.fetchone()
    return None if row is None else Principal(name=f"key:{row[0]}", role=row[1], via="api_key")
