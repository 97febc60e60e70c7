"""Sales orders: reservation on confirm (atomic, all lines or none), shipping, cancelling,
and 50 concurrent confirmations competing for stock of 10."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from erp_support import customer, ok, order, product, receive, running, stock, warehouse

pytestmark = pytest.mark.integration


async def test_order_totals_are_exact(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w = await customer(client), await warehouse(client)
        p = await product(client, price="0.3333", tax_rate="0.19")
        o = await order(client, c["id"], w["id"], [(p["id"], "3")])
        # 3 x 0.3333 = 0.9999 -> 1.00 net; tax 0.19 -> 0.19; gross 1.19
        assert (o["net"]["amount"], o["tax"]["amount"], o["gross"]["amount"]) == ("1.00", "0.19", "1.19")
        assert o["status"] == "draft"
        assert o["number"] == f"SO-{o['id']:06d}"


async def test_confirm_reserves_all_lines_or_none(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w = await customer(client), await warehouse(client)
        p1, p2 = await product(client), await product(client)
        await receive(client, p1["id"], w["id"], "10")
        await receive(client, p2["id"], w["id"], "2")
        o = await order(client, c["id"], w["id"], [(p1["id"], "4"), (p2["id"], "3")])
        short = await client.post(f"/api/v1/orders/{o['id']}/confirm")
        assert short.status_code == 409
        problem = short.json()
        assert problem["type"].endswith("insufficient-stock")
        assert [e["field"] for e in problem["errors"]] == ["lines[1]"]
        assert p2["sku"] in problem["errors"][0]["reason"]
        assert "available 2.000" in problem["errors"][0]["reason"]
        assert (await stock(client, p1["id"], w["id"]))["reserved"] == "0.000"  # nothing reserved for line 0
        await receive(client, p2["id"], w["id"], "1")
        confirmed = await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        assert confirmed["status"] == "confirmed"
        assert confirmed["confirmed_at"]
        s1 = await stock(client, p1["id"], w["id"])
        assert (s1["on_hand"], s1["reserved"], s1["available"]) == ("10.000", "4.000", "6.000")
        again = await client.post(f"/api/v1/orders/{o['id']}/confirm")
        assert again.status_code == 409
        assert again.json()["type"].endswith("invalid-state")
        shipped = await ok(await client.post(f"/api/v1/orders/{o['id']}/ship"))
        assert shipped["status"] == "shipped"
        s1 = await stock(client, p1["id"], w["id"])
        assert (s1["on_hand"], s1["reserved"]) == ("6.000", "0.000")
        cancel = await client.post(f"/api/v1/orders/{o['id']}/cancel")
        assert cancel.status_code == 409
        kinds = await ok(await client.get("/api/v1/inventory/movements",
                                          params={"reference_type": "order", "reference_id": o["id"]}))  # fmt: skip
        assert [m["kind"] for m in kinds["items"]] == ["reservation", "reservation", "issue", "issue"]


async def test_cancel_releases_the_reservation(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        await receive(client, p["id"], w["id"], "5")
        o = await order(client, c["id"], w["id"], [(p["id"], "5")])
        await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        assert (await stock(client, p["id"], w["id"]))["available"] == "0.000"
        cancelled = await ok(await client.post(f"/api/v1/orders/{o['id']}/cancel"))
        assert cancelled["status"] == "cancelled"
        assert (await stock(client, p["id"], w["id"]))["available"] == "5.000"


async def test_draft_orders_change_with_if_match_and_state_changes_honour_it(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        await receive(client, p["id"], w["id"], "9")
        o = await order(client, c["id"], w["id"], [(p["id"], "1")])
        url = f"/api/v1/orders/{o['id']}"
        changed = await client.patch(url, json={"lines": [{"product_id": p["id"], "quantity": "2"}]},
                                     headers={"If-Match": '"1"'})  # fmt: skip
        assert changed.status_code == 200
        assert changed.json()["lines"][0]["quantity"] == "2.000"
        stale = await client.post(f"{url}/confirm", headers={"If-Match": '"1"'})
        assert stale.status_code == 412
        await ok(await client.post(f"{url}/confirm", headers={"If-Match": '"2"'}))
        late = await client.patch(url, json={"notes": "x"}, headers={"If-Match": '"3"'})
        assert late.status_code == 409
        assert late.json()["type"].endswith("invalid-state")
        bad_product = await client.post("/api/v1/orders", json={"customer_id": c["id"], "warehouse_id": w["id"],
                                                                "lines": [{"product_id": 2**62, "quantity": "1"}]})  # fmt: skip
        assert bad_product.status_code == 422
        assert bad_product.json()["errors"][0]["field"] == "body.lines[0].product_id"
        bad_customer = await client.post("/api/v1/orders", json={"customer_id": 2**62, "warehouse_id": w["id"],
                                                                 "lines": [{"product_id": p["id"], "quantity": "1"}]})  # fmt: skip
        assert bad_customer.status_code == 422
        assert bad_customer.json()["errors"][0]["field"] == "customer_id"


async def test_fifty_concurrent_confirmations_compete_for_ten(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url, pool_max_size=20) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        await receive(client, p["id"], w["id"], "10")
        drafts = [await order(client, c["id"], w["id"], [(p["id"], "1")]) for _ in range(50)]
        answers = await asyncio.gather(*(client.post(f"/api/v1/orders/{o['id']}/confirm") for o in drafts))
        codes = [a.status_code for a in answers]
        assert codes.count(200) == 10, codes
        assert codes.count(409) == 40, codes
        assert all(a.json()["type"].endswith("insufficient-stock") for a in answers if a.status_code == 409)
        level = await stock(client, p["id"], w["id"])
        assert (level["on_hand"], level["reserved"], level["available"]) == ("10.000", "10.000", "0.000")
    cur = await db.execute(
        "SELECT count(*) FILTER (WHERE status = 'confirmed'), count(*) FILTER (WHERE status = 'draft')"
        " FROM erp.sales_order o WHERE EXISTS (SELECT 1 FROM erp.sales_order_line l WHERE l.order_id = o.id AND l.product_id = %s)",
        (p["id"],),
    )
    assert await cur.fetchone() == (10, 40)
    cur = await db.execute("SELECT sum(reserved_delta) FROM erp.stock_movement WHERE product_id = %s", (p["id"],))
    assert (await cur.fetchone())[0] == 10


async def test_confirm_replays_with_the_same_idempotency_key(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        await receive(client, p["id"], w["id"], "3")
        o = await order(client, c["id"], w["id"], [(p["id"], "2")])
        key = {"Idempotency-Key": f"confirm-{o['id']}"}
        first = await client.post(f"/api/v1/orders/{o['id']}/confirm", headers=key)
        replay = await client.post(f"/api/v1/orders/{o['id']}/confirm", headers=key)
        assert first.status_code == replay.status_code == 200
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
        assert (await stock(client, p["id"], w["id"]))["reserved"] == "2.000"
