"""Turning raw Modbus registers into typed values, and planning block reads.

Pure functions, no I/O: the part of the Modbus source that is easiest to get subtly
wrong (word and byte order), kept where it can be tested exhaustively.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from edge_agent.config import ModbusSource, ModbusTag
from factory.wire import Value

__all__ = ["Block", "BlockDecoder", "decode", "encode", "plan_blocks", "register_count"]

STRUCT: Final = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
    "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d",
}  # fmt: skip
MAX_REGISTERS: Final = 125  # Modbus limit for one read of holding/input registers
MAX_BITS: Final = 2000  # and for one read of coils/discrete inputs


def register_count(tag: ModbusTag) -> int:
    if tag.type == "bool":
        return 1
    if tag.type == "string":
        return ((tag.length or 0) + 1) // 2
    return struct.calcsize(STRUCT[tag.type]) // 2


def _ordered(raw: bytes, byte_order: str, word_order: str) -> bytes:
    """Big-endian bytes from registers as they came off the wire in the given orders."""
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return b"".join(words)


def decode(registers: Sequence[int], tag: ModbusTag, byte_order: str, word_order: str) -> float | int | str:
    """Decode one tag's registers; scale and offset apply to numeric types."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    if tag.type == "string":
        data = raw if byte_order == "big" else _ordered(raw, byte_order, "big")
        return data[: tag.length].split(b"\x00", 1)[0].decode("ascii", errors="replace")
    (number,) = struct.unpack(STRUCT[tag.type], _ordered(raw, byte_order, word_order))
    return _scaled(number, tag)


def _scaled(number: float | int, tag: ModbusTag) -> float | int:
    if tag.scale == 1.0 and tag.offset == 0.0:
        return number
    value = number * tag.scale + tag.offset
    if tag.type.startswith("float"):
        return float(value)
    # An integer count times 0.01 is exact to two decimals: show 12.7, not 12.700000000000001.
    return float(round(value, _decimals(tag.scale, tag.offset)))


@functools.lru_cache(maxsize=1024)
def _decimals(scale: float, offset: float) -> int:
    """Decimal places that ``int * scale + offset`` can carry, from the shortest repr of each."""
    places = [-int(Decimal(repr(x)).as_tuple().exponent) for x in (scale, offset)]
    return max(0, *places)


def encode(value: float, type_: str, byte_order: str, word_order: str) -> list[int]:
    """The registers a device would hold for ``value`` (the inverse of ``decode``, unscaled)."""
    raw = struct.pack(STRUCT[type_], int(value) if "int" in type_ else value)
    data = _ordered(raw, byte_order, word_order)  # the reordering is its own inverse
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


# Tag fields the one-struct fast path of ``BlockDecoder`` understands. A tag that sets any
# other field (an option added later) is decoded by ``decode`` alone, so it is never misread.
_PLAIN_FIELDS: Final = frozenset({
    "name", "unit", "asset", "description", "deadband", "max_age_ms", "table", "address", "type",
    "byte_order", "word_order", "scale", "offset", "poll_ms", "writable",
})  # fmt: skip


class BlockDecoder:
    """Decodes all tags of one block read at once; built when the reads are planned.

    Numeric tags in the standard orders (big-endian bytes and words, the common case) come out
    of one precompiled ``struct`` over the whole block; the others go through ``decode`` one
    by one. ``names`` is the order of the values returned.
    """

    def __init__(self, table: str, address: int, count: int, tags: Sequence[ModbusTag], source: ModbusSource) -> None:
        self._bits = table in ("coil", "discrete")
        self._words = struct.Struct(f">{count}H")
        fast: list[ModbusTag] = []
        self._slow: list[tuple[ModbusTag, int, int, str, str]] = []
        fmt, at = ">", address
        for tag in sorted(tags, key=lambda t: t.address):
            byte_order = tag.byte_order or source.byte_order
            word_order = tag.word_order or source.word_order
            plain = (tag.type in STRUCT and byte_order == word_order == "big" and tag.address >= at
                     and tag.model_fields_set <= _PLAIN_FIELDS)  # fmt: skip
            if self._bits:
                fast.append(tag)
            elif plain:
                fmt += "x" * (2 * (tag.address - at)) + STRUCT[tag.type][1]
                at = tag.address + register_count(tag)
                fast.append(tag)
            else:
                self._slow.append((tag, tag.address - address, register_count(tag), byte_order, word_order))
        self._fast = struct.Struct(fmt)
        self._bit_index = [t.address - address for t in fast] if self._bits else []
        self._scaled = [(i, t) for i, t in enumerate(fast) if t.scale != 1.0 or t.offset != 0.0]
        self.names = tuple(t.name for t in fast) + tuple(s[0].name for s in self._slow)

    def __call__(self, words: Sequence[int] | Sequence[bool]) -> list[Value]:
        """The values of ``names`` from the block's registers (or bits)."""
        if self._bits:
            return [bool(words[i]) for i in self._bit_index]
        raw = self._words.pack(*words)
        values: list[Value] = list(self._fast.unpack_from(raw))
        for i, tag in self._scaled:
            values[i] = _scaled(values[i], tag)  # type: ignore[arg-type]
        for tag, start, n, byte_order, word_order in self._slow:
            value = decode([int(w) for w in words[start : start + n]], tag, byte_order, word_order)
            values.append(None if isinstance(value, str) else value)  # text is never a telemetry value
        return values


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: a contiguous range of one table, and the tags it serves."""

    table: str
    address: int
    count: int
    tags: tuple[ModbusTag, ...]
    decode: BlockDecoder = field(compare=False, repr=False)


def plan_blocks(source: ModbusSource, tags: Sequence[ModbusTag]) -> list[Block]:
    """Coalesce tags of one table into as few reads as the protocol limits allow.

    Neighbours closer than ``source.max_gap`` are read together: one request for a few
    unused registers is cheaper than a second round trip.
    """
    spans: list[tuple[str, int, int, list[ModbusTag]]] = []
    for table in ("coil", "discrete", "holding", "input"):
        members = sorted((t for t in tags if t.table == table), key=lambda t: t.address)
        limit = MAX_BITS if table in ("coil", "discrete") else MAX_REGISTERS
        current: list[ModbusTag] = []
        start = end = 0
        for tag in members:
            tag_end = tag.address + register_count(tag)
            if current and tag.address - end <= source.max_gap and tag_end - start <= limit:
                current.append(tag)
                end = max(end, tag_end)
                continue
            if current:
                spans.append((table, start, end - start, current))
            current, start, end = [tag], tag.address, tag_end
        if current:
            spans.append((table, start, end - start, current))
    return [Block(table, start, count, tuple(members), BlockDecoder(table, start, count, members, source))
            for table, start, count, members in spans]  # fmt: skip
