"""The edge agent: sources feed points through a change filter into the publisher."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_agent.buffer import Buffer
from edge_agent.commands import CommandHandler
from edge_agent.config import AGENT_TAGS, EdgeConfig, ModbusTag, TagCommon
from edge_agent.metrics import health, metrics
from edge_agent.publisher import Publisher
from edge_agent.reading import Reading
from edge_agent.source import Source, open_source
from factory.metrics import serve_http
from factory.runtime import Listen, StartupError
from factory.wire import BatchTooLargeError, Quality, TagInfo, Value

__all__ = ["ChangeFilter", "EdgeAgent"]

log = logging.getLogger(__name__)
WRITE_POINTS = 5000  # points per buffer transaction (one stored chunk)
PENDING_LIMIT = 10_000  # points read but not yet stored before a source's hand-over waits


class _Last:
    """What was last passed for one tag, and the tag's own limits."""

    __slots__ = ("deadband", "max_age_ms", "quality", "ts", "value")

    def __init__(self, tag: TagCommon) -> None:
        self.deadband, self.max_age_ms = tag.deadband, tag.max_age_ms
        self.value: Value = None
        self.quality = -1  # nothing passed yet
        self.ts = 0


class ChangeFilter:
    """Report-by-exception: pass a point when it moved beyond its deadband, changed
    quality, or was last sent ``max_age_ms`` ago (the heartbeat)."""

    def __init__(self, tags: Iterable[TagCommon]) -> None:
        self._last = {t.name: _Last(t) for t in tags}

    def __call__(self, reading: Reading) -> Reading | None:
        """The part of ``reading`` to publish (``reading`` itself when all of it passes)."""
        values, quality = reading.values, reading.quality
        keep: list[int] = []
        lasts = self._last
        for i, (name, ts, value, q) in enumerate(zip(reading.tags, reading.ts, values, quality, strict=True)):
            if value.__class__ is float and not math.isfinite(value):  # a device sent NaN/inf
                values, quality = _bad_at(i, values, quality)
                value, q = None, Quality.BAD  # noqa: PLW2901 - published as a bad null
            last = lasts.get(name)
            if last is None:
                keep.append(i)
                continue
            if last.quality != q or ts - last.ts >= last.max_age_ms:
                pass
            elif value is None or last.value is None or value.__class__ is bool:
                if value == last.value:
                    continue
            elif last.deadband:
                if abs(value - last.value) <= last.deadband:
                    continue
            elif value == last.value:
                continue
            last.value, last.quality, last.ts = value, q, ts
            keep.append(i)
        if len(keep) == len(reading) and values is reading.values:
            return reading
        if not keep:
            return None
        return Reading([reading.tags[i] for i in keep], [reading.ts[i] for i in keep], [values[i] for i in keep],
                       [quality[i] for i in keep])  # fmt: skip


def _bad_at(i: int, values: Sequence[Value], quality: Sequence[int]) -> tuple[list[Value], list[int]]:
    """Copies of the columns with point ``i`` made a null of quality bad."""
    values, quality = list(values), list(quality)
    values[i], quality[i] = None, Quality.BAD
    return values, quality


def catalog(config: EdgeConfig) -> list[TagInfo]:
    entries = []
    for source in config.sources:
        for tag in source.tags:
            kind = tag.type if isinstance(tag, ModbusTag) else "number"
            asset = tag.asset or tag.name.split(".", 1)[0]
            entries.append(TagInfo(tag.name, source.name, kind, asset, tag.unit, tag.description))
    if config.publish.health_every_s:
        entries += [TagInfo(name, "agent", "number", "agent", unit, text) for name, (unit, text) in AGENT_TAGS.items()]
    return entries


class EdgeAgent:
    """Runs every source of one device config and publishes what they read, until cancelled.

    Every source gives what it read to ``hand_over`` (through the change filter), which waits
    while the buffer writer is behind; a writer task moves it into the durable buffer
    (several readings at once in one transaction) and tells the publisher.
    """

    def __init__(self, config: EdgeConfig, base_dir: Path) -> None:
        self.config = config
        self.base_dir = base_dir
        self.filter = ChangeFilter(t for s in config.sources for t in s.tags)
        # Readings the sources handed over and the writer has not stored yet. Small on purpose:
        # a poll loop waits while it is full (the disk is behind), rather than piling up memory.
        self._pending: deque[Reading] = deque()
        self._pending_points = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self.publisher: Publisher | None = None
        self.sources: list[Source] = [open_source(source) for source in config.sources]
        self.commands = CommandHandler(config, self.sources)  # write-back
        self.emitted = 0
        self.http_port: int | None = None  # where /healthz and /metrics answer, once they do

    def _listening(self, port: int) -> None:
        self.http_port = port

    @property
    def published_points(self) -> int:
        return self.publisher.stats.published_points if self.publisher else 0

    async def hand_over(self, readings: Iterable[Reading]) -> None:
        """What a source read: waits while the buffer writer is behind, so the source slows down."""
        for reading in readings:
            passed = self.filter(reading)
            if passed is None:
                continue
            while self._pending_points >= PENDING_LIMIT:
                self._room.clear()
                await self._room.wait()
            self._keep(passed)

    def _keep(self, reading: Reading) -> None:
        self._pending.append(reading)
        self._pending_points += len(reading)
        self.emitted += len(reading)
        self._arrived.set()

    def _take(self, limit: int) -> list[Reading]:
        """Pending readings, about ``limit`` points of them (at least one reading)."""
        taken: list[Reading] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0]) <= limit):
            reading = self._pending.popleft()
            taken.append(reading)
            count += len(reading)
        self._pending_points -= count
        self._room.set()
        return taken

    async def run(self) -> None:
        path = self.config.buffer.path
        buffer = await Buffer.open(
            path if path.is_absolute() else self.base_dir / path, self.config.buffer.max_mb,
            fsync=self.config.buffer.fsync,
        )  # fmt: skip
        try:
            self.publisher = Publisher(
                site=self.config.site, device=self.config.device, target=self.config.mqtt.target(self.base_dir),
                catalog=catalog(self.config), buffer=buffer, max_points=self.config.publish.max_points,
                max_interval_ms=self.config.publish.max_interval_ms,
                drain_points_per_s=self.config.publish.drain_points_per_s, confirm=self.config.publish.confirm,
                resend_after_s=self.config.publish.resend_after_s, on_command=self.commands.answer,
            )  # fmt: skip
        except BatchTooLargeError as exc:
            await buffer.close()
            raise StartupError(str(exc)) from exc
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._write(buffer, self.publisher), name="buffer-writer")
                group.create_task(self.publisher.run(), name="publisher")
                if every_s := self.config.publish.health_every_s:
                    group.create_task(self._report_health(buffer, every_s), name="health")
                if (http := self.config.http).enabled:
                    where = Listen(http.host, http.port, option="http.port in the config, or http.enabled: false")
                    served = serve_http(where, metrics(self), lambda: health(self), on_listening=self._listening)
                    group.create_task(served, name="http")
                for source in self.sources:
                    group.create_task(source.run(self.hand_over), name=f"{source.source.kind}:{source.source.name}")
        finally:
            await self._flush_incoming(buffer)
            await buffer.close()

    async def _write(self, buffer: Buffer, publisher: Publisher) -> None:
        while True:
            await self._arrived.wait()
            readings = self._take(WRITE_POINTS)
            if not self._pending:
                self._arrived.clear()
            count = await buffer.append(readings)
            publisher.appended(count)

    async def _report_health(self, buffer: Buffer, every_s: float) -> None:
        """The agent's own tags, through the same buffer as everything else: after an outage
        the database shows how the backlog grew and drained."""
        while True:
            await asyncio.sleep(every_s)
            count, oldest = buffer.depth_now()
            now = int(time.time() * 1000)
            age = 0.0 if oldest is None else max(0.0, (now - oldest) / 1000)
            await self.hand_over([Reading.at(list(AGENT_TAGS), now, [float(count), age])])

    async def _flush_incoming(self, buffer: Buffer) -> None:
        """On the way out, store what the sources read but the writer had not stored yet."""
        while self._pending:
            await buffer.append(self._take(WRITE_POINTS))
