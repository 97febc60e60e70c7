"""The Modbus source against a real pymodbus TCP server: every type in every byte and word
order (set per source and per tag), bit fields, and block coalescing counted on the wire.

Expected register images are built here from ``struct`` and the order's definition
(ABCD = most significant byte first), not with the agent's own encoder."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from modbus_servers import tcp_server

from edge_agent.config import ModbusSource
from edge_agent.modbus import ModbusReader
from factory.wire import Quality

pytestmark = pytest.mark.integration

VALUES: dict[str, Any] = {
    "int16": -12345, "uint16": 0xBEEF, "int32": -123456789, "uint32": 0xDEADBEEF,
    "int64": -1234567890123456789, "uint64": 0xFEDCBA9876543210,
    "float32": struct.unpack(">f", struct.pack(">f", 123.456))[0], "float64": -9876.54321,
}  # fmt: skip
CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f",
         "float64": "d"}  # fmt: skip
# (byte_order, word_order) for each of the four orders
ORDERS = {"ABCD": ("big", "big"), "CDAB": ("big", "little"), "BADC": ("little", "big"), "DCBA": ("little", "little")}


def on_wire(value: Any, type_: str, order: str) -> list[int]:
    """Registers as a device in this order holds them."""
    data = struct.pack(">" + CODES[type_], value)
    pairs = [data[i : i + 2] for i in range(0, len(data), 2)]
    if order in ("BADC", "DCBA"):
        pairs = [p[::-1] for p in pairs]
    if order in ("CDAB", "DCBA"):
        pairs.reverse()
    return [int.from_bytes(p, "big") for p in pairs]


def layout() -> list[tuple[str, str, int]]:
    """(type, order, address): every type in every order, side by side in holding registers."""
    out, address = [], 0
    for type_ in VALUES:
        for order in ORDERS:
            out.append((type_, order, address))
            address += struct.calcsize(CODES[type_]) // 2
    return out


def source(port: int, tags: list[dict[str, Any]], **extra: Any) -> ModbusSource:
    return ModbusSource.model_validate(
        {"name": "plc", "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1, "tags": tags, **extra}
    )


async def read_all(src: ModbusSource) -> dict[str, Any]:
    async with ModbusReader(src) as reader:
        readings = await reader.probe_tags()
    return {tag.name: value for tag, value in readings}


@pytest.mark.parametrize("per", ["source", "tag"])
async def test_every_type_in_every_order(per: str) -> None:
    """Per source: one source per order with the orders as its defaults. Per tag: one source
    with the opposite defaults, every tag naming its own orders."""
    async with tcp_server() as (server, port):
        for type_, order, address in layout():
            await server.set(1, "holding", address, on_wire(VALUES[type_], type_, order))
        results: dict[str, Any] = {}
        if per == "source":
            for order, (byte_order, word_order) in ORDERS.items():
                tags = [{"name": f"{t}.{o}", "table": "holding", "address": a, "type": t}
                        for t, o, a in layout() if o == order]  # fmt: skip
                results |= await read_all(source(port, tags, byte_order=byte_order, word_order=word_order))
        else:
            tags = [{"name": f"{t}.{o}", "table": "holding", "address": a, "type": t, "byte_order": ORDERS[o][0],
                     "word_order": ORDERS[o][1]} for t, o, a in layout()]  # fmt: skip
            results = await read_all(source(port, tags, byte_order="little", word_order="little"))
    expected = {f"{t}.{o}": VALUES[t] for t, o, _ in layout()}
    assert results == expected


async def test_bool_string_and_scale() -> None:
    async with tcp_server() as (server, port):
        await server.set(1, "coil", 7, [True])
        await server.set(1, "discrete", 9, [True])
        await server.set(1, "holding", 0, [0b1000_0000_0000_0101, 1, 0])  # bits 0, 2 and 15; a non-zero register
        await server.set(1, "input", 3, [1234 & 0xFFFF, (-1) & 0xFFFF])
        text = b"MILL-7\x00\x00"
        await server.set(1, "holding", 10, [int.from_bytes(text[i : i + 2], "big") for i in range(0, 8, 2)])
        await server.set(1, "holding", 20, [int.from_bytes(text[i : i + 2][::-1], "big") for i in range(0, 8, 2)])
        tags = [
            {"name": "coil", "table": "coil", "address": 7, "type": "bool"},
            {"name": "coil_off", "table": "coil", "address": 8, "type": "bool"},
            {"name": "discrete", "table": "discrete", "address": 9, "type": "bool"},
            {"name": "bit0", "table": "holding", "address": 0, "type": "bool", "bit": 0},
            {"name": "bit1", "table": "holding", "address": 0, "type": "bool", "bit": 1},
            {"name": "bit2", "table": "holding", "address": 0, "type": "bool", "bit": 2},
            {"name": "bit15", "table": "holding", "address": 0, "type": "bool", "bit": 15},
            {"name": "whole_on", "table": "holding", "address": 1, "type": "bool"},
            {"name": "whole_off", "table": "holding", "address": 2, "type": "bool"},
            {"name": "scaled", "table": "input", "address": 3, "type": "uint16", "scale": 0.1, "offset": -5},
            {"name": "minus_one", "table": "input", "address": 4, "type": "int16", "scale": 0.5},
            {"name": "text", "table": "holding", "address": 10, "type": "string", "length": 7},
            {"name": "text_swapped", "table": "holding", "address": 20, "type": "string", "length": 8,
             "byte_order": "little"},
        ]  # fmt: skip
        results = await read_all(source(port, tags))
    assert results == {
        "coil": True, "coil_off": False, "discrete": True, "bit0": True, "bit1": False, "bit2": True, "bit15": True,
        "whole_on": True, "whole_off": False, "scaled": 118.4, "minus_one": -0.5, "text": "MILL-7",
        "text_swapped": "MILL-7",
    }  # fmt: skip


async def test_blocks_are_coalesced_and_counted_on_the_wire() -> None:
    """One poll of a known layout: the requests the server saw are exactly the planned blocks."""
    tags = [
        {"name": "h0", "table": "holding", "address": 0},
        {"name": "h1", "table": "holding", "address": 1, "type": "float32"},  # 1-2
        {"name": "h7", "table": "holding", "address": 7},  # gap 3..6 (4 registers) is bridged
        {"name": "h20", "table": "holding", "address": 20, "type": "int32"},  # gap of 12: a new block
        *({"name": f"long{a}", "table": "holding", "address": a} for a in range(40, 200, 4)),  # 157 long: split
        {"name": "c0", "table": "coil", "address": 0, "type": "bool"},
        {"name": "c4", "table": "coil", "address": 4, "type": "bool"},
        {"name": "c100", "table": "coil", "address": 100, "type": "bool"},
        *({"name": f"i10.{b}", "table": "input", "address": 10, "type": "bool", "bit": b} for b in (0, 3, 15)),
        {"name": "i11", "table": "input", "address": 11, "type": "int16"},
        {"name": "slow", "table": "holding", "address": 2, "poll_ms": 5000},  # its own poll group
    ]
    async with tcp_server() as (server, port):
        await server.set(1, "input", 10, [0b1000_0000_0000_1000, 7])
        await server.set(1, "holding", 20, [0, 99])
        src = source(port, tags, max_gap=4, poll_ms=1000)
        async with ModbusReader(src) as reader:
            readings = [r for blocks in reader.poll_groups().values() for r in await reader.read(blocks)]
        seen = [(r.function, r.address, r.count) for r in server.reads()]
    assert sorted(seen) == sorted([
        (3, 0, 8), (3, 20, 2), (3, 40, 125), (3, 168, 29),  # holding: 40..164 fill one read of 125
        (1, 0, 5), (1, 100, 1),  # coils: 0-4 bridged, 100 alone
        (4, 10, 2),  # three bit fields and a neighbour: one register pair, read once
        (3, 2, 1),  # the 5 s group
    ])  # fmt: skip
    points = [p for reading in readings for p in reading.points()]
    values = {p.tag: p.value for p in points}
    assert all(p.quality is Quality.GOOD for p in points)
    assert len(points) == len(tags)
    assert (values["i10.0"], values["i10.3"], values["i10.15"], values["i11"]) == (False, True, True, 7)
    assert values["h20"] == 99
