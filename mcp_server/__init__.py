"""``factory mcp serve``: the MCP server through which assistants read the plant and the ERP
(read-only database access) and open maintenance work orders (through the ERP's HTTP API)."""

from mcp_server.config import Limits, McpConfig
from mcp_server.server import build_server

__all__ = ["Limits", "McpConfig", "build_server"]
