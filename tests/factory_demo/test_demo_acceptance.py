"""Acceptance of the demo as a whole: ``factory demo`` as a user runs it (a child process with
its own broker) on a database of this test's own, with a one-minute learning stretch and a
compressed fault schedule: a centrifugal bearing worn to failure and spikes on mill 1's drive
current. Afterwards:

- each fault is in ``analytics.anomaly`` within a minute of its start, and nothing on mill 1
  was flagged before its fault;
- OEE rows for both mill lines, asset health for both centrifugals, and exactly one ERP
  maintenance work order (with its spare parts) for the worn bearing; its bearing is one
  short, requisitioned once, received at the end, and the order is then ready;
- mill 2's production work order advanced from its cane counter by the production-counts
  job, by exactly the good units it recorded as posted;
- the faults became alerts, notified to the demo's webhook and e-mailed through its mail
  server, which keeps each message in ``WORKDIR/mail/`` (the maintenance order's exactly once);
- ``factory dashboards check --require-rows`` passes with every panel returning rows, run as
  a read-only log-in role in ``factory_grafana`` (what Grafana's datasource uses).

The demo itself publishes nothing invalid and loses nothing, so one malformed batch is
published to its broker while it runs, and two batches of another device with the one between
them missing: the dead-letter and lost-batch panels then have rows to show, as they would on
a real plant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
import test_demo
import yaml
from click.testing import CliRunner
from helpers import publish
from pdf_text import pdf_text
from psycopg import sql

from dashboards.cli import dashboards
from factory.wire import batch_payload

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

DEMO_SECONDS = 130
LEARN_S = 60  # the shortest stretch the detector accepts at 1 s steps
FAULTS = [  # seconds after the plant starts; the bearing fails at 95 s, in time for two scorings
    {"kind": "bearing_wear", "asset": "centrifugal1", "start_s": 55, "life_s": 40},
    {"kind": "spikes", "tag": "mill1.motor_current", "start_s": 70, "duration_s": 60, "every_s": 12, "width_s": 2,
     "size": 80},
]  # fmt: skip


@pytest.fixture
def demo_database(pg_admin_url: str) -> Iterator[str]:
    """A database no other test writes to (detection learns on the site's first healthy
    stretch, so no earlier telemetry may be there); the demo creates and migrates it."""
    params = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    params["dbname"] = name = f"factory_demo_{uuid.uuid4().hex[:10]}"
    yield psycopg.conninfo.make_conninfo("", **params)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def grafana_login(pg_admin_url: str, database_url: str) -> Iterator[str]:
    """``database_url`` as a log-in role that is only a member of factory_grafana."""
    role = f"grafana_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE factory_grafana").format(sql.Identifier(role)))
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    params["user"] = role
    try:
        yield psycopg.conninfo.make_conninfo("", **params)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def run_demo_with_a_bad_batch(workdir: Path, database_url: str) -> tuple[dict[str, Any], str]:
    workdir.mkdir(parents=True, exist_ok=True)
    schedule = workdir / "faults.yaml"
    schedule.write_text(yaml.safe_dump({"faults": FAULTS}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env |= {"FACTORY_DATABASE_URL": database_url, "FACTORY_LOG_LEVEL": "INFO"}
    args = [sys.executable, "-m", "factory_cli", "demo", "--seconds", str(DEMO_SECONDS), "--erp-port", "0",
            "--workdir", str(workdir / "demo"), "--faults", str(schedule), "--learn-s", str(LEARN_S),
            "--json"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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
    # A device whose second batch never arrives: ingest declares the gap a minute later (seq_gap).
    now_ms = int(time.time() * 1000)
    gappy = [("factory/v1/mill-a/gappy-pi/telemetry", batch_payload(seq, hist=False, points=b'{"t":"gap.x","ts":%d,"v":1}' % (now_ms + seq)))
             for seq in (1, 3)]  # fmt: skip
    asyncio.run(publish(broker, [("factory/v1/mill-a/not-a-device/telemetry", b'{"v": 1, "points": "none"'), *gappy]))
    out, rest = proc.communicate(timeout=DEMO_SECONDS + 240)
    stderr = "".join(seen) + rest
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    test_demo.assert_no_leftovers(workdir)
    summary: dict[str, Any] = json.loads(out)
    return summary, stderr


def test_faults_are_flagged_and_every_dashboard_panel_has_rows(
    tmp_path: Path, pg_admin_url: str, demo_database: str
) -> None:
    summary, stderr = run_demo_with_a_bad_batch(tmp_path, demo_database)

    faults = {f["kind"]: f for f in summary["faults"]}
    assert faults.keys() == {"bearing_wear", "spikes"}
    for fault in faults.values():
        assert fault["delay_s"] is not None, f"not flagged: {fault}"
        assert 0 <= fault["delay_s"] <= 60, fault
    # The faults became alerts: the bridge posted the anomaly episodes and the maintenance
    # order to Alertmanager, which notified the demo's webhook (the summary lists them).
    alerts, site = summary["alerts"], summary["site"]
    assert any(a.startswith(f"firing AnomalyEpisode {site}/centrifugal1") for a in alerts), alerts
    assert any(a.startswith(f"firing AnomalyEpisode {site}/mill1") for a in alerts), alerts
    assert any(a.startswith(f"firing AssetAtRisk {site}/centrifugal1/WO-") for a in alerts), alerts
    # ... and e-mailed the shift lead through the demo's mail server, which kept each message as
    # a .eml file in WORKDIR/mail; the one maintenance order is one alert, so one e-mail.
    folder = tmp_path / "demo" / "mail"
    assert summary["mail_folder"] == str(folder)
    files = sorted(folder.glob("*.eml"))
    assert [Path(m["file"]) for m in summary["mails"]] == files
    kept = [BytesParser(policy=policy.default).parsebytes(f.read_bytes()) for f in files]
    subjects = [str(m["Subject"]) for m in kept]
    assert [m["subject"] for m in summary["mails"]] == subjects
    assert f"[FIRING] warning: AnomalyEpisode at {site} (centrifugal1)" in subjects, subjects
    (at_risk,) = [m for m in kept if str(m["Subject"]).startswith("[FIRING]") and "AssetAtRisk" in m["Subject"]]
    assert str(at_risk["Subject"]).endswith(" (centrifugal1)"), at_risk["Subject"]
    body = at_risk.get_body(("html", "plain"))
    assert body is not None
    text = body.get_content()
    assert "centrifugal1" in text, text
    assert "WO-" in text, text  # the work order, among the alert's labels
    assert f"e-mails received by the demo's mail server ({summary['smtp_url']}): {len(files)}, in {folder}/" in stderr
    assert f"open {files[0]}" in stderr, stderr
    with psycopg.connect(demo_database) as conn:
        before = conn.execute(
            """SELECT count(*) FROM analytics.anomaly
               WHERE site = 'mill-a' AND asset = 'mill1' AND is_anomaly AND time < %s::timestamptz""",
            (faults["spikes"]["start"],),
        ).fetchone()
        orders = conn.execute(
            """SELECT w.asset, count(p.product_id) FROM erp.work_order w
               LEFT JOIN erp.work_order_part p ON p.work_order_id = w.id
               WHERE w.kind = 'maintenance' GROUP BY w.id, w.asset"""
        ).fetchall()
        purchased = conn.execute(
            """SELECT o.status, o.created_by, bool_and(p.reserved = p.quantity)
               FROM erp.purchase_order o, erp.work_order w JOIN erp.work_order_part p ON p.work_order_id = w.id
               WHERE w.kind = 'maintenance' GROUP BY o.id ORDER BY o.id"""
        ).fetchall()
        counted = conn.execute(
            """SELECT w.asset, w.produced_quantity, sum(c.good) FILTER (WHERE c.outcome = 'posted')
               FROM erp.work_order w LEFT JOIN analytics.production_count c ON c.work_order_id = w.id
               WHERE w.kind = 'production' GROUP BY w.id, w.asset, w.produced_quantity"""
        ).fetchall()
    assert before == (0,)  # nothing flagged on mill 1 before its fault began
    assert summary["oee_rows"].get("mill1", 0) > 0, summary["oee_rows"]
    assert summary["oee_rows"].get("mill2", 0) > 0, summary["oee_rows"]
    assert summary["model_version"] is not None
    assert {"centrifugal1", "centrifugal2"} <= set(summary["asset_health"]), summary["asset_health"]
    assert len(orders) == 1, orders  # one order for the worn bearing, however often the job ran
    assert orders[0][0] == "centrifugal1"
    assert orders[0][1] > 0  # with its spare parts
    # one bearing short: requisitioned once by the maintenance job, received, and the order is ready
    assert len(purchased) == 1, purchased
    assert purchased[0][0] == "received"
    assert purchased[0][1].startswith("key:maintenance-")  # the job's service key
    assert purchased[0][2] is True
    assert summary["requisitions"][-1].startswith("maintenance orders now ready: WO-"), summary["requisitions"]
    assert summary["dead_letters"] == 1  # the batch this test sent
    # the shift report written at the end shows both mills' OEE, the centrifugals' health and the order
    report = pdf_text(Path(summary["report"]))
    assert "OEE mill1" in report, report
    assert "OEE mill2" in report, report
    assert "centrifugal1" in report, report
    assert "centrifugal2" in report, report
    # mill 2's production order advanced from its cane counter, by exactly what was posted
    production = [o for o in summary["production_orders"].values() if o["asset"] == "mill2"]
    assert len(production) == 1, summary["production_orders"]
    assert production[0]["status"] == "in_progress"
    assert float(production[0]["produced"]) > 0, production
    assert production[0]["posted_intervals"] > 0, production
    assert [(asset, produced) for asset, produced, _ in counted] == [("mill2", Decimal(production[0]["produced"]))]
    assert counted[0][1] == counted[0][2]

    with grafana_login(pg_admin_url, demo_database) as url:
        result = CliRunner().invoke(
            dashboards,
            ["check", "--require-rows", "--json", "--var", "asset=centrifugal1"],
            env={"FACTORY_DATABASE_URL": url},
        )
    report = json.loads(result.stdout.splitlines()[0])
    errors = {f"{p['dashboard']} / {p['panel']}": p["error"] for p in report["panels"] if p["error"]}
    assert errors == {}  # every query runs as the read-only role
    assert report["empty"] == [], "panels without rows"
    assert result.exit_code == 0, result.output
