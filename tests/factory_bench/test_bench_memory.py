"""``factory bench memory`` on a short run: every service runs as its own process, is measured,
and is compared with the budgets of the deploy files it is given.

The figures are the benchmark's business; this only proves that it starts the plant as a
deployment does, drives load through it, reads the kernel's peaks and the files' limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from factory_bench.memory import SERVICES, alive
from factory_bench.procmem import DEPLOY, parse_compose_size, parse_systemd_size, systemd_limit
from factory_cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sizes_read_as_compose_and_systemd_write_them() -> None:
    assert parse_compose_size("512m") == 512
    assert parse_compose_size("1g") == 1024
    assert parse_compose_size("1gb") == 1024
    assert parse_compose_size(268435456) == 256
    assert parse_systemd_size("150M") == 150
    assert parse_systemd_size("1G") == 1024
    assert parse_systemd_size("1048576") == 1
    assert parse_systemd_size("infinity") is None
    with pytest.raises(ValueError, match="systemd"):
        parse_systemd_size("50%")
    with pytest.raises(ValueError, match="compose"):
        parse_compose_size("lots")


def test_the_last_memory_max_of_a_unit_counts(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nMemoryMax=1G\nMemoryMax=300M\n")
    assert systemd_limit(unit) == 300
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    assert systemd_limit(unit) is None


def test_a_process_that_ended_is_not_alive_before_it_is_reaped() -> None:
    assert alive(os.getpid())
    ended = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while alive(ended.pid) and time.monotonic() < deadline:  # a zombie until waited for
        time.sleep(0.01)
    try:
        assert not alive(ended.pid)
    finally:
        ended.wait()
    assert not alive(ended.pid)  # gone


def _deploy_with_other_limits(tmp_path: Path) -> Path:
    """A copy of deploy/ whose ingest may use 300 MiB in compose and whose edge agent 200 MiB."""
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY / "systemd", deploy / "systemd")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    compose["services"]["ingest"]["mem_limit"] = "300m"
    (deploy / "docker-compose.yml").write_text(yaml.safe_dump(compose))
    unit = deploy / "systemd" / "factory-edge.service"
    unit.write_text(re.sub(r"^MemoryMax=.*$", "MemoryMax=200M", unit.read_text(), flags=re.MULTILINE))
    return deploy


async def test_every_service_is_started_loaded_and_measured(pg_admin_url: str, tmp_path: Path) -> None:
    deploy = _deploy_with_other_limits(tmp_path)
    args = ["bench", "memory", "--seconds", "8", "--learn-s", "10", "--deploy", str(deploy), "--json"]
    ran = await asyncio.to_thread(CliRunner().invoke, main, args, env={"FACTORY_DATABASE_URL": pg_admin_url})
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    services = result["services"]
    assert list(services) == [s.name for s in SERVICES]

    # the budgets are the files' (the changed ones), not figures kept elsewhere
    assert services["ingest"]["compose_limit_mib"] == 300
    assert services["edge"]["systemd_limit_mib"] == 200
    assert services["erp"]["compose_limit_mib"] == parse_compose_size(
        yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["erp"]["mem_limit"]
    )
    assert services["analytics"]["systemd_limit_mib"] == systemd_limit(DEPLOY / "systemd/factory-analytics.service")
    assert services["simulator"]["compose_limit_mib"] is None  # not deployed
    ingest = services["ingest"]
    assert ingest["peak_vs_compose_limit"] == round(ingest["peak_mib"] / 300, 3)

    for name, s in services.items():
        assert s["peak_mib"] == max(s["vmhwm_mib"], s["sampled_peak_rss_mib"]), name
        assert s["sampled_peak_rss_mib"] > 0, name
        if s["floor_mib"] is None:  # Mosquitto: no Python to import
            continue
        # A service imports what its floor imports and then works: it holds at least as much.
        # The ERP's peak may equal its floor: both are the Argon2 hash it makes at import.
        assert s["peak_mib"] >= 0.97 * s["floor_mib"], name
        if name != "erp":
            assert s["peak_mib"] > s["floor_mib"], name
    assert result["total"]["peak_mib"] == pytest.approx(sum(s["peak_mib"] for s in services.values()), abs=0.1)

    load = result["load"]
    assert load["edge_points_published"] > 0
    assert load["ingest_points_received"] > 0
    assert load["erp_flows_ok"] > 0
    assert load["erp_flows_failed"] == 0, load["last_error"]
    assert load["analytics_anomaly_runs"] >= 1
    assert load["analytics_failed_runs"] == 0

    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (result["scratch_database"],))
        assert (await cur.fetchone())[0] == 0  # dropped  # type: ignore[index]
