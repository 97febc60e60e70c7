"""The model registry against the real database: round trip, promotion and rollback, and
artifacts that are refused (changed bytes, pickles that are not models)."""

from __future__ import annotations

import hashlib
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from test_maintenance_data import write_synthetic

from maintenance_models.data import CmapssSubset, load_subset
from maintenance_models.errors import ArtifactError, RegistryError
from maintenance_models.model import RulConfig, RulModel
from maintenance_models.registry import (
    dump_artifact,
    list_models,
    live_version,
    load_artifact,
    load_model,
    promote,
    register,
    rollback,
)

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[Any]
QUICK = RulConfig(
    ensemble=1, max_iter=40, classifier_max_iter=40, learning_rate=0.1, min_samples_leaf=20, max_regimes=4
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> CmapssSubset:
    return load_subset(write_synthetic(tmp_path_factory.mktemp("fleet"), units=20, seed=5), "FD901")


@pytest.fixture(scope="module")
def trained(fleet: CmapssSubset) -> RulModel:
    return RulModel(QUICK).fit(fleet.train)


@pytest.fixture
def kind() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def _register(db: Conn, model: RulModel, kind: str, rmse: float = 1.0) -> int:
    return await register(db, model, kind=kind, training_data={"source": "synthetic"}, metrics={"rmse": rmse})


async def test_round_trip_gives_the_same_predictions(
    db: Conn, trained: RulModel, fleet: CmapssSubset, kind: str
) -> None:
    version = await _register(db, trained, kind, rmse=12.5)
    loaded = await load_model(db, version=version)
    assert loaded.version == version
    assert loaded.info.kind == kind
    assert loaded.info.metrics == {"rmse": 12.5}
    assert loaded.info.training_data == {"source": "synthetic"}
    assert loaded.info.live is False
    assert fleet.test is not None
    before, after = trained.predict(fleet.test), loaded.model.predict(fleet.test)
    assert np.array_equal(before.rul, after.rul)
    assert np.array_equal(before.failure_prob, after.failure_prob)
    cur = await db.execute("SELECT config, artifact_sha256 FROM maintenance.model WHERE version = %s", (version,))
    config, digest = await cur.fetchone()  # type: ignore[misc]
    assert RulConfig(**config) == QUICK
    assert digest == dump_artifact(trained)[1]


async def test_promote_and_roll_back(db: Conn, trained: RulModel, kind: str) -> None:
    v1, v2, v3 = [await _register(db, trained, kind) for _ in range(3)]
    assert await live_version(db, kind) is None
    with pytest.raises(RegistryError, match="no model has been promoted"):
        await load_model(db, kind=kind)
    assert await promote(db, v1) == kind
    assert await promote(db, v2) == kind
    assert await promote(db, v2) == kind  # already live: no new history entry
    assert await live_version(db, kind) == v2
    assert (await load_model(db, kind=kind)).version == v2
    assert await rollback(db, kind) == v1
    assert await live_version(db, kind) == v1
    await promote(db, v3)
    assert await rollback(db, kind) == v1  # v2 was rolled back already: back to v1
    with pytest.raises(RegistryError, match=f"only version {v1} was ever promoted"):
        await rollback(db, kind)
    assert await live_version(db, kind) == v1
    listed = await list_models(db, kind)
    assert [(m.version, m.live) for m in listed] == [(v1, True), (v2, False), (v3, False)]


async def test_registry_errors(db: Conn, trained: RulModel, kind: str) -> None:
    with pytest.raises(RegistryError, match="no model version"):
        await promote(db, 2_000_000_000)
    with pytest.raises(RegistryError, match="no model version"):
        await load_model(db, version=2_000_000_000)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        await rollback(db, kind)
    with pytest.raises(RegistryError, match="use lower-case letters"):
        await _register(db, trained, "Not A Kind!")


async def test_a_changed_artifact_is_refused(db: Conn, trained: RulModel, kind: str) -> None:
    version = await _register(db, trained, kind)
    await db.execute(
        "UPDATE maintenance.model SET artifact = artifact || '\\x00'::bytea WHERE version = %s", (version,)
    )
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        await load_model(db, version=version)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _global(module: str, name: str) -> bytes:
    """A pickle that only resolves ``module.name`` (GLOBAL opcode) and returns it."""
    return b"\x80\x04c" + module.encode() + b"\n" + name.encode() + b"\n."


def _load(blob: bytes) -> RulModel:
    return load_artifact(blob, hashlib.sha256(blob).hexdigest())


def test_a_pickle_that_is_not_a_model_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ArtifactError, match=r"refers to (posix|os)\.system"):
        _load(pickle.dumps(_Exploit(marker)))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("maintenance_models.registry", "pickle.loads"),  # a walk from an allowed module to what it imports
        ("maintenance_models.registry", "load_artifact"),  # a function, not a class
        ("numpy", "load"),
        ("numpy.testing._private.utils", "runstring"),
        ("builtins", "eval"),
    ],
)
def test_only_model_classes_resolve(module: str, name: str) -> None:
    with pytest.raises(ArtifactError, match="which a model never holds"):
        _load(_global(module, name))


def test_a_pickle_of_something_else_is_refused() -> None:
    with pytest.raises(ArtifactError, match="holds a dict, not a RulModel"):
        _load(pickle.dumps({"not": "a model"}))
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        _load(b"\x80\x05not a pickle")
