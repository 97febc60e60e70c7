"""/api/v1/purchase-orders: draft, approve, receive against a line, cancel.

Each command is one SQL function (``erp_api.purchasing``: ``CREATE_ORDER``,
``UPDATE_ORDER``, ``APPROVE``, ``CANCEL``, ``RECEIVE``), called through ``run_function``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import purchasing
from erp_api.deps import Clerical, Ctx, Cursor, IdempotencyKey, IfMatch, Limit, Planning, Reader
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import problems
from erp_api.schemas.purchasing import (
    PurchaseOrderCreate,
    PurchaseOrderPublic,
    PurchaseOrderStatus,
    PurchaseOrderUpdate,
    ReceiveCommand,
)

__all__ = ["router"]

router = APIRouter(prefix="/purchase-orders", tags=["purchasing"])
OrderId = Annotated[int, Path(gt=0, lt=2**63)]
FilterId = Annotated[int | None, Query(gt=0, lt=2**63)]
STATE_PROBLEMS = problems(404, 409, 412, 422)


@router.get("", response_model=Page[PurchaseOrderPublic], responses=problems(422))
async def list_purchase_orders(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "created_at", "-created_at"] = "id",
    status: PurchaseOrderStatus | None = None,
    supplier_id: FilterId = None,
    warehouse_id: FilterId = None,
) -> Response:
    """Purchase orders, filtered by status, supplier or warehouse."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    filters = {"status": status, "supplier_id": supplier_id, "warehouse_id": warehouse_id}
    return Response(await purchasing.ORDERS.page(ctx.conn, page, filters), media_type=JSON)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PurchaseOrderPublic, responses=problems(409, 422))
async def create_purchase_order(
    *, request: Request, body: PurchaseOrderCreate, ctx: Planning, key: IdempotencyKey = None
) -> Response:
    """A draft purchase order from an active supplier in the ledger's currency; send an Idempotency-Key."""
    lines = purchasing.line_args(body.lines, ctx.currency)
    args = (body.supplier_id, body.warehouse_id, body.expected_date, body.notes, *lines)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=purchasing.CREATE_ORDER, args=args)


@router.get("/{purchase_order_id}", response_model=PurchaseOrderPublic, responses=problems(404, 422))
async def get_purchase_order(*, purchase_order_id: OrderId, ctx: Reader) -> Response:
    """One purchase order with what was received and invoiced per line; ETag is its version."""
    return (await purchasing.ORDERS.get(ctx.conn, purchase_order_id)).response()


@router.patch("/{purchase_order_id}", response_model=PurchaseOrderPublic, responses=problems(404, 409, 412, 422, 428))
async def update_purchase_order(
    *, request: Request, purchase_order_id: OrderId, body: PurchaseOrderUpdate, ctx: Planning, if_match: IfMatch = None
) -> Response:
    """Change a draft: expected date, notes, or the whole list of lines. Requires If-Match."""
    changes = purchasing.update_order_args(body, ctx.currency)  # a null or empty body is 422 before If-Match is judged
    args = (purchase_order_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=purchasing.UPDATE_ORDER, args=args)


async def _transition(
    call: str, request: Request, ctx: Ctx, purchase_order_id: int, *, key: str | None, if_match: str | None
) -> Response:
    expected = expected_version(if_match, required=False)
    return await run_function(ctx.conn, ctx.actor, key, request, None, call=call, args=(purchase_order_id, expected))


@router.post("/{purchase_order_id}/approve", response_model=PurchaseOrderPublic, responses=STATE_PROBLEMS)
async def approve_purchase_order(
    *,
    request: Request,
    purchase_order_id: OrderId,
    ctx: Planning,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """draft -> approved: goods may be received from now on."""
    return await _transition(purchasing.APPROVE, request, ctx, purchase_order_id, key=key, if_match=if_match)


@router.post("/{purchase_order_id}/cancel", response_model=PurchaseOrderPublic, responses=STATE_PROBLEMS)
async def cancel_purchase_order(
    *,
    request: Request,
    purchase_order_id: OrderId,
    ctx: Planning,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """draft or approved (nothing received) -> cancelled."""
    return await _transition(purchasing.CANCEL, request, ctx, purchase_order_id, key=key, if_match=if_match)


@router.post("/{purchase_order_id}/receive", response_model=PurchaseOrderPublic, responses=STATE_PROBLEMS)
async def receive_purchase_order(
    *,
    request: Request,
    purchase_order_id: OrderId,
    body: ReceiveCommand,
    ctx: Clerical,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Goods in against one line of an approved order: stock up, inventory at standard cost,
    goods received not invoiced at the order's price. Never more than is left on the line (409)."""
    expected = expected_version(if_match, required=False)
    args = (purchase_order_id, expected, body.line_no, body.quantity, body.note)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=purchasing.RECEIVE, args=args)
