"""OEE performance against the ideal rate the ERP knows, with expected values worked out by hand.

The shift: 06:00-14:00 UTC, a planned break 10:00-10:30 in which the line stands still. It
runs the rest of the time and makes 100 units per running hour: 750 units in 7.5 run hours.

The ERP: the line's product has an ideal rate of 125 units/h; a production work order with
its own rate of 200 units/h ran on the line 08:00-10:00. The line's configured rate (250)
is used only where the ERP says nothing.

- hours without the order: 100 / 125 = 0.8 (10:00-11:00: 50 units in 0.5 h, also 0.8)
- 08:00-10:00, the order's hours: 100 / 200 = 0.5
- the shift: ideal time 6 x 100 / 125 + 2 x 100 / 200 - 50 / 125 = 5.4 h of 7.5 run hours:
  0.72, against an effective rate of 750 / 5.4 = 138.9 units/h.

The work order's start and finish are moved into the synthetic shift with SQL after the
ERP's own code created and started it (the ERP stamps them with the current time).
"""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as clock_time
from decimal import Decimal

import psycopg
import pytest
from test_analytics_oee import write

from analytics.oee import LineConfig, OeeConfig, OeeJob, PlannedBreak, Shift, ShiftCalendar
from erp_api import parties, products, work_orders
from erp_api.audit import Actor
from erp_api.idempotency import run_inside
from erp_api.schemas.catalog import BomComponent, ProductCreate, ProductPublic, WarehouseCreate, WarehousePublic
from erp_api.schemas.common import PriceIn
from erp_api.schemas.work_orders import ProductionCreate, WorkOrderPublic

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[tuple[object, ...]]
S = datetime(2031, 2, 3, 6, tzinfo=UTC).timestamp()  # the shift's start, a day of its own
HOUR = 3600.0


def calendar() -> ShiftCalendar:
    shift = Shift(name="A", start=clock_time(6), hours=8, breaks=[PlannedBreak(start=clock_time(10), minutes=30)])
    return ShiftCalendar(shifts=[shift])


async def write_line(db: Conn, site: str, line: str) -> None:
    """Running except in the break; the counter adds 100 per running hour, sampled every minute."""
    states = [(S - 60, 1.0), (S + 4 * HOUR, 0.0), (S + 4.5 * HOUR, 1.0)]
    count, made = [], 0.0
    for minute in range(-1, 481):
        at = S + minute * 60
        if minute > 0 and not 240 < minute <= 270:
            made += 100 / 60
        count.append((at, made))
    await write(db, site, {f"{line}.state": states, f"{line}.count": count})


async def erp_order(db: Conn, site: str, line: str) -> str:
    """The line's product (125 units/h) and an order at 200 units/h that ran 08:00-10:00; returns the SKU."""
    price = PriceIn(amount=Decimal(1), currency="EUR")
    async with db.transaction():
        line_side = parties.create_warehouse_args(WarehouseCreate(code=f"W-{site}"[:32], name="line side"))
        warehouse = await run_inside(db, parties.CREATE_WAREHOUSE, line_side, WarehousePublic)
        blank = await run_inside(db, products.CREATE, products.create_args(ProductCreate(
            sku=f"BLANK-{site}", name="blank", uom="ea", price=price, tax_rate=Decimal(0),
        )), ProductPublic)  # fmt: skip
        part = await run_inside(db, products.CREATE, products.create_args(ProductCreate(
            sku=f"PART-{site}", name="pressed part", uom="ea", price=price, tax_rate=Decimal(0),
            ideal_rate=Decimal(125), bom=[BomComponent(component_id=blank.id, quantity=Decimal(1))],
        )), ProductPublic)  # fmt: skip
        order = await run_inside(db, work_orders.CREATE, work_orders.create_args(ProductionCreate(
            kind="production", product_id=part.id, planned_quantity=Decimal(200), warehouse_id=warehouse.id,
            asset=line, ideal_rate=Decimal(200),
        )), WorkOrderPublic, Actor("planner"))  # fmt: skip
        assert order.ideal_rate == Decimal(200)
        for step in (work_orders.START, work_orders.COMPLETE):
            await run_inside(db, step, (order.id, None), WorkOrderPublic, Actor("planner"))
        await db.execute(
            "UPDATE erp.work_order SET started_at = to_timestamp(%s), finished_at = to_timestamp(%s) WHERE id = %s",
            (S + 2 * HOUR, S + 4 * HOUR, order.id),
        )
    return part.sku


def config(site: str, line: str, sku: str) -> OeeConfig:
    counted = LineConfig(
        name=line, site=site, state_tag=f"{line}.state", count_tag=f"{line}.count", ideal_rate=250, product=sku
    )
    return OeeConfig(lines=[counted], calendar=calendar(), previous_shifts=0)


async def performance(db: Conn, site: str, line: str) -> dict[tuple[str, float], tuple[float, float]]:
    cur = await db.execute(
        """SELECT period, (extract(epoch FROM bucket) - %s) / 3600, performance, ideal_rate
           FROM analytics.oee WHERE site = %s AND line = %s""",
        (S, site, line),
    )
    return {(str(p), float(h)): (float(perf), float(rate)) for p, h, perf, rate in await cur.fetchall()}  # type: ignore[arg-type]


async def test_performance_uses_the_work_order_then_the_product_then_the_config(db: Conn, site: str) -> None:
    line = f"press-{site}"
    await write_line(db, site, line)
    sku = await erp_order(db, site, line)
    await OeeJob(config(site, line, sku), clock=lambda: S + 8 * HOUR + 600).run(db)
    rows = await performance(db, site, line)

    hours = {h: rows[("hour", h)] for p, h in rows if p == "hour"}
    assert sorted(hours) == [0, 1, 2, 3, 4, 5, 6, 7]
    for h in (0, 1, 4, 5, 6, 7):
        assert hours[h] == pytest.approx((0.8, 125)), h  # the product's rate
    for h in (2, 3):
        assert hours[h] == pytest.approx((0.5, 200)), h  # the work order's rate
    perf, rate = rows[("shift", 0)]
    assert perf == pytest.approx(0.72)
    assert rate == pytest.approx(750 / 5.4)


async def test_without_erp_data_the_configured_rate_applies(db: Conn, site: str) -> None:
    line = f"lathe-{site}"
    await write_line(db, site, line)
    await OeeJob(config(site, line, f"NO-SUCH-{site}"), clock=lambda: S + 8 * HOUR + 600).run(db)
    rows = await performance(db, site, line)
    assert rows[("hour", 0)] == pytest.approx((0.4, 250))  # 100 / 250
    assert rows[("shift", 0)] == pytest.approx((0.4, 250))


async def test_rows_name_the_work_order_that_ran_in_the_bucket(db: Conn, site: str) -> None:
    """The order ran 08:00-10:00: its two hours name it, and so does the shift (the last order in
    it); the other hours name none."""
    line = f"drill-{site}"
    await write_line(db, site, line)
    sku = await erp_order(db, site, line)
    cur = await db.execute("SELECT id FROM erp.work_order WHERE asset = %s AND kind = 'production'", (line,))
    ((order,),) = await cur.fetchall()
    await OeeJob(config(site, line, sku), clock=lambda: S + 8 * HOUR + 600).run(db)
    cur = await db.execute(
        """SELECT period, ((extract(epoch FROM bucket) - %s) / 3600)::int, work_order_id
           FROM analytics.oee WHERE site = %s AND line = %s ORDER BY period, bucket""",
        (S, site, line),
    )
    rows = await cur.fetchall()
    assert rows == [("hour", h, order if h in (2, 3) else None) for h in range(8)] + [("shift", 0, order)]
