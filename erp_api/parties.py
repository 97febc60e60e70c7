"""Customers and warehouses (``erp.customer``, ``erp.warehouse``).

Creating and changing them are SQL functions (``erp.create_customer``,
``erp.update_customer``, ``erp.create_warehouse``, ``erp.update_warehouse`` in
``erp_api/sql/0013_master_data_commands.sql``): one statement each (docs/erp-api.md,
"Where commands live"). The documents the API returns and the events carry are
``erp.customer_doc`` and ``erp.warehouse_doc``, for every path, reads included.
"""

from __future__ import annotations

from typing import Final

from erp_api.documents import Documents
from erp_api.schemas.catalog import CustomerCreate, CustomerUpdate, WarehouseCreate, WarehouseUpdate
from erp_api.schemas.common import non_null_changes

__all__ = [
    "CREATE_CUSTOMER",
    "CREATE_WAREHOUSE",
    "CUSTOMERS",
    "UPDATE_CUSTOMER",
    "UPDATE_WAREHOUSE",
    "WAREHOUSES",
    "create_customer_args",
    "create_warehouse_args",
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

CUSTOMERS: Final = Documents(
    "customer", "erp.customer c", "erp.customer_doc(c)", {"id": "c.id", "name": "c.name", "created_at": "c.created_at"},
    filters={"name_like": "c.name ILIKE %s"},
    version="c.version",
)  # fmt: skip
WAREHOUSES: Final = Documents(
    "warehouse", "erp.warehouse w", "erp.warehouse_doc(w)", {"id": "w.id", "code": "w.code", "name": "w.name"},
    version="w.version",
)  # fmt: skip


def create_customer_args(body: CustomerCreate) -> tuple[object, ...]:
    """The arguments of ``CREATE_CUSTOMER`` after the principal, key and hash."""
    return body.name, body.email, body.tax_id, body.address, body.payment_terms_days


def update_customer_args(body: CustomerUpdate) -> tuple[object, ...]:
    """The arguments of ``UPDATE_CUSTOMER`` after the customer id and expected version: the
    fields sent, then their values (null only where a field may be empty; 422 before
    anything is read)."""
    fields = sorted(non_null_changes(body))
    return fields, body.name, body.email, body.tax_id, body.address, body.payment_terms_days


def create_warehouse_args(body: WarehouseCreate) -> tuple[object, ...]:
    return body.code, body.name


def update_warehouse_args(body: WarehouseUpdate) -> tuple[object, ...]:
    """The new name, after the warehouse id and expected version (422 for null or nothing)."""
    non_null_changes(body)
    return (body.name,)
