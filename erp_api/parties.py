"""Customers and warehouses (``erp.customer``, ``erp.warehouse``)."""

from __future__ import annotations

from typing import Any, Final

from psycopg import sql

from erp_api import outbox
from erp_api.db import Conn, fetch_all, fetch_one, like, lock, update_columns
from erp_api.errors import NotFoundError
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.responses import check_version
from erp_api.schemas.catalog import (
    CustomerCreate,
    CustomerPublic,
    CustomerUpdate,
    WarehouseCreate,
    WarehousePublic,
    WarehouseUpdate,
)
from erp_api.schemas.common import non_null_changes

__all__ = [
    "CUSTOMER_SORTS",
    "WAREHOUSE_SORTS",
    "create_customer",
    "create_warehouse",
    "get_customer",
    "get_warehouse",
    "list_customers",
    "list_warehouses",
    "update_customer",
    "update_warehouse",
]

CUSTOMER_SORTS: Final = {"id": "id", "name": "name", "created_at": "created_at"}
WAREHOUSE_SORTS: Final = {"id": "id", "code": "code", "name": "name"}
CUSTOMER: Final = (
    "SELECT id, name, email, tax_id, address, payment_terms_days, version, created_at, updated_at FROM erp.customer"
)
WAREHOUSE: Final = "SELECT id, code, name, version, created_at, updated_at FROM erp.warehouse"


async def get_customer(conn: Conn, customer_id: int) -> CustomerPublic:
    row = await fetch_one(conn, CUSTOMER + " WHERE id = %s", (customer_id,))
    if row is None:
        raise NotFoundError(f"no customer with id {customer_id}")
    return CustomerPublic.model_validate(row)


async def list_customers(conn: Conn, page: PageRequest, *, q: str | None) -> Page[CustomerPublic]:
    plan = keyset(page, CUSTOMER_SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    if q is not None:
        conditions.append(sql.SQL("name ILIKE %s"))
        params.append(like(q))
    query = sql.SQL(CUSTOMER + " WHERE {} ORDER BY {} LIMIT %s").format(
        sql.SQL(" AND ").join(conditions), plan.order_by
    )
    rows = await fetch_all(conn, query, [*params, plan.limit])
    items = [CustomerPublic.model_validate(r) for r in rows[: page.limit]]
    return Page(items=items, next_cursor=next_cursor(rows, page, plan), limit=page.limit)


async def create_customer(conn: Conn, body: CustomerCreate) -> CustomerPublic:
    row = await fetch_one(
        conn,
        "INSERT INTO erp.customer (name, email, tax_id, address, payment_terms_days)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id, name, email, tax_id, address, payment_terms_days, version,"
        " created_at, updated_at",
        (body.name, body.email, body.tax_id, body.address, body.payment_terms_days),
    )
    customer = CustomerPublic.model_validate(row)
    await outbox.emit(conn, "customer", customer.id, "customer.created", customer)
    return customer


async def update_customer(
    conn: Conn, customer_id: int, body: CustomerUpdate, expected_version: int | None
) -> CustomerPublic:
    changes = non_null_changes(body, nullable=frozenset({"email", "tax_id", "address"}))
    current = await lock(conn, "erp.customer", customer_id, "customer")
    check_version(expected_version, current["version"])
    await update_columns(conn, "erp.customer", customer_id, changes)
    customer = await get_customer(conn, customer_id)
    await outbox.emit(conn, "customer", customer.id, "customer.updated", customer)
    return customer


async def get_warehouse(conn: Conn, warehouse_id: int) -> WarehousePublic:
    row = await fetch_one(conn, WAREHOUSE + " WHERE id = %s", (warehouse_id,))
    if row is None:
        raise NotFoundError(f"no warehouse with id {warehouse_id}")
    return WarehousePublic.model_validate(row)


async def list_warehouses(conn: Conn, page: PageRequest) -> Page[WarehousePublic]:
    plan = keyset(page, WAREHOUSE_SORTS)
    query = sql.SQL(WAREHOUSE + " WHERE {} ORDER BY {} LIMIT %s").format(plan.where, plan.order_by)
    rows = await fetch_all(conn, query, [*plan.params, plan.limit])
    items = [WarehousePublic.model_validate(r) for r in rows[: page.limit]]
    return Page(items=items, next_cursor=next_cursor(rows, page, plan), limit=page.limit)


async def create_warehouse(conn: Conn, body: WarehouseCreate) -> WarehousePublic:
    row = await fetch_one(
        conn,
        "INSERT INTO erp.warehouse (code, name) VALUES (%s, %s)"
        " RETURNING id, code, name, version, created_at, updated_at",
        (body.code, body.name),
    )
    warehouse = WarehousePublic.model_validate(row)
    await outbox.emit(conn, "warehouse", warehouse.id, "warehouse.created", warehouse)
    return warehouse


async def update_warehouse(
    conn: Conn, warehouse_id: int, body: WarehouseUpdate, expected_version: int | None
) -> WarehousePublic:
    changes = non_null_changes(body)
    current = await lock(conn, "erp.warehouse", warehouse_id, "warehouse")
    check_version(expected_version, current["version"])
    await update_columns(conn, "erp.warehouse", warehouse_id, changes)
    warehouse = await get_warehouse(conn, warehouse_id)
    await outbox.emit(conn, "warehouse", warehouse.id, "warehouse.updated", warehouse)
    return warehouse
