"""The production forecast tool: expected output per line with its interval, and whether each
running production order finishes on time."""

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from mcp_server import plant
from mcp_server.forecast import FORECAST_BASIS, hours_of, line_forecast, line_of, order_forecasts
from mcp_server.models import ProductionForecast
from mcp_server.toolkit import READ, Deps, Name, Site, guarded, result

__all__ = ["register"]


def register(server: MCPServer, deps: Deps) -> None:
    @server.tool(annotations=READ)
    @guarded
    async def production_forecast(
        *, site: Site, line: Name, horizon_hours: Annotated[int, Field(ge=1, le=168)] = 24
    ) -> Annotated[CallToolResult, ProductionForecast]:
        """Expected output of ``line`` at ``site`` for each of the next ``horizon_hours`` hours
        (from the start of the current one) with an 80 % prediction interval, and for each of the
        line's production orders in progress: its due time, expected finish and whether it will
        be on time (on_time, at_risk, late). Needs two weeks of the line's counter history."""
        config = line_of(deps.config.lines, line)
        async with deps.database.read() as conn:
            now = await plant.now(conn)
            forecast = await line_forecast(conn, site, config, horizon_hours, now)
            orders = await order_forecasts(conn, site, config, now)
        doc = ProductionForecast(as_of=now, site=site, line=line, level=forecast.level, basis=FORECAST_BASIS,
                                 hours=hours_of(forecast), orders=orders)  # fmt: skip
        total, low, high = forecast.cum_expected[-1], forecast.cum_lower[-1], forecast.cum_upper[-1]
        late = [o.work_order for o in orders if o.verdict in ("late", "at_risk")]
        summary = (f"{line} at {site}: {total:.0f} expected in the next {len(forecast.times)} h (80 %: {low:.0f}–"
                   f"{high:.0f}); {len(orders)} order(s) in progress"
                   + (f", at risk or late: {', '.join(late)}" if late else ", all on time" if orders else "")
                   + f". As of {now:%Y-%m-%d %H:%M:%S} UTC.")  # fmt: skip
        return result(doc, summary)
