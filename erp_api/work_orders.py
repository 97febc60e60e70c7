"""Work orders (``erp.work_order``, ``erp.work_order_part``).

Production: ``produce`` consumes the bill of materials for the quantity made and puts the
finished goods into the same warehouse, in one stock change; the journal moves value
from components to finished goods at standard cost, the difference to production
variance. Maintenance: spare parts are reserved when the order is created (all or
none, 409 naming the short parts), consumed when it is done (expensed at cost), and
released if it is cancelled. Both kinds go open -> in_progress -> done, or cancelled.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api import inventory, ledger, outbox
from erp_api.db import Conn, fetch_all, fetch_one, update_columns
from erp_api.errors import InvalidStateError, NotFoundError, UnprocessableError
from erp_api.inventory import Move
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.responses import check_version
from erp_api.schemas.common import non_null_changes
from erp_api.schemas.work_orders import (
    MaintenanceCreate,
    PartPublic,
    ProductionCreate,
    WorkOrderPublic,
    WorkOrderUpdate,
)

__all__ = ["cancel", "complete", "create", "get", "list_page", "produce", "start", "update"]

SORTS: Final = {"id": "w.id", "created_at": "w.created_at"}
SELECT: Final = """
SELECT w.id, w.kind, w.status, w.asset, w.warehouse_id, w.product_id, w.planned_quantity, w.produced_quantity,
       w.ideal_rate,
       w.reason, w.priority, w.notes, w.version, w.created_by, w.created_at, w.updated_at, w.started_at,
       w.finished_at,
       (SELECT json_agg(json_build_object('product_id', p.product_id, 'sku', pr.sku, 'quantity', p.quantity::text,
                                          'cost', pr.cost::text) ORDER BY p.product_id)
          FROM erp.work_order_part p JOIN erp.product pr ON pr.id = p.product_id
         WHERE p.work_order_id = w.id) AS parts
  FROM erp.work_order w"""
FILTERS: Final = {
    "kind": "w.kind = %s",
    "status": "w.status = %s",
    "asset": "w.asset = %s",
    "priority": "w.priority = %s",
}


def public(row: dict[str, Any]) -> WorkOrderPublic:
    parts = [
        PartPublic(product_id=p["product_id"], sku=p["sku"], quantity=Decimal(p["quantity"]))
        for p in row["parts"] or []
    ]
    fields = {k: row[k] for k in WorkOrderPublic.model_fields if k in row}
    return WorkOrderPublic(**fields, number=f"WO-{row['id']:06d}", spare_parts=parts)


async def _load(conn: Conn, work_order_id: int, *, for_update: bool = False) -> dict[str, Any]:
    suffix = " WHERE w.id = %s" + (" FOR UPDATE OF w" if for_update else "")
    row = await fetch_one(conn, SELECT + suffix, (work_order_id,))
    if row is None:
        raise NotFoundError(f"no work order with id {work_order_id}")
    return row


async def get(conn: Conn, work_order_id: int) -> WorkOrderPublic:
    return public(await _load(conn, work_order_id))


async def list_page(conn: Conn, page: PageRequest, filters: dict[str, Any]) -> Page[WorkOrderPublic]:
    """Work orders filtered by kind, status, asset, priority (None: any)."""
    plan = keyset(page, SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    for name, clause in FILTERS.items():
        if filters.get(name) is not None:
            conditions.append(sql.SQL(clause))
            params.append(filters[name])
    where = sql.SQL(" AND ").join(conditions)
    rows = await fetch_all(
        conn, sql.SQL(SELECT + " WHERE {} ORDER BY {} LIMIT %s").format(where, plan.order_by), [*params, plan.limit]
    )
    return Page(
        items=[public(r) for r in rows[: page.limit]], next_cursor=next_cursor(rows, page, plan), limit=page.limit
    )


async def create(conn: Conn, body: ProductionCreate | MaintenanceCreate, actor: str) -> WorkOrderPublic:
    values: tuple[object, ...]
    if isinstance(body, ProductionCreate):
        bom = await fetch_one(conn, "SELECT count(*) AS n FROM erp.bom_line WHERE product_id = %s", (body.product_id,))
        if bom is None or bom["n"] == 0:
            raise UnprocessableError.on_field("body.product_id", "the product has no bill of materials")
        values = (body.kind, body.asset, body.warehouse_id, body.product_id, body.planned_quantity, body.ideal_rate,
                  None)  # fmt: skip
    else:
        values = (body.kind, body.asset, body.warehouse_id, None, None, None, body.reason)
    row = await fetch_one(
        conn,
        "INSERT INTO erp.work_order (kind, asset, warehouse_id, product_id, planned_quantity, ideal_rate, reason,"
        " priority, notes, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (*values, body.priority, body.notes, actor),
    )
    assert row is not None
    if isinstance(body, MaintenanceCreate) and body.spare_parts:
        parts = body.spare_parts
        await conn.execute(
            "INSERT INTO erp.work_order_part (work_order_id, product_id, quantity)"
            " SELECT %s, * FROM unnest(%s::bigint[], %s::numeric[])",
            (row["id"], [p.product_id for p in parts], [p.quantity for p in parts]),
        )
        moves = [
            Move("reservation", p.product_id, body.warehouse_id, reserved=p.quantity, field=f"body.spare_parts[{i}]")
            for i, p in enumerate(parts)
        ]
        await inventory.apply(conn, moves, actor=actor, reference=("work_order", row["id"]))
    order = await get(conn, row["id"])
    await outbox.emit(conn, "work_order", order.id, "work_order.created", order)
    return order


async def _locked(
    conn: Conn, work_order_id: int, expected: int | None, allowed: set[str], action: str
) -> dict[str, Any]:
    row = await _load(conn, work_order_id, for_update=True)
    check_version(expected, row["version"])
    if row["status"] not in allowed:
        raise InvalidStateError(f"cannot {action} a work order that is {row['status']}", status_now=row["status"])
    return row


async def _finish(conn: Conn, work_order_id: int, changes: dict[str, Any], event: str) -> WorkOrderPublic:
    await update_columns(conn, "erp.work_order", work_order_id, changes)
    order = await get(conn, work_order_id)
    await outbox.emit(conn, "work_order", work_order_id, event, order)
    return order


async def update(conn: Conn, work_order_id: int, body: WorkOrderUpdate, expected: int | None) -> WorkOrderPublic:
    changes = non_null_changes(body, nullable=frozenset({"notes"}))
    await _locked(conn, work_order_id, expected, {"open", "in_progress"}, "change")
    return await _finish(conn, work_order_id, changes, "work_order.updated")


async def start(conn: Conn, work_order_id: int, expected: int | None, actor: str) -> WorkOrderPublic:
    del actor
    await _locked(conn, work_order_id, expected, {"open"}, "start")
    return await _finish(
        conn, work_order_id, {"status": "in_progress", "started_at": sql.SQL("now()")}, "work_order.started"
    )


async def produce(
    conn: Conn, work_order_id: int, quantity: Decimal, expected: int | None, actor: str
) -> WorkOrderPublic:
    row = await _locked(conn, work_order_id, expected, {"in_progress"}, "record production on")
    if row["kind"] != "production":
        raise InvalidStateError("only production work orders produce goods")
    bom = await fetch_all(
        conn,
        "SELECT b.component_id, b.quantity, p.cost FROM erp.bom_line b JOIN erp.product p ON p.id = b.component_id"
        " WHERE b.product_id = %s ORDER BY b.component_id",
        (row["product_id"],),
    )
    wh = row["warehouse_id"]
    moves = [
        Move("issue", c["component_id"], wh, on_hand=-(c["quantity"] * quantity), field=f"bom[{i}]")
        for i, c in enumerate(bom)
    ]
    moves.append(Move("receipt", row["product_id"], wh, on_hand=quantity, field="body.quantity"))
    applied = await inventory.apply(conn, moves, actor=actor, reference=("work_order", work_order_id))
    consumed = sum((c["cost"] * c["quantity"] * quantity for c in bom), Decimal(0))
    made = applied.levels[(row["product_id"], wh)].cost * quantity
    await ledger.post(
        conn,
        "production",
        f"WO-{work_order_id:06d}: {quantity} produced",
        ("work_order", work_order_id),
        [(ledger.INVENTORY, made), (ledger.INVENTORY, -consumed), (ledger.PRODUCTION_VARIANCE, consumed - made)],
    )
    changes = {"produced_quantity": row["produced_quantity"] + quantity}
    return await _finish(conn, work_order_id, changes, "work_order.produced")


async def complete(conn: Conn, work_order_id: int, expected: int | None, actor: str) -> WorkOrderPublic:
    row = await _locked(conn, work_order_id, expected, {"in_progress"}, "complete")
    parts = row["parts"] or []
    if parts:
        wh = row["warehouse_id"]
        moves = [
            Move(
                "issue",
                p["product_id"],
                wh,
                on_hand=-Decimal(p["quantity"]),
                reserved=-Decimal(p["quantity"]),
                field=f"spare_parts[{i}]",
            )
            for i, p in enumerate(parts)
        ]
        await inventory.apply(conn, moves, actor=actor, reference=("work_order", work_order_id))
        cost = sum((Decimal(p["cost"]) * Decimal(p["quantity"]) for p in parts), Decimal(0))
        await ledger.post(
            conn,
            "maintenance",
            f"WO-{work_order_id:06d}: spare parts used",
            ("work_order", work_order_id),
            [(ledger.MAINTENANCE, cost), (ledger.INVENTORY, -cost)],
        )
    return await _finish(
        conn, work_order_id, {"status": "done", "finished_at": sql.SQL("now()")}, "work_order.completed"
    )


async def cancel(conn: Conn, work_order_id: int, expected: int | None, actor: str) -> WorkOrderPublic:
    row = await _locked(conn, work_order_id, expected, {"open", "in_progress"}, "cancel")
    parts = row["parts"] or []
    if parts:
        moves = [
            Move(
                "release",
                p["product_id"],
                row["warehouse_id"],
                reserved=-Decimal(p["quantity"]),
                field=f"spare_parts[{i}]",
            )
            for i, p in enumerate(parts)
        ]
        await inventory.apply(conn, moves, actor=actor, reference=("work_order", work_order_id))
    return await _finish(
        conn, work_order_id, {"status": "cancelled", "finished_at": sql.SQL("now()")}, "work_order.cancelled"
    )
