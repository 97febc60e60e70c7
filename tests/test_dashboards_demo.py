"""Acceptance: after `factory demo` has filled a database, `factory dashboards check
--require-rows` passes with every panel returning rows, run as a read-only log-in role in
`factory_grafana` (what Grafana's datasource uses).

The demo runs as a user runs it (a child process with its own broker) against a database
of this test's own, so nothing but the demo's data is in it. The demo itself publishes
nothing invalid, so one malformed batch is published to its broker while it runs: the
dead-letter panel then has a row to show, as it would on a real plant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import test_demo
from click.testing import CliRunner
from helpers import publish

from dashboards.cli import dashboards

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

# Long enough for the analytics job that runs once a minute (OEE) to run once.
DEMO_SECONDS = 75

# Panels that stay empty because the demo does not produce their data yet, and what they
# wait for. The test fails when one of them gets rows (take it out of here) and when any
# other panel is empty, so this list only ever shrinks.
AWAITING_DEMO_DATA = {
    "Plant overview / Active anomalies": "anomaly episodes from simulated faults",
    "Plant overview / Open maintenance orders": "maintenance work orders",
    "Asset detail / Anomaly score by tag": "anomaly rows from simulated faults",
    "Asset detail / annotation Anomaly episodes": "anomaly episodes from simulated faults",
    "Asset detail / Remaining useful life and failure probability": "maintenance.asset_health rows",
    "Maintenance / Asset health by risk": "maintenance.asset_health rows",
    "Maintenance / Maintenance work orders": "maintenance work orders",
    "Maintenance / Spare parts for open orders": "maintenance work orders with parts",
    "Production and ERP / Production work orders: planned vs produced": "production work orders in the ERP seed",
}


@pytest.fixture
def demo_database(pg_admin_url: str) -> Iterator[str]:
    """The URL of a database no other test writes to; the demo creates and migrates it."""
    params = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    params["dbname"] = f"factory_demo_{uuid.uuid4().hex[:10]}"
    yield psycopg.conninfo.make_conninfo("", **params)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{params["dbname"]}" WITH (FORCE)')


@contextlib.contextmanager
def grafana_login(pg_admin_url: str, database_url: str) -> Iterator[str]:
    """``database_url`` as a log-in role that is only a member of factory_grafana."""
    role = f"grafana_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE factory_grafana')  # a group the migrations made
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    params["user"] = role
    try:
        yield psycopg.conninfo.make_conninfo("", **params)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def run_demo_with_a_bad_batch(workdir: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env |= {"FACTORY_DATABASE_URL": database_url, "FACTORY_LOG_LEVEL": "INFO"}
    args = [sys.executable, "-m", "factory", "demo", "--seconds", str(DEMO_SECONDS), "--erp-port", "0",
            "--workdir", str(workdir)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    seen: list[str] = []
    broker = None
    for line in proc.stderr:  # the banner names the demo's own broker; ingest logs once it has subscribed
        seen.append(line)
        if match := re.search(r"MQTT broker:\s+(\S+)", line):
            broker = match.group(1)
        if "ingest.service: ingest:" in line:
            break
    assert broker is not None, "".join(seen)
    asyncio.run(publish(broker, [("factory/v1/mill-a/not-a-device/telemetry", b'{"v": 1, "points": "none"')]))
    _, rest = proc.communicate(timeout=DEMO_SECONDS + 120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 0, stderr  # a clean stop is test_demo.py's subject; here it is the data
    test_demo.assert_no_leftovers(workdir)


def test_every_panel_has_rows_after_the_demo(tmp_path: Path, pg_admin_url: str, demo_database: str) -> None:
    run_demo_with_a_bad_batch(tmp_path / "demo", demo_database)

    with grafana_login(pg_admin_url, demo_database) as url:
        result = CliRunner().invoke(
            dashboards, ["check", "--require-rows", "--json"], env={"FACTORY_DATABASE_URL": url}
        )
    report = json.loads(result.stdout)
    errors = {f"{p['dashboard']} / {p['panel']}": p["error"] for p in report["panels"] if p["error"]}
    assert errors == {}  # every query runs as the read-only role
    empty = set(report["empty"])
    assert sorted(empty - AWAITING_DEMO_DATA.keys()) == [], "panels without rows"
    assert sorted(AWAITING_DEMO_DATA.keys() - empty) == [], "these have rows now: take them out of AWAITING_DEMO_DATA"
    assert result.exit_code == (1 if AWAITING_DEMO_DATA else 0), result.output
