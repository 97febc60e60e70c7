"""Modbus source: polls one unit (TCP or RTU) with coalesced block reads, and writes tags.

pymodbus has two failure channels — a raised ``ModbusException`` and a response whose
``isError()`` is true; the link turns both into ``SourceError``, and a failed block becomes
bad-quality points for its tags, so a failing block never hides or drops its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from edge_agent.config import ModbusSource, ModbusTag, TagCommon
from edge_agent.errors import SourceError, UnitSilentError, WriteRefusedError, stop_if_cancelled
from edge_agent.link import Client, ModbusLink, shared_link
from edge_agent.reading import HandOver, Reading
from edge_agent.registers import Block, decode, encode_tag, plan_blocks
from edge_agent.stats import Probe, SourceStats
from factory.wire import Quality

__all__ = ["ModbusReader", "Probed"]

log = logging.getLogger(__name__)
Decoded = float | int | bool | str
Probed = tuple[ModbusTag, Decoded | None]
_READS = {
    "coil": "read_coils", "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers", "input": "read_input_registers",
}  # fmt: skip


class ModbusReader:
    """Reads (and writes) the tags of one Modbus source over its link: an ``edge_agent.source.Source``.

    ``run`` polls each group of tags on its own fixed schedule; ``async with`` only connects
    (for a probe or a test). Sources on one serial port share the link (``edge_agent.link``)."""

    def __init__(self, source: ModbusSource) -> None:
        self.source = source
        self._link: ModbusLink | None = None
        self._exit = contextlib.AsyncExitStack()
        self.stats = SourceStats()

    async def __aenter__(self) -> ModbusReader:
        self._link = await self._exit.enter_async_context(shared_link(self.source))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()

    @property
    def ready(self) -> bool:
        return self._link is not None

    async def run(self, hand_over: HandOver) -> None:
        """Connect, then poll every group of tags on its period until cancelled (the link reconnects)."""
        async with self, asyncio.TaskGroup() as group:
            for period, blocks in self.poll_groups().items():
                group.create_task(self._poll(period, blocks, hand_over), name=f"modbus:{self.source.name}:{period}ms")

    async def _poll(self, period: int, blocks: list[Block], hand_over: HandOver) -> None:
        async for readings in poll_forever(self, period, blocks):
            stop_if_cancelled()
            await hand_over(readings)

    async def probe(self) -> Probe:
        async with self:
            read = await self.probe_tags()
        return Probe([(tag.name, value, Quality.BAD if value is None else Quality.GOOD) for tag, value in read])

    @property
    def link(self) -> ModbusLink:
        if self._link is None:
            raise SourceError(f"modbus {self.source.name} is not open")
        return self._link

    def poll_groups(self) -> dict[int, list[Block]]:
        """Blocks to read, grouped by poll period in milliseconds."""
        by_period: dict[int, list[ModbusTag]] = {}
        for tag in self.source.tags:
            if tag.type == "string":
                continue  # text has no place in a numeric telemetry point
            by_period.setdefault(tag.poll_ms or self.source.poll_ms, []).append(tag)
        return {period: plan_blocks(self.source, tags) for period, tags in by_period.items()}

    async def read(self, blocks: Sequence[Block]) -> list[Reading]:
        """One poll of the given blocks, in order; a failed block gives its tags quality bad."""
        readings: list[Reading] = []
        began = time.perf_counter()
        for block in blocks:
            ts = int(time.time() * 1000)
            values = await self._fetch(block)
            if values is None:
                readings.append(Reading.at(block.decode.names, ts, [None] * len(block.tags), Quality.BAD))
                continue
            readings.append(Reading.at(block.decode.names, ts, block.decode(values)))
        self.stats.last_poll_s = time.perf_counter() - began
        return readings

    async def probe_tags(self) -> list[Probed]:
        """Every tag once, text included (for ``factory edge check``); None when unread.

        Tag by tag through ``decode``, the reference the block decoder of ``read`` is tested
        against; the check is not on the hot path."""
        readings: list[Probed] = []
        for block in plan_blocks(self.source, self.source.tags):
            values = await self._fetch(block)
            if values is None:
                readings.extend((tag, None) for tag in block.tags)
            else:
                readings.extend(self._decode(block, values))
        return readings

    async def _fetch(self, block: Block) -> list[int] | list[bool] | None:
        """The block's registers or bits, or None when it could not be read (counted, logged)."""
        self.stats.polls += 1

        async def read(client: Client) -> Any:
            call: Callable[..., Awaitable[Any]] = getattr(client, _READS[block.table])
            return await call(block.address, count=block.count, device_id=self.source.unit)

        what = f"read {block.table} {block.address}+{block.count}"
        try:
            response = await self.link.call(self.source.unit, what, read)
            bits = block.table in ("coil", "discrete")
            values: list[int] | list[bool] = response.bits if bits else response.registers
            if len(values) < block.count:
                raise SourceError(f"{what}: device sent only {len(values)}")
        except SourceError as exc:
            self.stats.errors += 1
            if not isinstance(exc, UnitSilentError):  # the link logs silence once per backoff step
                log.warning("modbus %s: %s", self.source.name, exc)
            return None
        finally:
            self.stats.reconnects = self.link.reconnects
        return values[: block.count]

    def _decode(self, block: Block, values: list[int] | list[bool]) -> Iterator[tuple[ModbusTag, Decoded]]:
        for tag in block.tags:
            start = tag.address - block.address
            if block.table in ("coil", "discrete"):
                yield tag, bool(values[start])
                continue
            registers = [int(v) for v in values[start : start + tag.registers]]
            yield tag, decode(registers, tag, *self._orders(tag))

    def _orders(self, tag: ModbusTag) -> tuple[str, str]:
        return tag.byte_order or self.source.byte_order, tag.word_order or self.source.word_order

    async def write(self, tag: TagCommon, value: float | int | bool | str) -> None:
        """Write ``value`` (engineering units, already checked against the tag's type and
        range) to the device: a coil, a bit of a holding register (read-modify-write, alone
        on the link), or the tag's registers. Raises ``WriteRefusedError``."""
        assert isinstance(tag, ModbusTag)  # a source holds tags of its own kind
        if self._link is None:
            raise WriteRefusedError("device_error", f"source {self.source.name} is not connected")
        unit, address = self.source.unit, tag.address

        async def write_coil(client: Client) -> Any:
            return await client.write_coil(address, bool(value), device_id=unit)

        async def write_bit(client: Client) -> Any:
            assert tag.bit is not None
            current = await client.read_holding_registers(address, count=1, device_id=unit)
            if current.isError():
                return current
            mask = 1 << tag.bit
            register = (current.registers[0] | mask) if value else (current.registers[0] & ~mask)
            return await client.write_register(address, register, device_id=unit)

        async def write_registers(client: Client) -> Any:
            if len(registers) == 1:
                return await client.write_register(address, registers[0], device_id=unit)
            return await client.write_registers(address, registers, device_id=unit)

        registers: list[int] = []
        if tag.table == "coil":
            operation = write_coil
        elif tag.type == "bool" and tag.bit is not None:
            operation = write_bit
        else:
            registers = [int(bool(value))] if tag.type == "bool" else self._registers_of(tag, value)
            operation = write_registers
        try:
            await self.link.call(unit, f"write {tag.name}", operation)
        except SourceError as exc:
            raise WriteRefusedError("device_error", str(exc)) from exc

    def _registers_of(self, tag: ModbusTag, value: float | int | bool | str) -> list[int]:
        assert not isinstance(value, bool)
        try:
            return encode_tag(value, tag, *self._orders(tag))
        except ValueError as exc:
            raise WriteRefusedError("out_of_range", f"{tag.name}: {exc}") from exc


async def poll_forever(reader: ModbusReader, period_ms: int, blocks: list[Block]) -> AsyncIterator[list[Reading]]:
    """Yield one list of points per period, on a fixed schedule (no drift)."""
    period = period_ms / 1000
    next_at = time.monotonic()
    while True:
        yield await reader.read(blocks)
        next_at += period
        delay = next_at - time.monotonic()
        if delay < 0:  # overran: skip missed slots rather than burst
            next_at = time.monotonic()
            delay = 0
        await asyncio.sleep(delay)
