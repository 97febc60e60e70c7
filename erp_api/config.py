"""The ERP service's configuration, and the rule for its JWT secret.

Outside dev mode the secret must come from ``FACTORY_JWT_SECRET`` (or the caller) and
be a real one: at least 32 characters and not a known placeholder. Dev mode (``factory
erp serve --dev``, and ``factory demo``) may run without it and then signs tokens with
``DEV_JWT_SECRET``, a value whose name and text say it must never reach production;
production refuses that value too.
"""

from __future__ import annotations

import collections
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from erp_api.errors import ErpConfigError

__all__ = [
    "DEFAULT_LOGIN",
    "DEV_JWT_SECRET",
    "MAX_CONTENT",
    "MIN_SECRET_BITS",
    "MIN_SECRET_LENGTH",
    "OUTBOX_DAYS",
    "ErpConfig",
    "LoginPolicy",
    "resolve_jwt_secret",
    "secret_bits",
]

log = logging.getLogger(__name__)

DEV_JWT_SECRET: Final = "factory-dev-only-insecure-jwt-secret-never-use-in-production"  # noqa: S105 - published on purpose
MIN_SECRET_LENGTH: Final = 32
MIN_SECRET_BITS: Final = 96  # by secret_bits, which underestimates short random strings (hex: 4 bits a character)
PLACEHOLDERS: Final = frozenset(
    {"changeme", "change-me", "change_me", "secret", "jwt-secret", "password", "please-change-me", "xxx", "todo"}
)

MAX_CONTENT: Final = 1024 * 1024  # the largest request body by default, in bytes
OUTBOX_DAYS: Final = 7  # published outbox events are deleted after this many days


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """How many failed sign-ins are free per account name and per client address (in an
    hour) before locks begin, and the longest lock (``erp_api/sql/0014_login_guard.sql``);
    how long a refused sign-in (locked, or too many at once) waits before its answer, so
    that a client sending them back to back gets one a second and not thousands."""

    free_account: int = 5
    free_address: int = 100  # an office behind one NAT address mistypes too
    max_lock_s: int = 900
    refusal_delay_s: float = 1.0


DEFAULT_LOGIN: Final = LoginPolicy()


class ErpConfig(BaseModel):
    """Everything ``create_app`` needs; built from settings and flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: SecretStr
    jwt_secret: SecretStr
    mqtt_url: SecretStr | None = Field(default=None, description="Broker of the relay and setpoints; None: neither.")
    events_url: SecretStr | None = Field(
        default=None, description="Where the relay publishes (mqtt:// or nats://); None: mqtt_url."
    )
    relay: bool = Field(default=True, description="Run the outbox relay (when there is a broker).")
    setpoint_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Wait for a device's reply.")
    access_token_ttl_s: int = Field(default=15 * 60, gt=0)
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    login: LoginPolicy = DEFAULT_LOGIN
    password_checks: int = Field(default=1, ge=1, description="Sign-ins checked at once (Argon2: 64 MiB each).")
    password_waiting: int = Field(default=16, ge=0, description="Sign-ins that may wait; more get 503.")
    outbox_days: int = Field(default=OUTBOX_DAYS, ge=1, description="Published outbox events are deleted after this.")
    max_content: int = Field(default=MAX_CONTENT, gt=0, description="The largest request body, in bytes.")


def resolve_jwt_secret(secret: str | None, *, dev: bool) -> str:
    """The secret to sign tokens with (FACTORY_JWT_SECRET, as the command read it), or
    ErpConfigError naming what to set."""
    if secret is None:
        if dev:
            log.warning("FACTORY_JWT_SECRET is not set: dev mode signs tokens with the published dev secret")
            return DEV_JWT_SECRET
        raise ErpConfigError(
            "FACTORY_JWT_SECRET is not set: set it to a random string of at least "
            f"{MIN_SECRET_LENGTH} characters (e.g. `openssl rand -base64 48`), or run with --dev"
        )
    if not dev:
        if secret == DEV_JWT_SECRET or secret.strip().lower() in PLACEHOLDERS:
            raise ErpConfigError("FACTORY_JWT_SECRET is a placeholder; set a random secret (or run with --dev)")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ErpConfigError(
                f"FACTORY_JWT_SECRET has {len(secret)} characters; at least {MIN_SECRET_LENGTH} are required"
            )
        if (bits := secret_bits(secret)) < MIN_SECRET_BITS:
            raise ErpConfigError(
                f"FACTORY_JWT_SECRET looks guessable (about {bits:.0f} bits: too few distinct characters, or too "
                f"repetitive); at least {MIN_SECRET_BITS} are required: use `openssl rand -base64 48`"
            )
    return secret


def secret_bits(secret: str) -> float:
    """A rough upper estimate of how hard ``secret`` is to guess: its length times the Shannon
    entropy of its characters, and no more than 8 bits per byte of its zlib-compressed form
    (so a repeated pattern counts about once). 48 random bytes in base64 give about 330, 16
    in hex about 115, 36 times "a" nothing."""
    counts = collections.Counter(secret)
    shannon = -sum(n * math.log2(n / len(secret)) for n in counts.values())
    packed = len(zlib.compress(secret.encode(), 9)) - 8  # less zlib's header and checksum
    return max(0.0, min(shannon, 8.0 * packed))
