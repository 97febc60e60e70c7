"""The business tools: the ERP's figures and the shift report (read-only)."""

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult

from mcp_server import business, plant
from mcp_server.auth import ACCOUNTING_ROLES, current_caller
from mcp_server.errors import RequestError
from mcp_server.models import BusinessReport, ShiftReport
from mcp_server.report import shift_report
from mcp_server.toolkit import READ, Deps, Site, guarded, result, time_range, utc

__all__ = ["register"]

PERIOD_DAYS = {"day": 1, "week": 7, "month": 28}  # a month as its shortest: the most periods a range can hold


def register(server: MCPServer, deps: Deps) -> None:
    @server.tool(annotations=READ)
    @guarded
    async def business_figures(
        limit: Annotated[int, deps.rows] = 50,
        revenue_by: Literal["day", "week", "month"] = "month",
        since: datetime | None = None,
        until: datetime | None = None,
        aging_day: date | None = None,
    ) -> Annotated[CallToolResult, BusinessReport]:
        """Stock below its reorder level (reorder suggestions), open sales orders, receivables ageing
        (per customer, at ``aging_day``) and revenue by period (default: the last 365 days). Receivables
        and revenue only for the ERP roles that see them (admin, accountant)."""
        caller = current_caller(deps.stdio_caller)
        money = caller.role in ACCOUNTING_ROLES
        async with deps.database.read() as conn:
            now = await plant.now(conn)
            start, end = time_range(now, since, until, timedelta(days=365), 3 * 366)
            periods = (end - start) / timedelta(days=PERIOD_DAYS[revenue_by])
            if money and periods > deps.config.limits.max_rows:
                raise RequestError(f"{periods:.0f} revenue periods; at most {deps.config.limits.max_rows}:"
                                   " ask by week or month, or for a shorter range")  # fmt: skip
            doc = BusinessReport(
                as_of=now, currency=await business.currency(conn), below_reorder=await business.reorder(conn, limit),
                open_orders=await business.open_orders(conn, limit),
                receivables=await business.receivables(conn, aging_day or now.date(), limit) if money else None,
                revenue=await business.revenue(conn, revenue_by, start, end) if money else None,
            )  # fmt: skip
        owed = sum((r.total for r in doc.receivables or []), start=business.ZERO)
        summary = (f"{len(doc.below_reorder)} item(s) to reorder, {len(doc.open_orders)} open order(s)"
                   + (f", receivables {owed} {doc.currency}" if money else " (receivables and revenue: not for role "
                      f"{caller.role!r})") + f". As of {now:%Y-%m-%d %H:%M:%S} UTC.")  # fmt: skip
        return result(doc, summary)

    @server.tool(name="shift_report", annotations=READ)
    @guarded
    async def shift_report_tool(site: Site, at: datetime | None = None) -> Annotated[CallToolResult, ShiftReport]:
        """The shift report as text: the summary figures of the shift running at ``at`` (default: the
        newest shift with OEE) at ``site``."""
        async with deps.database.read() as conn:
            report = await shift_report(conn, site, utc(at) if at else None)
        return result(report, report.text)
