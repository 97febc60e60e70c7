"""Ingest from a real three-node NATS cluster with JetStream: a device over MQTT 3.1.1, two
workers sharing one durable work-queue consumer, a node and a worker killed mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import psycopg
import pytest

from edge_agent import EdgeAgent, load_config
from factory.mqtt import MqttError, Session, connect, parse_mqtt_url
from factory.nats import parse_nats_url
from factory.wire import Point, TelemetryBatch, decode_ack, encode_batch
from ingest import IngestConfig, IngestService
from simulator import SimulatedPlant
from tests.helpers import buffered_ever, count_rows, eventually, modbus_config, until_rows
from tests.nats_cluster import NatsCluster, nats_cluster

BATCHES = 300
PER_BATCH = 40


async def _dead_letters(db: psycopg.AsyncConnection[tuple[object, ...]], site: str) -> int:
    cur = await db.execute("SELECT count(*) FROM telemetry.dead_letter WHERE topic LIKE %s", (f"factory/v1/{site}/%",))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


async def test_cluster_node_and_worker_lost_mid_stream(
    tmp_path: Path, database_url: str, db: psycopg.AsyncConnection[tuple[object, ...]], site: str
) -> None:
    with nats_cluster(tmp_path) as cluster:
        # A worker in a process of its own, killed with SIGKILL mid-stream, and one in this process.
        env = {**os.environ, "FACTORY_DATABASE_URL": database_url, "FACTORY_INGEST_URL": cluster.nats_url(2, 1, 0)}
        args = [sys.executable, "-m", "factory_cli", "--log-level", "WARNING", "ingest", "run", "--client-id",
                "worker-a", "--http", "", "--no-upkeep", "--batch-ms", "50"]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(*args, env=env)
        service = IngestService(
            IngestConfig(database_url=database_url, mqtt=parse_mqtt_url("mqtt://127.0.0.1"),
                         nats=parse_nats_url(cluster.nats_url(1, 2, 0)), client_id="worker-b", batch_ms=50, upkeep=None)
        )  # fmt: skip
        worker = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.subscribed.wait(), 30)
            await _device(cluster.mqtt_url(0), site, cluster, proc)
            await eventually(lambda: service.stats.points_received > 0, 30, "worker b stored something")
            assert await count_rows(db, site) == BATCHES * PER_BATCH  # every point exactly once
            assert await _dead_letters(db, site) == 0
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _device(mqtt_url: str, site: str, cluster: NatsCluster, worker: asyncio.subprocess.Process) -> None:
    """What the edge agent does, over MQTT 3.1.1 to node 0: publish numbered batches, keep
    every one until ingest confirms it on the device's ``ack`` topic, and send again what is
    unconfirmed, on the same connection or, once that is lost, on a new one."""
    base = f"factory/v1/{site}/pi-1"
    start_ms = int(time.time() * 1000) - 600_000
    batches = {
        seq: encode_batch(TelemetryBatch(seq=seq, points=tuple(
            Point(f"line.t{i}", start_ms + seq * 1000 + i, float(seq)) for i in range(PER_BATCH))))
        for seq in range(BATCHES)
    }  # fmt: skip
    confirmed: set[int] = set()
    published = 0
    for _session in range(20):
        if len(confirmed) == BATCHES:
            break
        try:
            async with connect(parse_mqtt_url(mqtt_url), f"{site}-pi-1", persistent=True) as client:
                await client.subscribe(f"{base}/ack", qos=1)

                async def listen(client: Session = client) -> None:
                    async for message in client.messages:
                        confirmed.update(decode_ack(bytes(message.payload)))  # type: ignore[arg-type]

                listener = asyncio.create_task(listen())
                try:
                    for _round in range(6):
                        for seq in sorted(set(batches) - confirmed):
                            await client.publish(f"{base}/telemetry", batches[seq], qos=1, timeout_s=10)
                            published += 1
                            if published == BATCHES // 3:
                                cluster.kill(2)  # a node the device is not connected to
                            if published == BATCHES // 2:
                                worker.send_signal(signal.SIGKILL)  # a worker, with what it held unacknowledged
                            await asyncio.sleep(0.005)
                        with contextlib.suppress(TimeoutError):
                            await eventually(
                                lambda task=listener: len(confirmed) == BATCHES or task.done(), 10, "confirmed"
                            )
                        if len(confirmed) == BATCHES or listener.done():
                            break
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, MqttError):
                        await listener
        except MqttError:
            await asyncio.sleep(0.5)  # as the agent: connect again, send what is unconfirmed
    assert confirmed == set(batches)


@pytest.mark.timeout(360)
async def test_edge_agent_over_mqtt_311_to_a_cluster_that_loses_a_node(
    tmp_path: Path, database_url: str, db: psycopg.AsyncConnection[tuple[object, ...]], site: str
) -> None:
    """The real agent (simulated plant, durable buffer, confirmations) on node 0's MQTT
    listener; ingest on the JetStream consumer; node 2 killed while data flows."""
    with nats_cluster(tmp_path / "nats") as cluster:
        service = IngestService(
            IngestConfig(database_url=database_url, mqtt=parse_mqtt_url("mqtt://127.0.0.1"),
                         nats=parse_nats_url(cluster.nats_url()), client_id="worker", batch_ms=50, upkeep=None)
        )  # fmt: skip
        worker = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.subscribed.wait(), 30)
            async with SimulatedPlant() as plant:
                # NATS acknowledges an MQTT QoS 1 publish whether or not a stream stored it, so the
                # batches sent while the stream elects a new leader are lost on the way; the agent
                # sends such a batch again once it stays unconfirmed ``resend_after_s`` while later
                # ones are confirmed (default 30 s; 10 s here to keep the test short).
                path = modbus_config(tmp_path, site, cluster.mqtt_url(0), plant.modbus_port, resend_after_s=10)
                config = load_config(path)
                agent = EdgeAgent(config, tmp_path)
                task = asyncio.create_task(agent.run())
                try:
                    await eventually(lambda: service.stats.points_received > 20, 30, "the agent's points stored")
                    cluster.kill(2)
                    received = service.stats.points_received
                    await eventually(lambda: service.stats.points_received > received + 20, 60, "points after the loss")
                    # Stopped only when all it buffered is confirmed: unconfirmed batches would wait in
                    # the buffer for the agent's next start. On a loaded machine the election can take
                    # tens of seconds and a batch sent again in it is lost again: time for a few rounds.
                    await eventually(lambda: agent.publisher is not None and agent.publisher.buffer.depth_now()[0] == 0,
                                     150, "the agent's buffer confirmed")  # fmt: skip
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            total = buffered_ever(tmp_path / "buffer.db")
            assert total > 40
            assert await until_rows(db, site, total) == total  # every point buffered, stored once
            assert await _dead_letters(db, site) == 0
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
