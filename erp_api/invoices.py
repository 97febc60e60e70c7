"""Invoices, credit notes and payments (``erp.invoice``, ``erp.invoice_line``, ``erp.payment``).

Numbers are gapless per series and year: the counter row in ``erp.document_sequence``
is bumped inside the invoice's own transaction, so a rolled-back invoice returns its
number and concurrent invoices queue on that one row (the price of gaplessness, paid
only by invoice creation). Every document posts its journal entry in the same
transaction: an invoice debits receivables against revenue and tax; a payment moves
receivables to cash; a credit note reverses revenue and tax for what it credits.

Every command is an SQL function, one statement each (docs/erp-api.md, "Where commands
live"): invoicing an order and recording a payment (``erp.invoice_order``,
``erp.pay_invoice`` in ``erp_api/sql/0008_commands.sql``) and crediting an invoice
(``erp.credit_invoice`` in ``0011_sales_commands.sql``). The document every path returns
and the events carry is ``erp.invoice_doc``.
"""

from __future__ import annotations

from typing import Final

from erp_api.documents import Documents
from erp_api.schemas.billing import CreditNoteCreate

__all__ = ["CREDIT", "DOCS", "INVOICE", "PAY", "credit_args"]

DOCS: Final = Documents(
    "invoice", "erp.invoice i", "erp.invoice_doc(i)",
    {"id": "i.id", "issue_date": "i.issue_date", "due_date": "i.due_date"},
    filters={"kind": "i.kind = %s", "customer_id": "i.customer_id = %s", "order_id": "i.order_id = %s",
             "year": "i.year = %s"},
    version="i.version",
)  # fmt: skip
OPEN_FILTER: Final = {True: "i.gross - i.paid - i.credited > 0", False: "i.gross - i.paid - i.credited = 0"}
# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
INVOICE: Final = "SELECT * FROM erp.invoice_order(%s, %s, %s, %s)"
PAY: Final = "SELECT * FROM erp.pay_invoice(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
CREDIT: Final = "SELECT * FROM erp.credit_invoice(%s, %s, %s, %s, %s, %s, %s::int[], %s::numeric[])"


def credit_args(body: CreditNoteCreate) -> tuple[object, ...]:
    """The arguments of ``CREDIT`` after the invoice and If-Match: the reason and the lines to
    credit as line numbers and quantities (two Nones: everything left)."""
    if body.lines is None:
        return (body.reason, None, None)
    return (body.reason, [line.line_no for line in body.lines], [line.quantity for line in body.lines])
