"""The lean path answers exactly as FastAPI does (and does serve what it takes), it is derived from the route
table, and the access-token cache refuses what it must: over real HTTP with the real database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from erp_support import SECRET, money, running, tokens, unique
from fastapi import APIRouter, Response

from erp_api import create_app
from erp_api.deps import Conn, Planning
from erp_api.errors import UnauthenticatedError
from erp_api.hotpath import ErpApp, LeanRoute
from erp_api.security import TokenService
from factory_servers import free_port

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serving(database_url: str, *, lean: bool, routes: bool) -> AsyncIterator[str]:
    """The app with the lean path off (``lean=False``) or with FastAPI's routes removed
    (``routes=False``: only what the lean path serves is found)."""
    app = create_app(database_url, jwt_secret=SECRET)
    assert isinstance(app, ErpApp)
    if not lean:
        app.lean = ()
    if not routes:
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") in ("/healthz", "/openapi.json")]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server exited"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _seen(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "server", "x-request-id")}
    return response.status_code, response.content, headers


async def _stock_fixture(api: httpx.AsyncClient) -> tuple[int, int]:
    wh = (await api.post("/api/v1/warehouses", json={"code": unique("HOT")[:32], "name": "hot"})).json()
    cust = (await api.post("/api/v1/customers", json={"name": unique("hot customer")})).json()
    product_ids = []
    for i in range(3):
        body = {"sku": unique(f"HOT{i}"), "name": "hot", "uom": "ea", "price": money("2.00"), "tax_rate": "0.19"}
        product = (await api.post("/api/v1/products", json=body)).json()
        receipt = {"product_id": product["id"], "warehouse_id": wh["id"], "quantity": "5"}
        assert (await api.post("/api/v1/inventory/receipts", json=receipt)).status_code == 201
        product_ids.append(product["id"])
    order = {
        "customer_id": cust["id"],
        "warehouse_id": wh["id"],
        "lines": [{"product_id": product_ids[0], "quantity": "1"}],
    }
    created = await api.post("/api/v1/orders", json=order)
    assert created.status_code == 201, created.text
    return created.json()["id"], wh["id"]


async def test_hot_reads_answer_exactly_as_fastapi(database_url: str) -> None:
    """Same status, body and headers with and without the lean path, for successes, every
    kind of refusal, and the forms the lean path leaves to FastAPI (422s)."""
    expired = TokenService(SECRET, access_ttl_s=1, refresh_ttl_s=60).issue("old", "admin").access_token
    async with (
        running(database_url) as hot,
        serving(database_url, lean=False, routes=True) as plain_url,
        serving(database_url, lean=True, routes=False) as lean_url,
    ):
        async with hot.client("admin") as admin:
            order_id, wh = await _stock_fixture(admin)
        await asyncio.sleep(2.1)  # let the short-lived token expire
        stock = "/api/v1/inventory/stock"
        # (role, path, served by the lean path; the others are left to FastAPI)
        cases: list[tuple[str | None, str, bool]] = [
            ("admin", f"/api/v1/orders/{order_id}", True),
            ("accountant", f"/api/v1/orders/{order_id}?unused=1", True),
            ("service", f"/api/v1/orders/{order_id}", True),  # 403
            (None, f"/api/v1/orders/{order_id}", True),  # 401
            ("expired", f"/api/v1/orders/{order_id}", True),  # 401, expired
            ("admin", "/api/v1/orders/9223372036854775806", True),  # 404
            ("admin", "/api/v1/orders/0", False),  # 422 from FastAPI
            ("admin", "/api/v1/orders/9223372036854775808", False),  # 422 from FastAPI
            ("admin", "/api/v1/orders/abc", False),  # 422 from FastAPI
            ("service", f"{stock}?warehouse_id={wh}&limit=2", True),
            ("admin", f"{stock}?warehouse_id={wh}&limit=2&sort=-sku", True),
            ("admin", f"{stock}?warehouse_id={wh}&limit=0", False),  # 422 from FastAPI
            ("admin", f"{stock}?warehouse_id={wh}&limit=201", False),  # 422 from FastAPI
            ("admin", f"{stock}?warehouse_id={wh}&sort=name", False),  # 422 from FastAPI
            ("admin", f"{stock}?warehouse_id={wh}&cursor=not-a-cursor", True),  # 422 from the endpoint
            ("admin", f"{stock}?warehouse_id={wh}&below_reorder=false", True),
            ("admin", f"{stock}?warehouse_id={wh}&below_reorder=maybe", False),  # 422 from FastAPI
            ("admin", f"{stock}?warehouse_id={wh}&limit=2&limit=3", True),  # the last, as FastAPI reads it
            ("planner", "/api/v1/orders?status=draft&limit=1", True),
            ("planner", "/api/v1/orders?status=lost", False),  # 422 from FastAPI
            ("planner", "/api/v1/inventory/movements?limit=1", False),  # returns a model: FastAPI's
            (None, stock, True),  # 401
        ]
        for role, path, lean in cases:
            headers = {}
            if role == "expired":
                headers["Authorization"] = f"Bearer {expired}"
            elif role is not None:
                headers["Authorization"] = f"Bearer {tokens().issue(f'test-{role}', role).access_token}"  # type: ignore[arg-type]
            async with httpx.AsyncClient() as http:
                got = await http.get(hot.base_url + path, headers=headers)
                want = await http.get(plain_url + path, headers=headers)
                lean_only = await http.get(lean_url + path, headers=headers)
            assert _seen(got) == _seen(want), f"{role} {path}: {got.status_code} {got.text} != {want.text}"
            # Served by the lean path itself (FastAPI there has no such route) unless left to FastAPI.
            if lean:
                assert _seen(lean_only) == _seen(got), path
            else:
                assert lean_only.status_code == 404, path
        # Walking pages with next_cursor over the lean path sees every row once.
        async with hot.client("planner") as planner:
            rows, cursor = [], None
            while True:
                params: dict[str, Any] = {"warehouse_id": wh, "limit": 2, **({"cursor": cursor} if cursor else {})}
                page = (await planner.get(stock, params=params)).json()
                rows += [r["product_id"] for r in page["items"]]
                if not (cursor := page["next_cursor"]):
                    break
            assert len(rows) == len(set(rows)) == 3


def test_the_lean_path_is_derived_from_the_route_table() -> None:
    """Every route of the plain form is lean, whatever its path; the others are FastAPI's."""
    app = create_app("postgresql://127.0.0.1:1/unused", jwt_secret=SECRET)
    assert isinstance(app, ErpApp)
    lean = {(method, routed.path) for routed in app.lean if routed.lean for method in routed.methods}
    for served in (
        ("GET", "/api/v1/orders/{order_id}"),
        ("POST", "/api/v1/orders/{order_id}/confirm"),
        ("PATCH", "/api/v1/orders/{order_id}"),
        ("GET", "/api/v1/inventory/stock"),
        ("POST", "/api/v1/invoices/{invoice_id}/payments"),
    ):
        assert served in lean, served
    for left in (
        ("POST", "/api/v1/auth/token"),  # no guard: it is how a caller gets one
        ("GET", "/api/v1/inventory/movements"),  # returns a model FastAPI serialises
        ("GET", "/healthz"),
    ):
        assert left not in lean, left

    router = APIRouter()

    @router.get("/plain/{item_id}")
    async def plain(*, item_id: int, ctx: Planning, q: str | None = None) -> Response:
        return Response()

    @router.get("/connection")
    async def connection(*, conn: Conn) -> Response:
        return Response()

    @router.get("/modelled")
    async def modelled(*, ctx: Planning) -> dict[str, int]:
        return {}

    plain_route, connection_route, modelled_route = router.routes
    assert LeanRoute.of(plain_route) is not None
    assert LeanRoute.of(connection_route) is None
    assert LeanRoute.of(modelled_route) is None


def test_the_token_cache_refuses_expired_and_altered_tokens() -> None:
    service = TokenService(SECRET, access_ttl_s=1, refresh_ttl_s=60)
    token = service.issue("alice", "planner").access_token
    assert service.decode(token, "access").role == "planner"  # verified, now cached
    head, payload, signature = token.split(".")
    altered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(UnauthenticatedError):
        service.decode(altered, "access")
    with pytest.raises(UnauthenticatedError):
        TokenService("another-secret-" + "z" * 40, access_ttl_s=1, refresh_ttl_s=60).decode(token, "access")
    with pytest.raises(UnauthenticatedError):
        service.decode(token, "refresh")  # the cache holds access tokens only
    time.sleep(2.1)  # past the token's expiry (whole seconds)
    with pytest.raises(UnauthenticatedError, match="expired"):
        service.decode(token, "access")
    bounded = tokens()
    for i in range(TokenService.CACHE_SIZE + 10):
        bounded.decode(bounded.issue(f"user{i}", "operator").access_token, "access")
    assert len(bounded._verified) <= TokenService.CACHE_SIZE


async def test_flow_commands_on_the_lean_path_keep_their_contract(database_url: str) -> None:
    """create -> confirm -> invoice -> pay served by the lean path alone (FastAPI there has no
    such routes): idempotent replays, refusals and problem documents as through FastAPI;
    what the lean path leaves to FastAPI (invalid bodies, other content types) still gets there."""
    async with (
        running(database_url) as hot,
        serving(database_url, lean=True, routes=False) as lean_url,
        serving(database_url, lean=False, routes=True) as plain_url,
    ):
        async with hot.client("admin") as admin:
            _, wh = await _stock_fixture(admin)
            stock = (await admin.get("/api/v1/inventory/stock", params={"warehouse_id": wh, "limit": 1})).json()
        product = stock["items"][0]["product_id"]
        customer = (await httpx.AsyncClient(base_url=hot.base_url, headers=_auth("admin")).post(
            "/api/v1/customers", json={"name": unique("lean")})).json()["id"]  # fmt: skip
        order = {"customer_id": customer, "warehouse_id": wh, "lines": [{"product_id": product, "quantity": "1"}]}
        key = unique("k")
        async with httpx.AsyncClient(base_url=lean_url, headers=_auth("planner")) as planner:
            created = await planner.post("/api/v1/orders", json=order, headers={"Idempotency-Key": f"{key}-o"})
            assert created.status_code == 201, created.text
            again = await planner.post("/api/v1/orders", json=order, headers={"Idempotency-Key": f"{key}-o"})
            assert again.status_code == 201
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.json() == created.json()
            other = await planner.post(
                "/api/v1/orders", json={**order, "notes": "x"}, headers={"Idempotency-Key": f"{key}-o"}
            )
            assert other.status_code == 409
            order_id = created.json()["id"]
            stale = await planner.post(f"/api/v1/orders/{order_id}/confirm", headers={"If-Match": '"7"'})
            assert stale.status_code == 412
            assert stale.headers["content-type"] == "application/problem+json"
            confirm = await planner.post(f"/api/v1/orders/{order_id}/confirm", headers={"Idempotency-Key": f"{key}-c"})
            assert confirm.status_code == 200
            assert confirm.json()["status"] == "confirmed"
        async with httpx.AsyncClient(base_url=lean_url, headers=_auth("accountant")) as accountant:
            invoice = await accountant.post("/api/v1/invoices", json={"order_id": order_id})
            assert invoice.status_code == 201, invoice.text
            paid = await accountant.post(
                f"/api/v1/invoices/{invoice.json()['id']}/payments", json={"amount": invoice.json()["gross"]}
            )
            assert paid.status_code == 201
            assert paid.json()["status"] == "paid"
        # Refusals: the same answer from the lean path and from FastAPI; invalid requests are FastAPI's.
        cases: list[tuple[str | None, str, bytes, dict[str, str], bool]] = [
            ("operator", "/api/v1/orders", json.dumps(order).encode(), JSON_TYPE, True),  # 403
            (None, f"/api/v1/orders/{order_id}/confirm", b"", {}, True),  # 401
            ("planner", f"/api/v1/orders/{order_id}/confirm", b"", {}, True),  # 409: not a draft
            ("accountant", "/api/v1/invoices", b'{"order_id": 9223372036854775806}', JSON_TYPE, True),  # 404
            ("accountant", "/api/v1/invoices", b'{"order_id": "1"}', JSON_TYPE, False),  # 422 (strict id)
            ("accountant", "/api/v1/invoices", b'{"order_id": 1, "x": 1}', JSON_TYPE, False),  # 422
            ("accountant", "/api/v1/invoices", b"{not json", JSON_TYPE, False),  # 422
            ("accountant", "/api/v1/invoices", b'{"order_id": 1}', {"Content-Type": "text/plain"}, False),
            ("planner", "/api/v1/orders", json.dumps(order).encode(), {**JSON_TYPE, "Idempotency-Key": ""}, False),
        ]
        for role, path, content, extra, lean in cases:
            headers = {**extra, **(_auth(role) if role else {})}
            async with httpx.AsyncClient() as http:
                got = await http.post(hot.base_url + path, content=content, headers=headers)
                want = await http.post(plain_url + path, content=content, headers=headers)
                lean_only = await http.post(lean_url + path, content=content, headers=headers)
            assert _seen(got) == _seen(want), f"{role} {path} {content!r}: {got.text} != {want.text}"
            assert (_seen(lean_only) == _seen(got)) if lean else lean_only.status_code in (404, 405), path


JSON_TYPE = {"Content-Type": "application/json"}


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens().issue(f'test-{role}', role).access_token}"}  # type: ignore[arg-type]
