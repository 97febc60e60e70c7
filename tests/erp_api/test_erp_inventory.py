"""Inventory: receipts, adjustments, transfers, the movement ledger, and stock that never
goes negative, also under concurrency. The commands are SQL functions
(erp_api/sql/0010_inventory_commands.sql): their documents match the public models exactly,
replays return the recorded reply, and a refusal leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from erp_support import ok, product, receive, running, same_as_model, stock, warehouse

from erp_api.schemas.inventory import MovementPublic, StockChangePublic, StockPublic

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


async def _count(db: psycopg.AsyncConnection, query: str, *params: object) -> int:
    cur = await db.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_stock_changes_render_as_the_public_models(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, a, b = await product(client, cost="2.3333", reorder_point="7"), await warehouse(client), await warehouse(client)  # fmt: skip
        received = await ok(await client.post("/api/v1/inventory/receipts",
                                              json={"product_id": p["id"], "warehouse_id": a["id"], "quantity": "10.5", "note": "dock 3 ü"}), 201)  # fmt: skip
        adjusted = await ok(await client.post("/api/v1/inventory/adjustments",
                                              json={"product_id": p["id"], "warehouse_id": a["id"], "delta": "-0.25", "reason": "count"}), 201)  # fmt: skip
        moved = await ok(await client.post("/api/v1/inventory/transfers",
                                           json={"product_id": p["id"], "from_warehouse_id": a["id"], "to_warehouse_id": b["id"], "quantity": "4"}), 201)  # fmt: skip
        for change in (received, adjusted, moved):
            same_as_model(StockChangePublic, change)
        listed = await ok(await client.get("/api/v1/inventory/movements", params={"product_id": p["id"]}))
        assert [m for c in (received, adjusted, moved) for m in c["movements"]] == listed["items"]
        for m in listed["items"]:
            same_as_model(MovementPublic, m)
        assert moved["stock"] == [await stock(client, p["id"], a["id"]), await stock(client, p["id"], b["id"])]
        assert (moved["stock"][0]["on_hand"], moved["stock"][1]["on_hand"]) == ("6.250", "4.000")
        assert received["movements"][0]["note"] == "dock 3 ü"
        never = await warehouse(client)
        zeros = await stock(client, p["id"], never["id"])
        same_as_model(StockPublic, zeros)
        assert (zeros["on_hand"], zeros["updated_at"], zeros["below_reorder"]) == ("0.000", None, True)
        assert (await client.get(f"/api/v1/inventory/stock/{p['id']}/999999999")).status_code == 404
    cur = await db.execute(
        "SELECT o.kind, o.payload::text FROM erp.outbox o JOIN erp.stock s ON s.id = o.aggregate_id"
        " WHERE o.aggregate_type = 'stock' AND s.product_id = %s ORDER BY o.id",
        (p["id"],),
    )
    events = [(kind, json.loads(payload)) for kind, payload in await cur.fetchall()]
    # Reorder point 7: the receipt lifts warehouse a above it (10.5), the transfer takes it
    # below (6.25); b starts below (4) and stays there: no crossing.
    crossed_up, crossed_down = {"stock": [received["stock"][0]]}, {"stock": [moved["stock"][0]]}
    assert (crossed_up["stock"][0]["below_reorder"], crossed_down["stock"][0]["below_reorder"]) == (False, True)
    assert events == [
        ("stock.reorder_crossed", crossed_up),
        ("inventory.received", received),
        ("inventory.adjusted", adjusted),
        ("stock.reorder_crossed", crossed_down),
        ("inventory.transferred", moved),
    ]
    cur = await db.execute(
        "SELECT e.kind, e.memo, l.account_code, l.debit, l.credit FROM erp.journal_entry e"
        " JOIN erp.journal_line l ON l.entry_id = e.id JOIN erp.stock s ON s.id = e.reference_id"
        " WHERE e.reference_type = 'stock' AND s.product_id = %s ORDER BY e.id, l.account_code",
        (p["id"],),
    )
    sku = p["sku"]
    # 10.5 x 2.3333 = 24.49965 -> 24.50; 0.25 x 2.3333 = 0.583325 -> 0.58; a transfer posts nothing.
    assert await cur.fetchall() == [
        ("receipt", f"receipt of 10.5 {sku}", "1200", Decimal("24.50"), Decimal("0.00")),
        ("receipt", f"receipt of 10.5 {sku}", "2000", Decimal("0.00"), Decimal("24.50")),
        ("adjustment", f"adjustment -0.25 {sku}: count", "1200", Decimal("0.00"), Decimal("0.58")),
        ("adjustment", f"adjustment -0.25 {sku}: count", "5100", Decimal("0.58"), Decimal("0.00")),
    ]


async def test_each_command_replays_under_its_key(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, a, b = await product(client), await warehouse(client), await warehouse(client)
        commands = [
            ("receipts", {"product_id": p["id"], "warehouse_id": a["id"], "quantity": "5"}),
            ("adjustments", {"product_id": p["id"], "warehouse_id": a["id"], "delta": "2", "reason": "found"}),
            ("transfers", {"product_id": p["id"], "from_warehouse_id": a["id"], "to_warehouse_id": b["id"], "quantity": "3"}),
        ]  # fmt: skip
        for path, body in commands:
            key = {"Idempotency-Key": f"{path}-{p['id']}"}
            first = await client.post(f"/api/v1/inventory/{path}", json=body, headers=key)
            again = await client.post(f"/api/v1/inventory/{path}", json=body, headers=key)
            assert (first.status_code, again.status_code) == (201, 201)
            assert "idempotent-replayed" not in first.headers
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            other = await client.post(f"/api/v1/inventory/{path}", json={**body, "product_id": 999999999}, headers=key)
            assert other.status_code == 409
            assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
        assert [(await stock(client, p["id"], w["id"]))["on_hand"] for w in (a, b)] == ["4.000", "3.000"]
    assert await _count(db, "SELECT count(*) FROM erp.stock_movement WHERE product_id = %s", p["id"]) == 4
    assert await _count(db, "SELECT count(*) FROM erp.journal_entry e JOIN erp.stock s ON s.id = e.reference_id"
                            " WHERE e.reference_type = 'stock' AND s.product_id = %s", p["id"]) == 2  # fmt: skip
    assert await _count(db, "SELECT count(*) FROM erp.outbox o JOIN erp.stock s ON s.id = o.aggregate_id"
                            " WHERE o.aggregate_type = 'stock' AND s.product_id = %s", p["id"]) == 3  # fmt: skip


async def _traces(db: psycopg.AsyncConnection, product_id: int) -> tuple[int, ...]:
    """Stock rows, movements, stock events and stock postings of a product."""
    cur = await db.execute(
        """SELECT (SELECT count(*) FROM erp.stock WHERE product_id = %(p)s),
                  (SELECT count(*) FROM erp.stock_movement WHERE product_id = %(p)s),
                  (SELECT count(*) FROM erp.outbox o JOIN erp.stock s ON s.id = o.aggregate_id
                    WHERE o.aggregate_type = 'stock' AND s.product_id = %(p)s),
                  (SELECT count(*) FROM erp.journal_entry e JOIN erp.stock s ON s.id = e.reference_id
                    WHERE e.reference_type = 'stock' AND s.product_id = %(p)s)""",
        {"p": product_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_a_refusal_leaves_nothing_and_frees_its_key(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        p, a, b = await product(client), await warehouse(client), await warehouse(client)
        await receive(client, p["id"], a["id"], "2")
        before = await _traces(db, p["id"])
        key = {"Idempotency-Key": f"transfer-{p['id']}"}
        body = {"product_id": p["id"], "from_warehouse_id": a["id"], "to_warehouse_id": b["id"], "quantity": "3"}
        short = await client.post("/api/v1/inventory/transfers", json=body, headers=key)
        assert short.status_code == 409
        assert short.json()["errors"] == [
            {"field": "body.quantity", "reason": f"SKU {p['sku']} in warehouse {a['id']}: needs 3, available 2.000"}
        ]
        nowhere = await client.post("/api/v1/inventory/transfers", json={**body, "to_warehouse_id": 999999999, "quantity": "1"})  # fmt: skip
        assert (nowhere.status_code, nowhere.json()["errors"]) == (
            422,
            [{"field": "warehouse_id", "reason": "no such warehouse"}],
        )
        unknown = await client.post("/api/v1/inventory/receipts", json={"product_id": 999999999, "warehouse_id": a["id"], "quantity": "1"})  # fmt: skip
        assert (unknown.status_code, unknown.json()["errors"][0]["field"]) == (422, "product_id")
        assert await _traces(db, p["id"]) == before
        assert await _count(db, "SELECT count(*) FROM erp.idempotency_key WHERE key = %s", key["Idempotency-Key"]) == 0
        await receive(client, p["id"], a["id"], "1")
        retried = await client.post("/api/v1/inventory/transfers", json=body, headers=key)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        assert [s["on_hand"] for s in retried.json()["stock"]] == ["0.000", "3.000"]


async def test_concurrent_receipts_create_one_row_and_opposite_transfers_never_deadlock(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    async with running(database_url, pool_max_size=12) as api, api.client("planner") as client:
        p, a, b = await product(client), await warehouse(client), await warehouse(client)

        async def post(path: str, body: dict[str, Any]) -> httpx.Response:
            return await client.post(f"/api/v1/inventory/{path}", json=body)

        receipts = await asyncio.gather(
            *(post("receipts", {"product_id": p["id"], "warehouse_id": w["id"], "quantity": "1"}) for w in (a, b) * 8)
        )
        assert [r.status_code for r in receipts] == [201] * 16
        one_way = {"product_id": p["id"], "from_warehouse_id": a["id"], "to_warehouse_id": b["id"], "quantity": "1"}
        other_way = {**one_way, "from_warehouse_id": b["id"], "to_warehouse_id": a["id"]}
        transfers = await asyncio.gather(*(post("transfers", body) for body in (one_way, other_way) * 10))
        assert {t.status_code for t in transfers} <= {201, 409}
        moved = sum(
            Decimal(m["on_hand_delta"]) for t in transfers if t.status_code == 201 for m in t.json()["movements"]
        )
        assert moved == 0
        levels = [await stock(client, p["id"], w["id"]) for w in (a, b)]
        assert sum(Decimal(s["on_hand"]) for s in levels) == Decimal(16)
    assert await _count(db, "SELECT count(*) FROM erp.stock WHERE product_id = %s", p["id"]) == 2
    unexplained = (
        "SELECT count(*) FROM erp.stock s WHERE s.product_id = %s AND s.on_hand <>"
        " (SELECT sum(on_hand_delta) FROM erp.stock_movement m"
        "   WHERE m.product_id = s.product_id AND m.warehouse_id = s.warehouse_id)"
    )
    assert await _count(db, unexplained, p["id"]) == 0
