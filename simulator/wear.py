"""How the simulated mill's parts wear out: one curve per failure mode, shared by the live
plant (``simulator.faults.BearingWear``) and the run-to-failure histories the maintenance
models learn from (``simulator.histories``), so that a model trained on the histories meets
the same physics in live telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BEARING", "WearCurve"]


@dataclass(frozen=True, slots=True)
class WearCurve:
    """Wear as a function of the used fraction of life, and what it does to the signals.

    ``wear(f) = f ** exponent`` for f in [0, 1] (1 = failed, and it stays failed): slow at
    first, faster towards the end, as spalling bearings do. At full wear the vibration is
    ``vibration_at_failure`` mm/s and the temperature ``temperature_at_failure`` °C above a
    new part's.
    """

    exponent: float
    vibration_at_failure: float
    temperature_at_failure: float

    def wear(self, fraction: float) -> float:
        return float(min(max(fraction, 0.0), 1.0) ** self.exponent)


# A centrifugal's basket bearing: from about 2.7 mm/s when spinning (ISO 10816 "good") to
# about 8.7 mm/s, deep in "unacceptable", and 25 °C hotter.
BEARING = WearCurve(exponent=1.5, vibration_at_failure=6.0, temperature_at_failure=25.0)
