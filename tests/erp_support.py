"""Shared pieces of the ERP tests: a real server on a free port, callers per role, and
small builders for products, stock and orders. (No tests in this module.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from pydantic import TypeAdapter
from starlette.routing import compile_path

from erp_api.app import api_routes
from erp_api.config import LoginPolicy
from erp_api.security import Role, TokenService
from erp_api.server import serve
from factory_servers import free_port

SECRET = "erp-test-FQ-ntCJ9K3NRtsLG3_533kabmT_TUAmu9x9omVKePJTgHGPQ"


def tokens() -> TokenService:
    return TokenService(SECRET, access_ttl_s=600, refresh_ttl_s=3600)


def same_as_model(model: Any, doc: Any) -> None:
    """``doc`` is exactly what the pydantic ``model`` would send: the database renders the
    documents (``erp.*_doc``), the models are their contract (the OpenAPI document)."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    assert adapter.dump_python(adapter.validate_python(doc), mode="json") == doc


_MODELS = [(compile_path(path)[0], route.methods, route.response_model) for path, route in api_routes()]


async def _reply_matches_its_model(response: httpx.Response) -> None:
    """Every successful JSON reply a test receives is held to its route's response model."""
    if not 200 <= response.status_code < 300 or response.headers.get("content-type") != "application/json":
        return
    request = response.request
    model = next((m for pattern, methods, m in _MODELS if request.method in methods and pattern.match(request.url.path)),
                 None)  # fmt: skip
    if model is not None:
        await response.aread()
        same_as_model(model, response.json())


@dataclass
class Api:
    base_url: str

    def client(self, role: Role | None = "admin", **headers: str) -> httpx.AsyncClient:
        """A client acting as a user of ``role`` (None: no credentials)."""
        if role is not None:
            headers["Authorization"] = f"Bearer {tokens().issue(f'test-{role}', role).access_token}"
        hooks = {"response": [_reply_matches_its_model]}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=20, event_hooks=hooks)


@contextlib.asynccontextmanager
async def running(database_url: str, **options: Any) -> AsyncIterator[Api]:
    port = free_port()
    options.setdefault("jwt_secret", SECRET)
    # Every test signs in from 127.0.0.1: the address lock would make them depend on each
    # other's failures. It is tested with addresses of its own (X-Forwarded-For), and the
    # late refusals in test_erp_sign_in_locks.py.
    options.setdefault("login", LoginPolicy(free_address=10**6, refusal_delay_s=0))
    task = asyncio.create_task(serve(database_url, "127.0.0.1", port, **options))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
        for _ in range(200):
            if task.done():
                await task
            with contextlib.suppress(httpx.TransportError):
                await probe.get("/healthz")
                break
            await asyncio.sleep(0.05)
    try:
        yield Api(base)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def money(amount: str | Decimal) -> dict[str, str]:
    return {"amount": str(amount), "currency": "EUR"}


async def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


async def product(client: httpx.AsyncClient, *, price: str = "10.00", cost: str = "6.00", tax_rate: str = "0.19",
                  bom: list[dict[str, Any]] | None = None, reorder_point: str = "0") -> dict[str, Any]:  # fmt: skip
    body = {"sku": unique("SKU"), "name": unique("Product"), "uom": "ea", "price": money(price),
            "cost": money(cost), "tax_rate": tax_rate, "reorder_point": reorder_point, "bom": bom or []}  # fmt: skip
    return await ok(await client.post("/api/v1/products", json=body), 201)


async def warehouse(client: httpx.AsyncClient) -> dict[str, Any]:
    body = {"code": unique("WH"), "name": "Main store"}
    return await ok(await client.post("/api/v1/warehouses", json=body), 201)


async def customer(client: httpx.AsyncClient, terms: int = 30) -> dict[str, Any]:
    body = {"name": unique("Customer"), "email": "buyer@example.com", "payment_terms_days": terms}
    return await ok(await client.post("/api/v1/customers", json=body), 201)


async def receive(client: httpx.AsyncClient, product_id: int, warehouse_id: int, quantity: str) -> dict[str, Any]:
    body = {"product_id": product_id, "warehouse_id": warehouse_id, "quantity": quantity}
    return await ok(await client.post("/api/v1/inventory/receipts", json=body), 201)


async def stock(client: httpx.AsyncClient, product_id: int, warehouse_id: int) -> dict[str, Any]:
    return await ok(await client.get(f"/api/v1/inventory/stock/{product_id}/{warehouse_id}"))


async def order(client: httpx.AsyncClient, customer_id: int, warehouse_id: int,
                lines: list[tuple[int, str]]) -> dict[str, Any]:  # fmt: skip
    body = {"customer_id": customer_id, "warehouse_id": warehouse_id,
            "lines": [{"product_id": p, "quantity": q} for p, q in lines]}  # fmt: skip
    return await ok(await client.post("/api/v1/orders", json=body), 201)


@contextlib.contextmanager
def server_process(database_url: str, **options: Any) -> Iterator[str]:
    """The API in its own process (for synchronous drivers: hypothesis, schemathesis);
    ``options`` are ``serve``'s (JSON values)."""
    port = free_port()
    code = ("import asyncio, json, sys; from erp_api.server import serve; "
            "asyncio.run(serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]), jwt_secret=sys.argv[3],"
            " **json.loads(sys.argv[4])))")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, database_url, str(port), SECRET, json.dumps(options)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, "the ERP server exited"
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{base}/healthz", timeout=1)
                break
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def sync_client(base_url: str, role: Role = "admin") -> httpx.Client:
    token = tokens().issue(f"test-{role}", role).access_token
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20)
