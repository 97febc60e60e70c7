"""The simulated sugar mill as a gate in the detector's validation.

One configuration serves SKAB's files and the live plant, so a setting SKAB favours must
not cost the plant: the plant model is stepped offline (1 s steps, seed 1), each asset's
tags are chosen as the live job chooses them, the detector trains on the first healthy
window and scores what follows. A candidate passes when the healthy hours of the assets
that do not wear raise no alarm, each fault held while running is flagged within a
minute, and centrifugal 1's wearing bearing, quiet in the first hour, is flagged on at
least 30 % of the third hour's last half (judged on runs of 3 hours or more; the wear
shows in the third). ``tests/analytics/test_analytics_simulated.py`` holds the defaults
to the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from analytics.detector import Detector, DetectorConfig, Scores
from analytics.grid import model_tags, modelable, out_of_mode
from analytics.live import LiveConfig
from simulator import Kind, PlantModel

__all__ = ["FAULTS", "HEALTHY_ASSETS", "WEAR", "PlantCheck", "PlantRuns", "check", "run_plant", "simulate"]

Array = npt.NDArray[np.float64]
HEALTHY_ASSETS: Final = ("boiler1", "mill1", "mill2", "centrifugal2", "turbine1")
# (asset, signal held, value): a choked mill feed, a leaking steam valve
FAULTS: Final = (("mill1", "mill1.motor_current", 120.0), ("boiler1", "boiler1.steam_flow", 30.0))
FAULT_AFTER_S: Final = 300  # after the healthy window
FAULT_WITHIN_S: Final = 60
WEAR: Final = "centrifugal1"  # its bearing wears by design
WEAR_QUIET_S: Final = 3600  # scored seconds in which the wear is within the spin cycle's swing
WEAR_SHOWN_S: Final = 3 * 3600  # scored seconds by which it must show: on the last half hour before ...
WEAR_FLAGGED: Final = 0.3  # ... at least this share flagged


def run_plant(seconds: int, hold_at: int | None = None, hold: tuple[str, float] | None = None) -> dict[str, Array]:
    """The simulated plant stepped offline at 1 s for ``seconds``; ``hold`` pins a tag to a value from ``hold_at``."""
    plant = PlantModel(seed=1)
    rows = []
    for t in range(seconds):
        if hold is not None and t == hold_at:
            plant.hold(*hold)
        plant.step(float(t))
        rows.append(plant.snapshot())
    return {name: np.array([float(r[name]) for r in rows]) for name in rows[0]}


@dataclass(frozen=True, slots=True)
class PlantRuns:
    healthy: Mapping[str, Array]
    faults: tuple[Mapping[str, Array], ...]


def simulate(hours: float = 3.0) -> PlantRuns:
    window = int(LiveConfig().healthy_window_s)
    start = window + FAULT_AFTER_S
    faults = tuple(run_plant(start + 2 * FAULT_WITHIN_S, start, (tag, value)) for _, tag, value in FAULTS)
    return PlantRuns(run_plant(window + int(hours * 3600)), faults)


def _scored(series: Mapping[str, Array], asset: str, config: DetectorConfig) -> Scores:
    live = LiveConfig()
    window = int(live.healthy_window_s)
    signals = PlantModel(seed=1).signals
    kinds = {s.name: "bool" if s.kind is Kind.FLAG else "number" for s in signals}
    names = {i: s.name for i, s in enumerate(signals) if s.name.startswith(f"{asset}.")}
    ids = model_tags(names, {i: kinds[n] for i, n in names.items()}, live.exclude)
    tags = [names[i] for i in ids if modelable(series[names[i]][:window])]
    data = np.column_stack([series[t] for t in tags])
    if f"{asset}.state" in series:  # stopped or faulted: neither learned from nor scored
        data[out_of_mode(series[f"{asset}.state"], live.running)] = np.nan
    detector = Detector(config, tags).fit(data[:window])
    return detector.stream().update(data[window:])


@dataclass(frozen=True, slots=True)
class PlantCheck:
    false_alarm_points: int  # flagged points in the healthy hours
    healthy_points: int
    fault_delays_s: tuple[int | None, ...]  # per fault: seconds from its start to the first opening (None: missed)
    wear_flagged: float | None = None  # share of the wear's last half hour flagged (None: run too short)
    wear_early: bool = False  # flagged in the first hour, when the wear is within the normal swing

    @property
    def passed(self) -> bool:
        quick = all(d is not None and 0 <= d <= FAULT_WITHIN_S for d in self.fault_delays_s)
        wear = self.wear_flagged is None or (self.wear_flagged >= WEAR_FLAGGED and not self.wear_early)
        return self.false_alarm_points == 0 and quick and wear


def check(runs: PlantRuns, config: DetectorConfig) -> PlantCheck:
    """The healthy hours' flagged points, and each fault's delay to the episode that opens on
    it (the alarm a person gets, not the rows a backdated episode takes in)."""
    flagged = [_scored(runs.healthy, asset, config).is_anomaly for asset in HEALTHY_ASSETS]
    delays: list[int | None] = []
    for (asset, _, _), series in zip(FAULTS, runs.faults, strict=True):
        opened = _scored(series, asset, config).opened
        delays.append(opened[0] - FAULT_AFTER_S if opened else None)
    wear_flagged, wear_early = None, False
    if len(next(iter(runs.healthy.values()))) >= int(LiveConfig().healthy_window_s) + WEAR_SHOWN_S:
        wear = _scored(runs.healthy, WEAR, config).is_anomaly
        wear_flagged = float(wear[WEAR_SHOWN_S - 1800 : WEAR_SHOWN_S].mean())
        wear_early = bool(wear[:WEAR_QUIET_S].any())
    return PlantCheck(sum(int(np.count_nonzero(f)) for f in flagged), sum(f.size for f in flagged), tuple(delays),
                      wear_flagged, wear_early)  # fmt: skip
