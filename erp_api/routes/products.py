"""/api/v1/products: the catalog, with optional bills of materials.

Creating and changing a product are SQL functions (``erp_api.products``: ``CREATE``,
``UPDATE``), called through ``run_function``; reads return ``erp.product_doc`` as well."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import products
from erp_api.db import like
from erp_api.deps import AnyRole, Cursor, IdempotencyKey, IfMatch, Limit, Planning
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.catalog import ProductCreate, ProductPublic, ProductUpdate

__all__ = ["router"]

router = APIRouter(prefix="/products", tags=["products"])
ProductId = Annotated[int, Path(gt=0, lt=2**63)]
Sort = Literal["id", "-id", "sku", "-sku", "name", "-name", "created_at", "-created_at"]


@router.get("", response_model=Page[ProductPublic], responses=problems(422))
async def list_products(
    *,
    ctx: AnyRole,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Sort = "id",
    sku: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name (case-insensitive).")
    ] = None,
    active: bool | None = None,
) -> Response:
    """Products, filtered by SKU, name or active flag."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    return Response(
        await products.DOCS.page(
            ctx.conn, page, {"sku": sku, "name_like": None if q is None else like(q), "active": active}
        ),
        media_type=JSON,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProductPublic, responses=problems(409, 422))
async def create_product(
    *, request: Request, body: ProductCreate, ctx: Planning, key: IdempotencyKey = None
) -> Response:
    """Add a product; components in `bom` must exist already."""
    args = products.create_args(body)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=products.CREATE, args=args)


@router.get("/{product_id}", response_model=ProductPublic, responses=problems(404, 422))
async def get_product(*, product_id: ProductId, ctx: AnyRole) -> Response:
    """One product; the ETag header is its version, for If-Match on PATCH."""
    return (await products.DOCS.get(ctx.conn, product_id)).response()


@router.patch("/{product_id}", response_model=ProductPublic, responses=problems(404, 409, 412, 422, 428))
async def update_product(
    *,
    request: Request,
    product_id: ProductId,
    body: ProductUpdate,
    ctx: Planning,
    if_match: IfMatch = None,
) -> Response:
    """Change a product (not its SKU). Requires If-Match; `bom` replaces the whole list."""
    changes = products.update_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (product_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=products.UPDATE, args=args)
