"""/api/v1/supplier-invoices: invoices from suppliers, matched three ways, released, paid.

Each command is one SQL function (``erp_api.purchasing``: ``CREATE_INVOICE``, ``RELEASE``,
``PAY``), called through ``run_function``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import purchasing
from erp_api.deps import Accounting, Cursor, IdempotencyKey, IfMatch, Limit, Reader
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import problems
from erp_api.schemas.purchasing import (
    ReleaseCommand,
    SupplierInvoiceCreate,
    SupplierInvoicePublic,
    SupplierInvoiceStatus,
    SupplierPaymentCreate,
)

__all__ = ["router"]

router = APIRouter(prefix="/supplier-invoices", tags=["purchasing"])
InvoiceId = Annotated[int, Path(gt=0, lt=2**63)]
FilterId = Annotated[int | None, Query(gt=0, lt=2**63)]
STATE_PROBLEMS = problems(404, 409, 412, 422)


@router.get("", response_model=Page[SupplierInvoicePublic], responses=problems(422))
async def list_supplier_invoices(
    *,
    ctx: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "created_at", "-created_at", "due_date", "-due_date"] = "id",
    status: SupplierInvoiceStatus | None = None,
    supplier_id: FilterId = None,
    purchase_order_id: FilterId = None,
) -> Response:
    """Supplier invoices, filtered by status (held ones wait for an accountant), supplier or order."""
    page = PageRequest(limit=limit, cursor=cursor, sort=sort)
    filters = {"status": status, "supplier_id": supplier_id, "purchase_order_id": purchase_order_id}
    return Response(await purchasing.INVOICES.page(ctx.conn, page, filters), media_type=JSON)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=SupplierInvoicePublic, responses=problems(409, 422)
)
async def create_supplier_invoice(
    *, request: Request, body: SupplierInvoiceCreate, ctx: Accounting, key: IdempotencyKey = None
) -> Response:
    """Enter a supplier's invoice against a purchase order. Each line is matched: quantity within
    what was received and not yet invoiced, price within 2 % of the order's. A match posts it
    (`posted`); a difference holds it (`held`, reasons per line) until released."""
    args = purchasing.invoice_args(body, ctx.currency)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=purchasing.CREATE_INVOICE, args=args)


@router.get("/{invoice_id}", response_model=SupplierInvoicePublic, responses=problems(404, 422))
async def get_supplier_invoice(*, invoice_id: InvoiceId, ctx: Reader) -> Response:
    """One supplier invoice; ETag is its version."""
    return (await purchasing.INVOICES.get(ctx.conn, invoice_id)).response()


@router.post("/{invoice_id}/release", response_model=SupplierInvoicePublic, responses=STATE_PROBLEMS)
async def release_supplier_invoice(
    *,
    request: Request,
    invoice_id: InvoiceId,
    body: ReleaseCommand,
    ctx: Accounting,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """held -> posted: accept the differences, with a reason that is kept."""
    expected = expected_version(if_match, required=False)
    args = (invoice_id, expected, body.reason)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=purchasing.RELEASE, args=args)


@router.post(
    "/{invoice_id}/payments",
    status_code=status.HTTP_201_CREATED,
    response_model=SupplierInvoicePublic,
    responses=STATE_PROBLEMS,
)
async def pay_supplier_invoice(
    *,
    request: Request,
    invoice_id: InvoiceId,
    body: SupplierPaymentCreate,
    ctx: Accounting,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Pay a posted invoice (partly or in full, never more than outstanding). The last payment
    closes a purchase order that is fully received and invoiced."""
    expected = expected_version(if_match, required=False)
    amount = body.amount
    args = (invoice_id, expected, amount.amount, amount.currency, body.paid_on, body.reference)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=purchasing.PAY, args=args)
