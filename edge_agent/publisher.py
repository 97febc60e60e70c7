"""Publishes buffered points as telemetry batches (QoS 1), with birth, death and the tag catalog.

Two lanes read the durable buffer. Live points (buffered since this connection began) go
out as soon as a batch is full or ``max_interval_ms`` old. Points that were already
buffered when the connection began — an outage's backlog — are drained in order with
``hist: true`` at a bounded rate, only when no live batch is waiting, so live data keeps
flowing during a long catch-up.

Points leave the buffer only once ingest says they are stored: it answers every batch it
committed (or dead-lettered) on the device's ``ack`` topic with its ``seq``. The broker's
PUBACK is not enough: a broker that crashes loses what it had only in memory. What is not
confirmed is sent again (ingest's (tag, time) key absorbs the repeats): all of it after a
reconnect (the broker may have restarted empty), and a batch that stays unconfirmed
``resend_after_s`` while ingest confirms later ones (it was lost on the way). With
``confirm="broker"`` (an ingest that does not confirm), the PUBACK is enough, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from edge_agent.buffer import Buffer, Range, Stored
from edge_agent.errors import stop_if_cancelled
from factory import __version__
from factory.mqtt import MqttError, MqttTarget, Session, Will, connect
from factory.runtime import keep_running, within
from factory.wire import (
    MAX_POINTS_BYTES,
    Status,
    TagInfo,
    TopicKind,
    WireError,
    batch_payload,
    decode_ack,
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
    confirmed_points: int = 0  # ingest said they are stored
    resent_points: int = 0  # sent again, unconfirmed after a reconnect or a lost batch


@dataclass(slots=True)
class _Sent:
    ranges: tuple[Range, ...]
    count: int
    seq: int | None = None  # the batch number it went out under
    at: float = field(default_factory=time.monotonic)


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
        confirm: Literal["stored", "broker"] = "stored",
        resend_after_s: float = 30.0,
        on_command: Callable[[Session, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.site, self.device = site, device
        self._telemetry_topic = topic(site, device, TopicKind.TELEMETRY)
        self._target = target
        self._catalog = encode_catalog(catalog)  # BatchTooLargeError when it cannot fit one message
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
        self.confirm = confirm
        self.resend_after_s = resend_after_s
        self._unconfirmed: dict[int, _Sent] = {}  # seq -> what that batch carried
        self._resend: list[_Sent] = []
        self._all_confirmed = asyncio.Event()
        self._on_command = on_command  # write-back requests arrive on this connection too
        self.listening = asyncio.Event()  # subscribed to the device's ack and cmd topics
        self.stats = PublisherStats()
        self.connected = False
        self._was_connected = False  # the last session got as far as connecting

    @property
    def unconfirmed_points(self) -> int:
        return sum(s.count for s in self._unconfirmed.values())

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
        await keep_running(self._session, retry_on=(MqttError,), what=f"broker {self._target.url}", logger=log,
                           healthy=lambda: self._was_connected, on_error=self._lost)  # fmt: skip

    async def _session(self) -> None:
        status_topic = topic(self.site, self.device, TopicKind.STATUS)
        will = Will(status_topic, self._status("offline"))
        self._was_connected = False
        try:
            async with connect(self._target, f"edge-{self.site}-{self.device}", will=will) as client:
                self.connected = self._was_connected = True
                log.info("connected to %s", self._target.url)
                await self._serve(client, status_topic)
        finally:
            self.connected = False

    def _lost(self, _exc: BaseException) -> None:
        self.stats.reconnects += 1

    async def _serve(self, client: Session, status_topic: str) -> None:
        # Whatever this connection does not see confirmed goes out again as backlog.
        self._unconfirmed.clear()
        self._resend.clear()
        acks, requests = topic(self.site, self.device, TopicKind.ACK), topic(self.site, self.device, TopicKind.CMD)
        listened = [acks] if self.confirm == "stored" else []
        listened += [requests] if self._on_command is not None else []
        for name in listened:
            await client.subscribe(name, qos=1)
        self.listening.set()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        helpers = [asyncio.create_task(self._listen(client, acks, queue), name="confirmations")]
        if self._on_command is not None:
            helpers.append(asyncio.create_task(self._answer(client, queue, self._on_command), name="commands"))
        try:
            await self._publish_all(client, status_topic)
        except asyncio.CancelledError:
            await self._say_goodbye(client, status_topic)
            raise
        finally:
            self.listening.clear()
            for helper in helpers:
                helper.cancel()

    async def _listen(self, client: Session, acks: str, requests: asyncio.Queue[bytes]) -> None:
        """Confirmations at once; write-back requests to their own task, one at a time, in order."""
        with contextlib.suppress(MqttError):  # the publishing side sees it too, and reconnects
            async for message in client.messages:
                if not isinstance(message.payload, bytes):
                    continue
                if message.topic.value != acks:
                    requests.put_nowait(message.payload)
                    continue
                try:
                    seqs = decode_ack(message.payload)
                except WireError as exc:
                    log.warning("ignoring a confirmation on %s: %s", message.topic, exc)
                    continue
                await self._confirmed(seqs)

    @staticmethod
    async def _answer(
        client: Session,
        requests: asyncio.Queue[bytes],
        answer: Callable[[Session, bytes], Awaitable[None]],
    ) -> None:
        with contextlib.suppress(MqttError):
            while True:
                await answer(client, await requests.get())

    async def _confirmed(self, seqs: list[int]) -> None:
        """Forget what ingest stored; queue again what it skipped long enough ago."""
        done = [self._unconfirmed.pop(seq) for seq in seqs if seq in self._unconfirmed]
        if done:
            await self.buffer.remove([r for sent in done for r in sent.ranges])
            self.stats.confirmed_points += sum(sent.count for sent in done)
        if seqs:
            overdue = time.monotonic() - self.resend_after_s
            lost = [seq for seq, sent in self._unconfirmed.items() if seq < max(seqs) and sent.at < overdue]
            if lost:
                self._resend += [self._unconfirmed.pop(seq) for seq in lost]
                log.warning("%d batches sent before the ones now stored were never confirmed: sending them again",
                            len(lost))  # fmt: skip
                self._changed.set()
        if not self._unconfirmed:
            self._all_confirmed.set()

    async def _publish_all(self, client: Session, status_topic: str) -> None:
        await client.publish(status_topic, self._status("online"), qos=1, retain=True)
        catalog_topic = topic(self.site, self.device, TopicKind.TAGS)
        await client.publish(catalog_topic, self._catalog, qos=1, retain=True)
        # Whatever is buffered now is the backlog of the time we were away.
        self._hist_after, self._hist_upto = 0, await self.buffer.last_id()
        self._live_after, self._live_pending = self._hist_upto, 0
        if self._hist_upto:
            backlog, _ = await self.buffer.depth()
            log.info("connected with %d buffered points: draining them at %d points/s", backlog, self._drain_rate)
        while True:
            stop_if_cancelled()
            if not await self._send_again(client) and not await self._send_live(client) \
                    and not await self._send_hist(client):  # fmt: skip
                await self._wait()

    async def _send_again(self, client: Session) -> bool:
        if not self._resend:
            return False
        lost = self._resend.pop(0)
        stored = await self.buffer.reread(lost.ranges)
        if stored is not None:
            sent = stored.within(MAX_POINTS_BYTES)
            await self._publish(client, sent, hist=True, seq=lost.seq)  # its number: ingest sees no gap
            self.stats.resent_points += sent.count
            if sent.count < stored.count:  # cannot happen (it went out as one batch before); never lose the rest
                self._resend.append(_Sent(stored.ranges, stored.count - sent.count))
        return True

    def _live_due(self) -> bool:
        if self._live_pending >= self._max_points:
            return True
        return self._first_unsent is not None and time.monotonic() - self._first_unsent >= self._max_interval

    async def _send_live(self, client: Session) -> bool:
        if not self._live_due():
            return False
        stored = await self.buffer.read(self._live_after, None, self._max_points)
        if stored is None:
            self._first_unsent, self._live_pending = None, 0
            return False
        sent = stored.within(MAX_POINTS_BYTES)  # long tag names: the rest goes in the next batch
        self._live_after = sent.last_id  # before it goes out: stopped in flight, it is not sent twice
        await self._publish(client, sent, hist=False)
        self._live_pending = max(0, self._live_pending - sent.count)
        caught_up = stored.count < self._max_points and sent.count == stored.count
        self._first_unsent = None if caught_up else time.monotonic()
        return True

    async def _send_hist(self, client: Session) -> bool:
        if self._hist_after >= self._hist_upto or time.monotonic() < self._next_hist_at:
            return False
        stored = await self.buffer.read(self._hist_after, self._hist_upto, self._max_points)
        if stored is None:
            self._hist_after = self._hist_upto
            log.info("backlog drained")
            return False
        sent = stored.within(MAX_POINTS_BYTES)
        self._hist_after = sent.last_id
        await self._publish(client, sent, hist=True)
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

    async def _publish(self, client: Session, sent: Stored, *, hist: bool, seq: int | None = None) -> None:
        """Publish ``sent`` (at most ``MAX_POINTS_BYTES``: ``Stored.within``) and wait for
        PUBACK; then wait for ingest's confirmation, or (``confirm="broker"``) forget it now.
        Callers move their read position past it first: a batch whose PUBACK a stop
        interrupts is in ``_unconfirmed`` and still in the buffer, and must not go out again
        from the position it was read at. A batch sent again keeps its ``seq`` (the points
        are the same or fewer: an ack of either copy confirms them)."""
        if seq is None:
            seq = await self.buffer.next_seq()
        payload = batch_payload(seq, hist, sent.data())
        if self.confirm == "stored":
            self._unconfirmed[seq] = _Sent(sent.ranges, sent.count, seq)  # before: the answer may beat the PUBACK
            self._all_confirmed.clear()
        await client.publish(self._telemetry_topic, payload, qos=1)
        if self.confirm == "broker":
            await self.buffer.remove(sent.ranges)
        self.stats.published_points += sent.count
        self.stats.published_batches += 1

    async def _say_goodbye(self, client: Session, status_topic: str) -> None:
        """A clean stop: send what is buffered (briefly), then offline, whether or not the
        buffer emptied in time: the clean disconnect that follows drops the will, so a
        goodbye not sent would leave the device online (the will covers a crash)."""
        try:
            await within(5, self._send_the_rest(client))
        except TimeoutError:
            log.warning("stopping with points not yet confirmed stored (they go out again on the next start)")
        except MqttError as exc:  # lost, or a PUBACK late: offline is tried either way (fails at once if lost)
            log.warning("stopping with points still buffered (they go out on the next start): %s", exc)
        try:
            await within(5, client.publish(status_topic, self._status("offline"), qos=1, retain=True))
        except (TimeoutError, MqttError) as exc:
            log.warning("stopping without saying offline: %s", exc)

    async def _send_the_rest(self, client: Session) -> None:
        """What is buffered and not sent yet, then wait for every batch to be confirmed."""
        while stored := await self.buffer.read(self._live_after, None, self._max_points):
            sent = stored.within(MAX_POINTS_BYTES)
            self._live_after = sent.last_id
            await self._publish(client, sent, hist=False)
        if self._unconfirmed:
            await self._all_confirmed.wait()
