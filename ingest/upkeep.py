"""The storage upkeep loop that runs beside ingest: rollups, partitions, retention, compression.

Every step is safe to run from several ingest workers at once (SKIP LOCKED claims,
advisory locks), and a failing step is logged, counted and tried again next cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from factory.db import Flavor, connect, installed_flavor
from ingest import rollup, timescale
from ingest.retention import ROLLUP_1H_DAYS, ROLLUP_1M_DAYS, Retention, delete_site_samples, purge_rollups

__all__ = ["Upkeep", "UpkeepConfig", "UpkeepStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpkeepConfig:
    interval_s: float = 5.0  # how often rollups are refreshed
    housekeeping_s: float = 3600.0  # how often partitions and retention are looked after
    partitions_ahead_days: int = 2
    compress_after_days: int = 7  # TimescaleDB only
    aggregate_window: timedelta = timedelta(hours=2)  # TimescaleDB only
    dead_letter_days: int = 30  # dead letters older than this are deleted
    rollup_1m_days: int = ROLLUP_1M_DAYS  # telemetry.sample_1m rows older than this are deleted
    rollup_1h_days: int = ROLLUP_1H_DAYS  # telemetry.sample_1h rows older than this are deleted
    seq_grace_s: float = 60.0  # a batch number missing this long is a lost batch (a seq_gap event)


@dataclass(slots=True)
class UpkeepStats:
    cycles: int = 0
    failures: int = 0
    minutes_rolled_up: int = 0
    partitions_created: int = 0
    partitions_dropped: int = 0
    dead_letters_deleted: int = 0
    site_samples_deleted: int = 0  # by sites kept for less than the longest
    rollups_deleted: int = 0
    late_hours_refreshed: int = 0  # TimescaleDB: hours refreshed because late rows went into them
    lost_batches: dict[str, int] = field(default_factory=dict)  # "site/device" -> batches never delivered
    last_cycle_ms: float = 0.0


class Upkeep:
    def __init__(self, database_url: str, config: UpkeepConfig, retention: Retention) -> None:
        self.database_url = database_url
        self.config = config
        self.retention = retention
        self.stats = UpkeepStats()
        self._last_housekeeping = float("-inf")

    async def run(self) -> None:
        """Until cancelled; database trouble costs a cycle, never the loop."""
        while True:
            try:
                async with await connect(self.database_url, autocommit=True, application_name="factory-upkeep") as conn:
                    flavor = await installed_flavor(conn)
                    while True:
                        await self.cycle(conn, flavor)
                        await asyncio.sleep(self.config.interval_s)
            except psycopg.Error as exc:
                self.stats.failures += 1
                log.warning("storage upkeep failed (%s); retrying in %.0fs", exc, self.config.interval_s)
                await asyncio.sleep(self.config.interval_s)

    async def cycle(self, conn: psycopg.AsyncConnection[Any], flavor: Flavor) -> None:
        started = time.perf_counter()
        now = time.monotonic()
        housekeeping = now - self._last_housekeeping >= self.config.housekeeping_s
        if flavor == "postgres":
            await self._postgres(conn, housekeeping)
        else:
            await self._timescale(conn, housekeeping)
        await self._declare_gaps(conn)
        if housekeeping:
            cur = await conn.execute(
                "DELETE FROM telemetry.dead_letter WHERE received_at < now() - make_interval(days => %s)",
                (self.config.dead_letter_days,),
            )
            self.stats.dead_letters_deleted += cur.rowcount
            self._last_housekeeping = now
        self.stats.cycles += 1
        self.stats.last_cycle_ms = (time.perf_counter() - started) * 1000

    async def _declare_gaps(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Batch numbers missing past the grace period become seq_gap events (ingest 0008)."""
        cur = await conn.execute(
            "SELECT site, device, batches FROM telemetry.declare_seq_gaps(make_interval(secs => %s))",
            (self.config.seq_grace_s,),
        )
        for site, device, batches in await cur.fetchall():
            key = f"{site}/{device}"
            self.stats.lost_batches[key] = self.stats.lost_batches.get(key, 0) + int(batches)
            log.warning("device %s: %d batch(es) never arrived (telemetry.event seq_gap)", key, batches)

    async def _postgres(self, conn: psycopg.AsyncConnection[Any], housekeeping: bool) -> None:
        if housekeeping:
            today = datetime.now(UTC).date()
            self.stats.partitions_created += await rollup.ensure_partitions_ahead(
                conn, today, self.config.partitions_ahead_days
            )
            dropped = await rollup.drop_expired_partitions(conn, today, self.retention.longest)
            if dropped:
                log.info("retention: dropped %s", ", ".join(dropped))
            self.stats.partitions_dropped += len(dropped)
            self.stats.site_samples_deleted += await delete_site_samples(conn, today, self.retention)
            self.stats.rollups_deleted += sum((await purge_rollups(conn, today, self.retention)).values())
        while done := await rollup.refresh_rollups(conn):
            self.stats.minutes_rolled_up += done

    async def _timescale(self, conn: psycopg.AsyncConnection[Any], housekeeping: bool) -> None:
        await timescale.refresh_aggregates(conn, self.config.aggregate_window)
        self.stats.late_hours_refreshed += await timescale.refresh_late(conn)
        if housekeeping:
            await timescale.compress_old_chunks(conn, timedelta(days=self.config.compress_after_days))
            longest = timedelta(days=self.retention.longest)
            self.stats.partitions_dropped += await timescale.drop_old_chunks(conn, longest)
            self.stats.site_samples_deleted += await delete_site_samples(conn, datetime.now(UTC).date(), self.retention)
            self.stats.partitions_dropped += await timescale.drop_old_aggregates(
                conn, timedelta(days=self.retention.rollup_1m_days), timedelta(days=self.retention.rollup_1h_days)
            )
