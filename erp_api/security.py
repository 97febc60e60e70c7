"""Roles, password hashing, JWT access/refresh tokens and API keys.

Passwords are hashed with Argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), in a
worker thread so a login never stalls the event loop; a ``PasswordGate`` bounds how many
sign-ins verify at once and how many may wait, so a login flood gets 503s rather than the
cores and the memory every other request needs. Access tokens are short-lived
HS256 JWTs that carry the role, so an authorised read costs no database round trip;
refresh tokens live longer and are exchanged only after the user is re-read from the
database (a disabled user cannot refresh). API keys are 256-bit random strings stored as
SHA-256 digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Literal, get_args

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from erp_api.errors import BusyError, UnauthenticatedError

__all__ = [
    "ALL_ROLES",
    "API_KEY_PREFIX",
    "Principal",
    "Role",
    "SignInGate",
    "TokenPair",
    "TokenService",
    "hash_api_key",
    "hash_password",
    "new_api_key",
    "verify_password",
]

Role = Literal["admin", "planner", "accountant", "clerk", "operator", "service"]
ALL_ROLES: Final[frozenset[Role]] = frozenset(get_args(Role))
API_KEY_PREFIX: Final = "fk_"
ISSUER: Final = "factory-erp"
_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as one for a known user.
_DUMMY_HASH: Final = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (by JWT) or a service (by API key)."""

    name: str
    role: Role
    via: Literal["token", "api_key"]
    issued_at: float = 0.0  # a token's iat (epoch seconds, to the millisecond)
    token_id: str = ""  # a refresh token's jti: its row in erp.refresh_token


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_id: str  # the refresh token's jti, to record
    refresh_expires: int  # epoch seconds


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored``; constant effort when there is no user."""

    def check() -> bool:
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


class SignInGate:
    """How much of this process sign-ins may take, so that a flood of them leaves the rest of
    the API alone: at most ``concurrent + waiting`` sign-ins in progress (past that one is
    refused at once: 503, Retry-After, before any database work or hashing); of those, at
    most ``lookups`` at a time use pooled connections (the pool stays free for everyone else)
    and ``concurrent`` at a time check a password (Argon2: one core and 64 MiB each)."""

    def __init__(self, concurrent: int = 1, waiting: int = 16, lookups: int = 2) -> None:
        self._hashing = asyncio.Semaphore(concurrent)
        self._lookups = asyncio.Semaphore(lookups)
        self._capacity = concurrent + waiting
        self._inside = 0

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """One sign-in, from its first lookup to its last; BusyError when too many are in progress."""
        if self._inside >= self._capacity:
            raise BusyError("too many sign-ins at once; try again in a second", headers={"Retry-After": "1"})
        self._inside += 1
        try:
            yield
        finally:
            self._inside -= 1

    @contextlib.asynccontextmanager
    async def lookup(self) -> AsyncIterator[None]:
        """Around a sign-in's use of a pooled connection."""
        async with self._lookups:
            yield

    async def verify(self, password: str, stored: str | None) -> bool:
        """``verify_password``, in turn with the other sign-ins of this process."""
        async with self._hashing:
            return await verify_password(password, stored)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class TokenService:
    """Issues and checks the JWTs of one deployment (one secret)."""

    CACHE_SIZE: Final = 4096

    def __init__(self, secret: str, *, access_ttl_s: int, refresh_ttl_s: int) -> None:
        self._secret = secret
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        # Verified access tokens until they expire: a client sends the same token for
        # minutes, and verifying it (signature plus PyJWT's checks) is a large part of a
        # cheap request's cost.
        self._verified: dict[str, tuple[Principal, int]] = {}

    def issue(
        self, username: str, role: Role, *, refresh_id: str | None = None, refresh_expires: int | None = None
    ) -> TokenPair:
        """A new pair; a refreshed session passes its next refresh id and its family's expiry."""
        now = time.time()
        base = {"iss": ISSUER, "sub": username, "role": role, "iat": math.floor(now * 1000) / 1000}
        access = {**base, "typ": "access", "exp": int(now) + self.access_ttl_s, "jti": uuid.uuid4().hex}
        refresh_id = refresh_id or str(uuid.uuid4())
        refresh_expires = refresh_expires or int(now) + self.refresh_ttl_s
        refresh = {**base, "typ": "refresh", "exp": refresh_expires, "jti": refresh_id}
        return TokenPair(
            access_token=jwt.encode(access, self._secret, algorithm="HS256"),
            refresh_token=jwt.encode(refresh, self._secret, algorithm="HS256"),
            expires_in=self.access_ttl_s,
            refresh_id=refresh_id,
            refresh_expires=refresh_expires,
        )

    def decode(self, token: str, expected: Literal["access", "refresh"]) -> Principal:
        if expected == "access" and (hit := self._verified.get(token)) is not None:
            if hit[1] > time.time():
                return hit[0]
            del self._verified[token]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthenticatedError(f"the {expected} token has expired") from exc
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"the {expected} token is not valid") from exc
        role = claims.get("role")
        if claims.get("typ") != expected or role not in ALL_ROLES or not isinstance(claims["sub"], str):
            raise UnauthenticatedError(f"not an {expected} token of this service")
        who = Principal(name=claims["sub"], role=role, via="token", issued_at=float(claims["iat"]),
                        token_id=str(claims.get("jti", "")))  # fmt: skip
        if expected == "access":
            if len(self._verified) >= self.CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (who, int(claims["exp"]))
        return who
