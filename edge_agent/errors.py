"""The edge agent's exceptions. Library errors are translated into these at the adapters."""

from __future__ import annotations

from factory.commands import ErrorCode

__all__ = ["EdgeError", "SourceError", "UnitSilentError", "WriteRefusedError"]


class EdgeError(Exception):
    """Base of everything the edge agent raises on purpose."""


class SourceError(EdgeError):
    """A source (Modbus unit, OPC UA server) could not be read; the message says what and why."""


class UnitSilentError(SourceError):
    """A Modbus unit did not answer, or is resting after not answering (its link backs off)."""


class WriteRefusedError(EdgeError):
    """A write-back request that was not carried out; ``code`` goes into the reply."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code: ErrorCode = code
        self.reason = reason
