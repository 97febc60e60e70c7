"""What ``factory demo`` needs to show faults, OEE and wear within minutes, not hours.

In a plant the anomaly detection learns each asset on half an hour of healthy running, OEE
runs every minute and the maintenance model thinks in hours. The demo keeps the same code
and changes only the time scale: the detection learns on the first ``healthy_s`` seconds
(long enough for a centrifugal's batch cycle, judged in its spin phase), the simulator's
faults start right after, OEE and maintenance scoring run every few seconds, and the
maintenance model is trained on bearing histories of the ``demo`` wear profile (5 s cycles),
on whose time scale the simulated bearing wears out in minutes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from pydantic import SecretStr

from analytics.checks import CheckConfig
from analytics.jobs import JOBS, Services
from analytics.live import LiveConfig
from analytics.oee import CountsConfig, OeeConfig
from analytics.scheduler import JobSpec
from factory.db import connect
from factory_demo.seed import PlantSeed
from maintenance_models.evaluate import evaluate
from maintenance_models.jobs import MaintenanceJobConfig
from maintenance_models.model import RulModel
from maintenance_models.registry import live_version, promote, register
from maintenance_models.simulated import bearing_subset, describe_simulated, plant_config, scoring_config
from maintenance_models.work_orders import SparePart
from simulator.faults import FaultSchedule, default_schedule
from simulator.histories import PROFILES

__all__ = [
    "DEMO_KIND",
    "DemoTiming",
    "FaultReport",
    "demo_jobs",
    "fault_report",
    "live_config",
    "maintenance_config",
    "oee_config",
    "outcomes",
    "prepare_model",
]  # fmt: skip

log = logging.getLogger(__name__)

DEMO_KIND: Final = "centrifugal-bearing-demo"
_QUICK: Final = {"ensemble": 1, "max_iter": 100, "classifier_max_iter": 50, "learning_rate": 0.1}


@dataclass(frozen=True)
class DemoTiming:
    """The demo's clock: when detection has learned, which faults follow, how often jobs run."""

    healthy_s: float = 120.0  # the first healthy stretch the detector learns on
    faults: FaultSchedule = field(default_factory=default_schedule)
    anomaly_every_s: float = 5.0
    oee_every_s: float = 15.0
    counts_every_s: float = 5.0
    counts_interval_s: int = 10  # production counts: 10 s intervals, posted once 5 s old
    counts_settle_s: float = 5.0
    maintenance_every_s: float = 10.0
    model_units: int = 60  # simulated bearings the demo's maintenance model learns from


def live_config(site: str, timing: DemoTiming) -> LiveConfig:
    """Learn on the first healthy stretch; centrifugals are judged while spinning; stuck after 20 s."""
    return LiveConfig(
        site=site, healthy_window_s=timing.healthy_s, mode_tag=["{asset}.state", "{asset}.spinning"],
        checks=CheckConfig(stuck_after_s=20.0),
    )  # fmt: skip


def demo_jobs(timing: DemoTiming) -> tuple[JobSpec[Services], ...]:
    every = {"anomaly": timing.anomaly_every_s, "oee": timing.oee_every_s,
             "production-counts": timing.counts_every_s, "maintenance-scoring": timing.maintenance_every_s}  # fmt: skip
    return tuple(dataclasses.replace(job, every_s=every.get(job.name, job.every_s)) for job in JOBS)


def oee_config(seed: PlantSeed, timing: DemoTiming | None = None) -> OeeConfig:
    """Both mills, measured against the ideal rate of the ERP's cane-crushing product and orders;
    their cane counters counted into the running production order every few seconds."""
    timing = timing or DemoTiming()
    config = OeeConfig()
    counts = CountsConfig(interval_s=timing.counts_interval_s, settle_s=timing.counts_settle_s, lookback_s=60)
    return config.model_copy(update={"lines": [line.model_copy(update={"product": seed.line_product})
                                               for line in config.lines], "counts": counts})  # fmt: skip


def maintenance_config(seed: PlantSeed, erp_url: str) -> MaintenanceJobConfig:
    parts = {a: [SparePart(sku=sku, quantity=Decimal(n)) for sku, n in items] for a, items in seed.spare_parts.items()}
    return MaintenanceJobConfig(
        scoring=scoring_config(PROFILES["demo"], kind=DEMO_KIND), failure_prob=0.5, erp_url=erp_url,
        api_key=SecretStr(seed.service_key), warehouse=seed.warehouse, spare_parts=parts,
    )  # fmt: skip


async def prepare_model(database_url: str, units: int) -> int:
    """The live model of ``DEMO_KIND``: the one already promoted, or one trained now on simulated bearings."""
    async with await connect(database_url, autocommit=True) as conn:
        version = await live_version(conn, DEMO_KIND)
        if version is not None:
            return version
        model, metrics, description = await asyncio.to_thread(_train, units)
        version = await register(conn, model, kind=DEMO_KIND, training_data=description, metrics=metrics)
        await promote(conn, version)
    log.info("demo maintenance model: version %d, RMSE %s cycles on held-out bearings", version, metrics.get("rmse"))
    return version


def _train(units: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    profile = PROFILES["demo"]
    subset = bearing_subset(units, seed=0, profile=profile)
    model = RulModel(plant_config(profile, **_QUICK))
    report = evaluate(subset, model)
    return model, report.as_dict(), describe_simulated(subset, seed=0, profile=profile, units=units)


@dataclass(frozen=True)
class FaultReport:
    """One scheduled fault, and when the first anomaly of its asset was written after it began."""

    kind: str
    asset: str
    tag: str | None
    start: datetime
    end: datetime | None
    first_anomaly: datetime | None  # the first is_anomaly row of the asset from the fault's start on
    detector: str | None

    @property
    def delay_s(self) -> float | None:
        return None if self.first_anomaly is None else (self.first_anomaly - self.start).total_seconds()


_FIRST_ANOMALY: Final = """SELECT time, detector FROM analytics.anomaly
    WHERE site = %s AND asset = %s AND is_anomaly AND time >= %s AND (%s::timestamptz IS NULL OR time < %s)
    ORDER BY time LIMIT 1"""


async def fault_report(database_url: str, site: str, started_at: float, faults: FaultSchedule) -> list[FaultReport]:
    """Each fault of the schedule that began during the demo, with its detection time."""
    now = datetime.now(UTC)
    out = []
    async with await connect(database_url, autocommit=True) as conn:
        for w in faults.windows():
            start = datetime.fromtimestamp(started_at + w.start_s, UTC)
            if start > now:
                continue
            end = None if w.end_s is None else datetime.fromtimestamp(started_at + w.end_s, UTC)
            cur = await conn.execute(_FIRST_ANOMALY, (site, w.asset, start, end, end))
            row = await cur.fetchone()
            first: datetime | None = row[0] if row else None  # type: ignore[assignment]
            detector = str(row[1]) if row else None
            out.append(FaultReport(w.kind, w.asset, w.tag, start, end, first, detector))
    return out


_OUTCOMES: Final = {
    "oee_rows": """SELECT line, count(*) FROM analytics.oee WHERE site = %(site)s GROUP BY 1 ORDER BY 1""",
    "health": """SELECT asset, count(*), (array_agg(round(rul::numeric, 1) ORDER BY time DESC))[1],
                        (array_agg(round(failure_prob::numeric, 2) ORDER BY time DESC))[1]
                 FROM maintenance.asset_health WHERE model_version = %(version)s GROUP BY 1 ORDER BY 1""",
    "orders": """SELECT 'WO-' || lpad(id::text, 6, '0'), asset FROM erp.work_order
                 WHERE kind = 'maintenance' AND created_at >= %(since)s ORDER BY id""",
    "production": """SELECT 'WO-' || lpad(w.id::text, 6, '0'), w.asset, w.status, w.produced_quantity,
                            w.scrapped_quantity, w.planned_quantity,
                            (SELECT count(*) FROM analytics.production_count c
                              WHERE c.work_order_id = w.id AND c.outcome = 'posted')
                     FROM erp.work_order w
                     WHERE w.kind = 'production' AND w.created_at >= %(since)s ORDER BY w.id""",
}


async def outcomes(database_url: str, site: str, version: int | None, since: datetime) -> dict[str, Any]:
    """What the analytics made of the demo: OEE rows per line, asset health, maintenance orders
    opened, and the production orders with what the machines' counts made of them."""
    params = {"site": site, "version": version, "since": since}
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with await connect(database_url, autocommit=True) as conn:
        for name, query in _OUTCOMES.items():
            cur = await conn.execute(query, params)
            found[name] = await cur.fetchall()
    health = {str(a): {"rows": int(n), "rul": float(r), "failure_prob": float(p)} for a, n, r, p in found["health"]}
    return {
        "oee_rows": {str(line): int(n) for line, n in found["oee_rows"]},
        "asset_health": health,
        "maintenance_orders": [f"{number} {asset}" for number, asset in found["orders"]],
        "production_orders": {str(row[0]): _production(row) for row in found["production"]},
    }


def _production(row: tuple[Any, ...]) -> dict[str, Any]:
    _, asset, status, produced, scrapped, planned, posted = row
    return {"asset": str(asset), "status": str(status), "produced": str(produced), "scrapped": str(scrapped),
            "planned": str(planned), "posted_intervals": int(posted)}  # fmt: skip
