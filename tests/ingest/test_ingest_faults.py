"""Faults with exact counts afterwards: ingest away, ingest killed, database connections
killed, and two workers sharing one subscription."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import OwnBroker, count_rows, eventually, healthz, mosquitto, publish, running_ingest, scrape, until

from factory.db import connect as db_connect
from factory.mqtt import connect, parse_mqtt_url
from factory.wire import MAX_BATCH_BYTES
from factory_servers import free_port
from provisioning.broker import MOSQUITTO_LIMITS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NOW_MS = int(time.time() * 1000)


def batches(site: str, count: int, per_batch: int, device: str = "pi1") -> list[tuple[str, bytes]]:
    """``count`` telemetry messages of ``per_batch`` points each, every point unique."""
    topic = f"factory/v1/{site}/{device}/telemetry"
    out = []
    for seq in range(count):
        points = [{"t": f"m.t{i % 10}", "ts": NOW_MS - 3_600_000 + seq * per_batch + i, "v": float(i)}
                  for i in range(per_batch)]  # fmt: skip
        out.append((topic, json.dumps({"v": 1, "seq": seq, "points": points}).encode()))
    return out


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    own = OwnBroker(tmp_path / "mosquitto")
    own.start()
    yield own
    own.stop()


async def test_messages_queued_while_ingest_is_away_all_arrive(broker: OwnBroker, database_url, site, db) -> None:
    """More than Mosquitto's default 1000 queued messages: the shipped limits keep them all."""
    async with running_ingest(database_url, broker.url, site):
        pass  # registers the persistent session, then goes away
    await publish(broker.url, batches(site, 1500, 1))
    async with running_ingest(database_url, broker.url, site) as ingest:
        await until(ingest, lambda: ingest.stats.points_received >= 1500, timeout=30)
        assert ingest.stats.points_received == 1500
    assert await count_rows(db, site) == 1500


async def test_broker_restart_keeps_the_queue(broker: OwnBroker, database_url, site, db) -> None:
    async with running_ingest(database_url, broker.url, site):
        pass
    await publish(broker.url, batches(site, 300, 10))
    broker.stop()
    broker.start()
    async with running_ingest(database_url, broker.url, site) as ingest:
        await until(ingest, lambda: ingest.stats.points_received >= 3000, timeout=30)
    assert await count_rows(db, site) == 3000


async def test_ingest_killed_mid_stream_loses_nothing(broker: OwnBroker, database_url, site, db) -> None:
    env = {**os.environ, "FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": broker.url}
    port = free_port()
    args = [sys.executable, "-m", "factory_cli", "ingest", "run", "--client-id", f"ingest-{site}", "--site", site,
            "--session-expiry", "300", "--http", f"127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    messages = batches(site, 400, 50)  # 20,000 points
    try:
        await eventually(lambda: healthz(port).get("subscribed") is True, what="ingest subscribed")
        await publish(broker.url, messages[:200])
        proc.send_signal(signal.SIGKILL)  # mid-stream: some flushes committed, some not
        proc.wait(10)
        await publish(broker.url, messages[200:])
        proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while await count_rows(db, site) < 20_000 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert await count_rows(db, site) == 20_000
    finally:
        proc.terminate()
        proc.wait(10)


async def test_database_connection_killed_mid_stream(broker: OwnBroker, database_url, site, db) -> None:
    messages = batches(site, 200, 50)
    async with running_ingest(database_url, broker.url, site, batch_ms=20) as ingest:
        async with connect(parse_mqtt_url(broker.url), "") as client:
            for i, (topic, payload) in enumerate(messages):
                await client.publish(topic, payload, qos=1)
                if i in (50, 120):
                    async with await db_connect(database_url, autocommit=True) as admin:
                        await admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = 'factory-ingest' AND datname = current_database()"
                        )
        await until(ingest, lambda: ingest.stats.points_received >= 10_000, timeout=60)
        assert ingest.stats.reconnects >= 1
    assert await count_rows(db, site) == 10_000


async def test_two_workers_share_one_subscription(broker: OwnBroker, database_url, site, db) -> None:
    shared = {"shared_group": "ingest", "upkeep": None}
    async with (
        running_ingest(database_url, broker.url, site, client_id=f"w1-{site}", **shared) as one,
        running_ingest(database_url, broker.url, site, client_id=f"w2-{site}", **shared) as two,
    ):
        await publish(broker.url, batches(site, 400, 25))
        await until(one, lambda: one.stats.points_received + two.stats.points_received >= 10_000, timeout=30)
        assert one.stats.points_received > 0
        assert two.stats.points_received > 0
        assert one.stats.points_received + two.stats.points_received == 10_000  # none twice
    assert await count_rows(db, site) == 10_000


def test_shipped_broker_config_carries_the_limits_and_runs(tmp_path: Path) -> None:
    shipped = (Path(__file__).parents[2] / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for line in MOSQUITTO_LIMITS.splitlines():
        assert line in shipped.splitlines(), line
    binary = mosquitto()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        shipped.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1").replace(
            "/var/lib/mosquitto/", f"{tmp_path}/"
        )
        + f"user {getpass.getuser()}\n"  # as root, Mosquitto would switch to its own user
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "mosquitto did not start")
    finally:
        proc.terminate()
        proc.wait(10)


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


async def test_one_devices_junk_flood_costs_the_others_nothing(  # type: ignore[no-untyped-def]
    broker: OwnBroker, database_url, site, db, tmp_path: Path
) -> None:
    """2,000 junk messages of the largest size the broker accepts, from one device, beside
    30,000 points from another, all queued while ingest was away: every point stored, the
    junk counted, the device's budget of it (60 a minute) dead-lettered with cut payloads,
    ingest's memory bounded, and its health
    said it was behind while the database stalled."""
    http = free_port()
    env = {**os.environ, "FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": broker.url}
    args = [sys.executable, "-m", "factory_cli", "ingest", "run", "--site", site, "--client-id", f"ingest-{site}",
            "--session-expiry", "300", "--no-upkeep", "--http", f"127.0.0.1:{http}"]  # fmt: skip
    log = tmp_path / "ingest.log"

    async def start() -> subprocess.Popen[bytes]:
        ingest = subprocess.Popen(args, env=env, stderr=log.open("w"))  # a file: a pipe nobody reads would block it
        async with asyncio.timeout(30):
            while "ingest.service: ingest:" not in log.read_text():  # subscribed
                await asyncio.sleep(0.1)
        return ingest

    ingest = await start()  # its session, which the broker keeps while it is away
    ingest.terminate()
    ingest.wait(30)
    junk = [(f"factory/v1/{site}/vandal/telemetry", os.urandom(MAX_BATCH_BYTES))] * 2000
    await asyncio.gather(publish(broker.url, junk), publish(broker.url, batches(site, 300, 100, device="pi2")))
    seen: list[dict[str, object]] = []
    async with await db_connect(database_url) as stall:  # the database stalls: ingest falls behind
        await stall.execute("LOCK TABLE telemetry.dead_letter IN ACCESS EXCLUSIVE MODE")
        ingest = await start()
        async with asyncio.timeout(30):
            while (seen := [*seen, healthz(http)])[-1].get("queue", "ok") == "ok":
                await asyncio.sleep(0.2)
    try:
        async with asyncio.timeout(240):
            while await count_rows(db, site) < 30_000 or scrape(http)["factory_ingest_dead_letters_total"] < 2000:
                seen.append(healthz(http))
                await asyncio.sleep(0.2)
        peak_mb = _peak_rss_mb(ingest.pid)
        unkept = scrape(http)["factory_ingest_dead_letters_unkept_total"]
    finally:
        ingest.terminate()
        ingest.wait(30)
    assert await count_rows(db, site) == 30_000
    cur = await db.execute(
        "SELECT count(*), max(length(payload)), min(reason) FROM telemetry.dead_letter WHERE topic = %s",
        (f"factory/v1/{site}/vandal/telemetry",),
    )
    count, longest, reason = await cur.fetchone()
    assert (count, longest, unkept) == (60, 4096, 1940)  # the device's budget kept; the rest counted
    assert reason.endswith(f"(payload of {MAX_BATCH_BYTES:,} bytes, the first 4,096 kept)"), reason
    assert peak_mb < 400, peak_mb  # docs/ingest.md states the bound
    assert any(h.get("queue", "ok") != "ok" for h in seen), seen[-5:]
    print(f"junk flood: peak RSS {peak_mb:.0f} MB, health samples {len(seen)}")
