"""What every source reports: its counters (read by /metrics) and a probe's result (``factory edge check``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from factory.wire import Quality

__all__ = ["Probe", "SourceStats"]


@dataclass(slots=True)
class SourceStats:
    polls: int = 0
    errors: int = 0
    reconnects: int = 0
    last_poll_s: float = 0.0
    last_error: str = ""  # why the source last failed, in words; empty while it works
    dropped: int = 0  # points a source that cannot pause its device dropped while the agent was behind


@dataclass(slots=True)
class Probe:
    """One read of every tag: (name, value, quality) each, with a note for those read bad;
    ``failed`` says why when the source could not be reached at all."""

    rows: list[tuple[str, object, Quality]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    failed: str | None = None
