"""The workloads of ``factory bench erp``: order flows, reads, and saturation."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from factory_bench.loadgen import HttpError, Latencies, RawHttp, paced

__all__ = ["Fixtures", "flow_phase", "read_phase", "saturation_phase"]

PRODUCTS: Final = 60  # more than one stock page of 50
CALLS: Final = ("create", "confirm", "invoice", "pay")
WRITES: Final = ("confirm", "invoice", "pay")


def _money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "EUR"}


async def _expect(
    http: RawHttp, status: int, method: str, path: str, body: object | None = None, *, key: str | None = None
) -> Any:
    got, data = await http.request(method, path, body, {"Idempotency-Key": key} if key else None)
    if got != status:
        raise HttpError(f"{method} {path}: {got} {data}")
    return data


@dataclass
class Fixtures:
    customer_id: int
    warehouse_id: int
    product_ids: list[int]
    order_ids: list[int] = field(default_factory=list)

    @classmethod
    async def create(cls, http: RawHttp) -> Fixtures:
        tag = uuid.uuid4().hex[:8]
        wh = await _expect(http, 201, "POST", "/api/v1/warehouses", {"code": f"BENCH-{tag}", "name": "bench"})
        cust = await _expect(http, 201, "POST", "/api/v1/customers", {"name": f"Bench customer {tag}"})
        products = []
        for i in range(PRODUCTS):
            body = {
                "sku": f"BENCH-{tag}-{i}",
                "name": f"Bench product {i}",
                "uom": "ea",
                "price": _money("12.50"),
                "cost": _money("7.25"),
                "tax_rate": "0.19",
            }
            product = await _expect(http, 201, "POST", "/api/v1/products", body)
            receipt = {"product_id": product["id"], "warehouse_id": wh["id"], "quantity": "10000000"}
            await _expect(http, 201, "POST", "/api/v1/inventory/receipts", receipt)
            products.append(product["id"])
        return cls(customer_id=cust["id"], warehouse_id=wh["id"], product_ids=products)


async def one_flow(http: RawHttp, fx: Fixtures, stats: dict[str, Latencies], due: float | None = None) -> bool:
    """create -> confirm -> invoice -> pay, each with an Idempotency-Key; True when all succeeded."""
    key = uuid.uuid4().hex
    started = due if due is not None else time.perf_counter()
    call = "create"
    try:
        lines = [{"product_id": random.choice(fx.product_ids), "quantity": str(random.randint(1, 3))}]
        body = {"customer_id": fx.customer_id, "warehouse_id": fx.warehouse_id, "lines": lines}
        order = await _expect(http, 201, "POST", "/api/v1/orders", body, key=f"{key}-o")
        started = _lap(stats, call, started)
        call = "confirm"
        await _expect(http, 200, "POST", f"/api/v1/orders/{order['id']}/confirm", None, key=f"{key}-c")
        started = _lap(stats, call, started)
        call = "invoice"
        invoice = await _expect(http, 201, "POST", "/api/v1/invoices", {"order_id": order["id"]}, key=f"{key}-i")
        started = _lap(stats, call, started)
        call = "pay"
        payment = {"amount": invoice["gross"]}
        await _expect(http, 201, "POST", f"/api/v1/invoices/{invoice['id']}/payments", payment, key=f"{key}-p")
        _lap(stats, call, started)
    except (HttpError, OSError, TimeoutError):
        stats[call].errors += 1
        return False
    fx.order_ids.append(order["id"])
    return True


def _lap(stats: dict[str, Latencies], call: str, started: float) -> float:
    now = time.perf_counter()
    stats[call].add(now - started)
    return now


def _summaries(stats: dict[str, Latencies]) -> dict[str, Any]:
    every = Latencies([s for lat in stats.values() for s in lat.samples], sum(lat.errors for lat in stats.values()))
    return {"calls": {name: lat.summary() for name, lat in stats.items()}, "all_calls": every.summary()}


async def flow_phase(http: RawHttp, fx: Fixtures, *, rate: float, seconds: float) -> dict[str, Any]:
    stats = {name: Latencies() for name in CALLS}
    done: list[bool] = []

    async def job(due: float) -> None:
        done.append(await one_flow(http, fx, stats, due))

    started = time.perf_counter()
    await paced(rate, seconds, job)
    elapsed = time.perf_counter() - started
    return {
        "rate_target": rate,
        "flows": len(done),
        "flows_ok": sum(done),
        "flows_per_s": round(sum(done) / elapsed, 1),
        **_summaries(stats),
    }


async def read_phase(http: RawHttp, fx: Fixtures, *, rate: float, seconds: float) -> dict[str, Any]:
    stats = {"get_order": Latencies(), "stock_page": Latencies()}
    page = f"/api/v1/inventory/stock?limit=50&warehouse_id={fx.warehouse_id}"
    count = 0

    async def job(due: float) -> None:
        nonlocal count
        count += 1
        name, path = (
            ("get_order", f"/api/v1/orders/{random.choice(fx.order_ids)}") if count % 2 else ("stock_page", page)
        )
        try:
            status, _ = await http.request("GET", path)
        except (OSError, TimeoutError):
            stats[name].errors += 1
            return
        if status != 200:
            stats[name].errors += 1
            return
        stats[name].add(time.perf_counter() - due)

    started = time.perf_counter()
    await paced(rate, seconds, job)
    elapsed = time.perf_counter() - started
    every = Latencies([s for lat in stats.values() for s in lat.samples], sum(lat.errors for lat in stats.values()))
    return {
        "rate_target": rate,
        "requests": count,
        "requests_per_s": round(len(every.samples) / elapsed, 1),
        "get_order": stats["get_order"].summary(),
        "stock_page": stats["stock_page"].summary(),
        "all": every.summary(),
    }


async def saturation_phase(http: RawHttp, fx: Fixtures, *, clients: int, seconds: float) -> dict[str, Any]:
    stats = {name: Latencies() for name in CALLS}
    deadline = time.perf_counter() + seconds
    flows = 0

    async def client() -> None:
        nonlocal flows
        while time.perf_counter() < deadline:
            ok = await one_flow(http, fx, stats)
            flows += ok

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    writes = sum(len(stats[name].samples) for name in WRITES)
    calls = sum(len(lat.samples) for lat in stats.values())
    return {
        "clients": clients,
        "flows_per_s": round(flows / elapsed, 1),
        "write_calls_per_s": round(writes / elapsed, 1),
        "calls_per_s": round(calls / elapsed, 1),
        **_summaries(stats),
    }
