"""The audit trail: every route that writes leaves records with the caller and the request
id (the events on the bus carry the same: test_erp_outbox.py); the CLI's changes are recorded as local; nobody
can change or delete a record; the trail reads in filtered cursor pages."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from erp_support import customer, ok, order, product, receive, running, unique, warehouse

from erp_api.app import api_routes
from erp_api.cli import erp

pytestmark = pytest.mark.integration

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Signing in and refreshing a session change no business record; failed sign-ins are kept in
# erp.login_guard (test_erp_sign_in_locks.py), refresh tokens in erp.refresh_token.
NOT_AUDITED = frozenset({("POST", "/api/v1/auth/token"), ("POST", "/api/v1/auth/refresh")})


@dataclass
class Recorder:
    """Sends each write with its own X-Request-Id and remembers which route it was."""

    client: httpx.AsyncClient
    sent: dict[tuple[str, str], str] = field(default_factory=dict)  # (method, route) -> request id

    async def write(self, method: str, route: str, status: int, *, json: Any = None, **params: Any) -> Any:
        request_id = f"audit-{uuid.uuid4().hex}"
        version = params.pop("version", None)
        headers = {"X-Request-Id": request_id}
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        response = await self.client.request(method, route.format(**params), json=json, headers=headers)
        assert response.status_code == status, f"{method} {route}: {response.status_code} {response.text}"
        assert response.headers["x-request-id"] == request_id
        self.sent[(method, route)] = request_id
        return response.json() if response.content else None


async def test_every_route_that_writes_leaves_records_with_actor_and_request(database_url: str, mqtt_url: str) -> None:
    # a broker for setpoints (no relay: the events are test_erp_outbox.py's), and a short wait for a device
    options = {"mqtt_url": mqtt_url, "relay": False, "setpoint_timeout_s": 0.3}
    async with running(database_url, **options) as api, api.client("admin") as admin:
        rec = Recorder(admin)
        await _catalog(rec)
        await _sales(rec)
        await _work_orders(rec)
        await _purchasing(rec)
        await _accounts(rec)
        await _setpoints(rec)

        writes = {(m, path) for path, route in api_routes() for m in route.methods if m in WRITES} - NOT_AUDITED
        assert set(rec.sent) == writes, f"not exercised: {sorted(writes - set(rec.sent))}"
        async with api.client("accountant") as accountant:
            for (method, route), request_id in rec.sent.items():
                page = await ok(await accountant.get("/api/v1/audit", params={"request_id": request_id}))
                records = page["items"]
                assert records, f"{method} {route} left no audit record"
                assert {r["actor"] for r in records} == {"test-admin"}, (method, route)
                assert {r["request_id"] for r in records} == {request_id}
    assert len(writes) >= 30  # the API's writes, not a handful


async def _catalog(rec: Recorder) -> None:
    w = await rec.write("POST", "/api/v1/warehouses", 201, json={"code": unique("WH"), "name": "Main"})
    await rec.write("PATCH", "/api/v1/warehouses/{warehouse_id}", 200, json={"name": "Main store"},
                    warehouse_id=w["id"], version=w["version"])  # fmt: skip
    body = {"sku": unique("SKU"), "name": "Bolt", "uom": "ea", "price": {"amount": "10.00", "currency": "EUR"},
            "cost": {"amount": "6.00", "currency": "EUR"}, "tax_rate": "0.19"}  # fmt: skip
    p = await rec.write("POST", "/api/v1/products", 201, json=body)
    await rec.write("PATCH", "/api/v1/products/{product_id}", 200, json={"name": "Bolt M8"},
                    product_id=p["id"], version=p["version"])  # fmt: skip
    c = await rec.write("POST", "/api/v1/customers", 201, json={"name": unique("Customer"), "payment_terms_days": 30})
    await rec.write("PATCH", "/api/v1/customers/{customer_id}", 200, json={"payment_terms_days": 45},
                    customer_id=c["id"], version=c["version"])  # fmt: skip
    other = await warehouse(rec.client)
    await rec.write("POST", "/api/v1/inventory/receipts", 201,
                    json={"product_id": p["id"], "warehouse_id": w["id"], "quantity": "100"})  # fmt: skip
    await rec.write("POST", "/api/v1/inventory/adjustments", 201,
                    json={"product_id": p["id"], "warehouse_id": w["id"], "delta": "-2", "reason": "count"})  # fmt: skip
    await rec.write("POST", "/api/v1/inventory/transfers", 201,
                    json={"product_id": p["id"], "from_warehouse_id": w["id"], "to_warehouse_id": other["id"],
                          "quantity": "5"})  # fmt: skip


async def _sales(rec: Recorder) -> None:
    w, p, c = await warehouse(rec.client), await product(rec.client), await customer(rec.client)
    await receive(rec.client, p["id"], w["id"], "50")
    o = await rec.write("POST", "/api/v1/orders", 201, json={
        "customer_id": c["id"], "warehouse_id": w["id"], "lines": [{"product_id": p["id"], "quantity": "3"}]})  # fmt: skip
    o = await rec.write("PATCH", "/api/v1/orders/{order_id}", 200, json={"notes": "ring first"},
                        order_id=o["id"], version=o["version"])  # fmt: skip
    o = await rec.write("POST", "/api/v1/orders/{order_id}/confirm", 200, order_id=o["id"])
    await rec.write("POST", "/api/v1/orders/{order_id}/ship", 200, order_id=o["id"])
    inv = await rec.write("POST", "/api/v1/invoices", 201, json={"order_id": o["id"]})
    await rec.write("POST", "/api/v1/invoices/{invoice_id}/payments", 201,
                    json={"amount": {"amount": "10.00", "currency": "EUR"}}, invoice_id=inv["id"])  # fmt: skip
    await rec.write("POST", "/api/v1/invoices/{invoice_id}/credit-notes", 201,
                    json={"reason": "damaged", "lines": [{"line_no": 1, "quantity": "1"}]}, invoice_id=inv["id"])  # fmt: skip
    doomed = await order(rec.client, c["id"], w["id"], [(p["id"], "1")])
    await rec.write("POST", "/api/v1/orders/{order_id}/cancel", 200, order_id=doomed["id"])


async def _work_orders(rec: Recorder) -> None:
    w = await warehouse(rec.client)
    cane = await product(rec.client)
    sugar = await product(rec.client, bom=[{"component_id": cane["id"], "quantity": "2"}])
    await receive(rec.client, cane["id"], w["id"], "100")
    body = {"kind": "production", "product_id": sugar["id"], "planned_quantity": "10", "warehouse_id": w["id"],
            "asset": "mill1"}  # fmt: skip
    wo = await rec.write("POST", "/api/v1/work-orders", 201, json=body)
    wo = await rec.write("PATCH", "/api/v1/work-orders/{work_order_id}", 200, json={"priority": "high"},
                         work_order_id=wo["id"], version=wo["version"])  # fmt: skip
    await rec.write("POST", "/api/v1/work-orders/{work_order_id}/start", 200, work_order_id=wo["id"])
    await rec.write("POST", "/api/v1/work-orders/{work_order_id}/produce", 200, json={"quantity": "2", "scrap": "1"},
                    work_order_id=wo["id"])  # fmt: skip
    await rec.write("POST", "/api/v1/work-orders/{work_order_id}/complete", 200, work_order_id=wo["id"])
    other = await ok(await rec.client.post("/api/v1/work-orders", json=body), 201)
    await rec.write("POST", "/api/v1/work-orders/{work_order_id}/cancel", 200, work_order_id=other["id"])


async def _purchasing(rec: Recorder) -> None:
    w = await warehouse(rec.client)
    part = await product(rec.client, reorder_point="10")
    await receive(rec.client, part["id"], w["id"], "1")
    s = await rec.write(
        "POST", "/api/v1/suppliers", 201, json={"code": unique("SUP"), "name": "Acme", "currency": "EUR"}
    )
    await rec.write("PATCH", "/api/v1/suppliers/{supplier_id}", 200, json={"payment_terms_days": 14},
                    supplier_id=s["id"], version=s["version"])  # fmt: skip
    item = await rec.write("POST", "/api/v1/supplier-items", 201, json={
        "supplier_id": s["id"], "product_id": part["id"], "price": {"amount": "5.00", "currency": "EUR"}})  # fmt: skip
    await rec.write("PATCH", "/api/v1/supplier-items/{item_id}", 200, json={"preferred": True},
                    item_id=item["id"], version=item["version"])  # fmt: skip
    await rec.write("POST", "/api/v1/purchasing/reorder-suggestions/convert", 200, json={"warehouse_id": w["id"]})
    po = await rec.write("POST", "/api/v1/purchase-orders", 201, json={
        "supplier_id": s["id"], "warehouse_id": w["id"], "lines": [{"product_id": part["id"], "quantity": "4"}]})  # fmt: skip
    po = await rec.write("PATCH", "/api/v1/purchase-orders/{purchase_order_id}", 200, json={"notes": "dock 3"},
                         purchase_order_id=po["id"], version=po["version"])  # fmt: skip
    await rec.write("POST", "/api/v1/purchase-orders/{purchase_order_id}/approve", 200, purchase_order_id=po["id"])
    await rec.write("POST", "/api/v1/purchase-orders/{purchase_order_id}/receive", 200,
                    json={"line_no": 1, "quantity": "4"}, purchase_order_id=po["id"])  # fmt: skip
    inv = await rec.write("POST", "/api/v1/supplier-invoices", 201, json={
        "purchase_order_id": po["id"], "supplier_reference": unique("INV"), "invoice_date": "2025-03-01",
        "lines": [{"line_no": 1, "quantity": "4", "unit_price": {"amount": "5.50", "currency": "EUR"}}]})  # fmt: skip
    assert inv["status"] == "held"
    await rec.write("POST", "/api/v1/supplier-invoices/{invoice_id}/release", 200, json={"reason": "agreed"},
                    invoice_id=inv["id"])  # fmt: skip
    await rec.write("POST", "/api/v1/supplier-invoices/{invoice_id}/payments", 201,
                    json={"amount": {"amount": "22.00", "currency": "EUR"}}, invoice_id=inv["id"])  # fmt: skip
    doomed = await ok(await rec.client.post("/api/v1/purchase-orders", json={
        "supplier_id": s["id"], "warehouse_id": w["id"], "lines": [{"product_id": part["id"], "quantity": "1"}]}), 201)  # fmt: skip
    await rec.write("POST", "/api/v1/purchase-orders/{purchase_order_id}/cancel", 200, purchase_order_id=doomed["id"])


async def _accounts(rec: Recorder) -> None:
    name = unique("clerk").lower()
    await rec.write("POST", "/api/v1/auth/users", 201,
                    json={"username": name, "role": "clerk", "password": "a long enough password"})  # fmt: skip
    await rec.write("PATCH", "/api/v1/auth/users/{username}", 200, json={"active": False}, username=name)
    await rec.write("PUT", "/api/v1/auth/users/{username}/password", 204,
                    json={"password": "another long password"}, username=name)  # fmt: skip
    await rec.write("DELETE", "/api/v1/auth/users/{username}", 204, username=name)
    key = unique("scorer").lower()
    await rec.write("POST", "/api/v1/auth/api-keys", 201, json={"name": key, "role": "service"})
    await rec.write("DELETE", "/api/v1/auth/api-keys/{name}", 204, name=key)
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    wrong = {"username": unique("nobody"), "password": "wrong password"}
    failed = await rec.client.post("/api/v1/auth/token", data=wrong, headers={"X-Forwarded-For": address})
    assert failed.status_code == 401
    await rec.write("DELETE", "/api/v1/auth/locks/{kind}/{key}", 204, kind="address", key=address)


async def _setpoints(rec: Recorder) -> None:
    # no agent answers for this device: the request is still recorded (a timeout)
    body = {"site": f"audit-{uuid.uuid4().hex[:8]}", "device": "pi1", "tag": "tank.setpoint", "value": 12.5}
    await rec.write("POST", "/api/v1/setpoints", 504, json=body)


async def test_records_name_what_changed_and_read_in_filtered_pages(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as admin, api.client("accountant") as accountant:
        p = await product(admin)
        changed = await ok(await admin.patch(f"/api/v1/products/{p['id']}", json={"name": "Renamed"},
                                             headers={"If-Match": f'"{p["version"]}"'}))  # fmt: skip
        trail = await ok(await accountant.get("/api/v1/audit", params={"entity_type": "product",
                                                                       "entity_id": str(p["id"])}))  # fmt: skip
        assert [r["action"] for r in trail["items"]] == ["product.created", "product.updated"]
        assert trail["items"][1]["detail"] == changed  # the document after the change
        assert trail["items"][1]["event_id"] > trail["items"][0]["event_id"]
        first = trail["items"][0]
        for _ in range(4):
            await product(admin)
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"action": "product.created", "actor": "test-admin", "since": first["at"],
                                      "limit": 2, "sort": "-id"}  # fmt: skip
            if cursor:
                params["cursor"] = cursor
            page = await ok(await accountant.get("/api/v1/audit", params=params))
            seen += [r["id"] for r in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert len(seen) == 5  # this product and the four after it
        assert seen == sorted(seen, reverse=True)
        since = trail["items"][1]["at"]
        later = await ok(await accountant.get("/api/v1/audit", params={"since": since, "action": "product.updated"}))
        assert [r["id"] for r in later["items"]] == [trail["items"][1]["id"]]
        async with api.client("planner") as planner:
            assert (await planner.get("/api/v1/audit")).status_code == 403


async def test_the_trail_is_append_only(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as admin:
        await product(admin)
    snapshot = "SELECT count(*), md5(string_agg(a::text, ',' ORDER BY id)) FROM erp.audit a"
    before = await (await db.execute(snapshot)).fetchone()
    assert before[0] > 0
    for statement in ("UPDATE erp.audit SET actor = 'someone else'", "DELETE FROM erp.audit", "TRUNCATE erp.audit"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            await db.execute(statement)
        await db.rollback()
    assert await (await db.execute(snapshot)).fetchone() == before


async def test_a_malformed_request_id_is_replaced(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as admin:
        for sent in ("", "x" * 129, "spaces are not allowed", "ünïcode"):
            response = await admin.get("/healthz", headers={"X-Request-Id": sent.encode()})
            returned = response.headers["x-request-id"]
            assert returned != sent
            assert len(returned) == 32


async def test_cli_changes_are_recorded_as_local(database_url: str, db: psycopg.AsyncConnection,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    name = unique("svc").lower()
    result = await asyncio.to_thread(CliRunner().invoke, erp, ["api-key", name, "--role", "service"])
    assert result.exit_code == 0, result.output
    cur = await db.execute("SELECT actor, action, detail->>'role' FROM erp.audit WHERE entity_id = %s", (name,))
    actor, action, role = await cur.fetchone()
    assert actor.startswith("local:")
    assert (action, role) == ("api_key.created", "service")
