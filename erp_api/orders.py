"""Sales orders (``erp.sales_order``, ``erp.sales_order_line``) and their state changes.

draft -> confirmed: every line is reserved in the order's warehouse, atomically, or the
whole confirmation fails with 409 naming the short lines. confirmed -> shipped: the
reservation is consumed (on hand and reserved both drop) and the cost of goods is
posted. Invoicing (``erp_api.invoices``) moves confirmed or shipped orders to invoiced;
an order invoiced before it ships can still ship. Cancelling a confirmed order releases
its reservation. Each change locks the order row first, so an order's events are
written in the order they happened.

Creating, confirming, shipping and cancelling are SQL functions (``erp.create_order``,
``erp.confirm_order`` in ``erp_api/sql/0008_commands.sql``, ``erp.ship_order`` and
``erp.cancel_order`` in ``0009_order_commands.sql``): one statement each (docs/erp-api.md,
"Where commands live"). Changing a draft (``update``) is still Python. The order
document the API returns and the events carry is ``erp.order_doc``, for every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api.db import Conn, fetch_all, fetch_one, update_columns
from erp_api.errors import InvalidStateError, NotFoundError, UnprocessableError
from erp_api.pagination import PageRequest, keyset, next_cursor, page_json
from erp_api.responses import Doc, check_version
from erp_api.schemas.common import check_currency, non_null_changes
from erp_api.schemas.orders import OrderLineCreate, OrderUpdate

__all__ = [
    "CANCEL",
    "CONFIRM",
    "CREATE",
    "SHIP",
    "Line",
    "event",
    "get",
    "list_page",
    "load",
    "unit_prices",
    "update",
]

SORTS: Final = {"id": "o.id", "created_at": "o.created_at"}
PRODUCTS: Final = "SELECT id, price, tax_rate, active FROM erp.product WHERE id = ANY(%s)"
# The order as the API shows it, and its event in the same statement.
EVENT: Final = """
WITH d AS (SELECT o.id, o.version, erp.order_doc(o) AS doc FROM erp.sales_order o WHERE o.id = %s),
     e AS (INSERT INTO erp.outbox (aggregate_type, aggregate_id, kind, payload)
           SELECT 'order', d.id, %s, d.doc::jsonb FROM d)
SELECT id, version, doc::text FROM d"""
# The busiest commands are SQL functions (erp_api/sql/0008_commands.sql); they take
# (principal, Idempotency-Key, request hash) first.
CREATE: Final = "SELECT * FROM erp.create_order(%s, %s, %s, %s, %s, %s, %s, %s::numeric[], %s::numeric[])"
CONFIRM: Final = "SELECT * FROM erp.confirm_order(%s, %s, %s, %s, %s)"
SHIP: Final = "SELECT * FROM erp.ship_order(%s, %s, %s, %s, %s)"
CANCEL: Final = "SELECT * FROM erp.cancel_order(%s, %s, %s, %s, %s)"
SELECT: Final = """
SELECT o.id, o.warehouse_id, o.status, o.version, o.shipped_at,
       (SELECT json_agg(json_build_object('line_no', l.line_no, 'product_id', l.product_id,
                                          'quantity', l.quantity::text, 'cost', p.cost::text)
                        ORDER BY l.line_no)
          FROM erp.sales_order_line l JOIN erp.product p ON p.id = l.product_id
         WHERE l.order_id = o.id) AS lines
  FROM erp.sales_order o"""


@dataclass(frozen=True, slots=True)
class Line:
    line_no: int
    product_id: int
    quantity: Decimal
    cost: Decimal


def _lines(row: dict[str, Any]) -> list[Line]:
    return [
        Line(ln["line_no"], ln["product_id"], Decimal(ln["quantity"]), Decimal(ln["cost"])) for ln in row["lines"] or []
    ]


async def load(conn: Conn, order_id: int, *, for_update: bool = False) -> tuple[dict[str, Any], list[Line]]:
    row = await fetch_one(conn, SELECT + " WHERE o.id = %s" + (" FOR UPDATE OF o" if for_update else ""), (order_id,))
    if row is None:
        raise NotFoundError(f"no order with id {order_id}")
    return row, _lines(row)


async def get(conn: Conn, order_id: int) -> Doc:
    cur = await conn.execute(
        "SELECT o.id, o.version, erp.order_doc(o)::text FROM erp.sales_order o WHERE o.id = %s", (order_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no order with id {order_id}")
    return Doc(*row)


async def list_page(conn: Conn, page: PageRequest, filters: dict[str, Any]) -> bytes:
    """A page of orders filtered by status, customer_id, created_from, created_to (None: any)."""
    plan = keyset(page, SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    for name, clause in (
        ("status", "o.status = %s"),
        ("customer_id", "o.customer_id = %s"),
        ("created_from", "o.created_at >= %s"),
        ("created_to", "o.created_at < %s"),
    ):
        if filters.get(name) is not None:
            conditions.append(sql.SQL(clause))
            params.append(filters[name])
    where = sql.SQL(" AND ").join(conditions)
    query = sql.SQL(
        "SELECT o.id, o.created_at, erp.order_doc(o)::text AS doc FROM erp.sales_order o WHERE {} ORDER BY {} LIMIT %s"
    ).format(where, plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)


def unit_prices(lines: list[OrderLineCreate], currency: str) -> list[Decimal | None]:
    """Each line's own unit price (None: the product's), in the ledger currency."""
    return [
        check_currency(f"lines[{i}].unit_price", line.unit_price, currency) if line.unit_price else None
        for i, line in enumerate(lines)
    ]


async def _priced_lines(conn: Conn, lines: list[OrderLineCreate], currency: str) -> list[tuple[Any, ...]]:
    """The lines as stored: (line_no, product_id, quantity, unit_price, tax_rate); prices default
    to the product's."""
    ids = sorted({line.product_id for line in lines})
    found = {r["id"]: r for r in await fetch_all(conn, PRODUCTS, (ids,))}
    priced = []
    for i, (line, given) in enumerate(zip(lines, unit_prices(lines, currency), strict=True)):
        product = found.get(line.product_id)
        if product is None or not product["active"]:
            raise UnprocessableError.on_field(f"body.lines[{i}].product_id", "no such active product")
        price = given if given is not None else product["price"]
        priced.append((i + 1, line.product_id, line.quantity, price, product["tax_rate"]))
    return priced


async def event(conn: Conn, order_id: int, kind: str) -> Doc:
    """Write the order's event (its document as GET shows it) and return that document."""
    cur = await conn.execute(EVENT, (order_id, kind))
    row = await cur.fetchone()
    assert row is not None
    return Doc(*row)


async def _locked(
    conn: Conn, order_id: int, expected: int | None, allowed: set[str], action: str
) -> tuple[dict[str, Any], list[Line]]:
    row, lines = await load(conn, order_id, for_update=True)
    check_version(expected, row["version"])
    if row["status"] not in allowed:
        raise InvalidStateError(f"cannot {action} an order that is {row['status']}", status_now=row["status"])
    return row, lines


async def update(conn: Conn, order_id: int, body: OrderUpdate, expected: int | None, currency: str) -> Doc:
    changes = non_null_changes(body, nullable=frozenset({"notes"}))
    await _locked(conn, order_id, expected, {"draft"}, "change")
    if changes.pop("lines", None) is not None and body.lines is not None:
        priced = await _priced_lines(conn, body.lines, currency)
        await conn.execute("DELETE FROM erp.sales_order_line WHERE order_id = %s", (order_id,))
        await conn.execute(
            "INSERT INTO erp.sales_order_line (order_id, line_no, product_id, quantity, unit_price, tax_rate)"
            " SELECT %s, * FROM unnest(%s::int[], %s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[])",
            (order_id, *(list(column) for column in zip(*priced, strict=True))),
        )
    await update_columns(conn, "erp.sales_order", order_id, changes)
    return await event(conn, order_id, "order.updated")
