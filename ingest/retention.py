"""How long telemetry is kept: raw samples (a default and per-site overrides) and, on plain
PostgreSQL, the minute and hour rollups.

Raw samples live in daily partitions (TimescaleDB: daily chunks) shared by every site, so
whole days go only when the longest-kept site is done with them (a DROP, instant and
without vacuum work). A site kept for less loses its rows day by day with a DELETE by its
tags, through the (tag_id, time) key: its cost grows with the site's rows, it writes WAL,
and it leaves dead rows for autovacuum; on TimescaleDB a compressed chunk may have to be
decompressed for it. Rollups are kept longer than raw samples: hours are recomputed from
minutes whenever a late point arrives, so minutes must outlive every raw sample ingest
still accepts (``Retention`` checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import psycopg

from factory.wire import NAME_RE

__all__ = [
    "ROLLUP_1H_DAYS",
    "ROLLUP_1M_DAYS",
    "SAMPLE_DAYS",
    "Retention",
    "RetentionError",
    "delete_site_samples",
    "purge_rollups",
]

log = logging.getLogger(__name__)

SAMPLE_DAYS: Final = 365
ROLLUP_1M_DAYS: Final = 730  # two years of minutes
ROLLUP_1H_DAYS: Final = 3650  # ten years of hours
SITE_LOCK: Final = 0x6661637472790003  # one pass of per-site deletes at a time across ingest workers

_SITE_TAGS: Final = """SELECT t.id FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
                       WHERE (d.site = ANY(%(sites)s::text[])) <> %(others)s"""
_ROLLUPS: Final = {
    "sample_1m": "DELETE FROM telemetry.sample_1m WHERE bucket < %s",
    "sample_1h": "DELETE FROM telemetry.sample_1h WHERE bucket < %s",
}


class RetentionError(ValueError):
    """A retention that does not fit; ``setting`` is the ``Retention`` field to change."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each kind of telemetry is kept; ``RetentionError`` names what does not fit."""

    sample_days: int = SAMPLE_DAYS
    sites: Mapping[str, int] = field(default_factory=dict)  # site -> days, instead of sample_days
    rollup_1m_days: int = ROLLUP_1M_DAYS
    rollup_1h_days: int = ROLLUP_1H_DAYS

    def __post_init__(self) -> None:
        for site, days in self.sites.items():
            if not NAME_RE.fullmatch(site):
                raise RetentionError(f"site {site!r} must match {NAME_RE.pattern}", "sites")
            if days < 1:
                raise RetentionError(f"site {site}: {days} days; keep at least 1", "sites")
        for setting in ("sample_days", "rollup_1m_days", "rollup_1h_days"):
            if getattr(self, setting) < 1:
                raise RetentionError(f"{getattr(self, setting)} days; keep at least 1", setting)
        if self.rollup_1m_days < self.longest:
            raise RetentionError(f"minute rollups ({self.rollup_1m_days} days) must be kept at least as long as raw"
                                 f" samples ({self.longest} days): hours are recomputed from minutes",
                                 "rollup_1m_days")  # fmt: skip
        if self.rollup_1h_days < self.rollup_1m_days:
            raise RetentionError(f"hour rollups ({self.rollup_1h_days} days) must be kept at least as long as"
                                 f" minute rollups ({self.rollup_1m_days} days)", "rollup_1h_days")  # fmt: skip

    @property
    def longest(self) -> int:
        """Days the longest-kept site's samples are kept: older days go whole."""
        return max([self.sample_days, *self.sites.values()])

    def days(self, site: str) -> int:
        return self.sites.get(site, self.sample_days)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


async def delete_site_samples(conn: psycopg.AsyncConnection[Any], today: date, retention: Retention) -> int:
    """Delete the samples of sites kept for less than ``retention.longest`` days, from the
    days the longest keeps but they do not; one transaction per group of sites and day, so
    a first pass over a long span holds no lock for long. Returns the rows deleted."""
    groups: dict[int, list[str]] = {}
    for site, days in retention.sites.items():
        groups.setdefault(days, []).append(site)
    passes = [(sites, False, days) for days, sites in sorted(groups.items())]
    passes.append((list(retention.sites), True, retention.sample_days))  # every site without its own
    oldest = today - timedelta(days=retention.longest)  # older days are dropped whole
    deleted = 0
    for sites, others, days in passes:
        if days < retention.longest:
            deleted += await _delete_days(conn, sites, others, oldest, today - timedelta(days=days))
    return deleted


async def _delete_days(
    conn: psycopg.AsyncConnection[Any], sites: list[str], others: bool, first: date, before: date
) -> int:
    """Delete, day by day from ``first`` to ``before``, the samples of ``sites`` (with
    ``others``: of every site but them)."""
    cur = await conn.execute(_SITE_TAGS, {"sites": sites, "others": others})
    tag_ids = [int(row[0]) for row in await cur.fetchall()]
    deleted = 0
    day = first
    while tag_ids and day < before:
        async with conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SITE_LOCK,))
            if not (row := await cur.fetchone()) or not row[0]:
                return deleted  # another worker is at it
            cur = await conn.execute(
                "DELETE FROM telemetry.sample WHERE tag_id = ANY(%s) AND time >= %s AND time < %s",
                (tag_ids, _midnight(day), _midnight(day + timedelta(days=1))),
            )
            deleted += cur.rowcount
        day += timedelta(days=1)
    if deleted:
        what = f"every site but {', '.join(sites)}" if others else ", ".join(sites)
        log.info("retention: deleted %d samples of %s before %s", deleted, what, before)
    return deleted


async def purge_rollups(conn: psycopg.AsyncConnection[Any], today: date, retention: Retention) -> dict[str, int]:
    """Plain PostgreSQL: delete rollup rows past their retention; how many of each."""
    days = {"sample_1m": retention.rollup_1m_days, "sample_1h": retention.rollup_1h_days}
    deleted: dict[str, int] = {}
    for table, statement in _ROLLUPS.items():
        cur = await conn.execute(statement, (_midnight(today - timedelta(days=days[table])),))
        deleted[table] = cur.rowcount
        if cur.rowcount:
            log.info("retention: deleted %d rows of telemetry.%s older than %d days", cur.rowcount, table, days[table])
    return deleted
