"""Stock and its movement ledger (``erp.stock``, ``erp.stock_movement``).

Stock changes only through ``erp.apply_moves`` (``erp_api/sql/0008_commands.sql``), for
receipts as for order reservations: it locks the affected stock rows in key order (so
concurrent commands never deadlock), checks every move against what is there, refuses the
whole set naming each short move, then updates the rows and appends the movements. The
schema's CHECKs (on hand and reserved never negative, reserved never above on hand) back
this up.

Receiving, adjusting and transferring are SQL functions (``erp.receive_stock``,
``erp.adjust_stock``, ``erp.transfer_stock`` in ``erp_api/sql/0010_inventory_commands.sql``):
one statement each (docs/erp-api.md, "Where commands live"). Their reply, and their event,
is ``erp.stock_change_doc``; every path renders a stock level with ``erp.stock_doc``.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import sql

from erp_api.db import Conn, fetch_all
from erp_api.documents import Documents
from erp_api.errors import NotFoundError
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.schemas.inventory import MovementPublic

__all__ = ["ADJUST", "RECEIVE", "STOCK", "TRANSFER", "get_stock", "list_movements"]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
RECEIVE: Final = "SELECT * FROM erp.receive_stock(%s, %s, %s, %s, %s, %s::numeric, %s)"
ADJUST: Final = "SELECT * FROM erp.adjust_stock(%s, %s, %s, %s, %s, %s::numeric, %s)"
TRANSFER: Final = "SELECT * FROM erp.transfer_stock(%s, %s, %s, %s, %s, %s, %s::numeric, %s)"
STOCK: Final = Documents(
    "stock row",
    "erp.stock s JOIN erp.product p ON p.id = s.product_id JOIN erp.warehouse w ON w.id = s.warehouse_id",
    "erp.stock_doc(s.product_id, p.sku, s.warehouse_id, w.code, s.on_hand, s.reserved, p.reorder_point, s.updated_at)",
    {"id": "s.id", "sku": "p.sku"},
    filters={"product_id": "s.product_id = %s", "warehouse_id": "s.warehouse_id = %s",
             "below_reorder": "(s.on_hand - s.reserved < p.reorder_point) = %s"},
)  # fmt: skip
MOVEMENT: Final = """
SELECT id, at, kind, product_id, warehouse_id, on_hand_delta, reserved_delta, reference_type, reference_id,
       note, actor FROM erp.stock_movement"""


async def get_stock(conn: Conn, product_id: int, warehouse_id: int) -> str:
    """The stock document (JSON) of one product in one warehouse."""
    cur = await conn.execute("SELECT erp.stock_level_doc(%s, %s)::text", (product_id, warehouse_id))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        raise NotFoundError(f"no product {product_id} or no warehouse {warehouse_id}")
    return str(row[0])


async def list_movements(conn: Conn, page: PageRequest, filters: dict[str, Any]) -> Page[MovementPublic]:
    """Movements filtered by product_id, warehouse_id, kind, reference_type, reference_id (None: any)."""
    plan = keyset(page, {"id": "id"})
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    for column, value in filters.items():
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    where = sql.SQL(" AND ").join(conditions)
    rows = await fetch_all(
        conn, sql.SQL(MOVEMENT + " WHERE {} ORDER BY {} LIMIT %s").format(where, plan.order_by), [*params, plan.limit]
    )
    items = [MovementPublic.model_validate(r) for r in rows[: page.limit]]
    return Page(items=items, next_cursor=next_cursor(rows, page, plan), limit=page.limit)
