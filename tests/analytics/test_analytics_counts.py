"""Production counts against the real database and a real ERP server over HTTP: the line's
counter increases become produced quantity on its running work order exactly once.

Each line's counter is sampled every 30 s; the work order started at T0 (moved there with
SQL after the ERP's own code started it, as the ERP stamps the current time). Intervals are
5 minutes, posted once 60 s old. Expected totals are the sums of the increments the test
itself put into the counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from erp_support import Api, ok, product, receive, running, unique, warehouse
from pydantic import SecretStr
from test_analytics_oee import write

from analytics.counts import CountsJob, count_interval, idempotency_key
from analytics.erp import ErpAccess
from analytics.errors import ErpError
from analytics.oee import CountsConfig, LineConfig, OeeConfig, counter_increase
from factory.db import connect

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[tuple[object, ...]]
T0 = datetime(2031, 3, 4, 8, tzinfo=UTC).timestamp()  # the order starts; a day of its own
STEP = 30.0  # seconds between counter samples
INTERVAL = 300
SETTLE = 60.0


@dataclass
class Erp:
    api: Api
    access: ErpAccess
    admin: httpx.AsyncClient


@pytest.fixture
async def erp(database_url: str) -> AsyncIterator[Erp]:
    async with running(database_url) as api, api.client("admin") as admin:
        name = unique("counts").lower()
        key = (await ok(await admin.post("/api/v1/auth/api-keys", json={"name": name, "role": "service"}), 201))["key"]
        yield Erp(api, ErpAccess(api.base_url, SecretStr(key)), admin)


@dataclass(frozen=True)
class Order:
    id: int
    product: int  # what it makes
    component: int  # what that is made of, one per unit
    warehouse: int


async def production_order(db: Conn, erp: Erp, line: str, *, site: str | None = None) -> Order:
    """A running production order on ``line`` (at ``site``, or any), one component per unit, 100000 in
    stock, started at T0."""
    w = await warehouse(erp.admin)
    cane = await product(erp.admin, cost="1.00")
    made = await product(erp.admin, cost="3.00", bom=[{"component_id": cane["id"], "quantity": "1"}])
    await receive(erp.admin, cane["id"], w["id"], "100000")
    wo = await ok(await erp.admin.post("/api/v1/work-orders", json={
        "kind": "production", "product_id": made["id"], "planned_quantity": "5000", "warehouse_id": w["id"],
        "asset": line, "site": site}), 201)  # fmt: skip
    assert wo["site"] == site
    await ok(await erp.admin.post(f"/api/v1/work-orders/{wo['id']}/start"))
    await db.execute("UPDATE erp.work_order SET started_at = to_timestamp(%s) WHERE id = %s", (T0, wo["id"]))
    return Order(int(wo["id"]), int(made["id"]), int(cane["id"]), int(w["id"]))


async def order_state(erp: Erp, order: int) -> dict[str, Any]:
    return await ok(await erp.admin.get(f"/api/v1/work-orders/{order}"))


def config(line: LineConfig, *, lookback_s: float = 3600.0) -> OeeConfig:
    counts = CountsConfig(interval_s=INTERVAL, settle_s=SETTLE, lookback_s=lookback_s)
    return OeeConfig(lines=[line], counts=counts)


def counter(start_value: float, increments: list[float], *, modulus: int | None = None,
            reset_at: int | None = None) -> list[tuple[float, float]]:  # fmt: skip
    """The start value at T0, then one increment per sample every STEP. At sample ``reset_at``
    the counter was reset to 0 and then counted that sample's increment. Increments ``10 k`` to
    ``10 k + 9`` fall into the ``k``-th interval after T0."""
    samples, value = [(T0, start_value)], start_value
    for i, inc in enumerate(increments):
        value = inc if i == reset_at else value + inc
        if modulus:
            value %= modulus
        samples.append((T0 + (i + 1) * STEP, value))
    return samples


async def records(db: Conn, site: str, line: str) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        """SELECT (extract(epoch FROM interval_start) - %s)::int, outcome, count, good, scrap, work_order_id,
                  idempotency_key, reply_status
           FROM analytics.production_count WHERE site = %s AND line = %s ORDER BY interval_start""",
        (T0, site, line),
    )
    return await cur.fetchall()


# 120 samples (one hour from T0); the counter stands still for interval 3 (samples 30-39),
# is reset to 0 in interval 6 (sample 65), and makes uneven amounts otherwise.
INCREMENTS = [0.0 if 30 <= i < 40 else float(1 + i % 4) for i in range(120)]
RESET_AT = 65


async def test_counts_become_production_once_across_resets_repeats_and_crashes(
    db: Conn, site: str, erp: Erp, database_url: str
) -> None:
    line = f"mill-{site}"
    order = (await production_order(db, erp, line)).id
    await write(db, site, {f"{line}.count": counter(5000.0, INCREMENTS, reset_at=RESET_AT)})
    expected = Decimal(sum(INCREMENTS)).quantize(Decimal("0.001"))
    cfg = config(LineConfig(name=line, site=site, state_tag=f"{line}.state", count_tag=f"{line}.count", ideal_rate=1))

    # Half an hour in, the interval ending at T0 + 1800 s is not settled yet (60 s): it waits.
    # The first run looks back an hour from the last settled interval's end, T0 + 1500 s.
    early = await CountsJob(cfg, erp.access, clock=lambda: T0 + 1800 + SETTLE - 1).run(db)
    rows = await records(db, site, line)
    assert [r[0] for r in rows] == list(range(-2100, 1500, INTERVAL))
    assert early.posted == 4  # from T0 on, but for interval 3 (900-1200 s), which stood still

    summary = await CountsJob(cfg, erp.access, clock=lambda: T0 + 3600 + SETTLE).run(db)
    assert summary.posted == 7  # the rest, from where the last run stopped
    rows = await records(db, site, line)
    assert [r[0] for r in rows] == list(range(-2100, 3600, INTERVAL))
    by_start = {r[0]: r for r in rows}
    assert all(by_start[s][1] == "no_order" and by_start[s][5] is None for s in range(-2100, 0, INTERVAL))
    assert by_start[900][1:3] == ("no_increase", Decimal(0))
    posted = [r for r in rows if r[1] == "posted"]
    assert len(posted) == 11
    assert all(r[5] == order and r[7] == 200 for r in posted)
    assert by_start[1800][2] == Decimal(sum(INCREMENTS[60:70]))  # the reset: 0 -> the sample's increment
    assert by_start[1500][6] == idempotency_key(order, site, line, T0 + 1500, T0 + 1800)
    assert sum(r[2] for r in rows) == expected
    assert Decimal((await order_state(erp, order))["produced_quantity"]) == expected

    again = await CountsJob(cfg, erp.access, clock=lambda: T0 + 3600 + SETTLE + 200).run(db)  # the same window
    assert (again.intervals, again.posted) == (0, 0)

    # A crash after the ERP calls, before the local records: they are gone. Two instances
    # then post the same intervals at once, under the same keys: the ERP counts them once.
    await db.execute("DELETE FROM analytics.production_count WHERE site = %s AND line = %s", (site, line))
    async with await connect(database_url, autocommit=True) as other:
        jobs = [CountsJob(cfg, erp.access, clock=lambda: T0 + 3600 + SETTLE) for _ in range(2)]
        await asyncio.gather(jobs[0].run(db), jobs[1].run(other))
    rows = await records(db, site, line)
    assert [r[0] for r in rows] == list(range(0, 3600, INTERVAL))  # an hour back from T0 + 3600 s
    assert sum(r[2] for r in rows if r[1] == "posted") == expected
    state = await order_state(erp, order)
    assert Decimal(state["produced_quantity"]) == expected  # not once more
    assert Decimal(state["scrapped_quantity"]) == 0
    cur = await db.execute("SELECT count(*) FROM erp.journal_entry WHERE reference_type = 'work_order' "
                           "AND reference_id = %s", (order,))  # fmt: skip
    assert await cur.fetchone() == (11,)  # one production entry per posted interval


async def test_a_16_bit_counter_wraps_and_rejects_become_scrap(db: Conn, site: str, erp: Erp) -> None:
    line = f"press-{site}"
    placed = await production_order(db, erp, line)
    order, made = placed.id, placed.product
    made_per_sample = [float(7 + i % 5) for i in range(40)]  # 20 minutes: 4 intervals
    rejects_per_sample = [1.0 if i % 6 == 0 else 0.0 for i in range(40)]
    await write(db, site, {
        f"{line}.count": counter(65400.0, made_per_sample, modulus=65536),  # wraps in the first interval
        f"{line}.rejects": counter(65530.0, rejects_per_sample, modulus=65536),
    })  # fmt: skip
    line_config = LineConfig(name=line, site=site, state_tag=f"{line}.state", count_tag=f"{line}.count",
                             reject_tag=f"{line}.rejects", ideal_rate=1, counter_modulus=65536)  # fmt: skip
    summary = await CountsJob(config(line_config, lookback_s=1200), erp.access,
                              clock=lambda: T0 + 1200 + SETTLE).run(db)  # fmt: skip
    assert summary.posted == 4
    total, rejects = Decimal(sum(made_per_sample)), Decimal(sum(rejects_per_sample))
    rows = await records(db, site, line)
    assert [(r[0], r[1]) for r in rows] == [(s, "posted") for s in range(0, 1200, INTERVAL)]
    assert (sum(r[2] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows)) == (
        total, total - rejects, rejects,
    )  # fmt: skip
    state = await order_state(erp, order)
    assert (Decimal(state["produced_quantity"]), Decimal(state["scrapped_quantity"])) == (total - rejects, rejects)
    assert Decimal(state["progress"]) == ((total - rejects) / 5000).quantize(Decimal("0.0001"))
    assert total < 1000  # the wrap did not count a whole turn of the counter
    cur = await db.execute("SELECT sum(on_hand) FROM erp.stock WHERE product_id = %s", (made,))
    assert await cur.fetchone() == (total - rejects,)  # scrap made nothing to keep


async def test_no_running_order_and_a_closed_one_are_recorded_not_posted(db: Conn, site: str, erp: Erp) -> None:
    line = f"lathe-{site}"
    await write(db, site, {f"{line}.count": counter(10.0, [2.0] * 20)})
    cfg = config(LineConfig(name=line, site=site, state_tag=f"{line}.state", count_tag=f"{line}.count",
                            ideal_rate=1), lookback_s=600)  # fmt: skip
    await CountsJob(cfg, erp.access, clock=lambda: T0 + 300 + SETTLE).run(db)
    order = (await production_order(db, erp, line)).id
    await ok(await erp.admin.post(f"/api/v1/work-orders/{order}/complete"))
    await db.execute("UPDATE erp.work_order SET finished_at = to_timestamp(%s) WHERE id = %s", (T0 + 900, order))
    await CountsJob(cfg, erp.access, clock=lambda: T0 + 600 + SETTLE).run(db)
    rows = await records(db, site, line)
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        (-300, "no_order", Decimal(0), None),  # before T0: nothing ran (and nothing was made)
        (0, "no_order", Decimal(20), None),  # the first run: the order did not exist yet
        (300, "order_closed", Decimal(20), order),  # done by the time the interval settled
    ]
    assert (await order_state(erp, order))["produced_quantity"] == "0.000"


async def test_an_order_at_one_site_takes_only_that_sites_line(db: Conn, site: str, erp: Erp) -> None:
    """Two sites each have a line of the same name; the order names one of them. The other
    site's output is recorded with no order, not counted into it."""
    line, other = f"mill-{site}", f"{site}b"  # the same line name at two sites
    order = (await production_order(db, erp, line, site=site)).id
    await write(db, site, {f"{line}.count": counter(0.0, [3.0] * 20)})
    await write(db, other, {f"{line}.count": counter(0.0, [5.0] * 20)})
    for where in (site, other):  # each site's line, as the job sees it
        cfg = config(LineConfig(name=line, site=where, state_tag=f"{line}.state", count_tag=f"{line}.count",
                                ideal_rate=1), lookback_s=600)  # fmt: skip
        await CountsJob(cfg, erp.access, clock=lambda: T0 + 600 + SETTLE).run(db)
    mine, theirs = await records(db, site, line), await records(db, other, line)
    assert [(r[0], r[1], r[2], r[5]) for r in mine if r[0] >= 0] == [
        (0, "posted", Decimal(30), order), (300, "posted", Decimal(30), order),
    ]  # fmt: skip
    assert [(r[0], r[1], r[2], r[5]) for r in theirs if r[0] >= 0] == [
        (0, "no_order", Decimal(50), None), (300, "no_order", Decimal(50), None),
    ]  # fmt: skip
    assert (await order_state(erp, order))["produced_quantity"] == "60.000"
    listed = await ok(await erp.admin.get("/api/v1/work-orders", params={"site": site, "asset": line}))
    assert [o["id"] for o in listed["items"]] == [order]


def test_counter_arithmetic() -> None:
    """Resets count from zero; with a modulus only a drop from the top band into the bottom one wraps."""
    samples = [(0.0, 100.0), (1.0, 150.0), (2.0, 20.0), (3.0, 30.0)]
    assert counter_increase(samples, 0.0, 3.0) == 50 + 20 + 10
    wrapping = [(0.0, 65500.0), (1.0, 65530.0), (2.0, 14.0), (3.0, 40.0)]
    assert counter_increase(wrapping, 0.0, 3.0, 65536) == 30 + 20 + 26
    assert counter_increase(wrapping, 0.0, 3.0) == 30 + 14 + 26  # without a modulus: a reset
    reset_low = [(0.0, 1000.0), (1.0, 1010.0), (2.0, 5.0)]
    assert counter_increase(reset_low, 0.0, 2.0, 65536) == 10 + 5  # far from the top: a reset, not a wrap
    line = LineConfig(name="l", state_tag="l.s", count_tag="l.c", good_tag="l.g", ideal_rate=1)
    made = count_interval(line, [(0.0, 0.0), (1.0, 10.0)], [(0.0, 0.0), (1.0, 12.0)], 0.0, 1.0)
    assert (made.count, made.good, made.scrap) == (10, 10, 0)  # more good than made (sampling skew): no scrap
    made = count_interval(line, [(0.0, 0.0), (1.0, 10.0)], [(0.0, 0.0), (1.0, 7.5)], 0.0, 1.0)
    assert (made.count, made.good, made.scrap) == (10, Decimal("7.5"), Decimal("2.5"))


async def test_short_component_stock_holds_the_line_until_it_arrives(db: Conn, site: str, erp: Erp) -> None:
    """The ERP refuses an interval for want of components: nothing is recorded from there on, the
    run fails, and once the stock is in the next run posts it and the rest, each once."""
    line = f"kiln-{site}"
    order = await production_order(db, erp, line)
    await write(db, site, {f"{line}.count": counter(0.0, [1.0] * 10 + [100.0] * 10 + [1.0] * 10)})
    cfg = config(LineConfig(name=line, site=site, state_tag=f"{line}.state", count_tag=f"{line}.count",
                            ideal_rate=1), lookback_s=900)  # fmt: skip
    adjust = {"product_id": order.component, "warehouse_id": order.warehouse, "delta": "-99500", "reason": "test"}
    await ok(await erp.admin.post("/api/v1/inventory/adjustments", json=adjust), 201)  # 500 left; 1000 needed at 300 s
    with pytest.raises(ErpError, match="wait for the ERP"):
        await CountsJob(cfg, erp.access, clock=lambda: T0 + 900 + SETTLE).run(db)
    assert [(r[0], r[1]) for r in await records(db, site, line)] == [(0, "posted")]
    await receive(erp.admin, order.component, order.warehouse, "1000")
    summary = await CountsJob(cfg, erp.access, clock=lambda: T0 + 900 + SETTLE).run(db)
    assert summary.posted == 2
    assert [(r[0], r[1], r[2]) for r in await records(db, site, line)] == [
        (0, "posted", Decimal(10)), (300, "posted", Decimal(1000)), (600, "posted", Decimal(10)),
    ]  # fmt: skip
    assert (await order_state(erp, order.id))["produced_quantity"] == "1020.000"
