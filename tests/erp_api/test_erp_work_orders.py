"""Work orders: production consumes the bill of materials; maintenance reserves spare parts,
and a service creates it with an API key, idempotently."""

from __future__ import annotations

from decimal import Decimal

import pytest
from erp_support import ok, product, receive, running, stock, unique, warehouse

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
                "spare_parts": [{"product_id": part["id"], "quantity": "2"}]}  # fmt: skip
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
