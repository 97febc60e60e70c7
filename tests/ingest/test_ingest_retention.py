"""Retention on plain PostgreSQL: per-site telemetry (whole days dropped past the longest,
rows deleted by site below it) and the rollups' own, each row counted before and after.

The days are in 2001 and 2002, which no other test writes, so the global steps (dropping
whole days, deleting old rollups) touch only this module's rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from test_storage import make_tags, refresh_all, write

from factory.db import connect
from ingest.retention import Retention, RetentionError, delete_site_samples, purge_rollups
from ingest.rollup import drop_expired_partitions
from ingest.upkeep import Upkeep, UpkeepConfig

pytestmark = pytest.mark.integration

AGES = (1, 5, 15, 25)  # days before "today" of the samples, one per day at noon


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


async def counts(db, tags: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    cur = await db.execute(
        "SELECT t.id, count(s.tag_id) FROM unnest(%s::int[]) t (id)"
        " LEFT JOIN telemetry.sample s ON s.tag_id = t.id GROUP BY t.id",
        (tags,),
    )
    found = dict(await cur.fetchall())
    return [found[tag] for tag in tags]


async def test_each_site_keeps_its_days_and_the_default_holds_for_the_rest(database_url: str, site: str, db) -> None:
    today = date(2001, 6, 1)
    short, default, long = f"{site}-short", f"{site}-default", f"{site}-long"
    tags = [(await make_tags(database_url, name, ["pump1.flow"]))[0] for name in (short, default, long)]
    rows = [(tag, noon(today - timedelta(days=age)), float(age)) for tag in tags for age in AGES]
    assert await write(database_url, rows) == 12
    assert await counts(db, tags) == [4, 4, 4]
    retention = Retention(sample_days=10, sites={short: 3, long: 20}, rollup_1m_days=30, rollup_1h_days=30)
    assert retention.longest == 20

    dropped = await drop_expired_partitions(db, today, retention.longest)
    assert f"sample_{today - timedelta(days=25):%Y%m%d}" in dropped  # past every site: the whole day goes
    assert f"sample_{today - timedelta(days=15):%Y%m%d}" not in dropped
    assert await counts(db, tags) == [3, 3, 3]
    assert await delete_site_samples(db, today, retention) == 3  # short: days 5 and 15; default: day 15
    assert await counts(db, tags) == [1, 2, 3]
    cur = await db.execute("SELECT value FROM telemetry.sample WHERE tag_id = ANY(%s) ORDER BY tag_id, time", (tags,))
    assert [r[0] for r in await cur.fetchall()] == [1.0, 5.0, 1.0, 15.0, 5.0, 1.0]
    assert await delete_site_samples(db, today, retention) == 0  # nothing more until a day passes
    assert await delete_site_samples(db, today + timedelta(days=1), retention) == 0
    assert await delete_site_samples(db, today + timedelta(days=3), retention) == 1  # short's last: 4 days old
    assert await counts(db, tags) == [0, 2, 3]
    assert await delete_site_samples(db, today + timedelta(days=5), retention) == 0  # default's day 5: 10 days
    assert await delete_site_samples(db, today + timedelta(days=6), retention) == 1  # now older than 10 days
    assert await counts(db, tags) == [0, 1, 3]


async def test_rollups_are_deleted_past_their_own_retention(database_url: str, site: str, db) -> None:
    today = date(2002, 3, 1)
    (tag,) = await make_tags(database_url, site, ["boiler1.drum_pressure"])
    assert await write(database_url, [(tag, noon(today - timedelta(days=age)), 1.0) for age in (5, 15, 25)]) == 3
    await refresh_all(db)

    async def rollups() -> tuple[int, int, int]:
        found = []
        for table in ("sample", "sample_1m", "sample_1h"):
            column = "time" if table == "sample" else "bucket"
            cur = await db.execute(f"SELECT count(*) FROM telemetry.{table} WHERE tag_id = %s AND {column} < %s",
                                   (tag, noon(today)))  # fmt: skip
            found.append(int((await cur.fetchone())[0]))
        return found[0], found[1], found[2]

    assert await rollups() == (3, 3, 3)
    retention = Retention(sample_days=1, rollup_1m_days=10, rollup_1h_days=20)
    deleted = await purge_rollups(db, today, retention)  # of every tag: the other test's 2001 rollups too
    assert deleted["sample_1m"] >= 2
    assert deleted["sample_1h"] >= 1
    assert await rollups() == (3, 1, 2)  # raw samples are not the rollups' business


@pytest.mark.parametrize(
    ("settings", "setting", "message"),
    [
        ({"sites": {"mill-a": 0}}, "sites", "site mill-a: 0 days"),
        ({"sites": {"Mill A": 30}}, "sites", "site 'Mill A' must match"),
        ({"sample_days": 0}, "sample_days", "keep at least 1"),
        ({"rollup_1m_days": 100}, "rollup_1m_days", "minute rollups (100 days)"),
        ({"sites": {"mill-a": 1000}}, "rollup_1m_days", "raw samples (1000 days)"),
        ({"rollup_1h_days": 700}, "rollup_1h_days", "hour rollups (700 days)"),
    ],
)
def test_retentions_that_do_not_fit_are_refused(settings: dict[str, object], setting: str, message: str) -> None:
    with pytest.raises(RetentionError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        Retention(**settings)  # type: ignore[arg-type]
    assert raised.value.setting == setting


async def test_the_upkeep_cycle_applies_every_retention(database_url: str, site: str, db) -> None:
    """One housekeeping cycle as ingest runs it: a site kept 2 days loses a 5-day-old sample,
    another site under the default 30 days keeps its own."""
    now = datetime.now(UTC)
    short, default = f"{site}-short", f"{site}-default"
    tags = [(await make_tags(database_url, name, ["pump1.flow"]))[0] for name in (short, default)]
    assert await write(database_url, [(tag, now - timedelta(days=age), 1.0) for tag in tags for age in (0, 5)]) == 4
    retention = Retention(sample_days=30, sites={short: 2}, rollup_1m_days=30, rollup_1h_days=40)
    upkeep = Upkeep(database_url, UpkeepConfig(), retention)
    async with await connect(database_url, autocommit=True) as conn:
        await upkeep.cycle(conn, "postgres")
    assert await counts(db, tags) == [1, 2]
    assert upkeep.stats.site_samples_deleted == 1
