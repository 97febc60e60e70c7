"""The `factory` command as an operator uses it: `sim`, `edge check`, `edge run`, `ingest run`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from helpers import publish

from factory.mqtt import connect, parse_mqtt_url
from factory_cli.command import main
from factory_servers import free_port
from simulator import render_edge_config

pytestmark = pytest.mark.integration


def factory(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "factory_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return out, err


@pytest.fixture
def sim() -> Iterator[tuple[int, int]]:
    modbus, opcua = free_port(), free_port()
    proc = factory("sim", "--modbus-port", str(modbus), "--opcua-port", str(opcua))
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Stop with Ctrl-C" in line:
            break
    yield modbus, opcua
    stop(proc)


def write_config(tmp_path: Path, site: str, mqtt_url: str, modbus: int, opcua: int) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(
        render_edge_config(
            site=site, device="pi1", mqtt_url=mqtt_url, modbus_host="127.0.0.1", modbus_port=modbus,
            opcua_endpoint=f"opc.tcp://127.0.0.1:{opcua}", buffer_path="buffer.db",
        )
    )  # fmt: skip
    return path


def test_edge_check_probes_every_source(sim: tuple[int, int], tmp_path: Path, site: str, mqtt_url: str) -> None:
    config = write_config(tmp_path, site, mqtt_url, *sim)
    result = subprocess.run(
        [sys.executable, "-m", "factory_cli", "edge", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (28 tags in 3 sources)" in result.stdout
    assert result.stdout.count("    ok ") == 28
    assert "boiler1.drum_pressure" in result.stdout
    assert "centrifugal1.vibration_rms" in result.stdout


def test_edge_check_reports_a_dead_source(tmp_path: Path, site: str, mqtt_url: str) -> None:
    config = write_config(tmp_path, site, mqtt_url, free_port(), free_port())
    result = subprocess.run(
        [sys.executable, "-m", "factory_cli", "edge", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "BAD boiler1.drum_pressure" in result.stdout
    assert "cannot connect to opc.tcp://" in result.stdout


def test_edge_check_reports_config_errors_with_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("site: mill-a\ndevice: pi\nmqtt: {url: 'mqtt://h'}\nbuffer: {path: b.db}\nsources: []\nextra: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "factory_cli", "edge", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{path}:5: sources: List should have at least 1 item" in result.stderr
    assert f"{path}:6: extra: Extra inputs are not permitted" in result.stderr


async def retained_state(mqtt_url: str, status_topic: str) -> str:
    async with connect(parse_mqtt_url(mqtt_url), "") as client:
        await client.subscribe(status_topic, qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return str(json.loads(message.payload)["state"])
    raise AssertionError("no retained status")


def test_an_agent_stopped_before_its_points_are_confirmed_still_says_offline(
    sim: tuple[int, int], tmp_path: Path, site: str, mqtt_url: str
) -> None:
    """No ingest runs, so no batch is ever confirmed stored: the stop gives up waiting after
    5 s and still publishes its offline status (the clean disconnect drops the will)."""
    config = write_config(tmp_path, site, mqtt_url, *sim)
    edge = factory("edge", "run", "--config", str(config))
    status_topic = f"factory/v1/{site}/pi1/status"
    try:
        deadline = time.monotonic() + 30
        while (
            state := asyncio.run(retained_state(mqtt_url, status_topic))
        ) != "online" and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # a few batches sent, none confirmed
    finally:
        _, err = stop(edge)
    assert state == "online", err
    assert asyncio.run(retained_state(mqtt_url, status_topic)) == "offline", err
    assert "not yet confirmed stored" in err, err


def test_edge_run_and_ingest_run_move_data(
    sim: tuple[int, int], tmp_path: Path, site: str, mqtt_url: str, database_url: str
) -> None:
    config = write_config(tmp_path, site, mqtt_url, *sim)
    env = {"FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": mqtt_url}
    ingest = factory(
        "ingest", "run", "--client-id", f"ingest-{site}", "--site", site, "--session-expiry", "30", env=env
    )
    edge = factory("edge", "run", "--config", str(config))
    try:
        deadline = time.monotonic() + 30
        rows = 0
        while rows < 100 and time.monotonic() < deadline:
            time.sleep(0.5)
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(
                    "SELECT count(*) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
                    " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s",
                    (site,),
                ).fetchone()[0]  # type: ignore[index]
        assert rows >= 100
        stop(edge)
        deadline = time.monotonic() + 10
        status = None
        while status != ("offline",) and time.monotonic() < deadline:
            time.sleep(0.2)
            with psycopg.connect(database_url) as conn:
                status = conn.execute("SELECT status FROM telemetry.device WHERE site = %s", (site,)).fetchone()
        assert status == ("offline",)  # the agent's goodbye reached the database
    finally:
        if edge.returncode is None:
            stop(edge)
        stop(ingest)
        asyncio.run(publish(mqtt_url, [(f"factory/v1/{site}/pi1/{k}", b"") for k in ("status", "tags")], retain=True))


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["ingest", "run", "--retention-days", "0"], "--retention-days"),
        (["ingest", "run", "--rollup-1m-days", "0"], "--rollup-1m-days"),
        (["ingest", "run", "--rollup-1m-days", "100"], "--rollup-1m-days"),  # fewer than telemetry's 365
        (["ingest", "run", "--rollup-1h-days", "700"], "--rollup-1h-days"),  # fewer than the minutes' 730
        (["ingest", "run", "--site-retention", "mill-a=0"], "--site-retention"),
        (["ingest", "run", "--site-retention", "mill-a"], "--site-retention"),
        (["ingest", "run", "--site-retention", "mill-a=-3"], "--site-retention"),
        (["ingest", "run", "--site-retention", "Mill A=30"], "--site-retention"),
        (["ingest", "run", "--site-retention", "mill-a=30", "--site-retention", "mill-a=60"], "--site-retention"),
        (["ingest", "run", "--site-retention", "mill-a=1000"], "--rollup-1m-days"),  # past the minutes' 730
        (["analytics", "run", "--outbox-days", "0"], "--outbox-days"),
        (["erp", "serve", "--outbox-days", "0"], "--outbox-days"),
        (["erp", "serve", "--max-body", "0"], "--max-body"),
        (["backup", "--keep", "0"], "--keep"),
    ],
)
def test_retention_and_limit_options_refuse_nonsense(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert option in result.output
