"""The edge agent's exceptions. Library errors are translated into these at the adapters."""

from __future__ import annotations

import asyncio

from factory.commands import ErrorCode

__all__ = ["EdgeError", "SourceError", "UnitSilentError", "WriteRefusedError", "stop_if_cancelled"]


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


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` in a task that was asked to stop but is still running.

    On Python 3.11 ``asyncio.wait_for`` (pymodbus and aiomqtt await every response with it)
    returns the result instead of raising when the cancellation arrives together with the
    response: the task goes on as if nothing happened, and a loop that waits for a writer
    that has stopped would never end. Loops call this once per turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
