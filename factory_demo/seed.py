"""The seed order flow that ``factory demo`` runs against a live ERP: create an order,
reserve its stock, invoice it, take the payment, and watch the events reach the broker.

It talks to the API over HTTP like any client, as a short-lived admin API key that it
creates in the database and revokes at the end (the demo knows no user passwords).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from erp_api import users
from erp_api.audit import Actor
from factory import events
from factory.db import connect
from factory.mqtt import connect as mqtt_connect
from factory.mqtt import parse_mqtt_url

__all__ = ["EXPECTED_EVENTS", "PlantSeed", "SeedError", "SeedResult", "seed_order_flow", "seed_plant"]

log = logging.getLogger(__name__)

EXPECTED_EVENTS: Final = ("order.created", "order.confirmed", "order.invoiced", "invoice.issued", "invoice.paid")


class SeedError(RuntimeError):
    """The ERP could not be reached, or answered a step with another status than expected."""


@dataclass
class SeedResult:
    order_id: int
    order_number: str
    invoice_number: str
    gross: str
    currency: str
    source: str = ""  # the ERP's events carry it: other ERPs on the broker number theirs alike
    events: list[str] = field(default_factory=list)  # kinds seen on the broker for this flow, in arrival order
    seconds: float = 0.0

    @property
    def missing_events(self) -> list[str]:
        return [kind for kind in EXPECTED_EVENTS if kind not in self.events]


async def seed_order_flow(
    database_url: str, erp_url: str, mqtt_url: str | None = None, *, timeout_s: float = 10.0
) -> SeedResult:
    """Run the flow once; with ``mqtt_url``, wait up to ``timeout_s`` for its events."""
    started = time.monotonic()
    name = f"seed-{uuid.uuid4().hex[:8]}"
    async with await connect(database_url, autocommit=True) as conn:
        key = await users.create_api_key(conn, name, "admin", by=Actor.local())
        source = await events.source(conn, "erp")
    http = httpx.AsyncClient(base_url=erp_url, headers={"X-API-Key": key.key}, timeout=30)
    seen: list[dict[str, Any]] = []
    arrived = asyncio.Event()
    try:
        async with _listening(mqtt_url, seen, arrived):
            result = await _flow(http, name)
            result.source = source
            if mqtt_url is not None:
                await _await_events(seen, arrived, result, timeout_s)
    finally:
        await http.aclose()
        async with await connect(database_url, autocommit=True) as conn:
            await users.revoke_api_key(conn, name, by=Actor.local())
    result.seconds = round(time.monotonic() - started, 2)
    return result


async def _call(http: httpx.AsyncClient, status: int, method: str, path: str, body: object | None = None) -> Any:
    try:
        response = await http.request(method, path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    except httpx.ConnectError as exc:  # not listening (yet): an OSError, as a socket would say
        raise ConnectionError(f"{method} {path}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SeedError(f"{method} {path}: {exc}") from exc
    if response.status_code != status:
        raise SeedError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


async def _flow(http: httpx.AsyncClient, tag: str) -> SeedResult:
    wh = await _call(http, 201, "POST", "/api/v1/warehouses", {"code": f"FG-{tag}", "name": "Finished goods"})
    customer = await _call(
        http,
        201,
        "POST",
        "/api/v1/customers",
        {"name": f"Sweet Foods ({tag})", "email": "ap@sweetfoods.example", "payment_terms_days": 30},
    )
    currency = "EUR"
    product = await _call(
        http,
        201,
        "POST",
        "/api/v1/products",
        {
            "sku": f"SUGAR-50KG-{tag}",
            "name": "Refined sugar, 50 kg bag",
            "uom": "ea",
            "price": {"amount": "42.00", "currency": currency},
            "cost": {"amount": "30.00", "currency": currency},
            "tax_rate": "0.07",
            "reorder_point": "20",
        },
    )
    await _call(
        http,
        201,
        "POST",
        "/api/v1/inventory/receipts",
        {"product_id": product["id"], "warehouse_id": wh["id"], "quantity": "200", "note": "seed"},
    )
    order = await _call(
        http,
        201,
        "POST",
        "/api/v1/orders",
        {
            "customer_id": customer["id"],
            "warehouse_id": wh["id"],
            "notes": tag,
            "lines": [{"product_id": product["id"], "quantity": "25"}],
        },
    )
    await _call(http, 200, "POST", f"/api/v1/orders/{order['id']}/confirm")
    invoice = await _call(http, 201, "POST", "/api/v1/invoices", {"order_id": order["id"]})
    await _call(http, 201, "POST", f"/api/v1/invoices/{invoice['id']}/payments", {"amount": invoice["gross"]})
    return SeedResult(
        order_id=order["id"],
        order_number=order["number"],
        invoice_number=invoice["number"],
        gross=invoice["gross"]["amount"],
        currency=invoice["gross"]["currency"],
    )


@dataclass
class PlantSeed:
    """The mill's master data in the ERP, for the demo's OEE and maintenance jobs."""

    warehouse: str  # code of the warehouse the spare parts are kept in
    line_product: str  # SKU of the mills' product; its ideal rate is OEE's
    spare_parts: dict[str, list[tuple[str, str]]]  # asset -> (SKU, quantity) reserved by its maintenance order
    production_order: str  # the production work order running on mill 2, at its own ideal rate; the
    # production-counts job advances it from mill 2's cane counter (its cane is in stock for that)
    service_key_name: str  # the maintenance job's API key (role service); revoke it by this name
    service_key: str = field(repr=False)


async def seed_plant(database_url: str, erp_url: str, site: str) -> PlantSeed:
    """Cane crushing (240 t/h ideal) with mill 2's production order at 207.6 t/h, started, with
    cane in stock for it to crush, and centrifugal 1's spare parts from a preferred supplier, one
    bearing short; plus a service API key for the maintenance and production-counts jobs."""
    tag = uuid.uuid4().hex[:6]
    async with await connect(database_url, autocommit=True) as conn:
        admin = await users.create_api_key(conn, f"seed-plant-{tag}", "admin", by=Actor.local())
        service = await users.create_api_key(conn, f"maintenance-{tag}", "service", by=Actor.local())
    http = httpx.AsyncClient(base_url=erp_url, headers={"X-API-Key": admin.key}, timeout=30)
    try:
        wh = await _call(http, 201, "POST", "/api/v1/warehouses", {"code": f"MILL-{tag}", "name": "Mill stores"})

        async def product(sku: str, name: str, uom: str, **more: object) -> dict[str, Any]:
            body = {"sku": f"{sku}-{tag}", "name": name, "uom": uom, "tax_rate": "0",
                    "price": {"amount": "1.00", "currency": "EUR"}, **more}  # fmt: skip
            return dict(await _call(http, 201, "POST", "/api/v1/products", body))

        cane = await product("CANE", "Sugar cane", "t")
        crush = await product("CRUSH", "Cane crushing, tonnes of cane", "t", ideal_rate="240",
                              bom=[{"component_id": cane["id"], "quantity": "1"}])  # fmt: skip
        order = await _call(http, 201, "POST", "/api/v1/work-orders", {
            "kind": "production", "product_id": crush["id"], "planned_quantity": "5000", "warehouse_id": wh["id"],
            "site": site, "asset": "mill2", "ideal_rate": "207.6", "notes": "mill 2 runs on its smaller drive",
        })  # fmt: skip
        await _call(http, 200, "POST", f"/api/v1/work-orders/{order['id']}/start")
        cane_in = {"product_id": cane["id"], "warehouse_id": wh["id"], "quantity": "100000", "note": "seed"}
        await _call(http, 201, "POST", "/api/v1/inventory/receipts", cane_in)
        vendor = await _call(http, 201, "POST", "/api/v1/suppliers",
                             {"code": f"BRG-{tag}", "name": "Mill Bearings Ltd", "currency": "EUR"})  # fmt: skip
        spares = []
        # One basket bearing on the shelf, two needed: the maintenance order waits for one and
        # raises a requisition to the preferred supplier (docs/erp-api.md, "Spare parts short").
        parts = (
            ("BRG-6205", "Basket bearing 6205", "2", "1", "38.00"),
            ("SEAL-40", "Shaft seal 40 mm", "4", "20", "4.50"),
        )
        for sku, name, quantity, on_hand, price in parts:
            part = await product(sku, name, "ea", cost={"amount": price, "currency": "EUR"})
            receipt = {"product_id": part["id"], "warehouse_id": wh["id"], "quantity": on_hand, "note": "seed"}
            await _call(http, 201, "POST", "/api/v1/inventory/receipts", receipt)
            item = {"supplier_id": vendor["id"], "product_id": part["id"], "lead_time_days": 2, "preferred": True,
                    "price": {"amount": price, "currency": "EUR"}}  # fmt: skip
            await _call(http, 201, "POST", "/api/v1/supplier-items", item)
            spares.append((str(part["sku"]), quantity))
    finally:
        await http.aclose()
        async with await connect(database_url, autocommit=True) as conn:
            await users.revoke_api_key(conn, f"seed-plant-{tag}", by=Actor.local())
    return PlantSeed(
        warehouse=str(wh["code"]), line_product=str(crush["sku"]), spare_parts={"centrifugal1": spares},
        production_order=str(order["number"]), service_key_name=service.name, service_key=service.key,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _listening(mqtt_url: str | None, seen: list[dict[str, Any]], arrived: asyncio.Event) -> Any:
    if mqtt_url is None:
        yield
        return
    async with mqtt_connect(parse_mqtt_url(mqtt_url), f"erp-seed-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{events.TOPIC_PREFIX}/#", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                with contextlib.suppress(ValueError):
                    seen.append(json.loads(bytes(message.payload)))
                    arrived.set()

        task = asyncio.create_task(collect(), name="erp-seed-listener")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _ours(event: dict[str, Any], result: SeedResult) -> bool:
    if event.get("source") != result.source:
        return False
    data = event.get("data") or {}
    if event.get("aggregate", {}).get("type") == "order":
        return bool(data.get("number") == result.order_number)
    invoice = data.get("invoice", data)
    return bool(isinstance(invoice, dict) and invoice.get("number") == result.invoice_number)


async def _await_events(
    seen: list[dict[str, Any]], arrived: asyncio.Event, result: SeedResult, timeout_s: float
) -> None:
    """Wait, message by message, until every expected event of this flow was seen."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                arrived.clear()  # before looking, so a message landing meanwhile wakes the wait
                result.events = [str(e["kind"]) for e in seen if _ours(e, result)]
                if not result.missing_events:
                    return
                await arrived.wait()
    log.warning("seed flow: events not seen on the broker within %.0f s: %s", timeout_s, result.missing_events)
