"""The one place where PostgreSQL errors become ERP problems.

Store modules run their SQL inside ``translated()``: a unique, foreign-key or check
violation is reported as 409/422 naming the request field the constraint guards, so
the database stays the final judge of integrity without leaking its messages.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from erp_api.errors import (
    ConflictError,
    ErpError,
    InsufficientStockError,
    UnprocessableError,
    refusal,
)

__all__ = [
    "CONSTRAINT_FIELDS",
    "Conn",
    "fetch_all",
    "like",
    "translated",
]

Conn = psycopg.AsyncConnection[Any]

# constraint -> (request field, reason a client can act on)
CONSTRAINT_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "product_sku_key": ("sku", "a product with this SKU already exists"),
    "customer_name_key": ("name", "a customer with this name already exists"),
    "warehouse_code_key": ("code", "a warehouse with this code already exists"),
    "app_user_username_key": ("username", "this user already exists"),
    "api_key_name_key": ("name", "an API key with this name already exists"),
    "bom_line_component_fkey": ("bom", "a component product does not exist"),
    "bom_line_not_self": ("bom", "a product cannot be its own component"),
    "sales_order_customer_fkey": ("customer_id", "no such customer"),
    "sales_order_warehouse_fkey": ("warehouse_id", "no such warehouse"),
    "sales_order_line_product_fkey": ("lines", "a product does not exist"),
    "work_order_warehouse_fkey": ("warehouse_id", "no such warehouse"),
    "work_order_product_fkey": ("product_id", "no such product"),
    "work_order_part_product_fkey": ("spare_parts", "a spare part product does not exist"),
    "stock_product_id_fkey": ("product_id", "no such product"),
    "stock_warehouse_id_fkey": ("warehouse_id", "no such warehouse"),
    "invoice_one_per_order": ("order_id", "this order is already invoiced"),
    "invoice_settlement_check": ("amount", "more than the invoice's outstanding amount"),
    "supplier_code_key": ("code", "a supplier with this code already exists"),
    "supplier_item_once": ("product_id", "this supplier already has an item for this product"),
    "supplier_item_one_preferred": ("preferred", "another supplier is preferred for this product"),
    "supplier_item_supplier_fkey": ("supplier_id", "no such supplier"),
    "supplier_item_product_fkey": ("product_id", "no such product"),
    "purchase_order_warehouse_fkey": ("warehouse_id", "no such warehouse"),
    "purchase_order_line_product_fkey": ("lines", "a product does not exist"),
    "purchase_order_line_not_over_received": ("quantity", "more than is left to receive on the line"),
    "supplier_invoice_reference_key": ("supplier_reference", "this supplier's invoice is already entered"),
    "supplier_invoice_settlement_check": ("amount", "more than the invoice's outstanding amount"),
}
STOCK_CHECKS: Final = frozenset({"stock_on_hand_check", "stock_reserved_check", "stock_available_check"})


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Map integrity violations and refusals raised in SQL (``erp.refuse``) to ERP problems."""
    try:
        yield
    except pg_errors.IntegrityError as exc:
        raise _problem(exc) from exc
    except pg_errors.RaiseException as exc:
        hint = exc.diag.message_hint or ""
        error = refusal(hint[4:], exc.diag.message_primary or "", json.loads(exc.diag.message_detail or "{}"))
        if not hint.startswith("erp:") or error is None:
            raise
        raise error from exc


def _problem(exc: psycopg.errors.IntegrityError) -> ErpError:
    """The problem for a constraint a client can violate; re-raises the ones only a bug can."""
    constraint = exc.diag.constraint_name or ""
    if constraint in STOCK_CHECKS:
        return InsufficientStockError("the stock is not sufficient for this change", constraint=constraint)
    field, reason = CONSTRAINT_FIELDS.get(constraint, ("", ""))
    if isinstance(exc, pg_errors.UniqueViolation):
        return ConflictError.on_field(field or "body", reason or "already exists")
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return UnprocessableError.on_field(field or "body", reason or "refers to something that does not exist")
    if isinstance(exc, pg_errors.CheckViolation) and constraint:
        return UnprocessableError.on_field(field or "body", reason or f"violates {constraint}")
    raise exc  # an invariant trigger (e.g. an unbalanced journal entry) firing is a bug: a 500, logged


def like(text: str) -> str:
    """An ILIKE pattern matching ``text`` literally anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def fetch_all(conn: Conn, query: sql.Composable | str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()
