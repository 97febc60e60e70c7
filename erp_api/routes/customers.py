"""/api/v1/customers."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import parties
from erp_api.db import transaction
from erp_api.deps import Cursor, IdempotencyKey, IfMatch, Limit, Reader, Sales
from erp_api.idempotency import run_command
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import Reply, expected_version, reply
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.catalog import CustomerCreate, CustomerPublic, CustomerUpdate

__all__ = ["router"]

router = APIRouter(prefix="/customers", tags=["customers"])
CustomerId = Annotated[int, Path(gt=0, lt=2**63)]
Sort = Literal["id", "-id", "name", "-name", "created_at", "-created_at"]


@router.get("", responses=problems(422))
async def list_customers(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Sort = "id",
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name (case-insensitive).")
    ] = None,
) -> Page[CustomerPublic]:
    """Customers, filtered by name."""
    return await parties.list_customers(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), q=q)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CustomerPublic, responses=problems(409, 422))
async def create_customer(
    *, request: Request, body: CustomerCreate, ctx: Sales, key: IdempotencyKey = None
) -> Response:
    """Add a customer (names are unique)."""

    async def command() -> Reply:
        customer = await parties.create_customer(ctx.conn, body)
        return reply(customer, 201, version=customer.version, location=f"/api/v1/customers/{customer.id}")

    return await run_command(ctx.conn, ctx.who, key, request, body, command=command)


@router.get("/{customer_id}", response_model=CustomerPublic, responses=problems(404, 422))
async def get_customer(*, customer_id: CustomerId, ctx: Reader) -> Response:
    """One customer, with its ETag."""
    customer = await parties.get_customer(ctx.conn, customer_id)
    return reply(customer, version=customer.version).response()


@router.patch("/{customer_id}", response_model=CustomerPublic, responses=problems(404, 409, 412, 422, 428))
async def update_customer(
    *, customer_id: CustomerId, body: CustomerUpdate, ctx: Sales, if_match: IfMatch = None
) -> Response:
    """Change a customer. Requires If-Match."""
    expected = expected_version(if_match, required=True)
    async with transaction(ctx.conn):
        customer = await parties.update_customer(ctx.conn, customer_id, body, expected)
    return reply(customer, version=customer.version).response()
