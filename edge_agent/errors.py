"""The edge agent's exceptions. Library errors are translated into these at the adapters."""

from __future__ import annotations

import asyncio

__all__ = ["EdgeError", "SourceError", "stop_if_cancelled"]


class EdgeError(Exception):
    """Base of everything the edge agent raises on purpose."""


class SourceError(EdgeError):
    """A source (Modbus unit, OPC UA server) could not be read; the message says what and why."""


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
