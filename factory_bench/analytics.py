"""``factory bench analytics``: detector scoring throughput against bare numpy in the same run.

Two loads, in points per second (a point is one tag's value at one time, as on the wire):

- one asset with 8 tags scoring a long block of rows;
- 100 assets with 8 tags each, each with its own model, scored asset by asset.

Both are scored in calls of ``--chunk`` rows (an hour of 1 s steps: the most the live job
scores per asset and run). The ceiling is the same arithmetic on the same calls (the IIR
average, centring and scaling, ``z @ P``, the per-tag split and its sum) as bare numpy,
without our validation, episode state machine and result objects. The figure that
matters is the ratio (ceiling time / our time), which carries across machines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
import numpy as np
from scipy.signal import lfilter  # type: ignore[import-untyped]

from analytics.detector import Detector, DetectorConfig, Model

__all__ = ["bench_analytics"]

TAGS = 8


def _best_of(repeats: int, first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """Best wall time of each, timed in turns so a noisy neighbour slows both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, work in enumerate((first, second)):
            started = time.perf_counter()
            work()
            best[i] = min(best[i], time.perf_counter() - started)
    return best[0], best[1]


def _measure(rows: int, assets: int, chunk: int, repeats: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    config = DetectorConfig()
    names = [f"tag{j}" for j in range(TAGS)]
    healthy = [rng.normal(size=(600, TAGS)) + rng.normal(size=(600, TAGS)).cumsum(axis=0) * 0.01 for _ in range(assets)]
    detectors = [Detector(config, names).fit(h) for h in healthy]
    blocks = [[rng.normal(size=(chunk, TAGS)) for _ in range(rows // chunk)] for _ in range(assets)]
    alpha = 2.0 / (config.smoothing + 1.0)
    ones = np.ones(TAGS)

    def ours() -> None:
        for detector, chunks in zip(detectors, blocks, strict=True):
            stream = detector.stream()
            for rows_in in chunks:
                stream.update(rows_in)

    def bare_asset(m: Model, chunks: list[Any]) -> None:
        state = m.last
        for rows_in in chunks:
            z, _ = lfilter([alpha], [1.0, alpha - 1.0], rows_in, axis=0, zi=((1 - alpha) * state)[np.newaxis, :])
            state = z[-1].copy()
            z -= m.mean
            z /= m.scale
            split = z @ m.precision
            split *= z
            split *= 1.0 / m.threshold
            split @ ones

    def bare() -> None:
        for detector, chunks in zip(detectors, blocks, strict=True):
            assert detector.model is not None
            bare_asset(detector.model, chunks)

    ours_s, bare_s = _best_of(repeats, ours, bare)
    points = assets * (rows // chunk) * chunk * TAGS
    return {
        "assets": assets, "tags": TAGS, "rows_per_asset": (rows // chunk) * chunk, "rows_per_call": chunk,
        "points": points, "points_per_s": round(points / ours_s), "ceiling_points_per_s": round(points / bare_s),
        "ratio": round(bare_s / ours_s, 3),
    }  # fmt: skip


@click.command("analytics")
@click.option("--rows", type=int, default=216_000, show_default=True, help="Rows for the single asset.")
@click.option("--fleet-rows", type=int, default=3_600, show_default=True, help="Rows per asset for the 100 assets.")
@click.option("--chunk", type=int, default=3_600, show_default=True,
              help="Rows per scoring call (the live job scores at most an hour of 1 s steps per run).")  # fmt: skip
@click.option("--repeats", type=int, default=5, show_default=True, help="Best of this many timings.")
def bench_analytics(rows: int, fleet_rows: int, chunk: int, repeats: int) -> None:
    """Anomaly scoring throughput (points/s) for 1 asset and for 100 assets, with the bare-numpy ceiling."""
    if chunk < 1 or rows < chunk or fleet_rows < chunk:
        raise click.BadParameter("--rows and --fleet-rows must each be at least --chunk (>= 1)")
    single = _measure(rows, 1, chunk, repeats, seed=1)
    fleet = _measure(fleet_rows, 100, chunk, repeats, seed=2)
    click.echo(json.dumps({
        "bench": "analytics", "one_asset": single, "hundred_assets": fleet,
        "ratio": min(single["ratio"], fleet["ratio"]), "target_ratio": 0.5,
    }))  # fmt: skip
