"""/api/v1/products: the catalog, with optional bills of materials."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import products
from erp_api.db import transaction
from erp_api.deps import AnyRole, Cursor, IdempotencyKey, IfMatch, Limit, Planning
from erp_api.idempotency import run_command
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import Reply, expected_version, reply
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.catalog import ProductCreate, ProductPublic, ProductUpdate

__all__ = ["router"]

router = APIRouter(prefix="/products", tags=["products"])
ProductId = Annotated[int, Path(gt=0, lt=2**63)]
Sort = Literal["id", "-id", "sku", "-sku", "name", "-name", "created_at", "-created_at"]


@router.get("", responses=problems(422))
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
) -> Page[ProductPublic]:
    """Products, filtered by SKU, name or active flag."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    return await products.list_page(ctx.conn, page, ctx.currency, sku=sku, q=q, active=active)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProductPublic, responses=problems(409, 422))
async def create_product(
    *, request: Request, body: ProductCreate, ctx: Planning, key: IdempotencyKey = None
) -> Response:
    """Add a product; components in `bom` must exist already."""

    async def command() -> Reply:
        product = await products.create(ctx.conn, body, ctx.currency)
        return reply(product, 201, version=product.version, location=f"/api/v1/products/{product.id}")

    return await run_command(ctx.conn, ctx.who, key, request, body, command=command)


@router.get("/{product_id}", response_model=ProductPublic, responses=problems(404, 422))
async def get_product(*, product_id: ProductId, ctx: AnyRole) -> Response:
    """One product; the ETag header is its version, for If-Match on PATCH."""
    product = await products.get(ctx.conn, product_id, ctx.currency)
    return reply(product, version=product.version).response()


@router.patch("/{product_id}", response_model=ProductPublic, responses=problems(404, 409, 412, 422, 428))
async def update_product(
    *,
    product_id: ProductId,
    body: ProductUpdate,
    ctx: Planning,
    if_match: IfMatch = None,
) -> Response:
    """Change a product (not its SKU). Requires If-Match; `bom` replaces the whole list."""
    expected = expected_version(if_match, required=True)
    async with transaction(ctx.conn):
        product = await products.update(ctx.conn, product_id, body, expected, ctx.currency)
    return reply(product, version=product.version).response()
