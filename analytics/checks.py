"""Cheap per-tag checks beside the multivariate detector: stuck sensor, out of range, spikes.

Each check learns what it needs from the same healthy window as the detector
(``TagLimits.learn``) and then looks at one tag's raw samples (times in seconds, values):

- **stuck**: the value has not changed for longer than ``stuck_after_s`` *and* ten
  times the slowest gap between changes seen while healthy (a tag that changes every
  few minutes when healthy is not stuck after one quiet minute). Counted whether or not
  samples arrive: an edge agent reports by exception, so a stuck sensor sends nothing
  but a heartbeat;
- **range**: outside the configured engineering limits, or, without them, more than
  ``range_margin`` healthy spans beyond the healthy minimum or maximum;
- **spike**: a sample that jumps away from the median of the samples before it *and*
  from the median of those after it, by more than ``spike_sigmas`` healthy noise
  sigmas, while those two medians agree (a step is not a spike). A spike is judged
  once ``SPIKE_CONTEXT`` later samples exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SPIKE_CONTEXT", "CheckConfig", "Flag", "StuckState", "TagLimits", "run_checks"]

Array = npt.NDArray[np.float64]
SPIKE_CONTEXT: Final = 3  # samples on each side of a spike candidate


class CheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stuck_after_s: float = Field(60.0, gt=0)
    range_margin: float = Field(1.0, ge=0, description="healthy spans beyond the healthy min/max")
    spike_sigmas: float = Field(8.0, gt=0)
    limits: dict[str, tuple[float, float]] = Field(default_factory=dict, description="tag name: (low, high)")


@dataclass(frozen=True, slots=True)
class TagLimits:
    """What the checks learned about one tag while it was healthy."""

    low: float
    high: float
    noise: float  # robust sigma of sample-to-sample noise
    stuck_after_s: float

    @classmethod
    def learn(cls, name: str, times: Array, values: Array, config: CheckConfig) -> TagLimits | None:
        """None when the healthy window cannot teach anything (fewer than 10 values, or constant)."""
        ok = ~np.isnan(values)
        times, values = times[ok], values[ok]
        if values.size < 10 or np.ptp(values) == 0:
            return None
        span = float(np.ptp(values))
        if name in config.limits:
            low, high = config.limits[name]
        else:
            margin = config.range_margin * span
            low, high = float(values.min()) - margin, float(values.max()) + margin
        steps = np.diff(values)
        mad = float(np.median(np.abs(steps - np.median(steps)))) * 1.4826
        noise = max(mad, float(np.std(steps)) * 0.5, span * 1e-6) / np.sqrt(2.0)
        changes = times[1:][steps != 0]
        gaps = np.diff(changes) if changes.size > 1 else np.array([float(times[-1] - times[0])])
        stuck = max(config.stuck_after_s, 10.0 * float(np.max(gaps)))
        return cls(low, high, noise, stuck)

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "noise": self.noise, "stuck_after_s": self.stuck_after_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TagLimits:
        return cls(float(data["low"]), float(data["high"]), float(data["noise"]), float(data["stuck_after_s"]))


@dataclass(frozen=True, slots=True)
class Flag:
    check: str  # "stuck", "range" or "spike"
    time: float  # seconds
    value: float
    score: float  # how far past the check's own line (1.0 = on it)
    reason: str


def _range(times: Array, values: Array, lim: TagLimits) -> list[Flag]:
    out: list[Flag] = []
    width = max(lim.high - lim.low, 1e-12)
    for t, v in zip(times, values, strict=True):
        if v < lim.low or v > lim.high:
            past = (lim.low - v) if v < lim.low else (v - lim.high)
            side = f"below {lim.low:.6g}" if v < lim.low else f"above {lim.high:.6g}"
            out.append(Flag("range", float(t), float(v), 1.0 + past / width, f"{v:.6g} is {side}"))
    return out


def _spikes(times: Array, values: Array, lim: TagLimits, sigmas: float) -> list[Flag]:
    n, k = values.size, SPIKE_CONTEXT
    if n < 2 * k + 1:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(values, 2 * k + 1)
    centre = windows[:, k]
    before = np.median(windows[:, :k], axis=1)
    after = np.median(windows[:, k + 1 :], axis=1)
    line = sigmas * lim.noise
    jump = np.minimum(np.abs(centre - before), np.abs(centre - after))
    hit = (jump > line) & (np.abs(after - before) < line / 2)
    return [
        Flag("spike", float(times[i + k]), float(centre[i]), float(jump[i] / line),
             f"{centre[i]:.6g} jumps {jump[i] / lim.noise:.1f} noise sigmas and comes back")
        for i in np.flatnonzero(hit)
    ]  # fmt: skip


@dataclass(slots=True)
class StuckState:
    """Carried between runs: when the tag's value last changed, and to what."""

    last_change: float = float("nan")
    last_value: float = float("nan")


def _stuck(
    times: Array, values: Array, lim: TagLimits, state: StuckState, *, now: float, idle_until: float
) -> list[Flag]:
    if values.size:
        moved = np.flatnonzero(np.diff(values, prepend=state.last_value) != 0)
        if moved.size or np.isnan(state.last_change):
            state.last_change = float(times[moved[-1]] if moved.size else times[0])
        state.last_value = float(values[-1])
    state.last_change = max(state.last_change, idle_until)  # stopped is not stuck: count from the restart
    quiet = now - state.last_change
    # No new sample is no evidence against a stuck sensor: an edge agent reports a value
    # only when it changes (and then once a minute), so the silence is what a stuck one sends.
    if quiet > lim.stuck_after_s:
        reason = f"unchanged at {state.last_value:.6g} for {quiet:.0f} s"
        return [Flag("stuck", now, state.last_value, quiet / lim.stuck_after_s, reason)]
    return []


def run_checks(
    times: Array, values: Array, lim: TagLimits, config: CheckConfig, state: StuckState, *, now: float,
    new_after: float = float("-inf"), idle_until: float = float("-inf"),
) -> list[Flag]:  # fmt: skip
    """Flags for one tag's raw samples (NaN dropped), oldest first; ``state`` is updated in place.

    Samples up to ``new_after`` were seen by an earlier run and are context only: spikes
    near that run's end are judged now that their later neighbours exist, and flags may
    repeat (the caller's writes are idempotent).

    ``now`` is the time the tag is judged stuck at: the caller's clock of the data (the
    newest sample its asset sent), so that a tag is only called stuck while its neighbours
    show that data still arrives. Until ``idle_until`` the asset was stopped: the quiet
    counts from then at the earliest (``now`` itself while it is still stopped).
    """
    ok = ~np.isnan(values)
    times, values = times[ok], values[ok]
    new = times > new_after
    flags = _range(times, values, lim) + _spikes(times, values, lim, config.spike_sigmas)
    flags += _stuck(times[new], values[new], lim, state, now=now, idle_until=idle_until)
    return sorted(flags, key=lambda f: f.time)
