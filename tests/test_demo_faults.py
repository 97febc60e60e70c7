"""``factory demo``'s machinery with a fault: the anomaly lands within a minute, OEE and asset health appear.

The demo runs in this process on a database of its own, with its own broker, learning
on a one-minute healthy stretch (the shortest the detector accepts at 1 s steps) and one
fault soon after: spikes on mill 1's drive current, read over Modbus by the edge agent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from factory.demo import run_demo
from factory.demo_plant import DemoTiming
from simulator.faults import FaultSchedule, Spikes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

FAULT_AT = 70.0  # seconds after the plant starts; detection has learned by 60 s plus start-up


@pytest.fixture
def fresh_database(pg_admin_url: str) -> Iterator[str]:
    """A database of its own: the demo's site must have no telemetry from another run before it
    (the detection learns on the site's first healthy stretch); the demo creates and migrates it."""
    params = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    params["dbname"] = name = f"factory_demo_{uuid.uuid4().hex[:10]}"
    yield psycopg.conninfo.make_conninfo("", **params)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_a_fault_is_flagged_within_a_minute_and_oee_and_health_appear(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = fresh_database
    for name in ("FACTORY_MQTT_URL", "FACTORY_MAINTENANCE_CONFIG", "FACTORY_OEE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    spikes = Spikes(start_s=FAULT_AT, tag="mill1.motor_current", duration_s=60, every_s=12, size=60)
    timing = DemoTiming(healthy_s=60, faults=FaultSchedule(faults=[spikes]), oee_every_s=10, model_units=30)

    summary = await run_demo(tmp_path / "demo", 0, seconds=FAULT_AT + 20, timing=timing)

    (fault,) = summary.faults
    assert (fault["kind"], fault["asset"], fault["tag"]) == ("spikes", "mill1", "mill1.motor_current")
    assert fault["delay_s"] is not None, "the spikes were not flagged"
    assert 0 <= fault["delay_s"] <= 60, fault
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            """SELECT count(*) FROM analytics.anomaly
               WHERE site = 'mill-a' AND asset = 'mill1' AND is_anomaly AND time < %s::timestamptz
                 AND time > %s::timestamptz - interval '5 minutes'""",
            (fault["start"], fault["start"]),
        )
        before: Any = await cur.fetchone()
    assert before == (0,)  # nothing flagged on mill 1 before the fault began
    assert summary.oee_rows.get("mill1", 0) > 0, summary.oee_rows
    assert summary.oee_rows.get("mill2", 0) > 0, summary.oee_rows
    assert summary.model_version is not None
    assert {"centrifugal1", "centrifugal2"} <= set(summary.asset_health), summary.asset_health
    assert summary.dead_letters == 0
