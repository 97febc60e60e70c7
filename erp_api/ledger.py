"""The double-entry journal (``erp.journal_entry``, ``erp.journal_line``) and its reports.

Every business change that moves value posts one balanced entry in the same
transaction, through ``erp.post_entry`` in the command's SQL function; the deferred
constraint trigger in the schema checks the balance again at commit, so an unbalanced
entry cannot exist. This module holds the reads: the entries, the trial balance, aging.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from psycopg import sql

from erp_api.db import Conn, fetch_all
from erp_api.pagination import Page, PageRequest, keyset, next_cursor
from erp_api.schemas.billing import JournalEntryPublic, JournalLinePublic
from erp_api.schemas.common import money

__all__ = ["aging", "list_entries", "trial_balance"]


async def trial_balance(conn: Conn, as_of: date | None) -> list[dict[str, object]]:
    """Per account: total debits, total credits, and the balance on its normal side."""
    return await fetch_all(
        conn,
        """SELECT a.code, a.name, a.type,
                  coalesce(sum(l.debit), 0)::numeric(16, 2) AS debit,
                  coalesce(sum(l.credit), 0)::numeric(16, 2) AS credit
             FROM erp.account a
             LEFT JOIN (erp.journal_line l JOIN erp.journal_entry e ON e.id = l.entry_id
                        AND (%s::date IS NULL OR e.posted_at < (%s::date + 1)))
               ON l.account_code = a.code
            GROUP BY a.code, a.name, a.type
            ORDER BY a.code""",
        (as_of, as_of),
    )


async def aging(conn: Conn, as_of: date) -> list[dict[str, object]]:
    """Open receivables per customer in buckets of days past due at ``as_of``."""
    return await fetch_all(
        conn,
        """SELECT c.id AS customer_id, c.name AS customer,
                  sum(o.open) FILTER (WHERE o.late <= 0)::numeric(16, 2) AS current,
                  sum(o.open) FILTER (WHERE o.late BETWEEN 1 AND 30)::numeric(16, 2) AS days_1_30,
                  sum(o.open) FILTER (WHERE o.late BETWEEN 31 AND 60)::numeric(16, 2) AS days_31_60,
                  sum(o.open) FILTER (WHERE o.late BETWEEN 61 AND 90)::numeric(16, 2) AS days_61_90,
                  sum(o.open) FILTER (WHERE o.late > 90)::numeric(16, 2) AS over_90,
                  sum(o.open)::numeric(16, 2) AS total
             FROM (SELECT customer_id, gross - paid - credited AS open, %s::date - due_date AS late
                     FROM erp.invoice
                    WHERE kind = 'invoice' AND gross - paid - credited > 0 AND issue_date <= %s) o
             JOIN erp.customer c ON c.id = o.customer_id
            GROUP BY c.id, c.name
            ORDER BY total DESC, c.id""",
        (as_of, as_of),
    )


async def list_entries(
    conn: Conn, page: PageRequest, currency: str, filters: dict[str, Any]
) -> Page[JournalEntryPublic]:
    """Entries filtered by kind, reference_type, reference_id (None: any), with their lines."""
    plan = keyset(page, {"id": "e.id"})
    conditions: list[sql.Composable] = [plan.where]
    params: list[Any] = list(plan.params)
    for column, value in filters.items():
        if value is not None:
            conditions.append(sql.SQL("e.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    query = sql.SQL(
        """SELECT e.id, e.posted_at, e.kind, e.memo, e.reference_type, e.reference_id,
                  (SELECT json_agg(json_build_object('account', l.account_code, 'debit', l.debit::text,
                                                     'credit', l.credit::text) ORDER BY l.id)
                     FROM erp.journal_line l WHERE l.entry_id = e.id) AS lines
             FROM erp.journal_entry e WHERE {} ORDER BY {} LIMIT %s"""
    ).format(sql.SQL(" AND ").join(conditions), plan.order_by)
    rows = await fetch_all(conn, query, [*params, plan.limit])
    items = [
        JournalEntryPublic(
            id=r["id"],
            posted_at=r["posted_at"],
            kind=r["kind"],
            memo=r["memo"],
            reference_type=r["reference_type"],
            reference_id=r["reference_id"],
            lines=[
                JournalLinePublic(
                    account=ln["account"],
                    debit=money(Decimal(ln["debit"]), currency),
                    credit=money(Decimal(ln["credit"]), currency),
                )
                for ln in r["lines"] or []
            ],
        )
        for r in rows[: page.limit]
    ]
    return Page(items=items, next_cursor=next_cursor(rows, page, plan), limit=page.limit)
