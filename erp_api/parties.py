"""Customers and warehouses (``erp.customer``, ``erp.warehouse``).

Creating and changing them are SQL functions (``erp.create_customer``,
``erp.update_customer``, ``erp.create_warehouse``, ``erp.update_warehouse`` in
``erp_api/sql/0013_master_data_commands.sql``): one statement each (docs/erp-api.md,
"Where commands live"). The documents the API returns and the events carry are
``erp.customer_doc`` and ``erp.warehouse_doc``, for every path, reads included.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import sql

from erp_api.db import Conn, fetch_all, like
from erp_api.errors import NotFoundError
from erp_api.pagination import PageRequest, keyset, next_cursor, page_json
from erp_api.responses import Doc
from erp_api.schemas.catalog import CustomerCreate, CustomerUpdate, WarehouseCreate, WarehouseUpdate
from erp_api.schemas.common import non_null_changes

__all__ = [
    "CREATE_CUSTOMER",
    "CREATE_WAREHOUSE",
    "CUSTOMER_SORTS",
    "UPDATE_CUSTOMER",
    "UPDATE_WAREHOUSE",
    "WAREHOUSE_SORTS",
    "create_customer_args",
    "create_warehouse_args",
    "get_customer",
    "get_warehouse",
    "list_customers",
    "list_warehouses",
    "update_customer_args",
    "update_warehouse_args",
]

# The commands, as SQL functions taking (principal, Idempotency-Key, request hash) first.
CREATE_CUSTOMER: Final = "SELECT * FROM erp.create_customer(%s, %s, %s, %s, %s, %s, %s, %s::int)"
UPDATE_CUSTOMER: Final = (
    "SELECT * FROM erp.update_customer(%s, %s, %s, %s, %s::numeric, %s::text[], %s, %s, %s, %s, %s::int)"
)
CREATE_WAREHOUSE: Final = "SELECT * FROM erp.create_warehouse(%s, %s, %s, %s, %s)"
UPDATE_WAREHOUSE: Final = "SELECT * FROM erp.update_warehouse(%s, %s, %s, %s, %s::numeric, %s)"

CUSTOMER_SORTS: Final = {"id": "c.id", "name": "c.name", "created_at": "c.created_at"}
WAREHOUSE_SORTS: Final = {"id": "w.id", "code": "w.code", "name": "w.name"}
NULLABLE: Final = frozenset({"email", "tax_id", "address"})  # a customer PATCH may clear these with null


def create_customer_args(body: CustomerCreate) -> tuple[object, ...]:
    """The arguments of ``CREATE_CUSTOMER`` after the principal, key and hash."""
    return body.name, body.email, body.tax_id, body.address, body.payment_terms_days


def update_customer_args(body: CustomerUpdate) -> tuple[object, ...]:
    """The arguments of ``UPDATE_CUSTOMER`` after the customer id and expected version: the
    fields sent, then their values (null only where a field may be empty; 422 before
    anything is read)."""
    fields = sorted(non_null_changes(body, nullable=NULLABLE))
    return fields, body.name, body.email, body.tax_id, body.address, body.payment_terms_days


def create_warehouse_args(body: WarehouseCreate) -> tuple[object, ...]:
    return body.code, body.name


def update_warehouse_args(body: WarehouseUpdate) -> tuple[object, ...]:
    """The new name, after the warehouse id and expected version (422 for null or nothing)."""
    non_null_changes(body)
    return (body.name,)


async def _get(conn: Conn, query: str, row_id: int, what: str) -> Doc:
    cur = await conn.execute(query, (row_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no {what} with id {row_id}")
    return Doc(*row)


async def get_customer(conn: Conn, customer_id: int) -> Doc:
    query = "SELECT c.id, c.version, erp.customer_doc(c)::text FROM erp.customer c WHERE c.id = %s"
    return await _get(conn, query, customer_id, "customer")


async def get_warehouse(conn: Conn, warehouse_id: int) -> Doc:
    query = "SELECT w.id, w.version, erp.warehouse_doc(w)::text FROM erp.warehouse w WHERE w.id = %s"
    return await _get(conn, query, warehouse_id, "warehouse")


async def list_customers(conn: Conn, page: PageRequest, *, q: str | None) -> bytes:
    """A page of customers, filtered by part of the name (None: any)."""
    plan = keyset(page, CUSTOMER_SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    if q is not None:
        conditions.append(sql.SQL("c.name ILIKE %s"))
        params.append(like(q))
    query = sql.SQL(
        "SELECT c.id, c.name, c.created_at, erp.customer_doc(c)::text AS doc FROM erp.customer c"
        " WHERE {} ORDER BY {} LIMIT %s"
    ).format(sql.SQL(" AND ").join(conditions), plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)


async def list_warehouses(conn: Conn, page: PageRequest) -> bytes:
    plan = keyset(page, WAREHOUSE_SORTS)
    query = sql.SQL(
        "SELECT w.id, w.code, w.name, erp.warehouse_doc(w)::text AS doc FROM erp.warehouse w"
        " WHERE {} ORDER BY {} LIMIT %s"
    ).format(plan.where, plan.order_by)
    rows = await fetch_all(conn, query, [*plan.params, plan.limit])
    return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)
