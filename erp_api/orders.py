"""Sales orders (``erp.sales_order``, ``erp.sales_order_line``) and their state changes.

draft -> confirmed: every line is reserved in the order's warehouse, atomically, or the
whole confirmation fails with 409 naming the short lines. confirmed -> shipped: the
reservation is consumed (on hand and reserved both drop) and the cost of goods is
posted. Invoicing (``erp_api.invoices``) moves confirmed or shipped orders to invoiced;
an order invoiced before it ships can still ship. Cancelling a confirmed order releases
its reservation. Each change locks the order row first, so an order's events are
written in the order they happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api import inventory, ledger, outbox
from erp_api.db import Conn, fetch_all, fetch_one, update_columns
from erp_api.errors import InvalidStateError, NotFoundError, UnprocessableError
from erp_api.inventory import Move
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.responses import check_version
from erp_api.schemas.common import check_currency, money, non_null_changes
from erp_api.schemas.orders import OrderCreate, OrderLineCreate, OrderLinePublic, OrderPublic, OrderUpdate

__all__ = [
    "Line",
    "cancel",
    "confirm",
    "create",
    "get",
    "line_amounts",
    "list_page",
    "load",
    "mark_invoiced",
    "ship",
    "update",
]

SORTS: Final = {"id": "o.id", "created_at": "o.created_at"}
COLUMNS: Final = (
    "id, customer_id, warehouse_id, status, notes, version, created_by, created_at, updated_at, confirmed_at,"
    " shipped_at, invoiced_at, cancelled_at"
)
PRODUCTS: Final = "SELECT id, sku, name, price, cost, tax_rate, active FROM erp.product WHERE id = ANY(%s)"
_BUMP: Final = "version = version + 1, updated_at = now()"
TRANSITIONS: Final = {  # state change -> its UPDATE (constant SQL: prepared once per connection)
    "confirmed": f"UPDATE erp.sales_order SET status = 'confirmed', confirmed_at = now(), {_BUMP}"
    f" WHERE id = %s RETURNING {COLUMNS}",
    "shipped": f"UPDATE erp.sales_order SET status = %s, shipped_at = now(), {_BUMP} WHERE id = %s RETURNING {COLUMNS}",
    "cancelled": f"UPDATE erp.sales_order SET status = 'cancelled', cancelled_at = now(), {_BUMP}"
    f" WHERE id = %s RETURNING {COLUMNS}",
    "invoiced": f"UPDATE erp.sales_order SET status = 'invoiced', invoiced_at = now(), {_BUMP}"
    f" WHERE id = %s RETURNING {COLUMNS}",
}
SELECT: Final = """
SELECT o.id, o.customer_id, o.warehouse_id, o.status, o.notes, o.version, o.created_by, o.created_at,
       o.updated_at, o.confirmed_at, o.shipped_at, o.invoiced_at, o.cancelled_at,
       (SELECT json_agg(json_build_object('line_no', l.line_no, 'product_id', l.product_id, 'sku', p.sku,
                                          'quantity', l.quantity::text, 'unit_price', l.unit_price::text,
                                          'tax_rate', l.tax_rate::text, 'cost', p.cost::text, 'name', p.name)
                        ORDER BY l.line_no)
          FROM erp.sales_order_line l JOIN erp.product p ON p.id = l.product_id
         WHERE l.order_id = o.id) AS lines
  FROM erp.sales_order o"""


@dataclass(frozen=True, slots=True)
class Line:
    line_no: int
    product_id: int
    sku: str
    name: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal
    cost: Decimal


def line_amounts(line: Line) -> tuple[Decimal, Decimal]:
    """(net, tax) of a line, each rounded to cents: the same figures the invoice carries."""
    net = ledger.cents(line.quantity * line.unit_price)
    return net, ledger.cents(net * line.tax_rate)


def _lines(row: dict[str, Any]) -> list[Line]:
    return [
        Line(
            ln["line_no"],
            ln["product_id"],
            ln["sku"],
            ln["name"],
            Decimal(ln["quantity"]),
            Decimal(ln["unit_price"]),
            Decimal(ln["tax_rate"]),
            Decimal(ln["cost"]),
        )
        for ln in row["lines"] or []
    ]


def public(row: dict[str, Any], currency: str) -> OrderPublic:
    lines, total_net, total_tax = [], Decimal(0), Decimal(0)
    for line in _lines(row):
        net, tax = line_amounts(line)
        total_net, total_tax = total_net + net, total_tax + tax
        lines.append(
            OrderLinePublic(
                line_no=line.line_no,
                product_id=line.product_id,
                sku=line.sku,
                quantity=line.quantity,
                unit_price=money(line.unit_price, currency),
                tax_rate=line.tax_rate,
                net=money(net, currency),
                tax=money(tax, currency),
            )
        )
    fields = {k: row[k] for k in OrderPublic.model_fields if k in row and k != "lines"}
    return OrderPublic(
        **fields,
        number=f"SO-{row['id']:06d}",
        lines=lines,
        net=money(total_net, currency),
        tax=money(total_tax, currency),
        gross=money(total_net + total_tax, currency),
    )


async def load(conn: Conn, order_id: int, *, for_update: bool = False) -> tuple[dict[str, Any], list[Line]]:
    row = await fetch_one(conn, SELECT + " WHERE o.id = %s" + (" FOR UPDATE OF o" if for_update else ""), (order_id,))
    if row is None:
        raise NotFoundError(f"no order with id {order_id}")
    return row, _lines(row)


async def get(conn: Conn, order_id: int, currency: str) -> OrderPublic:
    row, _ = await load(conn, order_id)
    return public(row, currency)


async def list_page(conn: Conn, page: PageRequest, currency: str, filters: dict[str, Any]) -> Page[OrderPublic]:
    """Orders filtered by status, customer_id, created_from, created_to (None: any)."""
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
    query = sql.SQL(SELECT + " WHERE {} ORDER BY {} LIMIT %s").format(where, plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    items = [public(r, currency) for r in rows[: page.limit]]
    return Page(items=items, next_cursor=next_cursor(rows, page, plan), limit=page.limit)


async def _priced_lines(conn: Conn, lines: list[OrderLineCreate], currency: str) -> list[dict[str, Any]]:
    """The lines as stored (prices default to the product's), with what the public view shows."""
    ids = sorted({line.product_id for line in lines})
    found = {r["id"]: r for r in await fetch_all(conn, PRODUCTS, (ids,))}
    priced = []
    for i, line in enumerate(lines):
        product = found.get(line.product_id)
        if product is None or not product["active"]:
            raise UnprocessableError.on_field(f"body.lines[{i}].product_id", "no such active product")
        given = line.unit_price
        price = check_currency(f"lines[{i}].unit_price", given, currency) if given else product["price"]
        priced.append(
            {
                "line_no": i + 1,
                "product_id": line.product_id,
                "sku": product["sku"],
                "name": product["name"],
                "quantity": str(line.quantity),
                "unit_price": str(price),
                "tax_rate": str(product["tax_rate"]),
                "cost": str(product["cost"]),
            }
        )
    return priced


def _line_arrays(priced: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    return tuple([p[k] for p in priced] for k in ("line_no", "product_id", "quantity", "unit_price", "tax_rate"))


async def create(conn: Conn, body: OrderCreate, actor: str, currency: str) -> OrderPublic:
    priced = await _priced_lines(conn, body.lines, currency)
    row = await fetch_one(
        conn,
        f"""WITH o AS (INSERT INTO erp.sales_order (customer_id, warehouse_id, notes, created_by)
                       VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}),
                 l AS (INSERT INTO erp.sales_order_line (order_id, line_no, product_id, quantity, unit_price, tax_rate)
                       SELECT o.id, n, p, q, u, r
                         FROM o, unnest(%s::int[], %s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[])
                              AS t(n, p, q, u, r))
            SELECT * FROM o""",
        (body.customer_id, body.warehouse_id, body.notes, actor, *_line_arrays(priced)),
    )
    assert row is not None
    order = public({**row, "lines": priced}, currency)
    await outbox.emit(conn, "order", order.id, "order.created", order)
    return order


async def _locked(
    conn: Conn, order_id: int, expected: int | None, allowed: set[str], action: str
) -> tuple[dict[str, Any], list[Line]]:
    row, lines = await load(conn, order_id, for_update=True)
    check_version(expected, row["version"])
    if row["status"] not in allowed:
        raise InvalidStateError(f"cannot {action} an order that is {row['status']}", status_now=row["status"])
    return row, lines


async def _finish(conn: Conn, row: dict[str, Any], transition: str, currency: str, status: str = "") -> OrderPublic:
    """Apply one of TRANSITIONS to the locked ``row``; the new state comes back from RETURNING."""
    updated = await fetch_one(conn, TRANSITIONS[transition], (status, row["id"]) if status else (row["id"],))
    assert updated is not None
    order = public({**updated, "lines": row["lines"]}, currency)
    await outbox.emit(conn, "order", order.id, f"order.{transition}", order)
    return order


async def update(conn: Conn, order_id: int, body: OrderUpdate, expected: int | None, currency: str) -> OrderPublic:
    changes = non_null_changes(body, nullable=frozenset({"notes"}))
    await _locked(conn, order_id, expected, {"draft"}, "change")
    if changes.pop("lines", None) is not None and body.lines is not None:
        priced = await _priced_lines(conn, body.lines, currency)
        await conn.execute("DELETE FROM erp.sales_order_line WHERE order_id = %s", (order_id,))
        await conn.execute(
            "INSERT INTO erp.sales_order_line (order_id, line_no, product_id, quantity, unit_price, tax_rate)"
            " SELECT %s, * FROM unnest(%s::int[], %s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[])",
            (order_id, *_line_arrays(priced)),
        )
    await update_columns(conn, "erp.sales_order", order_id, changes)
    order = await get(conn, order_id, currency)
    await outbox.emit(conn, "order", order_id, "order.updated", order)
    return order


async def confirm(conn: Conn, order_id: int, expected: int | None, actor: str, currency: str) -> OrderPublic:
    row, lines = await _locked(conn, order_id, expected, {"draft"}, "confirm")
    moves = [
        Move("reservation", ln.product_id, row["warehouse_id"], reserved=ln.quantity, field=f"lines[{i}]")
        for i, ln in enumerate(lines)
    ]
    await inventory.apply(conn, moves, actor=actor, reference=("order", order_id))
    return await _finish(conn, row, "confirmed", currency)


async def ship(conn: Conn, order_id: int, expected: int | None, actor: str, currency: str) -> OrderPublic:
    row, lines = await _locked(conn, order_id, expected, {"confirmed", "invoiced"}, "ship")
    if row["shipped_at"] is not None:
        raise InvalidStateError("the order has shipped already", status_now=row["status"])
    moves = [
        Move(
            "issue",
            ln.product_id,
            row["warehouse_id"],
            on_hand=-ln.quantity,
            reserved=-ln.quantity,
            field=f"lines[{i}]",
        )
        for i, ln in enumerate(lines)
    ]
    await inventory.apply(conn, moves, actor=actor, reference=("order", order_id))
    cost = sum((line.cost * line.quantity for line in lines), Decimal(0))
    await ledger.post(
        conn,
        "shipment",
        f"cost of goods for SO-{order_id:06d}",
        ("order", order_id),
        [(ledger.COGS, cost), (ledger.INVENTORY, -cost)],
    )
    status = "shipped" if row["status"] == "confirmed" else row["status"]
    return await _finish(conn, row, "shipped", currency, status=status)


async def cancel(conn: Conn, order_id: int, expected: int | None, actor: str, currency: str) -> OrderPublic:
    row, lines = await _locked(conn, order_id, expected, {"draft", "confirmed"}, "cancel")
    if row["status"] == "confirmed":
        moves = [
            Move("release", ln.product_id, row["warehouse_id"], reserved=-ln.quantity, field=f"lines[{i}]")
            for i, ln in enumerate(lines)
        ]
        await inventory.apply(conn, moves, actor=actor, reference=("order", order_id))
    return await _finish(conn, row, "cancelled", currency)


async def mark_invoiced(conn: Conn, row: dict[str, Any], currency: str) -> OrderPublic:
    """Called by invoicing with the order ``row`` locked (as ``load(for_update=True)`` returned it)."""
    return await _finish(conn, row, "invoiced", currency)
