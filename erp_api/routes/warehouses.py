"""/api/v1/warehouses."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response, status

from erp_api import parties
from erp_api.db import transaction
from erp_api.deps import AnyRole, Cursor, IdempotencyKey, IfMatch, Limit, Planning
from erp_api.idempotency import run_command
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import Reply, expected_version, reply
from erp_api.routes import problems
from erp_api.schemas.catalog import WarehouseCreate, WarehousePublic, WarehouseUpdate

__all__ = ["router"]

router = APIRouter(prefix="/warehouses", tags=["warehouses"])
WarehouseId = Annotated[int, Path(gt=0, lt=2**63)]
Sort = Literal["id", "-id", "code", "-code", "name", "-name"]


@router.get("", responses=problems(422))
async def list_warehouses(
    *, ctx: AnyRole, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None, sort: Sort = "id"
) -> Page[WarehousePublic]:
    """Warehouses."""
    return await parties.list_warehouses(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WarehousePublic, responses=problems(409, 422))
async def create_warehouse(
    *, request: Request, body: WarehouseCreate, ctx: Planning, key: IdempotencyKey = None
) -> Response:
    """Add a warehouse (codes are unique)."""

    async def command() -> Reply:
        warehouse = await parties.create_warehouse(ctx.conn, body)
        return reply(warehouse, 201, version=warehouse.version, location=f"/api/v1/warehouses/{warehouse.id}")

    return await run_command(ctx.conn, ctx.who, key, request, body, command=command)


@router.get("/{warehouse_id}", response_model=WarehousePublic, responses=problems(404, 422))
async def get_warehouse(*, warehouse_id: WarehouseId, ctx: AnyRole) -> Response:
    """One warehouse, with its ETag."""
    warehouse = await parties.get_warehouse(ctx.conn, warehouse_id)
    return reply(warehouse, version=warehouse.version).response()


@router.patch("/{warehouse_id}", response_model=WarehousePublic, responses=problems(404, 409, 412, 422, 428))
async def update_warehouse(
    *, warehouse_id: WarehouseId, body: WarehouseUpdate, ctx: Planning, if_match: IfMatch = None
) -> Response:
    """Rename a warehouse. Requires If-Match."""
    expected = expected_version(if_match, required=True)
    async with transaction(ctx.conn):
        warehouse = await parties.update_warehouse(ctx.conn, warehouse_id, body, expected)
    return reply(warehouse, version=warehouse.version).response()
