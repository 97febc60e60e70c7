"""Where to put a maintenance stop: the hours in which the line is expected to make least.

The seam: ``lowest_output_window`` takes any expected-output-per-hour series. Today the series
is ``recent_pattern`` (the line's mean output per hour of day in its recent hourly OEE rows);
the production forecast (analytics, branch ``forecast``) will hand its own series to the same
function, with ``basis`` naming it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from mcp_server.db import Conn
from mcp_server.errors import RequestError
from mcp_server.models import HourlyOutput, MaintenanceWindow

__all__ = [
    "PATTERN_BASIS",
    "chosen_window",
    "idempotency_key",
    "lowest_output_window",
    "recent_pattern",
    "window_reason",
]

PATTERN_BASIS = "mean output per hour of day over the line's last {days} days (analytics.oee, hourly rows)"


def lowest_output_window(expected: Sequence[HourlyOutput], hours: int, basis: str) -> MaintenanceWindow:
    """The ``hours`` consecutive hours of ``expected`` with the least output (the earliest of equals)."""
    if hours < 1 or hours > len(expected):
        raise RequestError(f"a window of {hours} h does not fit into {len(expected)} expected hours")
    best_start, best = 0, float("inf")
    for i in range(len(expected) - hours + 1):
        total = sum(h.expected for h in expected[i : i + hours])
        if total < best - 1e-9:
            best_start, best = i, total
    start = expected[best_start].start
    return MaintenanceWindow(start=start, end=start + timedelta(hours=hours), expected_output=best, basis=basis)


def chosen_window(expected: Sequence[HourlyOutput], start: datetime, hours: int, basis: str) -> MaintenanceWindow:
    """The window the caller chose (a proposal accepted): a whole hour inside ``expected``."""
    end = start + timedelta(hours=hours)
    if start.minute or start.second or start.microsecond or not expected or start < expected[0].start:
        raise RequestError(f"window_start must be a whole hour from {expected[0].start.isoformat()} on (UTC)")
    if end > expected[-1].start + timedelta(hours=1):
        raise RequestError("the chosen window ends after the horizon; raise horizon_hours")
    output = sum(h.expected for h in expected if start <= h.start < end)
    return MaintenanceWindow(start=start, end=end, expected_output=output, basis=basis)


async def recent_pattern(conn: Conn, line: str, start: datetime, hours: int, history_days: int) -> list[HourlyOutput]:
    """Expected output for each of ``hours`` hours from ``start``: the line's mean hourly count at
    that hour of day (UTC) over the ``history_days`` before ``start``."""
    cur = await conn.execute(
        """SELECT extract(hour FROM bucket AT TIME ZONE 'UTC')::int AS hour, avg(total_count) AS mean
             FROM analytics.oee
            WHERE period = 'hour' AND line = %s AND bucket >= %s - make_interval(days => %s) AND bucket < %s
            GROUP BY 1""",
        (line, start, history_days, start),
    )
    means = {int(r["hour"]): float(r["mean"]) for r in await cur.fetchall()}
    if not means:
        raise RequestError(f"line {line!r} has no hourly output in the last {history_days} days to plan by")
    slots = [start + timedelta(hours=i) for i in range(hours)]
    # An hour of day without history is planned as if the line made its best hour then (never a free slot).
    fallback = max(means.values())
    return [HourlyOutput(start=s, expected=means.get(s.hour, fallback)) for s in slots]


def window_reason(asset: str, window: MaintenanceWindow) -> str:
    """The work order's reason: built from the asset and window only, so a retried call sends the same body."""
    return (f"planned-maintenance: {asset} in the window {window.start:%Y-%m-%d %H:%M}–{window.end:%H:%M} UTC"
            f" (lowest expected output)")  # fmt: skip


def idempotency_key(asset: str, window: MaintenanceWindow, site: str | None = None) -> str:
    """The same key for every call about this asset (at this site) and window: the ERP opens the order once."""
    span = f"{site or ''}/{window.start.isoformat()}/{window.end.isoformat()}"
    return f"mcp-maintenance:{asset}:{hashlib.sha256(span.encode()).hexdigest()[:20]}"
