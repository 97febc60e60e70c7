"""The edge agent's exceptions. Library errors are translated into these at the adapters."""

from __future__ import annotations

__all__ = ["EdgeError", "SourceError"]


class EdgeError(Exception):
    """Base of everything the edge agent raises on purpose."""


class SourceError(EdgeError):
    """A source (Modbus unit, OPC UA server) could not be read; the message says what and why."""
