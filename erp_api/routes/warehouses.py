"""/api/v1/warehouses.

Creating and renaming a warehouse are SQL functions (``erp_api.parties``:
``CREATE_WAREHOUSE``, ``UPDATE_WAREHOUSE``), called through ``run_function``; reads return
``erp.warehouse_doc`` as well."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response, status

from erp_api import parties
from erp_api.deps import AnyRole, Cursor, IdempotencyKey, IfMatch, Limit, Planning
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import problems
from erp_api.schemas.catalog import WarehouseCreate, WarehousePublic, WarehouseUpdate

__all__ = ["router"]

router = APIRouter(prefix="/warehouses", tags=["warehouses"])
WarehouseId = Annotated[int, Path(gt=0, lt=2**63)]
Sort = Literal["id", "-id", "code", "-code", "name", "-name"]


@router.get("", response_model=Page[WarehousePublic], responses=problems(422))
async def list_warehouses(
    *, ctx: AnyRole, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None, sort: Sort = "id"
) -> Response:
    """Warehouses."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    return Response(await parties.WAREHOUSES.page(ctx.conn, page), media_type=JSON)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WarehousePublic, responses=problems(409, 422))
async def create_warehouse(
    *, request: Request, body: WarehouseCreate, ctx: Planning, key: IdempotencyKey = None
) -> Response:
    """Add a warehouse (codes are unique)."""
    args = parties.create_warehouse_args(body)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=parties.CREATE_WAREHOUSE, args=args)


@router.get("/{warehouse_id}", response_model=WarehousePublic, responses=problems(404, 422))
async def get_warehouse(*, warehouse_id: WarehouseId, ctx: AnyRole) -> Response:
    """One warehouse, with its ETag."""
    return (await parties.WAREHOUSES.get(ctx.conn, warehouse_id)).response()


@router.patch("/{warehouse_id}", response_model=WarehousePublic, responses=problems(404, 409, 412, 422, 428))
async def update_warehouse(
    *, request: Request, warehouse_id: WarehouseId, body: WarehouseUpdate, ctx: Planning, if_match: IfMatch = None
) -> Response:
    """Rename a warehouse. Requires If-Match."""
    changes = parties.update_warehouse_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (warehouse_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=parties.UPDATE_WAREHOUSE, args=args)
