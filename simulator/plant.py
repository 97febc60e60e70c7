"""Signal model of a simulated sugar mill.

The model is pure Python with no I/O so that a test can step it at chosen times and get
the same numbers every run: all randomness comes from one ``random.Random(seed)``, drawn in
a fixed order. The servers in this package only copy its values onto the wire.

Signals live in one table (``Signal`` rows built per asset by ``_boiler``, ``_mill`` and so on),
computed in table order each step, so a later signal may read an earlier one (steam flow
reads drum pressure, the cane counter reads the mill state). A held value replaces the
computed one *before* later signals read it, which is what makes ``hold`` usable for fault
scenarios: holding ``mill1.state`` at 2 also drops the mill's current and power.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from functools import cache
from types import MappingProxyType
from typing import TypeAlias

from simulator.faults import LEAK_FLOW_SHARE, LEAK_PRESSURE_BAR_PER_T_H, FaultSchedule, Spikes, StuckSensor
from simulator.wear import BEARING

Value: TypeAlias = float | int | bool

_TAU = 2.0 * math.pi


class SimulatorError(Exception):
    """Base of the errors raised by the simulator package."""


class UnknownSignalError(SimulatorError, KeyError):
    """A signal name that the plant model does not have."""


class Kind(enum.Enum):
    """What a signal's value is, and therefore its Python type."""

    ANALOG = "analog"  # float
    COUNTER = "counter"  # int, never decreases on its own
    STATE = "state"  # small int enumeration
    FLAG = "flag"  # bool


@dataclass
class Tick:
    """What a signal's update function sees during one step."""

    now: float
    dt: float
    elapsed: float
    rng: random.Random
    values: dict[str, Value]
    effects: Mapping[str, float] = field(default_factory=dict)  # process faults: "boiler1.leak", ...

    def effect(self, key: str) -> float:
        """The level of a process fault (``simulator.faults.FaultSchedule.effects``), 0 without one."""
        return self.effects.get(key, 0.0)

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    def wave(self, period_s: float, phase: float) -> float:
        return math.sin(_TAU * self.elapsed / period_s + phase)

    def analog(self, name: str) -> float:
        return float(self.values[name])

    def flag(self, name: str) -> bool:
        return bool(self.values[name])

    def lag(self, name: str, target: float, tau_s: float) -> float:
        """First-order lag of ``name`` towards ``target``: temperatures do not jump."""
        previous = self.analog(name)
        return previous + (target - previous) * (1.0 - math.exp(-self.dt / tau_s))


Update: TypeAlias = Callable[[Tick], Value]


@dataclass(frozen=True)
class Signal:
    """One row of the signal table."""

    name: str
    kind: Kind
    unit: str
    update: Update
    description: str
    _: KW_ONLY
    initial: Value  # before the first step
    writable: bool = False  # a setpoint that clients may write


@dataclass
class _Totalizer:
    """Integrates a rate into a whole-number counter (tonnes of steam or cane)."""

    total: float

    def add(self, amount: float) -> int:
        self.total += max(amount, 0.0)
        return math.floor(self.total)


@dataclass
class _Stop:
    """When a mill's current stop ends, and whether it is a fault."""

    until: float = -math.inf
    fault: bool = False


MILL_MEAN_RUN_S = 25 * 60.0  # a short stop about every 25 minutes
MILL_FAULT_SHARE = 0.15
MILL_STOP_S = (20.0, 90.0)  # a short stop lasts this long, drawn uniformly
MILL_AMPS = {"mill1": 185.0, "mill2": 160.0}  # nominal drive currents
_KW_PER_A = math.sqrt(3.0) * 0.69 * 0.86  # 690 V drive, power factor 0.86
CANE_T_PER_AH = 240.0 / 185.0  # 240 t/h when mill 1 draws its nominal 185 A


def _keep(name: str) -> Update:
    """Update of a setpoint: it stays where it was written."""
    return lambda tk: tk.values[name]


def _boiler(rng: random.Random) -> list[Signal]:
    slow, fast, demand, swell = (rng.uniform(0.0, _TAU) for _ in range(4))
    steam = _Totalizer(rng.uniform(480_000.0, 490_000.0))
    sp, p = "boiler1.pressure_setpoint", "boiler1.drum_pressure"

    def pressure(tk: Tick) -> float:
        swing = 0.6 * tk.wave(900.0, slow) + 0.25 * tk.wave(137.0, fast)
        sag = LEAK_PRESSURE_BAR_PER_T_H * tk.effect("boiler1.leak")  # a passing valve bleeds the drum
        return tk.analog(sp) + swing - sag + tk.noise(0.02)

    def burner(tk: Tick) -> bool:  # on/off firing with hysteresis above the setpoint
        above = tk.analog(p) - tk.analog(sp)
        return above < 0.1 or (above <= 0.45 and tk.flag("boiler1.burner_on"))

    def flow(tk: Tick) -> float:  # demand pulls the pressure down
        draw = 2.0 * tk.wave(600.0, demand) - 4.0 * (tk.analog(p) - tk.analog(sp))
        lost = LEAK_FLOW_SHARE * tk.effect("boiler1.leak")  # leaked before the meter
        return max(42.0 + draw - lost + tk.noise(0.3), 0.0)

    def level(tk: Tick) -> float:
        return 12.0 * tk.wave(240.0, swell) + tk.noise(2.0)

    def total(tk: Tick) -> int:
        return steam.add(tk.analog("boiler1.steam_flow") * tk.dt / 3600.0)

    a, t0 = Kind.ANALOG, steam.add(0.0)
    return [
        Signal(sp, a, "bar", _keep(sp), "Drum pressure setpoint (writable)", initial=13.0, writable=True),
        Signal(p, a, "bar", pressure, "Steam drum pressure; slow swing around the setpoint", initial=13.0),
        Signal("boiler1.burner_on", Kind.FLAG, "", burner, "Burner firing (on/off with hysteresis)", initial=True),
        Signal("boiler1.steam_flow", a, "t/h", flow, "Steam flow to process", initial=42.0),
        Signal("boiler1.drum_level", a, "mm", level, "Drum level from normal water level", initial=0.0),
        Signal("boiler1.steam_total", Kind.COUNTER, "t", total, "Steam produced (totalizer)", initial=t0),
    ]


def _mill(n: int, rng: random.Random, amps: float, rpm: float) -> list[Signal]:
    stop, feed, m = _Stop(), rng.uniform(0.0, _TAU), f"mill{n}"

    def state(tk: Tick) -> int:  # mostly running; now and then a short stop or a fault
        if tk.now >= stop.until and tk.rng.random() < tk.dt / MILL_MEAN_RUN_S:
            stop.until = tk.now + tk.rng.uniform(*MILL_STOP_S)
            stop.fault = tk.rng.random() < MILL_FAULT_SHARE
        return 1 if tk.now >= stop.until else 2 if stop.fault else 0

    def speed(tk: Tick) -> float:
        if tk.values[f"{m}.state"] == 1:
            return rpm + tk.noise(1.5)
        return tk.analog(f"{m}.motor_speed") * math.exp(-tk.dt / 5.0)  # coasting down

    def current(tk: Tick) -> float:  # follows the uneven cane feed
        load = amps * (1.0 + 0.08 * tk.wave(45.0, feed)) + tk.noise(2.0)
        return max(load, 0.0) if tk.values[f"{m}.state"] == 1 else 0.0

    def power(tk: Tick) -> float:
        return _KW_PER_A * tk.analog(f"{m}.motor_current")

    def fault(tk: Tick) -> bool:
        return tk.values[f"{m}.state"] == 2

    a = Kind.ANALOG
    return [
        Signal(f"{m}.state", Kind.STATE, "", state, "0 stopped, 1 running, 2 fault", initial=1),
        Signal(f"{m}.motor_speed", a, "rpm", speed, "Drive motor speed; coasts down on a stop", initial=rpm),
        Signal(f"{m}.motor_current", a, "A", current, "Drive motor current; follows the cane feed", initial=amps),
        Signal(f"{m}.motor_power", a, "kW", power, "Drive motor power", initial=_KW_PER_A * amps),
        Signal(f"{m}.fault", Kind.FLAG, "", fault, "Drive in fault", initial=False),
    ]


def _cane(n: int, start: float) -> Signal:
    """Cane through mill ``n``: its rate follows the mill's load (240 t/h at mill 1's nominal 185 A)."""
    crushed, m = _Totalizer(start), f"mill{n}"

    def cane(tk: Tick) -> int:
        tonnes = CANE_T_PER_AH * tk.analog(f"{m}.motor_current") * tk.dt / 3600.0
        return crushed.add(tonnes)

    t0 = crushed.add(0.0)
    return Signal(f"{m}.cane_crushed", Kind.COUNTER, "t", cane, f"Cane crushed by mill {n}", initial=t0)


def centrifugal_signals(n: int, rng: random.Random, cycle_s: float, wear_per_h: tuple[float, float]) -> list[Signal]:
    offset, first, c = rng.uniform(0.0, cycle_s), rng.randint(10_000, 20_000), f"centrifugal{n}"
    vib_wear, temp_wear = wear_per_h

    def spinning(tk: Tick) -> bool:  # batch cycle: charge 30 s, spin, plough out 30 s
        return 30.0 <= (tk.elapsed + offset) % cycle_s < cycle_s - 30.0

    def vibration(tk: Tick) -> float:
        base = 2.7 if tk.flag(f"{c}.spinning") else 1.4
        worn = BEARING.vibration_at_failure * tk.effect(f"{c}.wear")
        return base + vib_wear * tk.elapsed / 3600.0 + worn + tk.noise(0.06)

    def temperature(tk: Tick) -> float:
        target = 58.0 if tk.flag(f"{c}.spinning") else 52.0
        target += temp_wear * tk.elapsed / 3600.0 + BEARING.temperature_at_failure * tk.effect(f"{c}.wear")
        return tk.lag(f"{c}.bearing_temp", target, 120.0) + tk.noise(0.05)

    def batches(tk: Tick) -> int:
        return first + math.floor((tk.elapsed + offset) / cycle_s)

    a = Kind.ANALOG
    return [
        Signal(f"{c}.spinning", Kind.FLAG, "", spinning, "In the spin phase of its batch cycle", initial=False),
        Signal(f"{c}.vibration_rms", a, "mm/s", vibration, "Basket bearing vibration RMS", initial=1.4),
        Signal(f"{c}.bearing_temp", a, "°C", temperature, "Basket bearing temperature", initial=52.0),
        Signal(f"{c}.batch_count", Kind.COUNTER, "", batches, "Batches completed", initial=first),
    ]


def _turbine() -> list[Signal]:
    def speed(tk: Tick) -> float:
        return 6000.0 + tk.noise(3.0)

    def power(tk: Tick) -> float:  # follows the steam it gets
        return 3000.0 + 45.0 * (tk.analog("boiler1.steam_flow") - 42.0) + tk.noise(8.0)

    a = Kind.ANALOG
    return [
        Signal("turbine1.speed", a, "rpm", speed, "Turbo-alternator turbine speed", initial=6000.0),
        Signal("turbine1.power", a, "kW", power, "Alternator output; follows the steam flow", initial=3000.0),
    ]


def _build_signals(rng: random.Random) -> tuple[Signal, ...]:
    """The signal table, in computation order; per-asset state lives in the closures."""
    return (
        *_boiler(rng),
        *_mill(1, rng, amps=MILL_AMPS["mill1"], rpm=985.0),
        *_mill(2, rng, amps=MILL_AMPS["mill2"], rpm=990.0),
        _cane(1, rng.uniform(1_250_000.0, 1_255_000.0)),
        # Centrifugal 1's bearing is wearing out: the slow creep maintenance should catch.
        *centrifugal_signals(1, rng, 180.0, wear_per_h=(0.35, 1.8)),
        *centrifugal_signals(2, rng, 195.0, wear_per_h=(0.0, 0.0)),
        *_turbine(),
        # Added after the first release: last, and drawing no random numbers, so that every
        # signal above keeps the values it had for a given seed.
        _cane(2, 1_180_000.0),
    )


@cache
def signal_catalog() -> Mapping[str, Signal]:
    """Names, kinds and units of all signals, for code that needs them without a model."""
    return MappingProxyType({s.name: s for s in _build_signals(random.Random(0))})


def coerce(signal: Signal, value: Value) -> Value:
    """Check that ``value`` suits the signal's kind and return it in the kind's type."""
    if signal.kind is Kind.FLAG:
        if not isinstance(value, bool):
            raise TypeError(f"{signal.name} is a flag; expected bool, got {value!r}")
        return value
    if isinstance(value, bool):
        raise TypeError(f"{signal.name} is {signal.kind.value}; got bool {value!r}")
    if signal.kind is Kind.ANALOG:
        return float(value)
    if not isinstance(value, int):
        raise TypeError(f"{signal.name} is {signal.kind.value}; expected int, got {value!r}")
    return value


class PlantModel:
    """The sugar mill's signals, stepped by the caller's clock.

    ``step(now)`` advances every signal to ``now`` (seconds on any monotonic clock); the
    same seed, fault schedule and sequence of ``now`` values give the same values, bit for
    bit. ``faults`` (``simulator.faults``) act from the first step on: process faults
    through the physics, sensor faults only on what ``value`` and ``snapshot`` report.
    """

    def __init__(self, seed: int = 1, faults: FaultSchedule | None = None) -> None:
        self._rng = random.Random(seed)
        self._signals = _build_signals(self._rng)
        self._by_name = {s.name: s for s in self._signals}
        self._faults = faults or FaultSchedule()
        unknown = sorted(self._faults.targets() - set(self._by_name))
        if unknown:
            raise UnknownSignalError(f"the fault schedule names signals the plant does not have: {unknown}")
        for fault in self._faults.sensor_faults():
            if isinstance(fault, Spikes) and self._by_name[fault.tag].kind is not Kind.ANALOG:
                raise SimulatorError(
                    f"spikes need an analog signal; {fault.tag} is {self._by_name[fault.tag].kind.value}"
                )
        self._values: dict[str, Value] = {s.name: s.initial for s in self._signals}
        self._reported = dict(self._values)
        self._stuck: dict[int, Value] = {}  # index of a stuck-sensor fault -> the value it repeats
        self._held: dict[str, Value] = {}
        self._start: float | None = None
        self._last = 0.0

    @property
    def signals(self) -> tuple[Signal, ...]:
        return self._signals

    @property
    def held(self) -> Mapping[str, Value]:
        return MappingProxyType(self._held)

    @property
    def faults(self) -> FaultSchedule:
        return self._faults

    @property
    def elapsed(self) -> float:
        """Seconds since the first step (0 before it): the clock of the fault schedule."""
        return 0.0 if self._start is None else self._last - self._start

    def signal(self, name: str) -> Signal:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownSignalError(name) from None

    def step(self, now: float) -> None:
        """Advance to ``now``; a clock that goes backwards counts as no time passing."""
        if self._start is None:
            self._start = self._last = now
        dt = max(now - self._last, 0.0)
        self._last = max(now, self._last)
        elapsed = self._last - self._start
        tick = Tick(self._last, dt, elapsed, self._rng, self._values, self._faults.effects(elapsed))
        for signal in self._signals:
            computed = coerce(signal, signal.update(tick))  # always drawn: holds keep
            self._values[signal.name] = self._held.get(signal.name, computed)  # the stream
        self._report(elapsed)

    def _report(self, elapsed: float) -> None:
        """What the sensors show: the values, with the sensor faults active at ``elapsed``."""
        self._reported = dict(self._values)
        for index, fault in enumerate(self._faults.faults):
            if isinstance(fault, StuckSensor):
                if fault.active(elapsed):
                    self._reported[fault.tag] = self._stuck.setdefault(index, self._values[fault.tag])
                else:
                    self._stuck.pop(index, None)
            elif isinstance(fault, Spikes) and (offset := fault.offset(elapsed)):
                self._reported[fault.tag] = float(self._reported[fault.tag]) + offset

    def value(self, name: str) -> Value:
        self.signal(name)
        return self._reported[name]

    def snapshot(self) -> dict[str, Value]:
        return dict(self._reported)

    def hold(self, name: str, value: Value) -> None:
        """Pin a signal to ``value`` (from now on, until ``release``), e.g. for a test."""
        pinned = coerce(self.signal(name), value)
        self._held[name] = pinned
        self._values[name] = self._reported[name] = pinned

    def release(self, name: str) -> None:
        """Let a held signal follow the model again from the next step."""
        self.signal(name)
        self._held.pop(name, None)

    def release_all(self) -> None:
        self._held.clear()

    def write(self, name: str, value: Value) -> None:
        """Set a writable signal (a setpoint), as a client writing to the PLC would."""
        signal = self.signal(name)
        if not signal.writable:
            raise SimulatorError(f"{name} is not writable")
        if name not in self._held:
            self._values[name] = self._reported[name] = coerce(signal, value)
