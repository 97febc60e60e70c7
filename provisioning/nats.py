"""A NATS cluster's server configs, past one Mosquitto: one file per node, with cluster routes,
JetStream, the MQTT listener devices connect to, and users with the same topic permissions
the Mosquitto ACL gives (``provisioning.broker``).

NATS maps an MQTT topic to a subject (``/`` becomes ``.``), so a device that may publish
``factory/v1/mill-a/pi-1/telemetry`` over MQTT 3.1.1 is a user allowed to publish the subject
``factory.v1.mill-a.pi-1.telemetry``. Services connect with the NATS protocol: ingest reads the
``FACTORY_DEVICES`` stream through its durable consumer, so it is given that stream's
JetStream API and nothing of the others; the ERP's relay and analytics publish into
``FACTORY_EVENTS``, and the alert bridge reads it through its consumer ``alerts``. The
streams' configs are written beside the server configs (``streams/*.json``, for ``nats
stream add --config``); ingest, the event publishers and the bridge also create or update
their stream themselves at start.

Passwords are bcrypt hashes (what nats-server reads); the platform's other password files keep
Mosquitto's PBKDF2 format, so a NATS identity's hash is made from its password when it is
created or rotated.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg

from factory.nats import DEVICES, EVENTS
from factory.wire import MAX_BATCH_BYTES
from provisioning.broker import DEVICE_KINDS, ensure_service_accounts

__all__ = [
    "NATS_SERVICES",
    "NatsNode",
    "NatsUser",
    "device_user",
    "parse_node",
    "provision_nats",
    "render_nats_conf",
    "service_user",
    "write_nats_files",
]

log = logging.getLogger(__name__)

DEVICES_STREAM: Final = "FACTORY_DEVICES"
EVENTS_STREAM: Final = "FACTORY_EVENTS"
ALERTS_DURABLE: Final = "alerts"  # the alert bridge's consumer (alerting.bridge.DURABLE; a test keeps them equal)


def _subject(topic: str) -> str:
    return topic.replace("/", ".").replace("+", "*").replace("#", ">")


def _stream_admin(stream: str) -> tuple[str, ...]:
    """Creating the stream, or bringing it to the platform's config (``factory.nats.ensure_stream``):
    every publisher and reader does so at start, so they may start in any order."""
    return f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}"


def _stream_api(stream: str, durable: str) -> tuple[str, ...]:
    """What a durable pull consumer's reader needs of the JetStream API for one stream
    (``durable`` ``*``: any consumer of it)."""
    return (
        *_stream_admin(stream),
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}", f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}", f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NatsUser:
    name: str
    password_hash: str  # bcrypt
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


# What each service may do, as subjects (publish, subscribe): the same grants as
# ``provisioning.broker.SERVICES``, with ingest and the alert bridge reading their streams
# through their durable consumers instead of subscribing to the topics. The event publishers
# publish the events (the stream's acknowledgement comes back on their ``_INBOX``); the
# bridge publishes no event. JetStream grants a reader a stream and a consumer name, not a
# list of subjects: the bridge's consumer could be made to read every event kind, where
# Mosquitto's ACL lets it read only those it alerts on.
NATS_SERVICES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "ingest": ((*_stream_api(DEVICES_STREAM, "*"), _subject("factory/v1/+/+/ack")), ("_INBOX.>",)),
    "erp-relay": (
        (_subject("factory/v1/events/#"), _subject("factory/v1/+/+/cmd"), *_stream_admin(EVENTS_STREAM)),
        (_subject("factory/v1/+/+/cmd/reply"), "_INBOX.>"),
    ),
    "analytics": ((_subject("factory/v1/events/#"), *_stream_admin(EVENTS_STREAM)), ("_INBOX.>",)),
    "alerts": (_stream_api(EVENTS_STREAM, ALERTS_DURABLE), ("_INBOX.>",)),
    "commands": ((_subject("factory/v1/+/+/cmd"),), (_subject("factory/v1/+/+/cmd/reply"), "_INBOX.>")),
}


def device_user(site: str, device: str, password_hash: str) -> NatsUser:
    """A device over MQTT: publish its own telemetry, status, tags and write-back replies;
    subscribe to its own ``cmd`` and ``ack``. (``$MQTT.sub.>`` is where NATS's MQTT layer
    delivers a QoS 1 subscription from its JetStream consumer.)"""
    base = f"factory.v1.{site}.{device}"
    return NatsUser(
        f"{site}.{device}", password_hash,
        publish=tuple(f"{base}.{kind}" for kind in (*DEVICE_KINDS, "cmd.reply")),
        subscribe=(f"{base}.cmd", f"{base}.ack"),
    )  # fmt: skip


def service_user(name: str, password_hash: str) -> NatsUser:
    publish, subscribe = NATS_SERVICES[name]
    return NatsUser(name, password_hash, publish, subscribe)


@dataclass(frozen=True, slots=True)
class NatsNode:
    """One server of the cluster: its name and where it listens."""

    name: str
    host: str
    client_port: int = 4222
    cluster_port: int = 6222
    mqtt_port: int = 1883
    monitor_port: int | None = None
    store_dir: Path = Path("/var/lib/nats")

    @property
    def route(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


def _quote(text: str) -> str:
    return json.dumps(text)


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


def render_users(users: Sequence[NatsUser]) -> str:
    """The ``authorization`` block: only explicit grants, nothing for anyone else."""
    lines = ["authorization {", "  users = ["]
    for user in users:
        lines += [
            "    {",
            f"      user: {_quote(user.name)}",
            f"      password: {_quote(user.password_hash)}",
            f"      permissions: {{ publish: {_list(user.publish)}, subscribe: {_list(user.subscribe)} }}",
            "    }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def render_nats_conf(
    node: NatsNode, nodes: Sequence[NatsNode], *, cluster: str = "factory", users_file: Path | None = None
) -> str:
    """One node's config. Every node lists every other node's route; JetStream and MQTT need
    a ``server_name`` unique in the cluster. Without ``users_file`` nothing is authenticated
    (a closed test network only)."""
    routes = [other.route for other in nodes if other.name != node.name]
    lines = [
        "# nats-server for the factory platform, written by `factory provision nats`.",
        f"server_name: {_quote(node.name)}",
        f"listen: {_quote(f'{node.host}:{node.client_port}')}",
        f"max_payload: {MAX_BATCH_BYTES + 1024}",
    ]
    if node.monitor_port is not None:
        lines.append(f"http: {_quote(f'{node.host}:{node.monitor_port}')}")
    lines += [
        "jetstream {",
        f"  store_dir: {_quote(str(node.store_dir))}",
        "}",
        "mqtt {",
        f"  listen: {_quote(f'{node.host}:{node.mqtt_port}')}",
        "  # An unacknowledged QoS 1 message goes to the device again after this long.",
        '  ack_wait: "30s"',
        "  max_ack_pending: 1000",
        f"  stream_replicas: {min(3, len(nodes))}",
        "}",
    ]
    if len(nodes) > 1:
        lines += [
            "cluster {",
            f"  name: {_quote(cluster)}",
            f"  listen: {_quote(f'{node.host}:{node.cluster_port}')}",
            f"  routes: {_list(routes)}",
            "}",
        ]
    if users_file is not None:
        lines.append(f"include {_quote(users_file.name)}  # nats-server reads it beside this file")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class NatsFiles:
    confs: list[Path]
    users: Path | None
    streams: list[Path] = field(default_factory=list)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_nats_files(
    out: Path, nodes: Sequence[NatsNode], users: Sequence[NatsUser] | None, streams: dict[str, object]
) -> NatsFiles:
    """``{node}.conf`` per node, ``users.conf`` (mode 0600) that each includes, and
    ``streams/{name}.json`` per stream."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    users_file: Path | None = None
    if users is not None:
        users_file = out / "users.conf"
        _write(users_file, render_users(users), 0o600)
    confs = []
    for node in nodes:
        path = out / f"{node.name}.conf"
        _write(path, render_nats_conf(node, nodes, users_file=users_file), 0o644)
        confs.append(path)
    (out / "streams").mkdir(exist_ok=True)
    written = []
    for name, config in streams.items():
        path = out / "streams" / f"{name}.json"
        _write(path, json.dumps(config, indent=2, default=str) + "\n", 0o644)
        written.append(path)
    return NatsFiles(confs, users_file, written)


def parse_node(text: str, store_dir: Path) -> NatsNode:
    """``NAME@HOST[:CLIENT[:CLUSTER[:MQTT]]]`` (ports default 4222, 6222, 1883)."""
    name, at, rest = text.partition("@")
    parts = rest.split(":")
    if not at or not name or not parts[0] or len(parts) > 4 or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"expected NAME@HOST[:CLIENT[:CLUSTER[:MQTT]]], got {text!r}")
    ports = [int(p) for p in parts[1:]] + [4222, 6222, 1883][len(parts) - 1 :]
    return NatsNode(name, parts[0], ports[0], ports[1], ports[2], store_dir=store_dir)


async def provision_nats(
    conn: psycopg.AsyncConnection[Any], out: Path, nodes: Sequence[NatsNode]
) -> tuple[NatsFiles, dict[str, Path], int]:
    """Every node's config, the users (active devices and services with a NATS hash) and
    the streams' configs; returns the files, new services' secret files, and how many
    identities still lack a NATS hash (made before it existed: rotate them)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    secrets: dict[str, Path] = {}
    for name, password in (await ensure_service_accounts(conn)).items():
        secrets[name] = out / f"{name}.secret"
        _write(secrets[name], password + "\n", 0o600)
    users: list[NatsUser] = []
    missing = 0
    cur = await conn.execute("SELECT name, nats_password_hash FROM provisioning.service_account ORDER BY name")
    for name, digest in await cur.fetchall():
        if name in NATS_SERVICES and digest:
            users.append(service_user(str(name), str(digest)))
        elif name in NATS_SERVICES:
            missing += 1
    cur = await conn.execute(
        "SELECT site, name, nats_password_hash FROM provisioning.device WHERE revoked_at IS NULL ORDER BY site, name"
    )
    for site, name, digest in await cur.fetchall():
        if digest:
            users.append(device_user(str(site), str(name), str(digest)))
        else:
            missing += 1
    replicas = min(3, len(nodes))
    streams: dict[str, object] = {spec.name: spec.as_json(replicas) for spec in (DEVICES, EVENTS)}
    files = write_nats_files(out, nodes, users, streams)
    log.info("NATS files in %s: %d nodes, %d users (%d without a NATS hash)", out, len(nodes), len(users), missing)
    return files, secrets, missing
