"""Scoring plant assets from real telemetry rows into maintenance.asset_health, with a plant
model trained on synthetic run-to-failure histories of a bearing and served from the registry."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from ingest.store import Samples, TelemetryStore
from maintenance_models.cli import maintenance
from maintenance_models.errors import MaintenanceError
from maintenance_models.registry import load_model, promote, register
from maintenance_models.scoring import PLANT_CONFIG, ScoringConfig, at_risk, score_assets, train_plant_model

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[Any]
SENSORS = ("vibration_rms", "bearing_temp")
NOW = datetime(2026, 1, 10, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _bearing(life: int, hours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vibration and temperature of a bearing ``hours`` into a life of ``life`` hours."""
    wear = (hours / life) ** 3
    vibration = 1.4 + 4.0 * wear + rng.normal(0, 0.05, len(hours))
    temperature = 52.0 + 25.0 * wear + rng.normal(0, 0.3, len(hours))
    return np.column_stack([vibration, temperature])


QUICK = PLANT_CONFIG.model_copy(update={"ensemble": 1, "max_iter": 60, "classifier_max_iter": 40, "learning_rate": 0.1})


@pytest.fixture(scope="module")
def histories() -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [_bearing(life, np.arange(1, life + 1), rng) for life in rng.integers(150, 400, size=24)]


@pytest.fixture(scope="module")
def plant_model(histories: list[np.ndarray]) -> Any:
    return train_plant_model(histories, SENSORS, QUICK)


async def _telemetry(
    db: Conn, site: str, asset: str, values: np.ndarray, *, quality: int = 0, now: datetime = NOW
) -> None:
    """One sample per tag every 15 minutes; the last row of ``values`` is the last complete hour before ``now``."""
    store = TelemetryStore(db)
    samples = Samples()
    end = now.replace(minute=0, second=0, microsecond=0)
    async with db.transaction():
        device = await store.device_id(site, "pi")
        ids = await store.tag_ids(device, [f"{asset}.{s}" for s in SENSORS])
        for back, row in enumerate(values[::-1]):
            hour_start = end - (back + 1) * HOUR
            for quarter in range(4):
                ms = int((hour_start + quarter * timedelta(minutes=15)).timestamp() * 1000)
                for column, sensor in enumerate(SENSORS):
                    samples.extend([ids[f"{asset}.{sensor}"]], [ms], [float(row[column])], [quality])
        await store.write_samples(samples)


async def test_assets_are_scored_once_per_cycle_and_model(db: Conn, site: str, plant_model: Any) -> None:
    rng = np.random.default_rng(9)
    await _telemetry(db, site, f"{site}healthy", _bearing(300, np.arange(1, 41), rng))
    await _telemetry(db, site, f"{site}worn", _bearing(300, np.arange(261, 301), rng))
    await _telemetry(db, site, f"{site}new", _bearing(300, np.arange(1, 4), rng))  # 3 hours: too little
    await _telemetry(db, site, f"{site}bad", _bearing(300, np.arange(1, 41), rng), quality=2)
    version = await register(db, plant_model, kind=f"bearing-{site}", training_data={"source": "test"}, metrics={})
    await promote(db, version)
    registered = await load_model(db, kind=f"bearing-{site}")
    config = ScoringConfig(kind=f"bearing-{site}", assets=f"{site}%", lookback_cycles=24, min_cycles=6)

    first = await score_assets(db, registered, config, now=NOW)
    again = await score_assets(db, registered, config, now=NOW)

    assert first == again
    by_asset = {h.asset: h for h in first}
    assert sorted(by_asset) == [f"{site}healthy", f"{site}worn"]
    healthy, worn = by_asset[f"{site}healthy"], by_asset[f"{site}worn"]
    assert healthy.time == worn.time == datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert healthy.cycles == worn.cycles == 24
    assert worn.rul < 72 < healthy.rul
    assert worn.failure_prob > 0.5 > healthy.failure_prob
    assert at_risk(first, failure_prob=0.5) == [worn]
    cur = await db.execute(
        """SELECT asset, model_version, rul, failure_prob FROM maintenance.asset_health
           WHERE asset LIKE %s ORDER BY asset""",
        (f"{site}%",),
    )
    rows = await cur.fetchall()
    assert rows == [(h.asset, version, h.rul, h.failure_prob) for h in (healthy, worn)]


async def test_the_same_asset_name_at_two_sites_is_two_assets(db: Conn, site: str, plant_model: Any) -> None:
    """Each site's telemetry is its own history and its own score, not one average of both."""
    rng = np.random.default_rng(11)
    other, asset = f"{site}b", f"{site}basket"
    await _telemetry(db, site, asset, _bearing(300, np.arange(1, 41), rng))
    await _telemetry(db, other, asset, _bearing(300, np.arange(261, 301), rng))
    kind = f"bearing-{site}"
    await promote(db, await register(db, plant_model, kind=kind, training_data={}, metrics={}))
    config = ScoringConfig(kind=kind, assets=asset, lookback_cycles=24, min_cycles=6)
    scored = await score_assets(db, await load_model(db, kind=kind), config, now=NOW)
    by_site = {h.site: h for h in scored}
    assert sorted(by_site) == [site, other]
    assert {h.asset for h in scored} == {asset}
    assert by_site[other].failure_prob > 0.5 > by_site[site].failure_prob
    assert at_risk(scored, failure_prob=0.5) == [by_site[other]]
    cur = await db.execute("SELECT site, failure_prob FROM maintenance.asset_health WHERE asset = %s ORDER BY 1",
                           (asset,))  # fmt: skip
    assert await cur.fetchall() == [(site, by_site[site].failure_prob), (other, by_site[other].failure_prob)]


async def test_nothing_to_score_and_models_that_need_a_start_of_life(
    db: Conn, site: str, plant_model: Any, histories: list[np.ndarray]
) -> None:
    version = await register(db, plant_model, kind=f"bearing-{site}", training_data={}, metrics={})
    registered = await load_model(db, version=version)
    assert await score_assets(db, registered, ScoringConfig(kind="x", assets=f"{site}%"), now=NOW) == []
    counting = train_plant_model(histories[:4], SENSORS, QUICK.model_copy(update={"use_cycle": True, "max_iter": 5}))
    version = await register(db, counting, kind=f"bearing-{site}", training_data={}, metrics={})
    with pytest.raises(MaintenanceError, match="telemetry has no start of life"):
        await score_assets(db, await load_model(db, version=version), ScoringConfig(kind="x"), now=NOW)


async def test_the_score_command_uses_the_live_model(
    db: Conn, site: str, plant_model: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    await _telemetry(db, site, f"{site}worn", _bearing(300, np.arange(261, 301), rng), now=datetime.now(UTC))
    kind = f"bearing-{site}"
    await promote(db, await register(db, plant_model, kind=kind, training_data={}, metrics={}))
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    args = ["score", "--kind", kind, "--assets", f"{site}%", "--lookback", "24", "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, maintenance, args)
    assert result.exit_code == 0, result.output
    (health,) = json.loads(result.stdout)["assets"]
    assert health["asset"] == f"{site}worn"
    assert health["cycles"] in {23, 24}  # 23 if the hour turned between writing and scoring
    assert health["failure_prob"] > 0.5
    missing = await asyncio.to_thread(CliRunner().invoke, maintenance, ["score", "--kind", f"none-{site}"])
    assert missing.exit_code == 1
    assert "no model has been promoted" in missing.output
