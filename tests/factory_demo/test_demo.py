"""`factory demo` as a user runs it: starts, ingests from both protocols, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_demo(workdir: Path, env: dict[str, str], seconds: int, *extra: str) -> tuple[dict[str, object], str]:
    args = [sys.executable, "-m", "factory_cli", "demo", "--seconds", str(seconds), "--erp-port", "0",
            "--workdir", str(workdir), "--json", *extra]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=seconds + 90, check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert_no_leftovers(workdir)
    return json.loads(result.stdout), result.stderr


def assert_no_leftovers(workdir: Path) -> None:
    """No child (broker, database) may outlive the demo."""
    leftovers = [
        p.info for p in psutil.process_iter(["pid", "cmdline"]) if str(workdir) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], f"processes left behind: {leftovers}"


def check_summary(summary: dict[str, object], stderr: str) -> None:
    assert "ERP API (OpenAPI):" in stderr
    assert "/docs" in stderr
    assert "Demo summary" in stderr
    per_source = summary["per_source"]
    assert isinstance(per_source, dict)
    plant = ("boiler_house", "mill_tandem", "process_opcua")  # "agent" (its own tags) joins every 10 s
    assert set(plant) <= set(per_source), per_source
    for name in plant:
        tags, rows = per_source[name]
        assert tags > 0, name
        assert rows > 0, name
    assert summary["dead_letters"] == 0
    assert summary["received"] == summary["published"]  # nothing published was left behind
    assert summary["device_state"] == "offline"  # the agent said goodbye and ingest recorded it
    assert " paid; 5 events on factory/v1/events/#" in str(summary["erp_flow"]), summary["erp_flow"]
    # How to connect an assistant: the stdio entry, with the demo's database and an API key of its own.
    assert "connect an assistant (docs/mcp.md)" in stderr
    server = json.loads(str(summary["assistant_config"]))["mcpServers"]["factory"]
    assert server["args"][-2:] == ["mcp", "serve"]
    assert server["env"]["FACTORY_ERP_API_KEY"].startswith("fk_")
    report = Path(str(summary["report"]))  # the shift report, written at the end and named in the summary
    assert report.name.startswith("shift-report-")
    assert report.read_bytes().startswith(b"%PDF-")
    assert f"shift report (factory report shift): {report}" in stderr
    # Prometheus and Alertmanager are installed here (scripts/test installs them): the demo runs them.
    assert str(summary["alertmanager_url"]).startswith("http://127.0.0.1:"), summary["alerting_missing"]
    assert str(summary["prometheus_url"]).startswith("http://127.0.0.1:")
    assert f"Alertmanager:       {summary['alertmanager_url']}/#/alerts" in stderr
    assert f"alerts (Alertmanager {summary['alertmanager_url']}/#/alerts" in stderr
    # ... and its own mail server for the alert e-mails, kept in WORKDIR/mail (none in a short run)
    assert str(summary["smtp_url"]).startswith("smtp://127.0.0.1:")
    assert str(summary["mail_folder"]).endswith("/mail")
    assert f"Mail:               {summary['smtp_url']} keeps each alert e-mail" in stderr
    received = f"e-mails received by the demo's mail server ({summary['smtp_url']}): {len(summary['mails'])},"  # type: ignore[arg-type]
    assert f"{received} in {summary['mail_folder']}/" in stderr


def test_demo_against_configured_database(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env["FACTORY_DATABASE_URL"] = database_url  # the broker is the demo's own
    summary, stderr = run_demo(tmp_path / "demo", env, seconds=15)
    check_summary(summary, stderr)


def test_demo_on_the_nats_broker_it_falls_back_on(database_url: str, tmp_path: Path) -> None:
    """Where Mosquitto is not installed the demo starts NATS (the embedded extra's wheel) with
    its MQTT listener: the whole flow, events included, runs on it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env["FACTORY_DATABASE_URL"] = database_url
    summary, stderr = run_demo(tmp_path / "demo", env, 15, "--broker", "nats")
    assert "protocol=3.1.1" in str(summary["mqtt_url"]), summary["mqtt_url"]
    check_summary(summary, stderr)


def test_demo_with_nothing_configured_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Embedded PostgreSQL and broker; stopped by SIGINT as a person at a terminal would."""
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    args = [sys.executable, "-m", "factory_cli", "demo", "--erp-port", "0", "--workdir", str(workdir), "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait for the banner, then let it run a little
        seen.append(line)
        if "Stop with Ctrl-C" in line:
            break
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=60)
    stderr = "".join(seen) + rest
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert_no_leftovers(workdir)
    summary = json.loads(stdout)
    check_summary(summary, stderr)
    assert "host=" in str(summary["database_url"])  # the embedded PostgreSQL, on its socket
