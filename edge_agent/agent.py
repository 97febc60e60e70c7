"""The edge agent: sources feed points through a change filter into the publisher."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.buffer import Buffer
from edge_agent.commands import CommandHandler
from edge_agent.config import EdgeConfig, ModbusSource, ModbusTag, TagCommon
from edge_agent.metrics import health, metrics
from edge_agent.modbus import ModbusReader, poll_forever
from edge_agent.opcua import OpcuaReader
from edge_agent.publisher import Publisher
from edge_agent.registers import Block
from factory.metrics import serve_http
from factory.wire import Point, Quality, TagInfo

__all__ = ["ChangeFilter", "EdgeAgent"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Last:
    value: float | int | bool | None
    quality: Quality
    ts: int


class ChangeFilter:
    """Report-by-exception: pass a point when it moved beyond its deadband, changed
    quality, or was last sent ``max_age_ms`` ago (the heartbeat)."""

    def __init__(self, tags: Iterable[TagCommon]) -> None:
        self._tags = {t.name: t for t in tags}
        self._last: dict[str, _Last] = {}

    def __call__(self, points: Iterable[Point]) -> list[Point]:
        out = []
        for raw in points:
            point = raw
            if isinstance(raw.value, float) and not math.isfinite(raw.value):
                point = Point(raw.tag, raw.ts, None, Quality.BAD)  # a device sent NaN/inf
            if self._passes(point):
                out.append(point)
                self._last[point.tag] = _Last(point.value, point.quality, point.ts)
        return out

    def _passes(self, point: Point) -> bool:
        last = self._last.get(point.tag)
        tag = self._tags.get(point.tag)
        if last is None or tag is None or last.quality != point.quality:
            return True
        if point.ts - last.ts >= tag.max_age_ms:
            return True
        if point.value is None or last.value is None or isinstance(point.value, bool):
            return point.value != last.value
        return abs(float(point.value) - float(last.value)) > tag.deadband or (
            tag.deadband == 0 and point.value != last.value
        )


def catalog(config: EdgeConfig) -> list[TagInfo]:
    entries = []
    for source in config.sources:
        for tag in source.tags:
            kind = tag.type if isinstance(tag, ModbusTag) else "number"
            asset = tag.asset or tag.name.split(".", 1)[0]
            entries.append(TagInfo(tag.name, source.name, kind, asset, tag.unit, tag.description))
    return entries


class EdgeAgent:
    """Runs every source of one device config and publishes what they read, until cancelled.

    Sources hand points to ``emit``; a writer task moves them into the durable buffer
    (several readings at once in one transaction) and tells the publisher.
    """

    def __init__(self, config: EdgeConfig, base_dir: Path) -> None:
        self.config = config
        self.base_dir = base_dir
        self.filter = ChangeFilter(t for s in config.sources for t in s.tags)
        # Small on purpose: a poll loop waits here when the disk is behind (back-pressure),
        # instead of piling readings up in memory.
        self._incoming: asyncio.Queue[list[Point]] = asyncio.Queue(maxsize=64)
        self.publisher: Publisher | None = None
        self.readers: list[ModbusReader | OpcuaReader] = []
        self.commands: CommandHandler | None = None  # write-back, from run() on
        self.emitted = 0
        self.lost_in_memory = 0

    @property
    def published_points(self) -> int:
        return self.publisher.stats.published_points if self.publisher else 0

    def emit(self, points: list[Point]) -> None:
        """For callbacks that cannot wait (OPC UA notifications)."""
        passed = self.filter(points)
        if not passed:
            return
        try:
            self._incoming.put_nowait(passed)
            self.emitted += len(passed)
        except asyncio.QueueFull:  # the disk stalls for seconds: say so rather than block the client
            self.lost_in_memory += len(passed)
            log.error("buffer writer is behind: %d points not stored", len(passed))

    async def emit_waiting(self, points: list[Point]) -> None:
        """For poll loops: waits while the buffer writer is behind, so polling slows down."""
        passed = self.filter(points)
        if passed:
            await self._incoming.put(passed)
            self.emitted += len(passed)

    async def run(self) -> None:
        path = self.config.buffer.path
        buffer = await Buffer.open(
            path if path.is_absolute() else self.base_dir / path, self.config.buffer.max_mb,
            fsync=self.config.buffer.fsync,
        )  # fmt: skip
        self.publisher = Publisher(
            site=self.config.site, device=self.config.device, target=self.config.mqtt.target(self.base_dir),
            catalog=catalog(self.config), buffer=buffer, max_points=self.config.publish.max_points,
            max_interval_ms=self.config.publish.max_interval_ms,
            drain_points_per_s=self.config.publish.drain_points_per_s,
        )  # fmt: skip
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._write(buffer, self.publisher), name="buffer-writer")
                group.create_task(self.publisher.run(), name="publisher")
                self.commands = CommandHandler(self.config, self.config.mqtt.target(self.base_dir), self.readers)
                group.create_task(self.commands.run(), name="commands")
                if self.config.http is not None:
                    served = serve_http(
                        self.config.http.host, self.config.http.port, metrics(self), lambda: health(self)
                    )
                    group.create_task(served, name="http")
                for source in self.config.sources:
                    if isinstance(source, ModbusSource):
                        group.create_task(self._run_modbus(source), name=f"modbus:{source.name}")
                    else:
                        reader = OpcuaReader(source, self.emit)
                        self.readers.append(reader)
                        group.create_task(reader.run(), name=f"opcua:{source.name}")
        finally:
            await self._flush_incoming(buffer)
            await buffer.close()

    async def _write(self, buffer: Buffer, publisher: Publisher) -> None:
        while True:
            points = await self._incoming.get()
            while not self._incoming.empty() and len(points) < 5000:
                points += self._incoming.get_nowait()
            await buffer.append(points)
            publisher.appended(len(points))

    async def _flush_incoming(self, buffer: Buffer) -> None:
        """On the way out, store what the sources read but the writer had not stored yet."""
        points: list[Point] = []
        while not self._incoming.empty():
            points += self._incoming.get_nowait()
        await buffer.append(points)

    async def _run_modbus(self, source: ModbusSource) -> None:
        async with ModbusReader(source) as reader, asyncio.TaskGroup() as group:
            self.readers.append(reader)
            for period, blocks in reader.poll_groups().items():
                group.create_task(self._poll(reader, period, blocks), name=f"modbus:{source.name}:{period}ms")

    async def _poll(self, reader: ModbusReader, period: int, blocks: list[Block]) -> None:
        async for points in poll_forever(reader, period, blocks):
            await self.emit_waiting(points)
