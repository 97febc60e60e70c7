"""Plant models trained on the simulator's run-to-failure histories, with the C-MAPSS code.

``simulator.histories`` runs centrifugal bearings to failure with the live simulator's own
signal functions and wear curve. Here they become a ``CmapssSubset``: the first units train
(``train`` from ``maintenance_models.evaluate``, exactly as on NASA's files), the rest are
held out, cut at a random cycle as C-MAPSS's test units are, and scored against their true
remaining life (``evaluate``). The configuration is ``PLANT_CONFIG`` with the cap, the
horizon and the windows set in cycles of the profile's time scale.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from maintenance_models.data import CmapssSubset, Runs
from maintenance_models.errors import DatasetError
from maintenance_models.model import RulConfig
from maintenance_models.scoring import PLANT_CONFIG, ScoringConfig
from maintenance_models.training import describe_runs
from simulator.histories import BEARING_SENSORS, PROFILES, History, WearProfile, bearing_histories

__all__ = ["BEARING_KIND", "MIN_TEST_CYCLES", "bearing_subset", "describe_simulated", "plant_config", "scoring_config"]

BEARING_KIND: Final = "centrifugal-bearing"
MIN_TEST_CYCLES: Final = 6  # a held-out unit is cut no earlier than this (the scoring job's minimum)

# Per profile: RUL cap and failure horizon in cycles. The plant's are PLANT_CONFIG's (three
# weeks, three days in hours); the demo's are about one bearing life and a fifth of one.
_TIME_SCALE: Final = {"plant": (504.0, 72.0), "demo": (60.0, 12.0)}


def plant_config(profile: WearProfile, **overrides: Any) -> RulConfig:
    """``PLANT_CONFIG`` on ``profile``'s time scale, with ``overrides`` (``--set``) applied."""
    cap, horizon = _TIME_SCALE.get(profile.name, (PLANT_CONFIG.cap, PLANT_CONFIG.horizon))
    return PLANT_CONFIG.model_copy(update={"cap": cap, "horizon": horizon, **overrides})


def scoring_config(profile: WearProfile, kind: str = BEARING_KIND, assets: str = "centrifugal%") -> ScoringConfig:
    """How the live job scores with a model trained on ``profile``: the same cycle length."""
    return ScoringConfig(kind=kind, assets=assets, cycle_seconds=round(profile.cycle_s))


def _runs(histories: list[History]) -> Runs:
    return Runs.from_histories([np.array(h.rows) for h in histories], BEARING_SENSORS)


def bearing_subset(
    units: int, *, seed: int = 0, profile: WearProfile = PROFILES["plant"], holdout: float = 0.2
) -> CmapssSubset:
    """``units`` simulated bearings: the first (1 - holdout) train, the rest are cut at random and tested."""
    tested = round(units * holdout)
    if units - tested < 2:
        raise DatasetError(f"{units} units with holdout {holdout}: at least two units must be left to train on")
    histories = bearing_histories(units, seed=seed, profile=profile)
    train, test = histories[: units - tested], histories[units - tested :]
    if not test:
        return CmapssSubset(f"simulated-{profile.name}", _runs(train), None, None)
    rng = np.random.default_rng(seed)
    cuts = [int(rng.integers(min(MIN_TEST_CYCLES, h.cycles), h.cycles + 1)) for h in test]
    truncated = [
        History(h.unit, h.healthy_cycles, h.life_cycles, h.rows[:cut]) for h, cut in zip(test, cuts, strict=True)
    ]
    rul = np.array([h.cycles - cut for h, cut in zip(test, cuts, strict=True)], dtype=np.float64)
    return CmapssSubset(f"simulated-{profile.name}", _runs(train), _runs(truncated), rul)


def describe_simulated(subset: CmapssSubset, *, seed: int, profile: WearProfile, units: int) -> dict[str, Any]:
    """The registry's ``training_data``: enough to generate the same histories again."""
    return describe_runs(
        subset.train, source="simulator", failure_mode="bearing", profile=profile.name,
        cycle_seconds=profile.cycle_s, seed=seed, generated_units=units,
    )  # fmt: skip
