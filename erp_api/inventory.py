"""Stock and its movement ledger (``erp.stock``, ``erp.stock_movement``).

``apply`` is the one way stock changes, for receipts as for order reservations: it
locks the affected stock rows in key order (so concurrent commands never deadlock),
checks every move against what is there, refuses the whole set naming each short move,
then updates the rows and appends the movements in one statement. The schema's CHECKs
(on hand and reserved never negative, reserved never above on hand) back this up.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api import ledger, outbox
from erp_api.db import Conn, fetch_all, fetch_one
from erp_api.errors import NotFoundError
from erp_api.pagination import Page, PageRequest, keyset, next_cursor, page_json
from erp_api.schemas.inventory import (
    AdjustmentCreate,
    MovementKind,
    MovementPublic,
    ReceiptCreate,
    StockChangePublic,
    StockPublic,
    TransferCreate,
)

__all__ = ["Applied", "Move", "adjust", "apply", "get_stock", "list_movements", "list_stock", "receive", "transfer"]

ZERO: Final = Decimal(0)
STOCK: Final = """
SELECT s.id, p.sku, erp.stock_doc(s.product_id, p.sku, s.warehouse_id, w.code, s.on_hand, s.reserved, p.reorder_point,
                                  s.updated_at)::text AS doc
  FROM erp.stock s JOIN erp.product p ON p.id = s.product_id JOIN erp.warehouse w ON w.id = s.warehouse_id"""
MOVEMENT: Final = """
SELECT id, at, kind, product_id, warehouse_id, on_hand_delta, reserved_delta, reference_type, reference_id,
       note, actor FROM erp.stock_movement"""


@dataclass(frozen=True, slots=True)
class Move:
    kind: MovementKind
    product_id: int
    warehouse_id: int
    on_hand: Decimal = ZERO
    reserved: Decimal = ZERO
    field: str = "body"  # the request field that asked for it, named in a shortage problem


@dataclass(slots=True)
class Level:
    stock_id: int
    sku: str
    cost: Decimal
    on_hand: Decimal
    reserved: Decimal


Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Applied:
    levels: dict[Key, Level]  # after the change, with each product's standard cost
    movement_ids: list[int]


async def apply(
    conn: Conn, moves: list[Move], *, actor: str, reference: tuple[str, int | None], note: str | None = None
) -> Applied:
    """Apply ``moves`` atomically or raise InsufficientStockError naming every short one
    (``erp.apply_moves``, which the order confirmation in SQL uses too)."""
    rows = await fetch_all(
        conn,
        "SELECT * FROM erp.apply_moves(%s, %s, %s, %s::numeric[], %s::numeric[], %s, %s, %s, %s, %s)",
        (
            [m.kind for m in moves],
            [m.product_id for m in moves],
            [m.warehouse_id for m in moves],
            [m.on_hand for m in moves],
            [m.reserved for m in moves],
            [m.field for m in moves],
            reference[0],
            reference[1],
            note,
            actor,
        ),
    )
    levels = {
        (r["product_id"], r["warehouse_id"]): Level(r["stock_id"], r["sku"], r["cost"], r["on_hand"], r["reserved"])
        for r in rows
    }
    return Applied(levels, list(rows[0]["movement_ids"]) if rows else [])


async def get_stock(conn: Conn, product_id: int, warehouse_id: int) -> str:
    """The stock document (JSON) of one product in one warehouse."""
    row = await fetch_one(conn, STOCK + " WHERE s.product_id = %s AND s.warehouse_id = %s", (product_id, warehouse_id))
    if row is None:
        row = await fetch_one(
            conn,
            """SELECT erp.stock_doc(p.id, p.sku, w.id, w.code, 0::numeric(14, 3), 0::numeric(14, 3), p.reorder_point,
                                    NULL)::text AS doc
                 FROM erp.product p, erp.warehouse w WHERE p.id = %s AND w.id = %s""",
            (product_id, warehouse_id),
        )
    if row is None:
        raise NotFoundError(f"no product {product_id} or no warehouse {warehouse_id}")
    return str(row["doc"])


async def list_stock(
    conn: Conn, page: PageRequest, *, product_id: int | None, warehouse_id: int | None, below_reorder: bool | None
) -> bytes:
    plan = keyset(page, {"id": "s.id", "sku": "p.sku"})
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    for column, value in (("s.product_id", product_id), ("s.warehouse_id", warehouse_id)):
        if value is not None:
            conditions.append(sql.SQL(column + " = %s"))
            params.append(value)
    if below_reorder is not None:
        conditions.append(sql.SQL("(s.on_hand - s.reserved < p.reorder_point) = %s"))
        params.append(below_reorder)
    where = sql.SQL(" AND ").join(conditions)
    rows = await fetch_all(
        conn, sql.SQL(STOCK + " WHERE {} ORDER BY {} LIMIT %s").format(where, plan.order_by), [*params, plan.limit]
    )
    return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)


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


async def _change(conn: Conn, applied: Applied, keys: list[Key]) -> StockChangePublic:
    movements = await fetch_all(conn, MOVEMENT + " WHERE id = ANY(%s) ORDER BY id", (applied.movement_ids,))
    stock = [StockPublic.model_validate_json(await get_stock(conn, p, w)) for p, w in keys]
    return StockChangePublic(movements=[MovementPublic.model_validate(m) for m in movements], stock=stock)


async def receive(conn: Conn, body: ReceiptCreate, actor: str) -> StockChangePublic:
    move = Move("receipt", body.product_id, body.warehouse_id, on_hand=body.quantity, field="body.quantity")
    applied = await apply(conn, [move], actor=actor, reference=("receipt", None), note=body.note)
    level = applied.levels[(body.product_id, body.warehouse_id)]
    value = level.cost * body.quantity
    await ledger.post(
        conn,
        "receipt",
        f"receipt of {body.quantity} {level.sku}",
        ("stock", level.stock_id),
        [(ledger.INVENTORY, value), (ledger.GRNI, -value)],
    )
    change = await _change(conn, applied, [(body.product_id, body.warehouse_id)])
    await outbox.emit(conn, "stock", level.stock_id, "inventory.received", change)
    return change


async def adjust(conn: Conn, body: AdjustmentCreate, actor: str) -> StockChangePublic:
    move = Move("adjustment", body.product_id, body.warehouse_id, on_hand=body.delta, field="body.delta")
    applied = await apply(conn, [move], actor=actor, reference=("adjustment", None), note=body.reason)
    level = applied.levels[(body.product_id, body.warehouse_id)]
    value = level.cost * body.delta
    postings = [(ledger.INVENTORY, value), (ledger.INVENTORY_ADJUSTMENTS, -value)]
    memo = f"adjustment {body.delta} {level.sku}: {body.reason}"
    await ledger.post(conn, "adjustment", memo, ("stock", level.stock_id), postings)
    change = await _change(conn, applied, [(body.product_id, body.warehouse_id)])
    await outbox.emit(conn, "stock", level.stock_id, "inventory.adjusted", change)
    return change


async def transfer(conn: Conn, body: TransferCreate, actor: str) -> StockChangePublic:
    moves = [
        Move("transfer", body.product_id, body.from_warehouse_id, on_hand=-body.quantity, field="body.quantity"),
        Move("transfer", body.product_id, body.to_warehouse_id, on_hand=body.quantity, field="body.to_warehouse_id"),
    ]
    applied = await apply(conn, moves, actor=actor, reference=("transfer", None), note=body.note)
    keys = [(body.product_id, body.from_warehouse_id), (body.product_id, body.to_warehouse_id)]
    change = await _change(conn, applied, keys)
    await outbox.emit(conn, "stock", applied.levels[keys[0]].stock_id, "inventory.transferred", change)
    return change
