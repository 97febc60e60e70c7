"""The edge agent under faults, with exact counts: broker down, agent killed, OPC UA server
restarted, a node the server does not have."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from helpers import (
    OwnBroker,
    buffered_ever,
    eventually,
    healthz,
    modbus_config,
    publish,
    running_ingest,
    scrape,
    until,
    until_rows,
)
from modbus_servers import tcp_server

from edge_agent import EdgeAgent, load_config
from factory.mqtt import connect, parse_mqtt_url
from factory.wire import MAX_BATCH_BYTES
from factory_servers import free_port
from simulator import PlantModel, SimulatedPlant
from simulator.opcua_server import OpcUaSimServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    own = OwnBroker(tmp_path / "mosquitto")
    own.start()
    yield own
    own.stop()


async def test_broker_down_for_30s_every_point_arrives_once(broker, database_url, site, db, tmp_path) -> None:
    async with SimulatedPlant() as plant:
        config = load_config(modbus_config(tmp_path, site, broker.url, plant.modbus_port, drain_points_per_s=500))
        agent = EdgeAgent(config, tmp_path)
        task = asyncio.create_task(agent.run())
        seen: list[dict[str, object]] = []
        try:
            async with running_ingest(database_url, broker.url, site) as ingest:
                await until(ingest, lambda: ingest.stats.points_received > 20)
            broker.stop()
            await asyncio.sleep(30)  # the outage under test: long enough that its backlog drains beside live data
            backlog = agent.publisher.buffer.depth_now()[0] if agent.publisher else 0
            assert backlog > 100  # polled and buffered while the broker was away
            broker.start()
            async with running_ingest(database_url, broker.url, site) as ingest, _recorder(broker.url, site, seen):
                await until(ingest, lambda: agent.publisher is not None and agent.publisher.stats.hist_points >= backlog,
                            timeout=60)  # fmt: skip
                await asyncio.sleep(1)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                total = buffered_ever(tmp_path / "buffer.db")
                assert await until_rows(db, site, total) == total  # every point exactly once
        finally:
            task.cancel()
    hist = [b for b in seen if b["hist"]]
    live_during_drain = [b for b in seen if not b["hist"] and b["seq"] < max(h["seq"] for h in hist)]  # type: ignore[operator]
    assert hist, "the backlog went out marked hist"
    assert live_during_drain, "live data kept flowing while the backlog drained"
    # in order, per tag: the agent's own tags, stamped when reported, interleave with a poll's
    for tag in ("boiler1.drum_pressure", "boiler1.steam_flow"):
        hist_ts = [p["ts"] for b in hist for p in b["points"] if p["t"] == tag]  # type: ignore[attr-defined]
        assert hist_ts == sorted(hist_ts), tag


async def _stored(db, site: str) -> set[float]:  # type: ignore[no-untyped-def]
    cur = await db.execute(
        "SELECT DISTINCT s.value FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name = %s",
        (site, "centrifugal1.vibration_rms"),
    )
    return {r[0] for r in await cur.fetchall()}


async def _until_stored(db, site: str, value: float, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while value not in await _stored(db, site):
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def _recorder(mqtt_url: str, site: str, seen: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    async def record() -> None:
        async with connect(parse_mqtt_url(mqtt_url), "") as client:
            await client.subscribe(f"factory/v1/{site}/pi1/telemetry", qos=1)
            async for message in client.messages:
                seen.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]  # noqa: PERF401 - an endless stream

    task = asyncio.create_task(record())
    await asyncio.sleep(0.3)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_agent_killed_mid_stream_loses_nothing(broker, database_url, site, db, tmp_path) -> None:
    async with SimulatedPlant() as plant, running_ingest(database_url, broker.url, site) as ingest:
        path = modbus_config(tmp_path, site, broker.url, plant.modbus_port)
        args = [sys.executable, "-m", "factory_cli", "edge", "run", "--config", str(path)]
        proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        await until(ingest, lambda: ingest.stats.points_received > 50, timeout=30)
        broker.stop()  # so that the buffer holds unsent points at the moment of the kill
        await eventually(lambda: buffered_ever(tmp_path / "buffer.db") > ingest.stats.points_received + 20,
                         what="unsent points in the buffer")  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        unsent = buffered_ever(tmp_path / "buffer.db") - ingest.stats.points_received
        assert unsent > 0
        broker.start()
        received = ingest.stats.points_received
        proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        await until(ingest, lambda: ingest.stats.points_received > received + unsent, timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        total = buffered_ever(tmp_path / "buffer.db")
        assert await until_rows(db, site, total) == total


async def test_opcua_server_restart_resumes_without_restarting_the_agent(
    broker, database_url, site, db, tmp_path
) -> None:
    port = free_port()
    model = PlantModel(seed=3)
    config = {
        "site": site, "device": "pi1", "mqtt": {"url": broker.url}, "buffer": {"path": "buffer.db"},
        "publish": {"max_interval_ms": 100},
        "sources": [{"name": "centrifugals", "kind": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}",
                     "sampling_ms": 100, "tags": [
                         {"name": "centrifugal1.vibration_rms", "node": "ns=2;s=Centrifugal1.VibrationRMS"},
                         {"name": "centrifugal1.ghost", "node": "ns=2;s=Centrifugal1.NoSuchNode"}]}],
    }  # fmt: skip
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    agent = EdgeAgent(load_config(tmp_path / "edge.yaml"), tmp_path)
    server = OpcUaSimServer(model, port=port)
    await server.start()
    task = asyncio.create_task(agent.run())
    try:
        async with running_ingest(database_url, broker.url, site) as ingest:
            for value in (1.0, 2.0):
                model.hold("centrifugal1.vibration_rms", value)
                await server.refresh()
                await asyncio.sleep(0.5)
            await until(ingest, lambda: ingest.stats.points_received >= 3)
            await server.stop()
            await asyncio.sleep(3)
            server = OpcUaSimServer(model, port=port)
            await server.start()
            for value in (3.0, 4.0):  # after the restart: each new value must arrive
                model.hold("centrifugal1.vibration_rms", value)
                await server.refresh()
                await _until_stored(db, site, value)
            cur_values = await _stored(db, site)
            assert {1.0, 2.0, 3.0, 4.0} <= cur_values  # resumed after the restart, same agent
            assert any(s.stats.reconnects for s in agent.sources)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.stop()
    cur = await db.execute(
        "SELECT s.quality, s.value FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name = 'centrifugal1.ghost'",
        (site,),
    )
    ghost = await cur.fetchall()
    assert ghost
    assert all(row == (2, None) for row in ghost)  # reported bad, never silently missing


async def _count_up(server, stop: asyncio.Event) -> int:  # type: ignore[no-untyped-def]
    """A production counter in holding register 0: one more every 20 ms; returns the last value."""
    value = 0
    while not stop.is_set():
        value += 1
        await server.set(1, "holding", 0, [value])
        await asyncio.sleep(0.02)
    return value


async def test_broker_crash_with_ingest_away_loses_no_counter_value(database_url, site, db, tmp_path) -> None:
    """The broker acknowledged the batches and held them only in memory (it saves every 60 s,
    as shipped) when it was killed: the agent still had them, and sends them again."""
    broker = OwnBroker(tmp_path / "mosquitto", autosave_s=60)
    broker.start()
    config = {
        "site": site, "device": "pi1", "mqtt": {"url": broker.url}, "buffer": {"path": "buffer.db", "max_mb": 64},
        "publish": {"max_points": 50, "max_interval_ms": 100, "resend_after_s": 2, "health_every_s": 0},
        "sources": [{"name": "line", "kind": "modbus", "host": "127.0.0.1", "port": 0, "unit": 1, "poll_ms": 20,
                     "tags": [{"name": "line1.count", "table": "holding", "address": 0, "type": "uint16"}]}],
    }  # fmt: skip
    stop = asyncio.Event()
    async with tcp_server() as (server, port):
        config["sources"][0]["port"] = port  # type: ignore[index]
        (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
        agent = EdgeAgent(load_config(tmp_path / "edge.yaml"), tmp_path)
        counting = asyncio.create_task(_count_up(server, stop))
        task = asyncio.create_task(agent.run())
        try:
            async with running_ingest(database_url, broker.url, site) as ingest:
                await until(ingest, lambda: ingest.stats.points_received > 20)
            assert agent.publisher is not None
            publisher, before = agent.publisher, agent.publisher.stats.published_points
            # ingest away: the broker acknowledges and queues for it
            await eventually(lambda: publisher.stats.published_points >= before + 120, what="points queued for ingest")
            acknowledged = agent.publisher.stats.published_points
            broker.kill()
            await asyncio.sleep(1)
            stop.set()
            last = await counting
            broker.start()
            async with running_ingest(database_url, broker.url, site):
                total = buffered_ever(tmp_path / "buffer.db")
                stored = await until_rows(db, site, total, timeout=60)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            broker.stop()
    assert acknowledged > 100  # what the crash took from the broker
    assert stored == total  # every point the agent read, exactly once
    cur = await db.execute(
        "SELECT max(s.value) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name = 'line1.count'",
        (site,),
    )
    assert (await cur.fetchone())[0] == last


async def _change_all(server, registers: int, stop: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    """Every register gets a new value every 10 ms."""
    value = 0
    while not stop.is_set():
        value = (value + 1) % 60_000
        await server.set(1, "holding", 0, [(value + i) % 65_536 for i in range(registers)])
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def _small_disk(path: Path) -> Iterator[list[str]]:
    """A 2 MiB tmpfs at ``path``; yields what to put before a command so that it sees it. As
    root, a plain mount (unmounted afterwards); otherwise in a mount namespace of the
    command's own (``unshare`` cannot make one inside a chroot, where root mounts plainly)."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
        try:
            yield []
        finally:
            subprocess.run(["umount", "--lazy", str(path)], check=False)
    else:
        yield ["unshare", "--mount", "--map-root-user", "sh", "-c", 'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"',
               str(path)]  # fmt: skip


async def test_full_disk_drops_the_oldest_and_the_agent_stays_up(broker, database_url, site, db, tmp_path) -> None:
    """The buffer on a 2 MiB tmpfs, the broker away
    for 20 s while 100 registers change every 10 ms: the disk fills, the agent keeps running,
    drops and counts the oldest points, says so on /healthz, and new values arrive once the
    broker is back."""
    disk, http_port = tmp_path / "disk", free_port()
    disk.mkdir()
    config = {
        "site": site, "device": "pi1", "mqtt": {"url": broker.url}, "buffer": {"path": str(disk / "buffer.db")},
        "publish": {"max_points": 1000, "max_interval_ms": 200}, "http": {"port": http_port},
        "sources": [{"name": "line", "kind": "modbus", "host": "127.0.0.1", "port": 0, "unit": 1, "poll_ms": 10,
                     "tags": [{"name": f"line1.r{i}", "table": "holding", "address": i, "type": "uint16"}
                              for i in range(100)]}],
    }  # fmt: skip
    stop, log = asyncio.Event(), (tmp_path / "agent.log").open("w+")
    async with (
        tcp_server() as (server, port),
        running_ingest(database_url, broker.url, site) as ingest,
    ):
        config["sources"][0]["port"] = port  # type: ignore[index]
        (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
        changing = asyncio.create_task(_change_all(server, 100, stop))
        with _small_disk(disk) as prefix:
            agent = subprocess.Popen([*prefix, sys.executable, "-m", "factory_cli", "edge", "run", "--config",
                                      str(tmp_path / "edge.yaml")], stdout=log, stderr=log)  # fmt: skip
            try:
                await until(ingest, lambda: ingest.stats.points_received > 1000, timeout=30)
                broker.stop()
                seen: list[dict[str, object]] = []
                for _ in range(20):
                    await asyncio.sleep(1)
                    assert agent.poll() is None, log.seek(0) or log.read()
                    seen.append(healthz(http_port))
                full = scrape(http_port)
                broker.start()
                back = datetime.now(UTC)
                async with asyncio.timeout(30):
                    while not await _rows_since(db, site, back):
                        await asyncio.sleep(0.5)
                assert agent.poll() is None
            finally:
                stop.set()
                await changing
                agent.terminate()
                agent.wait(20)
    log.seek(0)
    text = log.read()
    assert agent.returncode in (0, -15), text
    assert "Traceback" not in text, text
    assert full["factory_edge_buffer_disk_full_total"] > 0
    assert full["factory_edge_buffer_dropped_points_total"] > 0
    assert any(h["buffer"] != "ok" and h["status"] == "degraded" for h in seen), seen
    assert text.count("the disk is full") <= 4, text  # rate-limited: at most one every 10 s


async def _rows_since(db, site: str, since: datetime) -> int:  # type: ignore[no-untyped-def]
    cur = await db.execute(
        "SELECT count(*) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name LIKE 'line1.%%' AND s.time > %s",
        (site, since),
    )
    return int((await cur.fetchone())[0])


async def test_a_4000_tag_catalog_arrives_whole_and_telemetry_flows(broker, database_url, site, db, tmp_path) -> None:
    """Twenty units of 200 registers, each tag with a description: the catalog is larger
    than a message may be, goes out compressed, and ingest registers every tag."""
    units = tuple(range(1, 21))
    sources = [
        {"name": f"unit{u}", "kind": "modbus", "host": "127.0.0.1", "port": 0, "unit": u, "poll_ms": 1000,
         "tags": [{"name": f"press{u}.r{i}", "table": "holding", "address": i, "type": "uint16", "unit": "bar",
                   "asset": f"press{u}", "description": f"Press {u}, register {i}: hydraulic pressure at valve"
                   f" block {i % 7}, measured after the filter, before the accumulator (sensor {u}-{i})"}
                  for i in range(200)]}
        for u in units
    ]  # fmt: skip
    async with tcp_server(units) as (_, port), running_ingest(database_url, broker.url, site) as ingest:
        for source in sources:
            source["port"] = port
        config = {"site": site, "device": "pi1", "mqtt": {"url": broker.url}, "buffer": {"path": "buffer.db"},
                  "publish": {"max_points": 1000, "max_interval_ms": 200}, "sources": sources}  # fmt: skip
        (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
        check = subprocess.run([sys.executable, "-m", "factory_cli", "edge", "check", "--config", str(tmp_path / "edge.yaml")],
                               capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert "tag catalog: " in check.stdout, check.stdout + check.stderr
        agent = EdgeAgent(load_config(tmp_path / "edge.yaml"), tmp_path)
        task = asyncio.create_task(agent.run())
        try:
            await until(ingest, lambda: ingest.stats.points_received >= 4000, timeout=60)  # one of each
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    plain = len(json.dumps({"v": 1, "tags": [t for s in sources for t in s["tags"]]}))  # type: ignore[attr-defined]
    assert plain > 256 * 1024  # it would not have fitted uncompressed
    cur = await db.execute(
        "SELECT count(*), count(t.description) FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id"
        " WHERE d.site = %s AND t.name LIKE 'press%%'",
        (site,),
    )
    assert await cur.fetchone() == (4000, 4000)
    assert await until_rows(db, site, 4000) >= 4000


def test_a_failing_device_does_not_flood_the_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Modbus device that is not there, polled every 10 ms for 6 s: each kind of warning
    appears once per 10 s, the next one saying how many were held back."""
    config = {
        "site": "s1", "device": "pi1", "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},
        "buffer": {"path": "buffer.db"}, "publish": {"health_every_s": 0},
        "sources": [{"name": "gone", "kind": "modbus", "host": "127.0.0.1", "port": free_port(), "unit": 1,
                     "poll_ms": 10, "timeout_ms": 50, "tags": [{"name": "x", "table": "holding", "address": 0}]}],
    }  # fmt: skip
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "agent.log"
    agent = subprocess.Popen([sys.executable, "-m", "factory_cli", "edge", "run", "--config", str(tmp_path / "edge.yaml")],
                             stderr=log.open("w"))  # fmt: skip
    try:
        agent.wait(6)
    except subprocess.TimeoutExpired:
        agent.terminate()
        agent.wait(20)
    lines = log.read_text().splitlines()
    assert "Traceback" not in "\n".join(lines)
    warnings = [line for line in lines if " WARNING " in line or " ERROR " in line]
    assert 0 < len(warnings) <= 12, "\n".join(warnings)  # one per kind (and per 10 s), not 20 a second


async def test_a_flood_that_overflows_the_broker_queue_costs_other_devices_nothing(  # type: ignore[no-untyped-def]
    database_url, site, db, tmp_path
) -> None:
    """Ingest away, one device floods until the broker's queue for ingest overflows and the
    broker drops QoS 1 messages of every device; the agent of another device, counting up on
    a Modbus register, sends what ingest never confirmed again: every value stored once."""
    broker = OwnBroker(tmp_path / "mosquitto", queue_bytes=16 * 2**20)
    broker.start()
    config = {
        "site": site, "device": "pi1", "mqtt": {"url": broker.url}, "buffer": {"path": "buffer.db"},
        "publish": {"max_points": 50, "max_interval_ms": 100, "resend_after_s": 2, "health_every_s": 0},
        "sources": [{"name": "line", "kind": "modbus", "host": "127.0.0.1", "port": 0, "unit": 1, "poll_ms": 20,
                     "tags": [{"name": "line1.count", "table": "holding", "address": 0, "type": "uint16"}]}],
    }  # fmt: skip
    stop = asyncio.Event()
    try:
        async with tcp_server() as (server, port):
            config["sources"][0]["port"] = port  # type: ignore[index]
            (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
            agent = EdgeAgent(load_config(tmp_path / "edge.yaml"), tmp_path)
            counting = asyncio.create_task(_count_up(server, stop))
            task = asyncio.create_task(agent.run())
            async with running_ingest(database_url, broker.url, site) as ingest:
                await until(ingest, lambda: ingest.stats.points_received > 20)
            junk = [(f"factory/v1/{site}/vandal/telemetry", os.urandom(MAX_BATCH_BYTES))] * 128  # 32 MiB
            await publish(broker.url, junk)
            await asyncio.sleep(2)  # the agent's batches queue behind the junk, past the queue's end
            async with running_ingest(database_url, broker.url, site):
                await asyncio.sleep(4)  # later batches confirmed: the lost ones go out again
                stop.set()
                last = await counting
                await asyncio.sleep(1)
                await until_rows(db, site, buffered_ever(tmp_path / "buffer.db"), timeout=60)  # resends done
                task.cancel()  # then stopped: it buffers nothing after the count below
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                total = buffered_ever(tmp_path / "buffer.db")
                stored = await until_rows(db, site, total, timeout=60)
            assert agent.publisher is not None
            resent = agent.publisher.stats.resent_points
    finally:
        broker.stop()
    assert resent > 0  # the broker did drop some of them
    assert stored == total
    cur = await db.execute(
        "SELECT max(s.value) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name = 'line1.count'",
        (site,),
    )
    assert (await cur.fetchone())[0] == last
