"""Invoices, credit notes and payments (``erp.invoice``, ``erp.invoice_line``, ``erp.payment``).

Numbers are gapless per series and year: the counter row in ``erp.document_sequence``
is bumped inside the invoice's own transaction, so a rolled-back invoice returns its
number and concurrent invoices queue on that one row (the price of gaplessness, paid
only by invoice creation). Every document posts its journal entry in the same
transaction: an invoice debits receivables against revenue and tax; a payment moves
receivables to cash; a credit note reverses revenue and tax for what it credits.

Invoicing an order and recording a payment, the busiest commands, are SQL functions
(``erp.invoice_order``, ``erp.pay_invoice`` in ``erp_api/sql/0008_commands.sql``); the
document every path returns and the events carry is ``erp.invoice_doc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api import ledger
from erp_api.db import Conn, fetch_all, fetch_one
from erp_api.errors import ConflictError, InvalidStateError, NotFoundError, UnprocessableError
from erp_api.pagination import PageRequest, keyset, next_cursor, page_json
from erp_api.responses import Doc, check_version
from erp_api.schemas.billing import CreditNoteCreate

__all__ = ["INVOICE", "PAY", "credit", "get", "list_page"]

ZERO: Final = Decimal(0)
SORTS: Final = {"id": "i.id", "issue_date": "i.issue_date", "due_date": "i.due_date"}
SELECT: Final = """
SELECT i.id, i.kind, i.number, i.customer_id, i.gross, i.paid, i.credited, i.version,
       (SELECT json_agg(json_build_object('line_no', l.line_no, 'product_id', l.product_id,
                                          'description', l.description, 'quantity', l.quantity::text,
                                          'unit_price', l.unit_price::text, 'net', l.net::text,
                                          'tax_rate', l.tax_rate::text, 'tax', l.tax::text) ORDER BY l.line_no)
          FROM erp.invoice_line l WHERE l.invoice_id = i.id) AS lines
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


async def _load(conn: Conn, invoice_id: int, *, for_update: bool = False) -> dict[str, Any]:
    row = await fetch_one(conn, SELECT + " WHERE i.id = %s" + (" FOR UPDATE OF i" if for_update else ""), (invoice_id,))
    if row is None:
        raise NotFoundError(f"no invoice with id {invoice_id}")
    return row


async def get(conn: Conn, invoice_id: int) -> Doc:
    cur = await conn.execute(
        "SELECT i.id, i.version, erp.invoice_doc(i)::text FROM erp.invoice i WHERE i.id = %s", (invoice_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no invoice with id {invoice_id}")
    return Doc(*row)


async def list_page(conn: Conn, page: PageRequest, filters: dict[str, Any]) -> bytes:
    """A page of invoices and credit notes filtered by kind, customer_id, order_id, year, open (None: any)."""
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
    query = sql.SQL(
        "SELECT i.id, i.issue_date, i.due_date, erp.invoice_doc(i)::text AS doc FROM erp.invoice i"
        " WHERE {} ORDER BY {} LIMIT %s"
    ).format(where, plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)


# The busiest commands are SQL functions (erp_api/sql/0008_commands.sql); they take
# (principal, Idempotency-Key, request hash) first.
INVOICE: Final = "SELECT * FROM erp.invoice_order(%s, %s, %s, %s)"
PAY: Final = "SELECT * FROM erp.pay_invoice(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
ISSUE: Final = """
SELECT id, number FROM erp.issue_document(%s, %s, %s, %s, %s, %s, %s::int[], %s::bigint[], %s::text[], %s::numeric[],
                                          %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[])"""
EVENT: Final = """
WITH d AS (SELECT i.id, i.version, erp.invoice_doc(i) AS doc FROM erp.invoice i WHERE i.id = %s),
     e AS (INSERT INTO erp.outbox (aggregate_type, aggregate_id, kind, payload)
           SELECT 'invoice', %s, %s, d.doc::jsonb FROM d)
SELECT id, version, doc::text FROM d"""


async def _issue(conn: Conn, series: str, kind: str, header: tuple[Any, ...], lines: list[DocLine]) -> tuple[int, str]:
    """Insert a numbered document and its lines (``erp.issue_document``); its id and number."""
    columns = ("line_no", "product_id", "description", "quantity", "unit_price", "net", "tax_rate", "tax")
    arrays = [[getattr(ln, c) for ln in lines] for c in columns]
    cur = await conn.execute(ISSUE, (series, kind, *header, *arrays))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


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


async def credit(conn: Conn, invoice_id: int, body: CreditNoteCreate, expected: int | None) -> Doc:
    row = await _load(conn, invoice_id, for_update=True)
    check_version(expected, row["version"])
    if row["kind"] != "invoice":
        raise InvalidStateError("only invoices can be credited")
    lines = await _credit_lines(conn, row, body)
    net = sum((ln.net for ln in lines), ZERO)
    tax = sum((ln.tax for ln in lines), ZERO)
    outstanding = row["gross"] - row["paid"] - row["credited"]
    if net + tax > outstanding:
        raise ConflictError.on_field(
            "body.lines", f"credit of {net + tax} exceeds the outstanding {outstanding} (refunds are not supported)"
        )
    header = (None, invoice_id, row["customer_id"], body.reason)
    note_id, number = await _issue(conn, "CN", "credit_note", header, lines)
    await conn.execute(
        "UPDATE erp.invoice SET credited = credited + %s, version = version + 1 WHERE id = %s", (net + tax, invoice_id)
    )
    await ledger.post(
        conn,
        "credit_note",
        f"credit note {number} for {row['number']}",
        ("invoice", invoice_id),
        [(ledger.REVENUE, net), (ledger.TAX, tax), (ledger.RECEIVABLES, -(net + tax))],
    )
    cur = await conn.execute(EVENT, (note_id, invoice_id, "invoice.credited"))
    note = await cur.fetchone()
    assert note is not None
    return Doc(*note)
