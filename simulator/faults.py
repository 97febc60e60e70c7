"""Faults injected into the simulated mill on a schedule: what the analytics should find.

Two families, because they act at different places:

- **process faults** change the physics, so every signal that depends on them moves:
  a leaking steam valve (``valve_leak``) takes steam from the boiler, so the drum pressure
  sags, less steam reaches the process and the turbine loses power; a wearing bearing
  (``bearing_wear``) raises a centrifugal's vibration and temperature along the wear curve
  of ``simulator.wear`` until it fails.
- **sensor faults** change only what a sensor reports, not the process behind it: a stuck
  sensor (``stuck``) repeats the value it had when it stuck; ``spikes`` add short
  deterministic pulses to a reading.

A schedule is a list of faults, each with ``start_s`` (seconds after the plant starts) and
an end, so a test knows when each one begins and can check how quickly it is detected.
Nothing here draws random numbers: a schedule changes only the signals it targets, and
the plant's random stream (hence every other signal) stays as it was without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.configfile import load_yaml_model
from simulator.wear import BEARING

__all__ = [
    "BearingWear",
    "Fault",
    "FaultSchedule",
    "FaultWindow",
    "Spikes",
    "StuckSensor",
    "ValveLeak",
    "default_schedule",
    "load_schedule",
]

# How a leak of 1 t/h shows in the boiler's signals (see docs/simulator.md).
LEAK_PRESSURE_BAR_PER_T_H = 0.06
LEAK_FLOW_SHARE = 0.8  # of the leaked steam that the process no longer gets


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_s: float = Field(ge=0, description="seconds after the plant starts")


class ValveLeak(_Fault):
    """A steam valve on a boiler starts passing: ``leak_t_h`` lost, reached over ``ramp_s``."""

    kind: Literal["valve_leak"] = "valve_leak"
    asset: str = Field("boiler1", pattern=r"^boiler\d+$")
    leak_t_h: float = Field(20.0, gt=0)
    ramp_s: float = Field(10.0, ge=0)
    duration_s: float | None = Field(None, gt=0, description="until repaired; none: to the end")

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.start_s + self.duration_s

    def level(self, elapsed: float) -> float:
        """Steam lost at ``elapsed``, t/h."""
        end = self.end_s
        if elapsed < self.start_s or (end is not None and elapsed >= end):
            return 0.0
        ramp = 1.0 if self.ramp_s == 0 else min((elapsed - self.start_s) / self.ramp_s, 1.0)
        return self.leak_t_h * ramp


class BearingWear(_Fault):
    """A centrifugal's basket bearing wears from ``start_s`` and fails ``life_s`` later."""

    kind: Literal["bearing_wear"] = "bearing_wear"
    asset: str = Field("centrifugal1", pattern=r"^centrifugal\d+$")
    life_s: float = Field(gt=0)

    @property
    def end_s(self) -> float:
        return self.start_s + self.life_s  # the bearing has failed

    def level(self, elapsed: float) -> float:
        """Wear at ``elapsed``: 0 new, 1 failed (``simulator.wear.BEARING``'s curve)."""
        return BEARING.wear((elapsed - self.start_s) / self.life_s) if elapsed >= self.start_s else 0.0


class StuckSensor(_Fault):
    """A sensor repeats the reading it had at ``start_s`` for ``duration_s``."""

    kind: Literal["stuck"] = "stuck"
    tag: str
    duration_s: float = Field(gt=0)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, elapsed: float) -> bool:
        return self.start_s <= elapsed < self.end_s


class Spikes(_Fault):
    """Pulses of ``size`` (the tag's unit) lasting ``width_s``, every ``every_s``, for ``duration_s``."""

    kind: Literal["spikes"] = "spikes"
    tag: str
    duration_s: float = Field(gt=0)
    every_s: float = Field(10.0, gt=0)
    width_s: float = Field(1.0, gt=0, description="long enough for a poll to see it")
    size: float

    @model_validator(mode="after")
    def _pulses_fit(self) -> Spikes:
        if self.width_s >= self.every_s:
            raise ValueError("width_s must be shorter than every_s")
        return self

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def offset(self, elapsed: float) -> float:
        if not self.start_s <= elapsed < self.end_s:
            return 0.0
        return self.size if math.fmod(elapsed - self.start_s, self.every_s) < self.width_s else 0.0


Fault = Annotated[ValveLeak | BearingWear | StuckSensor | Spikes, Field(discriminator="kind")]
SensorFault = StuckSensor | Spikes


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """When a fault is on, in seconds after the plant starts (``end_s`` None: to the end)."""

    kind: str
    asset: str
    tag: str | None  # the sensor, for sensor faults
    start_s: float
    end_s: float | None


class FaultSchedule(BaseModel):
    """The faults of one run, in any order; process and sensor faults may overlap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: list[Fault] = Field(default_factory=list)

    def windows(self) -> list[FaultWindow]:
        out = []
        for fault in self.faults:
            if isinstance(fault, ValveLeak | BearingWear):
                out.append(FaultWindow(fault.kind, fault.asset, None, fault.start_s, fault.end_s))
            else:
                asset = fault.tag.partition(".")[0]
                out.append(FaultWindow(fault.kind, asset, fault.tag, fault.start_s, fault.end_s))
        return sorted(out, key=lambda w: w.start_s)

    def targets(self) -> set[str]:
        """Signal names the schedule touches (checked against the plant's signals)."""
        names: set[str] = set()
        for fault in self.faults:
            if isinstance(fault, ValveLeak):
                names |= {f"{fault.asset}.drum_pressure", f"{fault.asset}.steam_flow"}
            elif isinstance(fault, BearingWear):
                names |= {f"{fault.asset}.vibration_rms", f"{fault.asset}.bearing_temp"}
            else:
                names.add(fault.tag)
        return names

    def effects(self, elapsed: float) -> Mapping[str, float]:
        """Process-fault levels at ``elapsed``: ``{asset}.leak`` in t/h, ``{asset}.wear`` in 0..1."""
        levels: dict[str, float] = {}
        for fault in self.faults:
            if isinstance(fault, ValveLeak):
                key = f"{fault.asset}.leak"
                levels[key] = levels.get(key, 0.0) + fault.level(elapsed)
            elif isinstance(fault, BearingWear):
                key = f"{fault.asset}.wear"
                levels[key] = max(levels.get(key, 0.0), fault.level(elapsed))
        return levels

    def sensor_faults(self) -> list[SensorFault]:
        return [f for f in self.faults if isinstance(f, StuckSensor | Spikes)]


def default_schedule() -> FaultSchedule:
    """What ``factory sim`` and ``factory demo`` inject: the first fault two and a half minutes in.

    The demo's anomaly detection learns each asset on its first ``DEMO_HEALTHY_S`` seconds
    (``factory_demo.demo``), so every fault starts after that and the faults follow each other
    on different assets, each long enough to be seen.
    """
    return FaultSchedule(
        faults=[
            ValveLeak(start_s=150.0, leak_t_h=20.0, ramp_s=10.0, duration_s=120.0),
            BearingWear(start_s=180.0, asset="centrifugal1", life_s=360.0),
            Spikes(start_s=300.0, tag="mill1.motor_current", duration_s=60.0, every_s=12.0, width_s=2.0, size=80.0),
            StuckSensor(start_s=390.0, tag="mill2.motor_current", duration_s=120.0),
        ]
    )


def load_schedule(path: Path) -> FaultSchedule:
    """A schedule from YAML (``faults: [{kind: valve_leak, start_s: 60}, ...]``); errors name file, line and key."""
    return load_yaml_model(path, FaultSchedule)
