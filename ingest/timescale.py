"""Storage upkeep on TimescaleDB, driven by ingest rather than TimescaleDB's job scheduler.

TimescaleDB's background policy jobs have been seen to fail on some PostgreSQL 15 builds
while the same calls run fine directly, so the platform makes these calls itself. Kept to
the few statements below; CI has no TimescaleDB, so they are exercised only where it is
(tests/ingest/test_timescale.py skips, saying why, without the extension).
``refresh_continuous_aggregate`` cannot run inside a transaction: use an autocommit
connection.

Freshness: each cycle materializes the last ``window`` (2 h) of both aggregates, and
real-time aggregation (ingest 0009) adds what is newer than the last refresh at query time.
Late data — rows older than ``LATE_AFTER`` when they are written, as a replayed edge buffer
brings — is refreshed by the hour: the flush queues the hours it touched in
``telemetry.aggregate_pending`` and ``refresh_late`` refreshes exactly those.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg

__all__ = [
    "LATE_AFTER", "compress_old_chunks", "drop_old_aggregates", "drop_old_chunks", "refresh_aggregates", "refresh_late",
]  # fmt: skip

LATE_AFTER: Final = timedelta(hours=1)  # rows older than this when written queue their hour (less than the window)
VIEWS: Final = ("telemetry.sample_1m", "telemetry.sample_1h")


async def refresh_aggregates(conn: psycopg.AsyncConnection[Any], window: timedelta) -> None:
    """Materialize the last ``window`` of both rollups (real-time aggregation covers the rest)."""
    start = datetime.now(UTC) - window
    for view in VIEWS:
        await conn.execute("CALL refresh_continuous_aggregate(%s, %s, NULL)", (view, start))


async def refresh_late(conn: psycopg.AsyncConnection[Any], batch: int = 1000) -> int:
    """Refresh the hours late rows went into (``telemetry.aggregate_pending``), contiguous hours
    as one range; then forget the queued rows seen. Returns how many hours were refreshed.
    Several workers may run it at once: a refresh is idempotent, and rows queued meanwhile
    stay for the next cycle."""
    cur = await conn.execute(
        "SELECT max(id), array_agg(DISTINCT bucket ORDER BY bucket) FROM"
        " (SELECT id, bucket FROM telemetry.aggregate_pending ORDER BY id LIMIT %s) p",
        (batch,),
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return 0
    last_id, hours = int(row[0]), list(row[1])
    for start, end in _ranges(hours, timedelta(hours=1)):
        for view in VIEWS:
            await conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))
    await conn.execute("DELETE FROM telemetry.aggregate_pending WHERE id <= %s AND bucket = ANY(%s)", (last_id, hours))
    return len(hours)


def _ranges(starts: list[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts as (start, end) ranges of contiguous buckets."""
    ranges: list[tuple[datetime, datetime]] = []
    for start in starts:
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + step)
        else:
            ranges.append((start, start + step))
    return ranges


async def compress_old_chunks(conn: psycopg.AsyncConnection[Any], older_than: timedelta) -> int:
    """Chunks past ``older_than`` into the columnstore: the procedure ``convert_to_columnstore``
    from TimescaleDB 2.18, the function ``compress_chunk`` (its old name, gone in 3.0) before.
    Returns how many chunks are past the age (already converted ones included)."""
    cur = await conn.execute("SELECT show_chunks('telemetry.sample', older_than => %s)::text", (older_than,))
    chunks = [str(row[0]) for row in await cur.fetchall()]
    if await _version(conn) >= (2, 18):
        for chunk in chunks:
            await conn.execute("CALL convert_to_columnstore(%s::regclass, if_not_columnstore => true)", (chunk,))
    elif chunks:
        await conn.execute("SELECT compress_chunk(c::regclass, if_not_compressed => true) FROM unnest(%s::text[]) c",
                           (chunks,))  # fmt: skip
    return len(chunks)


async def _version(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = await cur.fetchone()
    if row is None:
        return (0, 0)
    major, minor = str(row[0]).split("-")[0].split(".")[:2]
    return int(major), int(minor)


async def drop_old_chunks(conn: psycopg.AsyncConnection[Any], older_than: timedelta) -> int:
    cur = await conn.execute("SELECT count(*) FROM drop_chunks('telemetry.sample', older_than => %s)", (older_than,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def drop_old_aggregates(conn: psycopg.AsyncConnection[Any], minutes: timedelta, hours: timedelta) -> int:
    """The rollups' own retention: their chunks past ``minutes`` (sample_1m) and ``hours`` (sample_1h)."""
    dropped = 0
    for view, older_than in (("telemetry.sample_1m", minutes), ("telemetry.sample_1h", hours)):
        cur = await conn.execute("SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s)", (view, older_than))
        row = await cur.fetchone()
        dropped += int(row[0]) if row else 0
    return dropped
