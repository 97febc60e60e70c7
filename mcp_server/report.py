"""The shift report: one shift's figures at a site, as a document and as text."""

from __future__ import annotations

from datetime import datetime

from mcp_server import plant
from mcp_server.db import Conn
from mcp_server.errors import RequestError
from mcp_server.models import ShiftReport

__all__ = ["shift_report"]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


async def shift_report(conn: Conn, site: str, at: datetime | None) -> ShiftReport:
    """The shift running at ``at`` (None: the newest shift with OEE) at ``site``."""
    cur = await conn.execute(
        """SELECT bucket, bucket_end, shift FROM analytics.oee
            WHERE period = 'shift' AND site = %s AND (%s::timestamptz IS NULL OR (bucket <= %s AND bucket_end > %s))
            ORDER BY bucket DESC LIMIT 1""",
        (site, at, at, at),
    )
    row = await cur.fetchone()
    if row is None:
        raise RequestError(f"no shift with OEE at site {site!r}" + (f" at {at.isoformat()}" if at else ""))
    start, end, shift = row["bucket"], row["bucket_end"], row["shift"]
    now = await plant.now(conn)
    lines = [r for r in await plant.oee_shifts(conn, site=site, line=None, since=start, until=end, limit=100)
             if r.start == start]  # fmt: skip
    episodes = [e for e in await plant.episodes(conn, asset=None, since=start, until=end, open_only=False, limit=100)
                if e.site == site]  # fmt: skip
    cur = await conn.execute(
        "SELECT count(*) AS n FROM erp.work_order WHERE kind = 'maintenance' AND created_at >= %s AND created_at < %s",
        (start, end),
    )
    opened = await cur.fetchone()
    assert opened is not None
    text = [f"Shift {shift} at {site}, {start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC (as of {now:%Y-%m-%d %H:%M} UTC)"]
    text += [f"- {r.line}: OEE {_pct(r.oee)} (availability {_pct(r.availability)}, performance {_pct(r.performance)},"
             f" quality {_pct(r.quality)}); {r.total_count:g} made, {r.good_count:g} good"
             for r in sorted(lines, key=lambda r: r.line)]  # fmt: skip
    if not lines:
        text.append("- no line OEE for this shift")
    text.append(f"- anomaly episodes: {len(episodes)}"
                + "".join(f"; {e.asset} {e.started_at:%H:%M} peak {e.peak_score:.1f}"
                          + ("" if e.ended_at else " (open)") for e in episodes[:5]))  # fmt: skip
    text.append(f"- maintenance work orders opened: {opened['n']}")
    return ShiftReport(as_of=now, site=site, shift=shift, start=start, end=end, lines=lines, episodes=episodes,
                       maintenance_orders_opened=opened["n"], text="\n".join(text))  # fmt: skip
