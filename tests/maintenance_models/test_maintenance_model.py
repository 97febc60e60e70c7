"""The RUL model on synthetic fleets: regimes found, features from the past only, a model that
learns, and the same model from the same seed."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_maintenance_data import write_synthetic
from threadpoolctl import threadpool_limits

from maintenance_models.data import Runs, load_subset
from maintenance_models.errors import NotFittedError, TooLittleDataError
from maintenance_models.evaluate import evaluate
from maintenance_models.features import fit_normalizer, unit_features
from maintenance_models.metrics import rmse
from maintenance_models.model import RulConfig, RulModel

# Small and fast; the evaluation configuration is RulConfig() (see docs/maintenance.md).
QUICK = RulConfig(
    ensemble=2, max_iter=60, classifier_max_iter=40, learning_rate=0.1, min_samples_leaf=20, max_regimes=8
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """As RulModel does by default: OpenMP threads beyond the free cores only slow k-means down."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def six_regimes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("six"), units=30, regimes=6, seed=3)


@pytest.fixture(scope="module")
def one_regime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("one"), units=30, regimes=1, seed=4)


def test_regimes_are_found_when_they_exist_and_not_invented(six_regimes: Path, one_regime: Path) -> None:
    six = fit_normalizer(load_subset(six_regimes, "FD901").train, max_regimes=8, min_silhouette=0.9, seed=0)
    one = fit_normalizer(load_subset(one_regime, "FD901").train, max_regimes=8, min_silhouette=0.9, seed=0)
    assert six.regime_count == 6
    assert one.regime_count == 1
    assert one.silhouette is not None
    assert one.silhouette < 0.9
    # constant and two-valued sensors are dropped, the others kept
    assert one.keep.sum() == six.keep.sum() == 17
    assert not one.keep[[0, 4, 5, 9]].any()


def test_regime_normalization_removes_the_operating_condition(six_regimes: Path) -> None:
    runs = load_subset(six_regimes, "FD901").train
    normalizer = fit_normalizer(runs, max_regimes=8, min_silhouette=0.9, seed=0)
    z = normalizer.transform(runs)
    regimes = normalizer.regimes(runs.settings)
    raw_spread = np.std([runs.sensors[regimes == r, 1].mean() for r in range(6)])
    assert raw_spread > 10
    assert np.abs([z[regimes == r].mean(axis=0) for r in range(6)]).max() < 1e-9


def test_features_at_a_cycle_use_nothing_after_it() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(80, 3))
    cycles = np.arange(1, 81, dtype=float)
    full = unit_features(z, cycles, QUICK.features)
    for stop in (1, 2, 7, 33, 80):
        prefix = unit_features(z[:stop], cycles[:stop], QUICK.features)
        np.testing.assert_allclose(prefix[-1], full[stop - 1], rtol=1e-9, atol=1e-9)


def test_slope_feature_is_the_least_squares_slope() -> None:
    cycles = np.arange(1, 41, dtype=float)
    z = (3.0 + 0.5 * cycles)[:, None]
    config = RulConfig(windows=(), slope_windows=(10,), baseline_cycles=0, history_mean=False, use_cycle=False)
    features = unit_features(z, cycles, config.features)
    assert features[0, 0] == 0.0  # one point has no slope
    np.testing.assert_allclose(features[1:, 0], 0.5)


def test_the_model_learns_and_beats_a_constant_guess(six_regimes: Path) -> None:
    data = load_subset(six_regimes, "FD901")
    report = evaluate(data, RulModel(QUICK))
    assert data.rul is not None
    constant = rmse(np.full(len(data.rul), np.minimum(data.train.remaining(), 125).mean()), np.minimum(data.rul, 125))
    assert report.rul.rmse < 0.5 * constant
    assert report.regimes == 6
    assert report.failure.auc is not None
    assert report.failure.auc > 0.8
    assert np.all((report.predicted >= 0) & (report.predicted <= 125))
    assert np.all((report.failure_prob >= 0) & (report.failure_prob <= 1))


def test_same_seed_same_model_other_seed_other_model(one_regime: Path) -> None:
    data = load_subset(one_regime, "FD901")
    assert data.test is not None
    first = RulModel(QUICK).fit(data.train).predict(data.test)
    second = RulModel(QUICK).fit(data.train).predict(data.test)
    other = RulModel(QUICK.model_copy(update={"seed": 7})).fit(data.train).predict(data.test)
    assert np.array_equal(first.rul, second.rul)
    assert np.array_equal(first.failure_prob, second.failure_prob)
    assert not np.array_equal(first.rul, other.rul)  # max_features < 1: the seed matters


def test_a_pickled_model_predicts_the_same(one_regime: Path) -> None:
    data = load_subset(one_regime, "FD901")
    assert data.test is not None
    model = RulModel(QUICK).fit(data.train)
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(model.predict(data.test).rul, again.predict(data.test).rul)


def test_misuse_is_reported() -> None:
    runs = Runs.from_histories([np.arange(20.0)[:, None]], ["a"])
    with pytest.raises(NotFittedError):
        RulModel(QUICK).predict(runs)
    with pytest.raises(TooLittleDataError, match="at least 2 units"):
        RulModel(QUICK).fit(runs)
    flat = Runs.from_histories([np.ones((20, 1)), np.ones((30, 1))], ["a"])
    with pytest.raises(TooLittleDataError, match="no sensor varies"):
        RulModel(QUICK).fit(flat)
    with pytest.raises(ValueError, match="at least two cycles"):
        RulConfig(slope_windows=(1,))
    with pytest.raises(ValueError, match="extra"):
        RulConfig(windowz=(5,))  # type: ignore[call-arg]


def test_a_model_refuses_other_sensors(one_regime: Path) -> None:
    data = load_subset(one_regime, "FD901")
    model = RulModel(QUICK).fit(data.train)
    other = Runs.from_histories([np.ones((5, 2))], ["a", "b"])
    with pytest.raises(ValueError, match="trained on sensors"):
        model.predict(other)


def test_members_have_their_own_seeds_and_a_model_without_classifier_scores_rul_only(one_regime: Path) -> None:
    seeds = QUICK.member_seeds()
    assert len(set(seeds)) == QUICK.ensemble
    assert not set(seeds) & set(QUICK.model_copy(update={"seed": 1}).member_seeds())  # seeds 0 and 1 share none
    data = load_subset(one_regime, "FD901")
    assert data.test is not None
    full = RulModel(QUICK).fit(data.train)
    bare = RulModel(QUICK).fit(data.train, classifier=False)
    with pytest.raises(NotFittedError, match="failure classifier"):
        bare.predict(data.test)
    last = bare.features(data.test)[data.test.last_rows()]
    each = bare.member_predictions(last)
    assert each.shape == (QUICK.ensemble, len(data.test.units))
    assert np.allclose(np.clip(each.mean(axis=0), 0, QUICK.cap), full.predict(data.test).rul)


def test_a_training_cap_above_the_cap_still_clips_predictions(one_regime: Path) -> None:
    data = load_subset(one_regime, "FD901")
    assert data.test is not None
    config = QUICK.model_copy(update={"cap": 60.0, "train_cap": 90.0})
    model = RulModel(config).fit(data.train, classifier=False)
    x = model.features(data.train)
    assert model.member_predictions(x).max() > 60  # learned on min(RUL, 90)
    assert np.all(RulModel(config).fit(data.train).predict(data.test).rul <= 60)
