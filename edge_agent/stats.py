"""Counters every source keeps, read by /metrics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SourceStats"]


@dataclass(slots=True)
class SourceStats:
    polls: int = 0
    errors: int = 0
    reconnects: int = 0
    last_poll_s: float = 0.0
    last_error: str = ""  # why the source last failed, in words; empty while it works
