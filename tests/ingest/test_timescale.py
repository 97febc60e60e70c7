"""The TimescaleDB storage path, against a server that preloads the extension.

TimescaleDB is not packaged for this platform's CI machines, so these tests are deselected
by default (marker ``timescale``) and run by hand where the extension is: build it from its
source (docs/ingest.md, "Storage: one schema, two engines"), start a PostgreSQL with
``shared_preload_libraries = 'timescaledb'`` and run

    FACTORY_TIMESCALE_ADMIN_URL=postgresql://postgres@127.0.0.1:5440/postgres \\
        .venv/bin/python -m pytest -m timescale tests/ingest/test_timescale.py

They check what the plain path's tests check: late data reaches both aggregates, through
the same store and upkeep code ingest runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from factory.db import connect
from ingest.retention import Retention
from ingest.store import Samples, TelemetryStore
from ingest.upkeep import Upkeep, UpkeepConfig
from provisioning.migrate import detect_flavor, migrate

pytestmark = [pytest.mark.timescale, pytest.mark.integration]
Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
async def tsdb() -> AsyncIterator[str]:
    admin = os.environ.get("FACTORY_TIMESCALE_ADMIN_URL")
    if not admin:
        pytest.fail("set FACTORY_TIMESCALE_ADMIN_URL to a PostgreSQL that preloads timescaledb (see the docstring)")
    name = f"factory_tsdb_{uuid.uuid4().hex[:8]}"
    params = psycopg.conninfo.conninfo_to_dict(admin) | {"dbname": name}
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo("", **params)
    try:
        async with await connect(url) as conn:
            assert await detect_flavor(conn) == "timescaledb"
            await migrate(conn)
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _write(url: str, tag: int, rows: list[tuple[datetime, float]]) -> None:
    samples = Samples()
    samples.extend([tag] * len(rows), [round(t.timestamp() * 1000) for t, _ in rows], [v for _, v in rows],
                   [0] * len(rows))  # fmt: skip
    async with await connect(url) as conn, conn.transaction():
        await TelemetryStore(conn, "timescaledb").write_samples(samples)


async def test_late_samples_reach_both_aggregates(tsdb: str) -> None:
    async with await connect(tsdb, autocommit=True) as conn:
        store = TelemetryStore(conn, "timescaledb")
        tags = await store.tag_ids(await store.device_id("mill-a", "pi1"), ["late.h", "late.d"])
        upkeep = Upkeep(tsdb, UpkeepConfig(), Retention())
        now = datetime.now(UTC).replace(microsecond=0)
        for name, late in (("late.h", timedelta(hours=3)), ("late.d", timedelta(days=3))):
            await _write(tsdb, tags[name], [(now - late - timedelta(minutes=1), 1.0), (now, 1.0)])
        await upkeep.cycle(conn, "timescaledb")  # everything refreshed so far
        assert upkeep.stats.late_hours_refreshed == 2  # the first rows of each were late already
        for name, late in (("late.h", timedelta(hours=3)), ("late.d", timedelta(days=3))):
            await _write(tsdb, tags[name], [(now - late, 42.0)])
        cur = await conn.execute("SELECT count(*) FROM telemetry.aggregate_pending")
        assert await cur.fetchone() == (2,)  # each late hour queued by its flush
        await upkeep.cycle(conn, "timescaledb")
        assert upkeep.stats.late_hours_refreshed == 4
        for name, late in (("late.h", timedelta(hours=3)), ("late.d", timedelta(days=3))):
            at = now - late
            for view, bucket in (("sample_1m", at.replace(second=0)), ("sample_1h", at.replace(minute=0, second=0))):
                # materialized, not computed at query time: only the refreshed rows of the view
                cur = await conn.execute(
                    f"SELECT max FROM _timescaledb_internal.{await _materialization(conn, view)}"
                    " WHERE tag_id = %s AND bucket = %s",
                    (tags[name], bucket),
                )
                assert await cur.fetchone() == (42.0,), (name, view)
        cur = await conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates ORDER BY 1"
        )
        assert await cur.fetchall() == [("sample_1h", False), ("sample_1m", False)]


async def _materialization(conn: Conn, view: str) -> str:
    cur = await conn.execute(
        "SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = 'telemetry' AND view_name = %s",
        (view,),
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def test_old_chunks_go_into_the_columnstore(tsdb: str) -> None:
    async with await connect(tsdb, autocommit=True) as conn:
        store = TelemetryStore(conn, "timescaledb")
        [tag] = (await store.tag_ids(await store.device_id("mill-a", "pi1"), ["old.x"])).values()
        await _write(tsdb, tag, [(datetime.now(UTC) - timedelta(days=10), 5.0)])
        upkeep = Upkeep(tsdb, UpkeepConfig(compress_after_days=7), Retention())
        await upkeep.cycle(conn, "timescaledb")  # the first cycle does the housekeeping
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'sample'"
        )
        assert await cur.fetchone() == (1,)
        cur = await conn.execute("SELECT value FROM telemetry.sample WHERE tag_id = %s", (tag,))
        assert await cur.fetchall() == [(5.0,)]


async def test_the_hypertable_uses_the_current_names_and_old_databases_keep_theirs(tsdb: str) -> None:
    """0002 was rewritten with the names of TimescaleDB 2.18: a fresh database gets the same
    columnstore settings, and one that ran the former file (another name) is left alone."""
    async with await connect(tsdb, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT segmentby, orderby FROM timescaledb_information.hypertable_columnstore_settings"
            " WHERE hypertable = 'telemetry.sample'::regclass"
        )
        assert await cur.fetchall() == [("tag_id", '"time" DESC')]
        await conn.execute(
            "UPDATE provisioning.schema_migration SET name = '0002_sample.timescaledb.sql', checksum = 'former'"
            " WHERE component = 'telemetry' AND version = 2"
        )
        assert await migrate(conn) == []
