"""The demo's alerting wiring: with Prometheus and Alertmanager installed it starts them on
``factory provision alerts``' files and runs the bridge, whose alerts reach the demo's own
webhook; without them it says what to install."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import publish

from factory.wire import Status, encode_status
from factory_demo.alerting import INSTALL_HINT, AlertingPorts, demo_alerting
from factory_servers import free_port

pytestmark = pytest.mark.integration


async def test_the_demo_starts_and_provisions_alertmanager_prometheus_and_the_bridge(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    topic = f"factory/v1/{site}/pi1/status"
    async with demo_alerting(tmp_path, database_url, mqtt_url, ports, client_id=f"factory-alerts-{site}",
                             site=site) as state:  # fmt: skip
        assert state.missing == []
        assert state.alertmanager_url is not None
        assert state.prometheus_url is not None
        async with httpx.AsyncClient(timeout=5) as http:
            for url in (state.alertmanager_url, state.prometheus_url):
                for _ in range(100):
                    if (await http.get(f"{url}/-/ready")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert (await http.get(f"{url}/-/ready")).status_code == 200, url
        config = yaml.safe_load((tmp_path / "alerting" / "prometheus" / "prometheus.yml").read_text())
        targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
        assert targets["factory-erp"] == [f"127.0.0.1:{ports.erp}"]
        assert targets["factory-ingest"] == [f"127.0.0.1:{ports.ingest}"]
        assert targets["factory-alerts"] == [f"127.0.0.1:{ports.bridge}"]
        assert targets["alertmanager"] == [state.alertmanager_url.removeprefix("http://")]
        try:
            # The simulated plant's fault of choice for a quick test: its edge device drops off.
            offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
            await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)
            deadline = time.monotonic() + 30
            while f"firing DeviceOffline {site}/pi1" not in state.notifications:
                assert time.monotonic() < deadline, state.notifications
                await asyncio.sleep(0.2)
        finally:
            await publish(mqtt_url, [(topic, b"")], retain=True)
        lines = "\n".join(state.lines())
        assert f"{state.alertmanager_url}/#/alerts" in lines
        assert f"{state.prometheus_url}/alerts" in lines
    assert state.bridge.changes >= 1


async def test_without_the_binaries_the_demo_says_what_to_install(
    tmp_path: Path, database_url: str, mqtt_url: str
) -> None:
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    async with demo_alerting(tmp_path, database_url, mqtt_url, ports, client_id="factory-alerts-none",
                             find=lambda *_names: None) as state:  # fmt: skip
        assert state.alertmanager_url is None
        assert state.missing == ["alertmanager", "prometheus"]
        (line,) = state.lines()
        assert INSTALL_HINT in line
    assert not (tmp_path / "alerting").exists()  # nothing was provisioned for servers that cannot run


async def test_a_server_that_does_not_start_leaves_the_demo_running_without_it(
    tmp_path: Path, database_url: str, mqtt_url: str
) -> None:
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    broken = tmp_path / "alertmanager"
    broken.write_text("#!/bin/sh\necho 'cannot open storage' >&2\nexit 1\n")
    broken.chmod(0o755)
    async with demo_alerting(tmp_path, database_url, mqtt_url, ports, client_id="factory-alerts-broken",
                             find=lambda *names: str(broken) if "alertmanager" in names else None) as state:  # fmt: skip
        assert state.alertmanager_url is None
        (line,) = state.lines()
        assert "alertmanager did not start" in line
    assert "cannot open storage" in (tmp_path / "alerting" / "alertmanager.log").read_text()
