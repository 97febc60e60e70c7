"""The audit trail as GET /audit returns it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["AuditRecordPublic"]


class AuditRecordPublic(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="A user or API key; `local:<user>`: the factory command; `db:<role>`: SQL by hand.")
    request_id: str | None = Field(description="The `X-Request-Id` of the request that made the change.")
    action: str = Field(description="The event kind (`order.confirmed`) or account change (`user.disabled`).")
    entity_type: str = Field(description="order, invoice, stock, work_order, product, customer, warehouse, user, ...")
    entity_id: str
    event_id: int | None = Field(description="The event on the bus, for changes that publish one.")
    detail: dict[str, Any] = Field(description="The document after the change, or what changed.")
