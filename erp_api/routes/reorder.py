"""/api/v1/purchasing/reorder-suggestions: what to buy, and its conversion into draft orders.

The suggestions are a report (``erp.reorder_suggestions``), the conversion one SQL function
(``erp_api.purchasing.CONVERT``) called through ``run_function``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from erp_api import purchasing
from erp_api.deps import IdempotencyKey, Maintenance, Reader
from erp_api.errors import ForbiddenError
from erp_api.idempotency import run_function
from erp_api.responses import JSON
from erp_api.routes import problems
from erp_api.schemas.purchasing import ConversionPublic, ConvertCommand, ReorderSuggestionPublic

__all__ = ["router"]

router = APIRouter(prefix="/purchasing/reorder-suggestions", tags=["purchasing"])


@router.get("", response_model=list[ReorderSuggestionPublic], responses=problems(422))
async def reorder_suggestions(
    *, ctx: Reader, warehouse_id: Annotated[int | None, Query(gt=0, lt=2**63)] = None
) -> Response:
    """Per product and warehouse whose available stock plus what is on order is below its
    reorder point, or that open maintenance orders wait for: what to buy, from whom, by when, and why."""
    return Response(await purchasing.suggestions(ctx.conn, warehouse_id), media_type=JSON)


@router.post("/convert", response_model=ConversionPublic, responses=problems(409, 422))
async def convert_reorder_suggestions(
    *, request: Request, body: ConvertCommand, ctx: Maintenance, key: IdempotencyKey = None
) -> Response:
    """One draft purchase order per supplier and warehouse for the suggestions that have a
    supplier (only `product_ids`' when given). The drafts count as on order, so converting again
    makes no duplicates; send an Idempotency-Key to make a retry return the same orders.
    Services (the maintenance job) must name the products: a requisition for the parts an
    order waits for."""
    if ctx.who.role == "service" and body.product_ids is None:
        raise ForbiddenError("services may convert the suggestions of named products only (product_ids)")
    args = (body.warehouse_id, body.product_ids)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=purchasing.CONVERT, args=args)
