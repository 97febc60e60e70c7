"""Inventory: receipts, adjustments, transfers, the movement ledger, and stock that never
goes negative, also under concurrency."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import psycopg
import pytest
from erp_support import ok, product, receive, running, stock, warehouse

pytestmark = pytest.mark.integration


async def test_receipt_adjustment_transfer_and_the_ledger(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, a, b = await product(client, cost="2.50"), await warehouse(client), await warehouse(client)
        got = await receive(client, p["id"], a["id"], "100")
        assert [m["kind"] for m in got["movements"]] == ["receipt"]
        assert got["stock"][0]["on_hand"] == "100.000"
        assert got["stock"][0]["available"] == "100.000"
        adjusted = await client.post("/api/v1/inventory/adjustments",
                                     json={"product_id": p["id"], "warehouse_id": a["id"], "delta": "-4.5", "reason": "count"})  # fmt: skip
        assert (await ok(adjusted, 201))["stock"][0]["on_hand"] == "95.500"
        moved = await client.post("/api/v1/inventory/transfers",
                                  json={"product_id": p["id"], "from_warehouse_id": a["id"], "to_warehouse_id": b["id"], "quantity": "20"})  # fmt: skip
        body = await ok(moved, 201)
        assert [(m["warehouse_id"], m["on_hand_delta"]) for m in body["movements"]] == [
            (a["id"], "-20.000"),
            (b["id"], "20.000"),
        ]
        assert (await stock(client, p["id"], a["id"]))["on_hand"] == "75.500"
        assert (await stock(client, p["id"], b["id"]))["on_hand"] == "20.000"
        ledger = await ok(await client.get("/api/v1/inventory/movements", params={"product_id": p["id"]}))
        assert [m["kind"] for m in ledger["items"]] == ["receipt", "adjustment", "transfer", "transfer"]
        assert sum(Decimal(m["on_hand_delta"]) for m in ledger["items"]) == Decimal("95.5")
        listed = await ok(await client.get("/api/v1/inventory/stock", params={"product_id": p["id"], "sort": "-id"}))
        assert [s["warehouse_id"] for s in listed["items"]] == [b["id"], a["id"]]


async def test_stock_never_goes_negative(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, a, b = await product(client), await warehouse(client), await warehouse(client)
        await receive(client, p["id"], a["id"], "5")
        too_much = await client.post("/api/v1/inventory/adjustments",
                                     json={"product_id": p["id"], "warehouse_id": a["id"], "delta": "-6", "reason": "lost"})  # fmt: skip
        assert too_much.status_code == 409
        problem = too_much.json()
        assert problem["type"].endswith("insufficient-stock")
        assert problem["errors"][0]["field"] == "body.delta"
        assert "available 5.000" in problem["errors"][0]["reason"]
        nothing = await client.post("/api/v1/inventory/transfers",
                                    json={"product_id": p["id"], "from_warehouse_id": b["id"], "to_warehouse_id": a["id"], "quantity": "1"})  # fmt: skip
        assert nothing.status_code == 409
        assert (await stock(client, p["id"], a["id"]))["on_hand"] == "5.000"
        assert (await stock(client, p["id"], b["id"]))["on_hand"] == "0.000"
        zero = await client.post("/api/v1/inventory/adjustments",
                                 json={"product_id": p["id"], "warehouse_id": a["id"], "delta": "0", "reason": "x"})  # fmt: skip
        assert zero.status_code == 422


async def test_the_database_refuses_negative_stock_and_ledger_edits(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, w = await product(client), await warehouse(client)
        await receive(client, p["id"], w["id"], "3")
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute("UPDATE erp.stock SET reserved = 4 WHERE product_id = %s", (p["id"],))
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute("UPDATE erp.stock SET on_hand = -1, reserved = 0 WHERE product_id = %s", (p["id"],))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
        await db.execute("UPDATE erp.stock_movement SET on_hand_delta = 0 WHERE product_id = %s", (p["id"],))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
        await db.execute("DELETE FROM erp.stock_movement WHERE product_id = %s", (p["id"],))


async def test_concurrent_adjustments_never_overdraw(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, w = await product(client), await warehouse(client)
        await receive(client, p["id"], w["id"], "10")
        body = {"product_id": p["id"], "warehouse_id": w["id"], "delta": "-1", "reason": "scrap"}
        answers = await asyncio.gather(*(client.post("/api/v1/inventory/adjustments", json=body) for _ in range(25)))
        codes = sorted(a.status_code for a in answers)
        assert codes.count(201) == 10
        assert codes.count(409) == 15
        assert (await stock(client, p["id"], w["id"]))["on_hand"] == "0.000"
    cur = await db.execute(
        "SELECT s.on_hand = coalesce(sum(m.on_hand_delta), 0) FROM erp.stock s"
        " LEFT JOIN erp.stock_movement m USING (product_id, warehouse_id) WHERE s.product_id = %s GROUP BY s.on_hand",
        (p["id"],),
    )
    assert (await cur.fetchone())[0] is True
