"""Device identities: registration, revocation, rotation and the edge config bundle.

A device's MQTT password is generated here, handed out once (in the bundle's secret
file) and stored only as a hash. The hash is Mosquitto's own PBKDF2-SHA512 format
(``$7$iterations$salt$hash``), so the broker's password file is written from the
database unchanged and no plaintext ever needs to be kept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import bcrypt
import psycopg
import yaml

from factory import mqtt
from factory.mqtt import parse_mqtt_url
from factory.wire import NAME_RE

__all__ = [
    "DEFAULT_ITERATIONS",
    "EDGE_HTTP",
    "Bundle",
    "Device",
    "DeviceError",
    "ProvisioningError",
    "bcrypt_hash",
    "clear_status",
    "generate_password",
    "hash_password",
    "list_devices",
    "register_device",
    "revoke_device",
    "rotate_device",
    "status_topic",
    "username",
    "verify_password",
    "write_bundle",
]

log = logging.getLogger(__name__)
READ_BACK_S: Final = 1.0  # a retained message comes right after the subscription is granted

# Mosquitto's own default. The passwords are 256 random bits, so the iteration count is not
# what protects them; keeping it low keeps every CONNECT cheap for the broker.
DEFAULT_ITERATIONS: Final = 101
SALT_BYTES: Final = 12  # what mosquitto_passwd uses
EXAMPLE_SOURCE: Final[dict[str, Any]] = {
    "name": "example_plc",
    "kind": "modbus",
    "host": "127.0.0.1",
    "port": 5020,
    "unit": 1,
    "poll_ms": 1000,
    "tags": [{"name": "example.value", "table": "holding", "address": 0, "type": "int16"}],
}


# The agent's /healthz and /metrics, written out so the operator sees where they are: loopback
# only (a local supervisor or Prometheus agent reads them), the agent's default port.
EDGE_HTTP: Final[dict[str, Any]] = {"enabled": True, "host": "127.0.0.1", "port": 9102}


class ProvisioningError(RuntimeError):
    """Provisioning cannot do what was asked; the message says why."""


class DeviceError(ProvisioningError):
    """A device that does not exist, already exists, or has a name the contract forbids."""


@dataclass(frozen=True, slots=True)
class Device:
    site: str
    name: str
    password_hash: str
    revoked: bool

    @property
    def username(self) -> str:
        return username(self.site, self.name)


@dataclass(frozen=True, slots=True)
class Bundle:
    """What ``write_bundle`` wrote: the edge config and the secret file next to it."""

    config: Path
    secret: Path


def username(site: str, device: str) -> str:
    """The MQTT user name of a device. Names cannot contain dots, so this never collides
    across sites, nor with service accounts (which have no dot)."""
    return f"{site}.{device}"


def generate_password() -> str:
    return secrets.token_urlsafe(32)


# nats-server checks every CONNECT against the hash; the passwords are 256 random bits, so, as
# with the PBKDF2 count, a low cost is not what protects them and keeps a reconnect storm cheap.
BCRYPT_COST = 6


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """PBKDF2-HMAC-SHA512 in Mosquitto's ``$7$`` format (what ``mosquitto_passwd`` writes)."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def bcrypt_hash(password: str) -> str:
    """The bcrypt hash nats-server reads (``$2b$``). From the ``bcrypt`` package: the standard
    library's ``crypt`` is gone in Python 3.13, and not every C library's crypt(3) does bcrypt."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), 64)
    except ValueError:
        return False
    return hmac.compare_digest(expected, base64.b64decode(digest))


def _check_names(site: str, device: str) -> None:
    for what, value in (("site", site), ("device", device)):
        if not NAME_RE.fullmatch(value):
            raise DeviceError(f"{what} {value!r} must match {NAME_RE.pattern}")


async def register_device(conn: psycopg.AsyncConnection[Any], site: str, device: str) -> str:
    """Register a device (or re-activate a revoked one); returns its new password."""
    _check_names(site, device)
    password = generate_password()
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO provisioning.device (site, name, password_hash, nats_password_hash) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (site, name) DO UPDATE"
            " SET password_hash = EXCLUDED.password_hash, nats_password_hash = EXCLUDED.nats_password_hash,"
            " rotated_at = now(), revoked_at = NULL"
            " WHERE provisioning.device.revoked_at IS NOT NULL"
            " RETURNING id",
            (site, device, hash_password(password), bcrypt_hash(password)),
        )
        if await cur.fetchone() is None:
            raise DeviceError(f"device {site}/{device} is already registered (use rotate for a new password)")
    log.info("registered device %s/%s", site, device)
    return password


async def revoke_device(conn: psycopg.AsyncConnection[Any], site: str, device: str) -> None:
    """Mark the device revoked: the next broker files leave it out."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE provisioning.device SET revoked_at = coalesce(revoked_at, now())"
            " WHERE site = %s AND name = %s RETURNING id",
            (site, device),
        )
        if await cur.fetchone() is None:
            raise DeviceError(f"device {site}/{device} is not registered")
    log.info("revoked device %s/%s", site, device)


def status_topic(site: str, device: str) -> str:
    return f"factory/v1/{site}/{device}/status"


async def clear_status(mqtt_url: str, site: str, device: str, *, timeout_s: float = 10.0) -> None:
    """Clear a retired device's retained status with an empty retained message (DESIGN.md's
    topic contract): a consumer that subscribes later no longer sees it offline, and those
    subscribed now get the empty message (the alert bridge resolves its ``DeviceOffline``).
    The broker account of ``mqtt_url`` must be allowed to write the topic (the ``provision``
    service account is)."""
    _check_names(site, device)
    target, topic = parse_mqtt_url(mqtt_url), status_topic(site, device)
    what = f"could not clear the retained status of {site}/{device} on {target.url}"
    try:
        async with mqtt.connect(target, f"factory-provision-{secrets.token_hex(4)}", timeout_s=timeout_s) as session:
            await session.publish(topic, b"", qos=1, retain=True, timeout_s=timeout_s)
            # A broker drops a publish the account may not make without saying so: read it back.
            await session.subscribe(topic, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READ_BACK_S):
                    async for message in session.messages:
                        if message.retain and message.payload:
                            raise ProvisioningError(f"{what}: the broker kept it (may {target.username} write it?)")
    except (mqtt.MqttError, OSError) as exc:
        raise ProvisioningError(f"{what}: {exc}") from exc
    log.info("cleared the retained status of %s/%s", site, device)


async def rotate_device(conn: psycopg.AsyncConnection[Any], site: str, device: str) -> str:
    """A new password for an active device; returns it. The old one stops working when
    the broker reloads its password file."""
    password = generate_password()
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE provisioning.device SET password_hash = %s, nats_password_hash = %s, rotated_at = now()"
            " WHERE site = %s AND name = %s AND revoked_at IS NULL RETURNING id",
            (hash_password(password), bcrypt_hash(password), site, device),
        )
        if await cur.fetchone() is None:
            raise DeviceError(f"device {site}/{device} is not registered or is revoked")
    log.info("rotated the password of device %s/%s", site, device)
    return password


async def list_devices(conn: psycopg.AsyncConnection[Any], *, include_revoked: bool = False) -> list[Device]:
    cur = await conn.execute(
        "SELECT site, name, password_hash, revoked_at IS NOT NULL FROM provisioning.device"
        " WHERE %s OR revoked_at IS NULL ORDER BY site, name",
        (include_revoked,),
    )
    return [Device(str(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in await cur.fetchall()]


def _write_private(path: Path, text: str) -> None:
    """Create the file with mode 0600 from the start, so the secret is never world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def write_bundle(
    out: Path,
    site: str,
    device: str,
    password: str,
    *,
    mqtt_url: str,
    ca_file: Path | None = None,
    sources: list[dict[str, Any]] | None = None,
) -> Bundle:
    """Write ``{device}.yaml`` (DESIGN.md edge config), ``{device}.secret`` (0600) and, for
    TLS, ``ca.pem`` into ``out``. Paths in the YAML are relative to it, so the folder can be
    copied to the device as a whole."""
    target = parse_mqtt_url(mqtt_url)
    if target.username or target.password:
        raise ProvisioningError("the broker URL for a device must not carry credentials")
    out.mkdir(parents=True, exist_ok=True)
    secret = out / f"{device}.secret"
    _write_private(secret, password + "\n")
    mqtt: dict[str, Any] = {"url": mqtt_url, "username": username(site, device), "password_file": secret.name}
    if ca_file is not None:
        (out / "ca.pem").write_bytes(ca_file.read_bytes())
        mqtt["ca_file"] = "ca.pem"
    elif target.tls:
        log.warning("%s uses TLS but no CA file was given: the device will trust the system CAs", mqtt_url)
    config = {
        "site": site,
        "device": device,
        "mqtt": mqtt,
        "buffer": {"path": "/var/lib/factory-edge/buffer.db", "max_mb": 512},
        "publish": {"max_points": 500, "max_interval_ms": 1000},
        "http": EDGE_HTTP,
        "sources": sources or [EXAMPLE_SOURCE],
    }
    header = (
        f"# Edge config for {site}/{device}, written by `factory provision device`.\n"
        "# Replace the sources with the device's equipment (docs/edge-config.md); keep the secret\n"
        f"# file {secret.name} next to this file, readable only by the agent's user.\n"
        f"# /healthz and /metrics answer on http://{EDGE_HTTP['host']}:{EDGE_HTTP['port']} (off: http.enabled false).\n"
    )
    path = out / f"{device}.yaml"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return Bundle(config=path, secret=secret)
