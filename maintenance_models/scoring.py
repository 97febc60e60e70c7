"""Scoring plant assets from recent telemetry into ``maintenance.asset_health``.

A plant model is a ``RulModel`` whose sensors are tag names without the asset prefix
(``vibration_rms`` for ``centrifugal1.vibration_rms``) and whose cycle is a fixed stretch of
time (an hour by default): the history of an asset is the mean of each tag per cycle, good
quality only, over the last ``lookback_cycles`` complete cycles. A telemetry window has no
"start of life", so plant models are trained without the cycle count and the drift from the
first cycles (``PLANT_CONFIG``); scoring refuses a model that needs them.

Writing is idempotent: a second run for the same cycle and model version replaces the row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psycopg
from pydantic import BaseModel, ConfigDict, Field

from maintenance_models.data import Runs
from maintenance_models.errors import MaintenanceError
from maintenance_models.model import Progress, RulConfig, RulModel
from maintenance_models.registry import RegisteredModel, load_model

__all__ = [
    "PLANT_CONFIG",
    "AssetHealth",
    "ScoringConfig",
    "at_risk",
    "score_assets",
    "score_live",
    "train_plant_model",
]

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

# Cycles are hours here: RUL capped at three weeks, failure probability over three days.
PLANT_CONFIG: Final = RulConfig(
    cap=504.0,
    horizon=72.0,
    windows=(3, 6, 12, 24),
    slope_windows=(6, 12, 24),
    baseline_cycles=0,
    use_cycle=False,
    history_mean=False,
    max_regimes=6,
    max_iter=300,  # the boosting the plant figures in docs/maintenance.md were measured with
    max_leaf_nodes=31,
)


class ScoringConfig(BaseModel):
    """Which assets a plant model scores, and what one cycle of telemetry is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="Registry kind whose live model scores these assets.")
    assets: str = Field("%", description="SQL LIKE pattern of asset names, e.g. 'centrifugal%'.")
    cycle_seconds: int = Field(3600, ge=1, description="One model cycle of telemetry.")
    lookback_cycles: int = Field(48, ge=2, description="Complete cycles of history read per asset.")
    min_cycles: int = Field(6, ge=1, description="Assets with fewer complete cycles are skipped.")


@dataclass(frozen=True)
class AssetHealth:
    time: datetime  # end of the last complete cycle the prediction used
    site: str
    asset: str
    model_version: int
    rul: float  # model cycles (hours for PLANT_CONFIG)
    failure_prob: float  # of failing within the model's horizon
    cycles: int  # complete cycles of history behind the prediction


def train_plant_model(
    histories: Sequence[npt.ArrayLike],
    sensors: Sequence[str],
    config: RulConfig = PLANT_CONFIG,
    progress: Progress | None = None,
) -> RulModel:
    """Fit a plant model on run-to-failure histories: one (cycles, sensors) array per run."""
    return RulModel(config).fit(Runs.from_histories(histories, sensors), progress)


def at_risk(health: Sequence[AssetHealth], *, failure_prob: float) -> list[AssetHealth]:
    """The assets whose failure probability reached the threshold, riskiest first."""
    return sorted((h for h in health if h.failure_prob >= failure_prob), key=lambda h: -h.failure_prob)


_TAGS: Final = """SELECT d.site, t.asset, s.sensor, t.id
    FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
    JOIN unnest(%s::text[]) AS s (sensor) ON t.name = t.asset || '.' || s.sensor
    WHERE t.asset LIKE %s"""
_CYCLE_MEANS: Final = """SELECT date_bin(%s, time, TIMESTAMPTZ 'epoch') AS bucket, tag_id, avg(value)
    FROM telemetry.sample
    WHERE tag_id = ANY(%s) AND time >= %s AND time < %s AND quality = 0 AND value IS NOT NULL
    GROUP BY 1, 2"""
_UPSERT: Final = """INSERT INTO maintenance.asset_health (time, site, asset, model_version, rul, failure_prob)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (site, asset, time, model_version) DO UPDATE
    SET rul = EXCLUDED.rul, failure_prob = EXCLUDED.failure_prob"""


def _cycle_end(now: datetime, cycle: timedelta) -> datetime:
    """The end of the last complete cycle at ``now`` (cycles are aligned to the epoch)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((now - epoch) // cycle) * cycle


Where = tuple[str, str]  # (site, asset): assets of the same name at two sites are two assets


async def _histories(
    conn: Conn, sensors: tuple[str, ...], config: ScoringConfig, end: datetime
) -> dict[Where, npt.NDArray[np.float64]]:
    """Per site and asset, the (cycles, sensors) matrix of complete cycles, oldest first."""
    cur = await conn.execute(_TAGS, (list(sensors), config.assets))
    owner: dict[int, tuple[Where, int]] = {}
    for site, asset, sensor, tag_id in await cur.fetchall():
        owner[int(tag_id)] = ((str(site), str(asset)), sensors.index(str(sensor)))
    if not owner:
        return {}
    cycle = timedelta(seconds=config.cycle_seconds)
    start = end - config.lookback_cycles * cycle
    cur = await conn.execute(_CYCLE_MEANS, (cycle, list(owner), start, end))
    sums: dict[Where, dict[datetime, npt.NDArray[np.float64]]] = {}
    counts: dict[Where, dict[datetime, npt.NDArray[np.float64]]] = {}
    for bucket, tag_id, mean in await cur.fetchall():
        asset, column = owner[int(tag_id)]
        row_sum = sums.setdefault(asset, {}).setdefault(bucket, np.zeros(len(sensors)))
        row_count = counts.setdefault(asset, {}).setdefault(bucket, np.zeros(len(sensors)))
        row_sum[column] += float(mean)  # the same tag name on several devices of a site: their mean
        row_count[column] += 1
    out: dict[Where, npt.NDArray[np.float64]] = {}
    for asset, by_bucket in sums.items():
        complete = [b for b in sorted(by_bucket) if np.all(counts[asset][b] > 0)]
        if len(complete) >= config.min_cycles:
            out[asset] = np.array([by_bucket[b] / counts[asset][b] for b in complete])
        else:
            log.info("%s/%s: %d complete cycles of %s, fewer than %d; not scored", *asset, len(complete),
                     ", ".join(sensors), config.min_cycles)  # fmt: skip
    return out


async def score_assets(
    conn: Conn, registered: RegisteredModel, config: ScoringConfig, *, now: datetime | None = None
) -> list[AssetHealth]:
    """Score every matching asset with enough recent telemetry; write and return the results."""
    model = registered.model
    if model.config.use_cycle or model.config.baseline_cycles > 0:
        raise MaintenanceError(
            f"model version {registered.version} uses the cycle count or the drift from a run's first cycles;"
            " telemetry has no start of life: train plant models with use_cycle=false and baseline_cycles=0"
        )
    end = _cycle_end(now or datetime.now(UTC), timedelta(seconds=config.cycle_seconds))
    histories = await _histories(conn, model.sensor_names, config, end)
    if not histories:
        return []
    assets = sorted(histories)
    prediction = model.predict(Runs.from_histories([histories[a] for a in assets], model.sensor_names))
    results = [
        AssetHealth(end, site, asset, registered.version, float(rul), float(prob), len(histories[(site, asset)]))
        for (site, asset), rul, prob in zip(assets, prediction.rul, prediction.failure_prob, strict=True)
    ]
    rows = [(h.time, h.site, h.asset, h.model_version, h.rul, h.failure_prob) for h in results]
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(_UPSERT, rows)
    log.info("scored %d asset(s) with %s version %d", len(results), registered.info.kind, registered.version)
    return results


async def score_live(conn: Conn, config: ScoringConfig, *, now: datetime | None = None) -> list[AssetHealth]:
    """``score_assets`` with the live model of ``config.kind``: what a scheduled job calls."""
    return await score_assets(conn, await load_model(conn, kind=config.kind), config, now=now)
