"""Work orders: production consumes the bill of materials; maintenance reserves spare parts
(all or none here; back-orders in test_erp_backorders.py),
and a service creates it with an API key, idempotently. The commands are SQL functions
(erp_api/sql/0012_work_order_commands.sql): their documents match the public model on every
path and in every event, each replays under its key, a refusal leaves nothing behind, and
concurrent commands reserve and consume parts once."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from erp_support import ok, product, receive, running, same_as_model, stock, unique, warehouse

from erp_api.schemas.work_orders import WorkOrderPublic

pytestmark = pytest.mark.integration


async def test_production_consumes_the_bom_and_makes_finished_goods(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        cane, lime = await product(client, cost="2.00"), await product(client, cost="0.50")
        sugar = await product(client, cost="9.00", bom=[{"component_id": cane["id"], "quantity": "4"},
                                                       {"component_id": lime["id"], "quantity": "0.25"}])  # fmt: skip
        await receive(client, cane["id"], w["id"], "100")
        await receive(client, lime["id"], w["id"], "5")
        wo = await ok(await client.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": sugar["id"], "planned_quantity": "30", "warehouse_id": w["id"],
            "asset": "centrifugal1"}), 201)  # fmt: skip
        assert (wo["status"], wo["number"], wo["produced_quantity"]) == ("open", f"WO-{wo['id']:06d}", "0.000")
        url = f"/api/v1/work-orders/{wo['id']}"
        early = await client.post(f"{url}/produce", json={"quantity": "1"})
        assert early.status_code == 409
        assert early.json()["type"].endswith("invalid-state")
        await ok(await client.post(f"{url}/start"))
        made = await ok(await client.post(f"{url}/produce", json={"quantity": "10"}))
        assert made["produced_quantity"] == "10.000"
        assert made["planned_quantity"] == "30.000"
        assert (await stock(client, cane["id"], w["id"]))["on_hand"] == "60.000"
        assert (await stock(client, lime["id"], w["id"]))["on_hand"] == "2.500"
        assert (await stock(client, sugar["id"], w["id"]))["on_hand"] == "10.000"
        short = await client.post(f"{url}/produce", json={"quantity": "11"})  # lime: 2.75 needed, 2.5 there
        assert short.status_code == 409
        assert [e["field"] for e in short.json()["errors"]] == ["bom[1]"]
        assert (await stock(client, cane["id"], w["id"]))["on_hand"] == "60.000"  # all or nothing
        done = await ok(await client.post(f"{url}/complete"))
        assert done["status"] == "done"
        assert done["finished_at"]
        async with api.client("accountant") as accountant:
            entries = await ok(await accountant.get("/api/v1/ledger/entries",
                                                    params={"reference_type": "work_order", "reference_id": wo["id"]}))  # fmt: skip
        # made 10 x 9.00 = 90.00; consumed 40 x 2.00 + 2.5 x 0.50 = 81.25; variance -8.75 credited
        lines = {(x["account"], x["debit"]["amount"], x["credit"]["amount"]) for x in entries["items"][0]["lines"]}
        assert lines == {("1200", "8.75", "0.00"), ("5200", "0.00", "8.75")}
        no_bom = await client.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": cane["id"], "planned_quantity": "1", "warehouse_id": w["id"], "asset": "x"})  # fmt: skip
        assert no_bom.status_code == 422
        assert no_bom.json()["errors"][0]["field"] == "body.product_id"


async def test_a_service_opens_maintenance_orders_idempotently(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as admin:
        w = await warehouse(admin)
        bearing, seal = await product(admin, cost="40.00"), await product(admin, cost="3.00")
        await receive(admin, bearing["id"], w["id"], "4")
        await receive(admin, seal["id"], w["id"], "10")
        key = (
            await ok(
                await admin.post("/api/v1/auth/api-keys", json={"name": unique("scorer").lower(), "role": "service"}),
                201,
            )
        )["key"]
        async with api.client(None, **{"X-API-Key": key}) as service:
            body = {"kind": "maintenance", "asset": "mill1", "reason": "failure probability 0.83", "priority": "high",
                    "warehouse_id": w["id"], "spare_parts": [{"product_id": bearing["id"], "quantity": "2"},
                                                             {"product_id": seal["id"], "quantity": "4"}]}  # fmt: skip
            headers = {"Idempotency-Key": f"maint-mill1-{unique('day')}"}
            first = await service.post("/api/v1/work-orders", json=body, headers=headers)
            again = await service.post("/api/v1/work-orders", json=body, headers=headers)
            assert first.status_code == again.status_code == 201, first.text
            assert again.json()["id"] == first.json()["id"]
            assert again.headers["idempotent-replayed"] == "true"
            wo = first.json()
            assert wo["created_by"].startswith("key:")
            assert [p["quantity"] for p in wo["spare_parts"]] == [
                "2.000",
                "4.000",
            ]
            production = await service.post("/api/v1/work-orders", json={
                "kind": "production", "product_id": bearing["id"], "planned_quantity": "1", "warehouse_id": w["id"], "asset": "x"})  # fmt: skip
            assert production.status_code == 403
            assert (await service.post(f"/api/v1/work-orders/{wo['id']}/start")).status_code == 403
            assert (await service.get(f"/api/v1/work-orders/{wo['id']}")).status_code == 200
        s = await stock(admin, bearing["id"], w["id"])
        assert (s["on_hand"], s["reserved"]) == ("4.000", "2.000")  # reserved once, not twice
        url = f"/api/v1/work-orders/{wo['id']}"
        await ok(await admin.post(f"{url}/start"))
        await ok(await admin.post(f"{url}/complete"))
        s = await stock(admin, bearing["id"], w["id"])
        assert (s["on_hand"], s["reserved"]) == ("2.000", "0.000")
        entries = await ok(
            await admin.get("/api/v1/ledger/entries", params={"reference_type": "work_order", "reference_id": wo["id"]})
        )
        debit = {x["account"]: Decimal(x["debit"]["amount"]) for x in entries["items"][0]["lines"]}
        assert debit["5300"] == Decimal("92.00")  # 2 x 40 + 4 x 3


async def test_maintenance_parts_are_reserved_all_or_none_and_released_on_cancel(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        part = await product(client)
        await receive(client, part["id"], w["id"], "1")
        body = {"kind": "maintenance", "asset": "boiler1", "reason": "vibration", "warehouse_id": w["id"],
                "spare_parts": [{"product_id": part["id"], "quantity": "2"}], "backorder": False}  # fmt: skip
        short = await client.post("/api/v1/work-orders", json=body)
        assert short.status_code == 409
        assert short.json()["errors"][0]["field"] == "body.spare_parts[0]"
        body["spare_parts"][0]["quantity"] = "1"
        wo = await ok(await client.post("/api/v1/work-orders", json=body), 201)
        assert (await stock(client, part["id"], w["id"]))["available"] == "0.000"
        patched = await client.patch(
            f"/api/v1/work-orders/{wo['id']}", json={"priority": "urgent"}, headers={"If-Match": '"1"'}
        )
        assert patched.status_code == 200
        assert patched.json()["priority"] == "urgent"
        cancelled = await ok(await client.post(f"/api/v1/work-orders/{wo['id']}/cancel"))
        assert cancelled["status"] == "cancelled"
        assert (await stock(client, part["id"], w["id"]))["available"] == "1.000"
        listed = await ok(
            await client.get("/api/v1/work-orders", params={"asset": "boiler1", "status": "cancelled", "sort": "-id"})
        )
        assert listed["items"][0]["id"] == wo["id"]


async def _events(db: psycopg.AsyncConnection, work_order_id: int) -> list[tuple[str, Any]]:
    cur = await db.execute(
        "SELECT kind, payload FROM erp.outbox WHERE aggregate_type = 'work_order' AND aggregate_id = %s ORDER BY id",
        (work_order_id,),
    )
    return list(await cur.fetchall())


async def _effects(db: psycopg.AsyncConnection, work_order_id: int) -> tuple[int, ...]:
    """Movements, journal entries and events of one work order, and its version."""
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM erp.stock_movement WHERE reference_type = 'work_order' AND reference_id = %s),"
        " (SELECT count(*) FROM erp.journal_entry WHERE reference_type = 'work_order' AND reference_id = %s),"
        " (SELECT count(*) FROM erp.outbox WHERE aggregate_type = 'work_order' AND aggregate_id = %s),"
        " (SELECT version FROM erp.work_order WHERE id = %s)",
        (work_order_id,) * 4,
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_documents_render_as_the_public_model_on_every_path(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        blank = await product(client, cost="1.2345")
        part = await product(client, cost="0.10", bom=[{"component_id": blank["id"], "quantity": "0.5"}])
        await receive(client, blank["id"], w["id"], "100")
        wo = await ok(await client.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": part["id"], "planned_quantity": "12.5", "warehouse_id": w["id"],
            "asset": "press1", "ideal_rate": "240.5", "notes": "grade B"}), 201)  # fmt: skip
        url = f"/api/v1/work-orders/{wo['id']}"
        replies = [wo]
        patched = await client.patch(url, json={"notes": None, "priority": "high"}, headers={"If-Match": '"1"'})
        replies.append(await ok(patched))
        assert (patched.headers["etag"], replies[-1]["notes"], replies[-1]["priority"]) == ('"2"', None, "high")
        replies.append(await ok(await client.post(f"{url}/start")))
        replies.append(await ok(await client.post(f"{url}/produce", json={"quantity": "2.25"})))
        replies.append(await ok(await client.post(f"{url}/complete")))
        assert (replies[-1]["produced_quantity"], replies[-1]["ideal_rate"]) == ("2.250", "240.500")
        for doc in replies:
            same_as_model(WorkOrderPublic, doc)
        got = await client.get(url)
        assert (await ok(got), got.headers["etag"]) == (replies[-1], f'"{replies[-1]["version"]}"')
        # Maintenance: parts listed in product order whatever the request's order.
        p1, p2 = await product(client), await product(client)
        await receive(client, p1["id"], w["id"], "3")
        await receive(client, p2["id"], w["id"], "3")
        created = await client.post("/api/v1/work-orders", json={
            "kind": "maintenance", "asset": unique("mill"), "reason": "bearing", "warehouse_id": w["id"],
            "spare_parts": [{"product_id": p2["id"], "quantity": "1.5"}, {"product_id": p1["id"], "quantity": "2"}]})  # fmt: skip
        m = await ok(created, 201)
        assert created.headers["location"] == f"/api/v1/work-orders/{m['id']}"
        assert [(p["product_id"], p["sku"], p["quantity"]) for p in m["spare_parts"]] == [
            (p1["id"], p1["sku"], "2.000"),
            (p2["id"], p2["sku"], "1.500"),
        ]
        cancelled = await ok(await client.post(f"/api/v1/work-orders/{m['id']}/cancel"))
        for doc in (m, cancelled):
            same_as_model(WorkOrderPublic, doc)
        page = await ok(await client.get("/api/v1/work-orders", params={"asset": m["asset"]}))
        assert page == {"items": [cancelled], "next_cursor": None, "limit": 50}
    # Every event carries the document its command replied with.
    kinds = ["created", "updated", "started", "produced", "completed"]
    assert await _events(db, wo["id"]) == [(f"work_order.{k}", d) for k, d in zip(kinds, replies, strict=True)]
    assert await _events(db, m["id"]) == [("work_order.created", m), ("work_order.cancelled", cancelled)]
    cur = await db.execute(
        "SELECT kind, memo FROM erp.journal_entry WHERE reference_type = 'work_order' AND reference_id = %s",
        (wo["id"],),
    )
    assert await cur.fetchall() == [("production", f"{wo['number']}: 2.25 produced")]


async def test_every_command_replays_its_reply_under_its_key(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        blank, spare = await product(client, cost="2.00"), await product(client, cost="5.00")
        part = await product(client, bom=[{"component_id": blank["id"], "quantity": "2"}])
        await receive(client, blank["id"], w["id"], "10")
        await receive(client, spare["id"], w["id"], "10")

        async def twice(path: str, body: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
            headers = {"Idempotency-Key": unique("wo")}
            first = await client.post(path, json=body, headers=headers)
            again = await client.post(path, json=body, headers=headers)
            assert (first.status_code, again.status_code) == (status, status), first.text
            assert "idempotent-replayed" not in first.headers
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            for name in ("etag", "location"):
                assert again.headers.get(name) == first.headers.get(name)
            other = await client.post(path + "?other", json=body, headers=headers)
            assert other.status_code == 409
            assert other.json()["type"].endswith("idempotency-key-reused")
            return await ok(first, status)

        production = {"kind": "production", "product_id": part["id"], "planned_quantity": "5",
                      "warehouse_id": w["id"], "asset": "press2"}  # fmt: skip
        wo = await twice("/api/v1/work-orders", production, 201)
        url = f"/api/v1/work-orders/{wo['id']}"
        await twice(f"{url}/start")
        await twice(f"{url}/produce", {"quantity": "3"})
        await twice(f"{url}/complete")
        assert (await stock(client, blank["id"], w["id"]))["on_hand"] == "4.000"  # 10 - 3 x 2, once
        assert (await stock(client, part["id"], w["id"]))["on_hand"] == "3.000"
        maintenance = {"kind": "maintenance", "asset": "mill2", "reason": "seal", "warehouse_id": w["id"],
                       "spare_parts": [{"product_id": spare["id"], "quantity": "4"}]}  # fmt: skip
        m = await twice("/api/v1/work-orders", maintenance, 201)
        assert (await stock(client, spare["id"], w["id"]))["reserved"] == "4.000"
        await twice(f"/api/v1/work-orders/{m['id']}/cancel")
        assert (await stock(client, spare["id"], w["id"]))["reserved"] == "0.000"
    # Each effect once: production moved one component and the finished good and posted one entry.
    assert await _effects(db, wo["id"]) == (2, 1, 4, 4)
    assert await _effects(db, m["id"]) == (2, 0, 2, 2)


async def test_a_refused_command_leaves_nothing_behind(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        plenty, scarce = await product(client), await product(client)
        await receive(client, plenty["id"], w["id"], "5")
        await receive(client, scarce["id"], w["id"], "1")
        asset = unique("boiler")
        body = {"kind": "maintenance", "asset": asset, "reason": "leak", "warehouse_id": w["id"],
                "spare_parts": [{"product_id": plenty["id"], "quantity": "2"},
                                {"product_id": scarce["id"], "quantity": "3"}], "backorder": False}  # fmt: skip
        key = {"Idempotency-Key": unique("maint")}
        short = await client.post("/api/v1/work-orders", json=body, headers=key)
        assert short.status_code == 409
        problem = short.json()
        assert problem["type"].endswith("insufficient-stock")
        assert problem["detail"] == "1 move cannot be covered by stock"
        reason = f"SKU {scarce['sku']} in warehouse {w['id']}: needs 3, available 1.000"
        assert problem["errors"] == [{"field": "body.spare_parts[1]", "reason": reason}]  # request order
        assert (await stock(client, plenty["id"], w["id"]))["reserved"] == "0.000"
        cur = await db.execute(
            "SELECT (SELECT count(*) FROM erp.work_order WHERE asset = %s),"
            " (SELECT count(*) FROM erp.idempotency_key WHERE key = %s)",
            (asset, key["Idempotency-Key"]),
        )
        assert await cur.fetchone() == (0, 0)
        # Nothing was recorded, so the same key runs the command once the parts are there.
        await receive(client, scarce["id"], w["id"], "2")
        created = await client.post("/api/v1/work-orders", json=body, headers=key)
        assert (created.status_code, created.headers.get("idempotent-replayed")) == (201, None)
        # A short production run: no moves, no entry, no event, the order unchanged.
        blank = await product(client)
        part = await product(client, bom=[{"component_id": blank["id"], "quantity": "2"}])
        await receive(client, blank["id"], w["id"], "3")
        wo = await ok(await client.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": part["id"], "planned_quantity": "5", "warehouse_id": w["id"],
            "asset": "press3"}), 201)  # fmt: skip
        url = f"/api/v1/work-orders/{wo['id']}"
        await ok(await client.post(f"{url}/start"))
        before = await _effects(db, wo["id"])
        produce_key = {"Idempotency-Key": unique("produce")}
        refused = await client.post(f"{url}/produce", json={"quantity": "2"}, headers=produce_key)
        assert refused.status_code == 409
        assert refused.json()["errors"] == [
            {"field": "bom[0]", "reason": f"SKU {blank['sku']} in warehouse {w['id']}: needs 4.000, available 3.000"}
        ]
        assert await _effects(db, wo["id"]) == before
        assert (await stock(client, part["id"], w["id"]))["on_hand"] == "0.000"
        cur = await db.execute(
            "SELECT count(*) FROM erp.idempotency_key WHERE key = %s", (produce_key["Idempotency-Key"],)
        )
        assert await cur.fetchone() == (0,)


async def test_refusals_are_the_same_problem_documents(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        w = await warehouse(client)
        spare = await product(client)
        await receive(client, spare["id"], w["id"], "1")
        body = {"kind": "maintenance", "asset": "kiln1", "reason": "crack", "warehouse_id": w["id"],
                "spare_parts": [{"product_id": spare["id"], "quantity": "1"}]}  # fmt: skip
        m = await ok(await client.post("/api/v1/work-orders", json=body), 201)
        url = f"/api/v1/work-orders/{m['id']}"
        missing = await client.post("/api/v1/work-orders/999999999/start")
        assert (missing.status_code, missing.json()["detail"]) == (404, "no work order with id 999999999")
        assert (await client.get("/api/v1/work-orders/999999999")).status_code == 404
        for stale, detail in (
            ("7", "the resource is at version 1, not 7; read it again"),
            ("99999999999", "no resource here ever reaches version 99999999999; read it again"),  # past integers
        ):
            refused = await client.post(f"{url}/start", headers={"If-Match": f'"{stale}"'})
            assert (refused.status_code, refused.json()["detail"]) == (412, detail)
        patch = {"If-Match": '"1"'}
        assert (await client.patch(url, json={"priority": "low"})).status_code == 428
        null_priority = await client.patch(url, json={"priority": None}, headers=patch)
        assert (null_priority.status_code, null_priority.json()["errors"][0]["field"]) == (422, "body.priority")
        assert (await client.patch(url, json={}, headers=patch)).status_code == 422
        noted = await ok(await client.patch(url, json={"notes": "order seal kit"}, headers=patch))
        assert (noted["notes"], noted["priority"], noted["version"]) == ("order seal kit", "normal", 2)
        cleared = await ok(await client.patch(url, json={"notes": None}, headers={"If-Match": '"2"'}))
        assert (cleared["notes"], cleared["version"]) == (None, 3)
        await ok(await client.post(f"{url}/start"))
        not_produced = await client.post(f"{url}/produce", json={"quantity": "1"})
        assert not_produced.status_code == 409
        assert not_produced.json() == {
            "type": "urn:factory:erp:problem:invalid-state",
            "title": "Not allowed in the current state",
            "status": 409,
            "detail": "only production work orders produce goods",
            "instance": f"{url}/produce",
        }
        await ok(await client.post(f"{url}/complete"))
        again = await client.post(f"{url}/start")
        assert again.status_code == 409
        assert (again.json()["detail"], again.json()["status_now"]) == (
            "cannot start a work order that is done",
            "done",
        )
        late = await client.patch(url, json={"priority": "high"}, headers={"If-Match": "*"})
        assert (late.status_code, late.json()["detail"]) == (409, "cannot change a work order that is done")
        nowhere = await client.post("/api/v1/work-orders", json={**body, "warehouse_id": 999999999})
        assert (nowhere.status_code, nowhere.json()["errors"]) == (
            422,
            [{"field": "warehouse_id", "reason": "no such warehouse"}],
        )
        no_part = await client.post(
            "/api/v1/work-orders", json={**body, "spare_parts": [{"product_id": 999999999, "quantity": "1"}]}
        )
        assert (no_part.status_code, no_part.json()["errors"][0]["field"]) == (422, "spare_parts")


async def test_concurrent_commands_on_scarce_parts_and_one_order(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    async with running(database_url, pool_max_size=12) as api, api.client("planner") as client:
        w, spare = await warehouse(client), await product(client, cost="7.00")
        await receive(client, spare["id"], w["id"], "3")
        body = {"kind": "maintenance", "asset": unique("pump"), "reason": "wear", "warehouse_id": w["id"],
                "spare_parts": [{"product_id": spare["id"], "quantity": "1"}], "backorder": False}  # fmt: skip
        answers = await asyncio.gather(*(client.post("/api/v1/work-orders", json=body) for _ in range(8)))
        assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 5
        assert (await stock(client, spare["id"], w["id"]))["reserved"] == "3.000"
        wo = next(a.json() for a in answers if a.status_code == 201)
        url = f"/api/v1/work-orders/{wo['id']}"
        await ok(await client.post(f"{url}/start"))
        done = await asyncio.gather(*(client.post(f"{url}/complete") for _ in range(8)))
        assert sorted(a.status_code for a in done) == [200] + [409] * 7
        assert {a.json().get("status_now") for a in done if a.status_code == 409} == {"done"}
        s = await stock(client, spare["id"], w["id"])
        assert (s["on_hand"], s["reserved"]) == ("2.000", "2.000")
    assert await _effects(db, wo["id"]) == (2, 1, 3, 3)


async def test_scrap_consumes_components_and_a_service_posts_counts(database_url: str) -> None:
    """Good units go into stock, scrapped ones only use components; the document shows progress.
    A service (the production-counts job) may post production, idempotently; planners still may."""
    async with running(database_url) as api, api.client("planner") as planner:
        w = await warehouse(planner)
        cane = await product(planner, cost="2.00")
        sugar = await product(planner, cost="9.00", bom=[{"component_id": cane["id"], "quantity": "2"}])
        await receive(planner, cane["id"], w["id"], "100")
        wo = await ok(await planner.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": sugar["id"], "planned_quantity": "40", "warehouse_id": w["id"],
            "asset": "mill1"}), 201)  # fmt: skip
        assert (wo["scrapped_quantity"], wo["progress"]) == ("0.000", "0.0000")
        url = f"/api/v1/work-orders/{wo['id']}"
        await ok(await planner.post(f"{url}/start"))
        made = await ok(await planner.post(f"{url}/produce", json={"quantity": "8", "scrap": "2"}))
        assert (made["produced_quantity"], made["scrapped_quantity"], made["progress"]) == ("8.000", "2.000", "0.2000")
        assert (await stock(planner, cane["id"], w["id"]))["on_hand"] == "80.000"  # (8 + 2) x 2 used
        assert (await stock(planner, sugar["id"], w["id"]))["on_hand"] == "8.000"  # only the good ones
        nothing = await planner.post(f"{url}/produce", json={"quantity": "0", "scrap": "0"})
        assert nothing.status_code == 422
        assert "cannot both be zero" in nothing.text
        async with api.client("admin") as admin:
            key = (await ok(await admin.post("/api/v1/auth/api-keys",
                                             json={"name": unique("counts").lower(), "role": "service"}), 201))["key"]  # fmt: skip
        async with api.client(None, **{"X-API-Key": key}) as service:
            headers = {"Idempotency-Key": unique("production-count")}
            all_scrap = await service.post(f"{url}/produce", json={"quantity": "0", "scrap": "3"}, headers=headers)
            again = await service.post(f"{url}/produce", json={"quantity": "0", "scrap": "3"}, headers=headers)
            assert all_scrap.status_code == again.status_code == 200, all_scrap.text
            assert again.headers["idempotent-replayed"] == "true"
            assert (all_scrap.json()["produced_quantity"], all_scrap.json()["scrapped_quantity"]) == ("8.000", "5.000")
            assert (await service.post(f"{url}/complete")).status_code == 403  # counts only, not the lifecycle
        assert (await stock(planner, cane["id"], w["id"]))["on_hand"] == "74.000"  # 3 more used, once
        assert (await stock(planner, sugar["id"], w["id"]))["on_hand"] == "8.000"
        async with api.client("accountant") as accountant:
            entries = await ok(await accountant.get("/api/v1/ledger/entries",
                                                    params={"reference_type": "work_order", "reference_id": wo["id"]}))  # fmt: skip
        memos = sorted(e["memo"] for e in entries["items"])
        assert memos == [f"{wo['number']}: 0 produced, 3 scrapped", f"{wo['number']}: 8 produced, 2 scrapped"]
        # all scrap: 3 x 2 x 2.00 = 12.00 of components out of inventory, into production variance
        scrap_entry = next(e for e in entries["items"] if e["memo"].endswith("3 scrapped"))
        lines = {(x["account"], x["debit"]["amount"], x["credit"]["amount"]) for x in scrap_entry["lines"]}
        assert lines == {("1200", "0.00", "12.00"), ("5200", "12.00", "0.00")}
