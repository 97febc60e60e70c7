"""The job registry of ``factory analytics run``: one line per job.

A job is ``async def f(conn) -> object`` (``takes="connection"``, the default) or
``async def f(ctx: JobContext) -> object`` (``takes="context"``); its result is shown
on ``/healthz``. To add a job, add a line to ``JOBS``, e.g.

    JobSpec("maintenance-scoring", 300.0, "maintenance_models.jobs:score", takes="context"),
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Final

from analytics.events import EventRelay
from analytics.live import AnomalyJob, LiveConfig
from analytics.scheduler import JobContext, JobSpec

__all__ = ["JOBS", "anomaly"]

JOBS: Final = (
    JobSpec("anomaly", 5.0, "analytics.jobs:anomaly", takes="context"),
    JobSpec("rollups", 30.0, "ingest.rollup:refresh_rollups", flavor="postgres"),
    JobSpec("oee", 60.0, "analytics.oee:job", takes="context"),
    JobSpec("maintenance-scoring", 300.0, "maintenance_models.jobs:score", takes="context"),
)


async def anomaly(ctx: JobContext) -> dict[str, Any]:
    """Score every asset's new telemetry, then relay the episode events to MQTT."""
    config: LiveConfig = ctx.services.get("live") or LiveConfig()
    summary = asdict(await AnomalyJob(config).run(ctx.conn))
    relay: EventRelay | None = ctx.services.get("relay")
    if relay is not None:
        summary["published"] = await relay.relay(ctx.conn)
    return summary
