"""Suppliers and what they sell (``erp.supplier``, ``erp.supplier_item``).

Creating and changing them are SQL functions (``erp.create_supplier``,
``erp.update_supplier``, ``erp.create_supplier_item``, ``erp.update_supplier_item`` in
``erp_api/sql/0020_purchasing_commands.sql``): one statement each (docs/erp-api.md,
"Where commands live"). A supplier item's price is in its supplier's currency; at most
one supplier is preferred per product (a unique index: 409 naming ``preferred``).
"""

from __future__ import annotations

from typing import Final

from erp_api.documents import Documents
from erp_api.schemas.common import non_null_changes
from erp_api.schemas.purchasing import SupplierCreate, SupplierItemCreate, SupplierItemUpdate, SupplierUpdate

__all__ = [
    "CREATE_ITEM",
    "CREATE_SUPPLIER",
    "ITEMS",
    "SUPPLIERS",
    "UPDATE_ITEM",
    "UPDATE_SUPPLIER",
    "create_item_args",
    "create_supplier_args",
    "update_item_args",
    "update_supplier_args",
]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE_SUPPLIER: Final = "SELECT * FROM erp.create_supplier(%s, %s, %s, %s, %s, %s, %s::int, %s)"
UPDATE_SUPPLIER: Final = "SELECT * FROM erp.update_supplier(%s, %s, %s, %s, %s::numeric, %s, %s, %s::int, %s)"
CREATE_ITEM: Final = (
    "SELECT * FROM erp.create_supplier_item(%s, %s, %s, %s, %s, %s::numeric, %s, %s::int, %s::numeric, %s)"
)
UPDATE_ITEM: Final = (
    "SELECT * FROM erp.update_supplier_item(%s, %s, %s, %s, %s::numeric, %s::numeric, %s, %s::int, %s::numeric, %s)"
)

SUPPLIERS: Final = Documents(
    "supplier", "erp.supplier s", "erp.supplier_doc(s)",
    {"id": "s.id", "code": "s.code", "name": "s.name", "created_at": "s.created_at"},
    filters={"name_like": "s.name ILIKE %s", "active": "s.active = %s"},
    version="s.version",
)  # fmt: skip
ITEMS: Final = Documents(
    "supplier item", "erp.supplier_item i", "erp.supplier_item_doc(i)", {"id": "i.id", "created_at": "i.created_at"},
    filters={"supplier_id": "i.supplier_id = %s", "product_id": "i.product_id = %s", "preferred": "i.preferred = %s"},
    version="i.version",
)  # fmt: skip


def create_supplier_args(body: SupplierCreate) -> tuple[object, ...]:
    """The arguments of ``CREATE_SUPPLIER`` after the principal, key and hash."""
    return body.code, body.name, body.currency, body.payment_terms_days, body.active


def update_supplier_args(body: SupplierUpdate) -> tuple[object, ...]:
    """The new values after the supplier id and expected version (none may be null; 422 for nothing)."""
    non_null_changes(body)
    return body.name, body.currency, body.payment_terms_days, body.active


def create_item_args(body: SupplierItemCreate) -> tuple[object, ...]:
    """The arguments of ``CREATE_ITEM``: the price's currency is checked against the supplier's in SQL."""
    return (
        body.supplier_id,
        body.product_id,
        body.price.amount,
        body.price.currency,
        body.lead_time_days,
        body.min_order_quantity,
        body.preferred,
    )


def update_item_args(body: SupplierItemUpdate) -> tuple[object, ...]:
    """The new values after the item id and expected version (none may be null; 422 for nothing)."""
    non_null_changes(body)
    price = body.price
    return (
        None if price is None else price.amount,
        None if price is None else price.currency,
        body.lead_time_days,
        body.min_order_quantity,
        body.preferred,
    )
