"""``factory analytics ...``: evaluate the detector, run the scheduler."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from tqdm import tqdm

from analytics.detector import DetectorConfig
from analytics.errors import AnalyticsError
from analytics.events import OUTBOX_DAYS
from analytics.jobs import Services
from analytics.live import LiveConfig
from analytics.report import as_dict, as_text
from analytics.service import run_analytics
from analytics.skab import evaluate, find_files
from factory.configfile import ConfigError, load_yaml_model
from factory.runtime import Listen, fail, given, run_service
from factory.settings import current

__all__ = ["analytics"]


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs for the detector settings; values are JSON (numbers) or text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@click.group()
def analytics() -> None:
    """Anomaly detection and the analytics scheduler."""


@analytics.command("eval")
@click.option("--skab", "folder", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A folder in SKAB's format (searched recursively for *.csv).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Change one detector setting for every file (for ablations), e.g. --set smoothing=1.")  # fmt: skip
def eval_command(folder: Path, as_json: bool, settings: tuple[str, ...]) -> None:
    """Evaluate the anomaly detector with SKAB's protocol (first 400 rows of each file train)."""
    try:
        config = DetectorConfig(**_overrides(settings))
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc
    try:
        paths = find_files(folder)
        with tqdm(total=len(paths), desc="SKAB files", unit="file", file=sys.stderr, disable=None) as bar:
            report = evaluate(folder, config, paths, progress=lambda _name: bar.update())
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(as_dict(report, config)))
    else:
        click.echo(as_text(report))


@analytics.command("validate")
@click.option("--skab", "folder", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A SKAB-format folder: labelled files, and anomaly-free.csv cut into normal series.")  # fmt: skip
@click.option("--folds", type=click.IntRange(min=2), default=4, show_default=True, help="Folds of files.")
@click.option("--max-mar", type=click.FloatRange(0, 100), default=25.0, show_default=True,
              help="Largest missed-alarm rate (percent) a candidate may have on the training folds.")  # fmt: skip
@click.option("--test-rows", type=click.IntRange(min=50), default=750, show_default=True,
              help="Test rows of each series cut from an unlabelled file (after its 400 training rows).")  # fmt: skip
@click.option("--plant/--no-plant", default=True, show_default=True,
              help="Gate candidates on the simulated plant (no false alarm, faults within a minute).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def validate_command(*, folder: Path, folds: int, max_mar: float, test_rows: int, plant: bool, as_json: bool) -> None:
    """Choose the detector's settings by cross-validation over files (see docs/analytics.md)."""
    from analytics import validate  # noqa: PLC0415  (only this command needs it)
    from analytics.plantcheck import simulate  # noqa: PLC0415

    try:
        series = validate.load_series(folder, folds, test_rows)
        configs = validate.candidates()
        runs = simulate() if plant else None
        with tqdm(total=len(configs), desc="candidates", unit="setting", file=sys.stderr, disable=None) as bar:
            report = validate.validate(series, configs, folds=folds, max_mar=max_mar, plant=runs, progress=bar.update)
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(validate.as_dict(report)) if as_json else validate.as_text(report))


@analytics.command("forecast-eval")
@click.option("--weeks", type=click.IntRange(min=4), default=8, show_default=True,
              help="Weeks of simulated hourly production; the first three are warm-up.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated history.")
@click.option("--line", type=click.Choice(["mill1", "mill2"]), default="mill1", show_default=True)
@click.option("--horizon", "horizon_h", type=click.IntRange(1, 168), default=24, show_default=True,
              help="Hours ahead from each origin.")  # fmt: skip
@click.option("--step", "step_h", type=click.IntRange(1, 168), default=7, show_default=True,
              help="Hours between origins (1: every hour, seven times the cases and the time).")  # fmt: skip
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a PNG of one backtest window (actual, forecast, interval, seasonal naive).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def forecast_eval_command(*, weeks: int, seed: int, line: str, horizon_h: int, step_h: int,
                          plot_path: Path | None, as_json: bool) -> None:  # fmt: skip
    """Rolling-origin backtest of the production forecast against the seasonal-naive one."""
    from analytics.forecast_eval import backtest, plot_window  # noqa: PLC0415  (numpy: only for this command)

    with tqdm(desc="forecast origins", unit="origin", file=sys.stderr, disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = backtest(weeks=weeks, seed=seed, line=line, horizon_h=horizon_h, step_h=step_h, progress=progress)
    out = report.as_dict()
    if plot_path is not None:
        window = plot_window(report, plot_path)
        out["plot"] = {"path": str(plot_path), "origin": window.origin}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(report.as_text())
        if plot_path is not None:
            click.echo(f"  plot: {plot_path}")


@analytics.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="YAML with the anomaly job's settings (see docs/analytics.md); defaults otherwise.")  # fmt: skip
@click.option("--site", default=None, help="Only this site's assets (overrides the config file).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where /healthz and /metrics listen.")
@click.option("--port", type=int, default=9108, show_default=True, help="Port of /healthz and /metrics (0: any).")
@click.option("--seconds", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--outbox-days", type=click.IntRange(min=1), default=OUTBOX_DAYS, show_default=True,
              help="Published anomaly events are deleted from analytics.outbox after this many days.")  # fmt: skip
def run_command(*, config_path: Path | None, site: str | None, host: str, port: int, seconds: float | None,
                outbox_days: int) -> None:  # fmt: skip
    """Run the scheduled analytics jobs (anomaly scoring, rollups, ...) until stopped."""
    settings = current()
    try:
        live = load_yaml_model(config_path, LiveConfig) if config_path else LiveConfig()
        services = Services.from_settings(settings, live if site is None else live.model_copy(update={"site": site}))
    except ConfigError as exc:
        fail(exc.report())
    services.outbox_days = outbox_days
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))  # a line per run

    def listening(bound: int) -> None:
        click.echo(f"analytics: /healthz and /metrics on http://{host}:{bound}", err=True)

    http = Listen(host, port, option="--port", fallback=not given("port"))
    run_service(run_analytics(settings.database(), settings.events(), services, http=http, on_listening=listening),
                seconds)  # fmt: skip
