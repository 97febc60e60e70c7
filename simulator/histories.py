"""Run-to-failure histories of the mill's parts, from the simulator's own signal code.

A maintenance model for the plant needs bearings that ran until they failed; a real plant
has few. These histories come from the same signal functions the live simulator serves
(``simulator.plant``) and the same wear curve (``simulator.wear``): each unit is a
centrifugal whose bearing is new for a while, then wears along ``BEARING`` until it fails.
The centrifugal is stepped every ``step_s`` through its batch cycle and each model cycle
(``cycle_s`` of running) is the mean of every sensor over it, which is what the live
scoring job computes from telemetry (``maintenance_models.scoring``).

The form is C-MAPSS's: unit, cycle (1, 2, ...), operating settings (none here: the
centrifugal's batch cycle is the same in every run), sensors; the last cycle of a unit is
its failure. Pure Python and seeded: the same seed gives the same histories, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from simulator.plant import Signal, Tick, centrifugal_signals
from simulator.wear import BEARING, WearCurve

__all__ = ["BEARING_SENSORS", "PROFILES", "History", "WearProfile", "bearing_histories"]

BEARING_SENSORS: Final = ("vibration_rms", "bearing_temp")  # tag names without the asset prefix


@dataclass(frozen=True, slots=True)
class WearProfile:
    """The time scale of a fleet: how long a model cycle is, and how long parts live.

    ``plant``: cycles of an hour and bearings that wear out over one to three weeks after a
    few days to two months of healthy running. ``demo``: the same physics on the time scale
    of ``factory demo``, where a bearing wears out in minutes (cycles of 5 s).
    """

    name: str
    cycle_s: float
    life_cycles: tuple[int, int]  # from the start of wear to failure, drawn uniformly
    healthy_cycles: tuple[int, int]  # new-bearing running before wear starts
    step_s: float  # simulation step: resolves the 180 s batch cycle (charge 30 s, spin, plough 30 s)


PROFILES: Final = {
    "plant": WearProfile("plant", 3600.0, (150, 400), (24, 200), 10.0),
    "demo": WearProfile("demo", 5.0, (40, 100), (12, 48), 0.5),
}


@dataclass(frozen=True, slots=True)
class History:
    """One unit's run to failure: ``rows[c]`` is the sensors' means over cycle ``c + 1``."""

    unit: int
    healthy_cycles: int
    life_cycles: int
    rows: tuple[tuple[float, ...], ...]

    @property
    def cycles(self) -> int:
        return len(self.rows)


def _run_bearing(rng: random.Random, unit: int, profile: WearProfile, curve: WearCurve) -> History:
    healthy = rng.randint(*profile.healthy_cycles)
    life = rng.randint(*profile.life_cycles)
    signals: tuple[Signal, ...] = tuple(centrifugal_signals(1, rng, 180.0, wear_per_h=(0.0, 0.0)))
    values = {s.name: s.initial for s in signals}
    sensors = [f"centrifugal1.{name}" for name in BEARING_SENSORS]
    steps = round(profile.cycle_s / profile.step_s)
    onset = healthy * profile.cycle_s
    rows: list[tuple[float, ...]] = []
    elapsed = 0.0
    for _ in range(healthy + life):
        sums = [0.0] * len(sensors)
        for _ in range(steps):
            elapsed += profile.step_s
            wear = curve.wear((elapsed - onset) / (life * profile.cycle_s))
            tick = Tick(elapsed, profile.step_s, elapsed, rng, values, {"centrifugal1.wear": wear})
            for signal in signals:
                values[signal.name] = signal.update(tick)
            for i, name in enumerate(sensors):
                sums[i] += float(values[name])
        rows.append(tuple(total / steps for total in sums))
    return History(unit, healthy, life, tuple(rows))


def bearing_histories(units: int, *, seed: int = 0, profile: WearProfile = PROFILES["plant"]) -> list[History]:
    """``units`` centrifugal bearings run to failure on ``profile``'s time scale (units 1..N)."""
    if units < 1:
        raise ValueError(f"units must be at least 1, got {units}")
    if profile.cycle_s < profile.step_s:
        raise ValueError(f"a cycle ({profile.cycle_s} s) must hold at least one step ({profile.step_s} s)")
    return [_run_bearing(random.Random(f"{seed}:{unit}"), unit, profile, BEARING) for unit in range(1, units + 1)]
