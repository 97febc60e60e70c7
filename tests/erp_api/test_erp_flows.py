"""The seed order flow end to end (what `factory demo` runs), the ERP CLI commands, and a
short run of `factory bench erp` that checks its JSON line (figures come from full runs)."""

from __future__ import annotations

import asyncio
import json
import re

import psycopg
import pytest
from click.testing import CliRunner
from erp_support import running, unique

from erp_api.cli import api_key, erp
from factory_bench.erp import BenchOptions, run_bench
from factory_demo.seed import EXPECTED_EVENTS, seed_order_flow

pytestmark = pytest.mark.integration


async def test_seed_flow_reaches_the_broker(database_url: str, mqtt_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url, mqtt_url=mqtt_url) as api:
        result = await seed_order_flow(database_url, api.base_url, mqtt_url, timeout_s=15)
    assert result.missing_events == [], result
    assert set(result.events) >= set(EXPECTED_EVENTS)
    assert (
        result.events.index("order.created")
        < result.events.index("order.confirmed")
        < result.events.index("order.invoiced")
    )
    assert re.fullmatch(r"INV-\d{4}-\d{6}", result.invoice_number)
    assert result.gross == "1123.50"
    cur = await db.execute("SELECT count(*) FROM erp.api_key WHERE name LIKE 'seed-%%' AND revoked_at IS NULL")
    assert (await cur.fetchone())[0] == 0
    cur = await db.execute(
        "SELECT o.status, i.gross = i.paid FROM erp.sales_order o JOIN erp.invoice i ON i.order_id = o.id WHERE o.id = %s",
        (result.order_id,),
    )
    assert await cur.fetchone() == ("invoiced", True)


def test_serve_refuses_to_start_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACTORY_JWT_SECRET", raising=False)
    result = CliRunner().invoke(erp, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "FACTORY_JWT_SECRET is not set" in result.output
    monkeypatch.setenv("FACTORY_JWT_SECRET", "changeme")
    result = CliRunner().invoke(erp, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "placeholder" in result.output


async def test_api_key_command_prints_a_working_key(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    name = unique("analytics").lower()
    result = await asyncio.to_thread(CliRunner().invoke, api_key, [name, "--role", "service", "--json"])
    assert result.exit_code == 0, result.output
    key = json.loads(result.output)["key"]
    again = await asyncio.to_thread(CliRunner().invoke, api_key, [name])
    assert again.exit_code == 2
    assert "already exists" in again.output
    async with running(database_url) as api, api.client(None, **{"X-API-Key": key}) as client:
        me = await client.get("/api/v1/auth/me")
        assert me.json() == {"name": f"key:{name}", "role": "service", "via": "api_key"}


@pytest.mark.slow
async def test_bench_prints_figures_and_its_ceiling(database_url: str, db: psycopg.AsyncConnection) -> None:
    options = BenchOptions(seconds=0.5, flow_rate=10, read_rate=40, saturation_clients=2, workers=1, pool_size=2,
                           pgbench_clients=2, pgbench_seconds=1, pgbench_scale=1, warmup_seconds=0.2)  # fmt: skip
    result = await run_bench(options, database_url, progress=lambda _: None)
    json.dumps(result)  # one JSON line
    assert result["flows"]["flows_ok"] == result["flows"]["flows"] > 0
    assert result["flows"]["calls"]["confirm"]["errors"] == 0
    assert result["flows"]["all_calls"]["p99_ms"] > 0
    assert result["reads"]["all"]["count"] > 0
    assert result["reads"]["all"]["errors"] == 0
    assert result["saturation"]["write_calls_per_s"] > 0
    assert result["ceiling"]["pgbench_tps"] > 0
    assert result["ratio"]["write_calls_per_pgbench_tps"] > 0
    assert set(result["targets"]) == {"flows_p99_le_50ms", "reads_p99_le_20ms", "write_calls_ge_0.15_pgbench"}
    memory = result["server_memory"]  # the kernel's peak of each API process, read before it stopped
    assert len(memory["worker_peak_rss_mib"]) == 1
    assert memory["peak_rss_mib_max"] == memory["peak_rss_mib_sum"] == memory["worker_peak_rss_mib"][0] > 20
    assert 20 < memory["worker_rss_at_end_mib"][0] <= memory["peak_rss_mib_max"]
    scratch = result["scratch_databases"]
    assert len(scratch) == 2
    cur = await db.execute("SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", (scratch,))
    assert (await cur.fetchone())[0] == 0  # scratch databases dropped
