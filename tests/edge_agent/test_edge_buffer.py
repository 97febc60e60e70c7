"""The durable buffer: order, survival across reopen, batch numbering, the size limit."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from edge_agent.buffer import Buffer
from edge_agent.reading import Reading
from factory.wire import MAX_BATCH_BYTES, MAX_POINTS_BYTES, Point, Quality, batch_payload, decode_batch


def points(n: int, start: int = 0) -> list[Reading]:
    return [Reading.of(Point(f"a.t{i % 7}", 1_700_000_000_000 + start + i, float(i), Quality.GOOD) for i in range(n))]


async def test_points_come_back_in_order_with_their_types(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", 16)
    mixed = [Point("a.x", 1, value=True), Point("a.y", 2, 3), Point("a.z", 3, None, Quality.BAD), Point("a.w", 4, 2.5)]
    await buffer.append([Reading.of(mixed)])
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
    await buffer.remove(first.ranges)
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


async def test_chunks_are_acknowledged_piece_by_piece(tmp_path: Path) -> None:
    """Reads cut chunks anywhere; what was removed never comes back, what was not always does."""
    path = tmp_path / "b.db"
    buffer = await Buffer.open(path, 16)
    for chunk in range(3):  # three chunks of 100 points: ordinals 1..300
        await buffer.append(points(100, start=chunk * 100))
    assert await buffer.last_id() == 300
    first = await buffer.read(0, None, 150)  # all of chunk 1, half of chunk 2
    assert first is not None
    assert (first.count, first.last_id) == (150, 150)
    await buffer.remove(first.ranges)
    later = await buffer.read(220, None, 50)  # a read that skips unacknowledged points
    assert later is not None
    await buffer.remove(later.ranges)  # not the chunk's next points: held until those before are gone
    assert buffer.depth_now()[0] == 150
    await buffer.close()

    again = await Buffer.open(path, 16)
    assert again.depth_now() == (150, 1_700_000_000_000 + 150)
    rest = await again.read(0, None, 1000)
    assert rest is not None
    assert [p.ts for p in rest.points] == [1_700_000_000_000 + i for i in range(150, 300)]
    await again.remove(rest.ranges)
    assert again.depth_now() == (0, None)
    await again.append(points(5))
    assert await again.last_id() == 305  # ordinals are never reused
    await again.close()


async def test_out_of_order_removal_and_reading_again(tmp_path: Path) -> None:
    """Confirmations may come in any order: a span past a gap waits until the gap is gone;
    reading ranges again gives only what is still there."""
    buffer = await Buffer.open(tmp_path / "b.db", 16)
    await buffer.append(points(100))  # one chunk: ordinals 1..100
    batches = []
    while stored := await buffer.read(batches[-1].last_id if batches else 0, None, 30):
        batches.append(stored)
    assert [b.count for b in batches] == [30, 30, 30, 10]
    await buffer.remove(batches[2].ranges)
    await buffer.remove(batches[3].ranges)
    assert buffer.depth_now()[0] == 100  # nothing before them is gone yet
    again = await buffer.reread([*batches[0].ranges, *batches[2].ranges])
    assert again is not None
    assert again.count == 60
    await buffer.remove(batches[0].ranges)
    assert buffer.depth_now() == (70, 1_700_000_000_000 + 30)
    await buffer.remove(batches[1].ranges)  # the gap closes: the whole chunk goes
    assert buffer.depth_now() == (0, None)
    assert await buffer.reread(batches[1].ranges) is None
    await buffer.close()


async def test_batches_fit_the_size_limit_and_keep_every_point_in_order(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", 64)
    long = [Point(f"asset.{i:05d}." + "x" * 110, 1_700_000_000_000 + i, i * 0.5) for i in range(5000)]
    await buffer.append([Reading.of(long)])
    sent: list[Point] = []
    while stored := await buffer.read(0, None, 5000):
        batch = stored.within(MAX_POINTS_BYTES)
        payload = batch_payload(2**63 - 1, hist=False, points=batch.data())
        assert len(payload) <= MAX_BATCH_BYTES
        sent += decode_batch(payload).points
        await buffer.remove(batch.ranges)
    assert sent == long
    await buffer.close()


async def test_a_buffer_of_the_row_per_point_layout_is_moved_over(tmp_path: Path) -> None:
    """Points buffered by an agent before an upgrade are neither lost nor duplicated."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            "CREATE TABLE point (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL, ts INTEGER NOT NULL,"
            " value REAL, is_bool INTEGER NOT NULL DEFAULT 0, quality INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "INSERT INTO meta VALUES ('seq', 41);"
        )
        db.executemany("INSERT INTO point (tag, ts, value, is_bool, quality) VALUES (?, ?, ?, ?, ?)",
                       [("a.x", 1, 1.0, 1, 0), ("a.y", 2, None, 0, 2)] + [("a.z", 3 + i, i, 0, 0) for i in range(7000)])  # fmt: skip
    buffer = await Buffer.open(path, 16)
    assert buffer.depth_now() == (7002, 1)
    stored = await buffer.read(0, None, 10_000)
    assert stored is not None
    assert stored.points[:3] == (Point("a.x", 1, value=True), Point("a.y", 2, None, Quality.BAD), Point("a.z", 3, 0))
    assert [p.ts for p in stored.points] == [1, 2, *range(3, 7003)]
    assert await buffer.next_seq() == 42
    await buffer.close()
