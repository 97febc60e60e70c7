"""/api/v1/ledger: the chart of accounts, journal entries, trial balance, receivables aging."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from erp_api import ledger
from erp_api.deps import Accounting, Cursor, Limit
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.billing import AccountBalance, AgingRow, JournalEntryPublic, ReceivablesAging, TrialBalance
from erp_api.schemas.common import IsoDate, money

__all__ = ["router"]

router = APIRouter(prefix="/ledger", tags=["ledger"])
NORMAL_DEBIT = frozenset({"asset", "expense"})


@router.get("/entries", responses=problems(422))
async def list_entries(
    *,
    ctx: Accounting,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id"] = "id",
    kind: Annotated[str | None, Query(max_length=32, pattern=NO_NUL, examples=["invoice"])] = None,
    reference_type: Annotated[str | None, Query(max_length=32, pattern=NO_NUL, examples=["invoice"])] = None,
    reference_id: Annotated[int | None, Query(gt=0, lt=2**63)] = None,
) -> Page[JournalEntryPublic]:
    """Journal entries with their lines (each one balances)."""
    filters = {"kind": kind, "reference_type": reference_type, "reference_id": reference_id}
    return await ledger.list_entries(
        ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), ctx.currency, filters
    )


@router.get("/trial-balance", responses=problems(422))
async def trial_balance(
    *,
    ctx: Accounting,
    as_of: Annotated[IsoDate | None, Query(description="Include postings up to this day (default: all).")] = None,
) -> TrialBalance:
    """Debits and credits per account; the totals are equal by construction."""
    accounts = []
    total_debit = total_credit = Decimal(0)
    for row in await ledger.trial_balance(ctx.conn, as_of):
        debit, credit = Decimal(str(row["debit"])), Decimal(str(row["credit"]))
        total_debit, total_credit = total_debit + debit, total_credit + credit
        balance = debit - credit if row["type"] in NORMAL_DEBIT else credit - debit
        accounts.append(
            AccountBalance(
                code=str(row["code"]),
                name=str(row["name"]),
                type=row["type"],
                debit=money(debit, ctx.currency),
                credit=money(credit, ctx.currency),
                balance=money(balance, ctx.currency),
            )
        )
    return TrialBalance(
        as_of=as_of,
        accounts=accounts,
        total_debit=money(total_debit, ctx.currency),
        total_credit=money(total_credit, ctx.currency),
        balanced=total_debit == total_credit,
    )


@router.get("/receivables-aging", responses=problems(422))
async def receivables_aging(
    *,
    ctx: Accounting,
    as_of: Annotated[IsoDate | None, Query(description="Age at this day (default: today).")] = None,
) -> ReceivablesAging:
    """Open receivables per customer: current, 1-30, 31-60, 61-90 and over 90 days past due."""
    day = as_of or date.today()  # noqa: DTZ011 - the plant's calendar day
    rows = []
    for row in await ledger.aging(ctx.conn, day):
        amounts = {
            k: money(Decimal(str(row[k] or 0)), ctx.currency)
            for k in ("current", "days_1_30", "days_31_60", "days_61_90", "over_90", "total")
        }
        rows.append(AgingRow(customer_id=int(str(row["customer_id"])), customer=str(row["customer"]), **amounts))
    total = sum((r.total.amount for r in rows), Decimal(0))
    return ReceivablesAging(as_of=day, customers=rows, total=money(total, ctx.currency))
