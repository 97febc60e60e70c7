"""Purchasing over HTTP against a real ERP: suppliers and their items, the purchase cycle
(order, approve, receive, invoice, pay) with the ledger checked after every step, the
three-way match holding invoices that differ, concurrent receipts that never take more than
was ordered, and reorder suggestions converted into draft orders once. The commands are SQL
functions (erp_api/sql/0020_purchasing_commands.sql)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from erp_support import money, ok, product, receive, running, stock, unique, warehouse

pytestmark = pytest.mark.integration

GRNI, AP, INVENTORY, VARIANCE, INPUT_TAX, CASH = "2000", "2200", "1200", "5400", "1300", "1000"


async def supplier(client: httpx.AsyncClient, *, terms: int = 30, currency: str = "EUR") -> dict[str, Any]:
    body = {"code": unique("SUP"), "name": unique("Supplier"), "currency": currency, "payment_terms_days": terms}
    return await ok(await client.post("/api/v1/suppliers", json=body), 201)


async def supplier_item(client: httpx.AsyncClient, supplier_id: int, product_id: int, price: str, *,
                        lead_time: int = 0, moq: str = "0", preferred: bool = False) -> dict[str, Any]:  # fmt: skip
    body = {"supplier_id": supplier_id, "product_id": product_id, "price": money(price), "lead_time_days": lead_time,
            "min_order_quantity": moq, "preferred": preferred}  # fmt: skip
    return await ok(await client.post("/api/v1/supplier-items", json=body), 201)


async def purchase_order(client: httpx.AsyncClient, supplier_id: int, warehouse_id: int,
                         lines: list[tuple[int, str, str]]) -> dict[str, Any]:  # fmt: skip
    body = {"supplier_id": supplier_id, "warehouse_id": warehouse_id,
            "lines": [{"product_id": p, "quantity": q, "unit_price": money(price)} for p, q, price in lines]}  # fmt: skip
    return await ok(await client.post("/api/v1/purchase-orders", json=body), 201)


async def approved_order(client: httpx.AsyncClient, supplier_id: int, warehouse_id: int,
                         lines: list[tuple[int, str, str]]) -> dict[str, Any]:  # fmt: skip
    po = await purchase_order(client, supplier_id, warehouse_id, lines)
    return await ok(await client.post(f"/api/v1/purchase-orders/{po['id']}/approve"))


async def invoice(client: httpx.AsyncClient, po_id: int, lines: list[tuple[int, str, str, str]],
                  status: int = 201) -> httpx.Response:  # fmt: skip
    body = {"purchase_order_id": po_id, "supplier_reference": unique("INV"), "invoice_date": "2025-03-01",
            "lines": [{"line_no": n, "quantity": q, "unit_price": money(price), "tax_rate": rate}
                      for n, q, price, rate in lines]}  # fmt: skip
    response = await client.post("/api/v1/supplier-invoices", json=body)
    assert response.status_code == status, response.text
    return response


async def balances(db: psycopg.AsyncConnection[Any], refs: list[tuple[str, int]] | None = None) -> dict[str, Decimal]:
    """Debit minus credit per account: of the whole journal, or of the entries for ``refs``."""
    query = "SELECT l.account_code, sum(l.debit - l.credit) FROM erp.journal_line l JOIN erp.journal_entry e ON e.id = l.entry_id"
    params: list[Any] = []
    if refs is not None:
        query += " WHERE (e.reference_type, e.reference_id) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))"
        params = [[t for t, _ in refs], [i for _, i in refs]]
    cur = await db.execute(query + " GROUP BY l.account_code", params)
    return dict(await cur.fetchall())


async def trial_balance_is_zero(client: httpx.AsyncClient) -> None:
    trial = await ok(await client.get("/api/v1/ledger/trial-balance"))
    assert trial["balanced"]
    assert trial["total_debit"] == trial["total_credit"]


async def test_the_purchase_cycle_posts_exactly_and_closes_the_order(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    async with running(database_url) as api, api.client("planner") as planner, \
            api.client("clerk") as clerk, api.client("accountant") as accountant:  # fmt: skip
        w = await warehouse(planner)
        bearing, seal = await product(planner, cost="40.00"), await product(planner, cost="3.00")
        s = await supplier(planner, terms=14)
        po = await purchase_order(
            planner, s["id"], w["id"], [(bearing["id"], "10", "42.00"), (seal["id"], "5", "3.00")]
        )
        assert (po["status"], po["number"], po["net"]["amount"]) == ("draft", f"PO-{po['id']:06d}", "435.00")
        url = f"/api/v1/purchase-orders/{po['id']}"
        early = await clerk.post(f"{url}/receive", json={"line_no": 1, "quantity": "1"})
        assert early.status_code == 409
        assert early.json()["type"].endswith("invalid-state")
        changed = await ok(
            await planner.patch(url, json={"notes": "dock 3"}, headers={"If-Match": f'"{po["version"]}"'})
        )
        approved = await ok(await planner.post(f"{url}/approve", headers={"If-Match": f'"{changed["version"]}"'}))
        assert approved["status"] == "approved"
        assert (await planner.patch(url, json={"notes": "late"}, headers={"If-Match": '"3"'})).status_code == 409

        part = await ok(await clerk.post(f"{url}/receive", json={"line_no": 1, "quantity": "6"}))
        assert (part["status"], part["lines"][0]["received_quantity"]) == ("partly_received", "6.000")
        await trial_balance_is_zero(accountant)
        # 6 x 40.00 = 240.00 at cost; 6 x 42.00 = 252.00 at the order's price; 12.00 variance
        assert await balances(db, [("purchase_order", po["id"])]) == {
            INVENTORY: Decimal("240.00"), VARIANCE: Decimal("12.00"), GRNI: Decimal("-252.00")}  # fmt: skip
        await ok(await clerk.post(f"{url}/receive", json={"line_no": 1, "quantity": "4"}))
        done = await ok(await clerk.post(f"{url}/receive", json={"line_no": 2, "quantity": "5"}))
        assert done["status"] == "received"
        assert (await stock(planner, bearing["id"], w["id"]))["on_hand"] == "10.000"
        assert (await stock(planner, seal["id"], w["id"]))["on_hand"] == "5.000"
        assert await balances(db, [("purchase_order", po["id"])]) == {
            INVENTORY: Decimal("415.00"), VARIANCE: Decimal("20.00"), GRNI: Decimal("-435.00")}  # fmt: skip
        await trial_balance_is_zero(accountant)

        # invoiced at 42.50 (within 2 % of 42.00) and 3.00, with 19 % tax
        inv = (await invoice(accountant, po["id"], [(1, "10", "42.50", "0.19"), (2, "5", "3.00", "0.19")])).json()
        assert inv["status"] == "posted"
        assert [line["hold_reason"] for line in inv["lines"]] == [None, None]
        assert (inv["net"]["amount"], inv["tax"]["amount"], inv["gross"]["amount"]) == ("440.00", "83.60", "523.60")
        assert (inv["invoice_date"], inv["due_date"]) == ("2025-03-01", "2025-03-15")
        refs = [("purchase_order", po["id"]), ("supplier_invoice", inv["id"])]
        assert await balances(db, refs) == {INVENTORY: Decimal("415.00"), VARIANCE: Decimal("25.00"),
                                            INPUT_TAX: Decimal("83.60"), GRNI: Decimal("0.00"),
                                            AP: Decimal("-523.60")}  # fmt: skip
        await trial_balance_is_zero(accountant)
        assert (await ok(await planner.get(url)))["status"] == "invoiced"

        inv_url = f"/api/v1/supplier-invoices/{inv['id']}"
        half = await ok(await accountant.post(f"{inv_url}/payments", json={"amount": money("300.00")}), 201)
        assert (half["status"], half["outstanding"]["amount"]) == ("posted", "223.60")
        assert (await ok(await planner.get(url)))["status"] == "invoiced"
        too_much = await accountant.post(f"{inv_url}/payments", json={"amount": money("223.61")})
        assert too_much.status_code == 409
        paid = await ok(await accountant.post(f"{inv_url}/payments", json={"amount": money("223.60")}), 201)
        assert paid["status"] == "paid"
        assert await balances(db, refs) == {INVENTORY: Decimal("415.00"), VARIANCE: Decimal("25.00"),
                                            INPUT_TAX: Decimal("83.60"), GRNI: Decimal("0.00"),
                                            AP: Decimal("0.00"), CASH: Decimal("-523.60")}  # fmt: skip
        await trial_balance_is_zero(accountant)
        closed = await ok(await planner.get(url))
        assert closed["status"] == "closed"
        assert closed["closed_at"]
        assert [line["invoiced_quantity"] for line in closed["lines"]] == ["10.000", "5.000"]
        assert (await planner.post(f"{url}/cancel")).status_code == 409

    cur = await db.execute(
        "SELECT kind FROM erp.outbox WHERE (aggregate_type = 'purchase_order' AND aggregate_id = %s)"
        " OR (aggregate_type = 'supplier_invoice' AND aggregate_id = %s) ORDER BY id",
        (po["id"], inv["id"]),
    )
    assert [k for (k,) in await cur.fetchall()] == [
        "purchase_order.created", "purchase_order.updated", "purchase_order.approved", "purchase_order.received",
        "purchase_order.received", "purchase_order.received", "purchase_order.invoiced", "supplier_invoice.posted",
        "supplier_invoice.payment", "supplier_invoice.paid", "purchase_order.closed",
    ]  # fmt: skip
    cur = await db.execute("SELECT count(*) FROM erp.stock_movement WHERE reference_type = 'purchase_order'"
                           " AND reference_id = %s AND kind = 'receipt'", (po["id"],))  # fmt: skip
    assert (await cur.fetchone()) == (3,)


async def test_the_three_way_match_holds_differences_until_released(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    async with running(database_url) as api, api.client("admin") as admin, \
            api.client("accountant") as accountant:  # fmt: skip
        w = await warehouse(admin)
        part = await product(admin, cost="10.00")
        s = await supplier(admin)
        po = await approved_order(admin, s["id"], w["id"], [(part["id"], "10", "10.00")])
        url = f"/api/v1/purchase-orders/{po['id']}"
        await ok(await admin.post(f"{url}/receive", json={"line_no": 1, "quantity": "8"}))

        more = (await invoice(accountant, po["id"], [(1, "9", "10.00", "0")])).json()
        assert more["status"] == "held"
        assert more["lines"][0]["hold_reason"] == "quantity 9.000 is more than the 8.000 received and not yet invoiced"
        dearer = (await invoice(accountant, po["id"], [(1, "8", "10.21", "0")])).json()
        assert dearer["status"] == "held"
        assert "price 10.2100 differs from the order's 10.0000 by more than 2" in dearer["lines"][0]["hold_reason"]
        both = (await invoice(accountant, po["id"], [(1, "20", "12.00", "0")])).json()
        assert both["lines"][0]["hold_reason"].count(";") == 1  # both reasons
        missing = await invoice(accountant, po["id"], [(2, "1", "10.00", "0")], status=422)
        assert missing.json()["errors"][0]["reason"] == f"no line 2 on purchase order {po['number']}"
        refs = [("supplier_invoice", more["id"]), ("supplier_invoice", dearer["id"]), ("supplier_invoice", both["id"])]
        assert await balances(db, refs) == {}  # nothing posted while held
        unpaid = await accountant.post(f"/api/v1/supplier-invoices/{dearer['id']}/payments",
                                       json={"amount": money("1.00")})  # fmt: skip
        assert unpaid.status_code == 409
        assert unpaid.json()["status_now"] == "held"

        async with api.client("clerk") as clerk:
            refused = await clerk.post(f"/api/v1/supplier-invoices/{dearer['id']}/release", json={"reason": "ok"})
            assert refused.status_code == 403
        released = await ok(await accountant.post(f"/api/v1/supplier-invoices/{dearer['id']}/release",
                                                  json={"reason": "price rise agreed by phone"}))  # fmt: skip
        assert (released["status"], released["released_by"], released["release_reason"]) == (
            "posted", "test-accountant", "price rise agreed by phone")  # fmt: skip
        again = await accountant.post(f"/api/v1/supplier-invoices/{dearer['id']}/release", json={"reason": "twice"})
        assert again.status_code == 409
        # 8 x 10.00 cleared from goods received; 8 x 0.21 = 1.68 to price variance
        assert await balances(db, [("supplier_invoice", dearer["id"])]) == {
            GRNI: Decimal("80.00"), VARIANCE: Decimal("1.68"), AP: Decimal("-81.68")}  # fmt: skip
        assert await balances(db, [("purchase_order", po["id"]), ("supplier_invoice", dearer["id"])]) == {
            INVENTORY: Decimal("80.00"), GRNI: Decimal("0.00"), VARIANCE: Decimal("1.68"), AP: Decimal("-81.68")}  # fmt: skip
        # nothing is left uninvoiced, so the held quantity one clears no goods received: all variance
        released_more = await ok(await accountant.post(f"/api/v1/supplier-invoices/{more['id']}/release",
                                                       json={"reason": "freight billed as a unit"}))  # fmt: skip
        assert released_more["status"] == "posted"
        assert await balances(db, [("supplier_invoice", more["id"])]) == {VARIANCE: Decimal("90.00"),
                                                                          AP: Decimal("-90.00")}  # fmt: skip
        trail = await ok(await accountant.get("/api/v1/audit", params={"entity_type": "supplier_invoice",
                                                                       "entity_id": str(dearer["id"])}))  # fmt: skip
        assert [r["action"] for r in trail["items"]] == ["supplier_invoice.held", "supplier_invoice.released"]
        assert trail["items"][1]["detail"]["release_reason"] == "price rise agreed by phone"
        await trial_balance_is_zero(accountant)
        # an approved order with nothing received and a held invoice against it stays
        ahead = await approved_order(admin, s["id"], w["id"], [(part["id"], "1", "10.00")])
        assert (await invoice(accountant, ahead["id"], [(1, "1", "10.00", "0")])).json()["status"] == "held"
        kept = await admin.post(f"/api/v1/purchase-orders/{ahead['id']}/cancel")
        assert kept.status_code == 409
        assert kept.json()["detail"] == f"cannot cancel {ahead['number']}: supplier invoices were entered against it"


async def test_concurrent_receipts_never_receive_more_than_ordered(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    async with running(database_url, pool_max_size=20) as api, api.client("clerk") as clerk, \
            api.client("planner") as planner:  # fmt: skip
        w = await warehouse(planner)
        part = await product(planner, cost="5.00")
        s = await supplier(planner)
        po = await approved_order(planner, s["id"], w["id"], [(part["id"], "50", "5.00")])
        url = f"/api/v1/purchase-orders/{po['id']}/receive"
        # 20 receipts of 5 against 50 ordered: exactly 10 fit, whichever order they run in
        replies = await asyncio.gather(*(clerk.post(url, json={"line_no": 1, "quantity": "5"}) for _ in range(20)))
        statuses = sorted(r.status_code for r in replies)
        assert statuses == [200] * 10 + [409] * 10, [r.text for r in replies if r.status_code not in (200, 409)]
        for refused in (r for r in replies if r.status_code == 409):
            problem = refused.json()
            assert problem["errors"] == [{"field": "body.quantity", "reason": "only 0.000 left to receive on line 1"}]
            assert problem["left_to_receive"] == "0.000"
        over = await clerk.post(url, json={"line_no": 1, "quantity": "0.001"})
        assert over.status_code == 409
        final = await ok(await planner.get(f"/api/v1/purchase-orders/{po['id']}"))
        assert (final["status"], final["lines"][0]["received_quantity"]) == ("received", "50.000")
        assert (await stock(planner, part["id"], w["id"]))["on_hand"] == "50.000"
    cur = await db.execute("SELECT count(*), sum(on_hand_delta) FROM erp.stock_movement"
                           " WHERE reference_type = 'purchase_order' AND reference_id = %s", (po["id"],))  # fmt: skip
    assert await cur.fetchone() == (10, Decimal(50))
    assert await balances(db, [("purchase_order", po["id"])]) == {INVENTORY: Decimal("250.00"),
                                                                  GRNI: Decimal("-250.00")}  # fmt: skip


async def test_suppliers_items_and_roles(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as planner:
        w = await warehouse(planner)
        part = await product(planner)
        s, other = await supplier(planner), await supplier(planner)
        dup = await planner.post("/api/v1/suppliers", json={"code": s["code"], "name": "x", "currency": "EUR"})
        assert dup.status_code == 409
        item = await supplier_item(planner, s["id"], part["id"], "9.50", lead_time=5, moq="10", preferred=True)
        assert (item["price"], item["sku"], item["min_order_quantity"]) == (money("9.5000"), part["sku"], "10.000")
        second = await planner.post("/api/v1/supplier-items", json={
            "supplier_id": other["id"], "product_id": part["id"], "price": money("9.00"), "preferred": True})  # fmt: skip
        assert second.status_code == 409
        assert second.json()["errors"][0] == {"field": "preferred",
                                              "reason": "another supplier is preferred for this product"}  # fmt: skip
        cheaper = await supplier_item(planner, other["id"], part["id"], "9.00")
        stale = await planner.patch(f"/api/v1/supplier-items/{cheaper['id']}", json={"lead_time_days": 2},
                                    headers={"If-Match": '"7"'})  # fmt: skip
        assert stale.status_code == 412
        # a body that may not be sent is refused as such, whatever If-Match says
        for if_match in ('"1"', '"99999999999999999999"', None):
            headers = {"If-Match": if_match} if if_match else {}
            null = await planner.patch(f"/api/v1/suppliers/{s['id']}", json={"name": None}, headers=headers)
            assert null.status_code == 422, if_match
            assert null.json()["errors"] == [{"field": "body.name", "reason": "may not be null"}]
        listed = await ok(await planner.get("/api/v1/supplier-items", params={"product_id": part["id"]}))
        assert [i["id"] for i in listed["items"]] == [item["id"], cheaper["id"]]
        usd = await supplier(planner, currency="USD")
        foreign = await planner.post("/api/v1/purchase-orders", json={
            "supplier_id": usd["id"], "warehouse_id": w["id"], "lines": [{"product_id": part["id"], "quantity": "1"}]})  # fmt: skip
        assert foreign.status_code == 409
        # a line without a price takes the supplier's
        po = await ok(await planner.post("/api/v1/purchase-orders", json={
            "supplier_id": s["id"], "warehouse_id": w["id"], "lines": [{"product_id": part["id"], "quantity": "2"}]}), 201)  # fmt: skip
        assert po["lines"][0]["unit_price"] == money("9.5000")

        async with api.client("operator") as operator:
            body = {
                "supplier_id": s["id"],
                "warehouse_id": w["id"],
                "lines": [{"product_id": part["id"], "quantity": "1"}],
            }
            assert (await operator.post("/api/v1/purchase-orders", json=body)).status_code == 403
            assert (await operator.get(f"/api/v1/purchase-orders/{po['id']}")).status_code == 200
        async with api.client("clerk") as clerk:
            assert (await clerk.post(f"/api/v1/purchase-orders/{po['id']}/approve")).status_code == 403
            body = {"purchase_order_id": po["id"], "supplier_reference": "X-1", "invoice_date": "2025-03-01",
                    "lines": [{"line_no": 1, "quantity": "1", "unit_price": money("9.50")}]}  # fmt: skip
            assert (await clerk.post("/api/v1/supplier-invoices", json=body)).status_code == 403
        cancelled = await ok(await planner.post(f"/api/v1/purchase-orders/{po['id']}/cancel"))
        assert cancelled["status"] == "cancelled"


async def test_reorder_suggestions_convert_into_draft_orders_once(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    async with running(database_url) as api, api.client("planner") as planner:
        w = await warehouse(planner)
        bolt = await product(planner, reorder_point="20")
        nut = await product(planner, reorder_point="10")
        glue = await product(planner, reorder_point="10")  # no one sells it
        plenty = await product(planner, reorder_point="5")
        for p, quantity in ((bolt, "8"), (nut, "2"), (glue, "1"), (plenty, "10")):
            await receive(planner, p["id"], w["id"], quantity)
        acme, bolts_r_us = await supplier(planner), await supplier(planner)
        await supplier_item(planner, acme["id"], bolt["id"], "2.10", lead_time=7, moq="50", preferred=True)
        await supplier_item(planner, bolts_r_us["id"], bolt["id"], "1.90")  # cheaper, not preferred
        await supplier_item(planner, bolts_r_us["id"], nut["id"], "0.40", lead_time=3)
        await approved_order(planner, bolts_r_us["id"], w["id"], [(nut["id"], "3", "0.40")])
        today = (await (await db.execute("SELECT current_date")).fetchone())[0]

        url = "/api/v1/purchasing/reorder-suggestions"
        suggested = (await planner.get(url, params={"warehouse_id": w["id"]})).json()
        by_product = {s["product_id"]: s for s in suggested}
        assert set(by_product) == {bolt["id"], nut["id"], glue["id"]}
        b = by_product[bolt["id"]]
        assert (b["supplier_id"], b["quantity"], b["unit_price"], b["needed_by"]) == (
            acme["id"], "50.000", money("2.1000"), (today + timedelta(days=7)).isoformat())  # fmt: skip
        assert b["reasons"] == ["available 8.000 + on order 0 is below the reorder point 20.000",
                                "raised from 12.000 to the minimum order quantity 50.000"]  # fmt: skip
        n = by_product[nut["id"]]
        assert (n["supplier_id"], n["on_order"], n["quantity"], n["needed_by"]) == (
            bolts_r_us["id"], "3.000", "5.000", (today + timedelta(days=3)).isoformat())  # fmt: skip
        g = by_product[glue["id"]]
        assert (g["supplier_id"], g["quantity"]) == (None, "9.000")
        assert "no active supplier sells this product" in g["reasons"]

        async with api.client("clerk") as clerk:
            assert (await clerk.post(f"{url}/convert", json={"warehouse_id": w["id"]})).status_code == 403
            assert (await clerk.get(url, params={"warehouse_id": w["id"]})).status_code == 200
        key = {"Idempotency-Key": unique("reorder")}
        first = await ok(await planner.post(f"{url}/convert", json={"warehouse_id": w["id"]}, headers=key))
        replay = await planner.post(f"{url}/convert", json={"warehouse_id": w["id"]}, headers=key)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == first
        made = {po["supplier_id"]: po for po in first["purchase_orders"]}
        assert set(made) == {acme["id"], bolts_r_us["id"]}
        assert all(po["status"] == "draft" and po["warehouse_id"] == w["id"] for po in made.values())
        assert [(ln["product_id"], ln["quantity"], ln["unit_price"]) for ln in made[acme["id"]]["lines"]] == [
            (bolt["id"], "50.000", money("2.1000"))]  # fmt: skip
        assert [(ln["product_id"], ln["quantity"]) for ln in made[bolts_r_us["id"]]["lines"]] == [(nut["id"], "5.000")]
        assert made[acme["id"]]["expected_date"] == (today + timedelta(days=7)).isoformat()

        # the drafts are on order now: converting again (another key) makes nothing more
        again = await ok(await planner.post(f"{url}/convert", json={"warehouse_id": w["id"]}))
        assert again == {"purchase_orders": []}
        left = (await planner.get(url, params={"warehouse_id": w["id"]})).json()
        assert [s["product_id"] for s in left] == [glue["id"]]
        orders = await ok(await planner.get("/api/v1/purchase-orders", params={"warehouse_id": w["id"]}))
        assert len(orders["items"]) == 3  # the approved one and the two drafts


async def test_back_ordered_spare_parts_are_suggested_until_ordered(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    async with running(database_url) as api, api.client("planner") as planner:
        w = await warehouse(planner)
        bearing = await product(planner, cost="40.00")  # no reorder point: only the back-order asks for it
        await receive(planner, bearing["id"], w["id"], "1")
        s = await supplier(planner)
        await supplier_item(planner, s["id"], bearing["id"], "41.00", lead_time=2, preferred=True)
        body = {"kind": "maintenance", "asset": unique("pump"), "reason": "bearing wear", "warehouse_id": w["id"],
                "spare_parts": [{"product_id": bearing["id"], "quantity": "3"}]}  # fmt: skip
        wo = await ok(await planner.post("/api/v1/work-orders", json=body), 201)
        assert wo["spare_parts"][0]["backordered"] == "2.000"
        today = (await (await db.execute("SELECT current_date")).fetchone())[0]

        url = "/api/v1/purchasing/reorder-suggestions"
        [suggestion] = (await planner.get(url, params={"warehouse_id": w["id"]})).json()
        assert (suggestion["product_id"], suggestion["back_ordered"], suggestion["quantity"]) == (
            bearing["id"], "2.000", "2.000")  # fmt: skip
        assert suggestion["reasons"] == [f"2.000 back-ordered by maintenance orders {wo['number']}"]
        assert suggestion["needed_by"] == (today + timedelta(days=2)).isoformat()

        converted = await ok(await planner.post(f"{url}/convert", json={"warehouse_id": w["id"]}))
        [po] = converted["purchase_orders"]
        assert [(ln["product_id"], ln["quantity"]) for ln in po["lines"]] == [(bearing["id"], "2.000")]
        assert (await planner.get(url, params={"warehouse_id": w["id"]})).json() == []  # on order now
        await ok(await planner.post(f"/api/v1/purchase-orders/{po['id']}/approve"))
        await ok(
            await planner.post(f"/api/v1/purchase-orders/{po['id']}/receive", json={"line_no": 1, "quantity": "2"})
        )
        async with asyncio.timeout(20):  # the API's back-order filler reserves the arrival (every 2 s)
            while not (await ok(await planner.get(f"/api/v1/work-orders/{wo['id']}")))["parts_ready"]:
                await asyncio.sleep(0.2)
        assert (await planner.get(url, params={"warehouse_id": w["id"]})).json() == []


async def test_a_conversion_waits_for_the_one_in_progress_and_finds_its_drafts(database_url: str) -> None:
    """Two conversions at once: the second waits on the advisory lock until the first commits,
    then sees its drafts as on order and makes nothing (without the lock it would not wait and
    would order everything again)."""
    async with running(database_url) as api, api.client("planner") as planner:
        w = await warehouse(planner)
        parts = [await product(planner, reorder_point="10") for _ in range(3)]
        s = await supplier(planner)
        for p in parts:
            await receive(planner, p["id"], w["id"], "1")
            await supplier_item(planner, s["id"], p["id"], "1.00", preferred=True)
    convert = "SELECT body FROM erp.convert_reorder_suggestions('test-planner', NULL, NULL, %s, NULL)"
    async with await psycopg.AsyncConnection.connect(database_url) as first, \
            await psycopg.AsyncConnection.connect(database_url) as second:  # fmt: skip
        (made,) = await (await first.execute(convert, (w["id"],))).fetchone()
        assert len(json.loads(made)["purchase_orders"]) == 1  # not committed yet
        waiting = asyncio.create_task(second.execute(convert, (w["id"],)))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await first.commit()
        (again,) = await (await waiting).fetchone()
        await second.commit()
    assert json.loads(again) == {"purchase_orders": []}


async def test_partial_invoices_clear_goods_received_to_the_cent_and_replay_under_their_key(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    async with running(database_url) as api, api.client("admin") as admin:
        w = await warehouse(admin)
        part = await product(admin, cost="0.30")
        s = await supplier(admin)
        po = await approved_order(admin, s["id"], w["id"], [(part["id"], "3", "0.3333")])
        url = f"/api/v1/purchase-orders/{po['id']}/receive"
        key = {"Idempotency-Key": unique("grn")}
        first = await admin.post(url, json={"line_no": 1, "quantity": "1"}, headers=key)
        replay = await admin.post(url, json={"line_no": 1, "quantity": "1"}, headers=key)
        assert (first.status_code, replay.status_code, replay.headers["idempotent-replayed"]) == (200, 200, "true")
        for _ in range(2):
            await ok(await admin.post(url, json={"line_no": 1, "quantity": "1"}))
        # three receipts of 1 x 0.3333: 0.33 each to goods received, 0.99 in all
        assert (await balances(db, [("purchase_order", po["id"])]))[GRNI] == Decimal("-0.99")
        body = {"purchase_order_id": po["id"], "supplier_reference": unique("INV"), "invoice_date": "2025-03-01",
                "lines": [{"line_no": 1, "quantity": "2", "unit_price": money("0.3333")}]}  # fmt: skip
        key = {"Idempotency-Key": unique("si")}
        two = await ok(await admin.post("/api/v1/supplier-invoices", json=body, headers=key), 201)
        again = await admin.post("/api/v1/supplier-invoices", json=body, headers=key)
        assert (again.status_code, again.json()["id"]) == (201, two["id"])
        one = (await invoice(admin, po["id"], [(1, "1", "0.3333", "0")])).json()
        assert (two["status"], one["status"]) == ("posted", "posted")
        refs = [("purchase_order", po["id"]), ("supplier_invoice", two["id"]), ("supplier_invoice", one["id"])]
        totals = await balances(db, refs)
        assert totals[GRNI] == Decimal("0.00")  # 0.67 for two, then the 0.32 left, not round(0.3333) = 0.33
        assert totals[AP] == Decimal("-1.00")  # 0.67 + 0.33 invoiced
        assert (await ok(await admin.get(f"/api/v1/purchase-orders/{po['id']}")))["status"] == "invoiced"
        cur = await db.execute("SELECT count(*) FROM erp.supplier_invoice WHERE purchase_order_id = %s", (po["id"],))
        assert await cur.fetchone() == (2,)


async def test_a_requisition_drafts_only_the_named_parts_and_services_must_name_them(database_url: str) -> None:
    """The maintenance job's service key turns the parts its order waits for into a draft
    order (0022_requisitions.sql); other suggestions stay for the planner."""
    async with running(database_url) as api, api.client("planner") as planner, api.client("service") as service:
        w = await warehouse(planner)
        waited_for, other = await product(planner, reorder_point="5"), await product(planner, reorder_point="5")
        s = await supplier(planner)
        for p in (waited_for, other):
            await receive(planner, p["id"], w["id"], "1")
            await supplier_item(planner, s["id"], p["id"], "2.00", preferred=True)
        url = "/api/v1/purchasing/reorder-suggestions/convert"
        refused = await service.post(url, json={"warehouse_id": w["id"]})
        assert refused.status_code == 403
        assert "product_ids" in refused.json()["detail"]
        body = {"warehouse_id": w["id"], "product_ids": [waited_for["id"]]}
        [po] = (await ok(await service.post(url, json=body, headers={"Idempotency-Key": unique("req")})))[
            "purchase_orders"
        ]
        assert [line["product_id"] for line in po["lines"]] == [waited_for["id"]]
        assert (po["status"], po["created_by"], po["notes"]) == (
            "draft",
            "test-service",
            "requisition: parts waited for",
        )
        rest = await ok(await planner.get("/api/v1/purchasing/reorder-suggestions", params={"warehouse_id": w["id"]}))
        assert [r["product_id"] for r in rest] == [other["id"]]
