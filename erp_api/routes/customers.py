"""/api/v1/customers.

Creating and changing a customer are SQL functions (``erp_api.parties``:
``CREATE_CUSTOMER``, ``UPDATE_CUSTOMER``), called through ``run_function``; reads return
``erp.customer_doc`` as well."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import parties
from erp_api.db import like
from erp_api.deps import Cursor, IdempotencyKey, IfMatch, Limit, Reader, Sales
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.catalog import CustomerCreate, CustomerPublic, CustomerUpdate

__all__ = ["router"]

router = APIRouter(prefix="/customers", tags=["customers"])
CustomerId = Annotated[int, Path(gt=0, lt=2**63)]
Sort = Literal["id", "-id", "name", "-name", "created_at", "-created_at"]


@router.get("", response_model=Page[CustomerPublic], responses=problems(422))
async def list_customers(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Sort = "id",
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name (case-insensitive).")
    ] = None,
) -> Response:
    """Customers, filtered by name."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    return Response(
        await parties.CUSTOMERS.page(ctx.conn, page, {"name_like": None if q is None else like(q)}), media_type=JSON
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CustomerPublic, responses=problems(409, 422))
async def create_customer(
    *, request: Request, body: CustomerCreate, ctx: Sales, key: IdempotencyKey = None
) -> Response:
    """Add a customer (names are unique)."""
    args = parties.create_customer_args(body)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=parties.CREATE_CUSTOMER, args=args)


@router.get("/{customer_id}", response_model=CustomerPublic, responses=problems(404, 422))
async def get_customer(*, customer_id: CustomerId, ctx: Reader) -> Response:
    """One customer, with its ETag."""
    return (await parties.CUSTOMERS.get(ctx.conn, customer_id)).response()


@router.patch("/{customer_id}", response_model=CustomerPublic, responses=problems(404, 409, 412, 422, 428))
async def update_customer(
    *, request: Request, customer_id: CustomerId, body: CustomerUpdate, ctx: Sales, if_match: IfMatch = None
) -> Response:
    """Change a customer. Requires If-Match."""
    changes = parties.update_customer_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (customer_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=parties.UPDATE_CUSTOMER, args=args)
