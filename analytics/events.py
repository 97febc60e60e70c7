"""Relaying ``analytics.outbox`` to the bus: ``factory/v1/events/{kind}``, in id order; on
MQTT QoS 1, on NATS into the ``FACTORY_EVENTS`` stream (``factory.bus``).

Rows are stamped ``published_at`` only after the broker's PUBACK (the stream's
acknowledgement on NATS), so a crash in between repeats an event rather than losing it;
consumers deduplicate on its ``source`` and ``id``, and on NATS the stream drops the
resend (the pair is the message id). The message has the ERP's envelope (``factory.events``). Only one scheduler
instance runs the anomaly job at a time (its advisory lock), so one relay drains the
outbox at a time.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any, Final

import psycopg

from factory import bus, events, mqtt, nats

__all__ = ["OUTBOX_DAYS", "TOPIC_PREFIX", "EventRelay", "envelope", "purge_published"]

log = logging.getLogger(__name__)

TOPIC_PREFIX: Final = events.TOPIC_PREFIX
OUTBOX_DAYS: Final = 7  # published events are kept this long for inspection, as the ERP's are


async def purge_published(conn: psycopg.AsyncConnection[Any], days: int = OUTBOX_DAYS) -> int:
    """Delete events published more than ``days`` ago; unpublished ones are never deleted."""
    cur = await conn.execute(
        "DELETE FROM analytics.outbox WHERE published_at < now() - make_interval(days => %s)", (days,)
    )
    if cur.rowcount:
        log.info("purged %d published events older than %d days", cur.rowcount, days)
    return cur.rowcount


def envelope(source: str, event_id: int, kind: str, occurred_at: datetime, data: dict[str, Any]) -> bytes:
    aggregate = ("asset", f"{data.get('site', '')}/{data.get('asset', '')}")
    return events.envelope(source, event_id, kind, aggregate=aggregate, occurred_at=occurred_at, data=data)


class EventRelay:
    """Holds one connection to the bus across runs and reconnects after an error."""

    def __init__(self, bus_url: str, *, batch: int = 500, client_id: str | None = None) -> None:
        self._target = bus.parse_bus_url(bus_url)
        self._client_id = client_id or f"analytics-{uuid.uuid4().hex[:12]}"
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: bus.EventPublisher | None = None
        self.batch = batch
        self.published = 0
        self._source: str | None = None

    async def _connected(self) -> bus.EventPublisher:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(bus.event_publisher(self._target, self._client_id))
            self._stack = stack
        return self._client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(mqtt.MqttError, nats.NatsError, OSError):
                await stack.aclose()

    async def relay(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Publish what is pending; raises (after closing the connection) if the broker fails."""
        total = 0
        if self._source is None:
            self._source = await events.source(conn, "analytics")
        while True:
            cur = await conn.execute(
                "SELECT id, kind, created_at, payload FROM analytics.outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT %s",
                (self.batch,),
            )
            rows = await cur.fetchall()
            if not rows:
                return total
            done: list[int] = []
            try:
                client = await self._connected()
                for event_id, kind, created_at, payload in rows:
                    topic = f"{TOPIC_PREFIX}/{kind}"
                    await client.publish_event(topic, envelope(self._source, event_id, kind, created_at, payload),
                                               key=bus.event_key(self._source, event_id), timeout_s=10)  # fmt: skip
                    done.append(event_id)
            except (mqtt.MqttError, nats.NatsError, OSError, TimeoutError):
                await self.close()
                raise
            finally:
                if done:
                    await conn.execute("UPDATE analytics.outbox SET published_at = now() WHERE id = ANY(%s)", (done,))
                    self.published += len(done)
                    total += len(done)
                    log.debug("published %d anomaly events", len(done))
