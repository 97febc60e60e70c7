"""A Modbus link — one TCP connection or one serial port — and the arbiter in front of it.

A serial line (RS-485) is a bus: the master sends one request at a time, to any of the
units (slaves) on it, and must leave a silence between frames. Every source configured on
the same ``serial_port`` therefore shares one ``ModbusLink``: its lock serializes the
requests of all of them, and it waits ``inter_frame_ms`` after each exchange before the
next request goes out.

A unit that does not answer costs the whole bus its timeout on every request. So a unit
that misses an answer *rests*: for a while its requests fail at once (its tags read bad)
without touching the bus, and the pause doubles with each further miss, up to
``backoff_max_ms``. The first answer ends the rest. The other units never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from edge_agent.config import ModbusSource
from edge_agent.errors import SourceError, UnitSilentError

__all__ = ["Client", "ModbusLink", "shared_link"]

log = logging.getLogger(__name__)
Client = AsyncModbusTcpClient | AsyncModbusSerialClient
Operation = Callable[[Client], Awaitable[Any]]
FIRST_REST_S = 1.0


@dataclass(slots=True)
class _Rest:
    misses: int
    until: float


class ModbusLink:
    """Runs requests for any unit on one connection, one at a time. No I/O until the first."""

    def __init__(self, source: ModbusSource) -> None:
        self.where = f"{source.host}:{source.port}" if source.transport == "tcp" else str(source.serial_port)
        self.inter_frame_s = source.inter_frame_s
        self._timeout = source.timeout_ms / 1000
        self._rest_max = source.backoff_max_ms / 1000
        self._lock = asyncio.Lock()
        self._quiet_until = 0.0
        self._resting: dict[int, _Rest] = {}
        self.reconnects = 0
        self._client: Client
        if source.transport == "tcp":
            assert source.host is not None  # checked by the config model
            self._client = AsyncModbusTcpClient(
                source.host, port=source.port, timeout=self._timeout, retries=0,
                reconnect_delay=0.5, reconnect_delay_max=30,
            )  # fmt: skip
        else:
            assert source.serial_port is not None
            self._client = AsyncModbusSerialClient(
                source.serial_port, baudrate=source.baudrate, parity=source.parity,
                stopbits=source.stopbits, timeout=self._timeout, retries=0,
                reconnect_delay=0.5, reconnect_delay_max=30,
            )  # fmt: skip

    def close(self) -> None:
        self._client.close()

    def resting(self, unit: int) -> float:
        """Seconds until ``unit`` is asked again (0 when it is not resting)."""
        rest = self._resting.get(unit)
        return max(0.0, rest.until - time.monotonic()) if rest else 0.0

    async def connect(self) -> bool:
        if self._client.connected:
            return True
        self.reconnects += 1
        try:
            return bool(await asyncio.wait_for(self._client.connect(), self._timeout + 1))
        except (TimeoutError, OSError, ModbusException) as exc:
            log.warning("modbus %s: cannot connect: %s", self.where, exc)
            return False

    async def call(self, unit: int, what: str, operation: Operation) -> Any:
        """Run ``operation`` (one request, or a read-modify-write) for ``unit``, alone on the
        link; returns the response. Raises ``UnitSilentError`` when the unit does not answer
        or is resting, ``SourceError`` for any other failure, an exception response included."""
        async with self._lock:
            if wait := self.resting(unit):
                raise UnitSilentError(f"{what}: unit {unit} on {self.where} is silent (asked again in {wait:.1f}s)")
            if not await self.connect():
                raise SourceError(f"{what}: not connected to {self.where}")
            if (pause := self._quiet_until - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            try:
                response = await operation(self._client)
            except ModbusIOException as exc:  # no (valid) answer within the timeout
                self._missed(unit)
                raise UnitSilentError(f"{what}: unit {unit} on {self.where} did not answer") from exc
            except (ModbusException, OSError, TimeoutError) as exc:
                raise SourceError(f"{what}: {exc}") from exc
            finally:
                self._quiet_until = time.monotonic() + self.inter_frame_s
        if self._resting.pop(unit, None) is not None:
            log.info("modbus %s: unit %d answers again", self.where, unit)
        if response.isError():
            raise SourceError(f"{what}: unit {unit} answered {response}")
        return response

    def _missed(self, unit: int) -> None:
        misses = self._resting[unit].misses + 1 if unit in self._resting else 1
        pause = min(FIRST_REST_S * 2 ** (misses - 1), self._rest_max)
        self._resting[unit] = _Rest(misses, time.monotonic() + pause)
        log.warning("modbus %s: unit %d did not answer (%d in a row); asking again in %.1fs",
                    self.where, unit, misses, pause)  # fmt: skip


_shared: dict[str, tuple[ModbusLink, int]] = {}


@contextlib.asynccontextmanager
async def shared_link(source: ModbusSource) -> AsyncIterator[ModbusLink]:
    """The link of ``source``, shared with every other source on the same serial port
    (one bus, one arbiter); a TCP source has a connection of its own."""
    key = source.link_key
    link, users = _shared.get(key, (None, 0))
    if link is None:
        link = ModbusLink(source)
    _shared[key] = (link, users + 1)
    try:
        await link.connect()
        yield link
    finally:
        link, users = _shared[key]
        if users == 1:
            del _shared[key]
            link.close()
        else:
            _shared[key] = (link, users - 1)
