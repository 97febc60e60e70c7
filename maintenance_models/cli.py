"""``factory maintenance ...``: train and evaluate RUL models, and manage the model registry."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg
from pydantic import ValidationError
from tqdm import tqdm

from factory.db import connect, redact
from factory.settings import current
from maintenance_models.data import load_subset
from maintenance_models.errors import MaintenanceError
from maintenance_models.evaluate import evaluate, plot_report, report_text, seeds_summary, seeds_text, train
from maintenance_models.model import RulConfig, RulModel
from maintenance_models.registry import KIND_RE, dump_artifact, list_models, promote, rollback
from maintenance_models.registry import register as register_model
from maintenance_models.scoring import ScoringConfig, score_live
from maintenance_models.simulated import BEARING_KIND, bearing_subset, describe_simulated, plant_config
from maintenance_models.training import describe_cmapss
from maintenance_models.validation import cross_validate, cv_steps, cv_text
from simulator.histories import PROFILES

if TYPE_CHECKING:
    from maintenance_models.data import CmapssSubset
    from maintenance_models.evaluate import CmapssReport
    from maintenance_models.model import RulModel

__all__ = ["maintenance"]

T = TypeVar("T")


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs for the model configuration; values are JSON (numbers, lists) or text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _run(work: Callable[[], T]) -> T:
    """Run ``work``, turning the package's own errors into a clean CLI error."""
    try:
        return work()
    except MaintenanceError as exc:
        raise click.ClickException(str(exc)) from exc


def _database(work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(conn)`` against FACTORY_DATABASE_URL (or the default local database)."""
    url = current().database()

    async def go() -> T:
        async with await connect(url, autocommit=True) as conn:
            return await work(conn)

    try:
        return _run(lambda: asyncio.run(go()))
    except psycopg.Error as exc:
        raise click.ClickException(f"database {redact(url)}: {exc}") from exc


def _load(folder: Path, subset: str, *, with_test: bool) -> CmapssSubset:
    return _run(lambda: load_subset(folder, subset, with_test=with_test))


def _new_model(settings: tuple[str, ...], threads: int) -> RulModel:
    try:
        return RulModel(RulConfig(**_overrides(settings)), threads=threads or None)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc


def _fit(subset: CmapssSubset, model: RulModel) -> float:
    with tqdm(total=model.steps(subset.train), desc=f"training on {subset.name}", unit="step",
              file=sys.stderr, disable=None) as bar:  # fmt: skip
        return _run(lambda: train(subset, model, bar.update))


def _evaluate(subset: CmapssSubset, model: RulModel) -> CmapssReport:
    return _run(lambda: evaluate(subset, model))


_FOLDER = click.Path(path_type=Path, exists=True, file_okay=False)
_CMAPSS = click.option("--cmapss", "folder", required=True, type=_FOLDER,
                       help="Folder with train_/test_/RUL_<subset>.txt in C-MAPSS format.")  # fmt: skip
_SUBSET = click.option("--subset", required=True, help="Subset name, e.g. FD001.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
_SET = click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                    help="Change one model setting (see docs/maintenance.md), e.g. --set ensemble=1.")  # fmt: skip
_THREADS = click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
                        help="Training threads (0: one per core; more than the free cores slow it down).")  # fmt: skip


@click.group()
def maintenance() -> None:
    """Predictive maintenance: RUL models, their evaluation and the model registry."""


@maintenance.command("eval")
@_CMAPSS
@_SUBSET
@_JSON
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a PNG of predicted vs true RUL per test unit (of the first seed).")  # fmt: skip
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train and score once per seed (the configured seed, +1, ...); print mean ± sd.")  # fmt: skip
@_SET
@_THREADS
def eval_command(  # noqa: PLR0917 - one parameter per option, as click passes them
    folder: Path, subset: str, as_json: bool, plot: Path | None, seeds: int, settings: tuple[str, ...], threads: int
) -> None:
    """Train on train_<subset>, predict the last cycle of each test unit, compare with RUL_<subset>."""
    model = _new_model(settings, threads)
    data = _load(folder, subset, with_test=True)
    if seeds == 1:
        seconds = _fit(data, model)
        report = dataclasses.replace(_evaluate(data, model), train_seconds=seconds)
        reports = [report]
    else:
        reports = _evaluate_seeds(data, model, seeds)
    if plot is not None:
        plot_report(reports[0], plot)
        click.echo(f"plot written to {plot}", err=True)
    if seeds == 1:
        click.echo(json.dumps(reports[0].as_dict()) if as_json else report_text(reports[0]))
        return
    summary = seeds_summary(reports)
    click.echo(json.dumps(summary) if as_json else seeds_text(summary))


def _evaluate_seeds(data: CmapssSubset, model: RulModel, seeds: int) -> list[CmapssReport]:
    """One model per seed, the configured one first; one progress bar over all of them."""
    first = model.config.seed
    reports = []
    with tqdm(total=seeds * model.steps(data.train), desc=f"{data.name}, seed {first}", unit="step",
              file=sys.stderr, disable=None) as bar:  # fmt: skip
        for seed in range(first, first + seeds):
            bar.set_description(f"{data.name}, seed {seed}")
            each = RulModel(model.config.model_copy(update={"seed": seed}), threads=model.threads)
            seconds = _run(lambda each=each: train(data, each, bar.update))  # type: ignore[misc]
            reports.append(dataclasses.replace(_evaluate(data, each), train_seconds=seconds))
    return reports


@maintenance.command("cv")
@_CMAPSS
@_SUBSET
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Folds, grouped by unit.")
@click.option("--cuts", type=click.IntRange(min=1), default=20, show_default=True,
              help="Cycles scored per held-out unit (at least 31 cycles seen, one cycle left).")  # fmt: skip
@_JSON
@_SET
@_THREADS
def cv_command(  # noqa: PLR0917 - one parameter per option, as click passes them
    folder: Path, subset: str, folds: int, cuts: int, as_json: bool, settings: tuple[str, ...], threads: int
) -> None:
    """Cross-validate on train_<subset> only (the test files are not read): how settings are chosen."""
    config = _new_model(settings, threads).config
    data = _load(folder, subset, with_test=False)
    with tqdm(total=cv_steps(data.train, config, folds), desc=f"cross-validating on {subset}", unit="step",
              file=sys.stderr, disable=None) as bar:  # fmt: skip
        report = _run(lambda: cross_validate(data.train, config, subset=subset, folds=folds, cuts=cuts,
                                             threads=threads or None, progress=bar.update))  # fmt: skip
    click.echo(json.dumps(report.as_dict()) if as_json else cv_text(report))


@maintenance.command("train")
@click.option("--cmapss", "folder", type=_FOLDER, default=None,
              help="Folder with train_/test_/RUL_<subset>.txt in C-MAPSS format.")  # fmt: skip
@click.option("--subset", default=None, help="Subset name, e.g. FD001 (with --cmapss).")
@click.option("--simulated", is_flag=True, help="Train a plant model on the simulator's run-to-failure histories.")
@click.option("--units", type=click.IntRange(min=3), default=100, show_default=True,
              help="With --simulated: bearings run to failure; a fifth are held out for evaluation.")  # fmt: skip
@click.option("--profile", type=click.Choice(["plant", "demo"]), default="plant", show_default=True,
              help="With --simulated: hour cycles and weeks of life, or the demo's 5 s cycles.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="With --simulated: seed of the histories.")
@click.option("--kind", default=None, help="Registry kind (default: cmapss-<subset>, or centrifugal-bearing).")
@click.option("--register/--no-register", default=None,
              help="Store the model in the registry (default: when FACTORY_DATABASE_URL is set).")  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the artifact to this file (its SHA-256 goes next to it, in FILE.sha256).")  # fmt: skip
@_JSON
@_SET
@_THREADS
def train_command(  # noqa: PLR0917 - one parameter per option, as click passes them
    folder: Path | None, subset: str | None, simulated: bool, units: int, profile: str, seed: int, kind: str | None,
    register: bool | None, output: Path | None, as_json: bool, settings: tuple[str, ...], threads: int,
) -> None:  # fmt: skip
    """Train on train_<subset> (or simulated histories); evaluate on held-out units; register a new version."""
    if simulated == (folder is not None) or (folder is not None and subset is None):
        raise click.UsageError("give either --cmapss DIR --subset NAME, or --simulated")
    if folder is None:
        data, model, describe = _simulated(units, profile, seed, settings, threads)
    else:
        data, model, describe = _cmapss(folder, subset or "", settings, threads)
    chosen = kind or _default_kind(data.name)
    if not KIND_RE.match(chosen):
        raise click.BadParameter(f"{chosen!r}: use lower-case letters, digits, '.', '_' or '-'", param_hint="--kind")
    seconds = _fit(data, model)
    metrics: dict[str, Any] = {"train_seconds": round(seconds, 1)}
    if data.test is not None:
        metrics = {**_evaluate(data, model).as_dict(), **metrics}
    result: dict[str, Any] = {"subset": data.name, "metrics": metrics, "version": None}
    if output is not None:
        blob, digest = dump_artifact(model)
        output.write_bytes(blob)
        output.with_name(output.name + ".sha256").write_text(f"{digest}  {output.name}\n")
        result["artifact"], result["sha256"] = str(output), digest
    if register is None:  # by default, register where there is a database to register in
        register = current().database_url is not None
    if register:
        description = describe()
        result["kind"] = chosen
        result["version"] = _database(
            lambda conn: register_model(conn, model, kind=chosen, training_data=description, metrics=metrics)
        )
    if as_json:
        click.echo(json.dumps(result))
        return
    shown = ", ".join(f"{k} {v}" for k, v in metrics.items() if k in {"rmse", "rmse_uncapped", "score"})
    click.echo(f"trained on {data.name} in {seconds:.1f} s" + (f": {shown}" if shown else ""))
    if result["version"] is not None:
        click.echo(f"registered as {result['kind']} version {result['version']} (promote it to make it live)")


def _default_kind(name: str) -> str:
    return BEARING_KIND if name.startswith("simulated-") else f"cmapss-{name.lower()}"


Trained = tuple["CmapssSubset", "RulModel", Callable[[], dict[str, Any]]]


def _cmapss(folder: Path, subset: str, settings: tuple[str, ...], threads: int) -> Trained:
    model = _new_model(settings, threads)
    test_present = (folder / f"test_{subset}.txt").is_file() and (folder / f"RUL_{subset}.txt").is_file()
    data = _load(folder, subset, with_test=test_present)
    return data, model, lambda: describe_cmapss(folder, data)


def _simulated(units: int, profile: str, seed: int, settings: tuple[str, ...], threads: int) -> Trained:
    scale = PROFILES[profile]
    try:
        model = RulModel(plant_config(scale, **_overrides(settings)), threads=threads or None)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc
    data = _run(lambda: bearing_subset(units, seed=seed, profile=scale))
    return data, model, lambda: describe_simulated(data, seed=seed, profile=scale, units=units)


@maintenance.command("models")
@click.option("--kind", default=None, help="Only this kind.")
@_JSON
def models_command(kind: str | None, as_json: bool) -> None:
    """List the registered model versions; the live one of each kind is marked."""
    infos = _database(lambda conn: list_models(conn, kind))
    if as_json:
        click.echo(json.dumps({"models": [
            {"version": i.version, "kind": i.kind, "trained_at": i.trained_at.isoformat(), "live": i.live,
             "metrics": i.metrics, "training_data": i.training_data} for i in infos]}))  # fmt: skip
        return
    for i in infos:
        rmse = i.metrics.get("rmse", "-")
        mark = "*" if i.live else " "
        click.echo(f"{mark} {i.version:5d}  {i.kind:24s} {i.trained_at:%Y-%m-%d %H:%M}  rmse {rmse}")
    if not infos:
        click.echo("no models registered", err=True)


@maintenance.command("promote")
@click.argument("version", type=int)
def promote_command(version: int) -> None:
    """Make VERSION the live model of its kind."""
    kind = _database(lambda conn: promote(conn, version))
    click.echo(f"{kind}: version {version} is live")


@maintenance.command("rollback")
@click.option("--kind", required=True, help="The kind whose live model is rolled back.")
def rollback_command(kind: str) -> None:
    """Retire the live model of KIND; the one promoted before it becomes live again."""
    version = _database(lambda conn: rollback(conn, kind))
    click.echo(f"{kind}: rolled back, version {version} is live")


@maintenance.command("score")
@click.option("--kind", required=True, help="Score with the live model of this kind (a plant model).")
@click.option("--assets", default="%", show_default=True, help="SQL LIKE pattern of the assets to score.")
@click.option("--cycle-seconds", type=click.IntRange(min=1), default=3600, show_default=True,
              help="One model cycle of telemetry (as the model was trained).")  # fmt: skip
@click.option("--lookback", type=click.IntRange(min=2), default=48, show_default=True,
              help="Complete cycles of history read per asset.")  # fmt: skip
@_JSON
def score_command(kind: str, assets: str, cycle_seconds: int, lookback: int, as_json: bool) -> None:
    """Score assets once from recent telemetry into maintenance.asset_health."""
    config = ScoringConfig(kind=kind, assets=assets, cycle_seconds=cycle_seconds, lookback_cycles=lookback)
    results = _database(lambda conn: score_live(conn, config))
    if as_json:
        click.echo(json.dumps({"assets": [dataclasses.asdict(r) for r in results]}, default=str))
        return
    for r in results:
        when = f"{r.time:%Y-%m-%d %H:%M}"
        click.echo(f"{r.asset:24s} RUL {r.rul:8.1f}  P(fail) {r.failure_prob:.3f}  model {r.model_version}  {when}")
    if not results:
        click.echo("no asset had enough recent telemetry to score", err=True)
