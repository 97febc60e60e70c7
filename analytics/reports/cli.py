"""``factory report shift|day --site S``: the plant manager's report as a PDF, or its figures as JSON."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import click
import psycopg

from analytics.oee import OeeConfig, load_oee_config
from analytics.reports.figures import Period, ReportData, collect, day_period, shift_period
from analytics.reports.figures_json import as_dict
from analytics.reports.pdf import write_pdf
from factory.configfile import ConfigError
from factory.db import connect, redact
from factory.runtime import fail
from factory.settings import current

__all__ = ["build_report", "default_name", "report"]


def _at(value: str | None, timezone: str) -> datetime:
    """``--at``: ISO 8601; without an offset it is a local time of the shift calendar."""
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint="--at") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(timezone))


def default_name(period: Period) -> str:
    return f"{period.kind}-report-{period.site}-{period.start:%Y%m%d-%H%M}.pdf"


async def build_report(
    database_url: str, kind: Literal["shift", "day"], site: str, at: datetime, config: OeeConfig,
    *, failure_prob: float = 0.5,
) -> ReportData:  # fmt: skip
    choose = shift_period if kind == "shift" else day_period
    period = choose(config.calendar, site, at)
    async with await connect(database_url, autocommit=True, application_name="factory-report") as conn:
        return await collect(conn, period, config, failure_prob=failure_prob)


@click.command()
@click.argument("kind", type=click.Choice(["shift", "day"]))
@click.option("--site", required=True, help="The site the report is about.")
@click.option("--at", "at", default=None, metavar="TIME",
              help="A time in the shift or day (ISO 8601; without an offset, the shift calendar's zone)"
                   " [default: now, the shift or day in progress].")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The PDF to write [default: KIND-report-SITE-START.pdf here; with --json none].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object on stdout.")
@click.option("--failure-prob", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Assets whose failure probability reached this are at risk.")  # fmt: skip
def report(*, kind: Literal["shift", "day"], site: str, at: str | None, out: Path | None, as_json: bool,
           failure_prob: float) -> None:  # fmt: skip
    """The plant manager's report of a shift or a day: a PDF (or its figures as JSON).

    The shift is one of the OEE shift calendar's (FACTORY_OEE_CONFIG), the day a calendar day in
    its time zone. The PDF has a one-page summary, output vs plan, OEE and its losses, anomaly episodes, assets at
    risk, maintenance orders, orders shipped and invoiced, and plots; see docs/reports.md.
    """
    settings = current()
    try:
        config = load_oee_config(settings.oee_config)
    except ConfigError as exc:
        fail(exc.report())
    moment = _at(at, config.calendar.timezone)
    try:
        data = asyncio.run(build_report(settings.database(), kind, site, moment, config, failure_prob=failure_prob))
    except psycopg.OperationalError as exc:
        fail(f"factory report: the database is not reachable ({redact(settings.database())}): {exc}")
    if out is None and not as_json:
        out = Path(default_name(data.period))
    if out is not None:
        write_pdf(data, out, config.calendar.timezone)
        click.echo(f"{kind} report for {site}, {data.period.label}: {out}", err=as_json)
    if as_json:
        click.echo(json.dumps(as_dict(data)))
