"""Alerting as code, checked by the real tools: promtool and amtool on the generated files,
promtool's rule unit tests with input series for every rule (it fires when it should, and
not otherwise), a real Prometheus scraping a real ingest process, a real Alertmanager
notifying a webhook and an SMTP server started here. Grafana cannot run here: its alert
rules are checked for structure, and their SQL is run against the test database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import yaml
from alerting_support import binary, process, provision, wait_for, write_settings
from click.testing import CliRunner
from helpers import publish
from mail_sink import sinks_running

from dashboards.alerting import grafana_rules
from dashboards.catalog import FOLDER
from dashboards.cli import dashboards
from dashboards.export import datasource_provisioning
from factory_servers import free_port
from provisioning.alert_rules import Thresholds
from provisioning.alerts_cli import alerts
from provisioning.devices import clear_status

T = TypeVar("T")
TEXT_OID = 25
NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "alerts.md"


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_and_amtool_accept_the_generated_files(tmp_path: Path) -> None:
    files = provision(tmp_path / "out", "--edge", "mill-a/boiler-pi=10.0.0.31:9102", "--edge",
                      "mill-a/centrifugal-pi=10.0.0.32:9102")  # fmt: skip
    config = run(binary("promtool"), "check", "config", files["prometheus"])
    assert "SUCCESS: 1 rule files found" in config
    rules = run(binary("promtool"), "check", "rules", files["rules"])
    assert re.search(r"SUCCESS: \d+ rules found", rules)
    manager = run(binary("amtool"), "check-config", files["alertmanager"])
    assert "SUCCESS" in manager
    assert "6 inhibit rules" in manager
    assert "3 receivers" in manager  # shift-lead, maintenance and the one for nobody
    assert Path(files["alertmanager"]).stat().st_mode & 0o777 == 0o600  # the mail password is in it
    prometheus = yaml.safe_load(Path(files["prometheus"]).read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(jobs) == {"factory-ingest", "factory-erp", "factory-analytics", "factory-alerts", "factory-edge",
                         "alertmanager"}  # fmt: skip
    assert jobs["factory-alerts"]["static_configs"] == [{"targets": ["alerts:9110"]}]
    assert jobs["factory-ingest"]["static_configs"] == [{"targets": ["ingest:9101"]}]
    edge = jobs["factory-edge"]["static_configs"]
    assert {"targets": ["10.0.0.31:9102"], "labels": {"site": "mill-a", "device": "boiler-pi"}} in edge
    assert prometheus["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]


def test_every_rule_links_to_its_section_of_the_docs(tmp_path: Path) -> None:
    files = provision(tmp_path / "out", "--runbook-url", "https://wiki.plant.test/factory/alerts.md")
    rules = [r for g in yaml.safe_load(Path(files["rules"]).read_text())["groups"] for r in g["rules"]]
    grafana = [r for g in yaml.safe_load(Path(files["grafana"]).read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules} | {r["title"] for r in grafana}
    headings = set(re.findall(r"^### (\w+)$", DOCS.read_text(), re.MULTILINE))
    assert names <= headings, f"rules without a section in docs/alerts.md: {sorted(names - headings)}"
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"https://wiki.plant.test/factory/alerts.md#{rule['alert'].lower()}"
        assert annotations["summary"]
        assert annotations["description"]
        assert rule["labels"]["severity"] in {"critical", "warning"}


# --- promtool test rules: input series per rule, the alerts expected at a moment ---------------

INGEST = {"job": "factory-ingest", "instance": "ingest:9101"}
EDGE = {"job": "factory-edge", "instance": "10.0.0.31:9102", "site": "mill-a", "device": "boiler-pi"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@dataclass
class Case:
    """At ``at`` (minutes after the first sample, one sample a minute), exactly ``firing``
    is firing: (labels, value) each, the value as the annotations show it."""

    alert: str
    inputs: list[dict[str, str]]
    at: int
    firing: list[tuple[dict[str, str], float]] = field(default_factory=list)


DEFAULTS = Thresholds()
CASES = [
    # Edge agents have a check of their own; a stopped service fires only once down for --down-after (2m).
    Case("FactoryServiceDown", [series("up", INGEST, "1 1 0x10"), series("up", EDGE, "0x10")], 3),
    Case("FactoryServiceDown", [series("up", INGEST, "1 1 0x10"), series("up", EDGE, "0x10")], 5,
         [(INGEST | {"service": "ingest", "severity": "critical"}, 0)]),
    Case("FactoryServiceDown", [series("up", INGEST, "1x10")], 9),
    # The warning from 1m (held 5m: firing at 6m); the critical limit is passed from 11m.
    Case("IngestLagHigh", [series("factory_ingest_lag_seconds", INGEST, "0 200x9 1000x10")], 4),
    Case("IngestLagHigh", [series("factory_ingest_lag_seconds", INGEST, "0 200x9 1000x10")], 8,
         [(INGEST | {"severity": "warning"}, 200)]),
    Case("IngestLagHigh", [series("factory_ingest_lag_seconds", INGEST, "0 200x9 1000x10")], 18,
         [(INGEST | {"severity": "warning"}, 1000), (INGEST | {"severity": "critical"}, 1000)]),
    Case("IngestLagHigh", [series("factory_ingest_lag_seconds", INGEST, "5x20")], 18),
    Case("IngestBehind", [series("factory_ingest_queued_messages", INGEST, "0 600x9"),
                          series("factory_ingest_queue_limit_messages", INGEST, "500x10"),
                          series("factory_ingest_queued_messages", {**INGEST, "instance": "b"}, "100x10"),
                          series("factory_ingest_queue_limit_messages", {**INGEST, "instance": "b"}, "500x10")], 4,
         [(INGEST | {"severity": "warning"}, 600)]),
    Case("IngestFlushSlow", [series("factory_ingest_last_flush_seconds", INGEST, "0 8x10")], 5),
    Case("IngestFlushSlow", [series("factory_ingest_last_flush_seconds", INGEST, "0 8x10")], 7,
         [(INGEST | {"severity": "warning"}, 8)]),
    Case("IngestDeadLetters", [series("factory_ingest_dead_letters_total", INGEST, "0 0 3x20")], 3,
         [(INGEST | {"severity": "warning"}, 0)]),
    Case("IngestDeadLetters", [series("factory_ingest_dead_letters_total", INGEST, "0 0 3x20")], 15),
    Case("IngestLostBatches", [series("factory_ingest_lost_batches_total", INGEST | {"site": "s", "device": "d"},
                                      "0 0 2x80")], 3, [(INGEST | {"site": "s", "device": "d", "severity": "warning"}, 0)]),
    Case("IngestLostBatches", [series("factory_ingest_lost_batches_total", INGEST | {"site": "s", "device": "d"},
                                      "0 0 2x80")], 75),
    Case("IngestUpkeepFailing", [series("factory_ingest_upkeep_failures_total", INGEST, "0 1 2 3x10")], 4,
         [(INGEST | {"severity": "warning"}, 0)]),
    Case("IngestUpkeepFailing", [series("factory_ingest_upkeep_failures_total", INGEST, "0 1x10")], 4),
]  # fmt: skip

UP = "factory_ingest_device_up"
SEEN = "factory_ingest_device_last_message_timestamp_seconds"
DEVICE = {"a": {"site": "mill-a", "device": "a"}, "b": {"site": "mill-a", "device": "b"},
          "c": {"site": "mill-b", "device": "c"}, "d": {"site": "mill-b", "device": "d"}}  # fmt: skip
OFFLINE = [series(UP, INGEST | DEVICE["a"], "0x10"), series(UP, INGEST | DEVICE["b"], "1 0x9"),
           series(UP, INGEST | DEVICE["c"], "0x10"), series(UP, INGEST | DEVICE["d"], "1x10")]  # fmt: skip
BUFFER = "factory_edge_buffer_oldest_age_seconds"
EDGE_B = EDGE | {"device": "b", "instance": "10.0.0.32:9102"}
ERP1, ERP2 = {"job": "factory-erp", "instance": "erp-1:8000"}, {"job": "factory-erp", "instance": "erp-2:8000"}
ANALYTICS = {"job": "factory-analytics", "instance": "analytics:9108"}
CASES += [
    # mill-a has no device online; mill-b has one. b went offline at 1m: not for 5m yet at 5m.
    Case("EdgeSiteOffline", OFFLINE, 7, [({"site": "mill-a", "severity": "critical"}, 0)]),
    Case("EdgeDeviceOffline", OFFLINE, 5, [(INGEST | DEVICE["a"] | {"severity": "critical"}, 0),
                                           (INGEST | DEVICE["c"] | {"severity": "critical"}, 0)]),
    Case("EdgeDeviceOffline", OFFLINE, 7, [(INGEST | DEVICE[d] | {"severity": "critical"}, 0) for d in "abc"]),
    # a: last message at 0 s, so 600 s ago at 10m; b: a message every minute; c: offline (its own alert).
    Case("EdgeDeviceSilent", [series(SEEN, INGEST | DEVICE["a"], "0x10"), series(SEEN, INGEST | DEVICE["b"], "0+60x10"),
                              series(SEEN, INGEST | DEVICE["c"], "0x10"), series(UP, INGEST | DEVICE["c"], "0x10"),
                              series(UP, INGEST | DEVICE["a"], "1x10")], 10,
         [(DEVICE["a"] | {"severity": "warning"}, 600)]),
    Case("EdgeDeviceSilent", [series(SEEN, INGEST | DEVICE["a"], "0x10")], 4),
    Case("EdgeScrapeFailed", [series("up", EDGE, "1 0x10")], 2),
    Case("EdgeScrapeFailed", [series("up", EDGE, "1 0x10")], 4, [(EDGE | {"severity": "warning"}, 0)]),
    Case("EdgeBufferBacklog", [series(BUFFER, EDGE, "700x10"), series(BUFFER, EDGE_B, "4000x10")], 7,
         [(EDGE | {"severity": "warning"}, 700), (EDGE_B | {"severity": "warning"}, 4000),
          (EDGE_B | {"severity": "critical"}, 4000)]),
    Case("EdgeBufferBacklog", [series(BUFFER, EDGE, "100x10")], 7),
    Case("EdgeBufferDropping", [series("factory_edge_buffer_dropped_points_total", EDGE, "0 0 50x30")], 3,
         [(EDGE | {"severity": "critical"}, 0)]),
    Case("EdgeBufferDropping", [series("factory_edge_buffer_dropped_points_total", EDGE, "0 0 50x30")], 20),
    Case("EdgeSourceFailing", [series("factory_edge_poll_errors_total", EDGE | {"source": "boiler1"}, "0+1x20"),
                               series("factory_edge_poll_errors_total", EDGE | {"source": "mill1"}, "3x20")], 10,
         [(EDGE | {"source": "boiler1", "severity": "warning"}, 0)]),
    # Every ERP process reports the same outbox: one alert, not one per process.
    Case("ErpOutboxLag", [series("factory_erp_outbox_oldest_unpublished_seconds", ERP1, "0 200x10"),
                          series("factory_erp_outbox_oldest_unpublished_seconds", ERP2, "0 190x10")], 7,
         [({"job": "factory-erp", "severity": "warning"}, 200)]),
    Case("ErpOutboxLag", [series("factory_erp_outbox_oldest_unpublished_seconds", ERP1, "30x10")], 7),
    Case("AnalyticsOutboxLag", [series("factory_analytics_outbox_oldest_unpublished_seconds", ANALYTICS, "0 1000x10")],
         7, [({"job": "factory-analytics", "severity": "warning"}, 1000),
             ({"job": "factory-analytics", "severity": "critical"}, 1000)]),
    Case("ErpDatabasePoolTimeouts", [series("factory_erp_db_pool_timeouts_total", ERP1, "0 0 2x10")], 3,
         [(ERP1 | {"severity": "warning"}, 0)]),
    Case("ErpDatabasePoolTimeouts", [series("factory_erp_db_pool_timeouts_total", ERP1, "0x10")], 3),
    Case("AnalyticsJobFailing", [
        series("factory_analytics_job_consecutive_failures", ANALYTICS | {"analytics_job": "anomaly"}, "4x5"),
        series("factory_analytics_job_consecutive_failures", ANALYTICS | {"analytics_job": "oee"}, "1x5")], 2,
         [(ANALYTICS | {"analytics_job": "anomaly", "severity": "warning"}, 4)]),
    Case("AlertmanagerNotificationsFailing",
         [series("alertmanager_notifications_failed_total", {"job": "alertmanager", "instance": "am:9093",
                                                             "integration": "email"}, "0 0 1x20")], 3,
         [({"job": "alertmanager", "instance": "am:9093", "integration": "email", "severity": "critical"}, 0)]),
]  # fmt: skip


def _render(template: str, labels: dict[str, str], value: float) -> str:
    """The subset of Go templates the rules use (provisioning.alert_rules says so)."""
    text = template.replace('{{ $value | printf "%.0f" }}', f"{value:.0f}")
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)
    assert "{{" not in text, f"a template this test cannot state: {template}"
    return text


def _expected(rules: list[dict[str, Any]], case: Case) -> list[dict[str, Any]]:
    out = []
    for labels, value in case.firing:
        (rule,) = [r for r in rules if r["alert"] == case.alert and r["labels"]["severity"] == labels["severity"]]
        notes = {k: _render(v, labels, value) for k, v in rule["annotations"].items()}
        out.append({"exp_labels": labels, "exp_annotations": notes})
    return out


def test_promtool_unit_tests_prove_each_rule(tmp_path: Path) -> None:
    # The cases are written for the default thresholds (seconds): changing one means revisiting them.
    limits = (DEFAULTS.down_after_s, DEFAULTS.hold_s, DEFAULTS.device_offline_s, DEFAULTS.device_silent_s,
              DEFAULTS.ingest_lag_s, DEFAULTS.ingest_lag_critical_s, DEFAULTS.ingest_behind_s, DEFAULTS.flush_slow_s,
              DEFAULTS.buffer_age_s, DEFAULTS.buffer_age_critical_s, DEFAULTS.outbox_lag_s,
              DEFAULTS.outbox_lag_critical_s, DEFAULTS.job_failures, DEFAULTS.dead_letter_window_s)  # fmt: skip
    assert limits == (120, 300, 300, 300, 120, 900, 120, 5, 600, 3600, 120, 900, 3, 600)
    files = provision(tmp_path / "out", "--evaluation-interval", "60")
    rules = [r for g in yaml.safe_load(Path(files["rules"]).read_text())["groups"] for r in g["rules"]]
    assert {c.alert for c in CASES} == {r["alert"] for r in rules}, "every rule has cases"
    assert {c.alert for c in CASES if c.firing} == {r["alert"] for r in rules}, "every rule is seen firing"
    tests = [
        {"interval": "1m", "input_series": case.inputs,
         "alert_rule_test": [{"eval_time": f"{case.at}m", "alertname": case.alert, "exp_alerts": _expected(rules, case)}]}
        for case in CASES
    ]  # fmt: skip
    unit = tmp_path / "out" / "prometheus" / "factory_test.yml"
    unit.write_text(yaml.safe_dump({"rule_files": [files["rules"]], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([binary("promtool"), "test", "rules", str(unit)], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr

    # The same cases with one expectation turned round must fail: promtool compares what we say.
    wrong = [dict(t) for t in tests]
    wrong[1] = {**wrong[1], "alert_rule_test": [{**wrong[1]["alert_rule_test"][0], "exp_alerts": []}]}
    unit.write_text(yaml.safe_dump({"rule_files": [files["rules"]], "evaluation_interval": "1m", "tests": wrong}))
    failed = subprocess.run([binary("promtool"), "test", "rules", str(unit)], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert failed.returncode != 0
    assert "FactoryServiceDown" in failed.stdout + failed.stderr


# --- real processes -------------------------------------------------------------------------


async def prometheus_alerts(api: httpx.AsyncClient, name: str, **labels: str) -> list[dict[str, Any]]:
    try:
        reply = await api.get("/api/v1/alerts")
    except httpx.TransportError:
        return []  # still starting
    if reply.status_code != 200:  # up, not ready yet: "Service Unavailable" in plain text
        return []
    found = [a for a in reply.json()["data"]["alerts"] if a["labels"]["alertname"] == name]
    return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]


async def prometheus_query(api: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    try:
        reply = await api.get("/api/v1/query", params={"query": promql})
    except httpx.TransportError:
        return []
    if reply.status_code != 200:
        return []
    result: list[dict[str, Any]] = reply.json()["data"]["result"]
    return result


async def test_prometheus_scrapes_ingest_and_alerts_when_it_stops_or_a_device_goes_offline(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    ingest_port, prometheus_port = free_port(), free_port()
    nowhere = [f"127.0.0.1:{free_port()}" for _ in range(3)]  # the other services are not running here
    files = provision(tmp_path / "out", "--ingest", f"127.0.0.1:{ingest_port}", "--erp", nowhere[0],
                      "--analytics", nowhere[1], "--alertmanager", nowhere[2], "--scrape-interval", "1",
                      "--evaluation-interval", "1", "--down-after", "3", "--device-offline-after", "1")  # fmt: skip
    env = os.environ | {"FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": mqtt_url}
    ingest_log, prometheus_log = tmp_path / "ingest.log", tmp_path / "prometheus.log"
    status = f"factory/v1/{site}/pi1/status"
    ingest_argv = [sys.executable, "-m", "factory_cli", "ingest", "run", "--client-id", f"ingest-{site}", "--site",
                   site, "--session-expiry", "30", "--http", f"127.0.0.1:{ingest_port}", "--no-upkeep"]  # fmt: skip
    prometheus_argv = [binary("prometheus"), f"--config.file={files['prometheus']}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"]  # fmt: skip
    try:
        async with (
            process(ingest_log, *ingest_argv, env=env) as ingest,
            process(prometheus_log, *prometheus_argv),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{prometheus_port}", timeout=10) as api,
        ):
            up = 'up{job="factory-ingest"} == 1'
            await wait_for(lambda: prometheus_query(api, up), "Prometheus scrapes ingest", ingest_log)
            assert await prometheus_query(api, "factory_ingest_queued_messages")  # ingest's own figures arrive
            assert not await prometheus_alerts(api, "FactoryServiceDown", service="ingest")
            # The services that are not running are down, as they should be.
            await wait_for(lambda: prometheus_alerts(api, "FactoryServiceDown", service="erp"), "erp down",
                           prometheus_log)  # fmt: skip

            # A device says goodbye (or the broker publishes its last will): ingest reports it, the rule fires.
            goodbye = json.dumps({"state": "offline", "ts": int(time.time() * 1000), "agent": "test"}).encode()
            await publish(mqtt_url, [(status, goodbye)], retain=True)
            offline = await wait_for(
                lambda: prometheus_alerts(api, "EdgeDeviceOffline", site=site, device="pi1"), "device offline",
                prometheus_log,
            )  # fmt: skip
            assert offline[0]["labels"]["severity"] == "critical"
            firing = await wait_for(
                lambda: _in_state(prometheus_alerts(api, "EdgeDeviceOffline", site=site, device="pi1"), "firing"),
                "device offline firing", prometheus_log,
            )  # fmt: skip
            assert firing[0]["annotations"]["summary"] == f"Edge device {site}/pi1 is offline"

            # The device is retired: `factory provision revoke` clears its retained status, ingest
            # forgets its state, and the rule resolves (no device state left to be offline).
            await clear_status(mqtt_url, site, "pi1")
            device = f'{{site="{site}",device="pi1"}}'

            async def retired() -> bool:
                gone = not await prometheus_query(api, f"{UP}{device}")
                return gone and not await prometheus_alerts(api, "EdgeDeviceOffline", site=site, device="pi1")

            await wait_for(retired, "the retired device's alert resolves", prometheus_log)
            assert await prometheus_query(api, 'up{job="factory-ingest"} == 1')  # ingest was scraped all along

            ingest.terminate()
            assert await asyncio.wait_for(ingest.wait(), 30) == 0
            stopped = time.time()
            seen: set[str] = set()

            async def down() -> list[dict[str, Any]] | None:
                found = await prometheus_alerts(api, "FactoryServiceDown", service="ingest")
                seen.update(a["state"] for a in found)
                return [a for a in found if a["state"] == "firing"]

            (alert,) = await wait_for(down, "the service-down alert fires", prometheus_log)
            assert alert["labels"]["instance"] == f"127.0.0.1:{ingest_port}"
            assert alert["labels"]["severity"] == "critical"
            assert alert["annotations"]["runbook_url"].endswith("alerts.md#factoryservicedown")
            active = dt.datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()
            assert active >= stopped - 2  # after the stop (give or take a scrape), not before it
            assert "pending" in seen or time.time() - active >= 3  # held for --down-after before firing
    finally:
        await publish(mqtt_url, [(status, b"")], retain=True)  # the retained status is cleared


async def _in_state(found: Awaitable[list[dict[str, Any]]], state: str) -> list[dict[str, Any]]:
    return [a for a in await found if a["state"] == state]


# --- Alertmanager: a webhook and an SMTP server of the test's own ----------------------------


def _alert(name: str, severity: str, ends: bool = False, **labels: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).isoformat()
    alert: dict[str, Any] = {"labels": {"alertname": name, "severity": severity, **labels},
                             "annotations": {"summary": f"{name} in a test"}, "startsAt": now}  # fmt: skip
    if ends:
        alert["endsAt"] = now
    return alert


async def _manager_alert(api: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    reply = await api.get("/api/v2/alerts", params={"filter": f'alertname="{name}"'})
    found: list[dict[str, Any]] = reply.json()
    return found


async def test_alertmanager_notifies_by_mail_and_webhook_inhibits_resolves_and_silences(
    tmp_path: Path, site: str
) -> None:
    port = free_port()
    log = tmp_path / "alertmanager.log"
    async with sinks_running() as (sinks, hook_port, smtp_port):
        settings = write_settings(tmp_path / "settings", smarthost=f"127.0.0.1:{smtp_port}",
                                  webhook=f"http://127.0.0.1:{hook_port}/hooks/plant?token=t0k3n")  # fmt: skip
        files = provision(tmp_path / "out", settings=settings)
        argv = [binary("alertmanager", "prometheus-alertmanager"), f"--config.file={files['alertmanager']}",
                f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address="]  # fmt: skip
        async with process(log, *argv), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:

            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await api.get("/-/ready")).status_code == 200
                return False

            await wait_for(ready, "Alertmanager is ready", log)
            offline = _alert("EdgeDeviceOffline", "critical", site=site, device="pi1")
            assert (await api.post("/api/v2/alerts", json=[offline])).status_code == 200

            async def count(n: int, what: Callable[[], list[Any]]) -> list[Any] | None:
                return what() if len(what()) >= n else None

            await wait_for(lambda: count(1, lambda: sinks.hooks_about("EdgeDeviceOffline")), "the webhook call", log)
            await wait_for(lambda: count(1, lambda: sinks.mails_about("EdgeDeviceOffline")), "the e-mail", log)
            # While the device is offline, its buffer's warning says nothing new: inhibited.
            backlog = _alert("EdgeBufferBacklog", "warning", site=site, device="pi1")
            assert (await api.post("/api/v2/alerts", json=[backlog])).status_code == 200
            await asyncio.sleep(3)  # group_wait and group_interval are 1 s: anything more would be here by now
            (hook,) = sinks.hooks_about("EdgeDeviceOffline")
            assert hook["status"] == "firing"
            assert hook["receiver"] == "shift-lead"
            assert hook["groupLabels"] == {"alertname": "EdgeDeviceOffline", "site": site}
            assert hook["alerts"][0]["labels"]["device"] == "pi1"
            assert sinks.hooks[0][0] == "/hooks/plant?token=t0k3n"
            ((to, mail),) = sinks.mails_about("EdgeDeviceOffline")
            assert to == ["shift-lead@plant.test"]  # critical: the shift lead; maintenance takes warnings
            assert mail["Subject"] == f"[FIRING] critical: EdgeDeviceOffline at {site}"
            assert mail["From"] == "factory-alerts@plant.test"
            assert "pi1" in mail.get_body(("html", "plain")).get_content()  # type: ignore[union-attr]
            assert sinks.logins[:1] == ["\0factory-alerts\0mail-secret"]  # from the settings file
            assert not sinks.mails_about("EdgeBufferBacklog")
            (inhibited,) = await _manager_alert(api, "EdgeBufferBacklog")
            assert inhibited["status"]["state"] == "suppressed"
            assert inhibited["status"]["inhibitedBy"]

            # The device is back: a resolved notice, and the buffer's warning is told at last (to maintenance).
            resolved = _alert("EdgeDeviceOffline", "critical", ends=True, site=site, device="pi1")
            assert (await api.post("/api/v2/alerts", json=[resolved])).status_code == 200
            await wait_for(lambda: count(2, lambda: sinks.hooks_about("EdgeDeviceOffline")), "resolved call", log)
            await wait_for(lambda: count(2, lambda: sinks.mails_about("EdgeDeviceOffline")), "resolved mail", log)
            assert sinks.hooks_about("EdgeDeviceOffline")[1]["status"] == "resolved"
            assert sinks.mails_about("EdgeDeviceOffline")[1][1]["Subject"] == (
                f"[RESOLVED] critical: EdgeDeviceOffline at {site}"
            )
            ((to, mail),) = await wait_for(lambda: count(1, lambda: sinks.mails_about("EdgeBufferBacklog")),
                                           "the warning once uninhibited", log)  # fmt: skip
            assert sorted(to) == ["maintenance@plant.test", "planner@plant.test"]
            assert mail["Subject"] == f"[FIRING] warning: EdgeBufferBacklog at {site}"
            assert not sinks.hooks_about("EdgeBufferBacklog")  # the webhook is the shift lead's: critical only

            # A silence (as amtool or the UI makes it) keeps a new alert quiet; others still get through.
            now = dt.datetime.now(dt.UTC)
            silence = {"matchers": [{"name": "alertname", "value": "IngestLagHigh", "isRegex": False, "isEqual": True}],
                       "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(hours=1)).isoformat(),
                       "createdBy": "test", "comment": "database maintenance"}  # fmt: skip
            created = await api.post("/api/v2/silences", json=silence)
            assert created.status_code == 200, created.text
            lag = _alert("IngestLagHigh", "critical", instance="ingest:9101")
            behind = _alert("IngestBehind", "critical", instance="ingest:9101")
            assert (await api.post("/api/v2/alerts", json=[lag])).status_code == 200
            await wait_for(lambda: _manager_alert(api, "IngestLagHigh"), "the silenced alert is known", log)
            assert (await api.post("/api/v2/alerts", json=[behind])).status_code == 200
            await wait_for(lambda: count(1, lambda: sinks.hooks_about("IngestBehind")), "the unsilenced one", log)
            await asyncio.sleep(2)
            assert not sinks.hooks_about("IngestLagHigh")
            assert not sinks.mails_about("IngestLagHigh")
            (silenced,) = await _manager_alert(api, "IngestLagHigh")
            assert silenced["status"]["state"] == "suppressed"
            assert silenced["status"]["silencedBy"] == [created.json()["silenceID"]]


# --- the settings file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "line", "problem"),
    [
        (("  password: mail-secret", "  pasword: mail-secret"), 5, "smtp.pasword: Extra inputs are not permitted"),
        (("  password: mail-secret", '  password: "..."'), 5, "smtp.password: Value error, a placeholder"),
        (("    severities: [warning]", "    severity: [warning]"), 13, "receivers[1].severity: Extra inputs"),
        (("    severities: [critical]", "    severities: [critcal]"), 9, "receivers[0].severities[0]: Input should be"),
        (("    severities: [warning]", "    severities: [critical]"), 7, "receivers: no receiver takes warning"),
        (('    webhooks: ["https://chat.plant.test/hook"]', "    webhooks: [chat.plant.test/hook]"), 11,
         "receivers[0].webhooks: Value error, a webhook is an http:// or https:// URL"),
        (("timing: {group_wait: 1s", "timing: {group_wait: 1 second"), 15, "timing.group_wait: String should match"),
    ],
)  # fmt: skip
def test_a_mistake_in_the_settings_is_refused_naming_file_line_and_key(
    tmp_path: Path, edit: tuple[str, str], line: int, problem: str
) -> None:
    settings = write_settings(tmp_path)
    text = settings.read_text()
    assert edit[0] in text
    settings.write_text(text.replace(edit[0], edit[1]))
    result = CliRunner().invoke(alerts, ["--out", str(tmp_path / "out"), "--settings", str(settings)])
    assert result.exit_code == 2, result.output
    assert f"{settings}:{line}: {problem}" in result.output
    assert "mail-secret" not in result.output  # a secret is never repeated in an error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--edge", "mill-a=10.0.0.31:9102"],
        ["--edge", "mill-a/pi=10.0.0.31:9102", "--edge", "mill-a/pi=10.0.0.32:9102"],
        ["--ingest", "ingest:9101; rm -rf /"],
        ["--erp", "erp"],
        ["--runbook-url", "https://wiki.plant.test/alerts.md#top"],
        ["--alertmanager-url", "alertmanager:9093"],
        ["--failure-prob", "1.5"],
    ],
)
def test_options_that_would_break_the_files_are_refused(tmp_path: Path, args: list[str]) -> None:
    settings = write_settings(tmp_path)
    result = CliRunner().invoke(alerts, ["--out", str(tmp_path / "out"), "--settings", str(settings), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


def test_email_without_a_mail_server_is_refused(tmp_path: Path) -> None:
    settings = tmp_path / "s.yml"
    settings.write_text("receivers:\n  - name: ops\n    severities: [critical, warning]\n    email: [ops@plant.test]\n")
    result = CliRunner().invoke(alerts, ["--out", str(tmp_path / "out"), "--settings", str(settings)])
    assert result.exit_code == 2
    assert f"{settings}:4: receivers[0].email: e-mail needs an `smtp` section" in result.output


# --- Grafana: structure only (Grafana cannot run here), and its SQL against the database ------


def test_grafana_alert_rules_are_well_formed_and_their_sql_runs(tmp_path: Path, database_url: str) -> None:
    """Grafana is not installable here, so its file-provisioning format is checked by shape
    (apiVersion 1; groups of rules whose condition names a query; SQL queries on the provisioned
    datasource; a contact point sending to Alertmanager), and every query is run on the real
    database: it must parse and return text columns (labels) and exactly one number (the value)."""
    files = provision(tmp_path / "out", "--alertmanager-url", "http://alertmanager.plant.test:9093")
    doc = yaml.safe_load(Path(files["grafana"]).read_text())
    assert doc["apiVersion"] == 1
    source = datasource_provisioning("timescaledb:5432", "factory", "grafana")["datasources"][0]
    (group,) = doc["groups"]
    assert group["folder"] == FOLDER
    assert re.fullmatch(r"\d+[smh]", group["interval"])
    titles = set()
    for rule in group["rules"]:
        titles.add(rule["title"])
        assert re.fullmatch(r"[a-z0-9-]{1,40}", rule["uid"])
        refs = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in refs
        (query,) = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        assert query["datasourceUid"] == source["uid"]
        assert query["model"]["format"] == "table"
        condition = refs[rule["condition"]]["model"]
        assert condition["type"] == "threshold"
        assert condition["expression"] == query["refId"]
        assert condition["conditions"][0]["evaluator"]["type"] in {"gt", "lt"}
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["runbook_url"].endswith(f"#{rule['title'].lower()}")
        assert rule["noDataState"] in {"OK", "NoData", "Alerting"}
        assert rule["execErrState"] in {"Error", "Alerting", "OK"}
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        with psycopg.connect(database_url) as conn:
            cursor = conn.execute(query["model"]["rawSql"])
            types = [column.type_code for column in cursor.description or []]
        numbers = [t for t in types if t in NUMERIC_OIDS]
        assert len(numbers) == 1, (rule["title"], types)
        assert all(t in NUMERIC_OIDS or t == TEXT_OID for t in types), (rule["title"], types)
    assert titles == {"AnomalyEpisodeOpen", "FailureProbabilityHigh", "OeeBelowTarget"}
    (contact,) = doc["contactPoints"]
    assert contact["receivers"][0]["type"] == "prometheus-alertmanager"
    assert contact["receivers"][0]["settings"]["url"] == "http://alertmanager.plant.test:9093"
    assert doc["policies"][0]["receiver"] == contact["name"]
    # `factory dashboards export` writes the same document next to the dashboards (compose's Grafana reads it).
    exported = CliRunner().invoke(dashboards, ["export", "--out", str(tmp_path / "grafana"), "--alertmanager-url",
                                               "http://alertmanager.plant.test:9093"])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert yaml.safe_load((tmp_path / "grafana" / "provisioning" / "alerting" / "factory.yaml").read_text()) == doc


def test_grafana_rules_see_an_open_anomaly_episode(database_url: str, site: str) -> None:
    """The anomaly rule's query on real rows: an open episode is a row with the asset's labels;
    a closed one is not."""
    (rule,) = [r for r in grafana_rules() if r.title == "AnomalyEpisodeOpen"]
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO analytics.anomaly_episode (site, asset, detector, started_at, peak_score, ended_at)"
                     " VALUES (%s, 'boiler1', 'test', now(), 3, NULL), (%s, 'mill1', 'test', now(), 3, now())",
                     (site, site))  # fmt: skip
        try:
            rows = [r for r in conn.execute(rule.sql).fetchall() if r[0] == site]
        finally:
            conn.execute("DELETE FROM analytics.anomaly_episode WHERE site = %s", (site,))
    assert rows == [(site, "boiler1", "", 1.0)]


# --- compose ----------------------------------------------------------------------------------


def test_compose_runs_prometheus_and_alertmanager_on_the_generated_files(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus, manager = services["prometheus"], services["alertmanager"]
    for service in (prometheus, manager):
        assert "ports" not in service  # inside only: the gateway stays the one HTTP publisher
        assert re.fullmatch(r"\d+m", service["mem_limit"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] + manager["volumes"]}
    config = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts[config.rsplit("/", 1)[0]] == "./alerting/prometheus"
    config = next(a.split("=", 1)[1] for a in manager["command"] if a.startswith("--config.file="))
    assert mounts[config.rsplit("/", 1)[0]] == "./alerting/alertmanager"
    # The defaults of `factory provision alerts` find the compose services where they listen.
    files = provision(tmp_path / "out")
    jobs = yaml.safe_load(Path(files["prometheus"]).read_text())["scrape_configs"]
    for job in jobs:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in services, target
            command = " ".join(str(part) for part in services[host].get("command", []))
            assert port in command or host == "alertmanager", (target, command)
            assert f"127.0.0.1:{port}" not in command, command  # a loopback listener is out of Prometheus' reach
            assert "--host 127.0.0.1" not in command, command


async def test_prometheus_alerts_reach_people_through_alertmanager(tmp_path: Path) -> None:
    """The whole chain on the generated files: Prometheus' rule fires for services that do not
    answer, it hands the alerts to Alertmanager, which calls the webhook and sends the mail."""
    prometheus_port, manager_port = free_port(), free_port()
    down = {name: f"127.0.0.1:{free_port()}" for name in ("ingest", "erp", "analytics", "alerts")}  # nothing listens
    option = {"alerts": "--alerts-bridge"}
    prometheus_log, manager_log = tmp_path / "prometheus.log", tmp_path / "alertmanager.log"
    async with sinks_running() as (sinks, hook_port, smtp_port):
        settings = write_settings(tmp_path / "settings", smarthost=f"127.0.0.1:{smtp_port}",
                                  webhook=f"http://127.0.0.1:{hook_port}/hooks/plant")  # fmt: skip
        files = provision(tmp_path / "out", *(a for name, at in down.items() for a in (option.get(name, f"--{name}"), at)),
                          "--alertmanager", f"127.0.0.1:{manager_port}", "--scrape-interval", "1",
                          "--evaluation-interval", "1", "--down-after", "2", settings=settings)  # fmt: skip
        manager_argv = [binary("alertmanager", "prometheus-alertmanager"), f"--config.file={files['alertmanager']}",
                        f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{manager_port}",
                        "--cluster.listen-address="]  # fmt: skip
        prometheus_argv = [binary("prometheus"), f"--config.file={files['prometheus']}",
                           f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                           f"--web.listen-address=127.0.0.1:{prometheus_port}"]  # fmt: skip
        async with process(manager_log, *manager_argv), process(prometheus_log, *prometheus_argv):

            async def told() -> set[str] | None:
                services = {a["labels"].get("service") for _, body in sinks.hooks for a in body["alerts"]
                            if a["labels"]["alertname"] == "FactoryServiceDown" and a["status"] == "firing"}  # fmt: skip
                return services if services >= set(down) else None

            await wait_for(told, "the webhook is told of the four services down", prometheus_log)
            await wait_for(lambda: _ready(sinks.mails_about("FactoryServiceDown")), "the mail", manager_log)
    _, body = next((p, b) for p, b in sinks.hooks if b["groupLabels"].get("alertname") == "FactoryServiceDown")
    assert body["receiver"] == "shift-lead"
    assert body["commonLabels"]["severity"] == "critical"
    alert = body["alerts"][0]
    assert alert["annotations"]["runbook_url"] == "docs/alerts.md#factoryservicedown"
    assert alert["labels"]["instance"] in down.values()
    assert alert["generatorURL"].startswith("http://")  # from Prometheus, not posted by hand
    to, mail = sinks.mails_about("FactoryServiceDown")[0]
    assert to == ["shift-lead@plant.test"]
    assert mail["Subject"] == "[FIRING] critical: FactoryServiceDown"
    text = mail.get_body(("html", "plain")).get_content()  # type: ignore[union-attr]
    assert any(at in text for at in down.values())


async def _ready(found: list[Any]) -> list[Any]:
    return found
