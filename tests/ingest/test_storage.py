"""Plain-PostgreSQL storage: daily partitions, retention, and rollups equal to raw aggregates."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from factory.db import connect
from ingest.rollup import drop_expired_partitions, refresh_rollups
from ingest.store import Samples, TelemetryStore

pytestmark = pytest.mark.integration

RAW_1M = """
SELECT date_bin('1 minute', s.time, TIMESTAMPTZ 'epoch'), s.tag_id, avg(s.value), min(s.value), max(s.value),
       (array_agg(s.value ORDER BY s.time DESC))[1], count(s.value)
FROM telemetry.sample s WHERE s.tag_id = ANY(%s) GROUP BY 1, 2 ORDER BY 2, 1
"""
RAW_1H = RAW_1M.replace("'1 minute'", "'1 hour'")
ROLLUP = "SELECT bucket, tag_id, avg, min, max, last, count FROM telemetry.{} WHERE tag_id = ANY(%s) ORDER BY 2, 1"


async def make_tags(database_url: str, site: str, names: list[str]) -> list[int]:
    async with await connect(database_url) as conn:
        store = TelemetryStore(conn)
        device = await store.device_id(site, "pi1")
        ids = await store.tag_ids(device, names)
        await conn.commit()
    return [ids[n] for n in names]


def ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


async def write(database_url: str, rows: list[tuple[int, datetime, float | None]]) -> int:
    samples = Samples()
    samples.extend([r[0] for r in rows], [ms(r[1]) for r in rows], [r[2] for r in rows], [0] * len(rows))
    async with await connect(database_url) as conn, conn.transaction():
        return await TelemetryStore(conn).write_samples(samples)


async def refresh_all(db) -> None:  # type: ignore[no-untyped-def]
    """Refresh until nothing is pending (another refresher may hold some minutes for a moment)."""
    for _ in range(200):
        await refresh_rollups(db)
        cur = await db.execute("SELECT count(*) FROM telemetry.rollup_pending")
        if await cur.fetchone() == (0,):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("rollups never caught up")


def close(a: list[tuple[object, ...]], b: list[tuple[object, ...]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:2] == y[:2]
        assert x[2] == pytest.approx(y[2], rel=1e-12, abs=1e-12)  # a weighted average of averages
        assert x[3:] == y[3:]


async def test_rollups_equal_aggregates_of_raw_rows_also_after_late_data(database_url: str, site: str, db) -> None:
    tags = await make_tags(database_url, site, ["a.x", "a.y", "b.z"])
    rng = random.Random(7)
    start = datetime.now(UTC).replace(minute=55, second=0, microsecond=0) - timedelta(hours=3)
    rows = [
        (tag, start + timedelta(seconds=s), None if rng.random() < 0.05 else rng.gauss(50, 10))
        for tag in tags
        for s in sorted(rng.sample(range(600), 300))  # 10 minutes across an hour boundary
    ]
    assert await write(database_url, rows) == len(rows)
    await refresh_all(db)
    for table, raw in (("sample_1m", RAW_1M), ("sample_1h", RAW_1H)):
        expected = await (await db.execute(raw, (tags,))).fetchall()
        close(await (await db.execute(ROLLUP.format(table), (tags,))).fetchall(), expected)
    # Late data for an old minute and a new value for the newest: both rollups follow.
    late = [(tags[0], start + timedelta(seconds=30.5), 1e6), (tags[1], start + timedelta(seconds=599.9), -1e6)]
    assert await write(database_url, late) == 2
    await refresh_all(db)
    for table, raw in (("sample_1m", RAW_1M), ("sample_1h", RAW_1H)):
        expected = await (await db.execute(raw, (tags,))).fetchall()
        close(await (await db.execute(ROLLUP.format(table), (tags,))).fetchall(), expected)
    cur = await db.execute("SELECT max FROM telemetry.sample_1h WHERE tag_id = %s ORDER BY bucket LIMIT 1", (tags[0],))
    assert await cur.fetchone() == (1e6,)


async def test_every_kind_of_value_is_stored_exactly(database_url: str, site: str, db) -> None:
    """Rows are packed a block at a time (numpy) and reordered by tag before COPY: each row
    must still land exactly, NULLs (their own row form) and all."""
    tags = await make_tags(database_url, site, ["v.b", "v.a", "v.c"])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    values: list[float | int | bool | None] = [
        1.5, None, True, False, 7, -(2**62), 10**30, -0.0, 1.7e308, 5e-324, None, 2.25,
    ]  # fmt: skip
    samples = Samples()
    for i, value in enumerate(values):
        samples.extend([tags[i % 3]], [ms(start) + 123 * i], [value], [i % 3])
    async with await connect(database_url) as conn, conn.transaction():
        assert await TelemetryStore(conn).write_samples(samples) == len(values)
    cur = await db.execute(
        "SELECT tag_id, time, value, quality FROM telemetry.sample WHERE tag_id = ANY(%s) ORDER BY time", (tags,)
    )
    expected = [
        (tags[i % 3], start + timedelta(milliseconds=123 * i), None if v is None else float(v), i % 3)
        for i, v in enumerate(values)
    ]
    assert await cur.fetchall() == expected


async def test_partitions_per_utc_day_and_retention(database_url: str, site: str, db) -> None:
    (tag,) = await make_tags(database_url, site, ["c.x"])
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=400), today - timedelta(days=3), today, today + timedelta(days=1)]
    assert await write(database_url, [(tag, d, 1.0) for d in days]) == 4
    cur = await db.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) ORDER BY 1",
        ([f"sample_{d:%Y%m%d}" for d in days],),
    )
    assert [r[0] for r in await cur.fetchall()] == [f"sample_{d:%Y%m%d}" for d in days]
    dropped = await drop_expired_partitions(db, today.date(), retention_days=2)
    assert f"sample_{days[0]:%Y%m%d}" in dropped
    assert f"sample_{days[1]:%Y%m%d}" in dropped
    cur = await db.execute("SELECT time FROM telemetry.sample WHERE tag_id = %s ORDER BY 1", (tag,))
    assert [r[0] for r in await cur.fetchall()] == days[2:]


async def test_two_writers_creating_one_day_partition_at_once(database_url: str, db) -> None:
    """The second waits for the first's commit, then finds the partition there (no error)."""
    # A day no other test writes (analytics tests write days of 2031): one without a partition.
    day = datetime(2033, 1, 5, tzinfo=UTC).date() + timedelta(days=random.randrange(300))
    while (await (await db.execute("SELECT to_regclass(%s)", (f"telemetry.sample_{day:%Y%m%d}",))).fetchone())[0]:
        day += timedelta(days=1)
    async with await connect(database_url) as first, await connect(database_url, autocommit=True) as second:
        cur = await first.execute("SELECT telemetry.ensure_sample_partition(%s)", (day,))
        assert await cur.fetchone() == (True,)
        pid = second.info.backend_pid
        waiting = asyncio.create_task(second.execute("SELECT telemetry.ensure_sample_partition(%s)", (day,)))
        async with asyncio.timeout(10):  # until the second waits for the first's lock
            while (await (await db.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                           (pid,))).fetchone()) != ("Lock",):  # fmt: skip
                await asyncio.sleep(0.05)
        assert not waiting.done()  # held by the first's lock
        await first.commit()
        assert await (await waiting).fetchone() == (False,)
    await db.execute(f"DROP TABLE telemetry.sample_{day:%Y%m%d}")


async def test_values_near_the_double_limit_roll_up(database_url: str, site: str, db) -> None:
    """Valid on the wire, but a float8 sum of two of them overflows: rollups must not stall."""
    (tag,) = await make_tags(database_url, site, ["huge.x"])
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    big = 1.7e308
    rows = [(tag, start + timedelta(seconds=s), big) for s in (1, 2, 3)]
    assert await write(database_url, rows) == 3
    await refresh_all(db)
    cur = await db.execute("SELECT avg, max, count FROM telemetry.sample_1m WHERE tag_id = %s", (tag,))
    assert await cur.fetchone() == (big, big, 3)
    cur = await db.execute("SELECT avg, count FROM telemetry.sample_1h WHERE tag_id = %s", (tag,))
    assert await cur.fetchone() == (big, 3)


async def test_a_flush_never_waits_for_a_refresh_of_the_same_minute(database_url: str, site: str, db) -> None:
    """A refresh holds its claimed minutes until it commits; ingest writing the same minute
    meanwhile must not wait for it (it did, with a key on the minute: every flush stalled
    for as long as the refresh ran). The late sample is rolled up by the next refresh."""
    (tag,) = await make_tags(database_url, site, ["lock.x"])
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    assert await write(database_url, [(tag, minute + timedelta(seconds=1), 1.0)]) == 1
    async with await connect(database_url) as refresher, refresher.transaction():
        cur = await refresher.execute(
            "DELETE FROM telemetry.rollup_pending WHERE bucket = %s RETURNING bucket", (minute,)
        )  # a refresh that has claimed the minute and is still running
        assert await cur.fetchall()
        written = await asyncio.wait_for(write(database_url, [(tag, minute + timedelta(seconds=2), 3.0)]), 5)
        assert written == 1
    await refresh_all(db)
    cur = await db.execute("SELECT avg, count FROM telemetry.sample_1m WHERE tag_id = %s", (tag,))
    assert await cur.fetchone() == (2.0, 2)


@pytest.mark.parametrize("late", [timedelta(hours=3), timedelta(days=3)], ids=["3h", "3d"])
async def test_a_late_sample_reaches_both_rollups(database_url: str, site: str, db, late: timedelta) -> None:  # type: ignore[no-untyped-def]
    """A batch replayed from an edge buffer after an outage: its samples are hours or days old
    when they arrive, after the rollups of their minutes and hours were made."""
    [tag] = await make_tags(database_url, site, [f"late.{late.days}d{late.seconds // 3600}h"])
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - late
    assert await write(database_url, [(tag, at - timedelta(minutes=1), 1.0), (tag, now, 1.0)]) == 2
    await refresh_all(db)  # the rollups are up to date, before the late one arrives
    assert await write(database_url, [(tag, at, 42.0)]) == 1
    await refresh_all(db)
    minute, hour = at.replace(second=0), at.replace(minute=0, second=0)
    for table, bucket, expected in (("sample_1m", minute, (42.0, 1)), ("sample_1h", hour, None)):
        cur = await db.execute(f"SELECT max, count FROM telemetry.{table} WHERE tag_id = %s AND bucket = %s",
                               (tag, bucket))  # fmt: skip
        row = await cur.fetchone()
        if expected is not None:
            assert row == expected
        else:  # the hour also holds the sample a minute before (unless that fell in the hour before)
            assert row is not None
            assert row[0] == 42.0
            assert row[1] == (2 if (at - timedelta(minutes=1)).hour == at.hour else 1)
