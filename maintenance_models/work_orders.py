"""Maintenance work orders in the ERP, opened over its HTTP API with a service API key.

One open order per asset (at its site) and cause: an order belongs to a cause when its
``reason`` starts with ``"<cause>:"``. Before opening, every maintenance order of the asset at
that site (or without a site) is read; if one of the cause is ``open`` or ``in_progress``,
nothing is sent. Otherwise the order is posted, with the site, under a deterministic
``Idempotency-Key`` built from the site, the asset, the cause and the id of the newest
closed (``done``/``cancelled``) order of that cause: a retried POST replays the first answer,
and closing the order changes the key, so a later crossing opens a new order.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from maintenance_models.errors import WorkOrderError

__all__ = ["OPEN_STATUSES", "OpenResult", "SparePart", "WorkOrderClient", "idempotency_key"]

log = logging.getLogger(__name__)

Priority = Literal["low", "normal", "high", "urgent"]
OPEN_STATUSES: Final = frozenset({"open", "in_progress"})
_PAGE: Final = 200


class SparePart(BaseModel):
    """One spare part of an asset's maintenance order: the ERP product's SKU and the quantity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str = Field(min_length=1, max_length=64)
    quantity: Decimal = Field(gt=0, max_digits=15, decimal_places=3)


@dataclass(frozen=True)
class OpenResult:
    asset: str
    work_order: int
    number: str
    opened: bool  # False: an order of this asset and cause was already open
    backordered: dict[str, Decimal] = field(default_factory=dict)  # SKU -> quantity still to reserve

    @classmethod
    def of(cls, asset: str, order: dict[str, Any], *, opened: bool) -> OpenResult:
        waiting = {str(p["sku"]): Decimal(p["backordered"]) for p in order.get("spare_parts", [])}
        return cls(asset, int(order["id"]), str(order["number"]), opened,
                   {sku: quantity for sku, quantity in waiting.items() if quantity > 0})  # fmt: skip


def idempotency_key(site: str, asset: str, cause: str, last_closed_id: int) -> str:
    """The same key for every attempt until the cause's newest order at this asset is closed."""
    digest = hashlib.sha256(cause.encode()).hexdigest()[:16]
    return f"maintenance:{site}:{asset}:{digest}:after:{last_closed_id}"


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"
    if not isinstance(body, dict):
        return f"{response.status_code}: {body!r}"[:300]
    errors = "; ".join(f"{e.get('field')}: {e.get('reason')}" for e in body.get("errors") or [])
    text = f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}"
    return text + (f" ({errors})" if errors else "")


class WorkOrderClient:
    """The few ERP calls the maintenance job makes; use as ``async with``."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/api/v1", headers={"X-API-Key": api_key}, timeout=timeout_s
        )
        self._products: dict[str, int] = {}
        self._warehouses: dict[str, int] = {}

    async def __aenter__(self) -> WorkOrderClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise WorkOrderError(f"ERP GET {path}: {exc}") from exc
        if response.status_code != 200:
            raise WorkOrderError(f"ERP GET {path}: {_problem(response)}")
        body: dict[str, Any] = response.json()
        return body

    async def _pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self._get(path, {**params, "limit": _PAGE} | ({"cursor": cursor} if cursor else {}))
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def warehouse_id(self, code: str) -> int:
        if code not in self._warehouses:
            for item in await self._pages("/warehouses", {}):
                self._warehouses[str(item["code"])] = int(item["id"])
            if code not in self._warehouses:
                raise WorkOrderError(f"ERP has no warehouse with code {code!r}")
        return self._warehouses[code]

    async def product_id(self, sku: str) -> int:
        if sku not in self._products:
            items = (await self._get("/products", {"sku": sku}))["items"]
            if not items:
                raise WorkOrderError(f"ERP has no product with SKU {sku!r}")
            self._products[sku] = int(items[0]["id"])
        return self._products[sku]

    async def state(self, site: str, asset: str, cause: str) -> tuple[dict[str, Any] | None, int]:
        """The open order of this asset at ``site`` and cause (or None), and the id of its newest
        closed one (0: none). An order without a site (made before orders had one) counts as this
        site's."""
        orders = await self._pages("/work-orders", {"kind": "maintenance", "asset": asset, "sort": "-id"})
        mine = [o for o in orders
                if str(o.get("reason") or "").startswith(f"{cause}:") and o.get("site") in (site, None)]  # fmt: skip
        open_ = next((o for o in mine if o["status"] in OPEN_STATUSES), None)
        closed = max((int(o["id"]) for o in mine if o["status"] not in OPEN_STATUSES), default=0)
        return open_, closed

    async def open(
        self, site: str, asset: str, cause: str, detail: str, *, priority: Priority, warehouse: str,
        parts: list[SparePart],
    ) -> OpenResult:  # fmt: skip
        """Open a maintenance order for ``asset`` at ``site`` unless one of ``cause`` is open; the
        parts in stock are reserved, the rest back-ordered (the ERP reserves them as they arrive)."""
        existing, last_closed = await self.state(site, asset, cause)
        if existing is not None:
            return OpenResult.of(asset, existing, opened=False)
        body = {
            "kind": "maintenance",
            "site": site,
            "asset": asset,
            "reason": f"{cause}: {detail}"[:500],
            "priority": priority,
            "warehouse_id": await self.warehouse_id(warehouse),
            "spare_parts": [{"product_id": await self.product_id(p.sku), "quantity": str(p.quantity)} for p in parts],
        }
        order = await self._post("/work-orders", body, idempotency_key(site, asset, cause, last_closed), 201, asset)
        result = OpenResult.of(asset, order, opened=True)
        log.info("opened maintenance work order %s for %s at %s: %s%s", result.number, asset, site, body["reason"],
                 f"; back-ordered {result.backordered}" if result.backordered else "")  # fmt: skip
        return result

    async def requisition(self, order: OpenResult, warehouse: str) -> list[str]:
        """Draft purchase orders to the preferred suppliers for the parts ``order`` waits for
        (the ERP's reorder suggestions of those products: what is on order already counts, so a
        second call for the same wait makes nothing more). The numbers of the orders made."""
        products = sorted([await self.product_id(sku) for sku in order.backordered])
        body = {"warehouse_id": await self.warehouse_id(warehouse), "product_ids": products}
        key = f"requisition:{order.work_order}:" + "-".join(map(str, products))
        made = await self._post("/purchasing/reorder-suggestions/convert", body, key, 200, order.number)
        numbers = [str(po["number"]) for po in made["purchase_orders"]]
        if numbers:
            log.info("requisition for %s (waiting for %s): draft purchase orders %s", order.number,
                     ", ".join(order.backordered), ", ".join(numbers))  # fmt: skip
        return numbers

    async def _post(self, path: str, body: dict[str, Any], key: str, expect: int, what: str) -> dict[str, Any]:
        """POST under an Idempotency-Key; a lost answer is retried once under the same key (the
        ERP replays it)."""
        for attempt in (1, 2):
            try:
                response = await self._http.post(path, json=body, headers={"Idempotency-Key": key})
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise WorkOrderError(f"ERP POST {path} for {what}: {exc}") from exc
                log.warning("ERP POST %s for %s: %s; retrying under the same key", path, what, exc)
        if response.status_code != expect:
            raise WorkOrderError(f"ERP POST {path} for {what}: {_problem(response)}")
        answer: dict[str, Any] = response.json()
        return answer
