"""The order flow's commands as SQL functions (erp_api/sql/0008_commands.sql) at their edges:
documents that match the public models exactly, short stock naming every short line and
leaving nothing behind, concurrent confirmations and concurrent replays of one key, payment
refusals, and gapless numbers under concurrent invoicing."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import pytest
from erp_support import customer, money, ok, order, product, receive, running, same_as_model, stock, warehouse
from pydantic import BaseModel

from erp_api.schemas.billing import InvoicePublic
from erp_api.schemas.inventory import StockPublic
from erp_api.schemas.orders import OrderPublic

pytestmark = pytest.mark.integration


async def test_documents_render_as_the_public_models(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        c, w = await customer(client), await warehouse(client)
        p1 = await product(client, price="0.3333", tax_rate="0.19")
        p2 = await product(client, price="19.99", tax_rate="0")
        await receive(client, p1["id"], w["id"], "10")
        await receive(client, p2["id"], w["id"], "10")
        o = await order(client, c["id"], w["id"], [(p1["id"], "3"), (p2["id"], "1.5")])
        same_as_model(OrderPublic, o)
        confirmed = await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        same_as_model(OrderPublic, confirmed)
        assert confirmed == await ok(await client.get(f"/api/v1/orders/{o['id']}"))
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        same_as_model(InvoicePublic, invoice)
        # 3 x 0.3333 = 0.9999 -> 1.00 (+0.19 tax); 1.5 x 19.99 = 29.985 -> 29.99 (no tax)
        assert (invoice["net"]["amount"], invoice["tax"]["amount"], invoice["gross"]["amount"]) == (
            "30.99",
            "0.19",
            "31.18",
        )
        paid = await ok(
            await client.post(f"/api/v1/invoices/{invoice['id']}/payments", json={"amount": money("1.18")}), 201
        )
        same_as_model(InvoicePublic, paid)
        assert (paid["status"], paid["outstanding"]["amount"]) == ("partially_paid", "30.00")
        assert paid == await ok(await client.get(f"/api/v1/invoices/{invoice['id']}"))
        page = await ok(await client.get("/api/v1/inventory/stock", params={"warehouse_id": w["id"]}))
        for item in page["items"]:
            same_as_model(StockPublic, item)
        orders_page = await ok(await client.get("/api/v1/orders", params={"customer_id": c["id"]}))
        assert orders_page["items"] == [await ok(await client.get(f"/api/v1/orders/{o['id']}"))]
    # Timestamps are written as pydantic writes them, with and without microseconds.
    for text in ("2026-01-02 03:04:05+00", "2026-01-02 03:04:05.1203+00", "2026-07-01 23:59:59.000001+02"):
        cur = await db.execute("SELECT %s::timestamptz, erp.iso(%s::timestamptz)", (text, text))
        value, rendered = await cur.fetchone()

        class At(BaseModel):
            at: dt.datetime

        assert At(at=value.astimezone(dt.UTC)).model_dump(mode="json")["at"] == rendered


async def test_short_confirmation_names_every_short_line_and_leaves_nothing(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w = await customer(client), await warehouse(client)
        p1, p2, p3 = await product(client), await product(client), await product(client)
        await receive(client, p1["id"], w["id"], "1")
        await receive(client, p2["id"], w["id"], "5")
        o = await order(client, c["id"], w["id"], [(p1["id"], "2"), (p2["id"], "5"), (p3["id"], "1")])
        key = {"Idempotency-Key": f"confirm-{o['id']}"}
        short = await client.post(f"/api/v1/orders/{o['id']}/confirm", headers=key)
        assert short.status_code == 409
        problem = short.json()
        assert problem["type"].endswith("insufficient-stock")
        assert problem["detail"] == "2 moves cannot be covered by stock"
        assert [e["field"] for e in problem["errors"]] == ["lines[0]", "lines[2]"]
        assert "needs 2.000, available 1.000" in problem["errors"][0]["reason"]
        assert problem["errors"][1]["reason"] == f"SKU #{p3['id']} in warehouse {w['id']}: needs 1.000, available 0"
        assert (await stock(client, p2["id"], w["id"]))["reserved"] == "0.000"
        cur = await db.execute(
            "SELECT (SELECT count(*) FROM erp.stock_movement WHERE reference_type = 'order' AND reference_id = %s),"
            " (SELECT count(*) FROM erp.outbox WHERE aggregate_id = %s AND kind = 'order.confirmed'),"
            " (SELECT count(*) FROM erp.idempotency_key WHERE key = %s)",
            (o["id"], o["id"], key["Idempotency-Key"]),
        )
        assert await cur.fetchone() == (0, 0, 0)
        # The refusal recorded nothing, so the same key runs the command again once stock arrives.
        await receive(client, p1["id"], w["id"], "1")
        await receive(client, p3["id"], w["id"], "1")
        confirmed = await client.post(f"/api/v1/orders/{o['id']}/confirm", headers=key)
        assert confirmed.status_code == 200
        assert "idempotent-replayed" not in confirmed.headers
        assert confirmed.json()["status"] == "confirmed"


async def test_concurrent_replays_of_one_key_confirm_once(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url, pool_max_size=12) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        await receive(client, p["id"], w["id"], "4")
        o = await order(client, c["id"], w["id"], [(p["id"], "3")])
        key = {"Idempotency-Key": f"confirm-{o['id']}"}
        answers = await asyncio.gather(
            *(client.post(f"/api/v1/orders/{o['id']}/confirm", headers=key) for _ in range(10))
        )
        assert [a.status_code for a in answers] == [200] * 10
        assert len({a.content for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") != "true" for a in answers) == 1
        assert {a.headers["etag"] for a in answers} == {'"2"'}
        assert (await stock(client, p["id"], w["id"]))["reserved"] == "3.000"
        other = await client.post(f"/api/v1/orders/{o['id']}/cancel", headers=key)
        assert other.status_code == 409
        assert other.json()["type"].endswith("idempotency-key-reused")
        assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    cur = await db.execute(
        "SELECT count(*) FROM erp.outbox WHERE aggregate_id = %s AND kind = 'order.confirmed'", (o["id"],)
    )
    assert (await cur.fetchone())[0] == 1


async def test_payment_refusals_and_replays(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client, price="10.00")
        await receive(client, p["id"], w["id"], "2")
        o = await order(client, c["id"], w["id"], [(p["id"], "2")])
        await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        key = {"Idempotency-Key": f"invoice-{o['id']}"}
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}, headers=key), 201)
        replay = await client.post("/api/v1/invoices", json={"order_id": o["id"]}, headers=key)
        assert (replay.status_code, replay.json(), replay.headers["idempotent-replayed"]) == (201, invoice, "true")
        assert replay.headers["location"] == f"/api/v1/invoices/{invoice['id']}"
        again = await client.post("/api/v1/invoices", json={"order_id": o["id"]})
        assert again.status_code == 409
        assert again.json()["type"].endswith("invalid-state")
        url = f"/api/v1/invoices/{invoice['id']}/payments"
        over = await client.post(url, json={"amount": money("23.81")})
        assert over.status_code == 409
        assert over.json()["errors"] == [{"field": "body.amount.amount", "reason": "exceeds the outstanding 23.80"}]
        foreign = await client.post(url, json={"amount": {"amount": "1.00", "currency": "USD"}})
        assert foreign.status_code == 422
        assert foreign.json()["errors"][0]["field"] == "body.amount.currency"
        stale = await client.post(url, json={"amount": money("1.00")}, headers={"If-Match": '"7"'})
        assert stale.status_code == 412
        missing = await client.post("/api/v1/invoices/999999999/payments", json={"amount": money("1.00")})
        assert missing.status_code == 404
        pay_key = {"Idempotency-Key": f"pay-{invoice['id']}"}
        first = await ok(await client.post(url, json={"amount": money("23.80")}, headers=pay_key), 201)
        second = await client.post(url, json={"amount": money("23.80")}, headers=pay_key)
        assert (second.status_code, second.json()) == (201, first)
        assert first["status"] == "paid"
        tb = await ok(await client.get("/api/v1/ledger/trial-balance"))
        assert tb["balanced"] is True
    cur = await db.execute(
        "SELECT count(*), (SELECT count(*) FROM erp.outbox WHERE aggregate_id = %s AND kind = 'invoice.paid')"
        " FROM erp.payment WHERE invoice_id = %s",
        (invoice["id"], invoice["id"]),
    )
    assert await cur.fetchone() == (1, 1)


async def test_concurrent_invoices_take_consecutive_numbers(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url, pool_max_size=12) as api, api.client("admin") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        await receive(client, p["id"], w["id"], "20")
        drafts = [await order(client, c["id"], w["id"], [(p["id"], "1")]) for _ in range(12)]
        for o in drafts:
            await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        # Two requests per order: one of each pair is refused and must not use up a number.
        answers = await asyncio.gather(
            *(client.post("/api/v1/invoices", json={"order_id": o["id"]}) for o in drafts + drafts)
        )
        assert sorted(a.status_code for a in answers) == [201] * 12 + [409] * 12
        issued = [a.json()["number"] for a in answers if a.status_code == 201]
        numbers = sorted(int(n.rsplit("-", 1)[1]) for n in issued)
        year = int(issued[0].split("-")[1])
    assert numbers == list(range(numbers[0], numbers[0] + 12))
    cur = await db.execute("SELECT max(seq) FROM erp.invoice WHERE kind = 'invoice' AND year = %s", (year,))
    assert (await cur.fetchone())[0] == numbers[-1]
