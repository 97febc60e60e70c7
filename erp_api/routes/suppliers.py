"""/api/v1/suppliers and /api/v1/supplier-items: who we buy from, and what each sells.

Creating and changing them are SQL functions (``erp_api.suppliers``), called through
``run_function``; reads return ``erp.supplier_doc`` and ``erp.supplier_item_doc`` as well."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import suppliers
from erp_api.db import like
from erp_api.deps import Cursor, IdempotencyKey, IfMatch, Limit, Purchasing, Reader
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.purchasing import (
    SupplierCreate,
    SupplierItemCreate,
    SupplierItemPublic,
    SupplierItemUpdate,
    SupplierPublic,
    SupplierUpdate,
)

__all__ = ["items_router", "router"]

router = APIRouter(prefix="/suppliers", tags=["suppliers"])
items_router = APIRouter(prefix="/supplier-items", tags=["suppliers"])
RowId = Annotated[int, Path(gt=0, lt=2**63)]
FilterId = Annotated[int | None, Query(gt=0, lt=2**63)]


@router.get("", response_model=Page[SupplierPublic], responses=problems(422))
async def list_suppliers(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "code", "-code", "name", "-name", "created_at", "-created_at"] = "id",
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name (case-insensitive).")
    ] = None,
    active: bool | None = None,
) -> Response:
    """Suppliers, filtered by name or whether they are active."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    filters = {"name_like": None if q is None else like(q), "active": active}
    return Response(await suppliers.SUPPLIERS.page(ctx.conn, page, filters), media_type=JSON)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SupplierPublic, responses=problems(409, 422))
async def create_supplier(
    *, request: Request, body: SupplierCreate, ctx: Purchasing, key: IdempotencyKey = None
) -> Response:
    """Add a supplier (codes are unique)."""
    args = suppliers.create_supplier_args(body)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=suppliers.CREATE_SUPPLIER, args=args)


@router.get("/{supplier_id}", response_model=SupplierPublic, responses=problems(404, 422))
async def get_supplier(*, supplier_id: RowId, ctx: Reader) -> Response:
    """One supplier, with its ETag."""
    return (await suppliers.SUPPLIERS.get(ctx.conn, supplier_id)).response()


@router.patch("/{supplier_id}", response_model=SupplierPublic, responses=problems(404, 409, 412, 422, 428))
async def update_supplier(
    *, request: Request, supplier_id: RowId, body: SupplierUpdate, ctx: Purchasing, if_match: IfMatch = None
) -> Response:
    """Change a supplier (not its code). Requires If-Match."""
    changes = suppliers.update_supplier_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (supplier_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=suppliers.UPDATE_SUPPLIER, args=args)


@items_router.get("", response_model=Page[SupplierItemPublic], responses=problems(422))
async def list_supplier_items(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "created_at", "-created_at"] = "id",
    supplier_id: FilterId = None,
    product_id: FilterId = None,
    preferred: bool | None = None,
) -> Response:
    """What suppliers sell, filtered by supplier, product or preference."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    filters = {"supplier_id": supplier_id, "product_id": product_id, "preferred": preferred}
    return Response(await suppliers.ITEMS.page(ctx.conn, page, filters), media_type=JSON)


@items_router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=SupplierItemPublic, responses=problems(409, 422)
)
async def create_supplier_item(
    *, request: Request, body: SupplierItemCreate, ctx: Purchasing, key: IdempotencyKey = None
) -> Response:
    """A product a supplier sells: price (in the supplier's currency), lead time, minimum order
    quantity; one per supplier and product, one preferred supplier per product (409)."""
    args = suppliers.create_item_args(body)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=suppliers.CREATE_ITEM, args=args)


@items_router.get("/{item_id}", response_model=SupplierItemPublic, responses=problems(404, 422))
async def get_supplier_item(*, item_id: RowId, ctx: Reader) -> Response:
    """One supplier item, with its ETag."""
    return (await suppliers.ITEMS.get(ctx.conn, item_id)).response()


@items_router.patch("/{item_id}", response_model=SupplierItemPublic, responses=problems(404, 409, 412, 422, 428))
async def update_supplier_item(
    *, request: Request, item_id: RowId, body: SupplierItemUpdate, ctx: Purchasing, if_match: IfMatch = None
) -> Response:
    """Change price, lead time, minimum order quantity or preference. Requires If-Match."""
    changes = suppliers.update_item_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (item_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=suppliers.UPDATE_ITEM, args=args)
