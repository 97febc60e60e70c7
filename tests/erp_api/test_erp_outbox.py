"""The outbox: events written with each state change reach the real broker, at least once
and in order per aggregate; one relay publishes at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from erp_support import customer, money, ok, product, receive, running, unique, warehouse

from erp_api.outbox import OutboxRelay
from factory import events as domain_events
from factory.mqtt import connect, parse_mqtt_url

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def listening(mqtt_url: str, topic: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Collect JSON messages on ``topic`` into a list while the block runs."""
    received: list[dict[str, Any]] = []
    async with connect(parse_mqtt_url(mqtt_url), unique("listener")) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:  # appended as they arrive: the test reads the list meanwhile
                received.append({"topic": message.topic.value, **json.loads(bytes(message.payload))})  # type: ignore[arg-type]  # noqa: PERF401

        task = asyncio.create_task(collect())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(condition, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_the_order_flow_events_reach_the_broker_in_order(
    database_url: str, mqtt_url: str, db: psycopg.AsyncConnection
) -> None:
    marker = unique("flow")
    source = await domain_events.source(db, "erp")
    async with (
        listening(mqtt_url, "factory/v1/events/#") as received,
        running(database_url, mqtt_url=mqtt_url) as api,
        api.client("admin") as client,
    ):
        c, w, p = await customer(client), await warehouse(client), await product(client, price="5.00")
        await receive(client, p["id"], w["id"], "10")
        body = {
            "customer_id": c["id"],
            "warehouse_id": w["id"],
            "notes": marker,
            "lines": [{"product_id": p["id"], "quantity": "2"}],
        }
        o = await ok(await client.post("/api/v1/orders", json=body), 201)
        await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        inv = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        await ok(await client.post(f"/api/v1/invoices/{inv['id']}/payments", json={"amount": inv["gross"]}), 201)

        def mine() -> list[dict[str, Any]]:
            return [m for m in received if m["source"] == source and (
                    (m["aggregate"] == {"type": "order", "id": o["id"]} and m["data"]["notes"] == marker)
                    or (m["aggregate"] == {"type": "invoice", "id": inv["id"]} and m["data"].get("invoice", m["data"]).get("number") == inv["number"]))]  # fmt: skip

        await until(lambda: any(m["kind"] == "invoice.paid" for m in mine()))
        scraped = (await client.get("/metrics")).text
    events = mine()
    assert "factory_erp_outbox_leading 1.0" in scraped  # the one relay leads
    published = next(line for line in scraped.splitlines() if line.startswith("factory_erp_outbox_published_total "))
    assert float(published.split()[1]) >= len(events)
    order_events = [m for m in events if m["aggregate"]["type"] == "order"]
    assert [m["kind"] for m in order_events] == ["order.created", "order.confirmed", "order.invoiced"]
    assert [m["topic"] for m in order_events] == [f"factory/v1/events/{m['kind']}" for m in order_events]
    assert [m["id"] for m in events] == sorted(m["id"] for m in events)  # in order
    assert {m["source"] for m in received} >= {source}
    assert {m["kind"] for m in events if m["aggregate"]["type"] == "invoice"} == {"invoice.issued", "invoice.paid"}
    assert {m["actor"] for m in events} == {"test-admin"}  # who caused each, with the request's id
    assert all(len(m["request_id"]) == 32 for m in events)
    assert len({m["request_id"] for m in order_events}) == 3
    cur = await db.execute("SELECT count(*) FROM erp.outbox WHERE id = ANY(%s) AND published_at IS NOT NULL",
                           ([m["id"] for m in events],))  # fmt: skip
    assert (await cur.fetchone())[0] == len(events)


async def test_every_outbox_is_its_own_source(pg_admin_url: str, db: psycopg.AsyncConnection) -> None:
    """Ids count per outbox; (source, id) names an event across producers and databases."""
    erp, analytics = await domain_events.source(db, "erp"), await domain_events.source(db, "analytics")
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as other:
        elsewhere = await domain_events.source(other, "erp")
    assert erp.startswith("erp/")
    assert analytics.startswith("analytics/")
    assert len({erp, analytics, elsewhere}) == 3
    assert erp.split("/")[1] == analytics.split("/")[1]  # one database
    assert await domain_events.source(db, "erp") == erp  # stable


async def test_events_written_while_no_relay_runs_are_delivered_later(
    database_url: str, mqtt_url: str, db: psycopg.AsyncConnection
) -> None:
    prefix = f"test/{unique('events')}"
    async with running(database_url) as api, api.client("planner") as client:  # no relay
        w = await warehouse(client)
        ids = [(await ok(await client.post("/api/v1/warehouses", json={"code": unique("WH"), "name": f"n{i}"}), 201))["id"]
               for i in range(5)]  # fmt: skip
        await ok(
            await client.patch(f"/api/v1/warehouses/{w['id']}", json={"name": "renamed"}, headers={"If-Match": '"1"'})
        )
    cur = await db.execute("SELECT count(*) FROM erp.outbox WHERE aggregate_type = 'warehouse' AND aggregate_id = ANY(%s)"
                           " AND published_at IS NULL", ([w["id"], *ids],))  # fmt: skip
    assert (await cur.fetchone())[0] == 7
    # a relay that cannot reach its broker publishes nothing and marks nothing
    dead = OutboxRelay(database_url, "mqtt://127.0.0.1:1", topic_prefix=prefix, idle_s=0.2)
    dead_task = asyncio.create_task(dead.run())
    await asyncio.sleep(0.5)
    dead_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dead_task
    assert dead.published == 0
    async with listening(mqtt_url, f"{prefix}/#") as received:
        relay = OutboxRelay(database_url, mqtt_url, topic_prefix=prefix, idle_s=0.2)
        task = asyncio.create_task(relay.run())
        try:
            await until(
                lambda: (
                    {m["aggregate"]["id"] for m in received if m["aggregate"]["type"] == "warehouse"} >= {w["id"], *ids}
                )
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    ours = [m for m in received if m["aggregate"] == {"type": "warehouse", "id": w["id"]}]
    assert [m["kind"] for m in ours] == ["warehouse.created", "warehouse.updated"]
    assert ours[1]["data"]["name"] == "renamed"
    assert ours[0]["topic"] == f"{prefix}/warehouse.created"
    assert [m["id"] for m in received] == sorted(m["id"] for m in received)


async def test_one_relay_publishes_and_a_standby_takes_over(database_url: str, mqtt_url: str) -> None:
    prefix = f"test/{unique('ha')}"
    first = OutboxRelay(database_url, mqtt_url, topic_prefix=prefix, idle_s=0.2)
    second = OutboxRelay(database_url, mqtt_url, topic_prefix=prefix, idle_s=0.2)
    t1 = asyncio.create_task(first.run())
    await asyncio.wait_for(first.leading.wait(), 10)
    t2 = asyncio.create_task(second.run())
    try:
        await asyncio.sleep(0.6)
        assert not second.leading.is_set()
        t1.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t1
        await asyncio.wait_for(second.leading.wait(), 10)
        async with (
            listening(mqtt_url, f"{prefix}/#") as received,
            running(database_url) as api,
            api.client("planner") as client,
        ):
            w = await warehouse(client)
            await until(lambda: any(m["aggregate"] == {"type": "warehouse", "id": w["id"]} for m in received))
    finally:
        for task in (t1, t2):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_payload_money_is_exact(database_url: str, mqtt_url: str) -> None:
    prefix = f"test/{unique('money')}"
    async with listening(mqtt_url, f"{prefix}/product.created") as received, running(database_url) as api:
        async with api.client("planner") as client:
            p = await ok(await client.post("/api/v1/products", json={"sku": unique("M"), "name": "m", "uom": "kg",
                                                                     "price": money("0.1"), "tax_rate": "0.07"}), 201)  # fmt: skip
        relay = OutboxRelay(database_url, mqtt_url, topic_prefix=prefix, idle_s=0.2)
        task = asyncio.create_task(relay.run())
        try:
            await until(lambda: any(m["aggregate"]["id"] == p["id"] for m in received))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    data = next(m for m in received if m["aggregate"]["id"] == p["id"])["data"]
    assert data["price"] == {"amount": "0.1000", "currency": "EUR"}
    assert data["tax_rate"] == "0.0700"


def _gauge(scraped: str, name: str) -> float:
    return float(next(line for line in scraped.splitlines() if line.startswith(f"{name} ")).split()[1])


async def test_metrics_show_the_outbox_lag_until_a_relay_publishes(
    database_url: str, mqtt_url: str, db: psycopg.AsyncConnection
) -> None:
    prefix = f"test/{unique('lag')}"
    async with running(database_url) as api, api.client("planner") as client:  # no relay
        await ok(await client.post("/api/v1/warehouses", json={"code": unique("WH"), "name": "lagging"}), 201)
        await asyncio.sleep(0.2)
        cur = await db.execute("SELECT count(*) FROM erp.outbox WHERE published_at IS NULL")
        waiting = (await cur.fetchone())[0]
        scraped = (await client.get("/metrics")).text
        assert waiting >= 1
        assert _gauge(scraped, "factory_erp_outbox_unpublished") == waiting
        assert _gauge(scraped, "factory_erp_outbox_oldest_unpublished_seconds") >= 0.2
        relay = OutboxRelay(database_url, mqtt_url, topic_prefix=prefix, idle_s=0.2)
        task = asyncio.create_task(relay.run())
        try:
            await until(lambda: relay.published >= waiting)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        scraped = (await client.get("/metrics")).text
    assert _gauge(scraped, "factory_erp_outbox_unpublished") == 0
    assert _gauge(scraped, "factory_erp_outbox_oldest_unpublished_seconds") == 0
