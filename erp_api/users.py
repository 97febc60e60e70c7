"""Users and API keys (``erp.app_user``, ``erp.api_key``): all SQL that writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from erp_api.errors import ConflictError, UnprocessableError
from erp_api.security import ALL_ROLES, PasswordGate, Principal, Role, hash_api_key, hash_password, new_api_key

__all__ = [
    "ApiKey",
    "User",
    "authenticate",
    "create_api_key",
    "create_user",
    "list_api_keys",
    "principal_for_api_key",
    "revoke_api_key",
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


async def authenticate(pool: AsyncConnectionPool[Any], gate: PasswordGate, username: str, password: str) -> User | None:
    """The active user with this password, or None (same effort either way). The pooled
    connection is back in the pool before the password is checked: hashing holds none."""
    async with pool.connection(timeout=5) as conn:
        found = await user_by_name(conn, username)
    stored = found[1] if found else None
    if not await gate.verify(password, stored) or found is None or not found[0].active:
        return None
    return found[0]


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
