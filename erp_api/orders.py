"""Sales orders (``erp.sales_order``, ``erp.sales_order_line``) and their state changes.

draft -> confirmed: every line is reserved in the order's warehouse, atomically, or the
whole confirmation fails with 409 naming the short lines. confirmed -> shipped: the
reservation is consumed (on hand and reserved both drop) and the cost of goods is
posted. Invoicing (``erp_api.invoices``) moves confirmed or shipped orders to invoiced;
an order invoiced before it ships can still ship. Cancelling a confirmed order releases
its reservation. Each change locks the order row first, so an order's events are
written in the order they happened.

Every command is an SQL function, one statement each (docs/erp-api.md, "Where commands
live"): ``erp.create_order`` and ``erp.confirm_order`` in ``erp_api/sql/0008_commands.sql``,
``erp.ship_order`` and ``erp.cancel_order`` in ``0009_order_commands.sql``, changing a
draft, ``erp.update_order``, in ``0011_sales_commands.sql``. The order document the API
returns and the events carry is ``erp.order_doc``, for every path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from erp_api.documents import Documents
from erp_api.schemas.common import check_currency, non_null_changes
from erp_api.schemas.orders import OrderLineCreate, OrderUpdate

__all__ = ["CANCEL", "CONFIRM", "CREATE", "DOCS", "SHIP", "UPDATE", "unit_prices", "update_args"]

DOCS: Final = Documents(
    "order", "erp.sales_order o", "erp.order_doc(o)", {"id": "o.id", "created_at": "o.created_at"},
    filters={"status": "o.status = %s", "customer_id": "o.customer_id = %s", "created_from": "o.created_at >= %s",
             "created_to": "o.created_at < %s"},
    version="o.version",
)  # fmt: skip
# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE: Final = "SELECT * FROM erp.create_order(%s, %s, %s, %s, %s, %s, %s, %s::numeric[], %s::numeric[])"
CONFIRM: Final = "SELECT * FROM erp.confirm_order(%s, %s, %s, %s, %s)"
SHIP: Final = "SELECT * FROM erp.ship_order(%s, %s, %s, %s, %s)"
CANCEL: Final = "SELECT * FROM erp.cancel_order(%s, %s, %s, %s, %s)"
UPDATE: Final = (
    "SELECT * FROM erp.update_order(%s, %s, %s, %s, %s, %s, %s, %s, %s::bigint[], %s::numeric[], %s::numeric[],"
    " %s::text[])"
)


def unit_prices(lines: list[OrderLineCreate], currency: str) -> list[Decimal | None]:
    """Each line's own unit price (None: the product's), in the ledger currency."""
    return [
        check_currency(f"lines[{i}].unit_price", line.unit_price, currency) if line.unit_price else None
        for i, line in enumerate(lines)
    ]


def update_args(body: OrderUpdate) -> tuple[object, ...]:
    """The arguments of ``UPDATE`` after the order and If-Match: warehouse, notes, whether notes
    change, and the new lines as product ids, quantities, unit prices and their currencies
    (four Nones: the lines stay). A PATCH may clear notes with null, nothing else (422 before
    anything is read); the currencies are checked in SQL, after the order's version and
    state, so a stale or settled order is refused as such first."""
    changes = non_null_changes(body)
    head = (changes.get("warehouse_id"), changes.get("notes"), "notes" in changes)
    if "lines" not in changes or body.lines is None:
        return (*head, None, None, None, None)
    lines = body.lines
    prices = [line.unit_price for line in lines]
    return (
        *head,
        [line.product_id for line in lines],
        [line.quantity for line in lines],
        [price.amount if price else None for price in prices],
        [price.currency if price else None for price in prices],
    )
