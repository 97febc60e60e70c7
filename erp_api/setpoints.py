"""Setpoints: the ERP sends a write-back request to a device and records what came of it.

The request and its reply follow the write-back contract (``factory.commands``): a request on
``factory/v1/{site}/{device}/cmd`` with a fresh id and ``by`` = the caller, the device's
answer on ``.../cmd/reply``. Each request has a connection of its own (setpoints are rare):
subscribe to the reply topic, then publish, then wait for the reply with that id, the whole
exchange bounded by ``timeout_s``, then disconnect. Any number of API processes can do this
side by side: each listens for its own request's id.

Every request, whatever came of it, is one row of the audit trail (``erp.audit``, action
``setpoint.<outcome>``, entity ``setpoint`` ``site/device/tag``) with the value the tag had
(its latest stored sample, from ``telemetry.sample``) and the value asked for.

With an Idempotency-Key the key is claimed before anything is sent, in a transaction of its
own (``erp_api.idempotency.claim_outside``: the wait for the device holds no transaction),
and in the transaction of the audit row the answer is recorded under it when the device
answered (written or refused: a retry replays it), or the key is released when nothing was
written (no broker, no reply: a retry asks again). A claim left by a process that stopped
while it waited is taken over after ``stale_after`` (the setpoint timeout and a margin).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import psycopg
from fastapi import Response
from psycopg_pool import AsyncConnectionPool

from erp_api import idempotency
from erp_api.audit import Actor, note
from erp_api.db import Conn
from factory import mqtt
from factory.commands import CommandError, WriteReply, WriteRequest, decode_reply, encode_request
from factory.wire import TopicKind, topic

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "STALE_MARGIN_S",
    "OldValue",
    "Outcome",
    "SetpointSender",
    "Target",
    "latest_sample",
    "new_request",
    "outcome_of",
    "record",
    "replied_at",
    "stale_after",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 10.0
# How much longer than the setpoint timeout a claimed Idempotency-Key without an answer is
# held for its request: the database work around the wait (pool, audit row) fits in it.
STALE_MARGIN_S: Final = 60.0
Outcome = Literal["written", "refused", "timeout", "unsent"]  # refused: with the device's error code
KEPT: Final[frozenset[Outcome]] = frozenset({"written", "refused"})  # the device answered: replayed
WriteValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Target:
    """Which tag of which device."""

    site: str
    device: str
    tag: str

    @property
    def entity_id(self) -> str:
        return f"{self.site}/{self.device}/{self.tag}"


@dataclass(frozen=True, slots=True)
class OldValue:
    """The tag's latest stored sample: what it was before the write, as far as the platform knows."""

    value: float | None
    at: datetime


class SetpointSender:
    """Sends one request per call over a short-lived broker connection and waits for its reply."""

    def __init__(self, mqtt_url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._target = mqtt.parse_mqtt_url(mqtt_url)
        self.timeout_s = timeout_s

    async def send(self, target: Target, request: WriteRequest) -> WriteReply | None:
        """The device's reply, or None when none came within ``timeout_s`` of the start (or
        the connection was lost once the request was out: the device may have it).

        ``mqtt.MqttError`` when the broker could not be reached or refused us (nothing was sent).
        """
        sent = False
        client = mqtt.connect(self._target, f"erp-setpoint-{uuid.uuid4().hex[:12]}", timeout_s=self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s), client as session:
                await session.subscribe(topic(target.site, target.device, TopicKind.CMD_REPLY), qos=1)
                await session.publish(topic(target.site, target.device, TopicKind.CMD), encode_request(request), qos=1)
                sent = True
                async for message in session.messages:
                    if (reply := _reply(message.payload)) is not None and reply.id == request.id:
                        return reply
        except TimeoutError:
            if not sent:
                lost = f"the broker did not take the request within {self.timeout_s:g}s"
                raise mqtt.ConnectionLostError(lost) from None
            return None
        except mqtt.MqttError as exc:
            if not sent:
                raise
            log.warning("setpoint %s: the broker connection ended before the reply: %s", request.id, exc)
            return None
        log.warning("setpoint %s: the broker closed the connection before the reply", request.id)
        return None


def _reply(payload: Any) -> WriteReply | None:
    """Someone else's reply, or a broken one, on the device's topic is not ours: skipped."""
    if not isinstance(payload, bytes | bytearray):
        return None
    try:
        return decode_reply(bytes(payload))
    except CommandError as exc:
        log.warning("setpoint: an unreadable reply skipped: %s", exc)
        return None


def new_request(target: Target, value: WriteValue, actor: Actor) -> WriteRequest:
    """A request with a fresh id (never the caller's X-Request-Id: a client that repeats its
    request id must still get a request the device and ingest tell apart)."""
    return WriteRequest(id=uuid.uuid4().hex, tag=target.tag, value=value, by=actor.name)


def stale_after(timeout_s: float) -> timedelta:
    """How long a claimed key without an answer belongs to its request (then it is taken over)."""
    return timedelta(seconds=timeout_s + STALE_MARGIN_S)


async def latest_sample(conn: Conn, target: Target) -> OldValue | None:
    """The tag's latest stored sample, None when there is none (or no telemetry here at all)."""
    try:
        cur = await conn.execute(
            "SELECT s.value, s.time FROM telemetry.device d"
            " JOIN telemetry.tag t ON t.device_id = d.id AND t.name = %s"
            " JOIN telemetry.sample s ON s.tag_id = t.id"
            " WHERE d.site = %s AND d.name = %s ORDER BY s.time DESC LIMIT 1",
            (target.tag, target.site, target.device),
        )
        row = await cur.fetchone()
    except psycopg.errors.UndefinedTable:  # an ERP whose database has no telemetry schema
        return None
    return None if row is None else OldValue(value=row[0], at=row[1].astimezone(UTC))


async def record(
    pool: AsyncConnectionPool[Any], actor: Actor, target: Target, request: WriteRequest, *, old: OldValue | None,
    outcome: Outcome, reply: WriteReply | None = None, reason: str | None = None,
    claim: idempotency.Claim | None = None, answer: Response | None = None,
) -> None:  # fmt: skip
    """The request's row in the audit trail: who, which tag, old and new value, what came of
    it; and in the same transaction, under ``claim``, the ``answer`` when the device answered
    (``KEPT``), else the key released."""
    detail: dict[str, Any] = {
        "command_id": request.id, "site": target.site, "device": target.device, "tag": target.tag,
        "value": request.value, "old": None if old is None else {"value": old.value, "at": old.at.isoformat()},
        "outcome": outcome, "error": reply.error if reply else None,
        "reason": reply.reason if reply and reply.reason else reason,
        "replied_at": replied_at(reply).isoformat() if reply else None,
    }  # fmt: skip
    async with pool.connection() as conn, conn.transaction():
        await note(conn, actor, f"setpoint.{outcome}", ("setpoint", target.entity_id), detail)
        if claim is None:
            return
        if outcome in KEPT and answer is not None:
            ours = await idempotency.keep(conn, claim, answer)
        else:
            ours = await idempotency.release(conn, claim)
        if not ours:
            log.warning("setpoint %s: its Idempotency-Key was taken over as stale before it was answered", request.id)


def replied_at(reply: WriteReply) -> datetime:
    return datetime.fromtimestamp(reply.ts / 1000, UTC)


def outcome_of(reply: WriteReply | None) -> Outcome:
    if reply is None:
        return "timeout"
    return "written" if reply.ok else "refused"
