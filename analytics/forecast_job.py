"""The production-forecast job: each line's forecast, stored for Grafana and planners.

Per line of the OEE config (``OeeConfig.lines``) and site that has its counter, the job
forecasts the next ``horizon_h`` hours from the start of the current hour
(``analytics.forecast_db.recent_history`` then ``analytics.forecast.forecast``) and writes
them to ``analytics.production_forecast``, one row per forecast hour. A forecast is named
by its origin (``made_at``, the start of the hour), and a run replaces what an earlier run
in the same hour wrote, so re-running is idempotent. A line without enough history is
skipped with the reason. Forecasts made more than ``keep_days`` ago are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from analytics.errors import TooLittleDataError
from analytics.forecast import Forecast, forecast
from analytics.forecast_db import recent_history
from analytics.oee import Conn, ForecastJobConfig, LineConfig, OeeConfig, line_tags

__all__ = ["BASIS", "ForecastJob", "ForecastSummary", "stored_forecast"]

log = logging.getLogger(__name__)

BASIS: Final = "seasonal profile + LAD ridge correction; split-conformal interval, calibrated apart in a fault"

_CLEAR = "DELETE FROM analytics.production_forecast WHERE site = %s AND line = %s AND made_at = %s"
_INSERT = """INSERT INTO analytics.production_forecast (site, line, made_at, hour, hours_ahead, expected, lower,
                 upper, cum_expected, cum_lower, cum_upper, baseline, level, basis, history_hours)
             VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
_PURGE = "DELETE FROM analytics.production_forecast WHERE made_at < %s"
_LATEST = """SELECT extract(epoch FROM hour)::float8, expected, lower, upper, cum_expected, cum_lower, cum_upper,
                    baseline, level
               FROM analytics.production_forecast
              WHERE site = %(site)s AND line = %(line)s
                AND made_at = (SELECT max(made_at) FROM analytics.production_forecast
                                WHERE site = %(site)s AND line = %(line)s)
              ORDER BY hour"""


@dataclass(slots=True)
class ForecastSummary:
    forecasts: int = 0  # lines x sites forecast in this run
    rows: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # "site/line" (or the line alone) -> why
    deleted: int = 0  # forecasts past keep_days, rows

    def as_dict(self) -> dict[str, Any]:
        return {"forecasts": self.forecasts, "rows": self.rows, "skipped": dict(self.skipped), "deleted": self.deleted}


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class ForecastJob:
    """One pass per ``run``: every configured line at every site that has its counter."""

    def __init__(self, config: OeeConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config or OeeConfig()
        self.clock = clock

    @property
    def settings(self) -> ForecastJobConfig:
        return self.config.forecast

    async def run(self, conn: Conn) -> ForecastSummary:
        now, summary = self.clock(), ForecastSummary()
        for line in self.config.lines:
            sites = sorted((await line_tags(conn, line, [line.count_tag])).keys())
            if not sites:
                summary.skipped[line.name] = f"no site has its counter {line.count_tag}"
            for site in sites:
                try:
                    summary.rows += await self._line(conn, site, line, now)
                    summary.forecasts += 1
                except TooLittleDataError as exc:
                    summary.skipped[f"{site}/{line.name}"] = str(exc)
                    log.info("production forecast: %s/%s skipped: %s", site, line.name, exc)
        cur = await conn.execute(_PURGE, (_ts(now - self.settings.keep_days * 86400),))
        summary.deleted = cur.rowcount
        return summary

    async def _line(self, conn: Conn, site: str, line: LineConfig, now: float) -> int:
        history = await recent_history(conn, site, line, now=now, history_days=self.settings.history_days)
        # A few tens of milliseconds of numpy: off the event loop the other jobs share.
        fc = await asyncio.to_thread(forecast, history, self.settings.horizon_h)
        made_at = _ts(history.end)
        rows = [
            (site, line.name, made_at, _ts(t), k + 1, e, lo, up, ce, cl, cu, b, fc.level, BASIS, len(history.values))
            for k, (t, e, lo, up, ce, cl, cu, b) in enumerate(zip(fc.times, fc.expected, fc.lower, fc.upper,
                                                                  fc.cum_expected, fc.cum_lower, fc.cum_upper,
                                                                  fc.baseline, strict=True))
        ]  # fmt: skip
        async with conn.transaction():  # the run's forecast replaces the same hour's earlier one, whole
            await conn.execute(_CLEAR, (site, line.name, made_at))
            async with conn.cursor() as cur:
                await cur.executemany(_INSERT, rows)
        return len(rows)


async def stored_forecast(conn: Conn, site: str, line: str, *, made_after: float) -> Forecast | None:
    """The latest stored forecast of ``line`` at ``site`` if it was made at or after ``made_after``
    (epoch seconds; e.g. the start of the current hour), else None."""
    cur = await conn.execute(_LATEST, {"site": site, "line": line})
    rows = await cur.fetchall()
    if not rows or float(rows[0][0]) < made_after:
        return None
    columns = list(zip(*rows, strict=True))
    times, expected, lower, upper, cum_e, cum_l, cum_u, base = (tuple(float(v) for v in c) for c in columns[:8])
    return Forecast(times, expected, lower, upper, cum_e, cum_l, cum_u, base, float(rows[0][8]))
