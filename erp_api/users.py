"""Users and API keys (``erp.app_user``, ``erp.api_key``): all SQL that writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from erp_api.config import LoginPolicy
from erp_api.errors import ConflictError, TooManyAttemptsError, UnprocessableError
from erp_api.security import ALL_ROLES, PasswordGate, Principal, Role, hash_api_key, hash_password, new_api_key

__all__ = [
    "ApiKey",
    "User",
    "authenticate",
    "create_api_key",
    "create_user",
    "list_api_keys",
    "list_locks",
    "principal_for_api_key",
    "revoke_api_key",
    "unlock",
    "user_by_name",
]

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


async def create_user(conn: Conn, username: str, role: str, password: str, *, replace: bool = False) -> User:
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
    cur = await conn.execute(
        "INSERT INTO erp.app_user (username, role, password_hash) VALUES (%s, %s, %s)"
        f" ON CONFLICT (username) {conflict} RETURNING id",
        (username, checked, digest),
    )
    row = await cur.fetchone()
    if row is None:
        raise ConflictError.on_field("username", f"user {username!r} already exists")
    return User(id=row[0], username=username, role=checked, active=True)


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
    gate: PasswordGate,
    policy: LoginPolicy,
    *,
    username: str,
    password: str,
    address: str,
) -> User | None:
    """The active user with this password, or None (same effort either way); while the name
    or the address is locked, TooManyAttemptsError before the password is checked. Pooled
    connections are back in the pool while the password is checked: hashing holds none."""
    account = username[:255]
    async with pool.connection(timeout=5) as conn:
        cur = await conn.execute("SELECT erp.login_locked(%s, %s)", (account, address))
        locked = (await cur.fetchone() or (0,))[0]
        if locked:
            raise TooManyAttemptsError(f"too many failed sign-ins; try again in {locked} s",
                                       headers={"Retry-After": str(locked)})  # fmt: skip
        found = await user_by_name(conn, username)
    stored = found[1] if found else None
    user = found[0] if found and await gate.verify(password, stored) and found[0].active else None
    async with pool.connection(timeout=5) as conn:
        if user is not None:
            await conn.execute("DELETE FROM erp.login_guard WHERE kind = 'account' AND key = %s", (account,))
        else:
            await conn.execute(
                "SELECT erp.login_failed(%s, %s, %s, %s, %s)",
                (account, address, policy.free_account, policy.free_address, policy.max_lock_s),
            )
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


async def unlock(conn: Conn, kind: str, key: str) -> bool:
    """Forget the failed sign-ins of an account name or an address; False when there were none."""
    cur = await conn.execute("DELETE FROM erp.login_guard WHERE kind = %s AND key = %s RETURNING 1", (kind, key))
    return await cur.fetchone() is not None


async def create_api_key(conn: Conn, name: str, role: str) -> ApiKey:
    checked = _check_role(role)
    key = new_api_key()
    cur = await conn.execute(
        "INSERT INTO erp.api_key (name, prefix, key_hash, role) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (name) DO NOTHING RETURNING id",
        (name, key[:10], hash_api_key(key), checked),
    )
    row = await cur.fetchone()
    if row is None:
        raise ConflictError.on_field("name", f"an API key named {name!r} already exists")
    return ApiKey(id=row[0], name=name, role=checked, key=key)


async def list_api_keys(conn: Conn) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, name, prefix, role, created_at, revoked_at FROM erp.api_key ORDER BY id")
        return await cur.fetchall()


async def revoke_api_key(conn: Conn, name: str) -> bool:
    cur = await conn.execute(
        "UPDATE erp.api_key SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING id", (name,)
    )
    return await cur.fetchone() is not None


async def principal_for_api_key(conn: Conn, key: str) -> Principal | None:
    cur = await conn.execute(
        "SELECT name, role FROM erp.api_key WHERE key_hash = %s AND revoked_at IS NULL", (hash_api_key(key),)
    )
    row = await cur.fetchone()
    return None if row is None else Principal(name=f"key:{row[0]}", role=row[1], via="api_key")
