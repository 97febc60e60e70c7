"""The production forecast as the MCP server reads it (``analytics.forecast_db``): expected
output per hour with its 80 % interval, and whether each running production order finishes
on time. The forecast's queries read tuples; the server's connections hand out dicts, so the
row factory is switched for the call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from psycopg.rows import dict_row, tuple_row

from analytics.errors import TooLittleDataError
from analytics.forecast import HOUR, Forecast
from analytics.forecast_db import forecast_line, order_outlooks
from analytics.forecast_job import stored_forecast
from analytics.oee import LineConfig, OeeConfig
from mcp_server.db import Conn
from mcp_server.errors import RequestError
from mcp_server.models import ForecastHour, HourlyOutput, OrderForecast

__all__ = ["FORECAST_BASIS", "expected_output", "line_forecast", "line_of", "order_forecasts"]

FORECAST_BASIS = "production forecast: seasonal profile with a learned correction (docs/analytics.md)"


def line_of(lines: OeeConfig, name: str) -> LineConfig:
    for line in lines.lines:
        if line.name == name:
            return line
    known = ", ".join(sorted(line.name for line in lines.lines)) or "none"
    raise RequestError(f"{name!r} is not a configured production line (lines: {known})")


@asynccontextmanager
async def _tuples(conn: Conn) -> AsyncIterator[Conn]:
    conn.row_factory = tuple_row  # type: ignore[assignment]
    try:
        yield conn
    finally:
        conn.row_factory = dict_row


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def line_forecast(conn: Conn, site: str, line: LineConfig, hours: int, now: datetime) -> Forecast:
    """The line's forecast from the start of the current hour; RequestError when its history is too short.

    The one the production-forecast job stored this hour for as many hours (the same forecast:
    same history, same model; the horizon is part of the fit), else made here from the history."""
    hour = now.timestamp() // HOUR * HOUR
    try:
        async with _tuples(conn):
            stored = await stored_forecast(conn, site, line.name, made_after=hour)
            if stored is not None and stored.times[0] == hour and len(stored.times) == hours:
                return stored
            return await forecast_line(conn, site, line, hours, now=now.timestamp())
    except TooLittleDataError as exc:
        raise RequestError(f"no forecast for {line.name} at {site}: {exc}") from exc


def expected_output(forecast: Forecast, first: datetime) -> list[HourlyOutput]:
    """The forecast's expected output per hour from ``first`` on (the scheduler's series)."""
    return [HourlyOutput(start=_at(t), expected=e) for t, e in zip(forecast.times, forecast.expected, strict=True)
            if t >= first.timestamp()]  # fmt: skip


def hours_of(forecast: Forecast) -> list[ForecastHour]:
    columns = zip(forecast.times, forecast.expected, forecast.lower, forecast.upper, strict=True)
    return [ForecastHour(start=_at(t), expected=e, lower=lo, upper=up) for t, e, lo, up in columns]


async def order_forecasts(conn: Conn, site: str, line: LineConfig, now: datetime) -> list[OrderForecast]:
    """The line's production orders in progress, each judged against the forecast."""
    try:
        async with _tuples(conn):
            outlooks = await order_outlooks(conn, site, line, now=now.timestamp())
    except TooLittleDataError as exc:
        raise RequestError(f"no forecast for {line.name} at {site}: {exc}") from exc
    return [
        OrderForecast(
            work_order=f"WO-{order_id:06d}", remaining=o.remaining, due=_at(o.due),
            expected_finish=None if o.expected_finish is None else _at(o.expected_finish),
            earliest_finish=None if o.earliest_finish is None else _at(o.earliest_finish),
            latest_finish=None if o.latest_finish is None else _at(o.latest_finish),
            on_time_probability=o.on_time_probability, verdict=o.verdict,
        )
        for order_id, o in outlooks
    ]  # fmt: skip
