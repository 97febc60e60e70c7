"""Products and their bills of materials (``erp.product``, ``erp.bom_line``).

Creating and changing a product are SQL functions (``erp.create_product``,
``erp.update_product`` in ``erp_api/sql/0013_master_data_commands.sql``): one statement
each (docs/erp-api.md, "Where commands live"), prices checked against the ledger currency
there. The document the API returns and the events carry is ``erp.product_doc``, for every
path, reads included.
"""

from __future__ import annotations

from typing import Final

from erp_api.documents import Documents
from erp_api.schemas.catalog import BomComponent, ProductCreate, ProductUpdate
from erp_api.schemas.common import PriceIn, non_null_changes

__all__ = ["CREATE", "DOCS", "UPDATE", "create_args", "update_args"]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE: Final = (
    "SELECT * FROM erp.create_product(%s, %s, %s, %s, %s, %s, %s::numeric, %s, %s::numeric, %s, %s::numeric,"
    " %s::numeric, %s::numeric, %s::bigint[], %s::numeric[])"
)
UPDATE: Final = (
    "SELECT * FROM erp.update_product(%s, %s, %s, %s, %s::numeric, %s, %s, %s::numeric, %s, %s::numeric, %s,"
    " %s::numeric, %s::numeric, %s::numeric, %s, %s::bigint[], %s::numeric[])"
)
DOCS: Final = Documents(
    "product", "erp.product p", "erp.product_doc(p)",
    {"id": "p.id", "sku": "p.sku", "name": "p.name", "created_at": "p.created_at"},
    filters={"sku": "p.sku = %s", "name_like": "p.name ILIKE %s", "active": "p.active = %s"},
    version="p.version",
)  # fmt: skip


def _price(value: PriceIn | None) -> tuple[object, str | None]:
    """(amount, currency) of a price or cost, (None, None) when absent."""
    return (None, None) if value is None else (value.amount, value.currency)


def _bom(bom: list[BomComponent] | None) -> tuple[list[int] | None, list[object] | None]:
    """(components, quantities) of a bill of materials, (None, None) when it stays as it is."""
    if bom is None:
        return None, None
    return [c.component_id for c in bom], [c.quantity for c in bom]


def create_args(body: ProductCreate) -> tuple[object, ...]:
    """The arguments of ``CREATE`` after the principal, key and hash."""
    return (
        body.sku,
        body.name,
        body.uom,
        *_price(body.price),
        *_price(body.cost),
        body.tax_rate,
        body.reorder_point,
        body.ideal_rate,
        *_bom(body.bom),
    )


def update_args(body: ProductUpdate) -> tuple[object, ...]:
    """The arguments of ``UPDATE`` after the product id and expected version: None leaves a
    field as it is, so none may be sent as null (422 before anything is read)."""
    non_null_changes(body)
    return (
        body.name,
        body.uom,
        *_price(body.price),
        *_price(body.cost),
        body.tax_rate,
        body.reorder_point,
        body.ideal_rate,
        body.active,
        *_bom(body.bom),
    )
