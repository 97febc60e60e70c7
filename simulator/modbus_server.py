"""The simulated mill's Modbus TCP side: a real pymodbus server fed by the plant model.

Two unit ids behave like two PLCs behind one gateway: unit 1 is the boiler house, unit 2
the mill tandem (a device that keeps its 32-bit values least significant word first, the
way many drives do). ``REGISTER_MAP`` is the single source of the layout: the server, the
rendered edge config, the docs table and the tests all read it.

The datastore is pymodbus 3.16's ``SimDevice`` / ``SimData`` (the older
``ModbusServerContext`` is a deprecated shim). Each device uses four separate tables, which
makes coil and discrete-input addresses bit addresses (coil 3 is the fourth coil). The
model is copied in with ``ModbusBaseServer.async_setValues`` using the *read* function
codes; a device ``action`` lets those through and accepts client writes (function codes 5,
6, 15, 16, 22, 23) only on writable points, which it forwards to the model.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulator.plant import PlantModel, SimulatorError, Value

logger = logging.getLogger(__name__)

Table = Literal["coil", "discrete", "holding", "input"]
RegisterType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]

TABLE_SIZE = 32  # registers per register table, bits per bit table, in every unit
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
_READ_CODE: dict[Table, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_WRITE_CODES = frozenset({5, 6, 15, 16, 22, 23})
_REGISTER_WRITE_CODES = frozenset({6, 16, 22, 23})


@dataclass(frozen=True)
class ModbusUnit:
    """One unit id on the server, which becomes one modbus source in the edge config."""

    unit_id: int
    source: str
    description: str
    word_order: WordOrder  # the device's habit; points may differ


@dataclass(frozen=True)
class ModbusPoint:
    """Where one plant signal lives on the Modbus server, and how it is encoded.

    ``value = raw * scale + offset`` as in the edge-agent config; ``word_order`` is the
    effective order of this point (``big`` = most significant register first, ABCD).
    """

    unit: int
    table: Table
    address: int
    type: RegisterType
    signal: str
    word_order: WordOrder = "big"
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    @property
    def width(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the point occupies."""
        return 1 if self.type == "bool" else struct.calcsize(_STRUCT[self.type]) // 2

    def encode(self, value: Value) -> list[int]:
        """Registers holding ``value``; integers are rounded and clamped to the type's range."""
        code = _STRUCT[self.type]
        raw = (float(value) - self.offset) / self.scale
        packed = struct.pack(f">{code}", raw if code == "f" else _clamp(round(raw), code))
        words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
        return words[::-1] if self.word_order == "little" else words

    def decode(self, registers: Sequence[int]) -> float | int:
        """What an edge agent following the config reads from these registers."""
        words = list(registers)[::-1] if self.word_order == "little" else list(registers)
        packed = b"".join(word.to_bytes(2, "big") for word in words)
        raw: float | int = struct.unpack(f">{_STRUCT[self.type]}", packed)[0]
        if self.scale == 1.0 and self.offset == 0.0:
            return raw
        if isinstance(raw, float):
            return raw * self.scale + self.offset
        # Scaled integer counts are exact decimals: 1270 * 0.01 reads 12.7, not 12.700000000000001.
        return float(Decimal(raw) * Decimal(repr(self.scale)) + Decimal(repr(self.offset)))


def _clamp(raw: int, code: str) -> int:
    bits = struct.calcsize(code) * 8
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)
    return min(max(raw, low), high)


UNITS: tuple[ModbusUnit, ...] = (
    ModbusUnit(1, "boiler_house", "Boiler house PLC", "big"),
    ModbusUnit(2, "mill_tandem", "Mill tandem drives", "little"),
)

REGISTER_MAP: tuple[ModbusPoint, ...] = (
    ModbusPoint(1, "holding", 0, "int16", "boiler1.drum_pressure", scale=0.01),
    ModbusPoint(1, "holding", 1, "int16", "boiler1.pressure_setpoint", scale=0.01, writable=True),
    ModbusPoint(1, "holding", 2, "float32", "boiler1.steam_flow"),
    ModbusPoint(1, "holding", 4, "uint16", "boiler1.drum_level", scale=0.1, offset=-200.0),  # 4-20 mA card counts
    ModbusPoint(1, "input", 0, "uint32", "boiler1.steam_total", word_order="little"),
    ModbusPoint(1, "coil", 3, "bool", "boiler1.burner_on"),
    ModbusPoint(2, "holding", 0, "uint16", "mill1.state"),
    ModbusPoint(2, "holding", 1, "uint16", "mill2.state"),
    ModbusPoint(2, "holding", 2, "int16", "mill1.motor_speed", scale=0.1),
    ModbusPoint(2, "holding", 3, "int16", "mill2.motor_speed", scale=0.1),
    ModbusPoint(2, "holding", 4, "float32", "mill1.motor_current", word_order="little"),
    ModbusPoint(2, "holding", 6, "float32", "mill2.motor_current", word_order="little"),
    ModbusPoint(2, "input", 0, "uint32", "mill1.cane_crushed"),
    ModbusPoint(2, "input", 2, "int32", "mill1.motor_power", word_order="little", scale=0.1),
    ModbusPoint(2, "input", 4, "int32", "mill2.motor_power", word_order="little", scale=0.1),
    ModbusPoint(2, "discrete", 0, "bool", "mill1.fault"),
    ModbusPoint(2, "discrete", 1, "bool", "mill2.fault"),
    ModbusPoint(2, "input", 6, "uint32", "mill2.cane_crushed"),
)


class _UnitAction:
    """The ``SimDevice`` action of one unit: refuses writes except to writable points."""

    def __init__(self, unit: int, model: PlantModel) -> None:
        self._model = model
        self._writable = {p.address: p for p in REGISTER_MAP if p.unit == unit and p.writable}

    async def action(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        _count: int,
        _registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Called by pymodbus before every access; a bound method passes its coroutine check."""
        if function_code not in _WRITE_CODES or set_values is None:
            return None  # a read, or the server's own refresh (sent with read codes)
        if function_code not in _REGISTER_WRITE_CODES:
            return ExcCodes.ILLEGAL_ADDRESS  # no writable coils
        words = [int(v) for v in set_values]
        updates: list[tuple[ModbusPoint, Value]] = []
        offset = 0
        while offset < len(words):
            point = self._writable.get(address + offset)
            if point is None or offset + point.width > len(words):
                return ExcCodes.ILLEGAL_ADDRESS
            updates.append((point, point.decode(words[offset : offset + point.width])))
            offset += point.width
        for point, value in updates:
            logger.info("client wrote %s = %s", point.signal, value)
            self._model.write(point.signal, value)
        return None


async def _absent_unit(
    _function_code: int,
    _start_address: int,
    _address: int,
    _count: int,
    _registers: list[int],
    _set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """Answer for unit ids nobody configured, as a Modbus TCP gateway does (0x0B)."""
    return ExcCodes.GATEWAY_NO_RESPONSE


def _tables() -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
    """Fresh, fully readable tables (zeros / off), so block reads across gaps work."""
    return (
        [SimData(0, values=[False] * TABLE_SIZE, datatype=DataType.BITS)],
        [SimData(0, values=[False] * TABLE_SIZE, datatype=DataType.BITS)],
        [SimData(0, count=TABLE_SIZE, values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=TABLE_SIZE, values=0, datatype=DataType.REGISTERS)],
    )


class ModbusSimServer:
    """A pymodbus TCP server whose registers mirror the plant model on each ``refresh``."""

    def __init__(self, model: PlantModel, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._model = model
        self._host = host
        self._requested_port = port
        self._server: ModbusTcpServer | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise SimulatorError("the Modbus server is not running")
        return self._port

    async def start(self) -> None:
        """Bind and listen; port 0 binds a free port, readable afterwards from ``port``."""
        devices = [SimDevice(id=0, simdata=_tables(), action=_absent_unit)]
        for unit in UNITS:
            action = _UnitAction(unit.unit_id, self._model).action
            devices.append(SimDevice(id=unit.unit_id, simdata=_tables(), action=action))
        server = ModbusTcpServer(devices, address=(self._host, self._requested_port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way
            raise SimulatorError(f"cannot listen on {self._host}:{self._requested_port}: {exc}") from exc
        self._server = server
        listener = server.transport
        if not isinstance(listener, asyncio.Server):  # pymodbus keeps the listener there
            await _shutdown(server)
            raise SimulatorError("pymodbus did not expose its listening socket")
        self._port = int(listener.sockets[0].getsockname()[1])
        logger.info("Modbus TCP server listening on %s:%s", self._host, self._port)
        await self.refresh()

    async def refresh(self) -> None:
        """Copy the model's current values into every table, one atomic write per table."""
        if self._server is None:
            return
        values = self._model.snapshot()
        for unit in UNITS:
            for table, image in _images(unit.unit_id, values).items():
                await self._server.async_setValues(unit.unit_id, _READ_CODE[table], 0, image)

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._server is not None:
            await _shutdown(self._server)
            logger.info("Modbus TCP server on %s:%s stopped", self._host, self._port)
        self._server, self._port = None, None


async def _shutdown(server: ModbusTcpServer) -> None:
    """Stop listening and drop client connections (pymodbus leaves this method unannotated)."""
    await server.shutdown()  # type: ignore[no-untyped-call]


def _images(unit: int, values: dict[str, Value]) -> dict[Table, list[int] | list[bool]]:
    """The full contents of each table of ``unit`` for the given signal values."""
    registers: dict[Table, list[int]] = {"holding": [0] * TABLE_SIZE, "input": [0] * TABLE_SIZE}
    bits: dict[Table, list[bool]] = {"coil": [False] * TABLE_SIZE, "discrete": [False] * TABLE_SIZE}
    for point in REGISTER_MAP:
        if point.unit != unit:
            continue
        value = values[point.signal]
        if point.table in bits:
            bits[point.table][point.address] = bool(value)
        else:
            registers[point.table][point.address : point.address + point.width] = point.encode(value)
    return {**registers, **bits}
