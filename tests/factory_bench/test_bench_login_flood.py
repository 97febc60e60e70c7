"""``factory bench login-flood`` on a small load: it floods a real API process with wrong
passwords from a process of its own while reading, and reports both phases.

Speed is the benchmark's business, not this test's (docs/erp-api.md has its figures)."""

from __future__ import annotations

import json

import psycopg
import pytest

from factory_bench.erp_flood import FloodOptions, run_flood_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_login_flood_benchmark_reports_both_phases(database_url: str, db: psycopg.AsyncConnection) -> None:
    options = FloodOptions(seconds=2, read_rate=20, attackers=24, pool_size=2, warmup_seconds=0.5)
    result = await run_flood_bench(options, database_url, progress=lambda _: None)
    json.dumps(result)  # one JSON line
    for phase in ("reads_alone", "reads_during_flood"):
        assert result[phase]["all"]["count"] > 0, phase
        assert result[phase]["all"]["errors"] == 0, phase  # refused sign-ins never cost a reader its answer
    flood = result["flood"]
    assert flood["attempts"] == sum(flood["answers"].values()) > 0
    assert set(flood["answers"]) <= {"401", "503"}  # every name and address new: checked, or turned away
    assert "401" in flood["answers"]  # real password checks ran
    assert result["ratio"]["p99_flood_per_alone"] > 0
    cur = await db.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'factory_bench_flood_%%'")
    assert (await cur.fetchone())[0] == 0  # the scratch database was dropped
