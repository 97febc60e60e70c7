"""/api/v1/audit: the audit trail, for accountants and admins."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from erp_api import audit
from erp_api.deps import Accounting, Cursor, Limit
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.audit import AuditRecordPublic
from erp_api.schemas.common import IsoDateTime

__all__ = ["router"]

router = APIRouter(prefix="/audit", tags=["audit"])

Text = Annotated[str | None, Query(min_length=1, max_length=255, pattern=NO_NUL)]


@router.get("", response_model=Page[AuditRecordPublic], responses=problems(422))
async def list_audit(
    *,
    ctx: Accounting,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id"] = "id",
    actor: Text = None,
    action: Text = None,
    entity_type: Text = None,
    entity_id: Text = None,
    request_id: Text = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
) -> Response:
    """Every change, oldest first (sort `-id`: newest first), filtered by who, what, which
    record, which request or when (`since` inclusive, `until` exclusive)."""
    filters = {"actor": actor, "action": action, "entity_type": entity_type, "entity_id": entity_id,
               "request_id": request_id, "since": since, "until": until}  # fmt: skip
    body = await audit.DOCS.page(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), filters)
    return Response(body, media_type=JSON)
