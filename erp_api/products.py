"""Products and their bills of materials (``erp.product``, ``erp.bom_line``).

Creating and changing a product are SQL functions (``erp.create_product``,
``erp.update_product`` in ``erp_api/sql/0013_master_data_commands.sql``): one statement
each (docs/erp-api.md, "Where commands live"), prices checked against the ledger currency
there. The document the API returns and the events carry is ``erp.product_doc``, for every
path, reads included.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import sql

from erp_api.db import Conn, fetch_all, like
from erp_api.errors import NotFoundError
from erp_api.pagination import PageRequest, keyset, next_cursor, page_json
from erp_api.responses import Doc
from erp_api.schemas.catalog import BomComponent, ProductCreate, ProductUpdate
from erp_api.schemas.common import PriceIn, non_null_changes

__all__ = ["CREATE", "SORTS", "UPDATE", "create_args", "get", "list_page", "update_args"]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE: Final = (
    "SELECT * FROM erp.create_product(%s, %s, %s, %s, %s, %s, %s::numeric, %s, %s::numeric, %s, %s::numeric,"
    " %s::numeric, %s::numeric, %s::bigint[], %s::numeric[])"
)
UPDATE: Final = (
    "SELECT * FROM erp.update_product(%s, %s, %s, %s, %s::numeric, %s, %s, %s::numeric, %s, %s::numeric, %s,"
    " %s::numeric, %s::numeric, %s::numeric, %s, %s::bigint[], %s::numeric[])"
)
SORTS: Final = {"id": "p.id", "sku": "p.sku", "name": "p.name", "created_at": "p.created_at"}


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


async def get(conn: Conn, product_id: int) -> Doc:
    cur = await conn.execute(
        "SELECT p.id, p.version, erp.product_doc(p)::text FROM erp.product p WHERE p.id = %s", (product_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no product with id {product_id}")
    return Doc(*row)


async def list_page(conn: Conn, page: PageRequest, *, sku: str | None, q: str | None, active: bool | None) -> bytes:
    """A page of products filtered by SKU, part of the name or active flag (None: any)."""
    plan = keyset(page, SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    filters = {"p.sku = %s": sku, "p.name ILIKE %s": None if q is None else like(q), "p.active = %s": active}
    for clause, value in filters.items():
        if value is not None:
            conditions.append(sql.SQL(clause))
            params.append(value)
    query = sql.SQL(
        "SELECT p.id, p.sku, p.name, p.created_at, erp.product_doc(p)::text AS doc FROM erp.product p"
        " WHERE {} ORDER BY {} LIMIT %s"
    ).format(sql.SQL(" AND ").join(conditions), plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)
