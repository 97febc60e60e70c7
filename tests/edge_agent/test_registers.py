"""Register decoding in every type and order, and block planning."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import ModbusSource, ModbusTag
from edge_agent.registers import decode, encode, plan_blocks

# 0x41CA0000 is 25.25 as float32; registers as they appear on the wire for each order.
FLOAT_25_25 = {
    ("big", "big"): [0x41CA, 0x0000],  # ABCD
    ("big", "little"): [0x0000, 0x41CA],  # CDAB
    ("little", "big"): [0xCA41, 0x0000],  # BADC
    ("little", "little"): [0x0000, 0xCA41],  # DCBA
}


def tag(type_: str, **extra: object) -> ModbusTag:
    return ModbusTag.model_validate({"name": "x.y", "table": "holding", "address": 0, "type": type_, **extra})


@pytest.mark.parametrize(("orders", "registers"), FLOAT_25_25.items())
def test_float32_in_all_four_orders(orders: tuple[str, str], registers: list[int]) -> None:
    assert decode(registers, tag("float32"), *orders) == 25.25


@pytest.mark.parametrize(
    ("type_", "registers", "expected"),
    [
        ("int16", [0xFFFE], -2),
        ("uint16", [0xFFFE], 65534),
        ("int32", [0xFFFF, 0xFFFD], -3),
        ("uint32", [0x0001, 0x0002], 65538),
        ("int64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
        ("uint64", [0, 0, 1, 0], 65536),
        ("float64", [0x4029, 0x4000, 0, 0], 12.625),
    ],
)
def test_types_big_endian(type_: str, registers: list[int], expected: float) -> None:
    assert decode(registers, tag(type_), "big", "big") == expected


def test_uint32_cdab() -> None:
    assert decode([0x0002, 0x0001], tag("uint32"), "big", "little") == 65538


def test_scale_and_offset() -> None:
    assert decode([1270], tag("int16", scale=0.01), "big", "big") == 12.7  # exactly, not 12.700000000000001
    assert decode([100], tag("uint16", scale=0.5, offset=-10), "big", "big") == 40.0
    assert decode([0xFFFF, 0xCFC7], tag("int32", scale=0.1), "big", "big") == -1234.5
    assert decode([3], tag("uint16", scale=1e-7), "big", "big") == 3e-7


def test_string() -> None:
    registers = [int.from_bytes(b"MI", "big"), int.from_bytes(b"LL", "big"), int.from_bytes(b"1\x00", "big")]
    assert decode(registers, tag("string", length=6), "big", "big") == "MILL1"
    swapped = [int.from_bytes(b"IM", "big"), int.from_bytes(b"LL", "big"), int.from_bytes(b"\x001", "big")]
    assert decode(swapped, tag("string", length=6), "little", "big") == "MILL1"


orders = st.sampled_from(["big", "little"])


@given(st.floats(width=32, allow_nan=False), orders, orders)
def test_float32_round_trip(value: float, byte_order: str, word_order: str) -> None:
    assert decode(encode(value, "float32", byte_order, word_order), tag("float32"), byte_order, word_order) == value


@given(st.integers(-(2**63), 2**63 - 1), orders, orders)
def test_int64_round_trip(value: int, byte_order: str, word_order: str) -> None:
    registers = encode(value, "int64", byte_order, word_order)
    assert len(registers) == 4
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(registers, tag("int64"), byte_order, word_order) == value


def test_encode_matches_struct() -> None:
    assert encode(25.25, "float32", "big", "big") == [0x41CA, 0x0000]
    assert struct.pack(">f", 25.25) == bytes.fromhex("41CA0000")


def source(tags: list[dict[str, object]], max_gap: int = 8) -> ModbusSource:
    return ModbusSource.model_validate({"name": "s", "kind": "modbus", "host": "h", "max_gap": max_gap, "tags": tags})


def test_plan_coalesces_neighbours_and_splits_far_ones() -> None:
    src = source([
        {"name": "a", "table": "holding", "address": 0, "type": "float32"},
        {"name": "b", "table": "holding", "address": 4, "type": "uint16"},
        {"name": "c", "table": "holding", "address": 100, "type": "int16"},
        {"name": "d", "table": "coil", "address": 3, "type": "bool"},
        {"name": "e", "table": "coil", "address": 9, "type": "bool"},
        {"name": "f", "table": "input", "address": 7, "type": "uint64"},
    ])  # fmt: skip
    blocks = [(b.table, b.address, b.count, [t.name for t in b.tags]) for b in plan_blocks(src, src.tags)]
    assert blocks == [
        ("coil", 3, 7, ["d", "e"]),
        ("holding", 0, 5, ["a", "b"]),
        ("holding", 100, 1, ["c"]),
        ("input", 7, 4, ["f"]),
    ]


def test_plan_respects_the_125_register_limit() -> None:
    src = source([{"name": f"t{i}", "table": "input", "address": i * 2, "type": "uint32"} for i in range(100)])
    blocks = plan_blocks(src, src.tags)
    assert [b.count for b in blocks] == [124, 76]
    assert sum(len(b.tags) for b in blocks) == 100


NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
ORDERS = [None, "big", "little"]
order = st.sampled_from(["big", "little"])
numeric_tag = st.fixed_dictionaries(
    {"address": st.integers(0, 40), "type": st.sampled_from(NUMERIC)},
    optional={"byte_order": order, "word_order": order, "scale": st.sampled_from([1.0, 0.1, 0.01, 2.5]),
              "offset": st.sampled_from([0.0, -40.0]), "writable": st.booleans(), "max": st.just(1e6)},
)  # fmt: skip
flag_tag = st.fixed_dictionaries(  # a bit of a register, or the whole register as not zero
    {"address": st.integers(0, 40), "type": st.just("bool")},
    optional={"bit": st.integers(0, 15), "byte_order": order, "writable": st.booleans()},
)
block_tags = st.lists(st.one_of(numeric_tag, flag_tag), min_size=1, max_size=12)


@given(block_tags, order, order, st.data())
def test_a_block_decodes_exactly_as_each_tag_alone(  # type: ignore[no-untyped-def]
    specs: list[dict[str, object]], byte_order: str, word_order: str, data
) -> None:
    """The one-struct fast path, the bit masks and the per-tag path agree with ``decode``,
    overlaps, gaps, bit fields sharing a register and every order included."""
    src = ModbusSource.model_validate({
        "name": "s", "kind": "modbus", "host": "h", "byte_order": byte_order, "word_order": word_order,
        "tags": [{"name": f"t{i}", "table": "holding", **spec} for i, spec in enumerate(specs)],
    })  # fmt: skip
    for block in plan_blocks(src, src.tags):
        words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count))
        values = block.decode(words)
        assert sorted(block.decode.names) == sorted(t.name for t in block.tags)
        got = dict(zip(block.decode.names, values, strict=True))
        for t in block.tags:
            start = t.address - block.address
            alone = decode(words[start : start + t.registers], t, t.byte_order or byte_order,
                           t.word_order or word_order)  # fmt: skip
            assert type(got[t.name]) is type(alone)
            assert got[t.name] == alone or (alone != alone and got[t.name] != got[t.name])  # NaN is NaN


def test_bit_fields_and_a_whole_register_in_one_block() -> None:
    src = source([
        {"name": "b0", "table": "holding", "address": 0, "type": "bool", "bit": 0},
        {"name": "b1", "table": "holding", "address": 0, "type": "bool", "bit": 1},
        {"name": "b15", "table": "holding", "address": 0, "type": "bool", "bit": 15},
        {"name": "level", "table": "holding", "address": 1, "type": "uint16"},
        {"name": "running", "table": "holding", "address": 2, "type": "bool"},
        {"name": "stopped", "table": "holding", "address": 3, "type": "bool"},
    ])  # fmt: skip
    (block,) = plan_blocks(src, src.tags)
    got = dict(zip(block.decode.names, block.decode([0b1000_0000_0000_0001, 7, 0x0100, 0]), strict=True))
    assert got == {"b0": True, "b1": False, "b15": True, "level": 7, "running": True, "stopped": False}


def test_a_block_of_bits_decodes_each_tag() -> None:
    src = source([{"name": f"c{a}", "table": "coil", "address": a, "type": "bool"} for a in (3, 4, 9)])
    (block,) = plan_blocks(src, src.tags)
    bits = [False] * block.count
    bits[1] = bits[6] = True
    assert dict(zip(block.decode.names, block.decode(bits), strict=True)) == {"c3": False, "c4": True, "c9": True}
