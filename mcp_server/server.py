"""The MCP server: the plant's and the ERP's figures as tools, resources and a prompt.

Reads go through ``ReadOnlyDatabase``; the one write (a maintenance work order) goes to the
ERP's HTTP API with the caller's own credential. Every tool answers with a typed document
(``structured_content``, its schema the tool's output schema) and a short text summary; a
bad argument or a refusal is a tool error with a message, never a traceback."""

import json

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from dashboards.catalog import DASHBOARDS
from mcp_server import plant, tools_business, tools_forecast, tools_plant, tools_schedule
from mcp_server.auth import Caller, ErpTokenVerifier
from mcp_server.config import McpConfig
from mcp_server.db import ReadOnlyDatabase
from mcp_server.report import shift_report
from mcp_server.toolkit import Deps

__all__ = ["build_server"]


def build_server(config: McpConfig, database: ReadOnlyDatabase, *, stdio_caller: Caller | None = None,
                 verifier: ErpTokenVerifier | None = None, public_url: str | None = None) -> MCPServer:  # fmt: skip
    """The server over an opened ``database``. ``stdio_caller`` acts for a stdio session; with
    ``verifier`` (the HTTP transport) every request's bearer token is checked and acts instead."""
    auth = None
    if verifier is not None:
        auth = AuthSettings(issuer_url=config.erp_url, resource_server_url=public_url or "http://127.0.0.1/mcp",
                            validate_token_resource=False)  # fmt: skip
    server = MCPServer(
        "factory",
        instructions="The plant's telemetry, anomalies, asset health, OEE and the ERP's business figures, "
        "read-only; schedule_maintenance opens a maintenance work order through the ERP.",
        token_verifier=verifier,
        auth=auth,
    )
    deps = Deps(config, database, stdio_caller)
    tools_plant.register(server, deps)
    tools_business.register(server, deps)
    tools_schedule.register(server, deps)
    tools_forecast.register(server, deps)

    @server.resource("factory://assets", mime_type="application/json")
    async def assets() -> str:
        """Every asset with telemetry: its sites, devices and number of tags."""
        async with deps.database.read() as conn:
            cur = await conn.execute(
                """SELECT t.asset, array_agg(DISTINCT d.site) AS sites, array_agg(DISTINCT d.name) AS devices,
                          count(*) AS tags
                     FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
                    WHERE t.name NOT LIKE 'agent.%%' GROUP BY t.asset ORDER BY t.asset"""
            )
            rows = await cur.fetchall()
            as_of = await plant.now(conn)
        return json.dumps({"as_of": as_of.isoformat(), "assets": [{**r, "tags": int(r["tags"])} for r in rows]})

    @server.resource("factory://dashboards", mime_type="application/json")
    def dashboards() -> str:
        """The Grafana dashboards (dashboards/catalog.py) with their URLs."""
        base = config.grafana_url.rstrip("/")
        return json.dumps([{"uid": d.uid, "title": d.title, "folder": d.folder, "url": f"{base}/d/{d.uid}"}
                           for d in DASHBOARDS])  # fmt: skip

    @server.prompt()
    async def shift_handover(site: str) -> str:
        """A shift hand-over briefing for ``site``, from the newest shift's figures."""
        async with deps.database.read() as conn:
            report = await shift_report(conn, site, None)
        return ("Write a short shift hand-over briefing for the incoming shift lead. Start with safety-relevant "
                "open anomalies, then output and OEE per line against the previous shift, then open maintenance "
                "work; name assets and times (UTC). Use the tools plant_status, anomalies and maintenance for "
                "anything the figures below leave open.\n\n" + report.text)  # fmt: skip

    return server
