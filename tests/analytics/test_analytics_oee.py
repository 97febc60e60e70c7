"""OEE against the real database, with expected values worked out by hand.

The shift: 06:00-14:00 UTC with a planned break 10:00-10:30, so 450 planned minutes.
Unplanned stops: stopped 07:00-07:30 (30 min), fault 09:00-09:14 (14 min) and a one-minute
microstop at 11:00: 45 minutes. The machine also stands still through the break, which is
no loss. Run time 405 min (6.75 h): availability 405 / 450 = 0.9. Ideal rate 100 units/h;
540 units made: performance 540 / (100 x 6.75) = 0.8. 27 rejects: quality 513 / 540 = 0.95.
OEE 0.9 x 0.8 x 0.95 = 0.684.
"""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from analytics.jobs import JOBS, Services, oee
from analytics.live import LiveConfig
from analytics.oee import (
    LineConfig,
    OeeConfig,
    OeeJob,
    PlannedBreak,
    Shift,
    ShiftCalendar,
    load_oee_config,
    shifts_between,
)
from analytics.scheduler import JobContext
from factory.configfile import ConfigError
from factory.settings import Settings
from factory.wire import TagInfo
from ingest.store import Samples, TelemetryStore

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[tuple[object, ...]]
S = datetime(2031, 1, 15, 6, tzinfo=UTC).timestamp()  # the shift's start, a day of its own
MIN = 60.0
STOPS = [(60, 90, 0), (180, 194, 2), (240, 270, 0), (300, 301, 0)]  # (from, to) minutes after S, state
PER_MINUTE = 540 / 405  # units per running minute


def state_at(minute: int) -> int:
    return next((state for a, b, state in STOPS if a <= minute < b), 1)


def line_samples() -> dict[str, list[tuple[float, float]]]:
    """Per-minute state and counter samples from a minute before the shift to its end."""
    states = (
        [(S - MIN, 1.0)] + [(S + a * MIN, float(s)) for a, _, s in STOPS] + [(S + b * MIN, 1.0) for _, b, _ in STOPS]
    )
    made, count = 0.0, [(S - MIN, 1000.0)]
    for minute in range(480):
        made += PER_MINUTE if state_at(minute) == 1 else 0.0
        offset = 1000.0 if minute < 359 else -made_at(358)  # the counter is reset to zero at 12:00
        count.append((S + (minute + 1) * MIN, made + offset))
    rejects = [(S - MIN, 5.0), (S + 120 * MIN, 15.0), (S + 360 * MIN, 32.0)]
    return {"press1.state": sorted(states), "press1.count": count, "press1.rejects": rejects}


def made_at(minute: int) -> float:
    return PER_MINUTE * sum(1 for m in range(minute + 1) if state_at(m) == 1)


async def write(db: Conn, site: str, series: dict[str, list[tuple[float, float]]]) -> None:
    async with db.transaction():
        store = TelemetryStore(db)
        device = await store.device_id(site, "plc1")
        await store.register_tags(device, [TagInfo(name, "test", "number") for name in series])
        ids = await store.tag_ids(device, series)
        samples = Samples()
        for name, points in series.items():
            n = len(points)
            samples.extend([ids[name]] * n, [round(t * 1000) for t, _ in points], [v for _, v in points], [0] * n)
        await store.write_samples(samples)


def config(site: str) -> OeeConfig:
    line = LineConfig(
        name="press1", site=site, state_tag="press1.state", count_tag="press1.count",
        reject_tag="press1.rejects", ideal_rate=100,
    )  # fmt: skip
    shift = Shift(name="A", start=clock_time(6), hours=8, breaks=[PlannedBreak(start=clock_time(10), minutes=30)])
    return OeeConfig(lines=[line], calendar=ShiftCalendar(shifts=[shift]), microstop_s=120, previous_shifts=0)


async def oee_rows(db: Conn, site: str, period: str) -> list[tuple[float, ...]]:
    cur = await db.execute(
        """SELECT (extract(epoch FROM bucket) - %s) / 60, availability, performance, quality, oee, planned_s, run_s,
                  total_count, good_count FROM analytics.oee WHERE site = %s AND period = %s ORDER BY bucket""",
        (S, site, period),
    )
    return [tuple(float(str(v)) if v is not None else float("nan") for v in row) for row in await cur.fetchall()]


async def losses(db: Conn, site: str, period: str, minute: int) -> list[tuple[object, ...]]:
    cur = await db.execute(
        """SELECT reason, stops, seconds FROM analytics.oee_loss
           WHERE site = %s AND period = %s AND bucket = to_timestamp(%s) ORDER BY seconds DESC""",
        (site, period, S + minute * MIN),
    )
    return await cur.fetchall()


async def test_a_finished_shift_gives_the_hand_computed_oee(db: Conn, site: str) -> None:
    await write(db, site, line_samples())
    summary = await OeeJob(config(site), clock=lambda: S + 8 * 3600 + 600).run(db)
    assert (summary.lines, summary.rows) == (1, 9)  # the shift and its eight hours

    ((start, a, p, q, oee, planned, run, total, good),) = await oee_rows(db, site, "shift")
    assert start == 0
    assert (planned, run) == (27000, 24300)
    assert total == pytest.approx(540)
    assert good == pytest.approx(513)
    assert a == pytest.approx(0.9)
    assert p == pytest.approx(0.8)
    assert q == pytest.approx(0.95)
    assert oee == pytest.approx(0.684)
    # The Pareto: the break's standstill is planned, not a loss; the 1-minute stop is a microstop.
    assert await losses(db, site, "shift", 0) == [("stopped", 1, 1800.0), ("fault", 1, 840.0), ("microstop", 1, 60.0)]

    hours = {int(row[0]): row for row in await oee_rows(db, site, "hour")}
    assert sorted(hours) == [0, 60, 120, 180, 240, 300, 360, 420]
    _, a, p, _, _, planned, run, total, _ = hours[60]  # 07:00-08:00: stopped for half of it
    assert (planned, run, a) == (3600, 1800, 0.5)
    assert total == pytest.approx(40)
    assert p == pytest.approx(0.8)
    _, a, _, _, _, planned, run, _, _ = hours[240]  # 10:00-11:00: half of it is the break
    assert (planned, run, a) == (1800, 1800, 1.0)
    assert hours[300][1] == pytest.approx(3540 / 3600)
    assert await losses(db, site, "hour", 300) == [("microstop", 1, 60.0)]
    assert sum(h[7] for h in hours.values()) == pytest.approx(540)  # hours partition the shift's count


async def test_the_shift_in_progress_counts_up_to_now_then_is_rewritten(db: Conn, site: str) -> None:
    await write(db, site, line_samples())
    clock = [S + 150 * MIN]  # 08:30
    job = OeeJob(config(site), clock=lambda: clock[0])
    await job.run(db)
    ((_, a, p, _, _, planned, run, total, _),) = await oee_rows(db, site, "shift")
    assert (planned, run, a) == (9000, 7200, 0.8)  # 150 planned minutes, 30 of them stopped
    assert total == pytest.approx(120 * PER_MINUTE)
    assert p == pytest.approx(0.8)
    hours = await oee_rows(db, site, "hour")
    assert [(h[0], h[5]) for h in hours] == [(0, 3600), (60, 3600), (120, 1800)]

    clock[0] = S + 8 * 3600 + 60
    await job.run(db)
    shift_rows = await oee_rows(db, site, "shift")
    assert len(shift_rows) == 1
    assert shift_rows[0][4] == pytest.approx(0.684)
    assert len(await oee_rows(db, site, "hour")) == 8
    assert await losses(db, site, "hour", 120) == []  # 08:00-09:00 ran throughout
    assert [r[0] for r in await losses(db, site, "shift", 0)] == ["stopped", "fault", "microstop"]


async def test_no_state_data_is_a_no_data_loss_and_quality_defaults_to_all_good(db: Conn, site: str) -> None:
    series = {
        "press2.state": [(S + 30 * MIN, 1.0)],  # the first state sample comes 30 minutes in
        "press2.count": [(S, 0.0), (S + 90 * MIN, 60.0)],
    }
    await write(db, site, series)
    line = LineConfig(name="press2", site=site, state_tag="press2.state", count_tag="press2.count", ideal_rate=60)
    cfg = config(site).model_copy(update={"lines": [line]})
    await OeeJob(cfg, clock=lambda: S + 90 * MIN).run(db)
    ((_, a, p, q, oee, planned, run, total, good),) = await oee_rows(db, site, "shift")
    assert (planned, run) == (5400, 3600)
    assert (total, good, q) == (60, 60, 1.0)
    assert a == pytest.approx(2 / 3)
    assert p == pytest.approx(1.0)  # 60 units in one running hour at 60 units/h
    assert oee == pytest.approx(2 / 3)
    assert await losses(db, site, "shift", 0) == [("no_data", 1, 1800.0)]


def test_a_night_shift_crosses_midnight_with_its_break() -> None:
    night = Shift(name="C", start=clock_time(22), hours=8, breaks=[PlannedBreak(start=clock_time(2), minutes=30)])
    calendar = ShiftCalendar(timezone="Europe/Berlin", shifts=[night])
    start = datetime(2031, 1, 15, 21, tzinfo=UTC).timestamp()  # 22:00 in Berlin (UTC+1 in winter)
    (window,) = shifts_between(calendar, start + 60, start + 120)
    assert (window.name, window.start, window.end) == ("C", start, start + 8 * 3600)
    assert window.breaks == ((start + 4 * 3600, start + 4.5 * 3600),)


def test_config_rejects_unknown_keys_and_breaks_outside_the_shift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="ends after shift"):
        Shift(name="A", start=clock_time(6), hours=8, breaks=[PlannedBreak(start=clock_time(13, 45), minutes=30)])
    with pytest.raises(ValidationError, match="not both"):
        LineConfig(
            name="x", state_tag="x.state", count_tag="x.count", good_tag="x.good", reject_tag="x.bad", ideal_rate=1
        )
    path = tmp_path / "oee.yaml"
    path.write_text(
        "lines:\n  - {name: mill1, state_tag: mill1.state, count_tag: mill1.cane_crushed, ideal_rate: 250}\n"
    )
    monkeypatch.setenv("FACTORY_OEE_CONFIG", str(path))
    loaded = Services.from_settings(Settings(), LiveConfig()).oee  # what `factory analytics run` does
    assert [(line.name, line.ideal_rate) for line in loaded.lines] == [("mill1", 250)]
    assert [s.name for s in loaded.calendar.shifts] == ["A", "B", "C"]
    path.write_text("lines: []\nmicrostops: 5\n")
    with pytest.raises(ConfigError, match="microstops"):
        load_oee_config(path)


async def test_the_registered_job_runs_the_configured_lines(db: Conn, site: str, database_url: str) -> None:
    assert [spec.run for spec in JOBS if spec.name == "oee"] == [oee]
    await write(db, site, {"press1.state": [(S, 1.0)], "press1.count": [(S, 0.0)], "press1.rejects": [(S, 0.0)]})
    result = await oee(JobContext(conn=db, database_url=database_url, services=Services(oee=config(site))))
    assert result["lines"] == 1
    assert result["rows"] >= 2  # the latest shift to have started, and at least one of its hours
    cur = await db.execute("SELECT availability, oee FROM analytics.oee WHERE site = %s AND period = 'shift'", (site,))
    assert await cur.fetchall() == [(0.0, 0.0)]  # its samples lie in 2031: nothing known about this shift
    cur = await db.execute("SELECT DISTINCT reason FROM analytics.oee_loss WHERE site = %s", (site,))
    assert await cur.fetchall() == [("no_data",)]
