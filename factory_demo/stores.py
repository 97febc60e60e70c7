"""The demo's purchasing desk and stores: the requisitions the maintenance job raised arrive.

A maintenance order that waits for a part raises a draft purchase order to the part's
preferred supplier (``maintenance_models.jobs``). At the end of the demo a planner approves
each such draft, the supplier delivers, and the stores receive every line against the
order; the ERP then reserves the parts for the waiting order (``erp_api.backorders``), which
turns ready. Everything goes through the ERP's API, as people would do it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final

import httpx

from erp_api import users
from erp_api.audit import Actor
from factory.db import connect

__all__ = ["REQUISITION_NOTE", "receive_requisitions"]

REQUISITION_NOTE: Final = "requisition: parts waited for"  # erp_api/sql/0022_requisitions.sql


async def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code}"
                           f" {response.text[:300]}")  # fmt: skip
    return response.json()


async def _waiting(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    page = await _ok(await http.get("/api/v1/work-orders", params={"kind": "maintenance", "status": "open"}))
    return [o for o in page["items"] if not o["parts_ready"]]


async def _still_waiting(http: httpx.AsyncClient, waiting: set[str], within_s: float) -> set[str]:
    """Which of ``waiting`` still wait for parts after the ERP's filler (every 2 s) had ``within_s``."""
    still = waiting
    for _ in range(max(1, round(within_s / 0.5))):
        still = {o["number"] for o in await _waiting(http)} & waiting
        if not still:
            break
        await asyncio.sleep(0.5)
    return still


async def receive_requisitions(database_url: str, erp_url: str, *, ready_within_s: float = 15.0) -> list[str]:
    """Approve and receive the maintenance job's draft purchase orders; wait until the orders
    that waited for them are ready. One line per purchase order, saying what happened."""
    name = f"demo-stores-{uuid.uuid4().hex[:6]}"
    async with await connect(database_url, autocommit=True) as conn:
        key = await users.create_api_key(conn, name, "admin", by=Actor.local())
    lines: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=erp_url, headers={"X-API-Key": key.key}, timeout=30) as http:
            waiting = {o["number"] for o in await _waiting(http)}
            drafts = await _ok(await http.get("/api/v1/purchase-orders", params={"status": "draft", "limit": 200}))
            for po in (o for o in drafts["items"] if o.get("notes") == REQUISITION_NOTE):
                await _ok(await http.post(f"/api/v1/purchase-orders/{po['id']}/approve"))
                for line in po["lines"]:
                    receipt = {"line_no": line["line_no"], "quantity": line["quantity"]}
                    await _ok(await http.post(f"/api/v1/purchase-orders/{po['id']}/receive", json=receipt))
                parts = ", ".join(f"{ln['sku']} x{ln['quantity']}" for ln in po["lines"])
                lines.append(f"{po['number']} ({parts}) raised by the maintenance job: approved, delivered, received")
            if lines:
                still = await _still_waiting(http, waiting, ready_within_s)
                ready = sorted(waiting - still)
                lines.append(f"maintenance orders now ready: {', '.join(ready) or 'none'}"
                             + (f"; still waiting: {', '.join(sorted(still))}" if still else ""))  # fmt: skip
    finally:
        async with await connect(database_url, autocommit=True) as conn:
            await users.revoke_api_key(conn, name, by=Actor.local())
    return lines
