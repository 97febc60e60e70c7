"""Back-ordered spare parts (erp_api/sql/0018_backorders.sql, erp_api.backorders): a maintenance
order is opened whatever is on the shelf, reserves what is there, and gets the rest as stock
arrives, most urgent order first, exactly once however many processes fill at the same time;
it cannot be completed before its parts are all reserved, and a cancelled order's back-orders
lapse."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from erp_support import ok, product, receive, running, stock, unique, warehouse

from erp_api.backorders import ACTOR, fill_once

pytestmark = pytest.mark.integration


async def _maintenance(client: httpx.AsyncClient, warehouse_id: int, parts: list[tuple[int, str]],
                       priority: str = "normal") -> dict[str, Any]:  # fmt: skip
    body = {"kind": "maintenance", "asset": unique("pump"), "reason": "bearing wear", "priority": priority,
            "warehouse_id": warehouse_id, "spare_parts": [{"product_id": p, "quantity": q} for p, q in parts]}  # fmt: skip
    return await ok(await client.post("/api/v1/work-orders", json=body, headers={"Idempotency-Key": unique("wo")}), 201)


def _parts(doc: dict[str, Any]) -> dict[int, tuple[str, str]]:
    return {p["product_id"]: (p["reserved"], p["backordered"]) for p in doc["spare_parts"]}


async def _until_ready(client: httpx.AsyncClient, work_order_id: int, timeout_s: float = 20) -> dict[str, Any]:
    """The order once its parts are all reserved by the API's own filler (it polls every 2 s)."""
    async with asyncio.timeout(timeout_s):
        while True:
            doc = await ok(await client.get(f"/api/v1/work-orders/{work_order_id}"))
            if doc["parts_ready"]:
                return doc
            await asyncio.sleep(0.2)


async def test_a_short_part_is_back_ordered_and_reserved_when_it_arrives(db: psycopg.AsyncConnection,
                                                                        database_url: str) -> None:  # fmt: skip
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        bearing, seal = await product(client, cost="40.00"), await product(client, cost="3.00")
        await receive(client, bearing["id"], w["id"], "1")
        await receive(client, seal["id"], w["id"], "10")
        wo = await _maintenance(client, w["id"], [(bearing["id"], "2"), (seal["id"], "4")])
        assert _parts(wo) == {bearing["id"]: ("1.000", "1.000"), seal["id"]: ("4.000", "0.000")}
        assert wo["parts_ready"] is False
        assert (await stock(client, bearing["id"], w["id"]))["available"] == "0.000"
        started = await ok(await client.post(f"/api/v1/work-orders/{wo['id']}/start"))
        early = await client.post(f"/api/v1/work-orders/{wo['id']}/complete")
        assert early.status_code == 409
        assert early.json()["detail"] == (
            f"cannot complete a work order whose spare parts are back-ordered: {bearing['sku']} (1.000 of 2.000 reserved)"
        )
        await receive(client, bearing["id"], w["id"], "3")
        ready = await _until_ready(client, wo["id"])
        assert _parts(ready) == {bearing["id"]: ("2.000", "0.000"), seal["id"]: ("4.000", "0.000")}
        assert ready["version"] == started["version"] + 1
        level = await stock(client, bearing["id"], w["id"])
        assert (level["on_hand"], level["reserved"], level["available"]) == ("4.000", "2.000", "2.000")
        cur = await db.execute(
            "SELECT actor, action FROM erp.audit WHERE entity_type = 'work_order' AND entity_id = %s ORDER BY id",
            (str(wo["id"]),),
        )
        assert (await cur.fetchall())[-1] == (ACTOR, "work_order.parts_reserved")
        done = await ok(await client.post(f"/api/v1/work-orders/{wo['id']}/complete"))
        assert done["status"] == "done"
        level = await stock(client, bearing["id"], w["id"])
        assert (level["on_hand"], level["reserved"]) == ("2.000", "0.000")
        assert await fill_once(db) == []  # nothing waits any more


async def test_the_most_urgent_order_gets_the_part_first(db: psycopg.AsyncConnection, database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        part = await product(client)
        first = await _maintenance(client, w["id"], [(part["id"], "1")], priority="normal")
        urgent = await _maintenance(client, w["id"], [(part["id"], "1")], priority="urgent")
        assert first["parts_ready"] is urgent["parts_ready"] is False
        await receive(client, part["id"], w["id"], "1")
        await _until_ready(client, urgent["id"])
        waiting = await ok(await client.get(f"/api/v1/work-orders/{first['id']}"))
        assert _parts(waiting) == {part["id"]: ("0.000", "1.000")}
        await receive(client, part["id"], w["id"], "1")
        await _until_ready(client, first["id"])


async def test_a_cancelled_order_releases_what_it_holds_and_its_back_order_lapses(db: psycopg.AsyncConnection,
                                                                                  database_url: str) -> None:  # fmt: skip
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        part = await product(client)
        await receive(client, part["id"], w["id"], "2")
        wo = await _maintenance(client, w["id"], [(part["id"], "5")])
        assert _parts(wo) == {part["id"]: ("2.000", "3.000")}
        cancelled = await ok(await client.post(f"/api/v1/work-orders/{wo['id']}/cancel"))
        assert _parts(cancelled) == {part["id"]: ("0.000", "0.000")}
        assert (await stock(client, part["id"], w["id"]))["available"] == "2.000"
        await receive(client, part["id"], w["id"], "3")
        assert await fill_once(db) == []
        assert (await stock(client, part["id"], w["id"]))["reserved"] == "0.000"


async def test_fillers_running_at_once_reserve_each_arrival_once(database_url: str) -> None:
    """Four processes' fillers (and the API's own) at the same moment: every order gets exactly
    what it waits for, in priority order, and the stock's reservations match the orders'."""
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        part = await product(client)
        orders = [await _maintenance(client, w["id"], [(part["id"], "2")], priority=p)
                  for p in ("low", "normal", "high", "urgent", "normal")]  # fmt: skip
        await receive(client, part["id"], w["id"], "7")
        connections = [await psycopg.AsyncConnection.connect(database_url, autocommit=True) for _ in range(4)]
        try:
            rounds = await asyncio.gather(*(fill_once(conn) for conn in connections))
        finally:
            for conn in connections:
                await conn.close()
        ids = [i for filled in rounds for i in filled]
        assert len(ids) == len(set(ids))  # no order filled twice
        docs = [await ok(await client.get(f"/api/v1/work-orders/{o['id']}")) for o in orders]
        reserved = [d["spare_parts"][0]["reserved"] for d in docs]
        # urgent, high, then the two normal ones by age (the younger gets the last unit); low waits
        assert reserved == ["0.000", "2.000", "2.000", "2.000", "1.000"]
        level = await stock(client, part["id"], w["id"])
        assert (level["on_hand"], level["reserved"]) == ("7.000", "7.000")


async def test_orders_opened_at_once_share_the_shelf_and_back_order_the_rest(database_url: str) -> None:
    async with running(database_url, pool_max_size=12) as api, api.client("planner") as client:
        w, part = await warehouse(client), await product(client)
        await receive(client, part["id"], w["id"], "3")
        opened = await asyncio.gather(*(_maintenance(client, w["id"], [(part["id"], "1")]) for _ in range(8)))
        assert sorted(_parts(o)[part["id"]] for o in opened) == [("0.000", "1.000")] * 5 + [("1.000", "0.000")] * 3
        level = await stock(client, part["id"], w["id"])
        assert (level["on_hand"], level["reserved"]) == ("3.000", "3.000")
