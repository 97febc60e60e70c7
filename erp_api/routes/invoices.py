"""/api/v1/invoices: invoices from orders, payments, credit notes.

Each command is one SQL function (``erp_api.invoices``: ``INVOICE``, ``PAY``, ``CREDIT``),
called through ``run_function``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import invoices
from erp_api.deps import Accounting, Cursor, IdempotencyKey, IfMatch, Limit, Sales
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import problems
from erp_api.schemas.billing import CreditNoteCreate, InvoiceCreate, InvoicePublic, PaymentCreate

__all__ = ["router"]

router = APIRouter(prefix="/invoices", tags=["invoices"])
InvoiceId = Annotated[int, Path(gt=0, lt=2**63)]
OptionalId = Annotated[int | None, Query(gt=0, lt=2**63)]


@router.get("", response_model=Page[InvoicePublic], responses=problems(422))
async def list_invoices(
    *,
    ctx: Sales,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "issue_date", "-issue_date", "due_date", "-due_date"] = "id",
    kind: Literal["invoice", "credit_note"] | None = None,
    customer_id: OptionalId = None,
    order_id: OptionalId = None,
    year: Annotated[int | None, Query(ge=2000, le=9999)] = None,
    open: Annotated[bool | None, Query(description="true: something left to pay; false: settled.")] = None,  # noqa: A002
) -> Response:
    """Invoices and credit notes, filtered by kind, customer, order, year or openness."""
    filters = {"kind": kind, "customer_id": customer_id, "order_id": order_id, "year": year}
    also = () if open is None else (invoices.OPEN_FILTER[open],)
    body = await invoices.DOCS.page(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), filters, also)
    return Response(body, media_type=JSON)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=InvoicePublic, responses=problems(404, 409, 422))
async def create_invoice(
    *,
    request: Request,
    body: InvoiceCreate,
    ctx: Accounting,
    key: IdempotencyKey = None,
) -> Response:
    """Invoice a confirmed or shipped order: next gapless number of the year, posted to the journal."""
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=invoices.INVOICE, args=(body.order_id,))


@router.get("/{invoice_id}", response_model=InvoicePublic, responses=problems(404, 422))
async def get_invoice(*, invoice_id: InvoiceId, ctx: Sales) -> Response:
    """One invoice or credit note with its lines and payments; ETag is its version."""
    return (await invoices.DOCS.get(ctx.conn, invoice_id)).response()


@router.post(
    "/{invoice_id}/payments",
    status_code=status.HTTP_201_CREATED,
    response_model=InvoicePublic,
    responses=problems(404, 409, 412, 422),
)
async def record_payment(
    *,
    request: Request,
    invoice_id: InvoiceId,
    body: PaymentCreate,
    ctx: Accounting,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Record a (partial) payment; never more than what is outstanding. Send an Idempotency-Key."""
    expected = expected_version(if_match, required=False)
    amount = body.amount
    args = (invoice_id, expected, amount.amount, amount.currency, body.received_on, body.method, body.reference)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=invoices.PAY, args=args)


@router.post(
    "/{invoice_id}/credit-notes",
    status_code=status.HTTP_201_CREATED,
    response_model=InvoicePublic,
    responses=problems(404, 409, 412, 422),
)
async def create_credit_note(
    *,
    request: Request,
    invoice_id: InvoiceId,
    body: CreditNoteCreate,
    ctx: Accounting,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Credit some lines (or everything left) of an invoice, up to what is outstanding."""
    expected = expected_version(if_match, required=False)
    args = (invoice_id, expected, *invoices.credit_args(body))
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=invoices.CREDIT, args=args)
