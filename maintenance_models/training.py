"""What a registered model was trained on, written down so that it can be found again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from maintenance_models.data import CmapssSubset, Runs

__all__ = ["describe_cmapss", "describe_runs"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_runs(runs: Runs, **extra: Any) -> dict[str, Any]:
    """Units, rows and sensors of a set of histories, plus whatever the caller adds."""
    return {
        "units": len(runs.units),
        "rows": len(runs.unit),
        "sensors": list(runs.sensor_names),
        "settings": int(runs.settings.shape[1]),
        **extra,
    }


def describe_cmapss(folder: Path, subset: CmapssSubset) -> dict[str, Any]:
    """The training file (name and SHA-256) and its shape; test files are evaluation, not training."""
    train_file = folder / f"train_{subset.name}.txt"
    return describe_runs(
        subset.train,
        source="cmapss",
        subset=subset.name,
        file=train_file.name,
        sha256=_sha256(train_file),
    )
