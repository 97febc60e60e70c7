"""Products and their bills of materials (``erp.product``, ``erp.bom_line``)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

from psycopg import sql

from erp_api import outbox
from erp_api.db import Conn, fetch_all, fetch_one, like, lock, update_columns
from erp_api.errors import NotFoundError
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.responses import check_version
from erp_api.schemas.catalog import BomComponent, ProductCreate, ProductPublic, ProductUpdate
from erp_api.schemas.common import check_currency, money, non_null_changes

__all__ = ["SORTS", "create", "get", "list_page", "update"]

SORTS: Final = {"id": "p.id", "sku": "p.sku", "name": "p.name", "created_at": "p.created_at"}
SELECT: Final = """
SELECT p.id, p.sku, p.name, p.uom, p.price, p.cost, p.tax_rate, p.reorder_point, p.ideal_rate, p.active,
       p.version,
       p.created_at, p.updated_at,
       (SELECT json_agg(json_build_object('component_id', b.component_id, 'quantity', b.quantity::text)
                        ORDER BY b.component_id)
          FROM erp.bom_line b WHERE b.product_id = p.id) AS bom
  FROM erp.product p"""


def _public(row: dict[str, Any], currency: str) -> ProductPublic:
    bom = row["bom"]
    if isinstance(bom, str):
        bom = json.loads(bom)
    return ProductPublic(
        id=row["id"],
        sku=row["sku"],
        name=row["name"],
        uom=row["uom"],
        price=money(row["price"], currency),
        cost=money(row["cost"], currency),
        tax_rate=row["tax_rate"],
        reorder_point=row["reorder_point"],
        ideal_rate=row["ideal_rate"],
        active=row["active"],
        bom=[BomComponent(component_id=c["component_id"], quantity=Decimal(c["quantity"])) for c in bom or []],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get(conn: Conn, product_id: int, currency: str) -> ProductPublic:
    row = await fetch_one(conn, SELECT + " WHERE p.id = %s", (product_id,))
    if row is None:
        raise NotFoundError(f"no product with id {product_id}")
    return _public(row, currency)


async def list_page(
    conn: Conn, page: PageRequest, currency: str, *, sku: str | None, q: str | None, active: bool | None
) -> Page[ProductPublic]:
    plan = keyset(page, SORTS)
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    if sku is not None:
        conditions.append(sql.SQL("p.sku = %s"))
        params.append(sku)
    if q is not None:
        conditions.append(sql.SQL("p.name ILIKE %s"))
        params.append(like(q))
    if active is not None:
        conditions.append(sql.SQL("p.active = %s"))
        params.append(active)
    query = sql.SQL(SELECT + " WHERE {} ORDER BY {} LIMIT %s").format(sql.SQL(" AND ").join(conditions), plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    return Page(
        items=[_public(r, currency) for r in rows[: page.limit]],
        next_cursor=next_cursor(rows, page, plan),
        limit=page.limit,
    )


async def _replace_bom(conn: Conn, product_id: int, bom: list[BomComponent]) -> None:
    await conn.execute("DELETE FROM erp.bom_line WHERE product_id = %s", (product_id,))
    if bom:
        await conn.execute(
            "INSERT INTO erp.bom_line (product_id, component_id, quantity)"
            " SELECT %s, c, q FROM unnest(%s::bigint[], %s::numeric[]) AS t(c, q)",
            (product_id, [c.component_id for c in bom], [c.quantity for c in bom]),
        )


async def create(conn: Conn, body: ProductCreate, currency: str) -> ProductPublic:
    price = check_currency("price", body.price, currency)
    cost = check_currency("cost", body.cost, currency) if body.cost else Decimal(0)
    cur = await conn.execute(
        "INSERT INTO erp.product (sku, name, uom, price, cost, tax_rate, reorder_point, ideal_rate)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (body.sku, body.name, body.uom, price, cost, body.tax_rate, body.reorder_point, body.ideal_rate),
    )
    row = await cur.fetchone()
    assert row is not None
    await _replace_bom(conn, row[0], body.bom)
    product = await get(conn, row[0], currency)
    await outbox.emit(conn, "product", product.id, "product.created", product)
    return product


async def update(
    conn: Conn, product_id: int, body: ProductUpdate, expected_version: int | None, currency: str
) -> ProductPublic:
    changes = non_null_changes(body)
    current = await lock(conn, "erp.product", product_id, "product")
    check_version(expected_version, current["version"])
    bom = changes.pop("bom", None)
    for field in ("price", "cost"):
        if field in changes:
            changes[field] = check_currency(field, getattr(body, field), currency)
    if bom is not None:
        await _replace_bom(conn, product_id, body.bom or [])
    await update_columns(conn, "erp.product", product_id, changes)
    product = await get(conn, product_id, currency)
    await outbox.emit(conn, "product", product.id, "product.updated", product)
    return product
