"""``factory demo``: the whole platform on one machine with the simulated sugar mill.

Everything runs in this one process and event loop (broker and database may be child
processes), so one cancellation stops it all in order: the edge agent flushes, ingest
drains, then the servers go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pydantic import SecretStr

from analytics.erp import ErpAccess
from analytics.jobs import Services
from analytics.oee import OeeConfig
from analytics.reports.cli import build_report, default_name
from analytics.reports.pdf import write_pdf
from analytics.service import run_analytics
from edge_agent import EdgeAgent, load_config
from erp_api import users
from erp_api.audit import Actor
from erp_api.server import serve as serve_erp
from factory.db import connect, create_database, redact
from factory.mqtt import parse_mqtt_url
from factory.runtime import Listen, claim_instance, listen
from factory.settings import Settings
from factory_demo.alerting import INSTALL_HINT, AlertingPorts, DemoAlerting, demo_alerting
from factory_demo.plant import (
    DemoTiming,
    demo_jobs,
    fault_report,
    live_config,
    maintenance_config,
    oee_config,
    outcomes,
    prepare_model,
)
from factory_demo.seed import SeedError, seed_order_flow, seed_plant
from factory_demo.stores import receive_requisitions
from factory_servers import BrokerKind, embedded_broker, embedded_postgres, free_port
from ingest import IngestConfig, IngestService
from maintenance_models.errors import MaintenanceError
from mcp_server.desktop import desktop_config_json
from provisioning.migrate import migrate
from simulator import SimulatedPlant, render_edge_config

__all__ = ["DemoSummary", "DemoTiming", "MailReceived", "run_demo"]

log = logging.getLogger(__name__)
DEVICE = "mill-pi-1"
ERP_PORT = 8000  # the demo's ERP API listens here unless it is busy or another port is asked for


def demo_site(instance: int) -> str:
    """``mill-a`` for the first demo on a host; a second one beside it simulates ``mill-a-2``,
    so its device, topics, client ids and rows never cross the first one's."""
    return "mill-a" if instance == 0 else f"mill-a-{instance + 1}"


@dataclass(frozen=True, slots=True)
class MailReceived:
    """An alert e-mail the demo's mail server received, and the file it keeps it in."""

    subject: str
    to: list[str]
    file: str


@dataclass
class DemoSummary:
    site: str
    device: str
    database_url: str
    mqtt_url: str
    erp_url: str
    seconds: float = 0.0
    published: int = 0
    received: int = 0
    inserted: int = 0
    dead_letters: int = 0
    erp_flow: str = "not run"  # the seeded order → invoice → payment, and its events on the broker
    device_state: str = "unknown"  # as recorded in telemetry.device at the end
    per_source: dict[str, tuple[int, int]] = field(default_factory=dict)  # source -> (tags, rows)
    plant_started: float = 0.0  # epoch seconds: the faults' start_s count from here
    faults: list[dict[str, Any]] = field(default_factory=list)  # each fault begun, and when it was detected
    oee_rows: dict[str, int] = field(default_factory=dict)  # line -> rows in analytics.oee
    model_version: int | None = None  # the maintenance model scoring the centrifugals
    asset_health: dict[str, dict[str, float]] = field(default_factory=dict)  # asset -> rows, last rul, failure_prob
    maintenance_orders: list[str] = field(default_factory=list)  # opened by the maintenance job during the demo
    # production orders made during the demo -> asset, status, produced, scrapped, planned, posted_intervals
    production_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the maintenance job's requisitions approved and received at the end, and the orders then ready
    requisitions: list[str] = field(default_factory=list)
    assistant_config: str = ""  # the desktop assistant's MCP server entry (stdio), with its own API key
    report: str = ""  # the shift report (PDF) written at the end, or why not
    alertmanager_url: str | None = None  # None: not installed (alerting_missing says what)
    prometheus_url: str | None = None
    alerting_missing: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # notifications Alertmanager sent the demo's webhook
    # the demo's mail server (None: no Alertmanager, or the settings file's mail server is used instead),
    # the folder it writes each e-mail to, and what it received
    smtp_url: str | None = None
    mail_folder: str | None = None
    mails: list[MailReceived] = field(default_factory=list)
    mail_relay: str = ""  # the settings file's mail server, when it has one


@contextlib.asynccontextmanager
async def _database(settings: Settings, workdir: Path) -> AsyncIterator[str]:
    if settings.database_url is not None:
        url = settings.database()
        await create_database(url)
        yield url
        return
    async with embedded_postgres(workdir / "postgres") as admin_url:
        url = admin_url.replace("/postgres?", "/factory?")
        await create_database(url)
        yield url


@contextlib.asynccontextmanager
async def _broker(settings: Settings, workdir: Path, kind: BrokerKind) -> AsyncIterator[str]:
    if settings.mqtt_url is not None:
        yield settings.mqtt()
        return
    async with embedded_broker(workdir, kind) as url:
        yield url


async def _summarize(url: str, summary: DemoSummary) -> None:
    site, device = summary.site, summary.device
    async with await connect(url) as conn:
        cur = await conn.execute(
            """SELECT coalesce(t.source, '?'), count(DISTINCT t.id), count(s.tag_id)
               FROM telemetry.tag t
               JOIN telemetry.device d ON d.id = t.device_id
               LEFT JOIN telemetry.sample s ON s.tag_id = t.id
               WHERE d.site = %s AND d.name = %s
               GROUP BY 1 ORDER BY 1""",
            (site, device),
        )
        summary.per_source = {str(r[0]): (int(r[1]), int(r[2])) for r in await cur.fetchall()}  # type: ignore[call-overload]
        cur = await conn.execute("SELECT status FROM telemetry.device WHERE site = %s AND name = %s", (site, device))
        row = await cur.fetchone()
        summary.device_state = str(row[0]) if row else "missing"


_NO_FAULTS = "    none\n"


def _banner(summary: DemoSummary, timing: DemoTiming, alerting: DemoAlerting) -> str:
    faults = "".join(
        f"    at {w.start_s:>4.0f} s: {w.kind} on {w.tag or w.asset}"
        + (f" until {w.end_s:.0f} s\n" if w.end_s is not None else "\n")
        for w in timing.faults.windows()
    )
    return (
        "\nFactory demo is running — the simulated sugar mill, edge agent, broker, ingest, ERP API and analytics.\n"
        f"  ERP API (OpenAPI):  {summary.erp_url}/docs   health: {summary.erp_url}/healthz\n"
        f"  Database:           {redact(summary.database_url)}   (tables telemetry.sample, telemetry.tag)\n"
        f"  MQTT broker:        {summary.mqtt_url}   topics factory/v1/{summary.site}/{summary.device}/#\n"
        f"  Analytics:          anomaly detection learns on the first {timing.healthy_s:.0f} s, then writes"
        " analytics.anomaly; analytics.oee, analytics.production_count, maintenance.asset_health\n"
        + "".join(line + "\n" for line in alerting.lines())
        + f"  Faults (seconds after the plant started):\n{faults or _NO_FAULTS}"
        "  Stop with Ctrl-C.\n"
    )


def _report(summary: DemoSummary) -> str:
    lines = [
        f"\nDemo summary after {summary.seconds:.0f}s:",
        f"  points published by the edge agent: {summary.published}",
        f"  points received by ingest:          {summary.received}",
        f"  new rows in telemetry.sample:       {summary.inserted}",
        f"  dead letters:                       {summary.dead_letters}",
        f"  device status at the end:           {summary.device_state}",
        f"  ERP order flow:                     {summary.erp_flow}",
        f"  per source on {summary.site}/{summary.device} (tags, rows in the database):",
    ]
    lines += [f"    {name:<14} {tags:>4} tags {rows:>8} rows" for name, (tags, rows) in summary.per_source.items()]
    lines.append("  faults injected (seconds after the plant started) and the first anomaly row of the asset:")
    for f in summary.faults:
        seen = "not detected" if f["delay_s"] is None else f"detected after {f['delay_s']:.0f} s ({f['detector']})"
        lines.append(f"    {f['start_s']:>5.0f} s  {f['kind']:<13} {f['tag'] or f['asset']:<28} {seen}")
    if not summary.faults:
        lines.append("    none began yet")
    lines.append(f"  OEE rows per line (analytics.oee): {summary.oee_rows or 'none yet'}")
    lines.append(f"  asset health (maintenance model version {summary.model_version}):")
    lines += [f"    {asset:<14} {h['rows']:>4.0f} rows, RUL {h['rul']:.1f} cycles, failure probability"
              f" {h['failure_prob']:.2f}" for asset, h in summary.asset_health.items()]  # fmt: skip
    lines.append(f"  maintenance work orders opened: {', '.join(summary.maintenance_orders) or 'none'}")
    lines.append("  spare parts short (one bearing on the shelf, two needed) and their requisitions:")
    lines += [f"    {line}" for line in summary.requisitions] or ["    none raised"]
    if summary.alertmanager_url is None:
        lines.append(f"  alerts: Alertmanager not installed ({INSTALL_HINT})")
    else:
        lines.append(f"  alerts (Alertmanager {summary.alertmanager_url}/#/alerts, Prometheus"
                     f" {summary.prometheus_url or 'not installed'}):")  # fmt: skip
        lines += [f"    {line}" for line in summary.alerts] or ["    none notified (yet)"]
    lines += _mail_lines(summary)
    lines.append("  production work orders (advanced by the lines' counters, analytics.production_count):")
    lines += [f"    {number} on {o['asset']} ({o['status']}): {o['produced']} of {o['planned']} produced,"
              f" {o['scrapped']} scrapped, {o['posted_intervals']} intervals posted"
              for number, o in summary.production_orders.items()] or ["    none"]  # fmt: skip
    if summary.assistant_config:
        lines.append("  connect an assistant (docs/mcp.md): while the demo runs, add this to its MCP configuration")
        lines += [f"    {line}" for line in summary.assistant_config.splitlines()]
    lines.append(f"  shift report (factory report shift): {summary.report}")
    return "\n".join(lines) + "\n"


def _mail_lines(summary: DemoSummary) -> list[str]:
    if summary.alertmanager_url is None:
        return [f"  e-mails: none without Alertmanager ({INSTALL_HINT})"]
    if summary.mail_folder is None:
        return [f"  e-mails: sent through {summary.mail_relay} (the settings file's mail server)"]
    lines = [f"  e-mails received by the demo's mail server ({summary.smtp_url}): {len(summary.mails)},"
             f" in {summary.mail_folder}/"]  # fmt: skip
    lines += [f"    {m.subject}  -> {Path(m.file).name}" for m in summary.mails] or ["    none (yet)"]
    if summary.mails:
        lines.append(f"  open {summary.mails[0].file}   (any mail program opens .eml files; they are text too)")
    return lines


async def _results(db_url: str, summary: DemoSummary, timing: DemoTiming, since: datetime) -> None:
    reports = await fault_report(db_url, summary.site, summary.plant_started, timing.faults)
    summary.faults = [
        {"kind": r.kind, "asset": r.asset, "tag": r.tag, "start_s": (r.start.timestamp() - summary.plant_started),
         "start": r.start.isoformat(), "first_anomaly": r.first_anomaly and r.first_anomaly.isoformat(),
         "delay_s": r.delay_s, "detector": r.detector}
        for r in reports
    ]  # fmt: skip
    found = await outcomes(db_url, summary.site, summary.model_version, since)
    summary.oee_rows = found["oee_rows"]
    summary.asset_health = found["asset_health"]
    summary.maintenance_orders = found["maintenance_orders"]
    summary.production_orders = found["production_orders"]


async def _write_report(db_url: str, summary: DemoSummary, config: OeeConfig, workdir: Path) -> None:
    """The report of the shift in progress, as the plant manager would get it; a failure is reported, not raised."""
    try:
        data = await build_report(db_url, "shift", summary.site, datetime.now(UTC), config)
        path = workdir / "reports" / default_name(data.period)
        await asyncio.to_thread(write_pdf, data, path, config.calendar.timezone)
    except (psycopg.Error, OSError) as exc:
        log.warning("shift report not written: %s", exc)
        summary.report = f"not written: {exc}"
        return
    summary.report = str(path)


async def _drain(agent: EdgeAgent, ingest: IngestService, device: str, timeout_s: float = 30.0) -> None:
    """Wait until ingest has taken in everything the agent published (or time runs out);
    ``device`` is ``site/name``."""
    deadline = time.monotonic() + timeout_s
    while ingest.stats.points_received < agent.published_points or ingest.stats.device_states.get(device) != "offline":
        ingest.flushed.clear()
        try:
            await asyncio.wait_for(ingest.flushed.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning(
                "ingest did not catch up before stopping: %d of %d points, device %s",
                ingest.stats.points_received,
                agent.published_points,
                ingest.stats.device_states.get(device),
            )
            return


async def _seed(db_url: str, summary: DemoSummary, mqtt_url: str) -> None:
    """Once the ERP API listens: an order reserved, invoiced and paid, with its events seen on
    the broker. A failure is reported in the summary; it never stops the demo."""
    for _ in range(100):
        try:
            result = await seed_order_flow(db_url, summary.erp_url, mqtt_url)
        except OSError:  # not listening yet
            await asyncio.sleep(0.2)
            continue
        except SeedError as exc:
            summary.erp_flow = f"failed: {exc}"
            log.warning("ERP seed flow failed: %s", exc)
            return
        missing = f", events missing: {', '.join(result.missing_events)}" if result.missing_events else ""
        summary.erp_flow = (
            f"order {result.order_number} → invoice {result.invoice_number} ({result.gross} {result.currency}) paid;"
            f" {len(result.events)} events on factory/v1/events/#{missing}"
        )
        print(f"  ERP seed flow: {summary.erp_flow}", file=sys.stderr, flush=True)
        return
    summary.erp_flow = "failed: the ERP API did not start"


async def _plant_services(db_url: str, summary: DemoSummary, services: Services, timing: DemoTiming) -> None:
    """After the ERP is up: its plant master data feeds OEE and maintenance; the model is trained.

    A failure is logged and leaves that job on its defaults; it never stops the demo."""
    try:
        seed = await seed_plant(db_url, summary.erp_url, summary.site)
        services.oee = oee_config(seed, timing)
        services.erp = ErpAccess(summary.erp_url, SecretStr(seed.service_key))
        summary.model_version = await prepare_model(db_url, timing.model_units)
        services.maintenance = maintenance_config(seed, summary.erp_url)
        print(f"  ERP plant data: {seed.line_product} (ideal 240 t/h), {seed.production_order} on mill2;"
              f" maintenance model version {summary.model_version}", file=sys.stderr, flush=True)  # fmt: skip
        try:
            summary.assistant_config = await _assistant_config(db_url, summary.erp_url)
        except psycopg.Error as exc:
            log.warning("no API key for an assistant: %s", exc)
    except (OSError, SeedError, MaintenanceError) as exc:
        log.warning("demo plant services not set up: %s", exc)


async def _stores(db_url: str, summary: DemoSummary) -> None:
    """The purchasing desk and stores receive what the maintenance job requisitioned; a failure
    is reported in the summary, it never stops the demo."""
    try:
        summary.requisitions = await receive_requisitions(db_url, summary.erp_url)
    except (OSError, httpx.HTTPError, RuntimeError) as exc:
        summary.requisitions = [f"failed: {exc}"]
        log.warning("demo stores: %s", exc)


async def _assistant_config(db_url: str, erp_url: str) -> str:
    """An API key of its own (role planner: it may schedule maintenance) for a desktop assistant,
    in the configuration that starts ``factory mcp serve`` on stdio against this demo."""
    async with await connect(db_url, autocommit=True) as conn:
        key = await users.create_api_key(conn, f"assistant-{uuid.uuid4().hex[:8]}", "planner", by=Actor.local())
    return desktop_config_json(db_url, erp_url, key.key)


async def _wait_for_stop(seconds: float | None) -> None:
    """Return after ``seconds``, or when the demo is cancelled (Ctrl-C, SIGTERM).

    Cancellation is taken back here on purpose: the demo then stops its parts in order
    and prints its summary instead of tearing everything down at once.
    """
    try:
        await asyncio.wait_for(asyncio.Event().wait(), seconds)
    except TimeoutError:
        pass
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()


async def run_demo(
    settings: Settings, workdir: Path | None = None, erp_port: int | None = None, *, seconds: float | None = None,
    timing: DemoTiming | None = None, broker: BrokerKind = "auto", alert_settings: Path | None = None,
) -> DemoSummary:  # fmt: skip
    """Run the demo until cancelled or ``seconds`` pass; return what it did.

    Several demos may run on one host, against one broker and one database server: each
    takes the lowest free instance number, which names its site, its client ids and its
    default ``workdir`` (``.factory-demo``, ``.factory-demo-2``, ...). ``erp_port`` None
    means 8000 or, if that is busy, a free port; 0 any free port; another number exactly
    that one (busy: a ``StartupError``). ``broker`` says which one to start when
    FACTORY_MQTT_URL is not set (``factory_servers``). ``alert_settings``: the plant's alert
    receivers (``factory provision alerts --settings``); without it Alertmanager notifies the demo.
    """
    timing = timing or DemoTiming()
    instance = claim_instance("factory-demo")
    try:
        number = instance.number
        workdir = workdir or Path(".factory-demo" if number == 0 else f".factory-demo-{number + 1}").resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        where = Listen("127.0.0.1", ERP_PORT if erp_port is None else erp_port, "--erp-port", erp_port is None)
        with listen(where) as erp_socket:  # before anything starts: a busy port is one line, not a teardown
            return await _run(settings, workdir, erp_socket, site=demo_site(number), client_id=instance.client_id,
                              seconds=seconds, timing=timing, broker=broker,
                              alert_settings=alert_settings)  # fmt: skip
    finally:
        instance.release()


async def _run(
    settings: Settings, workdir: Path, erp_socket: socket.socket, *, site: str, client_id: str,
    seconds: float | None, timing: DemoTiming, broker: BrokerKind, alert_settings: Path | None,
) -> DemoSummary:  # fmt: skip
    started, since = time.monotonic(), datetime.now(UTC)
    async with (
        _database(settings, workdir) as db_url,
        _broker(settings, workdir, broker) as mqtt_url,
        SimulatedPlant(modbus_port=0, opcua_port=0, faults=timing.faults) as plant,
    ):
        async with await connect(db_url) as conn:
            await migrate(conn)
        summary = DemoSummary(
            site=site,
            device=DEVICE,
            database_url=db_url,
            mqtt_url=parse_mqtt_url(mqtt_url).url,
            erp_url=f"http://127.0.0.1:{erp_socket.getsockname()[1]}",
            plant_started=plant.started_at,
        )
        shared = Services(live=live_config(site, timing))  # the plant's configurations join once the ERP has them
        config_path = workdir / "edge.yaml"
        config_path.write_text(
            render_edge_config(
                site=site, device=DEVICE, mqtt_url=mqtt_url, modbus_host="127.0.0.1",
                modbus_port=plant.modbus_port, opcua_endpoint=plant.opcua_endpoint,
                buffer_path=str(workdir / "edge-buffer.db"), http_port=0,
            )
        )  # fmt: skip
        agent = EdgeAgent(load_config(config_path), config_path.parent)
        ingest_port = free_port()
        ingest = IngestService(
            IngestConfig(
                database_url=db_url,
                mqtt=parse_mqtt_url(mqtt_url),
                client_id=client_id.replace("factory-demo", "factory-ingest-demo", 1),
                site=site,
                session_expiry_s=600,
                http=Listen("127.0.0.1", ingest_port),  # for Prometheus
            )
        )
        ports = AlertingPorts(erp=erp_socket.getsockname()[1], ingest=ingest_port, analytics=free_port())
        alerting_id = client_id.replace("factory-demo", "factory-alerts-demo", 1)
        async with demo_alerting(workdir, db_url, mqtt_url, ports, client_id=alerting_id, site=site,
                                 settings_file=alert_settings) as alerting:  # fmt: skip
            async with asyncio.TaskGroup() as services:
                ingest_task = services.create_task(ingest.run(), name="ingest")
                # dev: the demo signs tokens with a dev secret; production refuses to start without one.
                erp = serve_erp(db_url, dev=True, mqtt_url=mqtt_url, sock=erp_socket)
                erp_task = services.create_task(erp, name="erp")
                seed_task = services.create_task(_seed(db_url, summary, mqtt_url), name="erp-seed")
                plant_task = services.create_task(_plant_services(db_url, summary, shared, timing), name="plant-data")
                # Anomaly scoring learns each asset on its first healthy stretch; the faults start after it.
                analytics = run_analytics(db_url, mqtt_url, shared, http=Listen("127.0.0.1", ports.analytics),
                                          jobs=demo_jobs(timing))  # fmt: skip
                analytics_task = services.create_task(analytics, name="analytics")
                agent_task = services.create_task(agent.run(), name="edge-agent")
                print(_banner(summary, timing, alerting), file=sys.stderr, flush=True)
                await _wait_for_stop(seconds)
                agent_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await agent_task
                await _drain(agent, ingest, f"{site}/{DEVICE}")
                await _stores(db_url, summary)
                ingest_task.cancel()
                erp_task.cancel()
                seed_task.cancel()
                plant_task.cancel()
                analytics_task.cancel()
            summary.alertmanager_url, summary.prometheus_url = alerting.alertmanager_url, alerting.prometheus_url
            summary.alerting_missing, summary.alerts = alerting.missing, list(alerting.notifications)
            summary.smtp_url, summary.mail_relay = alerting.smtp_url, alerting.mail_relay
            if (mailbox := alerting.mailbox) is not None:
                summary.mail_folder = str(mailbox.folder)
                summary.mails = [MailReceived(m.subject, m.recipients, str(m.path)) for m in mailbox.mails]
        summary.seconds = time.monotonic() - started
        summary.published = agent.published_points
        summary.received = ingest.stats.points_received
        summary.inserted = ingest.stats.points_inserted
        summary.dead_letters = ingest.stats.dead_letters
        await _summarize(db_url, summary)
        await _results(db_url, summary, timing, since)
        await _write_report(db_url, summary, shared.oee, workdir)
        print(_report(summary), file=sys.stderr, flush=True)
        return summary
