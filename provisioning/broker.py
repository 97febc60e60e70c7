"""Mosquitto's password file, ACL file and config, written from the registered identities.

Devices may publish only their own topics (``factory/v1/{site}/{device}/...``) and
subscribe only to their own ``cmd`` and ``ack`` topics; each cloud service gets exactly what
it uses; anonymous access is off. Mosquitto re-reads the files on SIGHUP, so revoking a
device is ``factory provision revoke`` + ``factory provision broker`` + ``kill -HUP``.

Devices and services log in on different listeners, each with its own password and ACL
files (``per_listener_settings``): a device's credentials open nothing on the services'
listener. On the devices' listeners the client id is the user name
(``use_username_as_clientid``), so no device can take over another identity's session
(connecting with ingest's client id would otherwise wipe ingest's queue). Services keep the
client ids they choose: several ingest workers share one account.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg

from factory.wire import MAX_BATCH_BYTES
from provisioning.devices import (
    Device,
    ProvisioningError,
    bcrypt_hash,
    generate_password,
    hash_password,
    list_devices,
)

__all__ = [
    "MOSQUITTO_LIMITS",
    "SERVICES",
    "BrokerFiles",
    "ServiceAccess",
    "TlsFiles",
    "ensure_service_accounts",
    "parse_listen",
    "render_acl",
    "render_conf",
    "render_passwd",
    "rotate_service",
    "write_broker_files",
]

log = logging.getLogger(__name__)
DEVICE_KINDS: Final = ("telemetry", "status", "tags")
ALERT_EVENT_KINDS: Final = ("anomaly", "work_order.created", "work_order.completed", "work_order.cancelled",
                            "inventory.received", "inventory.adjusted", "inventory.transferred",
                            "stock.reorder_crossed")  # fmt: skip
HOST_PORT_RE: Final = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$")

# Mosquitto's defaults (max_queued_messages 1000, max_inflight_messages 20) silently
# drop QoS 1 messages for a slow or absent persistent subscriber such as ingest during
# a restart. We bound the queue by bytes instead of by count. No message the platform
# sends is larger than a telemetry batch (a tag catalog is compressed to fit), so nothing
# larger is accepted: one device's junk fills the queue for ingest four times slower.
MOSQUITTO_LIMITS: Final = f"""\
message_size_limit {MAX_BATCH_BYTES}
max_queued_messages 0
max_queued_bytes 1073741824
max_inflight_messages 1000
max_inflight_bytes 0
persistent_client_expiration 14d
"""


@dataclass(frozen=True, slots=True)
class ServiceAccess:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


# One account per cloud service. Mosquitto checks the filter without its `$share/group/`
# prefix, so these also cover shared subscriptions of several ingest workers.
SERVICES: Final[dict[str, ServiceAccess]] = {
    # ingest also tells each device which of its batches are stored (the device's `ack` topic),
    # and records every write-back reply (`cmd/reply`); it reads no request (`cmd`)
    "ingest": ServiceAccess(
        read=(*(f"factory/v1/+/+/{kind}" for kind in DEVICE_KINDS), "factory/v1/+/+/cmd/reply"),
        write=("factory/v1/+/+/ack",),
    ),
    # the ERP: its outbox relay publishes events; its setpoints (POST /api/v1/setpoints) send
    # write-back requests and read their replies
    "erp-relay": ServiceAccess(read=("factory/v1/+/+/cmd/reply",), write=("factory/v1/events/#", "factory/v1/+/+/cmd")),
    "analytics": ServiceAccess(write=("factory/v1/events/#",)),
    # the alert bridge (alerting.bridge): reads the event kinds that raise or resolve alerts and
    # the devices' retained status, publishes nothing; a test keeps this equal to what it subscribes to
    "alerts": ServiceAccess(
        read=(*(f"factory/v1/events/{kind}" for kind in ALERT_EVENT_KINDS), "factory/v1/+/+/status")
    ),
    # `factory provision revoke`: clears a retired device's retained status (an empty retained message)
    # and reads it back (a broker drops a publish it refuses without a word)
    "provision": ServiceAccess(read=("factory/v1/+/+/status",), write=("factory/v1/+/+/status",)),
    # whatever sends write-back requests to devices (an operator console, the ERP)
    "commands": ServiceAccess(read=("factory/v1/+/+/cmd/reply",), write=("factory/v1/+/+/cmd",)),
}


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    conf: Path
    passwd: Path  # the devices' (and their ACL next)
    acl: Path
    service_passwd: Path
    service_acl: Path
    devices: int
    services: int
    new_service_secrets: dict[str, Path] = field(default_factory=dict)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:1883`` for IPv6) into its parts."""
    match = HOST_PORT_RE.match(value)
    if not match or not 0 < int(match.group("port")) < 65536:
        raise ProvisioningError(f"listen address {value!r} must be HOST:PORT")
    return match.group("v6") or match.group("host"), int(match.group("port"))


async def ensure_service_accounts(conn: psycopg.AsyncConnection[Any]) -> dict[str, str]:
    """Create the service accounts that do not exist yet; returns their new passwords."""
    created: dict[str, str] = {}
    async with conn.transaction():
        for name in SERVICES:
            password = generate_password()
            cur = await conn.execute(
                "INSERT INTO provisioning.service_account (name, password_hash, nats_password_hash)"
                " VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, hash_password(password), bcrypt_hash(password)),
            )
            if await cur.fetchone() is not None:
                created[name] = password
    return created


async def rotate_service(conn: psycopg.AsyncConnection[Any], name: str) -> str:
    if name not in SERVICES:
        raise ProvisioningError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    password = generate_password()
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE provisioning.service_account SET password_hash = %s, nats_password_hash = %s,"
            " rotated_at = now() WHERE name = %s RETURNING name",
            (hash_password(password), bcrypt_hash(password), name),
        )
        if await cur.fetchone() is None:
            raise ProvisioningError(f"service account {name!r} does not exist yet (run `provision broker`)")
    return password


async def _service_hashes(conn: psycopg.AsyncConnection[Any]) -> dict[str, str]:
    cur = await conn.execute("SELECT name, password_hash FROM provisioning.service_account ORDER BY name")
    return {str(r[0]): str(r[1]) for r in await cur.fetchall() if r[0] in SERVICES}


def render_passwd(devices: list[Device], services: dict[str, str]) -> str:
    """One listener's password file: pass the devices, or the services."""
    lines = [f"{name}:{digest}" for name, digest in sorted(services.items())]
    lines += [f"{d.username}:{d.password_hash}" for d in devices if not d.revoked]
    return "\n".join(lines) + "\n"


def render_acl(devices: list[Device], services: dict[str, str]) -> str:
    """One listener's ACL file (pass the devices, or the services). Only explicit grants:
    anything not listed is denied (and no `pattern` lines, so a user name can never widen
    its own access)."""
    blocks = ["# Written by `factory provision broker`; regenerate rather than edit."]
    for name in sorted(services):
        access = SERVICES[name]
        lines = [f"user {name}"]
        lines += [f"topic read {t}" for t in access.read]
        lines += [f"topic write {t}" for t in access.write]
        blocks.append("\n".join(lines))
    for device in devices:
        if device.revoked:
            continue
        base = f"factory/v1/{device.site}/{device.name}"
        lines = [f"user {device.username}"]
        lines += [f"topic write {base}/{kind}" for kind in (*DEVICE_KINDS, "cmd/reply")]
        lines += [f"topic read {base}/cmd", f"topic read {base}/ack"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def render_conf(
    out: Path,
    listen: tuple[str, int],
    *,
    run_as: str,
    data_dir: Path | None,
    device_listen: tuple[str, int] | None = None,
    tls_listen: tuple[str, int] | None = None,
    tls: TlsFiles | None = None,
) -> str:
    """The services' listener at ``listen``; the devices' at ``device_listen`` (plain) and,
    with ``tls``, at ``tls_listen`` (default 0.0.0.0:8883)."""

    def listener(where: tuple[str, int], passwd: str, acl: str, *, devices: bool) -> list[str]:
        lines = [f"listener {where[1]} {where[0]}", "allow_anonymous false",
                 f"password_file {out / passwd}", f"acl_file {out / acl}"]  # fmt: skip
        return [*lines, "use_username_as_clientid true"] if devices else lines

    lines = [
        "# Mosquitto 2 for the factory platform, written by `factory provision broker`.",
        "per_listener_settings true",
        f"user {run_as}",
        "",
        "# Cloud services (ingest, ERP relay, analytics, alerts, commands).",
        *listener(listen, "services.passwd", "services.acl", devices=False),
    ]
    if device_listen is not None:
        lines += ["", "# Devices; the client id is the user name.",
                  *listener(device_listen, "passwd", "acl", devices=True)]  # fmt: skip
    if tls is not None:
        tls_where = tls_listen or ("0.0.0.0", 8883)  # noqa: S104 - devices on the plant network connect here
        lines += ["", "# Devices over TLS; the client id is the user name.",
                  *listener(tls_where, "passwd", "acl", devices=True),
                  f"cafile {tls.cafile}", f"certfile {tls.certfile}", f"keyfile {tls.keyfile}",
                  "tls_version tlsv1.2"]  # fmt: skip
    lines.append("")
    if data_dir is not None:
        lines += ["persistence true", f"persistence_location {data_dir}/", "autosave_interval 60"]
    lines += ["# Queue and message size limits: never drop QoS 1 messages for ingest."]
    return "\n".join(lines) + "\n" + MOSQUITTO_LIMITS


TLS_SNIPPET: Final = """\
# TLS listener for devices on the plant network (docs/provisioning.md). Pass
# --tls-listen/--cafile/--certfile/--keyfile to `factory provision broker` to have it in
# mosquitto.conf. Devices then use mqtts://HOST:8883 with ca_file set.
listener 8883 0.0.0.0
allow_anonymous false
password_file passwd
acl_file acl
use_username_as_clientid true
cafile /etc/mosquitto/certs/ca.pem
certfile /etc/mosquitto/certs/broker.pem
keyfile /etc/mosquitto/certs/broker.key
tls_version tlsv1.2
"""


def _write(path: Path, text: str, mode: int) -> None:
    """Write beside the target, then rename: Mosquitto reloading on SIGHUP never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


async def write_broker_files(
    conn: psycopg.AsyncConnection[Any],
    out: Path,
    listen: tuple[str, int],
    *,
    run_as: str | None = None,
    data_dir: Path | None = None,
    device_listen: tuple[str, int] | None = None,
    tls_listen: tuple[str, int] | None = None,
    tls: TlsFiles | None = None,
) -> BrokerFiles:
    """Write ``mosquitto.conf``, the devices' ``passwd`` and ``acl``, the services'
    ``services.passwd`` and ``services.acl``, and ``tls.conf.example`` into ``out``.

    Service accounts created now get their password in ``{service}.secret`` (mode 0600),
    the only place it ever appears; existing accounts keep theirs."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    secrets: dict[str, Path] = {}
    for name, password in (await ensure_service_accounts(conn)).items():
        secrets[name] = out / f"{name}.secret"
        _write(secrets[name], password + "\n", 0o600)
    devices = await list_devices(conn)
    services = await _service_hashes(conn)
    files = BrokerFiles(out / "mosquitto.conf", out / "passwd", out / "acl", out / "services.passwd",
                        out / "services.acl", len(devices), len(services), secrets)  # fmt: skip
    _write(files.passwd, render_passwd(devices, {}), 0o600)
    _write(files.acl, render_acl(devices, {}), 0o600)
    _write(files.service_passwd, render_passwd([], services), 0o600)
    _write(files.service_acl, render_acl([], services), 0o600)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    conf = render_conf(out, listen, run_as=run_as or getpass.getuser(), data_dir=data_dir,
                       device_listen=device_listen, tls_listen=tls_listen, tls=tls)  # fmt: skip
    _write(files.conf, conf, 0o644)
    _write(out / "tls.conf.example", TLS_SNIPPET, 0o644)
    log.info("broker files in %s: %d devices, %d services", out, files.devices, files.services)
    return files
