"""Invoices, credit notes and payments (``erp.invoice``, ``erp.invoice_line``, ``erp.payment``).

Numbers are gapless per series and year: the counter row in ``erp.document_sequence``
is bumped inside the invoice's own transaction, so a rolled-back invoice returns its
number and concurrent invoices queue on that one row (the price of gaplessness, paid
only by invoice creation). Every document posts its journal entry in the same
transaction: an invoice debits receivables against revenue and tax; a payment moves
receivables to cash; a credit note reverses revenue and tax for what it credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api import ledger, orders, outbox
from erp_api.db import Conn, fetch_all, fetch_one
from erp_api.errors import ConflictError, InvalidStateError, NotFoundError, UnprocessableError
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.responses import check_version
from erp_api.schemas.billing import (
    CreditNoteCreate,
    InvoiceLinePublic,
    InvoicePublic,
    InvoiceStatus,
    PaymentCreate,
    PaymentPublic,
)
from erp_api.schemas.common import check_currency, money

__all__ = ["credit", "get", "invoice_order", "list_page", "pay"]

ZERO: Final = Decimal(0)
SORTS: Final = {"id": "i.id", "issue_date": "i.issue_date", "due_date": "i.due_date"}
SELECT: Final = """
SELECT i.id, i.kind, i.number, i.order_id, i.credited_invoice_id, i.customer_id, i.issue_date, i.due_date,
       i.net, i.tax, i.gross, i.paid, i.credited, i.reason, i.version, i.created_at,
       (SELECT json_agg(json_build_object('line_no', l.line_no, 'product_id', l.product_id,
                                          'description', l.description, 'quantity', l.quantity::text,
                                          'unit_price', l.unit_price::text, 'net', l.net::text,
                                          'tax_rate', l.tax_rate::text, 'tax', l.tax::text) ORDER BY l.line_no)
          FROM erp.invoice_line l WHERE l.invoice_id = i.id) AS lines,
       (SELECT json_agg(json_build_object('id', p.id, 'amount', p.amount::text, 'received_on', p.received_on,
                                          'method', p.method, 'reference', p.reference,
                                          'created_by', p.created_by, 'created_at', p.created_at) ORDER BY p.id)
          FROM erp.payment p WHERE p.invoice_id = i.id) AS payments
  FROM erp.invoice i"""
FILTERS: Final = {
    "kind": "i.kind = %s",
    "customer_id": "i.customer_id = %s",
    "order_id": "i.order_id = %s",
    "year": "i.year = %s",
}
OPEN_FILTER: Final = {True: "i.gross - i.paid - i.credited > 0", False: "i.gross - i.paid - i.credited = 0"}


@dataclass(frozen=True, slots=True)
class DocLine:
    line_no: int
    product_id: int
    description: str
    quantity: Decimal
    unit_price: Decimal
    net: Decimal
    tax_rate: Decimal
    tax: Decimal


def _status(row: dict[str, Any]) -> InvoiceStatus:
    if row["kind"] == "credit_note":
        return "issued"
    settled = row["paid"] + row["credited"]
    if settled == 0:
        return "open"
    if settled < row["gross"]:
        return "partially_paid"
    return "paid" if row["paid"] > 0 else "credited"


def public(row: dict[str, Any], currency: str) -> InvoicePublic:
    def m(value: Any) -> Any:
        return money(Decimal(value), currency)

    lines = [
        InvoiceLinePublic(
            line_no=ln["line_no"],
            product_id=ln["product_id"],
            description=ln["description"],
            quantity=Decimal(ln["quantity"]),
            unit_price=m(ln["unit_price"]),
            net=m(ln["net"]),
            tax_rate=Decimal(ln["tax_rate"]),
            tax=m(ln["tax"]),
        )
        for ln in row["lines"] or []
    ]
    payments = [
        PaymentPublic(
            id=p["id"],
            amount=m(p["amount"]),
            received_on=p["received_on"],
            method=p["method"],
            reference=p["reference"],
            created_by=p["created_by"],
            created_at=p["created_at"],
        )
        for p in row["payments"] or []
    ]
    outstanding = row["gross"] - row["paid"] - row["credited"]
    return InvoicePublic(
        id=row["id"],
        kind=row["kind"],
        number=row["number"],
        status=_status(row),
        order_id=row["order_id"],
        credited_invoice_id=row["credited_invoice_id"],
        customer_id=row["customer_id"],
        issue_date=row["issue_date"],
        due_date=row["due_date"],
        net=m(row["net"]),
        tax=m(row["tax"]),
        gross=m(row["gross"]),
        paid=m(row["paid"]),
        credited=m(row["credited"]),
        outstanding=m(outstanding),
        reason=row["reason"],
        lines=lines,
        payments=payments,
        version=row["version"],
        created_at=row["created_at"],
    )


async def _load(conn: Conn, invoice_id: int, *, for_update: bool = False) -> dict[str, Any]:
    row = await fetch_one(conn, SELECT + " WHERE i.id = %s" + (" FOR UPDATE OF i" if for_update else ""), (invoice_id,))
    if row is None:
        raise NotFoundError(f"no invoice with id {invoice_id}")
    return row


async def get(conn: Conn, invoice_id: int, currency: str) -> InvoicePublic:
    return public(await _load(conn, invoice_id), currency)


async def list_page(conn: Conn, page: PageRequest, currency: str, filters: dict[str, Any]) -> Page[InvoicePublic]:
    """Invoices and credit notes filtered by kind, customer_id, order_id, year, open (None: any)."""
    plan = keyset(page, SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    for name, clause in FILTERS.items():
        if filters.get(name) is not None:
            conditions.append(sql.SQL(clause))
            params.append(filters[name])
    if filters.get("open") is not None:
        conditions.append(sql.SQL(OPEN_FILTER[bool(filters["open"])]))
    where = sql.SQL(" AND ").join(conditions)
    rows = await fetch_all(
        conn, sql.SQL(SELECT + " WHERE {} ORDER BY {} LIMIT %s").format(where, plan.order_by), [*params, plan.limit]
    )
    items = [public(r, currency) for r in rows[: page.limit]]
    return Page(items=items, next_cursor=next_cursor(rows, page, plan), limit=page.limit)


ISSUE: Final = """
WITH seq AS (
         INSERT INTO erp.document_sequence (series, year, last)
         VALUES (%(series)s, extract(year FROM current_date)::int, 1)
         ON CONFLICT (series, year) DO UPDATE SET last = erp.document_sequence.last + 1
         RETURNING year, last),
     inv AS (
         INSERT INTO erp.invoice (kind, number, year, seq, order_id, credited_invoice_id, customer_id, issue_date,
                                  due_date, net, tax, gross, reason)
         SELECT %(kind)s, %(series)s || '-' || seq.year || '-' || lpad(seq.last::text, 6, '0'), seq.year, seq.last,
                %(order_id)s, %(credited)s, %(customer_id)s, current_date,
                current_date + CASE WHEN %(kind)s = 'invoice'
                                    THEN (SELECT payment_terms_days FROM erp.customer WHERE id = %(customer_id)s)
                                    ELSE 0 END,
                %(net)s, %(tax)s, %(gross)s, %(reason)s
           FROM seq
         RETURNING *),
     lines AS (
         INSERT INTO erp.invoice_line
                (invoice_id, line_no, product_id, description, quantity, unit_price, net, tax_rate, tax)
         SELECT inv.id, t.*
           FROM inv, unnest(%(n)s::int[], %(p)s::bigint[], %(d)s::text[], %(q)s::numeric[], %(u)s::numeric[],
                            %(ln)s::numeric[], %(r)s::numeric[], %(lt)s::numeric[]) AS t)
SELECT id, kind, number, order_id, credited_invoice_id, customer_id, issue_date, due_date, net, tax, gross, paid,
       credited, reason, version, created_at FROM inv"""


async def _issue(conn: Conn, series: str, kind: str, header: dict[str, Any], lines: list[DocLine]) -> dict[str, Any]:
    """Insert a numbered document and its lines in one statement; the row as ``public`` reads it."""
    net = sum((ln.net for ln in lines), ZERO)
    tax = sum((ln.tax for ln in lines), ZERO)
    params = {
        "series": series,
        "kind": kind,
        "net": net,
        "tax": tax,
        "gross": net + tax,
        **header,
        "n": [ln.line_no for ln in lines],
        "p": [ln.product_id for ln in lines],
        "d": [ln.description for ln in lines],
        "q": [ln.quantity for ln in lines],
        "u": [ln.unit_price for ln in lines],
        "ln": [ln.net for ln in lines],
        "r": [ln.tax_rate for ln in lines],
        "lt": [ln.tax for ln in lines],
    }
    row = await fetch_one(conn, ISSUE, params)
    assert row is not None
    fields = ("line_no", "product_id", "description", "quantity", "unit_price", "net", "tax_rate", "tax")
    row["lines"] = [{f: getattr(ln, f) for f in fields} for ln in lines]
    row["payments"] = []
    return row


async def invoice_order(conn: Conn, order_id: int, currency: str) -> InvoicePublic:
    order, lines = await orders.load(conn, order_id, for_update=True)
    if order["status"] not in ("confirmed", "shipped") or order["invoiced_at"] is not None:
        raise InvalidStateError(f"order {order_id} is {order['status']}: only confirmed or shipped orders are invoiced")
    doc_lines = []
    for line in lines:
        net, tax = orders.line_amounts(line)
        description = f"{line.sku} {line.name}"
        doc_lines.append(
            DocLine(line.line_no, line.product_id, description, line.quantity, line.unit_price, net, line.tax_rate, tax)
        )
    await orders.mark_invoiced(conn, order, currency)
    # The number is taken last: its counter row stays locked until commit, and everything
    # after this point is sent without waiting (pipeline), so that wait is one round trip.
    header = {"order_id": order_id, "credited": None, "customer_id": order["customer_id"], "reason": None}
    invoice = public(await _issue(conn, "INV", "invoice", header, doc_lines), currency)
    gross, net, tax = invoice.gross.amount, invoice.net.amount, invoice.tax.amount
    postings = [(ledger.RECEIVABLES, gross), (ledger.REVENUE, -net), (ledger.TAX, -tax)]
    await ledger.post(conn, "invoice", f"invoice {invoice.number}", ("invoice", invoice.id), postings)
    await outbox.emit(conn, "invoice", invoice.id, "invoice.issued", invoice)
    return invoice


PAY: Final = """
WITH p AS (INSERT INTO erp.payment (invoice_id, amount, received_on, method, reference, created_by)
           VALUES (%(invoice)s, %(amount)s, coalesce(%(on)s, current_date), %(method)s, %(reference)s, %(actor)s)
           RETURNING id, amount, received_on, method, reference, created_by, created_at),
     i AS (UPDATE erp.invoice SET paid = paid + %(amount)s, version = version + 1 WHERE id = %(invoice)s
           RETURNING paid, version)
SELECT p.*, i.paid AS invoice_paid, i.version AS invoice_version FROM p, i"""


async def pay(
    conn: Conn, invoice_id: int, body: PaymentCreate, *, expected: int | None, actor: str, currency: str
) -> InvoicePublic:
    row = await _load(conn, invoice_id, for_update=True)
    check_version(expected, row["version"])
    amount = check_currency("amount", body.amount, currency)
    if row["kind"] != "invoice":
        raise InvalidStateError("payments apply to invoices, not credit notes")
    outstanding = row["gross"] - row["paid"] - row["credited"]
    if amount > outstanding:
        raise ConflictError.on_field("body.amount.amount", f"exceeds the outstanding {outstanding}")
    params = {
        "invoice": invoice_id,
        "amount": amount,
        "on": body.received_on,
        "method": body.method,
        "reference": body.reference,
        "actor": actor,
    }
    paid = await fetch_one(conn, PAY, params)
    assert paid is not None
    postings = [(ledger.CASH, amount), (ledger.RECEIVABLES, -amount)]
    await ledger.post(conn, "payment", f"payment for {row['number']}", ("invoice", invoice_id), postings)
    row["paid"], row["version"] = paid.pop("invoice_paid"), paid.pop("invoice_version")
    row["payments"] = [*(row["payments"] or []), paid]
    invoice = public(row, currency)
    kind = "invoice.paid" if invoice.status == "paid" else "invoice.payment"
    await outbox.emit(conn, "invoice", invoice_id, kind, {"invoice": invoice, "amount": amount})
    return invoice


async def _credit_lines(conn: Conn, row: dict[str, Any], body: CreditNoteCreate) -> list[DocLine]:
    """What this credit note covers per line: never more than was invoiced minus earlier credits;
    crediting the whole remainder of a line credits exactly its remaining amounts (no rounding residue)."""
    done = {
        r["line_no"]: r
        for r in await fetch_all(
            conn,
            "SELECT l.line_no, sum(l.quantity) AS quantity, sum(l.net) AS net, sum(l.tax) AS tax"
            " FROM erp.invoice_line l JOIN erp.invoice c ON c.id = l.invoice_id"
            " WHERE c.credited_invoice_id = %s GROUP BY l.line_no",
            (row["id"],),
        )
    }
    wanted = {c.line_no: c.quantity for c in body.lines} if body.lines else None
    out: list[DocLine] = []
    for ln in row["lines"] or []:
        prior = done.get(ln["line_no"], {"quantity": ZERO, "net": ZERO, "tax": ZERO})
        left = (
            Decimal(ln["quantity"]) - prior["quantity"],
            Decimal(ln["net"]) - prior["net"],
            Decimal(ln["tax"]) - prior["tax"],
        )
        quantity = left[0] if wanted is None else wanted.pop(ln["line_no"], ZERO)
        if quantity <= 0:
            continue
        if quantity > left[0]:
            raise UnprocessableError.on_field("body.lines", f"line {ln['line_no']}: only {left[0]} left to credit")
        if quantity == left[0]:
            net, tax = left[1], left[2]
        else:
            net = min(ledger.cents(quantity * Decimal(ln["unit_price"])), left[1])
            tax = min(ledger.cents(net * Decimal(ln["tax_rate"])), left[2])
        out.append(
            DocLine(
                ln["line_no"],
                ln["product_id"],
                ln["description"],
                quantity,
                Decimal(ln["unit_price"]),
                net,
                Decimal(ln["tax_rate"]),
                tax,
            )
        )
    if wanted:
        raise UnprocessableError.on_field("body.lines", f"no line {sorted(wanted)[0]} on invoice {row['number']}")
    if not out:
        raise InvalidStateError(f"nothing left to credit on {row['number']}")
    return out


async def credit(
    conn: Conn, invoice_id: int, body: CreditNoteCreate, expected: int | None, currency: str
) -> InvoicePublic:
    row = await _load(conn, invoice_id, for_update=True)
    check_version(expected, row["version"])
    if row["kind"] != "invoice":
        raise InvalidStateError("only invoices can be credited")
    lines = await _credit_lines(conn, row, body)
    gross = sum((ln.net + ln.tax for ln in lines), ZERO)
    outstanding = row["gross"] - row["paid"] - row["credited"]
    if gross > outstanding:
        raise ConflictError.on_field(
            "body.lines", f"credit of {gross} exceeds the outstanding {outstanding} (refunds are not supported)"
        )
    header = {"order_id": None, "credited": invoice_id, "customer_id": row["customer_id"], "reason": body.reason}
    note = public(await _issue(conn, "CN", "credit_note", header, lines), currency)
    await conn.execute(
        "UPDATE erp.invoice SET credited = credited + %s, version = version + 1 WHERE id = %s", (gross, invoice_id)
    )
    await ledger.post(
        conn,
        "credit_note",
        f"credit note {note.number} for {row['number']}",
        ("invoice", invoice_id),
        [(ledger.REVENUE, note.net.amount), (ledger.TAX, note.tax.amount), (ledger.RECEIVABLES, -note.gross.amount)],
    )
    await outbox.emit(conn, "invoice", invoice_id, "invoice.credited", note)
    return note
