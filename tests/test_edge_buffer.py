"""The durable buffer: order, survival across reopen, batch numbering, the size limit."""

from __future__ import annotations

from pathlib import Path

from edge_agent.buffer import Buffer
from factory.wire import Point, Quality


def points(n: int, start: int = 0) -> list[Point]:
    return [Point(f"a.t{i % 7}", 1_700_000_000_000 + start + i, float(i), Quality.GOOD) for i in range(n)]


async def test_points_come_back_in_order_with_their_types(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", 16)
    mixed = [Point("a.x", 1, value=True), Point("a.y", 2, 3), Point("a.z", 3, None, Quality.BAD), Point("a.w", 4, 2.5)]
    await buffer.append(mixed)
    stored = await buffer.read(0, None, 10)
    assert stored is not None
    assert stored.points == (Point("a.x", 1, value=True), Point("a.y", 2, 3.0), Point("a.z", 3, None, Quality.BAD),
                             Point("a.w", 4, 2.5))  # fmt: skip
    assert isinstance(stored.points[0].value, bool)
    await buffer.close()


async def test_what_was_not_removed_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buffer = await Buffer.open(path, 16)
    await buffer.append(points(1000))
    first = await buffer.read(0, None, 300)
    assert first is not None
    await buffer.remove(first)
    assert buffer.depth_now()[0] == 700
    assert await buffer.next_seq() == 1
    assert await buffer.next_seq() == 2
    await buffer.close()

    again = await Buffer.open(path, 16)
    assert again.depth_now() == (700, 1_700_000_000_000 + 300)
    rest = await again.read(0, None, 1000)
    assert rest is not None
    assert [p.ts for p in rest.points] == [1_700_000_000_000 + i for i in range(300, 1000)]
    assert await again.next_seq() == 3  # numbering goes on across restarts
    await again.close()


async def test_read_respects_the_id_window(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", 16)
    await buffer.append(points(10))
    upto = await buffer.last_id()
    await buffer.append(points(5, start=100))
    hist = await buffer.read(0, upto, 100)
    live = await buffer.read(upto, None, 100)
    assert hist is not None
    assert live is not None
    assert len(hist.points) == 10
    assert [p.ts for p in live.points] == [1_700_000_000_100 + i for i in range(5)]
    await buffer.close()


async def test_the_size_limit_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", 1)
    for chunk in range(60):
        await buffer.append(points(1000, start=chunk * 1000))
    count, oldest = buffer.depth_now()
    assert buffer.dropped > 0
    assert count == 60_000 - buffer.dropped
    newest = await buffer.read(await buffer.last_id() - 1, None, 10)
    assert newest is not None
    assert newest.points[-1].ts == 1_700_000_000_000 + 59_999  # the newest data is kept
    assert oldest is not None
    assert oldest > 1_700_000_000_000  # the oldest is gone
    await buffer.close()
    assert (tmp_path / "b.db").stat().st_size < 3 * 1024 * 1024
