"""The maintenance scheduler: a window by the line's expected output, and (when the caller's
role allows) the work order opened in the ERP as the caller, once per asset and window."""

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from mcp_server import plant
from mcp_server.auth import MAINTENANCE_ROLES, current_caller
from mcp_server.db import Conn
from mcp_server.erp import open_maintenance_order
from mcp_server.errors import RequestError
from mcp_server.forecast import FORECAST_BASIS, expected_output, line_forecast, line_of
from mcp_server.models import HourlyOutput, ScheduleResult
from mcp_server.schedule import (
    PATTERN_BASIS,
    chosen_window,
    idempotency_key,
    lowest_output_window,
    recent_pattern,
    window_reason,
)  # fmt: skip
from mcp_server.toolkit import Deps, Name, Site, guarded, known_asset, result, utc

__all__ = ["SparePartRequest", "register"]


class SparePartRequest(BaseModel):
    """A spare part to reserve for the order: the ERP product's SKU and the quantity."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: float = Field(gt=0, le=1_000_000)


def register(server: MCPServer, deps: Deps) -> None:
    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                             open_world_hint=False))  # fmt: skip
    @guarded
    async def schedule_maintenance(
        *,
        asset: Name,
        line: Name | None = None,
        site: Site | None = None,
        horizon_hours: Annotated[int, Field(ge=1, le=deps.config.limits.max_horizon_hours)] = 24,
        duration_hours: Annotated[int, Field(ge=1, le=24)] = 2,
        history_days: Annotated[int, Field(ge=1, le=int(deps.config.limits.max_range_days))] = 7,
        open_work_order: bool = False,
        window_start: datetime | None = None,
        priority: Literal["low", "normal", "high", "urgent"] = "high",
        warehouse: Annotated[str | None, Field(max_length=64)] = None,
        spare_parts: Annotated[list[SparePartRequest], Field(max_length=20)] = [],  # noqa: B006 - pydantic copies it
    ) -> Annotated[CallToolResult, ScheduleResult]:
        """Propose a maintenance window for an at-risk asset: the ``duration_hours`` in the next
        ``horizon_hours`` in which its line is expected to make least (by the production forecast
        when ``site`` is given and the line has two weeks of history, else the line's recent hourly
        pattern; the answer's window says which). With ``open_work_order`` (roles admin, planner,
        service) the maintenance work order is opened in the ERP as the caller, for ``window_start``
        when given (a proposal accepted); a retried call opens it once (Idempotency-Key from asset
        and window)."""
        caller = current_caller(deps.stdio_caller)
        if open_work_order:
            caller.require(MAINTENANCE_ROLES, "open maintenance work orders")
        async with deps.database.read() as conn:
            now = await plant.now(conn)
            await known_asset(conn, asset)
            line = line or asset
            first = utc(now).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            expected, basis = await _expected(deps, conn, site=site, line=line, first=first, hours=horizon_hours,
                                              history_days=history_days, now=now)  # fmt: skip
            window = lowest_output_window(expected, duration_hours, basis)
            if window_start is not None:
                window = chosen_window(expected, utc(window_start), duration_hours, window.basis)
            health = [h for h in await plant.asset_health(conn, asset, now - timedelta(days=7))
                      if site is None or h.site in (site, "")]  # fmt: skip
            opened = None
            if open_work_order:
                body = await _order_body(
                    conn,
                    asset,
                    site=site,
                    reason=window_reason(asset, window),
                    priority=priority,
                    warehouse=warehouse,
                    parts=spare_parts,
                )
        if open_work_order:
            key = idempotency_key(asset, window, site)
            opened = await open_maintenance_order(deps.config.erp_url, caller, body, key,
                                                  timeout_s=deps.config.erp_timeout_s)  # fmt: skip
        doc = ScheduleResult(as_of=now, asset=asset, line=line, health=health[0] if health else None, window=window,
                             expected_by_hour=expected, work_order=opened)  # fmt: skip
        summary = (f"Window for {asset}: {window.start:%Y-%m-%d %H:%M}–{window.end:%H:%M} UTC, expected output "
                   f"{window.expected_output:.1f} on {line}"
                   + (f"; work order {opened.number} {'already open' if opened.replayed else 'opened'}"
                      f" as {caller.name}" if opened else "; no work order opened")
                   + f". As of {now:%Y-%m-%d %H:%M:%S} UTC.")  # fmt: skip
        return result(doc, summary)


async def _expected(
    deps: Deps,
    conn: Conn,
    *,
    site: str | None,
    line: str,
    first: datetime,
    hours: int,
    history_days: int,
    now: datetime,
) -> tuple[list[HourlyOutput], str]:
    """The line's expected output per hour from ``first``, and what it is based on: the production
    forecast where it can be made, else the recent hourly pattern (saying why)."""
    pattern = PATTERN_BASIS.format(days=history_days)
    if site is not None:
        try:
            config = line_of(deps.config.lines, line)
            forecast = await line_forecast(conn, site, config, hours + 1, now)
            return expected_output(forecast, first)[:hours], FORECAST_BASIS
        except RequestError as exc:
            pattern += f" (no forecast: {exc})"
    if not await plant.known_line(conn, line):
        raise RequestError(f"{line!r} is not a production line with hourly output; name the asset's line")
    return await recent_pattern(conn, line, first, hours, history_days), pattern


async def _order_body(conn: Conn, asset: str, *, site: str | None, reason: str, priority: str,
                      warehouse: str | None, parts: list[SparePartRequest]) -> dict[str, Any]:  # fmt: skip
    """The ERP's work-order request: the warehouse and products looked up by code and SKU."""
    cur = await conn.execute(
        "SELECT id FROM erp.warehouse WHERE (%s::text IS NULL OR code = %s) ORDER BY id LIMIT 1", (warehouse, warehouse)
    )
    row = await cur.fetchone()
    if row is None:
        raise RequestError(f"no warehouse {warehouse!r} in the ERP" if warehouse else "the ERP has no warehouse")
    spare = []
    for part in parts:
        cur = await conn.execute("SELECT id FROM erp.product WHERE sku = %s", (part.sku,))
        found = await cur.fetchone()
        if found is None:
            raise RequestError(f"no product with SKU {part.sku!r} in the ERP")
        spare.append({"product_id": found["id"], "quantity": str(part.quantity)})
    return {"kind": "maintenance", "site": site, "asset": asset, "reason": reason, "priority": priority,
            "warehouse_id": row["id"], "spare_parts": spare}  # fmt: skip
