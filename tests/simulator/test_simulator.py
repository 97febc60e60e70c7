"""The simulated sugar mill: a deterministic model, real Modbus and OPC UA servers, the shipped edge config.

Server tests start ``SimulatedPlant`` on free ports with a tick far in the future, pin the
signals they look at with ``hold`` and publish with ``refresh()``, so every value read
over the wire is known exactly. They read with bare pymodbus / asyncua clients and decode
with the clients' own converters, not with the simulator's code.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import statistics
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import BadUserAccessDenied
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.config import EdgeConfig
from simulator import (
    DEFAULT_CONFIG_PATH,
    EDGE_TAGS,
    NAMESPACE_URI,
    NODE_MAP,
    REGISTER_MAP,
    UNITS,
    EdgeTag,
    ModbusPoint,
    PlantModel,
    SimulatedPlant,
    SimulatorError,
    UnknownSignalError,
    render_default_edge_config,
    render_edge_config,
    signal_catalog,
)
from simulator.modbus_server import TABLE_SIZE

NO_TICK = 3600.0  # the background tick never fires during a test: values change only on refresh()
TAG_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# A value for every signal, chosen to exercise signs, both words of 32-bit values and float32 rounding.
HELD: dict[str, float | int | bool] = {
    "boiler1.pressure_setpoint": 13.25,
    "boiler1.drum_pressure": 12.7,
    "boiler1.burner_on": True,
    "boiler1.steam_flow": 43.21,
    "boiler1.drum_level": -12.3,
    "boiler1.steam_total": 487_654,
    "mill1.state": 2,
    "mill1.motor_speed": 512.3,
    "mill1.motor_current": 183.25,
    "mill1.motor_power": -1234.5,
    "mill1.fault": True,
    "mill2.state": 1,
    "mill2.motor_speed": 987.6,
    "mill2.motor_current": 158.5,
    "mill2.motor_power": 163.4,
    "mill2.fault": False,
    "mill1.cane_crushed": 1_253_001,
    "mill2.cane_crushed": 1_180_444,
    "centrifugal1.spinning": True,
    "centrifugal1.vibration_rms": 4.75,
    "centrifugal1.bearing_temp": 71.5,
    "centrifugal1.batch_count": 70_000,
    "centrifugal2.spinning": False,
    "centrifugal2.vibration_rms": 1.31,
    "centrifugal2.bearing_temp": 52.25,
    "centrifugal2.batch_count": 12_345,
    "turbine1.speed": 6012.5,
    "turbine1.power": 2950.25,
}


def float32(value: float) -> float:
    (single,) = struct.unpack(">f", struct.pack(">f", value))
    return float(single)


def run_hours(model: PlantModel, hours: float, step_s: float = 1.0) -> list[dict[str, Any]]:
    return [_step(model, i * step_s) for i in range(int(hours * 3600 / step_s))]


def _step(model: PlantModel, now: float) -> dict[str, Any]:
    model.step(now)
    return model.snapshot()


# --------------------------------------------------------------------------- the model


def test_the_same_seed_gives_the_same_plant() -> None:
    a, b, other = PlantModel(seed=7), PlantModel(seed=7), PlantModel(seed=8)
    for i in range(600):
        for model in (a, b, other):
            model.step(1000.0 + i * 0.5)
        assert a.snapshot() == b.snapshot()
    assert a.snapshot() != other.snapshot()


def test_signals_behave_like_a_sugar_mill() -> None:
    rows = run_hours(PlantModel(seed=1), hours=4)

    def series(name: str) -> list[Any]:
        return [row[name] for row in rows]

    assert 11.5 < min(series("boiler1.drum_pressure")) < 13.0 < max(series("boiler1.drum_pressure")) < 14.5
    assert set(series("boiler1.burner_on")) == {True, False}
    for counter in ("boiler1.steam_total", "mill1.cane_crushed", "centrifugal1.batch_count"):
        values = series(counter)
        assert all(isinstance(v, int) for v in values)
        assert values == sorted(values), counter
        assert values[-1] > values[0], counter
    assert series("mill1.cane_crushed")[0] > 65_535  # both words of the uint32 carry data
    for mill in ("mill1", "mill2"):
        states = series(f"{mill}.state")
        assert set(states) <= {0, 1, 2}
        assert states.count(1) / len(states) > 0.9  # mostly running
        assert any(a == 1 and b != 1 for a, b in itertools.pairwise(states))  # but it does stop
        stopped = [row[f"{mill}.motor_current"] for row in rows if row[f"{mill}.state"] != 1]
        assert stopped
        assert max(stopped) == 0.0


def test_centrifugal1_bearing_wears_and_centrifugal2_does_not() -> None:
    rows = run_hours(PlantModel(seed=1), hours=4)
    first, last = rows[:3600], rows[-3600:]

    def drift(name: str) -> float:
        return float(statistics.mean(r[name] for r in last) - statistics.mean(r[name] for r in first))

    assert drift("centrifugal1.vibration_rms") > 0.8  # 0.35 mm/s per hour over three hours
    assert drift("centrifugal1.bearing_temp") > 4.0
    assert abs(drift("centrifugal2.vibration_rms")) < 0.2
    assert abs(drift("centrifugal2.bearing_temp")) < 1.0


def test_hold_pins_a_signal_until_released() -> None:
    model = PlantModel(seed=3)
    model.step(0.0)
    model.hold("boiler1.drum_pressure", 12.7)
    assert model.value("boiler1.drum_pressure") == 12.7  # at once, before any step
    for second in range(1, 30):
        model.step(float(second))
        assert model.value("boiler1.drum_pressure") == 12.7
    assert dict(model.held) == {"boiler1.drum_pressure": 12.7}
    model.release("boiler1.drum_pressure")
    model.step(30.0)
    assert model.value("boiler1.drum_pressure") != 12.7
    assert not model.held


def test_a_held_signal_drives_the_signals_that_depend_on_it() -> None:
    model = PlantModel(seed=3)
    model.hold("mill1.state", 2)
    model.step(0.0)
    model.step(1.0)
    assert model.value("mill1.fault") is True
    assert model.value("mill1.motor_current") == 0.0
    assert model.value("mill1.motor_power") == 0.0


def test_holding_does_not_disturb_other_signals() -> None:
    free, pinned = PlantModel(seed=5), PlantModel(seed=5)
    pinned.hold("turbine1.speed", 6100.0)
    for second in range(100):
        free.step(float(second))
        pinned.step(float(second))
    assert pinned.value("turbine1.speed") == 6100.0
    assert free.value("centrifugal2.vibration_rms") == pinned.value("centrifugal2.vibration_rms")


def test_hold_checks_names_and_types() -> None:
    model = PlantModel()
    with pytest.raises(UnknownSignalError):
        model.hold("boiler9.drum_pressure", 1.0)
    with pytest.raises(KeyError):  # UnknownSignalError is also a KeyError
        model.value("nope")
    with pytest.raises(TypeError):
        model.hold("boiler1.burner_on", 1)
    with pytest.raises(TypeError):
        model.hold("boiler1.drum_pressure", value=True)
    with pytest.raises(TypeError):
        model.hold("mill1.cane_crushed", 12.5)
    model.hold("boiler1.drum_pressure", 13)  # an int is fine for an analog signal
    assert model.value("boiler1.drum_pressure") == 13.0
    assert isinstance(model.value("boiler1.drum_pressure"), float)


def test_only_setpoints_are_writable_and_the_pressure_follows_its_setpoint() -> None:
    model = PlantModel(seed=2)
    with pytest.raises(SimulatorError):
        model.write("boiler1.drum_pressure", 14.0)
    model.write("boiler1.pressure_setpoint", 10.5)
    rows = run_hours(model, hours=0.5)
    assert statistics.mean(r["boiler1.drum_pressure"] for r in rows) == pytest.approx(10.5, abs=0.3)


# --------------------------------------------------------------------------- maps and config


def test_register_map_fits_its_tables_without_overlaps() -> None:
    used: dict[tuple[int, str], set[int]] = {}
    for point in REGISTER_MAP:
        cells = set(range(point.address, point.address + point.width))
        key = (point.unit, point.table)
        assert not cells & used.get(key, set()), f"{point.signal} overlaps"
        used.setdefault(key, set()).update(cells)
        assert max(cells) < TABLE_SIZE
        assert (point.type == "bool") == (point.table in ("coil", "discrete"))
    assert {p.unit for p in REGISTER_MAP} == {u.unit_id for u in UNITS} == {1, 2}


def test_every_signal_is_served_exactly_once() -> None:
    served = [p.signal for p in REGISTER_MAP] + [p.signal for p in NODE_MAP]
    assert sorted(served) == sorted(signal_catalog())
    assert set(EDGE_TAGS) == set(signal_catalog()) == set(HELD)


def test_both_word_orders_are_on_the_wire() -> None:
    orders = {(p.type, p.word_order) for p in REGISTER_MAP if p.width == 2}
    assert {("float32", "big"), ("float32", "little"), ("uint32", "big"), ("uint32", "little")} <= orders


def test_shipped_edge_config_is_the_rendered_default() -> None:
    assert DEFAULT_CONFIG_PATH.read_text(encoding="utf-8") == render_default_edge_config()


def test_rendered_config_has_the_documented_shape_and_loads_in_the_edge_agent() -> None:
    config = yaml.safe_load(render_default_edge_config())
    assert list(config) == ["site", "device", "mqtt", "buffer", "publish", "sources"]
    assert config["mqtt"] == {"url": "mqtt://127.0.0.1:1883"}
    assert config["buffer"]["path"] == "./var/edge-buffer.db"
    modbus = [s for s in config["sources"] if s["kind"] == "modbus"]
    assert sorted(s["unit"] for s in modbus) == [1, 2]
    allowed = {"name", "table", "address", "type", "word_order", "byte_order", "scale", "offset", "unit", "writable"}
    for source in modbus:
        assert (source["host"], source["port"], source["byte_order"]) == ("127.0.0.1", 5020, "big")
        for tag in source["tags"]:
            assert set(tag) <= allowed
            assert TAG_NAME.fullmatch(tag["name"])
    (opcua,) = (s for s in config["sources"] if s["kind"] == "opcua")
    assert (opcua["endpoint"], opcua["mode"]) == ("opc.tcp://127.0.0.1:4840", "subscribe")
    assert "security" not in opcua
    assert all(set(tag) <= {"name", "node", "unit"} for tag in opcua["tags"])
    EdgeConfig.model_validate(config)  # the agent's own schema accepts it


def test_docs_list_every_register_and_node() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "simulator.md").read_text(encoding="utf-8")
    for point in REGISTER_MAP:
        span = str(point.address) if point.width == 1 else f"{point.address}-{point.address + point.width - 1}"
        assert f"| {point.unit} | {point.table} | {span} | {point.type} |" in docs, point.signal
        assert f"`{point.signal}` |" in docs
    for node in NODE_MAP:
        assert f"| `{node.node_id}` | {node.variant.name} |" in docs


def test_render_rejects_names_that_cannot_be_topic_segments() -> None:
    with pytest.raises(ValueError, match="site"):
        render_edge_config(
            site="Mill A",
            device="pi",
            mqtt_url="mqtt://h",
            modbus_host="h",
            modbus_port=502,
            opcua_endpoint="opc.tcp://h:4840",
            buffer_path="b.db",
        )


def test_expected_values_spell_out_scale_offset_and_float32() -> None:
    assert EDGE_TAGS["boiler1.drum_pressure"].expected(12.7) == 12.7  # 1270 counts of 0.01 bar, exactly
    assert EDGE_TAGS["boiler1.drum_level"].expected(-12.3) == -12.3  # 1877 * 0.1 - 200
    assert EDGE_TAGS["boiler1.steam_flow"].expected(43.21) == float32(43.21)
    assert EDGE_TAGS["mill1.cane_crushed"].expected(1_253_001) == 1_253_001
    assert EDGE_TAGS["centrifugal1.vibration_rms"].expected(4.75) == 4.75
    assert EDGE_TAGS["centrifugal1.spinning"].expected(model_value=True) is True


@given(st.floats(min_value=-300.0, max_value=300.0))
def test_scaled_int16_round_trips_within_half_a_step(value: float) -> None:
    point = ModbusPoint(1, "holding", 0, "int16", "x.y", scale=0.01)
    assert abs(point.decode(point.encode(value)) - value) <= 0.005 + 1e-9


@given(st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from(["big", "little"]))
def test_uint32_round_trips_in_both_word_orders(value: int, order: str) -> None:
    point = ModbusPoint(1, "input", 0, "uint32", "x.y", word_order=order)  # type: ignore[arg-type]
    registers = point.encode(value)
    assert point.decode(registers) == value
    high, low = (registers[0], registers[1]) if order == "big" else (registers[1], registers[0])
    assert (high << 16) | low == value


def test_integers_clamp_instead_of_wrapping() -> None:
    point = ModbusPoint(1, "holding", 0, "int16", "x.y", scale=0.01)
    assert point.encode(400.0) == [0x7FFF]
    assert point.encode(-400.0) == [0x8000]


# --------------------------------------------------------------------------- the servers


@pytest.fixture
async def plant() -> AsyncIterator[SimulatedPlant]:
    async with SimulatedPlant(modbus_port=0, opcua_port=0, seed=1, tick_s=NO_TICK) as running:
        for name, value in HELD.items():
            running.model.hold(name, value)
        await running.refresh()
        yield running


async def read_registers(client: AsyncModbusTcpClient, point: ModbusPoint) -> list[int] | list[bool]:
    readers = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }
    response = await readers[point.table](point.address, count=point.width, device_id=point.unit)
    assert not response.isError(), response
    return list(response.bits[: point.width]) if point.type == "bool" else list(response.registers)


def client_decode(client: AsyncModbusTcpClient, point: ModbusPoint, raw: list[Any]) -> float | int | bool:
    """Decode the way a config reader would, with pymodbus's converter rather than the simulator's."""
    if point.type == "bool":
        return bool(raw[0])
    datatype = getattr(client.DATATYPE, point.type.upper())
    value = client.convert_from_registers(raw, datatype, word_order=point.word_order)
    assert isinstance(value, int | float)
    if point.scale == 1.0 and point.offset == 0.0:
        return value
    return value * point.scale + point.offset


@pytest.mark.asyncio
@pytest.mark.integration
async def test_modbus_serves_known_registers(plant: SimulatedPlant) -> None:
    async with AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2) as client:
        boiler = (await client.read_holding_registers(0, count=5, device_id=1)).registers
        assert boiler[0] == 1270  # drum pressure 12.7 bar as int16 in 0.01 bar
        assert boiler[1] == 1325  # setpoint 13.25 bar
        assert boiler[2:4] == [0x422C, 0xD70A]  # 43.21 as float32, ABCD
        assert boiler[4] == 1877  # (-12.3 mm + 200) / 0.1
        steam = (await client.read_input_registers(0, count=2, device_id=1)).registers
        assert steam == [487_654 & 0xFFFF, 487_654 >> 16]  # uint32 CDAB
        coils = (await client.read_coils(0, count=8, device_id=1)).bits
        assert coils[:8] == [False, False, False, True, False, False, False, False]
        assert (await client.read_coils(3, count=1, device_id=1)).bits[0] is True

        mills = (await client.read_holding_registers(0, count=8, device_id=2)).registers
        assert mills[:4] == [2, 1, 5123, 9876]  # states, then speeds in 0.1 rpm
        current = client.convert_from_registers(mills[4:6], client.DATATYPE.FLOAT32, word_order="little")
        assert current == 183.25  # exactly representable, CDAB
        assert mills[4:6] == [0x4000, 0x4337]
        counters = (await client.read_input_registers(0, count=4, device_id=2)).registers
        assert counters[:2] == [1_253_001 >> 16, 1_253_001 & 0xFFFF]  # uint32 ABCD
        power = client.convert_from_registers(counters[2:4], client.DATATYPE.INT32, word_order="little")
        assert power == -12345  # -1234.5 kW in 0.1 kW
        assert (await client.read_discrete_inputs(0, count=2, device_id=2)).bits[:2] == [True, False]


@pytest.mark.asyncio
@pytest.mark.integration
async def test_every_modbus_tag_reads_its_expected_value(plant: SimulatedPlant) -> None:
    async with AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2) as client:
        for point in REGISTER_MAP:
            read = client_decode(client, point, await read_registers(client, point))
            expected = EDGE_TAGS[point.signal].expected(HELD[point.signal])
            assert read == pytest.approx(expected, rel=1e-12), point.signal  # a bare client does not round
            assert read == pytest.approx(HELD[point.signal], abs=point.scale / 2 + 1e-4), point.signal


@pytest.mark.asyncio
@pytest.mark.integration
async def test_modbus_writes_reach_only_writable_points(plant: SimulatedPlant) -> None:
    plant.model.release("boiler1.pressure_setpoint")
    async with AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2) as client:
        written = await client.write_register(1, 1350, device_id=1)
        assert not written.isError()
        assert plant.model.value("boiler1.pressure_setpoint") == 13.5
        await plant.refresh()
        assert (await client.read_holding_registers(1, count=1, device_id=1)).registers == [1350]

        assert not (await client.write_registers(1, [1360], device_id=1)).isError()
        assert plant.model.value("boiler1.pressure_setpoint") == 13.6
        spanning = await client.write_registers(0, [1300, 1300], device_id=1)  # also covers the pressure
        assert spanning.isError()
        assert plant.model.value("boiler1.pressure_setpoint") == 13.6

        refused = await client.write_register(0, 999, device_id=1)
        assert refused.isError()
        assert refused.exception_code == 0x02
        assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1270]
        assert (await client.write_coil(3, value=False, device_id=1)).isError()

        absent = await client.read_holding_registers(0, count=1, device_id=9)
        assert absent.isError()
        assert absent.exception_code == 0x0B
        beyond = await client.read_holding_registers(TABLE_SIZE, count=1, device_id=1)
        assert beyond.isError()
        assert beyond.exception_code == 0x02


@pytest.mark.asyncio
@pytest.mark.integration
async def test_opcua_serves_the_nodes_of_the_rendered_config(plant: SimulatedPlant) -> None:
    config = yaml.safe_load(
        render_edge_config(
            site="mill-a",
            device="test-pi",
            mqtt_url="mqtt://127.0.0.1:1883",
            modbus_host="127.0.0.1",
            modbus_port=plant.modbus_port,
            opcua_endpoint=plant.opcua_endpoint,
            buffer_path="buffer.db",
        )
    )
    (source,) = (s for s in config["sources"] if s["kind"] == "opcua")
    types = {p.signal: p.variant for p in NODE_MAP}
    async with Client(source["endpoint"], timeout=5) as client:
        assert await client.get_namespace_index(NAMESPACE_URI) == 2
        for tag in source["tags"]:
            data = await client.get_node(tag["node"]).read_data_value()
            assert data.Value is not None
            assert data.SourceTimestamp is not None
            assert data.Value.VariantType == types[tag["name"]]
            assert data.Value.Value == EDGE_TAGS[tag["name"]].expected(HELD[tag["name"]]), tag["name"]
        node = client.get_node("ns=2;s=Centrifugal1.VibrationRMS")
        with pytest.raises(BadUserAccessDenied):  # clients read; only the plant writes
            await node.write_value(ua.Variant(9.0, ua.VariantType.Double))
        vibration = await node.read_value()
        batches = await client.get_node("ns=2;s=Centrifugal1.BatchCount").read_data_value()
    assert vibration == 4.75
    assert batches.Value is not None
    assert batches.Value.Value == 70_000
    assert batches.Value.VariantType == ua.VariantType.UInt32


@pytest.mark.asyncio
@pytest.mark.integration
async def test_values_move_on_each_tick_and_everything_stops_cleanly() -> None:
    before = asyncio.all_tasks()
    async with SimulatedPlant(tick_s=0.05, seed=4) as plant:
        port, opcua_port = plant.modbus_port, plant.opcua_port
        async with AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2) as client:
            seen: set[tuple[int, ...]] = set()
            async with asyncio.timeout(5):
                while len(seen) < 3:  # motor current carries noise: every tick changes it
                    seen.add(tuple((await client.read_holding_registers(4, count=2, device_id=2)).registers))
                    await asyncio.sleep(0.05)
        serving = asyncio.create_task(plant.run_forever())
        await asyncio.sleep(0.1)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        with pytest.raises(SimulatorError):  # a fixed port that is taken fails loudly
            async with SimulatedPlant(modbus_port=port, tick_s=NO_TICK):
                pass
    assert asyncio.all_tasks() == before
    for closed in (port, opcua_port):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", closed)


def test_constructing_does_no_io() -> None:
    plant = SimulatedPlant(modbus_port=1, opcua_port=1)  # privileged ports: binding would fail
    with pytest.raises(SimulatorError):
        _ = plant.modbus_port
    with pytest.raises(ValueError, match="tick_s"):
        SimulatedPlant(tick_s=0)
    assert isinstance(EDGE_TAGS["boiler1.drum_pressure"], EdgeTag)
    assert math.isclose(plant.model.value("boiler1.pressure_setpoint"), 13.0)
