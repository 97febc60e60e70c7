"""Run every panel, variable and annotation query against a real database.

Grafana cannot run here, so this is how dashboards are tested: expand the macros as
Grafana would, run the SQL through the same kind of read-only connection Grafana uses,
and compare the returned columns with the ones the panel declares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from dashboards.macros import MacroError, TimeRange, expand, interval_seconds
from dashboards.model import Dashboard, Panel

__all__ = ["DashboardCheckError", "QueryResult", "check_dashboards", "panel_range"]

log = logging.getLogger(__name__)


class DashboardCheckError(RuntimeError):
    """A dashboard query that cannot run at all (the message names the dashboard and query)."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    dashboard: str
    title: str
    rows: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


async def _run(conn: psycopg.AsyncConnection[Any], sql: str, columns: tuple[str, ...]) -> tuple[int, str | None]:
    """Rows returned and the error, if any; each query in its own read-only transaction."""
    try:
        async with conn.transaction(force_rollback=True):
            await conn.execute("SET TRANSACTION READ ONLY")
            cur = await conn.execute(sql.encode())
            got = tuple(d.name for d in cur.description or ())
            rows = len(await cur.fetchall())
    except psycopg.Error as exc:
        return 0, f"{type(exc).__name__}: {str(exc).strip()}"
    if got != columns:
        return rows, f"returned columns {list(got)}, expected {list(columns)}"
    return rows, None


async def _variables(conn: psycopg.AsyncConnection[Any], board: Dashboard, given: dict[str, str]) -> dict[str, str]:
    """Each variable's value: given on the command line, else the first its query returns."""
    values = dict(given)
    for var in board.variables:
        if var.name in values:
            continue
        cur = await conn.execute(var.sql.encode())
        row = await cur.fetchone()
        if row is None:
            raise DashboardCheckError(f"{board.title}: variable ${var.name} has no values (is there data?)")
        values[var.name] = str(row[0])
    return values


def panel_range(panel: Panel, rng: TimeRange) -> TimeRange:
    """The range Grafana gives a panel with a time override: ``time_from`` "6h" the 6 hours up to
    now, "+24h" the 24 after it; then ``time_shift`` moves the range back."""
    start, end = rng.start, rng.end
    if panel.time_from is not None:
        span = timedelta(seconds=interval_seconds(panel.time_from.lstrip("+")))
        start, end = (end, end + span) if panel.time_from.startswith("+") else (end - span, end)
    if panel.time_shift is not None:
        shift = timedelta(seconds=interval_seconds(panel.time_shift))
        start, end = start - shift, end - shift
    return replace(rng, start=start, end=end)


async def check_dashboards(
    conn: psycopg.AsyncConnection[Any],
    boards: tuple[Dashboard, ...],
    *,
    hours: float = 24.0,
    variables: dict[str, str] | None = None,
    now: datetime | None = None,
) -> list[QueryResult]:
    """One result per panel and annotation query over the last ``hours``."""
    end = now or datetime.now(UTC)
    results: list[QueryResult] = []
    for board in boards:
        values = await _variables(conn, board, variables or {})
        rng = TimeRange(end - timedelta(hours=hours), end, "1m", values)
        queries = [(p.title, p.sql, p.columns, panel_range(p, rng)) for p in board.panels]
        queries += [(f"annotation {a.name}", a.sql, a.columns, rng) for a in board.annotations]
        for title, sql, columns, query_range in queries:
            try:
                rows, error = await _run(conn, expand(sql, query_range), columns)
            except MacroError as exc:
                rows, error = 0, str(exc)
            results.append(QueryResult(board.title, title, rows, error))
            log.debug("%s / %s: %d rows %s", board.title, title, rows, error or "")
    return results
