"""The plant's tools: status, anomalies, maintenance, production (all read-only)."""

from datetime import datetime, timedelta
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from mcp_server import plant
from mcp_server.errors import RequestError
from mcp_server.models import AnomalyReport, MaintenanceReport, PlantStatus, ProductionReport
from mcp_server.toolkit import READ, Deps, Name, Site, guarded, known_asset, result, time_range

__all__ = ["register"]


def register(server: MCPServer, deps: Deps) -> None:
    @server.tool(annotations=READ)
    @guarded
    async def plant_status(
        site: Site | None = None,
        tags: Annotated[list[Name], Field(max_length=deps.config.limits.max_tags)] = [],  # noqa: B006 - pydantic copies it
        limit: Annotated[int, deps.rows] = 50,
    ) -> Annotated[CallToolResult, PlantStatus]:
        """Sites, devices online/offline with last seen and edge buffer (depth, oldest age), the current
        value and quality of the named tags, and the open anomaly episodes."""
        async with deps.database.read() as conn:
            doc = PlantStatus(as_of=await plant.now(conn), sites=await plant.sites(conn, site, limit),
                              tags=await plant.tag_values(conn, site, tags, limit),
                              open_episodes=await plant.episodes(conn, asset=None, since=None, until=None,
                                                                 open_only=True, limit=limit))  # fmt: skip
        missing = sorted(set(tags) - {t.tag for t in doc.tags})
        if missing:
            raise RequestError(f"unknown tag(s): {', '.join(missing)}")
        devices = [d for s in doc.sites for d in s.devices]
        summary = (f"As of {doc.as_of:%Y-%m-%d %H:%M:%S} UTC: {len(doc.sites)} site(s), "
                   f"{sum(s.online for s in doc.sites)} of {len(devices)} device(s) online, "
                   f"{len(doc.open_episodes)} open anomaly episode(s)."
                   + "".join(f" {t.tag}={t.value} ({t.quality})" for t in doc.tags))  # fmt: skip
        return result(doc, summary)

    @server.tool(annotations=READ)
    @guarded
    async def anomalies(
        asset: Name | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, deps.rows] = 50,
    ) -> Annotated[CallToolResult, AnomalyReport]:
        """Anomaly episodes (per asset and period, default the last 24 h) with their tag contributions,
        start, end and peak score, newest first."""
        async with deps.database.read() as conn:
            now = await plant.now(conn)
            start, end = time_range(now, since, until, timedelta(hours=24), deps.config.limits.max_range_days)
            await known_asset(conn, asset)
            found = await plant.episodes(conn, asset=asset, since=start, until=end, open_only=False, limit=limit + 1)
        doc = AnomalyReport(as_of=now, since=start, until=end, episodes=found[:limit], truncated=len(found) > limit)
        top = max(doc.episodes, key=lambda e: e.peak_score, default=None)
        summary = (f"{len(doc.episodes)}{'+' if doc.truncated else ''} episode(s) {start:%Y-%m-%d %H:%M}–"
                   f"{end:%Y-%m-%d %H:%M} UTC" + (f"; highest peak {top.peak_score:.2f} on {top.asset}" if top else "")
                   + f" (as of {now:%H:%M:%S} UTC).")  # fmt: skip
        return result(doc, summary)

    @server.tool(annotations=READ)
    @guarded
    async def maintenance(
        asset: Name | None = None,
        trend_days: Annotated[float, Field(gt=0, le=deps.config.limits.max_range_days)] = 7.0,
        limit: Annotated[int, deps.rows] = 50,
    ) -> Annotated[CallToolResult, MaintenanceReport]:
        """Remaining useful life and failure probability per asset (newest score, model version, trend
        over ``trend_days``) and the open maintenance work orders with their spare parts."""
        async with deps.database.read() as conn:
            now = await plant.now(conn)
            await known_asset(conn, asset)
            health = await plant.asset_health(conn, asset, now - timedelta(days=trend_days))
            doc = MaintenanceReport(as_of=now, assets=health[:limit],
                                    open_work_orders=await plant.maintenance_orders(conn, asset, limit))  # fmt: skip
        worst = max(doc.assets, key=lambda a: a.failure_prob, default=None)
        summary = (f"{len(doc.assets)} asset(s) scored, {len(doc.open_work_orders)} open maintenance order(s)"
                   + (f"; highest failure probability {worst.failure_prob:.2f} on {worst.asset} (RUL {worst.rul:.1f},"
                      f" model v{worst.model_version}, scored {worst.scored_at:%Y-%m-%d %H:%M} UTC)" if worst else "")
                   + f". As of {now:%Y-%m-%d %H:%M:%S} UTC.")  # fmt: skip
        return result(doc, summary)

    @server.tool(annotations=READ)
    @guarded
    async def production(
        site: Site | None = None, line: Name | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: Annotated[int, deps.rows] = 50,
    ) -> Annotated[CallToolResult, ProductionReport]:  # fmt: skip
        """OEE (availability, performance, quality) per line and shift (default: shifts started in the
        last 24 h), and the open production orders with their progress."""
        async with deps.database.read() as conn:
            now = await plant.now(conn)
            start, end = time_range(now, since, until, timedelta(hours=24), deps.config.limits.max_range_days)
            if line is not None and not await plant.known_line(conn, line):
                raise RequestError(f"unknown line {line!r}: no OEE has been computed for it")
            doc = ProductionReport(as_of=now, since=start, until=end,
                                   shifts=await plant.oee_shifts(conn, site=site, line=line, since=start, until=end,
                                                                 limit=limit),
                                   orders=await plant.production_orders(conn, line, limit))  # fmt: skip
        parts = [f"{r.line} {r.shift} {r.start:%m-%d %H:%M}: OEE {r.oee:.0%}" for r in doc.shifts[:6]]
        summary = (f"{len(doc.shifts)} line-shift(s), {len(doc.orders)} open production order(s). "
                   + "; ".join(parts) + f" (as of {now:%Y-%m-%d %H:%M:%S} UTC).")  # fmt: skip
        return result(doc, summary)
