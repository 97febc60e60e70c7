"""The lean path for the busiest reads answers exactly as FastAPI does (and does serve them), and the access-token
cache refuses what it must: over real HTTP with the real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from test_erp_support import SECRET, money, running, tokens, unique

from erp_api import create_app
from erp_api.errors import UnauthenticatedError
from erp_api.hotpath import ErpApp, _stock_query
from erp_api.security import TokenService
from factory.embedded import free_port

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serving(database_url: str, *, lean: bool, routes: bool) -> AsyncIterator[str]:
    """The app with the lean path off (``lean=False``) or with FastAPI's routes removed
    (``routes=False``: only what the lean path serves is found)."""
    app = create_app(database_url, jwt_secret=SECRET)
    assert isinstance(app, ErpApp)
    if not lean:
        app.hot, app.hot_prefixes = {}, ()
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
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "server")}
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
            ("admin", f"{stock}?warehouse_id={wh}&below_reorder=false", False),
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


def test_stock_query_takes_only_the_plain_forms() -> None:
    assert _stock_query(b"warehouse_id=7&limit=50&sort=-id&cursor=abc") == {
        "warehouse_id": 7,
        "limit": 50,
        "sort": "-id",
        "cursor": "abc",
    }
    assert _stock_query(b"") == {}
    for refused in (b"limit=0", b"limit=201", b"limit=-1", b"limit=+5", b"limit= 5", b"product_id=1&product_id=2",
                    b"sort=name", b"below_reorder=true", b"other=1", b"warehouse_id=9223372036854775808",
                    b"cursor=" + b"x" * 513):  # fmt: skip
        assert _stock_query(refused) is None, refused


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
