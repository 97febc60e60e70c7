"""/api/v1/orders: sales orders and their state changes.

Each command is one SQL function (``erp_api.orders``: ``CREATE``, ``UPDATE``, ``CONFIRM``,
``SHIP``, ``CANCEL``), called through ``run_function``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import orders
from erp_api.deps import Clerical, Cursor, IdempotencyKey, IfMatch, Limit, Reader
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import problems
from erp_api.schemas.common import IsoDateTime
from erp_api.schemas.orders import OrderCreate, OrderPublic, OrderStatus, OrderUpdate

__all__ = ["router"]

router = APIRouter(prefix="/orders", tags=["orders"])
OrderId = Annotated[int, Path(gt=0, lt=2**63)]


@router.get("", response_model=Page[OrderPublic], responses=problems(422))
async def list_orders(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "created_at", "-created_at"] = "id",
    status: OrderStatus | None = None,
    customer_id: Annotated[int | None, Query(gt=0, lt=2**63)] = None,
    created_from: IsoDateTime | None = None,
    created_to: IsoDateTime | None = None,
) -> Response:
    """Sales orders, filtered by status, customer or creation time."""
    filters = {"status": status, "customer_id": customer_id, "created_from": created_from, "created_to": created_to}
    body = await orders.DOCS.page(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), filters)
    return Response(body, media_type=JSON)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrderPublic, responses=problems(409, 422))
async def create_order(*, request: Request, body: OrderCreate, ctx: Clerical, key: IdempotencyKey = None) -> Response:
    """A draft order; line prices default to the product prices, tax rates come from the products."""
    args = (
        body.customer_id,
        body.warehouse_id,
        body.notes,
        [line.product_id for line in body.lines],
        [line.quantity for line in body.lines],
        orders.unit_prices(body.lines, ctx.currency),
    )
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=orders.CREATE, args=args)


@router.get("/{order_id}", response_model=OrderPublic, responses=problems(404, 422))
async def get_order(*, order_id: OrderId, ctx: Reader) -> Response:
    """One order with its lines and totals; ETag is its version."""
    return (await orders.DOCS.get(ctx.conn, order_id)).response()


@router.patch("/{order_id}", response_model=OrderPublic, responses=problems(404, 409, 412, 422, 428))
async def update_order(
    *, request: Request, order_id: OrderId, body: OrderUpdate, ctx: Clerical, if_match: IfMatch = None
) -> Response:
    """Change a draft order. Requires If-Match."""
    changes = orders.update_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (order_id, expected_version(if_match, required=True), *changes)
    # No Idempotency-Key: If-Match already makes a retry safe (a repeated change is a 412).
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=orders.UPDATE, args=args)


STATE_PROBLEMS = problems(404, 409, 412, 422)


@router.post("/{order_id}/confirm", response_model=OrderPublic, responses=STATE_PROBLEMS)
async def confirm_order(
    *,
    request: Request,
    order_id: OrderId,
    ctx: Clerical,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """draft -> confirmed: reserves every line's quantity, or 409 naming the short lines."""
    expected = expected_version(if_match, required=False)
    return await run_function(ctx.conn, ctx.actor, key, request, None, call=orders.CONFIRM, args=(order_id, expected))


@router.post("/{order_id}/ship", response_model=OrderPublic, responses=STATE_PROBLEMS)
async def ship_order(
    *,
    request: Request,
    order_id: OrderId,
    ctx: Clerical,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """confirmed (or invoiced, not yet shipped) -> shipped: consumes the reservation."""
    expected = expected_version(if_match, required=False)
    return await run_function(ctx.conn, ctx.actor, key, request, None, call=orders.SHIP, args=(order_id, expected))


@router.post("/{order_id}/cancel", response_model=OrderPublic, responses=STATE_PROBLEMS)
async def cancel_order(
    *,
    request: Request,
    order_id: OrderId,
    ctx: Clerical,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """draft or confirmed -> cancelled: releases the reservation."""
    expected = expected_version(if_match, required=False)
    return await run_function(ctx.conn, ctx.actor, key, request, None, call=orders.CANCEL, args=(order_id, expected))
