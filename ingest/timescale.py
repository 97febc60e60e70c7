"""Storage upkeep on TimescaleDB, driven by ingest rather than TimescaleDB's job scheduler.

TimescaleDB's background policy jobs have been seen to fail on some PostgreSQL 15 builds
while the same calls run fine directly, so the platform makes these calls itself. Kept to
the few statements below; CI has no TimescaleDB, so they are exercised only where it is.
``refresh_continuous_aggregate`` cannot run inside a transaction: use an autocommit
connection.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

__all__ = ["compress_old_chunks", "drop_old_aggregates", "drop_old_chunks", "refresh_aggregates"]


async def refresh_aggregates(conn: psycopg.AsyncConnection[Any], window: timedelta) -> None:
    """Materialize the last ``window`` of both rollups (real-time aggregation covers the rest)."""
    start = datetime.now(UTC) - window
    for view in ("telemetry.sample_1m", "telemetry.sample_1h"):
        await conn.execute("CALL refresh_continuous_aggregate(%s, %s, NULL)", (view, start))


async def compress_old_chunks(conn: psycopg.AsyncConnection[Any], older_than: timedelta) -> int:
    cur = await conn.execute(
        """SELECT count(compress_chunk(c, if_not_compressed => true))
           FROM show_chunks('telemetry.sample', older_than => %s) c""",
        (older_than,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


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
