"""Dashboards as code: the exported JSON and provisioning files, macro expansion, and every
panel query run against the real test database (Grafana itself cannot run here)."""

from __future__ import annotations

import configparser
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from dashboards import DASHBOARDS, Dashboard, MacroError, Panel, TimeRange, check_dashboards, expand
from dashboards.check import panel_range
from dashboards.cli import dashboards

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_export_writes_valid_dashboards_and_provisioning(tmp_path: Path) -> None:
    result = CliRunner().invoke(dashboards, ["export", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    files = [Path(p) for p in json.loads(result.output)["files"]]
    boards = [json.loads(p.read_text()) for p in files if p.suffix == ".json"]
    assert {b["title"] for b in boards} == {
        "Plant overview",
        "Asset detail",
        "Maintenance",
        "Production and ERP",
        "Platform health",
    }
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids)
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            (target,) = panel["targets"]
            assert target["rawQuery"] is True
            assert target["rawSql"].startswith("SELECT")
            assert target["datasource"]["uid"] == "factory-pg"
    asset = next(b for b in boards if b["uid"] == "factory-asset")
    assert [v["name"] for v in asset["templating"]["list"]] == ["asset"]
    assert any(a["name"] == "Anomaly episodes" for a in asset["annotations"]["list"])

    providers = yaml.safe_load((tmp_path / "provisioning" / "dashboards" / "factory.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].endswith("/factory")
    sources = yaml.safe_load((tmp_path / "provisioning" / "datasources" / "factory.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["uid"] == "factory-pg"
    assert source["user"] == "grafana"
    assert source["secureJsonData"]["password"].startswith("$")  # from the environment, never in the file


def test_live_dashboards_refresh_at_the_minimum_grafana_is_told_to_allow(tmp_path: Path) -> None:
    result = CliRunner().invoke(dashboards, ["export", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    files = [Path(p) for p in json.loads(result.output)["files"]]
    boards = {b["uid"]: b for b in (json.loads(p.read_text()) for p in files if p.suffix == ".json")}
    ini = configparser.ConfigParser()
    ini.read_string((tmp_path / "grafana.ini").read_text())
    floor = ini["dashboards"]["min_refresh_interval"]
    assert floor == "2s"
    assert boards["factory-overview"]["refresh"] == floor
    assert boards["factory-erp"]["refresh"] == floor
    seconds = {"s": 1, "m": 60, "h": 3600}
    for board in boards.values():
        choices = board["timepicker"]["refresh_intervals"]
        assert board["refresh"] in choices  # Grafana shows no refresh it does not offer
        assert min(int(c[:-1]) * seconds[c[-1]] for c in choices) == 2  # none faster than the server allows
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml").read_text())
    assert compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_MIN_REFRESH_INTERVAL"] == floor


def test_macros_expand_as_grafana_does() -> None:
    rng = TimeRange(NOW - timedelta(hours=1), NOW, "5m", {"asset": "boiler'1"})
    sql = "SELECT $__timeGroupAlias(t, $__interval), x FROM s WHERE $__timeFilter(t) AND a = ${asset:sqlstring}"
    assert expand(sql, rng) == (
        'SELECT floor(extract(epoch from t)/300)*300 AS "time", x FROM s'
        " WHERE t BETWEEN '2026-05-01T11:00:00Z' AND '2026-05-01T12:00:00Z' AND a = 'boiler''1'"
    )
    assert expand("$__timeFrom() $__timeTo() $__timeGroup(t, '1d') $asset", rng) == (
        "'2026-05-01T11:00:00Z' '2026-05-01T12:00:00Z' floor(extract(epoch from t)/86400)*86400 boiler'1"
    )
    with pytest.raises(MacroError, match="unknown variable"):
        expand("SELECT $line", rng)
    with pytest.raises(MacroError, match="interval"):
        expand("SELECT $__timeGroup(t, 'soon')", rng)


def _seed(database_url: str, site: str, now: datetime) -> str:
    """A device with two tags, samples and rollups, a dead letter, an anomaly episode and a
    health score: what a few minutes of `factory demo` leaves behind."""
    asset = f"{site}_boiler"
    minute = now.replace(second=0, microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regprocedure('telemetry.ensure_sample_partition(date)')").fetchone()[0]:
            for day in {minute.date(), (minute - timedelta(minutes=5)).date()}:  # plain PostgreSQL partitions
                conn.execute("SELECT telemetry.ensure_sample_partition(%s)", (day,))
        device_id = conn.execute(
            "INSERT INTO telemetry.device (site, name, status, last_seen) VALUES (%s, 'pi', 'online', %s) RETURNING id",
            (site, now),
        ).fetchone()[0]
        tag_ids = [
            conn.execute(
                "INSERT INTO telemetry.tag (device_id, name, asset, unit) VALUES (%s, %s, %s, %s) RETURNING id",
                (device_id, f"{asset}.{name}", asset, unit),
            ).fetchone()[0]
            for name, unit in (("pressure", "bar"), ("level", "mm"))
        ]
        for tag_id in tag_ids:
            for i in range(5):
                at = minute - timedelta(minutes=i)
                conn.execute(
                    "INSERT INTO telemetry.sample (time, tag_id, value, quality) VALUES (%s, %s, %s, 0)",
                    (at, tag_id, 10.0 + i),
                )
                conn.execute(
                    "INSERT INTO telemetry.sample_1m (bucket, tag_id, avg, min, max, last, count)"
                    " VALUES (%s, %s, %s, %s, %s, %s, 60)",
                    (at, tag_id, 10.0 + i, 9.0, 11.0 + i, 10.0 + i),
                )
            conn.execute(
                "INSERT INTO telemetry.sample_1h (bucket, tag_id, avg, min, max, last, count)"
                " VALUES (%s, %s, 10, 9, 14, 10, 300)",
                (minute.replace(minute=0), tag_id),
            )
        conn.execute(
            "INSERT INTO telemetry.dead_letter (received_at, topic, payload, reason) VALUES (%s, %s, %s, %s)",
            (now, f"factory/v1/{site}/pi/telemetry", b"{", "invalid JSON: line 1"),
        )
        conn.execute(
            "INSERT INTO analytics.anomaly (time, site, asset, tag_id, detector, score, is_anomaly)"
            " VALUES (%s, %s, %s, %s, 'test', 4.2, true)",
            (minute, site, asset, tag_ids[0]),
        )
        conn.execute(
            "INSERT INTO analytics.anomaly_episode (site, asset, tag_id, detector, started_at, peak_score)"
            " VALUES (%s, %s, %s, 'test', %s, 4.2)",
            (site, asset, tag_ids[0], minute - timedelta(minutes=2)),
        )
        artifact = b"model"
        version = conn.execute(
            "INSERT INTO maintenance.model (kind, training_data, config, artifact, artifact_sha256, code_version)"
            " VALUES ('rul', '{}', '{}', %s, %s, 'test') RETURNING version",
            (artifact, hashlib.sha256(artifact).hexdigest()),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO maintenance.asset_health (time, site, asset, model_version, rul, failure_prob)"
            " VALUES (%s, %s, %s, %s, 120, 0.2)",
            (minute, site, asset, version),
        )
        hour = now.replace(minute=0, second=0, microsecond=0)
        for made_at, expected in ((hour - timedelta(hours=1), 50.0), (hour, 100.0)):  # only the latest is charted
            for k in range(24):
                conn.execute(
                    "INSERT INTO analytics.production_forecast (site, line, made_at, hour, hours_ahead, expected,"
                    " lower, upper, cum_expected, cum_lower, cum_upper, baseline, level, basis, history_hours)"
                    " VALUES (%s, 'mill1', %s, %s, %s, %s, %s, %s, 0, 0, 0, 0, 0.8, 'test', 840)",
                    (site, made_at, made_at + timedelta(hours=k), k + 1, expected + k, expected + k - 10,
                     expected + k + 10),
                )  # fmt: skip
        for k in range(1, 4):
            conn.execute(
                "INSERT INTO analytics.oee (bucket, bucket_end, period, site, line, shift, shift_start, availability,"
                " oee, planned_s, run_s, total_count, good_count, ideal_rate)"
                " VALUES (%s, %s, 'hour', %s, 'mill1', 'A', %s, 1, 0.9, 3600, 3600, %s, %s, 240)",
                (hour - timedelta(hours=k), hour - timedelta(hours=k - 1), site, hour - timedelta(hours=3),
                 200.0 + k, 200.0 + k),
            )  # fmt: skip
    return asset


FORECAST_PANEL = "Production per hour: actual and forecast (80 % interval)"

# Panels whose data the seed above provides; the ERP panels run too but have no ERP data here.
SEEDED = {
    "Devices online",
    "Devices",
    FORECAST_PANEL,
    "Active anomalies",
    "Points per second",
    "Live values",
    "Trend (1-minute or 1-hour averages)",
    "Anomaly score by tag",
    "Remaining useful life and failure probability",
    "annotation Anomaly episodes",
    "Asset health by risk",
    "Ingested points per second",
    "Seconds since each device was last heard",
    "Dead letters by reason",
}


def test_check_runs_every_panel_against_the_database(database_url: str, site: str) -> None:
    asset = _seed(database_url, site, datetime.now(UTC))
    env = {"FACTORY_DATABASE_URL": database_url}
    result = CliRunner().invoke(dashboards, ["check", "--var", f"asset={asset}", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    panels = {p["panel"]: p for p in report["panels"]}
    expected = sum(len(b.panels) + len(b.annotations) for b in DASHBOARDS)
    assert len(report["panels"]) == expected
    assert all(p["error"] is None for p in report["panels"])
    empty = sorted(name for name in SEEDED if panels[name]["rows"] == 0)
    assert empty == []
    assert panels["Live values"]["rows"] == 2  # one row per tag of the chosen asset


async def test_check_names_the_broken_panel(db: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    board = Dashboard(
        uid="broken",
        title="Broken",
        folder="Test",
        panels=(
            Panel("Good", "SELECT 1 AS one", ("one",)),
            Panel("Missing column", "SELECT nope FROM telemetry.device", ("nope",)),
            Panel("Wrong columns", "SELECT 1 AS one, 2 AS two", ("one",)),
            Panel("Unknown macro", "SELECT $__unixEpochFilter(x)", ("x",)),
        ),
    )
    results = {r.title: r for r in await check_dashboards(db, (board,), now=NOW)}
    assert results["Good"].ok
    assert results["Good"].rows == 1
    assert "UndefinedColumn" in (results["Missing column"].error or "")
    assert "expected ['one']" in (results["Wrong columns"].error or "")
    assert results["Unknown macro"].error is not None


def test_check_cli_fails_with_panel_and_error(database_url: str) -> None:
    env = {"FACTORY_DATABASE_URL": database_url}
    result = CliRunner().invoke(dashboards, ["check", "--var", "asset=no-such-asset", "--require-rows"], env=env)
    assert result.exit_code == 1
    assert "panel Asset detail / Live values failed: no rows" in result.output


def test_check_refuses_a_variable_without_value(database_url: str) -> None:
    result = CliRunner().invoke(dashboards, ["check", "--var", "asset"], env={"FACTORY_DATABASE_URL": database_url})
    assert result.exit_code == 2
    assert "expected NAME=VALUE, got 'asset'" in result.output


async def test_the_forecast_panel_charts_the_latest_forecast_with_its_bounds_and_the_counted_hours(
    database_url: str, db: psycopg.AsyncConnection[tuple[object, ...]], site: str
) -> None:
    now = datetime.now(UTC)
    _seed(database_url, site, now)
    (panel,) = [p for b in DASHBOARDS for p in b.panels if p.title == FORECAST_PANEL]
    rendered = panel.to_json(1, 0, 0)
    assert (rendered["timeFrom"], rendered["timeShift"]) == ("+36h", "12h")  # 12 h back, 24 ahead
    rng = panel_range(panel, TimeRange(now - timedelta(hours=24), now))
    assert (rng.start, rng.end) == (now - timedelta(hours=12), now + timedelta(hours=24))
    cur = await db.execute(expand(panel.sql, rng).encode())
    rows = [(t, m, v) for t, m, v in await cur.fetchall() if str(m).startswith(f"{site}/")]
    hour = now.replace(minute=0, second=0, microsecond=0)
    by_series: dict[str, list[tuple[object, object]]] = {}
    for t, m, v in rows:
        by_series.setdefault(str(m).removeprefix(f"{site}/mill1 "), []).append((t, v))
    assert set(by_series) == {"forecast", "forecast low", "forecast high", "actual"}
    assert by_series["forecast"] == [(hour + timedelta(hours=k), 100.0 + k) for k in range(24)]  # the latest only
    assert by_series["forecast low"][0] == (hour, 90.0)
    assert by_series["forecast high"][-1] == (hour + timedelta(hours=23), 133.0)
    assert by_series["actual"] == [(hour - timedelta(hours=k), 200.0 + k) for k in (3, 2, 1)]
