"""Sales orders: reservation on confirm (atomic, all lines or none), shipping, cancelling,
and 50 concurrent confirmations competing for stock of 10. Changing a draft is an SQL
function (erp_api/sql/0011_sales_commands.sql): its document matches the public model in
the reply and the event, a refusal leaves the order as it was, and of concurrent changes
under one If-Match exactly one wins."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from erp_support import customer, money, ok, order, product, receive, running, same_as_model, stock, warehouse

from erp_api.schemas.orders import OrderPublic

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


async def _state(db: psycopg.AsyncConnection, order_id: int) -> tuple[Any, ...]:
    """An order's version, notes, warehouse, lines and the kinds of its events."""
    cur = await db.execute(
        "SELECT o.version, o.notes, o.warehouse_id,"
        " (SELECT array_agg(ARRAY[l.product_id, l.quantity, l.unit_price, l.tax_rate] ORDER BY l.line_no)"
        "    FROM erp.sales_order_line l WHERE l.order_id = o.id),"
        " (SELECT array_agg(e.kind ORDER BY e.id) FROM erp.outbox e"
        "   WHERE e.aggregate_type = 'order' AND e.aggregate_id = o.id)"
        " FROM erp.sales_order o WHERE o.id = %s",
        (order_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_a_changed_draft_renders_as_the_public_model(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        c, w1, w2 = await customer(client), await warehouse(client), await warehouse(client)
        p1 = await product(client, price="0.3333", tax_rate="0.19")
        p2 = await product(client, price="19.99", tax_rate="0")
        o = await order(client, c["id"], w1["id"], [(p1["id"], "1")])
        url = f"/api/v1/orders/{o['id']}"
        lines = [{"product_id": p2["id"], "quantity": "1.5"},
                 {"product_id": p1["id"], "quantity": "3", "unit_price": money("0.4444")}]  # fmt: skip
        answer = await client.patch(url, json={"warehouse_id": w2["id"], "notes": "gate 3", "lines": lines},
                                    headers={"If-Match": '"1"'})  # fmt: skip
        changed = await ok(answer)
        same_as_model(OrderPublic, changed)
        assert answer.headers["etag"] == '"2"'
        assert (changed["warehouse_id"], changed["notes"], changed["version"]) == (w2["id"], "gate 3", 2)
        # Line 1 at the product's price, line 2 at its own: 29.985 -> 29.99 (no tax); 1.3332 -> 1.33 + 0.25.
        assert [(ln["line_no"], ln["sku"], ln["unit_price"]["amount"], ln["net"]["amount"], ln["tax"]["amount"])
                for ln in changed["lines"]] == [(1, p2["sku"], "19.9900", "29.99", "0.00"),
                                                (2, p1["sku"], "0.4444", "1.33", "0.25")]  # fmt: skip
        assert (changed["net"]["amount"], changed["tax"]["amount"], changed["gross"]["amount"]) == (
            "31.32",
            "0.25",
            "31.57",
        )
        cleared = await ok(await client.patch(url, json={"notes": None}, headers={"If-Match": '"2"'}))
        same_as_model(OrderPublic, cleared)
        assert (cleared["notes"], cleared["lines"], cleared["version"]) == (None, changed["lines"], 3)
        assert cleared == await ok(await client.get(url))
    cur = await db.execute(
        "SELECT kind, payload FROM erp.outbox WHERE aggregate_type = 'order' AND aggregate_id = %s ORDER BY id",
        (o["id"],),
    )
    assert await cur.fetchall() == [("order.created", o), ("order.updated", changed), ("order.updated", cleared)]


async def test_a_refused_change_leaves_the_draft_as_it_was(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        retired = await product(client)
        await ok(await client.patch(f"/api/v1/products/{retired['id']}", json={"active": False},
                                    headers={"If-Match": '"1"'}))  # fmt: skip
        o = await order(client, c["id"], w["id"], [(p["id"], "2")])
        url, fresh = f"/api/v1/orders/{o['id']}", {"If-Match": '"1"'}
        before = await _state(db, o["id"])
        usd = {"amount": "1.00", "currency": "USD"}
        cases = [
            # The version is checked before the lines: a stale change is a 412 whatever it carries.
            ({"lines": [{"product_id": p["id"], "quantity": "1", "unit_price": usd}]}, {"If-Match": '"9"'},
             412, None),
            # Every price's currency before any product, then the first product that is not active.
            ({"lines": [{"product_id": 2**62, "quantity": "1"},
                        {"product_id": p["id"], "quantity": "1", "unit_price": usd}]}, fresh,
             422, ("body.lines[1].unit_price.currency", "this ledger keeps EUR; got USD")),
            ({"notes": "x", "lines": [{"product_id": p["id"], "quantity": "1"},
                                      {"product_id": retired["id"], "quantity": "1"}]}, fresh,
             422, ("body.lines[1].product_id", "no such active product")),
            ({"notes": "x", "warehouse_id": 2**62}, fresh, 422, ("warehouse_id", "no such warehouse")),
            ({"warehouse_id": None}, fresh, 422, ("body.warehouse_id", "may not be null")),
            ({"notes": "x"}, {"If-Match": '"99999999999"'}, 412, None),
        ]  # fmt: skip
        for body, headers, status, error in cases:
            answer = await client.patch(url, json=body, headers=headers)
            assert answer.status_code == status, (body, answer.text)
            if error is not None:
                assert [tuple(e.values()) for e in answer.json()["errors"]] == [error]
        missing = await client.patch("/api/v1/orders/999999999", json={"notes": "x"}, headers=fresh)
        assert (missing.status_code, missing.json()["detail"]) == (404, "no order with id 999999999")
        assert await _state(db, o["id"]) == before
        await ok(await client.post(f"{url}/cancel"))
        late = await client.patch(url, json={"notes": "x"}, headers={"If-Match": '"2"'})
        assert (late.status_code, late.json()["detail"], late.json()["status_now"]) == (
            409,
            "cannot change an order that is cancelled",
            "cancelled",
        )


async def test_concurrent_changes_under_one_if_match_apply_once(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url, pool_max_size=10) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        o = await order(client, c["id"], w["id"], [(p["id"], "1")])
        answers = await asyncio.gather(*(
            client.patch(f"/api/v1/orders/{o['id']}", headers={"If-Match": '"1"'},
                         json={"notes": f"try {i}", "lines": [{"product_id": p["id"], "quantity": str(i + 1)}]})
            for i in range(8)
        ))  # fmt: skip
        assert sorted(a.status_code for a in answers) == [200] + [412] * 7
        (won,) = [a.json() for a in answers if a.status_code == 200]
        # A retry of the same change is refused too: If-Match is what makes a PATCH safe to resend.
        again = await client.patch(f"/api/v1/orders/{o['id']}", json={"notes": won["notes"]},
                                   headers={"If-Match": '"1"'})  # fmt: skip
        assert again.status_code == 412
    version, notes, _, lines, kinds = await _state(db, o["id"])
    assert (version, notes, kinds) == (2, won["notes"], ["order.created", "order.updated"])
    assert [str(line[1]) for line in lines] == [won["lines"][0]["quantity"]]


async def test_the_change_function_replays_under_a_key(database_url: str, db: psycopg.AsyncConnection) -> None:
    """The route sends no key (If-Match guards a PATCH), but the function honours one like every command."""
    async with running(database_url) as api, api.client("planner") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client)
        o = await order(client, c["id"], w["id"], [(p["id"], "1")])
    call = "SELECT * FROM erp.update_order('test', %s, %s, %s, 1, NULL, %s, true, NULL, NULL, NULL, NULL)"
    key = f"change-{o['id']}"
    first = await (await db.execute(call, (key, b"request 1", o["id"], "first"))).fetchone()
    replay = await (await db.execute(call, (key, b"request 1", o["id"], "first"))).fetchone()
    assert first is not None
    assert replay is not None
    # (status, body, headers, replayed): the recorded reply, marked as a replay.
    assert (*first[:3], True) == replay
    assert first[3] is False
    assert (await _state(db, o["id"]))[:2] == (2, "first")
    with pytest.raises(psycopg.errors.RaiseException, match="already used for a different request"):
        await db.execute(call, (key, b"request 2", o["id"], "other"))
    assert (await _state(db, o["id"]))[:2] == (2, "first")


async def test_a_reservation_across_the_reorder_point_is_an_event(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """Reorder point 5, 8 received: confirming 4 leaves 4 available (below: an event),
    cancelling gives them back (above: an event), confirming again takes it below (an event),
    shipping then moves on hand and reserved together (no crossing). Each event carries the
    level as GET /inventory/stock showed it then."""
    async with running(database_url) as api, api.client("planner") as client:
        c, w = await customer(client), await warehouse(client)
        p = await product(client, reorder_point="5")
        await receive(client, p["id"], w["id"], "8")
        first, second = [await order(client, c["id"], w["id"], [(p["id"], "4")]) for _ in range(2)]
        seen = []
        for number, action in ((first["id"], "confirm"), (first["id"], "cancel"), (second["id"], "confirm")):
            await ok(await client.post(f"/api/v1/orders/{number}/{action}"))
            seen.append(await stock(client, p["id"], w["id"]))
        await ok(await client.post(f"/api/v1/orders/{second['id']}/ship"))
        shipped = await stock(client, p["id"], w["id"])
    cur = await db.execute(
        "SELECT o.payload -> 'stock' -> 0 FROM erp.outbox o JOIN erp.stock s ON s.id = o.aggregate_id"
        " WHERE o.kind = 'stock.reorder_crossed' AND s.product_id = %s ORDER BY o.id",
        (p["id"],),
    )
    levels = [row[0] for row in await cur.fetchall()]
    assert [(lv["available"], lv["below_reorder"]) for lv in levels] == [
        ("8.000", False),  # the receipt: from nothing to above
        ("4.000", True),
        ("8.000", False),
        ("4.000", True),
    ]
    assert levels[1:] == seen
    assert (shipped["on_hand"], shipped["available"], shipped["below_reorder"]) == ("4.000", "4.000", True)
