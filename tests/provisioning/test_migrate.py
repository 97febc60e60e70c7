"""Migrations: the right flavor is chosen, applying twice changes nothing, edits are caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import provisioning.migrate
from factory.db import connect
from provisioning.migrate import MigrationError, _preloads_timescaledb, detect_flavor, migrate, plan

pytestmark = pytest.mark.integration

PLAIN = [
    "0001_telemetry.sql", "0002_sample.postgres.sql", "0003_rollups.postgres.sql", "0004_rollup_queue.postgres.sql",
    "0005_rollup_by_tag.postgres.sql", "0006_partition_race.postgres.sql", "0007_write_back.sql", "0008_seq_gaps.sql",
    "0010_retired_devices.sql",
]  # fmt: skip
TELEMETRY_TABLES = {
    "device",
    "tag",
    "sample",
    "sample_1m",
    "sample_1h",
    "event",
    "dead_letter",
    "rollup_pending",
    "write_back",
    "device_seq",
    "seq_missing",
}


def test_plan_picks_one_variant_per_version() -> None:
    plain = [m.name for m in plan("postgres") if m.component == "telemetry"]
    timescale = [m.name for m in plan("timescaledb") if m.component == "telemetry"]
    assert plain == PLAIN
    assert timescale == [
        "0001_telemetry.sql", "0002_hypertable.timescaledb.sql", "0003_rollups.timescaledb.sql", "0007_write_back.sql",
        "0008_seq_gaps.sql", "0009_late_aggregates.timescaledb.sql", "0010_retired_devices.sql",
    ]  # fmt: skip
    steps = plan("timescaledb")
    assert "create_hypertable('telemetry.sample'" in steps[1].sql
    assert "timescaledb.segmentby = 'tag_id'" in steps[1].sql  # the current name, from 2.18
    assert "timescaledb.compress_segmentby = 'tag_id'" in steps[1].sql  # the old one, before
    assert steps[2].sql.count("timescaledb.continuous") == 2
    assert "PARTITION BY RANGE (time)" in plan("postgres")[1].sql


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    name = f"factory_migrate_{uuid.uuid4().hex[:8]}"
    params = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    params["dbname"] = name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield psycopg.conninfo.make_conninfo("", **params)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_migrate_twice_is_a_no_op(empty_database: str) -> None:
    async with await connect(empty_database) as conn:
        # This machine has no TimescaleDB package: the plain PostgreSQL path must be chosen.
        assert await detect_flavor(conn) == "postgres"
        first = await migrate(conn)
        assert [name for name in first if name.startswith("telemetry/")] == [f"telemetry/{name}" for name in PLAIN]
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'telemetry'"
            " AND table_name !~ '^sample_[0-9]{8}$'"
        )
        assert {r[0] for r in await cur.fetchall()} == TELEMETRY_TABLES
        assert await migrate(conn) == []
        cur = await conn.execute("SELECT count(*) FROM provisioning.schema_migration")
        assert await cur.fetchone() == (len(first),)


async def test_an_edited_migration_is_refused(empty_database: str) -> None:
    async with await connect(empty_database) as conn:
        await migrate(conn)
        await conn.execute(
            "UPDATE provisioning.schema_migration SET checksum = 'x' WHERE component = 'telemetry' AND version = 1"
        )
        await conn.commit()
        with pytest.raises(MigrationError, match=r"0001_telemetry\.sql changed after it was applied"):
            await migrate(conn)


def test_provision_db_command(empty_database: str) -> None:
    env = {**os.environ, "FACTORY_DATABASE_URL": empty_database}
    run = [sys.executable, "-m", "factory_cli", "provision", "db", "--json"]
    first = subprocess.run(run, capture_output=True, text=True, env=env, check=True, timeout=60)
    applied = json.loads(first.stdout)["applied"]
    assert [name for name in applied if name.startswith("telemetry/")] == [f"telemetry/{name}" for name in PLAIN]
    second = subprocess.run(run, capture_output=True, text=True, env=env, check=True, timeout=60)
    assert second.stdout.strip() == '{"applied": []}'
    env["FACTORY_DATABASE_URL"] = "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=5"
    down = subprocess.run(run, capture_output=True, text=True, env=env, check=False, timeout=60)
    assert down.returncode == 2
    assert down.stderr.startswith("error: database host=127.0.0.1 port=1 user=postgres dbname=nowhere")
    assert "Traceback" not in down.stderr


@pytest.mark.parametrize(
    ("setting", "preloads"),
    [("", False), ("pg_stat_statements", False), ("timescaledb", True), ("pg_stat_statements, timescaledb", True),
     ('"timescaledb-2.28.3"', True), ("$libdir/timescaledb.so", True), ("timescaledb_toolkit", False)],
)  # fmt: skip
def test_what_counts_as_preloading_timescaledb(setting: str, preloads: bool) -> None:
    """CREATE EXTENSION without the preload ends the connection (FATAL): it is only tried with it."""
    assert _preloads_timescaledb(setting) is preloads


async def test_minutes_pending_before_0005_are_handed_on_per_tag(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database with pending minutes in the old form (no tags) upgrades without losing a
    rollup: each minute is pending again with the tags that have samples in it."""
    before_0005 = [m for m in plan("postgres") if not (m.component == "telemetry" and m.version >= 5)]
    only_0005 = [m for m in plan("postgres") if not (m.component == "telemetry" and m.version >= 6)]
    monkeypatch.setattr(provisioning.migrate, "plan", lambda flavor: before_0005)
    async with await connect(empty_database) as conn:
        await migrate(conn)
        monkeypatch.undo()
        # Noon yesterday: the two minutes and their samples lie in one day's partition (ten
        # minutes before now crossed midnight when the test ran just after it).
        minute = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
        await conn.execute("SELECT telemetry.ensure_sample_partition(%s)", (minute.date(),))
        await conn.execute("INSERT INTO telemetry.device (site, name) VALUES ('s1', 'pi1')")
        await conn.execute(
            "INSERT INTO telemetry.tag (device_id, name, asset) SELECT id, n, 'a' FROM telemetry.device,"
            " unnest(ARRAY['a.x', 'a.y']) AS n"
        )
        await conn.execute(
            """INSERT INTO telemetry.sample (tag_id, time, value)
               SELECT t.id, %s::timestamptz + s * interval '1 second', 1.0
               FROM telemetry.tag t, generate_series(0, 90, 30) AS s WHERE t.name = 'a.x' OR s < 60""",
            (minute,),
        )  # a.x in both minutes, a.y in the first only
        await conn.execute(
            "INSERT INTO telemetry.rollup_pending (bucket) VALUES (%s), (%s)", (minute, minute + timedelta(minutes=1))
        )
        await conn.commit()
        monkeypatch.setattr(provisioning.migrate, "plan", lambda flavor: only_0005)
        applied = await migrate(conn)
        monkeypatch.undo()
        assert applied == ["telemetry/0005_rollup_by_tag.postgres.sql"]
        cur = await conn.execute(
            "SELECT p.bucket, array(SELECT t.name FROM telemetry.tag t WHERE t.id = ANY(p.tag_ids) ORDER BY 1)"
            " FROM telemetry.rollup_pending p ORDER BY 1"
        )
        later = minute + timedelta(minutes=1)
        assert await cur.fetchall() == [(minute, ["a.x", "a.y"]), (later, ["a.x"])]
        cur = await conn.execute("SELECT to_regclass('telemetry.sample_time_brin')")
        assert await cur.fetchone() == (None,)
