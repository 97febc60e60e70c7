"""The alert bridge against the real things: Mosquitto, PostgreSQL, and Alertmanager on the
configuration ``factory provision alerts`` writes, notifying the tests' own webhook and SMTP
server. Events are made by the code that makes them in production (analytics' episode
writer and its outbox relay)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alerting_support import alertmanager_running, process, provision, wait_for
from click.testing import CliRunner
from helpers import eventually, healthz, publish
from mail_sink import Sinks, sinks_running

from alerting import BridgeConfig, BridgeStats, run_bridge
from analytics.events import EventRelay
from analytics.live import MULTIVARIATE, RunSummary, _Pass
from analytics.store import AssetTags
from factory.mqtt import connect, parse_mqtt_url
from factory.wire import Status, encode_status
from factory_servers import free_port
from provisioning.cli import device, revoke

pytestmark = pytest.mark.integration

SETTINGS = """\
smtp: {{smarthost: "127.0.0.1:{smtp}", from: factory-alerts@plant.test, require_tls: false}}
receivers:
  - name: operators
    severities: [critical, warning]
    email: [operators@plant.test]
    webhooks: ["http://127.0.0.1:{hook}/hook"]
timing: {{group_wait: 1s, group_interval: 1s, repeat_interval: 1h, critical_repeat_interval: 1h}}
"""


@contextlib.asynccontextmanager
async def bridge_running(config: BridgeConfig) -> AsyncIterator[int]:
    """``factory alerts bridge`` in a task, subscribed; yields its /healthz port."""
    ports: list[int] = []
    stats = BridgeStats()
    task = asyncio.create_task(run_bridge(config, stats=stats, on_listening=ports.append), name="bridge")
    try:
        deadline = time.monotonic() + 20
        while not (ports and stats.connected and stats.posted_at):
            assert time.monotonic() < deadline, "the bridge did not connect and post"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        yield ports[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def plant_alerting(
    tmp_path: Path, port: int | None = None
) -> AsyncIterator[tuple[Sinks, httpx.AsyncClient, str, Path]]:
    async with sinks_running() as (sinks, hook, smtp):
        settings = tmp_path / "settings.yml"
        settings.write_text(SETTINGS.format(smtp=smtp, hook=hook), encoding="utf-8")
        files = provision(tmp_path / "out", settings=settings)
        async with alertmanager_running(files["alertmanager"], tmp_path, port) as (api, url, log):
            yield sinks, api, url, log


def _config(database_url: str, mqtt_url: str, site: str, alertmanager_url: str) -> BridgeConfig:
    return BridgeConfig(database_url=database_url, bus_url=mqtt_url, client_id=f"factory-alerts-{site}", site=site,
                        alertmanager_url=alertmanager_url, grafana_url="https://grafana.plant.test",
                        repost_s=1.0, http_port=0, session_expiry_s=600)  # fmt: skip


async def _active(api: httpx.AsyncClient, name: str, site: str) -> list[dict[str, Any]]:
    reply = await api.get("/api/v2/alerts", params={"filter": [f'alertname="{name}"', f'site="{site}"']})
    return [a for a in reply.json() if a["status"]["state"] == "active"]


def _hooks(sinks: Sinks, name: str, site: str) -> list[dict[str, Any]]:
    return [h for h in sinks.hooks_about(name) if h["groupLabels"].get("site") == site]


def _mails(sinks: Sinks, name: str, site: str) -> list[str]:
    return [str(m["Subject"]) for _, m in sinks.mails_about(name) if f"at {site}" in str(m["Subject"])]


def _at_least(n: int, found: Callable[[], list[Any]]) -> Callable[[], Any]:
    async def check() -> list[Any] | None:
        return found() if len(found()) >= n else None

    return check


async def _publish_outbox(database_url: str, mqtt_url: str) -> None:
    """What analytics' scheduler does after each anomaly run: relay the outbox to the broker."""
    relay = EventRelay(mqtt_url)
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            assert await relay.relay(conn) >= 1
    finally:
        await relay.close()


async def test_an_anomaly_episode_fires_once_across_a_restart_and_resolves(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    async with plant_alerting(tmp_path) as (sinks, api, url, log):
        config = _config(database_url, mqtt_url, site, url)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            episode = _Pass(conn, AssetTags(site, "mill1", ()), RunSummary())
            started = time.time() - 5
            async with bridge_running(config) as port:
                async with conn.transaction():  # as the anomaly job writes it: episode and event together
                    ep = await episode.open(None, MULTIVARIATE, started, 7.5,
                                            top=[["mill1.torque", 0.61], ["mill1.speed", 0.22]])  # fmt: skip
                await _publish_outbox(database_url, mqtt_url)
                (alert,) = await wait_for(lambda: _active(api, "AnomalyEpisode", site), "the alert", log)
                assert alert["labels"] == {"alertname": "AnomalyEpisode", "severity": "warning", "site": site,
                                           "asset": "mill1", "detector": MULTIVARIATE, "episode": str(ep)}  # fmt: skip
                assert alert["annotations"]["top_tags"] == "mill1.torque (0.61), mill1.speed (0.22)"
                assert alert["annotations"]["dashboard"] == (
                    "https://grafana.plant.test/d/factory-asset?var-asset=mill1"
                )
                await wait_for(_at_least(1, lambda: _hooks(sinks, "AnomalyEpisode", site)), "the webhook call", log)
                await wait_for(_at_least(1, lambda: _mails(sinks, "AnomalyEpisode", site)), "the e-mail", log)
                assert (await asyncio.to_thread(healthz, port))["firing"] >= 1
            # The bridge is down while the episode ends: the broker keeps the event for it.
            async with conn.transaction():
                await episode.close(None, MULTIVARIATE, {"id": ep, "started": started, "peak": 9.0}, time.time())
            await _publish_outbox(database_url, mqtt_url)
            await asyncio.sleep(2)  # group_interval is 1 s: a repeated notice would be here by now
            assert len(_hooks(sinks, "AnomalyEpisode", site)) == 1
            async with bridge_running(config):
                await asyncio.sleep(3)  # three re-posts of whatever still fires
                await wait_for(_at_least(2, lambda: _hooks(sinks, "AnomalyEpisode", site)), "the resolve", log)
                await wait_for(_at_least(2, lambda: _mails(sinks, "AnomalyEpisode", site)), "resolved mail", log)
                assert not await _active(api, "AnomalyEpisode", site)
                cur = await conn.execute(
                    "SELECT count(*) FROM alerting.alert WHERE labels ->> 'site' = %s AND ends_at IS NULL", (site,)
                )
                assert (await cur.fetchone()) == (0,)
    hooks = _hooks(sinks, "AnomalyEpisode", site)
    assert [h["status"] for h in hooks] == ["firing", "resolved"]  # once each: the restart told no one again
    assert _mails(sinks, "AnomalyEpisode", site) == [
        f"[FIRING] warning: AnomalyEpisode at {site} (mill1)",
        f"[RESOLVED] warning: AnomalyEpisode at {site} (mill1)",
    ]


async def test_a_device_going_offline_fires_and_coming_back_resolves(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    topic = f"factory/v1/{site}/pi1/status"
    async with plant_alerting(tmp_path) as (sinks, api, url, log):
        try:
            async with bridge_running(_config(database_url, mqtt_url, site, url)):
                offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
                await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)  # as the last will is
                (alert,) = await wait_for(lambda: _active(api, "DeviceOffline", site), "the alert", log)
                assert alert["labels"] == {"alertname": "DeviceOffline", "severity": "critical", "site": site,
                                           "device": "pi1"}  # fmt: skip
                await wait_for(_at_least(1, lambda: _hooks(sinks, "DeviceOffline", site)), "the webhook call", log)
                online = Status(state="online", ts=int(time.time() * 1000) + 1, agent="1.0")
                await publish(mqtt_url, [(topic, encode_status(online))], retain=True)
                await wait_for(_at_least(2, lambda: _hooks(sinks, "DeviceOffline", site)), "the resolve", log)
                assert not await _active(api, "DeviceOffline", site)
        finally:
            await publish(mqtt_url, [(topic, b"")], retain=True)  # clears the retained status
    assert [h["status"] for h in _hooks(sinks, "DeviceOffline", site)] == ["firing", "resolved"]
    assert _mails(sinks, "DeviceOffline", site) == [f"[FIRING] critical: DeviceOffline at {site}",
                                                    f"[RESOLVED] critical: DeviceOffline at {site}"]  # fmt: skip
    body = _hooks(sinks, "DeviceOffline", site)[0]["alerts"][0]
    assert json.dumps(body["annotations"]).count("offline") >= 1


async def test_a_retired_device_resolves_its_offline_alert_and_leaves_no_status(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    """`factory provision revoke` on a device that went offline: the bridge resolves its
    DeviceOffline, and a consumer that subscribes afterwards sees no status of it at all."""
    topic, env = f"factory/v1/{site}/pi3/status", {"FACTORY_DATABASE_URL": database_url}
    registered = await asyncio.to_thread(CliRunner().invoke, device, [site, "pi3", "--out", str(tmp_path / "pi3"),
                                                                      "--mqtt-url", mqtt_url], env=env)  # fmt: skip
    assert registered.exit_code == 0, registered.output
    async with plant_alerting(tmp_path) as (sinks, api, url, log):
        try:
            async with bridge_running(_config(database_url, mqtt_url, site, url)):
                offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
                await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)  # its last will
                await wait_for(lambda: _active(api, "DeviceOffline", site), "the alert", log)
                await wait_for(_at_least(1, lambda: _hooks(sinks, "DeviceOffline", site)), "the webhook call", log)
                revoked = await asyncio.to_thread(CliRunner().invoke, revoke, [site, "pi3", "--mqtt-url", mqtt_url],
                                                  env=env)  # fmt: skip
                assert revoked.exit_code == 0, revoked.output
                await wait_for(_at_least(2, lambda: _hooks(sinks, "DeviceOffline", site)), "the resolve", log)
                assert not await _active(api, "DeviceOffline", site)
        finally:
            await publish(mqtt_url, [(topic, b"")], retain=True)  # whatever happened above
    assert [h["status"] for h in _hooks(sinks, "DeviceOffline", site)] == ["firing", "resolved"]
    async with connect(parse_mqtt_url(mqtt_url), "") as reader:
        await reader.subscribe(f"factory/v1/{site}/+/status", qos=1)
        seen: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):  # a retained message comes right after the subscription
                seen.append(str((await anext(aiter(reader.messages))).topic))
    assert seen == []  # no retained status left for the retired device


async def test_alerts_wait_in_the_table_while_alertmanager_is_down(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    port = free_port()  # Alertmanager will listen here, later
    topic = f"factory/v1/{site}/pi2/status"
    stats = BridgeStats()
    config = _config(database_url, mqtt_url, site, f"http://127.0.0.1:{port}")
    health: list[int] = []
    task = asyncio.create_task(run_bridge(config, stats=stats, on_listening=health.append), name="bridge")
    try:
        await eventually(lambda: health and stats.connected, timeout=20, what="the bridge connected")
        offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
        await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)
        await eventually(lambda: stats.changes >= 1 and stats.post_failures >= 1, timeout=20, what="a failed post")
        state = await asyncio.to_thread(healthz, health[0])
        assert (state["status"], state["alertmanager"]) == ("degraded", "not reached")
        async with plant_alerting(tmp_path, port) as (sinks, api, _url, log):
            (alert,) = await wait_for(lambda: _active(api, "DeviceOffline", site), "the alert, once it is up", log)
            assert alert["labels"]["device"] == "pi2"
            await wait_for(_at_least(1, lambda: _hooks(sinks, "DeviceOffline", site)), "the webhook call", log)

            async def healthy() -> bool:
                return (await asyncio.to_thread(healthz, health[0])).get("status") == "ok"

            await wait_for(healthy, "the bridge healthy again (its retries back off up to 30 s)", log)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publish(mqtt_url, [(topic, b"")], retain=True)


async def test_the_command_runs_the_bridge_until_told_to_stop(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    port = free_port()
    env = {**os.environ, "FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": mqtt_url}
    async with plant_alerting(tmp_path) as (_sinks, _api, url, _log):
        argv = [sys.executable, "-m", "factory_cli", "alerts", "bridge", "--alertmanager-url", url, "--site", site,
                "--client-id", f"factory-alerts-{site}", "--http", f"127.0.0.1:{port}"]  # fmt: skip
        log = tmp_path / "bridge.log"
        async with process(log, *argv, env=env) as proc:

            async def healthy() -> dict[str, object] | None:
                state = await asyncio.to_thread(healthz, port)
                return state if state.get("status") == "ok" else None

            state = await wait_for(healthy, "the bridge healthy", log)
            assert state["broker"] == "connected"
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert "alert bridge: MQTT client id" in log.read_text()
