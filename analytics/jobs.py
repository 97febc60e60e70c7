"""The jobs of ``factory analytics run``, and what they share.

A job is ``async def f(ctx: Context) -> object``; its result is shown on ``/healthz``. To
add one, write it here (calling its part's function with what it needs from ``ctx``) and
add a line to ``JOBS``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import psycopg

from analytics.counts import CountsJob
from analytics.erp import ErpAccess
from analytics.events import OUTBOX_DAYS, EventRelay, purge_published
from analytics.forecast_job import ForecastJob
from analytics.live import AnomalyJob, LiveConfig
from analytics.oee import OeeConfig, OeeJob, load_oee_config
from analytics.reports.mail import ReportMailConfig, load_report_config, mail_shift_reports
from analytics.scheduler import JobContext, JobSpec
from factory.events import OutboxLag, outbox_lag
from factory.settings import Settings
from ingest.rollup import refresh_rollups
from maintenance_models.jobs import MaintenanceJobConfig, load_config
from maintenance_models.jobs import run as run_maintenance

__all__ = ["JOBS", "Context", "Services"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    """What the jobs share: their configurations and the event relay. A supervisor may
    change one while the jobs run (the demo sets the plant's once its ERP is seeded)."""

    live: LiveConfig = field(default_factory=LiveConfig)
    oee: OeeConfig = field(default_factory=OeeConfig)
    maintenance: MaintenanceJobConfig | None = None  # none: the maintenance job does nothing
    erp: ErpAccess | None = None  # none: the production-counts job does nothing
    report: ReportMailConfig | None = None  # none: no shift report is mailed
    relay: EventRelay | None = None  # none: episode events stay in the outbox
    outbox_lag: OutboxLag | None = None  # as the last anomaly run left the outbox (None: not known)
    outbox_days: int = OUTBOX_DAYS  # published events older than this are deleted

    @classmethod
    def from_settings(cls, settings: Settings, live: LiveConfig) -> Services:
        """The files named by FACTORY_OEE_CONFIG and FACTORY_MAINTENANCE_CONFIG (a bad one raises ConfigError)."""
        maintenance = None
        if settings.maintenance_config is not None:
            maintenance = load_config(settings.maintenance_config, erp_url=settings.erp_url,
                                      api_key=settings.erp_api_key)  # fmt: skip
        erp = None
        if settings.erp_url and settings.erp_api_key is not None:
            erp = ErpAccess(settings.erp_url, settings.erp_api_key)
        report = load_report_config(settings.report_config) if settings.report_config is not None else None
        return cls(live=live, oee=load_oee_config(settings.oee_config), maintenance=maintenance, erp=erp, report=report)


Context = JobContext[Services]


async def anomaly(ctx: Context) -> dict[str, Any]:
    """Score every asset's new telemetry, then relay the episode events to MQTT."""
    summary = asdict(await AnomalyJob(ctx.services.live).run(ctx.conn))
    try:
        if ctx.services.relay is not None:
            summary["published"] = await ctx.services.relay.relay(ctx.conn)
    finally:  # a broker that is away shows on /metrics as a growing lag
        ctx.services.outbox_lag = await _lag(ctx.conn)
    return summary


async def _lag(conn: psycopg.AsyncConnection[Any]) -> OutboxLag | None:
    try:
        return await outbox_lag(conn, "analytics")
    except psycopg.Error as exc:  # the run's own error, if any, is the one to report
        log.debug("outbox lag unknown: %s", exc)
        return None


async def outbox_purge(ctx: Context) -> int:
    """Published events past ``outbox_days``: the outbox does not grow without bound."""
    return await purge_published(ctx.conn, ctx.services.outbox_days)


async def rollups(ctx: Context) -> int:
    """Plain PostgreSQL's minute and hour rollups (TimescaleDB keeps its own)."""
    return await refresh_rollups(ctx.conn)


async def oee(ctx: Context) -> dict[str, int]:
    """Availability, performance and quality per line, shift and bucket."""
    return asdict(await OeeJob(ctx.services.oee).run(ctx.conn))


async def production_counts(ctx: Context) -> dict[str, Any]:
    """The lines' counter increases, per finished interval, as production on their running work orders."""
    if ctx.services.erp is None:
        return {"skipped": "no ERP configured (set FACTORY_ERP_URL and FACTORY_ERP_API_KEY)"}
    summary = await CountsJob(ctx.services.oee, ctx.services.erp).run(ctx.conn)
    return summary.as_dict()


async def production_forecast(ctx: Context) -> dict[str, Any]:
    """Each line's forecast for the next hours, stored for the dashboards (too short a history: skipped)."""
    return (await ForecastJob(ctx.services.oee).run(ctx.conn)).as_dict()


async def maintenance(ctx: Context) -> dict[str, Any]:
    """Score the assets' remaining life; open work orders for those at risk."""
    if ctx.services.maintenance is None:
        return {"skipped": "not configured (set FACTORY_MAINTENANCE_CONFIG)"}
    return await run_maintenance(ctx.conn, ctx.services.maintenance)


async def shift_report(ctx: Context) -> dict[str, Any]:
    """Each site's last shift, once settled, as a PDF report mailed to its recipients (once)."""
    if ctx.services.report is None:
        return {"skipped": "not configured (set FACTORY_REPORT_CONFIG)"}
    return asdict(await mail_shift_reports(ctx.conn, ctx.services.report, ctx.services.oee))


JOBS: Final[tuple[JobSpec[Services], ...]] = (
    JobSpec("anomaly", 5.0, anomaly),
    JobSpec("rollups", 30.0, rollups, flavor="postgres"),
    JobSpec("oee", 60.0, oee),
    JobSpec("production-counts", 60.0, production_counts),
    JobSpec("production-forecast", 900.0, production_forecast),
    JobSpec("maintenance-scoring", 300.0, maintenance),
    JobSpec("outbox-purge", 3600.0, outbox_purge),
    JobSpec("shift-report", 60.0, shift_report),
)
