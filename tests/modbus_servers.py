"""Real pymodbus servers for the edge tests: TCP on a free port, or RTU on one end of a
serial link (a pty pair made by socat). Every table is readable and writable, and every
request the server receives is recorded, so tests can count what went over the wire."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SIZE = 200  # registers per register table, bits per bit table
READ_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True)
class Request:
    unit: int
    function: int
    address: int
    count: int
    at: float  # monotonic time of arrival


class RecordingServer:
    """A started pymodbus server plus what it received."""

    def __init__(self) -> None:
        self.server: ModbusTcpServer | ModbusSerialServer
        self.requests: list[Request] = []

    def trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(Request(pdu.dev_id, pdu.function_code, pdu.address, pdu.count, time.monotonic()))
        return pdu

    async def set(self, unit: int, table: str, address: int, values: list[int] | list[bool]) -> None:
        await self.server.async_setValues(unit, READ_CODE[table], address, values)

    async def get(self, unit: int, table: str, address: int, count: int) -> list[int] | list[bool]:
        return await self.server.async_getValues(unit, READ_CODE[table], address, count)

    def reads(self, unit: int | None = None) -> list[Request]:
        return [r for r in self.requests if r.function in (1, 2, 3, 4) and (unit is None or r.unit == unit)]


def _device(unit: int) -> SimDevice:
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)],
            [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)],
            [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
        ),
    )


@contextlib.asynccontextmanager
async def tcp_server(units: tuple[int, ...] = (1,)) -> AsyncIterator[tuple[RecordingServer, int]]:
    """A Modbus TCP server on a free 127.0.0.1 port; yields it and the port."""
    recorder = RecordingServer()
    recorder.server = server = ModbusTcpServer(
        [_device(u) for u in units], address=("127.0.0.1", 0), trace_pdu=recorder.trace
    )
    await server.serve_forever(background=True)
    assert isinstance(server.transport, asyncio.Server)
    port = int(server.transport.sockets[0].getsockname()[1])
    try:
        yield recorder, port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def serial_link(workdir: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo-terminals (a null-modem cable): (device side, master side)."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("needs socat for a serial link (Debian package socat)")
    device, master = workdir / "ttyDEVICE", workdir / "ttyMASTER"
    proc = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={device}", f"pty,raw,echo=0,link={master}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (device.exists() and master.exists()):
            assert time.monotonic() < deadline, "socat made no pty pair"
            time.sleep(0.02)
        yield str(device), str(master)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def rtu_server(port: str, units: tuple[int, ...], baudrate: int = 38400) -> AsyncIterator[RecordingServer]:
    """A Modbus RTU server on ``port`` answering for ``units``; other unit ids get no answer,
    as on a real bus where that slave is dead (pymodbus' simulator would answer for any id,
    so the answers to other ids are dropped on their way out)."""
    recorder = RecordingServer()

    def silence_others(sending: bool, packet: bytes) -> bytes:
        return b"" if sending and packet and packet[0] not in units else packet

    recorder.server = server = ModbusSerialServer(
        [_device(u) for u in (0, *units)], port=port, baudrate=baudrate, parity="N", stopbits=1,  # a pty: no parity
        trace_pdu=recorder.trace, trace_packet=silence_others,
    )  # fmt: skip
    await server.serve_forever(background=True)
    try:
        yield recorder
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
