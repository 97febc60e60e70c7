"""/api/v1/inventory: stock levels, the movement ledger, receipts, adjustments, transfers.

Each command is one SQL function (``erp_api.inventory``: ``RECEIVE``, ``ADJUST``,
``TRANSFER``), called through ``run_function``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import inventory
from erp_api.deps import AnyRole, Clerical, Cursor, IdempotencyKey, Limit, Planning
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.inventory import (
    AdjustmentCreate,
    MovementKind,
    MovementPublic,
    ReceiptCreate,
    StockChangePublic,
    StockPublic,
    TransferCreate,
)

__all__ = ["router"]

router = APIRouter(prefix="/inventory", tags=["inventory"])
Id = Annotated[int, Path(gt=0, lt=2**63)]
OptionalId = Annotated[int | None, Query(gt=0, lt=2**63)]


@router.get("/stock", response_model=Page[StockPublic], responses=problems(422))
async def list_stock(
    *,
    ctx: AnyRole,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "sku", "-sku"] = "id",
    product_id: OptionalId = None,
    warehouse_id: OptionalId = None,
    below_reorder: Annotated[
        bool | None, Query(description="Only rows whose available is under the reorder point.")
    ] = None,
) -> Response:
    """Stock per product and warehouse: on hand, reserved, available."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    filters = {"product_id": product_id, "warehouse_id": warehouse_id, "below_reorder": below_reorder}
    body = await inventory.STOCK.page(ctx.conn, page, filters)
    return Response(body, media_type=JSON)


@router.get("/stock/{product_id}/{warehouse_id}", response_model=StockPublic, responses=problems(404, 422))
async def get_stock(*, product_id: Id, warehouse_id: Id, ctx: AnyRole) -> Response:
    """Stock of one product in one warehouse (zeros when it never had any)."""
    return Response(await inventory.get_stock(ctx.conn, product_id, warehouse_id), media_type=JSON)


@router.get("/movements", responses=problems(422))
async def list_movements(
    *,
    ctx: AnyRole,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id"] = "id",
    product_id: OptionalId = None,
    warehouse_id: OptionalId = None,
    kind: MovementKind | None = None,
    reference_type: Annotated[str | None, Query(max_length=32, pattern=NO_NUL, examples=["order"])] = None,
    reference_id: OptionalId = None,
) -> Page[MovementPublic]:
    """The append-only movement ledger: every change to on hand or reserved, and why."""
    filters = {
        "product_id": product_id,
        "warehouse_id": warehouse_id,
        "kind": kind,
        "reference_type": reference_type,
        "reference_id": reference_id,
    }
    return await inventory.list_movements(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), filters)


@router.post(
    "/receipts", status_code=status.HTTP_201_CREATED, response_model=StockChangePublic, responses=problems(409, 422)
)
async def receive(*, request: Request, body: ReceiptCreate, ctx: Clerical, key: IdempotencyKey = None) -> Response:
    """Goods in: raises on hand (valued at standard cost: inventory against goods received)."""
    args = (body.product_id, body.warehouse_id, body.quantity, body.note)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=inventory.RECEIVE, args=args)


@router.post(
    "/adjustments", status_code=status.HTTP_201_CREATED, response_model=StockChangePublic, responses=problems(409, 422)
)
async def adjust(*, request: Request, body: AdjustmentCreate, ctx: Planning, key: IdempotencyKey = None) -> Response:
    """Correct on hand after a count (never below zero, never below what is reserved)."""
    args = (body.product_id, body.warehouse_id, body.delta, body.reason)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=inventory.ADJUST, args=args)


@router.post(
    "/transfers", status_code=status.HTTP_201_CREATED, response_model=StockChangePublic, responses=problems(409, 422)
)
async def transfer(*, request: Request, body: TransferCreate, ctx: Clerical, key: IdempotencyKey = None) -> Response:
    """Move available stock from one warehouse to another, atomically."""
    args = (body.product_id, body.from_warehouse_id, body.to_warehouse_id, body.quantity, body.note)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=inventory.TRANSFER, args=args)
