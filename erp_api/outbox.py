"""Domain events: written to ``erp.outbox`` in the command's transaction, relayed to the bus.

``erp.emit`` is called by the command functions under the aggregate's row lock, so one
aggregate's events get increasing ids in the order they happened; each event carries who
caused it and in which request (``erp_api.audit``). ``OutboxRelay``
publishes unpublished rows in id order to ``factory/v1/events/{kind}`` (on MQTT QoS 1,
waiting for each PUBACK; on NATS into the ``FACTORY_EVENTS`` stream, waiting for its
acknowledgement: ``factory.bus``), then stamps ``published_at``: at least once, in order
per aggregate.
It polls every ``poll_s`` while the outbox is empty rather than waiting for NOTIFY: a
notifying transaction holds a database-wide lock through its commit, which queued every
command behind every other one.
A crash between PUBACK and the stamp means a duplicate, never a loss; consumers
deduplicate on the event's ``source`` and ``id`` (``factory.events``), and on NATS the
stream itself drops the resend (the pair is the message id). Several API processes may run a relay each; a
session advisory lock lets exactly one publish, the others stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from factory import bus, events, mqtt, nats
from factory.runtime import keep_running

__all__ = ["LEADER_LOCK", "TOPIC_PREFIX", "OutboxRelay", "envelope"]

log = logging.getLogger(__name__)

TOPIC_PREFIX: Final = events.TOPIC_PREFIX
LEADER_LOCK: Final = 0x6661637472790E01  # pg_advisory_lock key: one publishing relay per database


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    aggregate_type: str
    aggregate_id: int
    kind: str
    payload: Any
    created_at: datetime
    actor: str | None  # who caused it (NULL on events written before the audit trail)
    request_id: str | None


def envelope(source: str, row: OutboxRow) -> bytes:
    """The message on the broker: source and id (for deduplication), kind, aggregate and data."""
    aggregate = (row.aggregate_type, row.aggregate_id)
    return events.envelope(source, row.id, row.kind, aggregate=aggregate, occurred_at=row.created_at, data=row.payload,
                           actor=row.actor, request_id=row.request_id)  # fmt: skip


class OutboxRelay:
    """Publishes the outbox until cancelled; reconnects to both ends with capped backoff."""

    def __init__(
        self,
        database_url: str,
        bus_url: str,
        *,
        topic_prefix: str = TOPIC_PREFIX,
        batch: int = 500,
        idle_s: float = 5.0,
        poll_s: float = 0.25,
    ) -> None:
        self._database_url = database_url
        self._target = bus.parse_bus_url(bus_url)
        self.topic_prefix = topic_prefix
        self.batch = batch
        self.idle_s = idle_s  # how often a standby relay asks for the leader lock
        self.poll_s = poll_s  # how often the leader looks for new events when there were none
        self.published = 0
        self.leading = asyncio.Event()

    async def run(self) -> None:
        await keep_running(self._session, retry_on=(psycopg.OperationalError, mqtt.MqttError, nats.NatsError, OSError,
                                                     TimeoutError),
                           what="outbox relay", logger=log, healthy=self._was_leading)  # fmt: skip

    def _was_leading(self) -> bool:
        """The session that just ended had published: back off afresh."""
        leading = self.leading.is_set()
        self.leading.clear()
        return leading

    async def _session(self) -> None:
        connecting = psycopg.AsyncConnection.connect(self._database_url, autocommit=True, connect_timeout=10)
        async with await connecting as conn:
            await self._lead(conn)
            source = await events.source(conn, "erp")
            client = bus.event_publisher(self._target, f"erp-outbox-{uuid.uuid4().hex[:12]}")
            async with client:
                self.leading.set()
                log.info("outbox relay publishing to %s", self._target.url)
                while True:
                    if await self._drain(conn, client, source) == 0:
                        await asyncio.sleep(self.poll_s)

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Return once this relay holds the leader lock (standbys re-check every ``idle_s``)."""
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(self.idle_s * random.uniform(0.8, 1.2))

    async def _drain(self, conn: psycopg.AsyncConnection[Any], client: bus.EventPublisher, source: str) -> int:
        cur = await conn.execute(
            "SELECT id, aggregate_type, aggregate_id, kind, payload, created_at, actor, request_id FROM erp.outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT %s",
            (self.batch,),
        )
        rows = [OutboxRow(*r) for r in await cur.fetchall()]
        done: list[int] = []
        try:
            for row in rows:
                await client.publish_event(f"{self.topic_prefix}/{row.kind}", envelope(source, row),
                                           key=bus.event_key(source, row.id), timeout_s=10)  # fmt: skip
                done.append(row.id)
        finally:
            if done:
                with contextlib.suppress(psycopg.OperationalError):
                    await conn.execute("UPDATE erp.outbox SET published_at = now() WHERE id = ANY(%s)", (done,))
                self.published += len(done)
        return len(rows)
