"""Work orders (``erp.work_order``, ``erp.work_order_part``).

Production: ``produce`` consumes the bill of materials for the quantity made (good units and
scrap) and puts the good units into the same warehouse, in one stock change; the journal moves value
from components to finished goods at standard cost, the difference to production
variance. Maintenance: spare parts are reserved when the order is created, what is short
back-ordered (``backorder``, the default; or all or none, 409 naming the short parts) and
reserved as stock arrives (``erp_api.backorders``); they are consumed when the order is
done (expensed at cost; only once all are reserved), and released if it is cancelled.
Both kinds go open -> in_progress -> done, or cancelled.

Every command is an SQL function in ``erp_api/sql/0012_work_order_commands.sql``
(``erp.create_work_order``, ``erp.update_work_order``, ``erp.start_work_order``,
``erp.produce_work_order``, ``erp.complete_work_order``, ``erp.cancel_work_order``; create,
complete and cancel as ``0018_backorders.sql`` replaced them, create again with the site in
``0023_work_order_site.sql``): one statement each
(docs/erp-api.md, "Where commands live"). The document the API returns and the events
carry is ``erp.work_order_doc``, for every path, reads included.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from erp_api.documents import Documents
from erp_api.schemas.common import non_null_changes
from erp_api.schemas.work_orders import MaintenanceCreate, ProductionCreate, WorkOrderUpdate

__all__ = ["CANCEL", "COMPLETE", "CREATE", "DOCS", "PRODUCE", "START", "UPDATE", "create_args", "update_args"]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE: Final = (
    "SELECT * FROM erp.create_work_order(%s, %s, %s, %s, %s, %s, %s, %s::numeric, %s::numeric, %s, %s, %s,"
    " %s::bigint[], %s::numeric[], %s, %s)"
)
UPDATE: Final = "SELECT * FROM erp.update_work_order(%s, %s, %s, %s, %s, %s, %s, %s)"
START: Final = "SELECT * FROM erp.start_work_order(%s, %s, %s, %s, %s)"
PRODUCE: Final = "SELECT * FROM erp.produce_work_order(%s, %s, %s, %s, %s, %s::numeric, %s::numeric)"
COMPLETE: Final = "SELECT * FROM erp.complete_work_order(%s, %s, %s, %s, %s)"
CANCEL: Final = "SELECT * FROM erp.cancel_work_order(%s, %s, %s, %s, %s)"

DOCS: Final = Documents(
    "work order", "erp.work_order w", "erp.work_order_doc(w)", {"id": "w.id", "created_at": "w.created_at"},
    filters={"kind": "w.kind = %s", "status": "w.status = %s", "site": "w.site = %s", "asset": "w.asset = %s",
             "priority": "w.priority = %s"},
    version="w.version",
)  # fmt: skip


def create_args(body: ProductionCreate | MaintenanceCreate) -> tuple[object, ...]:
    """The arguments of ``CREATE`` after the principal, key and hash."""
    if isinstance(body, ProductionCreate):
        kind_specific: tuple[object, ...] = (body.product_id, body.planned_quantity, body.ideal_rate, None)
        parts: list[tuple[int, Decimal]] = []
        backorder = False
    else:
        kind_specific = (None, None, None, body.reason)
        parts = [(p.product_id, p.quantity) for p in body.spare_parts]
        backorder = body.backorder
    return (
        body.kind,
        body.asset,
        body.warehouse_id,
        *kind_specific,
        body.priority,
        body.notes,
        [product for product, _ in parts],
        [quantity for _, quantity in parts],
        backorder,
        body.site,
    )


def update_args(body: WorkOrderUpdate) -> tuple[object, ...]:
    """(priority, notes, whether notes change) for ``UPDATE``: a PATCH may clear notes with null,
    never the priority (422 before anything is read)."""
    changes = non_null_changes(body)
    return changes.get("priority"), changes.get("notes"), "notes" in changes
