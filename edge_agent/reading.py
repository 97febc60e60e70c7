"""What a source hands to the agent: the values it read together, as columns.

One Modbus block, one OPC UA read or a burst of notifications becomes one ``Reading``:
a list per field instead of an object per value, because at tens of thousands of values
per second the objects themselves are a good part of the cost. The change filter, the
buffer and the wire encoder all work on these columns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from factory.wire import Point, Quality, Value

__all__ = ["HandOver", "Reading"]


@dataclass(frozen=True, slots=True)
class Reading:
    """Point ``i`` is ``(tags[i], ts[i], values[i], quality[i])``; all four have one length."""

    tags: Sequence[str]
    ts: Sequence[int]
    values: Sequence[Value]
    quality: Sequence[int]

    def __len__(self) -> int:
        return len(self.tags)

    @classmethod
    def at(cls, tags: Sequence[str], ts: int, values: Sequence[Value], quality: Quality = Quality.GOOD) -> Reading:
        """Values read at one moment with one quality (a Modbus block)."""
        return cls(tags, [ts] * len(tags), values, [int(quality)] * len(tags))

    @classmethod
    def of(cls, points: Iterable[Point]) -> Reading:
        ps = list(points)
        return cls([p.tag for p in ps], [p.ts for p in ps], [p.value for p in ps], [int(p.quality) for p in ps])

    def points(self) -> list[Point]:
        columns = zip(self.tags, self.ts, self.values, self.quality, strict=True)
        return [Point(t, s, v, Quality(q)) for t, s, v, q in columns]


HandOver = Callable[[Sequence[Reading]], Awaitable[None]]
"""How a source gives the agent what it read: waits while the agent's buffer writer is behind."""
