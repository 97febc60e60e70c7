"""Reads of the ERP's business figures: reorder suggestions, open orders, receivables, revenue.

The same SQL the ERP answers with (``erp.reorder_suggestions``, the aging buckets of
``erp_api.ledger.aging``), read through the MCP server's read-only connection."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from mcp_server.db import Conn
from mcp_server.models import AgingRow, OpenOrder, ReorderRow, RevenuePeriod

__all__ = ["ZERO", "currency", "open_orders", "receivables", "reorder", "revenue"]

ZERO = Decimal(0)
Period = Literal["day", "week", "month"]


async def _rows(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cur = await conn.execute(query, params)  # constant SQL, values as parameters
    return await cur.fetchall()


async def currency(conn: Conn) -> str:
    rows = await _rows(conn, "SELECT currency FROM erp.company")
    return str(rows[0]["currency"]) if rows else "EUR"


async def reorder(conn: Conn, limit: int) -> list[ReorderRow]:
    rows = await _rows(
        conn,
        """SELECT sku, warehouse_code, on_hand - reserved AS available, on_order, back_ordered, reorder_point,
                  quantity, supplier_code, needed_by, reasons
             FROM erp.reorder_suggestions(NULL) ORDER BY product_id, warehouse_id LIMIT %s""",
        (limit,),
    )
    return [ReorderRow(sku=r["sku"], warehouse=r["warehouse_code"], available=r["available"],
                       on_order=r["on_order"], back_ordered=r["back_ordered"], reorder_point=r["reorder_point"],
                       suggested_quantity=r["quantity"], supplier=r["supplier_code"],
                       needed_by=datetime.combine(r["needed_by"], datetime.min.time()) if r["needed_by"] else None,
                       reasons=list(r["reasons"])) for r in rows]  # fmt: skip


async def open_orders(conn: Conn, limit: int) -> list[OpenOrder]:
    rows = await _rows(
        conn,
        """SELECT o.id, erp.numbered('SO-', o.id) AS number, c.name AS customer, o.status, o.created_at,
                  coalesce(sum(round(l.quantity * l.unit_price, 2)), 0)::numeric(16, 2) AS net
             FROM erp.sales_order o JOIN erp.customer c ON c.id = o.customer_id
             LEFT JOIN erp.sales_order_line l ON l.order_id = o.id
            WHERE o.status IN ('draft', 'confirmed', 'shipped')
            GROUP BY o.id, c.name ORDER BY o.id DESC LIMIT %s""",
        (limit,),
    )
    return [OpenOrder(id=r["id"], number=r["number"], customer=r["customer"], status=r["status"],
                      created_at=r["created_at"], net=r["net"]) for r in rows]  # fmt: skip


async def receivables(conn: Conn, as_of: date, limit: int) -> list[AgingRow]:
    rows = await _rows(
        conn,
        """SELECT c.name AS customer,
                  coalesce(sum(o.open) FILTER (WHERE o.late <= 0), 0)::numeric(16, 2) AS current,
                  coalesce(sum(o.open) FILTER (WHERE o.late BETWEEN 1 AND 30), 0)::numeric(16, 2) AS days_1_30,
                  coalesce(sum(o.open) FILTER (WHERE o.late BETWEEN 31 AND 60), 0)::numeric(16, 2) AS days_31_60,
                  coalesce(sum(o.open) FILTER (WHERE o.late BETWEEN 61 AND 90), 0)::numeric(16, 2) AS days_61_90,
                  coalesce(sum(o.open) FILTER (WHERE o.late > 90), 0)::numeric(16, 2) AS over_90,
                  sum(o.open)::numeric(16, 2) AS total
             FROM (SELECT customer_id, gross - paid - credited AS open, %s::date - due_date AS late
                     FROM erp.invoice
                    WHERE kind = 'invoice' AND gross - paid - credited > 0 AND issue_date <= %s) o
             JOIN erp.customer c ON c.id = o.customer_id
            GROUP BY c.id, c.name ORDER BY total DESC, c.id LIMIT %s""",
        (as_of, as_of, limit),
    )
    return [AgingRow.model_validate(r) for r in rows]


async def revenue(conn: Conn, period: Period, since: datetime, until: datetime) -> list[RevenuePeriod]:
    rows = await _rows(
        conn,
        """SELECT date_trunc(%s, issue_date::timestamptz) AS start, count(*) FILTER (WHERE kind = 'invoice') AS n,
                  sum(CASE WHEN kind = 'invoice' THEN net ELSE -net END)::numeric(16, 2) AS net
             FROM erp.invoice
            WHERE issue_date >= %s::date AND issue_date <= %s::date
            GROUP BY 1 ORDER BY 1""",
        (period, since, until),
    )
    return [RevenuePeriod(start=r["start"], invoices=r["n"], net=r["net"]) for r in rows]
