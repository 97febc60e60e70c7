"""Publishes buffered points as telemetry batches (QoS 1), with birth, death and the tag catalog.

Two lanes read the durable buffer. Live points (buffered since this connection began) go
out as soon as a batch is full or ``max_interval_ms`` old. Points that were already
buffered when the connection began — an outage's backlog — are drained in order with
``hist: true`` at a bounded rate, only when no live batch is waiting, so live data keeps
flowing during a long catch-up. Points leave the buffer only after the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import aiomqtt

from edge_agent.buffer import Buffer, Stored
from edge_agent.errors import stop_if_cancelled
from factory import __version__
from factory.mqtt import MqttTarget, Will, connect
from factory.wire import (
    MAX_POINTS_BYTES,
    Status,
    TagInfo,
    TopicKind,
    batch_payload,
    encode_catalog,
    encode_status,
    topic,
)

__all__ = ["Publisher", "PublisherStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublisherStats:
    published_points: int = 0
    published_batches: int = 0
    hist_points: int = 0
    reconnects: int = 0


class Publisher:
    def __init__(
        self,
        *,
        site: str,
        device: str,
        target: MqttTarget,
        catalog: list[TagInfo],
        buffer: Buffer,
        max_points: int,
        max_interval_ms: int,
        drain_points_per_s: int,
    ) -> None:
        self.site, self.device = site, device
        self._telemetry_topic = topic(site, device, TopicKind.TELEMETRY)
        self._target = target
        self._catalog = catalog
        self.buffer = buffer
        self._max_points = max_points
        self._max_interval = max_interval_ms / 1000
        self._drain_rate = drain_points_per_s
        self._changed = asyncio.Event()
        self._live_pending = 0  # an estimate, to send full batches early
        self._first_unsent: float | None = None  # monotonic time of the oldest unsent live point
        self._live_after = 0
        self._hist_after = 0
        self._hist_upto = 0
        self._next_hist_at = 0.0
        self.stats = PublisherStats()
        self.connected = False

    @property
    def published_points(self) -> int:
        return self.stats.published_points

    def appended(self, count: int) -> None:
        """The agent buffered ``count`` more points."""
        self._live_pending += count
        if self._first_unsent is None:
            self._first_unsent = time.monotonic()
        self._changed.set()

    def _status(self, state: str) -> bytes:
        return encode_status(Status(state=state, ts=int(time.time() * 1000), agent=__version__))  # type: ignore[arg-type]

    async def run(self) -> None:
        """Connect, publish, reconnect with capped jittered backoff; until cancelled."""
        delay = 0.5
        status_topic = topic(self.site, self.device, TopicKind.STATUS)
        while True:
            will = Will(status_topic, self._status("offline"))
            try:
                async with connect(self._target, f"edge-{self.site}-{self.device}", will=will) as client:
                    self.connected, delay = True, 0.5
                    log.info("connected to %s", self._target.url)
                    try:
                        await self._serve(client, status_topic)
                    except asyncio.CancelledError:
                        await self._say_goodbye(client, status_topic)
                        raise
            except aiomqtt.MqttError as exc:
                self.stats.reconnects += 1
                log.warning("broker %s: %s; retrying in %.1fs", self._target.url, exc, delay)
            finally:
                self.connected = False
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)

    async def _serve(self, client: aiomqtt.Client, status_topic: str) -> None:
        await client.publish(status_topic, self._status("online"), qos=1, retain=True)
        catalog_topic = topic(self.site, self.device, TopicKind.TAGS)
        await client.publish(catalog_topic, encode_catalog(self._catalog), qos=1, retain=True)
        # Whatever is buffered now is the backlog of the time we were away.
        self._hist_after, self._hist_upto = 0, await self.buffer.last_id()
        self._live_after, self._live_pending = self._hist_upto, 0
        if self._hist_upto:
            backlog, _ = await self.buffer.depth()
            log.info("connected with %d buffered points: draining them at %d points/s", backlog, self._drain_rate)
        while True:
            stop_if_cancelled()
            if not await self._send_live(client) and not await self._send_hist(client):
                await self._wait()

    def _live_due(self) -> bool:
        if self._live_pending >= self._max_points:
            return True
        return self._first_unsent is not None and time.monotonic() - self._first_unsent >= self._max_interval

    async def _send_live(self, client: aiomqtt.Client) -> bool:
        if not self._live_due():
            return False
        stored = await self.buffer.read(self._live_after, None, self._max_points)
        if stored is None:
            self._first_unsent, self._live_pending = None, 0
            return False
        sent = await self._publish(client, stored, hist=False)
        self._live_after = sent.last_id
        self._live_pending = max(0, self._live_pending - sent.count)
        caught_up = stored.count < self._max_points and sent.count == stored.count
        self._first_unsent = None if caught_up else time.monotonic()
        return True

    async def _send_hist(self, client: aiomqtt.Client) -> bool:
        if self._hist_after >= self._hist_upto or time.monotonic() < self._next_hist_at:
            return False
        stored = await self.buffer.read(self._hist_after, self._hist_upto, self._max_points)
        if stored is None:
            self._hist_after = self._hist_upto
            log.info("backlog drained")
            return False
        sent = await self._publish(client, stored, hist=True)
        self._hist_after = sent.last_id
        self.stats.hist_points += sent.count
        self._next_hist_at = time.monotonic() + sent.count / self._drain_rate
        return True

    async def _wait(self) -> None:
        """Until new points arrive, the oldest live point is due, or the drain may go on."""
        deadlines = []
        if self._first_unsent is not None:
            deadlines.append(self._first_unsent + self._max_interval)
        if self._hist_after < self._hist_upto:
            deadlines.append(self._next_hist_at)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _publish(self, client: aiomqtt.Client, stored: Stored, *, hist: bool) -> Stored:
        """Publish (a part of) ``stored``, wait for PUBACK, forget it; returns what was sent."""
        seq = await self.buffer.next_seq()
        sent = stored.within(MAX_POINTS_BYTES)  # long tag names: the rest goes in the next batch
        payload = batch_payload(seq, hist, sent.data())
        await client.publish(self._telemetry_topic, payload, qos=1)
        await self.buffer.remove(sent)
        self.stats.published_points += sent.count
        self.stats.published_batches += 1
        return sent

    async def _say_goodbye(self, client: aiomqtt.Client, status_topic: str) -> None:
        """A clean stop: send what is buffered (briefly), then offline (the will covers a crash)."""
        try:
            async with asyncio.timeout(5):
                while stored := await self.buffer.read(self._live_after, None, self._max_points):
                    self._live_after = (await self._publish(client, stored, hist=False)).last_id
                await client.publish(status_topic, self._status("offline"), qos=1, retain=True)
        except (TimeoutError, aiomqtt.MqttError) as exc:
            log.warning("stopping with points still buffered (they go out on the next start): %s", exc)
