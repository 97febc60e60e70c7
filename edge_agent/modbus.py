"""Modbus source: polls one unit (TCP or RTU) with coalesced block reads.

pymodbus has two failure channels — a raised ``ModbusException`` and a response whose
``isError()`` is true; both become bad-quality points for the tags of that block, so a
failing block never hides or drops its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge_agent.config import ModbusSource, ModbusTag
from edge_agent.errors import SourceError
from edge_agent.reading import Reading
from edge_agent.registers import Block, plan_blocks
from edge_agent.stats import SourceStats
from factory.wire import Quality

__all__ = ["ModbusReader"]

log = logging.getLogger(__name__)
Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class ModbusReader:
    """Reads the tags of one Modbus source. Connects in ``__aenter__``."""

    def __init__(self, source: ModbusSource) -> None:
        self.source = source
        self._client: Client | None = None
        self._lock = asyncio.Lock()  # one request in flight per connection
        self.stats = SourceStats()

    async def __aenter__(self) -> ModbusReader:
        timeout = self.source.timeout_ms / 1000
        if self.source.transport == "tcp":
            assert self.source.host is not None  # checked by the config model
            self._client = AsyncModbusTcpClient(
                self.source.host, port=self.source.port, timeout=timeout, retries=0,
                reconnect_delay=0.5, reconnect_delay_max=30,
            )  # fmt: skip
        else:
            assert self.source.serial_port is not None
            self._client = AsyncModbusSerialClient(
                self.source.serial_port, baudrate=self.source.baudrate, parity=self.source.parity,
                stopbits=self.source.stopbits, timeout=timeout, retries=0,
            )  # fmt: skip
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    async def _connect(self) -> bool:
        assert self._client is not None
        if self._client.connected:
            return True
        self.stats.reconnects += 1
        try:
            return bool(await asyncio.wait_for(self._client.connect(), self.source.timeout_ms / 1000 + 1))
        except (TimeoutError, OSError, ModbusException) as exc:
            log.warning("modbus %s: cannot connect: %s", self.source.name, exc)
            return False

    def poll_groups(self) -> dict[int, list[Block]]:
        """Blocks to read, grouped by poll period in milliseconds."""
        by_period: dict[int, list[ModbusTag]] = {}
        for tag in self.source.tags:
            if tag.type == "string":
                continue  # text has no place in a numeric telemetry point
            by_period.setdefault(tag.poll_ms or self.source.poll_ms, []).append(tag)
        return {period: plan_blocks(self.source, tags) for period, tags in by_period.items()}

    async def read(self, blocks: Sequence[Block]) -> list[Reading]:
        """One poll of the given blocks, in order (one request in flight per connection)."""
        readings: list[Reading] = []
        began = time.perf_counter()
        for block in blocks:
            ts = int(time.time() * 1000)
            try:
                values = await self._read_block(block)
            except SourceError as exc:
                self.stats.errors += 1
                log.warning("modbus %s: %s", self.source.name, exc)
                readings.append(Reading.at(block.decode.names, ts, [None] * len(block.tags), Quality.BAD))
                continue
            readings.append(Reading.at(block.decode.names, ts, block.decode(values)))
        self.stats.last_poll_s = time.perf_counter() - began
        return readings

    async def _read_block(self, block: Block) -> list[int] | list[bool]:
        if not await self._connect():
            raise SourceError(f"not connected to {self.source.host or self.source.serial_port}")
        assert self._client is not None
        calls: dict[str, Callable[..., Any]] = {
            "coil": self._client.read_coils,
            "discrete": self._client.read_discrete_inputs,
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
        }
        self.stats.polls += 1
        try:
            async with self._lock:
                response = await calls[block.table](block.address, count=block.count, device_id=self.source.unit)
        except (ModbusException, OSError, TimeoutError) as exc:
            raise SourceError(f"read {block.table} {block.address}+{block.count}: {exc}") from exc
        if response.isError():
            raise SourceError(f"read {block.table} {block.address}+{block.count}: device answered {response}")
        values: list[int] | list[bool] = response.bits if block.table in ("coil", "discrete") else response.registers
        if len(values) < block.count:
            raise SourceError(f"read {block.table} {block.address}+{block.count}: device sent only {len(values)}")
        return values[: block.count]


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
