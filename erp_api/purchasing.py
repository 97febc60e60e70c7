"""Purchase orders, goods receipts against them, supplier invoices with the three-way match,
payments to suppliers, and reorder suggestions (``erp.purchase_order`` and the rest).

Every command is an SQL function in ``erp_api/sql/0020_purchasing_commands.sql``: one
statement each (docs/erp-api.md, "Where commands live" and "Purchasing"). A receipt locks
its purchase order's row, so concurrent receipts of one order queue and none takes more
than is left on its line; the invoice's match (quantity within what was received and not
yet invoiced, price within ``erp.price_tolerance()`` of the order's) decides whether it is
posted or held.
"""

from __future__ import annotations

from typing import Final

from erp_api.db import Conn
from erp_api.documents import Documents
from erp_api.schemas.common import check_currency, non_null_changes
from erp_api.schemas.purchasing import PurchaseOrderLineIn, PurchaseOrderUpdate, SupplierInvoiceCreate

__all__ = [
    "APPROVE",
    "CANCEL",
    "CONVERT",
    "CREATE_INVOICE",
    "CREATE_ORDER",
    "INVOICES",
    "ORDERS",
    "PAY",
    "RECEIVE",
    "RELEASE",
    "UPDATE_ORDER",
    "invoice_args",
    "line_args",
    "suggestions",
    "update_order_args",
]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE_ORDER: Final = (
    "SELECT * FROM erp.create_purchase_order(%s, %s, %s, %s, %s, %s::date, %s,"
    " %s::bigint[], %s::numeric[], %s::numeric[], %s::date[])"
)
UPDATE_ORDER: Final = (
    "SELECT * FROM erp.update_purchase_order(%s, %s, %s, %s, %s::numeric, %s::text[], %s::date, %s,"
    " %s::bigint[], %s::numeric[], %s::numeric[], %s::date[])"
)
APPROVE: Final = "SELECT * FROM erp.approve_purchase_order(%s, %s, %s, %s, %s::numeric)"
CANCEL: Final = "SELECT * FROM erp.cancel_purchase_order(%s, %s, %s, %s, %s::numeric)"
RECEIVE: Final = "SELECT * FROM erp.receive_purchase_order(%s, %s, %s, %s, %s::numeric, %s::int, %s::numeric, %s)"
CREATE_INVOICE: Final = (
    "SELECT * FROM erp.create_supplier_invoice(%s, %s, %s, %s, %s, %s::date,"
    " %s::int[], %s::numeric[], %s::numeric[], %s::numeric[])"
)
RELEASE: Final = "SELECT * FROM erp.release_supplier_invoice(%s, %s, %s, %s, %s::numeric, %s)"
PAY: Final = "SELECT * FROM erp.pay_supplier_invoice(%s, %s, %s, %s, %s::numeric, %s::numeric, %s, %s::date, %s)"
CONVERT: Final = "SELECT * FROM erp.convert_reorder_suggestions(%s, %s, %s, %s, %s::bigint[])"

ORDERS: Final = Documents(
    "purchase order", "erp.purchase_order o", "erp.purchase_order_doc(o)",
    {"id": "o.id", "created_at": "o.created_at"},
    filters={"status": "o.status = %s", "supplier_id": "o.supplier_id = %s", "warehouse_id": "o.warehouse_id = %s"},
    version="o.version",
)  # fmt: skip
INVOICES: Final = Documents(
    "supplier invoice", "erp.supplier_invoice i", "erp.supplier_invoice_doc(i)",
    {"id": "i.id", "created_at": "i.created_at", "due_date": "i.due_date"},
    filters={"status": "i.status = %s", "supplier_id": "i.supplier_id = %s",
             "purchase_order_id": "i.purchase_order_id = %s"},
    version="i.version",
)  # fmt: skip


def line_args(lines: list[PurchaseOrderLineIn], currency: str) -> tuple[object, ...]:
    """(products, quantities, prices, dates) of purchase order lines; a price must be in the
    ledger's currency (422 naming the line before anything is read)."""
    prices = [
        None if line.unit_price is None else check_currency(f"lines[{n}].unit_price", line.unit_price, currency)
        for n, line in enumerate(lines)
    ]
    return (
        [line.product_id for line in lines],
        [line.quantity for line in lines],
        prices,
        [line.expected_date for line in lines],
    )


def update_order_args(body: PurchaseOrderUpdate, currency: str) -> tuple[object, ...]:
    """After the order id and expected version: the fields sent, the expected date and notes
    (both may be cleared with null), then the new lines (all None: unchanged)."""
    fields = sorted(non_null_changes(body))
    lines = line_args(body.lines, currency) if body.lines is not None else (None, None, None, None)
    return fields, body.expected_date, body.notes, *lines


def invoice_args(body: SupplierInvoiceCreate, currency: str) -> tuple[object, ...]:
    """The arguments of ``CREATE_INVOICE`` after the principal, key and hash."""
    prices = [check_currency(f"lines[{n}].unit_price", line.unit_price, currency) for n, line in enumerate(body.lines)]
    return (
        body.purchase_order_id,
        body.supplier_reference,
        body.invoice_date,
        [line.line_no for line in body.lines],
        [line.quantity for line in body.lines],
        prices,
        [line.tax_rate for line in body.lines],
    )


async def suggestions(conn: Conn, warehouse_id: int | None) -> str:
    """The reorder suggestions as a JSON list, rendered by ``erp.reorder_suggestions_doc``."""
    cur = await conn.execute("SELECT erp.reorder_suggestions_doc(%s)::text", (warehouse_id,))
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])
