"""The one change this server makes: a maintenance work order, through the ERP's HTTP API.

The caller's own credential goes with the request, so the ERP authorises and records the caller
(its audit trail's actor), not this server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from mcp_server.auth import Caller
from mcp_server.errors import ErpCallError, RefusedError
from mcp_server.models import OpenedWorkOrder

__all__ = ["open_maintenance_order"]

REPLAY_HEADER = "Idempotent-Replayed"  # erp_api.idempotency.REPLAY_HEADER


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"
    if not isinstance(body, dict):
        return f"{response.status_code}"
    return f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}".strip()


async def open_maintenance_order(
    erp_url: str, caller: Caller, body: dict[str, Any], key: str, *, timeout_s: float
) -> OpenedWorkOrder:
    """POST /api/v1/work-orders as ``caller`` under ``key``; a transport failure is retried once
    under the same key (the ERP replays what it did the first time)."""
    url = erp_url.rstrip("/") + "/api/v1/work-orders"
    headers = caller.erp_headers() | {"Idempotency-Key": key}
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        for attempt in (1, 2):
            try:
                response = await http.post(url, json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise ErpCallError(f"the ERP at {erp_url} did not answer: {exc}") from exc
    if response.status_code in (401, 403):
        raise RefusedError(f"the ERP refused the work order: {_problem(response)}")
    if response.status_code != 201:
        raise ErpCallError(f"the ERP did not open the work order: {_problem(response)}")
    order = response.json()
    waiting = {str(p["sku"]): Decimal(p["backordered"]) for p in order.get("spare_parts", [])}
    return OpenedWorkOrder(
        id=int(order["id"]), number=str(order["number"]), status=str(order["status"]), idempotency_key=key,
        replayed=response.headers.get(REPLAY_HEADER, "").lower() == "true",
        backordered={sku: q for sku, q in waiting.items() if q > 0},
    )  # fmt: skip
