"""Storage upkeep on plain PostgreSQL: daily partitions, retention, and the rollup tables.

Ingest marks every minute it writes, with the tags it wrote in it, in
``telemetry.rollup_pending`` (same transaction as the samples; plain appends, so a flush
never waits for a refresh).
``refresh_rollups`` recomputes exactly those minutes of those tags from raw samples,
through the (tag_id, time) key, then the hours containing them from the minutes, so late
and replayed data are rolled up as well as live data, and each refresh costs only what
changed.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any, Final

import psycopg

log = logging.getLogger(__name__)

__all__ = [
    "drop_expired_partitions",
    "ensure_partitions",
    "ensure_partitions_ahead",
    "refresh_rollups",
]

RETENTION_LOCK: Final = 0x6661637472790002  # one retention pass at a time across ingest workers

# Minutes first, recomputed from raw samples, each (minute, tag) through the (tag_id, time)
# key: plain aggregates over its rows, and "last" as the value at the newest time, read
# backwards from the same key (an ordered array_agg would sort every group).
_MINUTES = """
INSERT INTO telemetry.sample_1m (bucket, tag_id, avg, min, max, last, count)
SELECT p.bucket, p.tag_id, a.avg, a.min, a.max, l.value, a.count
FROM rollup_claim p
CROSS JOIN LATERAL (
    SELECT {avg} AS avg, min(s.value) AS min, max(s.value) AS max, count(s.value) AS count, count(*) AS rows
    FROM telemetry.sample s
    WHERE s.tag_id = p.tag_id AND s.time >= p.bucket AND s.time < p.bucket + interval '1 minute'
      AND s.time >= %(first)s AND s.time < %(last)s + interval '1 minute'  -- lets the planner prune partitions
) a
CROSS JOIN LATERAL (
    SELECT s.value FROM telemetry.sample s
    WHERE s.tag_id = p.tag_id AND s.time >= p.bucket AND s.time < p.bucket + interval '1 minute'
      AND s.time >= %(first)s AND s.time < %(last)s + interval '1 minute'
    ORDER BY s.time DESC LIMIT 1
) l
WHERE a.rows > 0
ON CONFLICT (tag_id, bucket) DO UPDATE SET
    avg = EXCLUDED.avg, min = EXCLUDED.min, max = EXCLUDED.max,
    last = EXCLUDED.last, count = EXCLUDED.count
"""

# Then hours from their minutes: the average weighted by each minute's count of values.
_HOURS = """
INSERT INTO telemetry.sample_1h (bucket, tag_id, avg, min, max, last, count)
SELECT h.hour, h.tag_id,
       {avg}, min(m.min), max(m.max),
       (array_agg(m.last ORDER BY m.bucket DESC))[1], sum(m.count)
FROM (SELECT DISTINCT date_bin('1 hour', bucket, TIMESTAMPTZ 'epoch') AS hour, tag_id FROM rollup_claim) h
JOIN telemetry.sample_1m m ON m.tag_id = h.tag_id AND m.bucket >= h.hour AND m.bucket < h.hour + interval '1 hour'
GROUP BY h.hour, h.tag_id
ON CONFLICT (tag_id, bucket) DO UPDATE SET
    avg = EXCLUDED.avg, min = EXCLUDED.min, max = EXCLUDED.max,
    last = EXCLUDED.last, count = EXCLUDED.count
"""

# Values near the double's limit are valid, but a float8 sum of two of them overflows.
# Such minutes are retried alone with exact sums (numeric, via the value's exact text
# form: a direct float8-to-numeric cast keeps only 15 digits and can round past the limit).
REFRESH_MINUTES: Final = _MINUTES.format(avg="avg(s.value)")
REFRESH_HOURS: Final = _HOURS.format(avg="sum(m.avg * m.count) / nullif(sum(m.count), 0)")
REFRESH_MINUTES_EXACT: Final = _MINUTES.format(avg="avg(s.value::text::numeric)::float8")
REFRESH_HOURS_EXACT: Final = _HOURS.format(
    avg="(sum(m.avg::text::numeric * m.count) / nullif(sum(m.count), 0))::float8"
)


async def refresh_rollups(conn: psycopg.AsyncConnection[Any], *, limit: int = 240) -> int:
    """Roll up pending minutes (at most ``limit`` per call); returns how many were done.

    Pending rows (an append-only queue: ingest never waits on a refresh) are claimed with
    SKIP LOCKED and deleted in the same transaction, so a crash mid-refresh leaves them
    pending; a minute marked again while a refresh runs is refreshed again next time. If
    the claimed minutes fail together, they are retried one by one, and a minute that
    fails even with exact sums is logged and given up, so one minute never blocks the others.
    """
    try:
        return await _refresh(conn, limit)
    except psycopg.DataError as exc:
        log.warning("rollup refresh failed (%s); retrying minute by minute", exc)
    done = 0
    for _ in range(limit):
        try:
            one = await _refresh(conn, 1, exact=True)
        except psycopg.DataError as exc:
            async with conn.transaction():
                cur = await conn.execute(
                    "DELETE FROM telemetry.rollup_pending WHERE bucket = "
                    "(SELECT min(bucket) FROM telemetry.rollup_pending) RETURNING bucket"
                )
                row = await cur.fetchone()
            log.error("rollups for the minute %s cannot be computed (%s); skipped", row[0] if row else "?", exc)
            continue
        if not one:
            break
        done += one
    return done


async def _refresh(conn: psycopg.AsyncConnection[Any], limit: int, *, exact: bool = False) -> int:
    async with conn.transaction():
        # Nested index lookups costed high enough to trigger JIT, whose compiling costs
        # more than it saves on them.
        await conn.execute("SET LOCAL jit = off")
        await conn.execute(
            """CREATE TEMP TABLE IF NOT EXISTS rollup_claim
               (bucket timestamptz, tag_id integer, PRIMARY KEY (bucket, tag_id)) ON COMMIT DELETE ROWS"""
        )
        await conn.execute(
            """WITH claimed AS (
                   DELETE FROM telemetry.rollup_pending WHERE id IN (
                       SELECT id FROM telemetry.rollup_pending
                       WHERE bucket IN (SELECT DISTINCT bucket FROM telemetry.rollup_pending ORDER BY bucket LIMIT %s)
                       FOR UPDATE SKIP LOCKED)
                   RETURNING bucket, tag_ids)
               INSERT INTO rollup_claim (bucket, tag_id)
               SELECT DISTINCT c.bucket, t.tag_id FROM claimed c, unnest(c.tag_ids) AS t (tag_id)""",
            (limit,),
        )
        cur = await conn.execute("SELECT min(bucket), max(bucket), count(DISTINCT bucket) FROM rollup_claim")
        first, last, minutes = await cur.fetchone() or (None, None, 0)
        if not minutes:
            return 0
        bounds = {"first": first, "last": last}
        await conn.execute(REFRESH_MINUTES_EXACT if exact else REFRESH_MINUTES, bounds)
        await conn.execute(REFRESH_HOURS_EXACT if exact else REFRESH_HOURS)
    return int(minutes)


async def ensure_partitions(conn: psycopg.AsyncConnection[Any], days: set[date]) -> int:
    """Make sure a partition exists for each UTC day; returns how many were created."""
    created = 0
    for day in sorted(days):
        cur = await conn.execute("SELECT telemetry.ensure_sample_partition(%s)", (day,))
        row = await cur.fetchone()
        created += bool(row and row[0])
    return created


async def ensure_partitions_ahead(conn: psycopg.AsyncConnection[Any], today: date, days_ahead: int) -> int:
    async with conn.transaction():
        return await ensure_partitions(conn, {today + timedelta(days=n) for n in range(days_ahead + 1)})


async def drop_expired_partitions(conn: psycopg.AsyncConnection[Any], today: date, retention_days: int) -> list[str]:
    """Drop whole days older than the retention window; returns the dropped partitions."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (RETENTION_LOCK,))
        if not (row := await cur.fetchone()) or not row[0]:
            return []  # another worker is at it
        cur = await conn.execute(
            "SELECT telemetry.drop_sample_partitions(%s)", (today - timedelta(days=retention_days),)
        )
        return [str(row[0]) for row in await cur.fetchall()]
