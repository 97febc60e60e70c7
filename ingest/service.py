"""The ingest service: MQTT in, PostgreSQL out, acknowledged only after commit.

Messages are collected into a flush (by point count or age), written in one
transaction, and only then acknowledged to the broker (manual PUBACK). If the process
dies or the database fails before the commit, the broker still holds the messages in
our persistent session and delivers them again; the (tag, time) key absorbs repeats.
Write-back replies (``cmd/reply``) take the same path into ``telemetry.write_back``, where
the (device, request id) key absorbs them.

Past one broker the same loop reads a NATS JetStream work-queue consumer instead
(``IngestConfig.nats``): messages are acknowledged to the stream after the commit, those
taken and not stored are given back (nak) when the session ends, and any number of
workers on any machine share the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg

from factory.commands import decode_reply
from factory.db import connect as db_connect
from factory.db import installed_flavor, redact
from factory.metrics import serve_http
from factory.mqtt import SESSION_EXPIRY_S, Message, MqttError, MqttTarget, Subscriber
from factory.nats import JetStreamSubscriber, NatsError, NatsTarget, Received
from factory.runtime import Listen, keep_running, within
from factory.wire import (
    Columns,
    TopicKind,
    TopicName,
    WireError,
    decode_catalog,
    decode_columns,
    decode_status,
    encode_ack,
    parse_topic,
    subscription,
    topic,
)
from ingest.metrics import health, metrics
from ingest.retention import SAMPLE_DAYS, Retention
from ingest.store import KnownIds, Packed, Samples, TelemetryStore, ms_to_datetime
from ingest.upkeep import Upkeep, UpkeepConfig

__all__ = ["IngestConfig", "IngestService", "IngestStats"]

log = logging.getLogger(__name__)
STOP_FLUSH_S = 5.0
MAX_TAKE = 1000  # messages taken from the client's queue at once
TAKE_BYTES = 16 * 1024  # and at most this much payload: a slice decoded between the writer's turns
MAX_ACK_SEQS = 1000  # batch numbers per confirmation message
PENDING_LIMIT = 4  # batches' worth of points (or bytes) held while a flush is being written
FLUSH_BYTES = 8 * 2**20  # payload held for a flush (catalogs, statuses, new tags' telemetry) before it is written
KINDS = (TopicKind.TELEMETRY, TopicKind.STATUS, TopicKind.TAGS, TopicKind.CMD_REPLY)
RETAINED = (TopicKind.STATUS, TopicKind.TAGS)  # an empty message there clears the retained one
CLEARED = ""  # a flush's state of a device whose retained status was cleared (factory provision revoke)
Source = Subscriber | JetStreamSubscriber  # where messages come from: one MQTT broker, or a NATS cluster


@dataclass(frozen=True, slots=True)
class IngestConfig:
    database_url: str
    mqtt: MqttTarget
    client_id: str = "factory-ingest"
    shared_group: str | None = None  # "$share/{group}/..." spreads messages over workers
    nats: NatsTarget | None = None  # instead of ``mqtt``: the durable consumer on a JetStream cluster
    site: str = "+"  # one site, or all of them
    session_expiry_s: int = SESSION_EXPIRY_S  # how long the broker queues for us while we are away
    batch_points: int = 20_000
    batch_ms: int = 200
    max_future_s: float = 3600.0
    retention_days: int = SAMPLE_DAYS  # older points are refused; upkeep drops older partitions
    site_retention_days: Mapping[str, int] = field(default_factory=dict)  # per site, instead of retention_days
    upkeep: UpkeepConfig | None = field(default_factory=UpkeepConfig)  # None: another worker does it
    http: Listen | None = None  # where /healthz and /metrics are served
    dead_letter_bytes: int = 4096  # of a refused message's payload, kept with its reason
    dead_letters_per_minute: int = 60  # kept per device; past that they are counted, not kept

    def __post_init__(self) -> None:
        _ = self.retention  # refuses what does not fit (ValueError)

    @property
    def retention(self) -> Retention:
        upkeep = self.upkeep or UpkeepConfig()
        return Retention(self.retention_days, self.site_retention_days, upkeep.rollup_1m_days, upkeep.rollup_1h_days)


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    points_received: int = 0
    points_inserted: int = 0
    dead_letters: int = 0  # refused messages, kept or not
    dead_letters_unkept: int = 0  # refused past a device's budget: counted only
    write_backs: int = 0  # write-back replies committed (new or repeated)
    write_backs_recorded: int = 0  # of which new rows in telemetry.write_back
    flushes: int = 0
    reconnects: int = 0
    last_flush_ms: float = 0.0
    last_flush_points: int = 0
    flush_seconds: float = 0.0
    newest_point_ms: int = 0
    per_device: dict[str, int] = field(default_factory=dict)  # "site/device" -> points received
    device_states: dict[str, str] = field(default_factory=dict)  # "site/device" -> last status seen
    device_last_message: dict[str, float] = field(default_factory=dict)  # "site/device" -> epoch s of its last commit


class IngestService:
    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.stats = IngestStats()
        self.retention = config.retention
        self.upkeep = Upkeep(config.database_url, config.upkeep, self.retention) if config.upkeep else None
        self.subscribed = asyncio.Event()
        self.flushed = asyncio.Event()  # set after every committed flush, for whoever waits on progress
        self._store: TelemetryStore | None = None  # the session's, for its id caches
        self.stream: Source | None = None  # the session's, for the health check
        self.writing_since: float | None = None  # when the flush being written began (monotonic)
        self._budgets: dict[str, tuple[float, int, int]] = {}  # device -> (minute began, kept, not kept)

    def _filters(self) -> list[str]:
        group, site = self.config.shared_group, self.config.site
        names = [subscription(k).replace("/+/+/", f"/{site}/+/", 1) for k in KINDS]
        return [f"$share/{group}/{name}" for name in names] if group and self.config.nats is None else names

    def _source(self) -> Source:
        """The MQTT persistent session, or this worker's share of the JetStream consumer (one
        durable consumer per site filter: ``ingest``, or ``ingest-{site}``; ``shared_group``
        names it instead)."""
        config = self.config
        if config.nats is None:
            return Subscriber(config.mqtt, config.client_id, self._filters(), session_expiry_s=config.session_expiry_s)
        durable = config.shared_group or ("ingest" if config.site == "+" else f"ingest-{config.site}")
        return JetStreamSubscriber(config.nats, config.client_id, self._filters(), durable=durable)

    @property
    def bus_url(self) -> str:
        return self.config.nats.url if self.config.nats is not None else self.config.mqtt.url

    async def run(self) -> None:
        """Serve until cancelled, with the storage upkeep loop beside the message loop."""
        async with asyncio.TaskGroup() as group:
            if self.upkeep is not None:
                group.create_task(self.upkeep.run(), name="storage-upkeep")
            if self.config.http is not None:
                served = serve_http(self.config.http, metrics(self), lambda: health(self))
                group.create_task(served, name="http")
            group.create_task(self._serve(), name="ingest")

    async def _serve(self) -> None:
        """Any broker or database failure restarts both connections, with capped backoff."""
        await keep_running(self._session, retry_on=(MqttError, NatsError, psycopg.Error, OSError),
                           what="ingest connection lost", logger=log, healthy=self._was_subscribed,
                           on_error=self._lost)  # fmt: skip

    def _was_subscribed(self) -> bool:
        """The session that just ended had been healthy: back off afresh."""
        healthy = self.subscribed.is_set()
        self.subscribed.clear()
        return healthy

    def _lost(self, _exc: BaseException) -> None:
        self.stats.reconnects += 1

    async def _session(self) -> None:
        async with await db_connect(self.config.database_url, application_name="factory-ingest") as conn:
            store = self._store = TelemetryStore(conn, await installed_flavor(conn))
            await conn.commit()
            async with self._source() as subscriber:
                self.subscribed.set()
                log.info("ingest: %s -> %s", self.bus_url, redact(self.config.database_url))
                try:
                    await self._consume(subscriber, store)
                finally:
                    self._store = None  # its ids may not survive this session's last transaction

    async def _consume(self, stream: Source, store: TelemetryStore) -> None:
        """Collect messages into flushes and commit them, one commit in flight at a time.

        Messages are decoded (and, when their tags are known, packed into COPY rows) as they
        arrive, a slice at a time, so while the database writes one flush the next one is
        prepared here: the two processes work at the same time. Each flush is acknowledged
        after its own commit.
        """
        self.stream = stream
        gathered = _Flush()
        writing: asyncio.Task[None] | None = None
        try:
            while True:
                wait_s = max(0.0, gathered.deadline - time.monotonic()) if gathered.messages else None
                try:
                    received = await stream.take(MAX_TAKE, wait_s, wake=writing, max_bytes=TAKE_BYTES)
                except asyncio.CancelledError:
                    await within(STOP_FLUSH_S, self._flush_on_stop(stream, store, gathered, writing))
                    raise
                if writing is not None and writing.done():
                    writing.result()  # a failed flush ends the session; its messages come again
                    writing = None
                if received and not gathered.messages:
                    gathered.deadline = time.monotonic() + self.config.batch_ms / 1000
                gathered.add([self.prepare(m) for m in received])
                # Nothing being written and nothing more waiting: waiting out the age limit
                # would only delay these (group commit: a busy writer makes the batches).
                idle = writing is None and stream.empty()
                small = gathered.points < self.config.batch_points and gathered.held < FLUSH_BYTES
                if not gathered.messages or (small and time.monotonic() < gathered.deadline and not idle):
                    continue
                if writing is not None:
                    if (
                        gathered.points < PENDING_LIMIT * self.config.batch_points
                        and gathered.held < PENDING_LIMIT * FLUSH_BYTES
                    ):
                        continue  # keep preparing the next flush while the database writes this one
                    await writing  # held enough: wait (a failure ends the session)
                writing = asyncio.create_task(self._commit(stream, store, gathered))
                gathered = _Flush()
        finally:
            self.stream = None
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await writing

    async def _flush_on_stop(
        self, stream: Source, store: TelemetryStore, gathered: _Flush, writing: asyncio.Task[None] | None
    ) -> None:
        """A clean stop stores what it holds instead of leaving it for redelivery."""
        if writing is not None:
            await writing
        if gathered.messages:
            await self._commit(stream, store, gathered)

    async def _commit(self, stream: Source, store: TelemetryStore, flush: _Flush) -> None:
        self.writing_since = time.monotonic()
        try:
            await self._flush(store, flush)
        finally:
            self.writing_since = None
        if isinstance(stream, JetStreamSubscriber):
            await stream.ack(flush.acks)
        else:
            stream.ack(flush.acks)
        await self._confirm(stream, flush.stored)

    async def _confirm(self, stream: Source, stored: dict[tuple[str, str], list[int]]) -> None:
        """Tell each device which of its batches are stored, so it can forget them. QoS 0: a
        lost confirmation costs a resend (which the (tag, time) key absorbs), never data."""
        for (site, device), seqs in stored.items():
            for start in range(0, len(seqs), MAX_ACK_SEQS):
                payload = encode_ack(seqs[start : start + MAX_ACK_SEQS])
                await stream.publish(topic(site, device, TopicKind.ACK), payload, qos=0)

    def prepare(self, message: Message | Received) -> _Incoming:
        """Parse a message's topic and decode its telemetry: the work that needs no database."""
        topic_name = str(message.topic)
        payload = _payload(message)
        try:
            where: TopicName | WireError = parse_topic(topic_name)
        except WireError as exc:
            where = WireError(str(exc))
        batch: Columns | WireError | None = None
        known: KnownIds | None = None
        seq: int | None = None
        if isinstance(where, TopicName) and where.kind is TopicKind.TELEMETRY:
            try:
                batch = decode_columns(payload)
                seq = batch.seq
                self._check_times(batch, self.retention.days(where.site))
            except WireError as exc:
                batch = WireError(str(exc))  # not the original: its cause may hold the whole payload
            else:
                # Known tags (the common case) need no database; a new tag is registered in the flush.
                if self._store is not None:
                    known = self._store.cached_ids(where.site, where.device, batch.tags)
        size = len(payload)
        if isinstance(where, WireError) or isinstance(batch, WireError):  # refused already: keep only its head
            payload = payload[: self.config.dead_letter_bytes]
        return _Incoming((message.mid, message.qos), topic_name, payload, where, batch, known, seq, size)

    def _check_times(self, batch: Columns, retention_days: int) -> None:
        now = time.time()
        newest, oldest = max(batch.ts), min(batch.ts)
        if newest > (now + self.config.max_future_s) * 1000:
            tag = batch.tags[batch.ts.index(newest)]
            raise WireError(f"point {tag} has ts {newest}, more than {self.config.max_future_s:.0f}s in the future")
        if oldest < (now - retention_days * 86400) * 1000:
            tag = batch.tags[batch.ts.index(oldest)]
            raise WireError(f"point {tag} has ts {oldest}, older than the {retention_days}-day retention")

    async def flush(self, store: TelemetryStore, messages: list[Message] | list[Received]) -> None:
        """Write one group of messages in one transaction (the caller acknowledges them after)."""
        flush = _Flush()
        flush.add([self.prepare(m) for m in messages])
        await self._flush(store, flush)

    async def _flush(self, store: TelemetryStore, flush: _Flush) -> None:
        started = time.perf_counter()
        try:
            async with store.conn.transaction():
                await self._apply(store, flush)
                inserted = await store.write_packed(flush.packed)
                if flush.stored:
                    await store.track_seqs(
                        {await store.device_id(*where): seqs for where, seqs in flush.stored.items()}
                    )
                await store.touch_devices({d: ms_to_datetime(ms) for d, ms in flush.newest.items()})
        except BaseException:
            store.forget()
            raise
        stats = self.stats
        stats.messages += flush.messages
        committed_at = time.time()
        for device, count in flush.per_device.items():
            stats.per_device[device] = stats.per_device.get(device, 0) + count
            stats.device_last_message[device] = committed_at
        stats.points_received += flush.packed.rows
        stats.points_inserted += inserted
        stats.dead_letters += flush.dead
        stats.dead_letters_unkept += flush.unkept
        stats.write_backs += flush.write_backs
        stats.write_backs_recorded += flush.write_backs_recorded
        for device, state in flush.states.items():
            if state == CLEARED:
                stats.device_states.pop(device, None)
                stats.device_last_message.pop(device, None)
            else:
                stats.device_states[device] = state
        stats.flushes += 1
        elapsed = time.perf_counter() - started
        stats.last_flush_ms = elapsed * 1000
        stats.flush_seconds += elapsed
        stats.last_flush_points = flush.packed.rows
        stats.newest_point_ms = max([stats.newest_point_ms, *flush.newest.values()])
        self.flushed.set()

    async def _apply(self, store: TelemetryStore, flush: _Flush) -> None:
        """Stage the messages that needed the database; the counts go to stats only once committed."""
        for item in flush.later:
            where, payload = item.where, item.payload
            try:
                if isinstance(where, WireError):
                    raise where
                if not payload and where.kind in RETAINED:  # an empty retained message clears the retained one
                    if where.kind is TopicKind.STATUS:  # a retired device: no state, so no device alert
                        flush.states[f"{where.site}/{where.device}"] = CLEARED
                        await store.retire_device(where.site, where.device)
                    continue
                device_id = await store.device_id(where.site, where.device)
                if where.kind is TopicKind.TELEMETRY:
                    if not isinstance(item.batch, Columns):
                        raise item.batch or WireError("telemetry was not decoded")
                    batch = item.batch
                    ids = await store.tag_ids(device_id, batch.tags)
                    flush.packed.add([ids[t] for t in batch.tags], batch.ts, batch.values, batch.quality)
                    flush.count(where, device_id, batch)
                elif where.kind is TopicKind.STATUS:
                    status = decode_status(payload)
                    await store.record_status(device_id, status)
                    flush.states[f"{where.site}/{where.device}"] = status.state
                elif where.kind is TopicKind.TAGS:
                    await store.register_tags(device_id, decode_catalog(payload))
                elif where.kind is TopicKind.CMD_REPLY:
                    reply = decode_reply(payload)
                    flush.write_backs += 1
                    flush.write_backs_recorded += await store.record_write_back(device_id, reply)
            except WireError as exc:
                flush.dead += 1
                log.info("dead letter from %s: %s", item.topic, exc)
                unkept = self._spend(f"{where.site}/{where.device}" if isinstance(where, TopicName) else "?")
                if unkept is None:
                    flush.unkept += 1
                    continue
                kept = payload[: self.config.dead_letter_bytes]
                cut = (
                    f" (payload of {item.size:,} bytes, the first {len(kept):,} kept)" if len(kept) < item.size else ""
                )
                more = (
                    f" [{unkept} more from this device in the minute before were counted, not kept]" if unkept else ""
                )
                await store.dead_letter(item.topic, kept, f"{exc}{cut}{more}")

    def _spend(self, device: str) -> int | None:
        """Take one dead letter from the device's budget for this minute: None when it is spent;
        else how many went unkept in the minute before (said once, on the next one kept)."""
        now = time.monotonic()
        began, kept, unkept = self._budgets.get(device, (now, 0, 0))
        if now - began >= 60:
            began, kept = now, 0
        if kept >= self.config.dead_letters_per_minute:
            self._budgets[device] = (began, kept, unkept + 1)
            return None
        self._budgets[device] = (began, kept + 1, 0)
        return unkept


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A received message with what could be worked out before the database sees it."""

    ack: tuple[int, int]  # packet id and QoS
    topic: str
    payload: bytes
    where: TopicName | WireError
    batch: Columns | WireError | None  # telemetry only
    known: KnownIds | None  # its device's and tags' ids, when all were known on arrival
    seq: int | None  # telemetry whose batch number could be read
    size: int  # of the payload as received (a refused one is kept cut short)


@dataclass(slots=True)
class _Flush:
    """One flush: what arrived for it, and what it writes and counts once committed.

    Telemetry whose ids were known on arrival (the common case) is packed into rows and
    counted as it arrives, a block per slice, and nothing else of it is kept; the rest
    waits in ``later`` for the flush, which needs the database for it.
    """

    acks: list[tuple[int, int]] = field(default_factory=list)  # (packet id, QoS), in arrival order
    messages: int = 0
    points: int = 0  # its size: points, and one for any other message
    held: int = 0  # payload bytes kept for the flush (the messages in `later`)
    deadline: float = 0.0  # monotonic time by which it is written, however small
    later: list[_Incoming] = field(default_factory=list)
    packed: Packed = field(default_factory=Packed)
    newest: dict[int, int] = field(default_factory=dict)  # device id -> newest point (ms)
    per_device: dict[str, int] = field(default_factory=dict)  # "site/device" -> points
    states: dict[str, str] = field(default_factory=dict)  # "site/device" -> status
    stored: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (site, device) -> batch numbers
    dead: int = 0
    unkept: int = 0
    write_backs: int = 0
    write_backs_recorded: int = 0

    def add(self, items: list[_Incoming]) -> None:
        rows = Samples()
        for item in items:
            self.messages += 1
            self.acks.append(item.ack)
            if item.seq is not None and isinstance(item.where, TopicName):  # stored, or dead-lettered
                self.stored.setdefault((item.where.site, item.where.device), []).append(item.seq)
            batch = item.batch
            if isinstance(batch, Columns):
                self.points += len(batch.ts)
                if item.known is not None and isinstance(item.where, TopicName):
                    rows.extend(item.known.tags, batch.ts, batch.values, batch.quality)
                    self.count(item.where, item.known.device, batch)
                    continue
            else:
                self.points += 1
            self.held += len(item.payload)
            self.later.append(item)
        self.packed.add(rows.tag_ids, rows.ts, rows.values, rows.quality)

    def count(self, where: TopicName, device_id: int, batch: Columns) -> None:
        newest = max(batch.ts)
        self.newest[device_id] = max(newest, self.newest.get(device_id, newest))
        key = f"{where.site}/{where.device}"
        self.per_device[key] = self.per_device.get(key, 0) + len(batch.ts)


def _payload(message: Message | Received) -> bytes:
    raw = message.payload
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    return b"" if raw is None else str(raw).encode()
