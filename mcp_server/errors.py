"""The MCP server's exceptions. A tool turns a ``RequestError`` into a tool error with its
message (the caller's mistake or a refusal), never into a traceback."""

from __future__ import annotations

__all__ = ["ErpCallError", "McpServerError", "RefusedError", "RequestError"]


class McpServerError(Exception):
    """Base of the MCP server's errors."""


class RequestError(McpServerError):
    """A tool call the server will not answer as asked: unknown asset, range too long, ..."""


class RefusedError(RequestError):
    """The caller's ERP role does not allow this."""


class ErpCallError(RequestError):
    """The ERP could not be reached or refused the change; the message says what it answered."""
