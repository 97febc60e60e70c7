"""The shift report on a shift with every section filled through the platform's own code paths,
and on an empty one.

The shift is the one in progress (a calendar whose shift began three hours ago), because the
ERP stamps what it does with the current time. In it:

- line A runs with a production work order (started at the shift's start), stops 15 minutes
  for a fault and 60 seconds for a microstop, and makes 2 units a minute of which 0.1 are
  rejects; line B runs throughout with no order. ``OeeJob`` and ``CountsJob`` (posting to a
  real ERP server) turn that into OEE rows, losses and produced quantity;
- two anomaly episodes, written by the live job's own store functions;
- the maintenance job scores a worn and a healthy asset (a small trained model) and opens an
  order for the worn one whose bearing is short (back-ordered); another order is completed;
- two sales orders: one shipped and invoiced, one only invoiced.

Figures are checked against SQL and arithmetic of the test's own; the PDF's text is read with
a few lines of zlib and regular expressions (matplotlib keeps text as text).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from click.testing import CliRunner
from erp_support import customer, ok, order, product, receive, running, unique, warehouse
from pdf_text import pdf_pages, pdf_text
from pydantic import SecretStr
from test_analytics_oee import write

from analytics import store
from analytics.counts import CountsJob
from analytics.erp import ErpAccess
from analytics.jobs import Services
from analytics.jobs import maintenance as score
from analytics.oee import CountsConfig, LineConfig, OeeConfig, OeeJob, Shift, ShiftCalendar
from analytics.reports import SECTIONS, ReportData, as_dict, collect, day_period, shift_period, write_pdf
from analytics.reports.cli import report
from analytics.scheduler import JobContext
from factory_servers import free_port
from ingest.store import Samples, TelemetryStore
from maintenance_models.jobs import MaintenanceJobConfig
from maintenance_models.registry import promote, register
from maintenance_models.scoring import PLANT_CONFIG, ScoringConfig, train_plant_model
from maintenance_models.work_orders import SparePart

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Conn = psycopg.AsyncConnection[Any]
FAULT = (3600.0, 900.0)  # line A: a fault one hour into the shift, 15 minutes long
MICRO = (7200.0, 60.0)  # and a microstop at two hours
SENSORS = ("vibration_rms", "bearing_temp")
QUICK = PLANT_CONFIG.model_copy(update={"ensemble": 1, "max_iter": 60, "classifier_max_iter": 40, "learning_rate": 0.1})


def calendar_now(now: float) -> tuple[ShiftCalendar, float]:
    """A calendar of one 8-hour shift a day that began on the hour three hours before ``now``."""
    start = (now // 3600 - 3) * 3600
    hour = datetime.fromtimestamp(start, UTC).hour
    return ShiftCalendar(shifts=[Shift(name="T", start=clock_time(hour), hours=8)]), start


@dataclass
class Filled:
    site: str
    config: OeeConfig
    start: float
    now: float
    line_a: str
    line_b: str
    production_order: int
    worn: str
    healthy: str
    backordered_sku: str
    invoiced_orders: list[int]
    expected_gross: Decimal


async def telemetry(db: Conn, site: str, a: str, b: str, start: float, now: float) -> None:
    states_a = [(start - 60, 1.0), (start + FAULT[0], 2.0), (start + sum(FAULT), 1.0), (start + MICRO[0], 0.0),
                (start + sum(MICRO), 1.0)]  # fmt: skip
    stopped = [FAULT, MICRO]
    count, rejects, made, bad = [], [], 0.0, 0.0
    for minute in range(-1, int((now - start) // 60) + 1):
        at = start + minute * 60
        if minute > 0 and not any(s <= (minute - 1) * 60 < s + d for s, d in stopped):
            made, bad = made + 2.0, bad + 0.1
        count.append((at, made))
        rejects.append((at, round(bad, 3)))
    await write(db, site, {f"{a}.state": states_a, f"{a}.count": count, f"{a}.rejects": rejects,
                           f"{b}.state": [(start - 60, 1.0)], f"{b}.count": [(t, v / 2) for t, v in count]})  # fmt: skip


def _bearing(life: int, hours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    wear = (hours / life) ** 3
    return np.column_stack([1.4 + 4.0 * wear + rng.normal(0, 0.05, len(hours)),
                            52.0 + 25.0 * wear + rng.normal(0, 0.3, len(hours))])  # fmt: skip


async def wear_history(db: Conn, site: str, asset: str, values: np.ndarray) -> None:
    """One sample per sensor every 15 minutes over the complete hours before now."""
    tel = TelemetryStore(db)
    samples = Samples()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with db.transaction():
        ids = await tel.tag_ids(await tel.device_id(site, "pi"), [f"{asset}.{s}" for s in SENSORS])
        for back, row in enumerate(values[::-1]):
            for quarter in range(4):
                at = end - (back + 1) * timedelta(hours=1) + quarter * timedelta(minutes=15)
                for column, sensor in enumerate(SENSORS):
                    samples.extend([ids[f"{asset}.{sensor}"]], [int(at.timestamp() * 1000)], [float(row[column])], [0])
        await tel.write_samples(samples)


async def maintenance(db: Conn, database_url: str, site: str, admin: Any, base_url: str) -> tuple[str, str, str]:
    rng = np.random.default_rng(2)
    histories = [_bearing(life, np.arange(1, life + 1), rng) for life in rng.integers(150, 400, size=24)]
    model = train_plant_model(histories, SENSORS, QUICK)
    worn, healthy = f"{site}worn", f"{site}healthy"
    await wear_history(db, site, worn, _bearing(300, np.arange(261, 301), rng))
    await wear_history(db, site, healthy, _bearing(300, np.arange(1, 41), rng))
    await promote(db, await register(db, model, kind=f"bearing-{site}", training_data={}, metrics={}))
    w = await warehouse(admin)
    bearing = await product(admin, cost="40.00")
    await receive(admin, bearing["id"], w["id"], "1")  # two needed: one back-ordered
    key = (await ok(await admin.post("/api/v1/auth/api-keys", json={"name": unique("scorer").lower(),
                                                                    "role": "service"}), 201))["key"]  # fmt: skip
    scoring = ScoringConfig(kind=f"bearing-{site}", assets=f"{site}%", lookback_cycles=24, min_cycles=6)
    config = MaintenanceJobConfig(scoring=scoring, erp_url=base_url, api_key=key, warehouse=w["code"],
                                  spare_parts={worn: [SparePart(sku=bearing["sku"], quantity=2)]})  # fmt: skip
    result = await score(JobContext(db, database_url, Services(maintenance=config)))
    assert result["at_risk"] == [worn]
    done = await ok(await admin.post("/api/v1/work-orders", json={
        "kind": "maintenance", "asset": healthy, "warehouse_id": w["id"], "reason": "lubrication round"}), 201)  # fmt: skip
    await ok(await admin.post(f"/api/v1/work-orders/{done['id']}/start"))
    await ok(await admin.post(f"/api/v1/work-orders/{done['id']}/complete"))
    return worn, healthy, str(bearing["sku"])


async def sales(admin: Any) -> tuple[list[int], Decimal]:
    """Order 1 shipped and invoiced, order 2 only invoiced; their gross worked out here."""
    w = await warehouse(admin)
    sugar = await product(admin, price="12.50", tax_rate="0.19")
    molasses = await product(admin, price="3.20", tax_rate="0.07")
    for p in (sugar, molasses):
        await receive(admin, p["id"], w["id"], "100")
    buyer = await customer(admin)
    first = await order(admin, buyer["id"], w["id"], [(sugar["id"], "4"), (molasses["id"], "10")])
    second = await order(admin, buyer["id"], w["id"], [(sugar["id"], "2")])
    for o, ship in ((first, True), (second, False)):
        await ok(await admin.post(f"/api/v1/orders/{o['id']}/confirm"))
        if ship:
            await ok(await admin.post(f"/api/v1/orders/{o['id']}/ship"))
        await ok(await admin.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
    gross = Decimal("50.00") * Decimal("1.19") + Decimal("32.00") * Decimal("1.07") + Decimal("25.00") * Decimal("1.19")
    return [int(first["id"]), int(second["id"])], gross.quantize(Decimal("0.01"))


@pytest.fixture
async def filled(db: Conn, database_url: str, site: str) -> Filled:
    now = time.time()
    calendar, start = calendar_now(now)
    a, b = f"la-{site[-5:]}", f"lb-{site[-5:]}"
    lines = [LineConfig(name=a, site=site, state_tag=f"{a}.state", count_tag=f"{a}.count", reject_tag=f"{a}.rejects",
                        ideal_rate=150),
             LineConfig(name=b, site=site, state_tag=f"{b}.state", count_tag=f"{b}.count", ideal_rate=100)]  # fmt: skip
    config = OeeConfig(lines=lines, calendar=calendar, previous_shifts=0,
                       counts=CountsConfig(interval_s=300, settle_s=0, lookback_s=now - start + 600))  # fmt: skip
    await telemetry(db, site, a, b, start, now)
    async with running(database_url) as api, api.client("admin") as admin:
        made = await product(admin, cost="3.00")
        cane = await product(admin, cost="1.00")
        made = await product(admin, cost="3.00", bom=[{"component_id": cane["id"], "quantity": "1"}])
        w = await warehouse(admin)
        await receive(admin, cane["id"], w["id"], "100000")
        wo = await ok(await admin.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": made["id"], "planned_quantity": "1000", "warehouse_id": w["id"],
            "asset": a}), 201)  # fmt: skip
        await ok(await admin.post(f"/api/v1/work-orders/{wo['id']}/start"))
        await db.execute(
            "UPDATE erp.work_order SET started_at = to_timestamp(%s) WHERE id = %s", (start - 60, wo["id"])
        )
        key = (await ok(await admin.post("/api/v1/auth/api-keys", json={"name": unique("counts").lower(),
                                                                        "role": "service"}), 201))["key"]  # fmt: skip
        await CountsJob(config, ErpAccess(api.base_url, SecretStr(key)), clock=lambda: now).run(db)
        await OeeJob(config, clock=lambda: now).run(db)
        ep = await store.open_episode(db, site, f"{site}worn", None, "multivariate", start + 4000, 6.5,
                                      {"top": [[f"{site}worn.vibration_rms", 0.71], [f"{site}worn.bearing_temp", 0.2]]})  # fmt: skip
        await store.close_episode(db, ep, start + 4600, 9.25)
        await store.open_episode(db, site, a, 1, "limits", start + 9000, 1.0,
                                 {"tag": f"{a}.count", "value": 9e9, "reason": "above max"})  # fmt: skip
        worn, healthy, sku = await maintenance(db, database_url, site, admin, api.base_url)
        invoiced, gross = await sales(admin)
    return Filled(site, config, start, now, a, b, int(wo["id"]), worn, healthy, sku, invoiced, gross)


async def report_for(db: Conn, f: Filled) -> ReportData:
    period = shift_period(f.config.calendar, f.site, datetime.fromtimestamp(f.now, UTC),
                          datetime.fromtimestamp(f.now, UTC))  # fmt: skip
    assert period.start == datetime.fromtimestamp(f.start, UTC)
    return await collect(db, period, f.config)


async def test_every_section_of_a_filled_shift(db: Conn, filled: Filled, tmp_path: Path) -> None:
    f = filled
    data = await report_for(db, f)
    planned_s = f.now - f.start

    # Output vs plan: the order's own row, and what the counters posted to it in the shift.
    (out,) = data.output
    cur = await db.execute("""SELECT planned_quantity, produced_quantity, scrapped_quantity FROM erp.work_order
                              WHERE id = %s""", (f.production_order,))  # fmt: skip
    assert (out.planned, out.produced, out.scrapped) == await cur.fetchone()
    cur = await db.execute("""SELECT sum(good), sum(scrap) FROM analytics.production_count
                              WHERE work_order_id = %s AND outcome = 'posted'""", (f.production_order,))  # fmt: skip
    good, scrap = await cur.fetchone()  # type: ignore[misc]
    assert (out.good_in_period, out.scrap_in_period) == (good, scrap)
    assert out.produced == good > 0
    assert out.scrapped == scrap > 0
    assert out.progress == (out.produced / Decimal(1000)).quantize(Decimal("0.0001"))
    assert out.line == f.line_a

    # OEE: availability from the stops the test wrote; the rest from the OEE job's shift row.
    oee = {line.line: line for line in data.oee}
    assert set(oee) == {f.line_a, f.line_b}
    la = oee[f.line_a]
    assert la.availability == pytest.approx((planned_s - FAULT[1] - MICRO[1]) / planned_s)
    assert (la.stops, la.stop_s, la.microstops, la.microstop_s) == (1, FAULT[1], 1, MICRO[1])
    cur = await db.execute("""SELECT availability, performance, quality, oee FROM analytics.oee
                              WHERE site = %s AND line = %s AND period = 'shift'""", (f.site, f.line_a))  # fmt: skip
    row = await cur.fetchone()
    assert (la.availability, la.performance, la.quality, la.oee) == pytest.approx(row)
    assert la.quality == pytest.approx(1 - 0.1 / 2)
    assert oee[f.line_b].availability == pytest.approx(1.0)
    assert {h.line for h in data.hours} == {f.line_a, f.line_b}

    # Anomalies, assets at risk, maintenance.
    assert [(e.asset, e.detector) for e in data.episodes] == [(f.worn, "multivariate"), (f.line_a, "limits")]
    assert data.episodes[0].tags[0] == (f"{f.worn}.vibration_rms", 0.71)
    assert data.episodes[1].ended is None
    assert data.episodes[1].tags == [(f"{f.line_a}.count", None)]
    assert [(a.asset, a.at_risk) for a in data.assets] == [(f.worn, True), (f.healthy, False)]
    by_asset = {m.asset: m for m in data.maintenance}
    assert by_asset[f.worn].opened
    assert not by_asset[f.worn].closed
    assert by_asset[f.worn].backordered == [(f.backordered_sku, Decimal("1.000"))]
    assert by_asset[f.healthy].closed
    assert by_asset[f.healthy].status == "done"

    # Sales: the window's totals by SQL of the test's own; this test's orders are among them.
    cur = await db.execute(
        """SELECT count(*), sum(net), sum(gross), sum(gross) FILTER (WHERE order_id = ANY(%s)) FROM erp.invoice
           WHERE kind = 'invoice' AND created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)""",
        (f.invoiced_orders, f.start, f.start + 8 * 3600),
    )
    count, net, gross, ours = await cur.fetchone()  # type: ignore[misc]
    assert ours == f.expected_gross
    assert (data.sales.invoiced, data.sales.invoiced_net, data.sales.invoiced_gross) == (count, net, gross)
    assert data.sales.shipped >= 1
    assert data.sales.shipped_value >= Decimal("82.00")

    # The PDF: four pages, every section's title, the figures that matter on page 1.
    pdf = write_pdf(data, tmp_path / "filled.pdf")
    assert pdf_pages(pdf) == 4
    text = pdf_text(pdf)
    for title in SECTIONS:
        assert title in text, title
    assert f"OEE {f.line_a}" in text
    assert f"{la.oee * 100:.1f} %" in text
    assert "none in this shift" not in text
    assert as_dict(data)["output"][0]["planned"] == "1000.000"

    # The day the shift began in: its only shift, so the same OEE and output.
    began = datetime.fromtimestamp(f.start, UTC)
    day = await collect(db, day_period(f.config.calendar, f.site, began, datetime.fromtimestamp(f.now, UTC)), f.config)
    assert day.period.start <= began < day.period.end
    assert len(day.oee) == 2
    for line in day.oee:
        assert (line.availability, line.performance, line.quality, line.oee) == pytest.approx(
            (oee[line.line].availability, oee[line.line].performance, oee[line.line].quality, oee[line.line].oee)
        )
    assert day.output == data.output
    assert pdf_pages(write_pdf(day, tmp_path / "day.pdf")) == 4


async def test_an_empty_shift_says_none_in_every_section(db: Conn, site: str, tmp_path: Path) -> None:
    config = OeeConfig(lines=[])
    at = datetime(2001, 1, 1, 10, tzinfo=UTC)  # before anything any test writes
    data = await collect(db, shift_period(config.calendar, site, at, at + timedelta(days=1)), config)
    assert (data.output, data.oee, data.hours, data.episodes, data.assets, data.maintenance) == ([],) * 6
    assert (data.sales.shipped, data.sales.invoiced, data.sales.invoiced_gross) == (0, 0, Decimal(0))
    pdf = write_pdf(data, tmp_path / "empty.pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert pdf.read_bytes().rstrip().endswith(b"%%EOF")
    assert pdf_pages(pdf) == 4
    text = pdf_text(pdf)
    assert text.count("none in this shift") >= 10
    assert "shift A of 2001-01-01" in text


def test_the_command_writes_the_pdf_and_prints_the_figures(database_url: str, site: str, tmp_path: Path) -> None:
    """``factory report``: --at without an offset is a time of the calendar's zone (here Europe/Berlin)."""
    oee = tmp_path / "oee.yaml"
    oee.write_text(yaml.safe_dump({"lines": [], "calendar": {"timezone": "Europe/Berlin", "shifts": [
        {"name": "early", "start": "06:00", "hours": 8}, {"name": "late", "start": "14:00", "hours": 8}]}}))  # fmt: skip
    runner = CliRunner(env={"FACTORY_DATABASE_URL": database_url, "FACTORY_OEE_CONFIG": str(oee)})
    out = tmp_path / "reports" / "late.pdf"
    result = runner.invoke(report, ["shift", "--site", site, "--at", "2001-06-01T15:30", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["period"]["label"] == "shift late of 2001-06-01 (14:00-22:00 Europe/Berlin)"
    assert figures["period"]["start"] == "2001-06-01T12:00:00+00:00"  # summer time: UTC+2
    assert figures["sales"] == {"currency": "EUR", "shipped": 0, "shipped_value": "0", "invoiced": 0,
                                "invoiced_net": "0", "invoiced_gross": "0"}  # fmt: skip
    assert pdf_pages(out) == 4
    assert "none in this shift" in pdf_text(out)

    day = runner.invoke(report, ["day", "--site", site, "--at", "2001-06-01T15:30", "--json"])
    assert day.exit_code == 0, day.output
    period = json.loads(day.stdout)["period"]
    assert (period["start"], period["end"]) == ("2001-05-31T22:00:00+00:00", "2001-06-01T22:00:00+00:00")
    bad = runner.invoke(report, ["shift", "--site", site, "--at", "yesterday"])
    assert bad.exit_code == 2
    assert "--at" in bad.output


def test_the_command_says_in_one_line_when_the_database_is_away(site: str) -> None:
    url = f"postgresql://reports:s3cr3t-pw@127.0.0.1:{free_port()}/factory"
    result = CliRunner(env={"FACTORY_DATABASE_URL": url}).invoke(report, ["shift", "--site", site, "--json"])
    assert result.exit_code == 2
    assert "factory report: the database is not reachable" in result.output
    assert "s3cr3t-pw" not in result.output


def test_the_pdf_reader_keeps_a_stream_whose_compressed_data_ends_in_a_carriage_return(tmp_path: Path) -> None:
    """A content stream whose compressed bytes end in ``\\r`` (as this one's do) was cut short
    by taking ``\\r\\n`` before ``endstream`` as the line end, and its text was lost."""
    data = zlib.compress(b"BT /F1 12 Tf (Output vs plan) Tj ET 1005")
    assert data.endswith(b"\r")
    pdf = tmp_path / "one.pdf"
    pdf.write_bytes(b"%%PDF-1.4\n1 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream\nendobj\n%%%%EOF\n"
                    % (len(data), data))  # fmt: skip
    assert pdf_text(pdf) == "Output vs plan"
