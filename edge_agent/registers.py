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

__all__ = ["Block", "BlockDecoder", "decode", "encode", "encode_tag", "plan_blocks"]

STRUCT: Final = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
    "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d",
}  # fmt: skip
MAX_REGISTERS: Final = 125  # Modbus limit for one read of holding/input registers
MAX_BITS: Final = 2000  # and for one read of coils/discrete inputs


def _ordered(raw: bytes, byte_order: str, word_order: str) -> bytes:
    """Big-endian bytes from registers as they came off the wire in the given orders."""
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return b"".join(words)


def decode(registers: Sequence[int], tag: ModbusTag, byte_order: str, word_order: str) -> float | int | bool | str:
    """Decode one tag's registers; scale and offset apply to numeric types."""
    if tag.type == "bool":  # one bit of the register, or the whole register as non-zero
        return bool(registers[0] >> tag.bit & 1) if tag.bit is not None else registers[0] != 0
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


def encode_tag(value: float | str, tag: ModbusTag, byte_order: str, word_order: str) -> list[int]:
    """The registers that make a register tag read ``value`` (engineering units: scale and
    offset undone, integers rounded to the nearest count). Raises ``ValueError`` when the
    value does not fit the tag's type; bool tags are written by the caller (coil or bit)."""
    if isinstance(value, str):
        data = value.encode("ascii")  # UnicodeEncodeError is a ValueError
        if tag.length is None or len(data) > tag.length:
            raise ValueError(f"text of {len(data)} bytes does not fit length {tag.length}")
        data = data.ljust(tag.registers * 2, b"\x00")
        data = data if byte_order == "big" else _ordered(data, byte_order, "big")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    raw = (value - tag.offset) / tag.scale
    if not tag.type.startswith("float"):
        count = round(raw)
        bits = struct.calcsize(STRUCT[tag.type]) * 8
        low, high = (0, (1 << bits) - 1) if tag.type.startswith("u") else (-(1 << bits - 1), (1 << bits - 1) - 1)
        if not low <= count <= high:
            raise ValueError(f"{value} is {count} counts, outside {tag.type} ({low}..{high})")
        return encode(count, tag.type, byte_order, word_order)
    try:
        return encode(raw, tag.type, byte_order, word_order)
    except (OverflowError, struct.error) as exc:
        raise ValueError(f"{value} does not fit {tag.type}") from exc


# Tag fields the fast paths of ``BlockDecoder`` understand (``min`` and ``max`` bound writes
# only). A tag that sets any other field (an option added later) is decoded by ``decode``
# alone, so it is never misread.
_PLAIN_FIELDS: Final = frozenset({
    "name", "unit", "asset", "description", "deadband", "max_age_ms", "table", "address", "type",
    "byte_order", "word_order", "scale", "offset", "poll_ms", "writable", "min", "max",
})  # fmt: skip
_FLAG_FIELDS: Final = _PLAIN_FIELDS | {"bit"}
_WHOLE_REGISTER: Final = 0xFFFF  # a bool register without ``bit`` reads true when not zero


class BlockDecoder:
    """Decodes all tags of one block read at once; built when the reads are planned.

    Numeric tags in the standard orders (big-endian bytes and words, the common case) come out
    of one precompiled ``struct`` over the whole block; bool tags in registers (a bit, or the
    whole register as not zero) are one mask each; the others go through ``decode`` one by
    one. ``names`` is the order of the values returned.
    """

    def __init__(self, table: str, address: int, count: int, tags: Sequence[ModbusTag], source: ModbusSource) -> None:
        self._bits = table in ("coil", "discrete")
        self._words = struct.Struct(f">{count}H")
        fast: list[ModbusTag] = []
        flags: list[ModbusTag] = []
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
                at = tag.address + tag.registers
                fast.append(tag)
            elif tag.type == "bool" and tag.model_fields_set <= _FLAG_FIELDS:
                flags.append(tag)  # bits count from the register's value: byte order does not apply
            else:
                self._slow.append((tag, tag.address - address, tag.registers, byte_order, word_order))
        self._fast = struct.Struct(fmt)
        self._bit_index = [t.address - address for t in fast] if self._bits else []
        self._scaled = [(i, t) for i, t in enumerate(fast) if t.scale != 1.0 or t.offset != 0.0]
        self._flags = [(t.address - address, _WHOLE_REGISTER if t.bit is None else 1 << t.bit) for t in flags]
        self.names = tuple(t.name for t in fast) + tuple(t.name for t in flags) + tuple(s[0].name for s in self._slow)

    def __call__(self, words: Sequence[int] | Sequence[bool]) -> list[Value]:
        """The values of ``names`` from the block's registers (or bits)."""
        if self._bits:
            return [bool(words[i]) for i in self._bit_index]
        raw = self._words.pack(*words)
        values: list[Value] = list(self._fast.unpack_from(raw))
        for i, tag in self._scaled:
            values[i] = _scaled(values[i], tag)  # type: ignore[arg-type]
        values += [(words[i] & mask) != 0 for i, mask in self._flags]
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
            tag_end = tag.address + tag.registers
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
