"""The production forecast: its backtest against the seasonal-naive forecast, the order outlook
and the maintenance window on hand-worked cases, and a line's forecast read from the database."""

from __future__ import annotations

import json
import math
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from test_analytics_oee import write

from analytics.cli import analytics
from analytics.errors import TooLittleDataError
from analytics.forecast import Forecast, HourlySeries, forecast, seasonal_naive
from analytics.forecast_db import forecast_line, line_history, order_outlooks
from analytics.forecast_eval import backtest
from analytics.forecast_job import BASIS, ForecastJob, stored_forecast
from analytics.jobs import JOBS, Services, production_forecast
from analytics.oee import ForecastJobConfig, LineConfig, OeeConfig
from analytics.outlook import lowest_loss_window, order_outlook, planned_end
from analytics.scheduler import JobContext
from simulator.production import hourly_production

Conn = psycopg.AsyncConnection[tuple[object, ...]]
H = 3600.0
T0 = 1_900_000_800.0  # a whole hour


def test_the_backtest_beats_seasonal_naive_with_a_calibrated_interval() -> None:
    report = backtest(weeks=5, seed=2, horizon_h=24, step_h=7)
    assert report.origins == 45  # every 7 h of the last two weeks, with a day ahead left
    assert report.mase < 1.0
    assert report.mase < report.mase_naive
    assert report.relative_mae < 1.0
    assert 0.7 <= report.coverage <= 0.9
    assert 0.7 <= report.cum_coverage <= 0.95


def test_the_backtest_is_reproducible_and_depends_on_the_seed() -> None:
    one, again, other = (backtest(weeks=4, seed=s, step_h=24) for s in (5, 5, 6))
    assert one.as_dict() == again.as_dict()
    assert one.mae != other.mae


def hand_forecast(expected: list[float], lower: list[float], upper: list[float]) -> Forecast:
    def cum(values: list[float]) -> tuple[float, ...]:
        return tuple(sum(values[: k + 1]) for k in range(len(values)))

    times = tuple(T0 + k * H for k in range(len(expected)))
    return Forecast(times, tuple(expected), tuple(lower), tuple(upper), cum(expected), cum(lower), cum(upper),
                    tuple(expected), 0.8)  # fmt: skip


STEADY = hand_forecast([100.0] * 6, [80.0] * 6, [120.0] * 6)


def test_an_order_at_risk_finishes_when_the_cumulative_output_reaches_its_remainder() -> None:
    outlook = order_outlook(STEADY, remaining=250.0, due=T0 + 3 * H)
    assert outlook.expected_finish == pytest.approx(T0 + 2.5 * H)
    assert outlook.earliest_finish == pytest.approx(T0 + 2 * H + 10 / 120 * H)  # 240 after 2 h at 120 /h
    assert outlook.latest_finish == pytest.approx(T0 + 3 * H + 10 / 80 * H)  # 240 after 3 h at 80 /h
    assert outlook.verdict == "at_risk"
    # At the due time: 300 expected, 240..360 the 80 % interval (sigma 120 / 2.563)
    sigma = 120 / (2 * 1.2815516)
    assert outlook.on_time_probability == pytest.approx(0.5 * (1 + math.erf(50 / sigma / math.sqrt(2))), abs=1e-4)


def test_on_time_late_done_and_queued_orders() -> None:
    on_time = order_outlook(STEADY, remaining=150.0, due=T0 + 3 * H)
    assert on_time.verdict == "on_time"
    assert on_time.latest_finish == pytest.approx(T0 + H + 70 / 80 * H)
    late = order_outlook(STEADY, remaining=500.0, due=T0 + 3 * H)
    assert late.verdict == "late"
    assert late.on_time_probability < 0.01
    assert late.expected_finish == pytest.approx(T0 + 5 * H)
    beyond = order_outlook(STEADY, remaining=1000.0, due=T0 + 10 * H)
    assert (beyond.expected_finish, beyond.verdict) == (None, "at_risk")  # the horizon ends first
    assert order_outlook(STEADY, remaining=0.0, due=T0).verdict == "done"
    queued = order_outlook(STEADY, remaining=150.0, due=T0 + 3 * H, queued=100.0)
    assert queued.expected_finish == pytest.approx(T0 + 2.5 * H)
    assert planned_end(T0, planned=480.0, ideal_rate=240.0) == T0 + 2 * H


def test_the_lowest_loss_window_ends_before_the_deadline() -> None:
    expected = [100.0, 100.0, 20.0, 10.0, 100.0, 0.0, 0.0, 100.0]
    fc = hand_forecast(expected, [0.8 * e for e in expected], [1.2 * e for e in expected])
    window = lowest_loss_window(fc, 2, before=T0 + 5 * H)
    assert window is not None
    assert (window.start, window.end, window.expected_loss) == (T0 + 2 * H, T0 + 4 * H, 30.0)
    assert window.upper_loss == pytest.approx(36.0)
    later = lowest_loss_window(fc, 2, before=T0 + 8 * H)
    assert later is not None
    assert (later.start, later.expected_loss) == (T0 + 5 * H, 0.0)
    assert lowest_loss_window(fc, 2, before=T0 + H) is None
    with pytest.raises(ValueError, match="duration_h"):
        lowest_loss_window(fc, 0, before=T0 + 8 * H)


def test_a_short_history_is_refused_and_the_naive_forecast_is_last_week() -> None:
    sim = hourly_production(weeks=3, seed=2)
    history = HourlySeries(sim.start, sim.produced, sim.state, sim.down_s)
    assert list(seasonal_naive(history, 3)) == list(sim.produced[-168:-165])
    with pytest.raises(TooLittleDataError):
        forecast(HourlySeries(sim.start, sim.produced[:300]), 24)


def test_a_forecast_made_in_a_breakdown_spans_both_a_repair_over_and_one_not() -> None:
    """In a fault, the next hours make either about the profile (repaired) or nothing (not yet):
    the interval, calibrated on the history's own faults (53 fault hours in these 5 weeks),
    reaches from zero to near the profile. Calibrated on running hours, even widened, its
    upper bound stayed near half the profile in the second hour."""
    sim = hourly_production(weeks=5, seed=4)
    faults = [i for i, (s, d) in enumerate(zip(sim.state, sim.down_s, strict=True)) if s == 2 and d >= 600]
    origin = faults[-1] + 1  # the last hour of a breakdown is behind it
    fc = forecast(HourlySeries(sim.start, sim.produced[:origin], sim.state[:origin], sim.down_s[:origin]), 24)
    assert fc.lower[:3] == (0.0, 0.0, 0.0)
    assert fc.upper[1] >= 0.75 * fc.baseline[1]
    assert fc.upper[2] >= 0.9 * fc.baseline[2]
    assert fc.expected[0] < 0.5 * fc.baseline[0]  # the point forecast still expects the fault to go on


DAYS = 16
FAULT_H = 3.5  # the line has been in fault this long at the forecast origin


def line_data(start: float) -> tuple[list[float], dict[str, list[tuple[float, float]]], HourlySeries]:
    """Simulated hourly output written as a counter sampled every 10 minutes (with one reset),
    a fault open for the last 3.5 hours; and the same history as the pure function gets it."""
    hours = DAYS * 24
    produced = list(hourly_production(weeks=DAYS / 7, seed=4).produced[:hours])
    fault_at = start + (hours - FAULT_H) * H
    for h in range(hours):
        share = max(0.0, min(1.0, (fault_at - (start + h * H)) / H))
        produced[h] = float(math.floor(produced[h] * share))  # a flat counter during the fault
    counter: list[tuple[float, float]] = []
    total, reset_at = 5_000.0, start + 100 * H + 1200
    for h in range(hours):
        for k in range(6):
            at = start + h * H + k * 600
            counter.append((at, total + produced[h] * k / 6))
        total += produced[h]
    counter.append((start + hours * H, total))
    # Cleared to 0 just after the sample before reset_at: from then on it reads what it counted since.
    before = max(v for t, v in counter if t < reset_at)
    counter = [(t, v - before if t >= reset_at else v) for t, v in counter]
    states = [(start, 1.0), (start + 50 * H + 600, 0.0), (start + 50 * H + 1500, 1.0), (fault_at, 2.0)]
    state = tuple(2 if start + (h + 1) * H > fault_at else 1 for h in range(hours))
    down = tuple(max(0.0, start + (h + 1) * H - fault_at) for h in range(hours))
    series = HourlySeries(start, tuple(produced), state, down)
    return produced, {"mill9.cane": counter, "mill9.state": states}, series


async def test_forecast_line_reads_the_counter_like_oee_and_matches_the_pure_forecast(db: Conn, site: str) -> None:
    start = T0
    produced, samples, series = line_data(start)
    await write(db, site, samples)
    line = LineConfig(name="mill9", state_tag="mill9.state", count_tag="mill9.cane", ideal_rate=240.0)
    end = start + DAYS * 24 * H
    history = await line_history(db, site, line, start, end)
    assert history.values == pytest.approx(produced)
    assert (history.state, history.down_s) == (series.state, series.down_s)
    from_db = await forecast_line(db, site, line, 24, now=end + 900, history_days=DAYS)
    pure = forecast(series, 24)
    assert from_db == pure
    assert from_db.times[0] == end
    assert from_db.expected[0] < pure.baseline[0]  # the open fault pulls the next hour down
    with pytest.raises(TooLittleDataError):
        await forecast_line(db, site, line, 24, now=end + 3 * H, history_days=DAYS)  # no data since `end`


def test_the_forecast_eval_command_prints_json_and_writes_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "window.png"
    result = CliRunner().invoke(analytics, ["forecast-eval", "--weeks", "4", "--seed", "2", "--json", "--plot",
                                            str(plot)])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["weeks"], out["origins"], out["hours"]) == (4, 21, 21 * 24)
    assert 0 < out["mase"] < out["mase_naive"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_an_order_in_progress_is_judged_against_the_lines_forecast(db: Conn, site: str) -> None:
    """The ERP's order (written with SQL: this reads the ERP's tables, it does not change them)
    is due at its planned end: started 10 h before the origin, 3000 t at 240 t/h, 800 t made."""
    _, samples, series = line_data(T0)
    await write(db, site, samples)
    line = LineConfig(name=f"line-{site}", state_tag="mill9.state", count_tag="mill9.cane", ideal_rate=100.0)
    end = T0 + DAYS * 24 * H
    cur = await db.execute("INSERT INTO erp.warehouse (code, name) VALUES (%s, 'w') RETURNING id", (site,))
    warehouse = (await cur.fetchone() or [0])[0]
    cur = await db.execute("""INSERT INTO erp.product (sku, name, uom, price, tax_rate, ideal_rate)
                              VALUES (%s, 'cane', 't', 1, 0, 240) RETURNING id""", (site,))  # fmt: skip
    product = (await cur.fetchone() or [0])[0]
    await db.execute(
        """INSERT INTO erp.work_order (kind, status, asset, warehouse_id, product_id, planned_quantity,
                                       produced_quantity, created_by, started_at)
           VALUES ('production', 'in_progress', %s, %s, %s, 3000, 800, 'test', to_timestamp(%s))""",
        (line.name, warehouse, product, end - 10 * H),
    )
    [(order, outlook)] = await order_outlooks(db, site, line, now=end + 900, horizon_h=24, history_days=DAYS)
    assert order > 0
    assert outlook.due == end - 10 * H + 3000 / 240 * H  # the product's rate, not the line's 100 t/h
    assert outlook == order_outlook(forecast(series, 24), 2200.0, outlook.due)
    assert outlook.verdict == "late"  # in a breakdown, 2200 t in 2.5 h is out of reach


async def stored_rows(db: Conn, site: str) -> list[tuple[object, ...]]:
    cur = await db.execute(
        """SELECT line, extract(epoch FROM made_at)::float8, extract(epoch FROM hour)::float8, hours_ahead, expected,
                  lower, upper, cum_expected, cum_lower, cum_upper, baseline, level, basis, history_hours
             FROM analytics.production_forecast WHERE site = %s ORDER BY line, made_at, hour""",
        (site,),
    )
    return await cur.fetchall()


async def test_the_forecast_job_stores_the_pure_forecast_once_per_hour_and_skips_short_histories(
    db: Conn, site: str
) -> None:
    """mill9 has 16 days of counter history, mill8 only 5: mill9 is stored, mill8 is skipped
    with the reason, and a second run in the same hour replaces the first one's rows."""
    _, samples, series = line_data(T0)
    short_start = T0 + (DAYS - 5) * 24 * H
    short = [(t, v) for t, v in samples["mill9.cane"] if t >= short_start]
    await write(db, site, {**samples, "mill8.cane": short})
    end = T0 + DAYS * 24 * H
    lines = [
        LineConfig(name="mill9", site=site, state_tag="mill9.state", count_tag="mill9.cane", ideal_rate=240.0),
        LineConfig(name="mill8", site=site, state_tag="mill8.state", count_tag="mill8.cane", ideal_rate=240.0),
        LineConfig(name="mill7", site=site, state_tag="mill7.state", count_tag="mill7.cane", ideal_rate=240.0),
    ]
    config = OeeConfig(lines=lines, forecast=ForecastJobConfig(horizon_h=12, history_days=DAYS))
    job = ForecastJob(config, clock=lambda: end + 900)
    summary = await job.run(db)
    assert (summary.forecasts, summary.rows) == (1, 12)
    assert "needs 336 hours of history" in summary.skipped[f"{site}/mill8"]
    assert summary.skipped["mill7"] == "no site has its counter mill7.cane"
    pure = forecast(series, 12)
    rows = await stored_rows(db, site)
    assert [r[0] for r in rows] == ["mill9"] * 12
    assert {r[1] for r in rows} == {end}
    assert [r[2] for r in rows] == list(pure.times)
    assert [r[3] for r in rows] == list(range(1, 13))
    columns = (pure.expected, pure.lower, pure.upper, pure.cum_expected, pure.cum_lower, pure.cum_upper, pure.baseline)
    assert [tuple(r[4:11]) for r in rows] == list(zip(*columns, strict=True))
    assert {(r[11], r[12], r[13]) for r in rows} == {(0.8, BASIS, DAYS * 24)}
    assert await stored_forecast(db, site, "mill9", made_after=end) == pure
    assert await stored_forecast(db, site, "mill9", made_after=end + H) is None  # stale for the next hour

    await db.execute(
        "UPDATE analytics.production_forecast SET expected = lower, basis = 'old' WHERE site = %s", (site,)
    )
    again = await ForecastJob(config, clock=lambda: end + 2000).run(db)  # later in the same hour
    assert (again.forecasts, again.rows) == (1, 12)
    assert await stored_rows(db, site) == rows  # replaced, not added to


async def test_the_forecast_job_deletes_forecasts_past_their_keep_days(db: Conn, site: str) -> None:
    _, samples, _ = line_data(T0)
    await write(db, site, samples)
    end = T0 + DAYS * 24 * H
    line = LineConfig(name="mill9", site=site, state_tag="mill9.state", count_tag="mill9.cane", ideal_rate=240.0)
    config = OeeConfig(lines=[line], forecast=ForecastJobConfig(horizon_h=3, history_days=DAYS, keep_days=1))
    await ForecastJob(config, clock=lambda: end + 900).run(db)
    await db.execute(
        """UPDATE analytics.production_forecast SET made_at = made_at - interval '25 hours',
                  hour = hour - interval '25 hours' WHERE site = %s""",
        (site,),
    )
    summary = await ForecastJob(config, clock=lambda: end + 900).run(db)
    assert summary.deleted >= 3  # the old forecast's rows (and any other test's as old)
    rows = await stored_rows(db, site)
    assert {r[1] for r in rows} == {end}
    assert len(rows) == 3


async def test_the_production_forecast_job_is_registered_and_skips_lines_without_data(
    database_url: str, site: str
) -> None:
    (spec,) = [spec for spec in JOBS if spec.name == "production-forecast"]
    assert (spec.run, spec.every_s) == (production_forecast, 900.0)
    line = LineConfig(name="mill9", site=site, state_tag="mill9.state", count_tag="mill9.cane", ideal_rate=240.0)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        ctx = JobContext(conn, database_url, Services(oee=OeeConfig(lines=[line])))
        result = await production_forecast(ctx)
    assert result == {"forecasts": 0, "rows": 0, "skipped": {"mill9": "no site has its counter mill9.cane"},
                      "deleted": result["deleted"]}  # fmt: skip
