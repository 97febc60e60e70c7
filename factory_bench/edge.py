"""``factory bench edge``: the edge agent against the ceiling of its own client library.

The agent runs as it does in production, a ``factory edge run`` child process with a
config file, against a pymodbus server in another child process, publishing into a
broker of the bench's own. Its CPU time and RSS come from /proc, its counts from its own
/metrics. The server's values change on every read, so every value polled is published.

- throughput: ``tags`` holding registers polled back to back (poll_ms 1) through block
  reads → decode → change filter → durable buffer → MQTT with PUBACK. The ceiling is a
  bare pymodbus client (the same client class and settings) reading the same planned
  blocks from the same server, one request in flight. ``rounds`` rounds of ``seconds``
  each: the bare client, then the agent (frozen with SIGSTOP while the bare client runs),
  so each ratio compares two windows measured seconds apart; the median is reported.
- idle: 500 tags polled every second: the agent's share of a core, and its RSS.
- overload: the throughput load while the broker is reached through a link throttled to
  ``link_kb_s``, so the agent reads far more than it can send; the buffer fills up to
  ``max_mb`` and drops its oldest. RSS at the start and at the end of the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.config import ModbusSource
from edge_agent.registers import Block, plan_blocks
from factory_servers import embedded_broker, free_port

__all__ = ["Agent", "BenchOptions", "agent", "child", "measure", "progress", "run_bench", "wait"]

SERVER = """
import asyncio
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

async def changing(function_code, start_address, address, count, registers, values):
    if values is None:  # every read sees new values, so every poll publishes every tag
        for i in range(address - start_address, address - start_address + count):
            registers[i] = (registers[i] + 1) & 0xFFFF
    return None

async def main():
    device = SimDevice(id=1, simdata=[SimData(0, count={tags}, values=0, datatype=DataType.REGISTERS)],
                       action=changing)
    server = ModbusTcpServer([device], address=("127.0.0.1", {port}))
    await server.serve_forever()

asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    tags: int = 2000
    seconds: float = 10.0
    rounds: int = 3
    idle_tags: int = 500
    idle_seconds: float = 30.0
    overload_seconds: float = 60.0
    link_kb_s: int = 200
    max_mb: int = 64


def progress(text: str) -> None:
    """One line on stderr, rewritten in place."""
    sys.stderr.write(f"\r\x1b[K{text}")
    sys.stderr.flush()


async def wait(seconds: float, label: str) -> None:
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        progress(f"{label}: {elapsed:4.0f}/{seconds:.0f} s")
        await asyncio.sleep(min(1.0, seconds - elapsed))
    progress("")


async def until_listening(port: int, proc: asyncio.subprocess.Process, what: str) -> None:
    for _ in range(400):
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {port} after 20 s")


@contextlib.asynccontextmanager
async def child(
    args: list[str], port: int, what: str, log: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[int]:
    """A child process, until it listens on ``port``; stopped with SIGTERM (SIGKILL after 20 s)."""
    with open(log or os.devnull, "wb") as err:  # noqa: ASYNC230 - opened once, written by the child
        proc = await asyncio.create_subprocess_exec(*args, stderr=err, env=env)
    try:
        await until_listening(port, proc, what)
        yield proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                progress(f"{what} did not stop within 20 s of SIGTERM: killed\n")
                proc.kill()
                await proc.wait()


class Agent:
    """A running ``factory edge run``: its CPU time, RSS and /metrics counters."""

    def __init__(self, pid: int, metrics_port: int) -> None:
        self.pid = pid
        self.metrics_port = metrics_port

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    async def metrics(self) -> dict[str, float]:
        """Every metric, summed over its labels."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        sums: dict[str, float] = {}
        for line in data.decode().split("\r\n\r\n", 1)[1].splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                key = name.split("{", 1)[0]
                sums[key] = sums.get(key, 0.0) + float(value)
        return sums


@contextlib.asynccontextmanager
async def agent(config: dict[str, Any], workdir: Path) -> AsyncIterator[Agent]:
    """``factory edge run`` with ``config`` (plus a metrics port), started from a config file."""
    port = free_port()
    path = workdir / "edge.yaml"
    path.write_text(yaml.safe_dump({**config, "http": {"host": "127.0.0.1", "port": port}}))
    args = [sys.executable, "-m", "factory_cli", "--log-level", "WARNING", "edge", "run", "--config", str(path)]
    async with child(args, port, "the agent", workdir / "agent.log") as pid:
        yield Agent(pid, port)


@dataclass(frozen=True, slots=True)
class Window:
    """What the agent did over a measured window."""

    wall_s: float
    values: float  # points acknowledged by the broker
    reads: float  # source reads (Modbus blocks, OPC UA bursts)
    cpu_s: float
    rss_mb: float

    @property
    def values_s(self) -> float:
        return self.values / self.wall_s

    @property
    def cpu_us_per_value(self) -> float:
        return self.cpu_s / max(self.values, 1) * 1e6


async def measure(running: Agent, seconds: float, label: str) -> Window:
    before, cpu, began = await running.metrics(), running.cpu_s(), time.perf_counter()
    await wait(seconds, label)
    after, cpu_s, wall = await running.metrics(), running.cpu_s() - cpu, time.perf_counter() - began

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return Window(wall, delta("factory_edge_points_published_total"), delta("factory_edge_polls_total"), cpu_s,
                  running.rss_mb())  # fmt: skip


def modbus_config(mqtt_url: str, port: int, tags: int, *, poll_ms: int, buffer: Path, max_mb: int) -> dict[str, Any]:
    return {
        "site": "bench", "device": "edge", "mqtt": {"url": mqtt_url},
        "buffer": {"path": str(buffer), "max_mb": max_mb},
        # no ingest runs here: the broker's PUBACK is the end of the line
        "publish": {"max_points": 2000, "max_interval_ms": 200, "confirm": "broker"},
        "sources": [{"name": "plc", "kind": "modbus", "host": "127.0.0.1", "port": port, "poll_ms": poll_ms,
                     "tags": [{"name": f"plc.r{i}", "table": "holding", "address": i, "type": "uint16"}
                              for i in range(tags)]}],
    }  # fmt: skip


def planned_blocks(config: dict[str, Any]) -> list[Block]:
    """The blocks the agent reads for ``config``'s source: the bare client reads the same."""
    source = ModbusSource.model_validate(config["sources"][0])
    return plan_blocks(source, source.tags)


async def bare_client(port: int, blocks: list[Block], seconds: float, label: str) -> tuple[float, float]:
    """Values/s and reads/s of a bare pymodbus client reading ``blocks`` round and round."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)  # as the agent's
    await client.connect()
    values = reads = 0
    began = time.perf_counter()
    deadline, shown = began + seconds, began
    while (now := time.perf_counter()) < deadline:
        for block in blocks:
            response = await client.read_holding_registers(block.address, count=block.count, device_id=1)
            if response.isError():
                raise RuntimeError(f"the bench server answered {response}")
        values += sum(len(b.tags) for b in blocks)
        reads += len(blocks)
        if now - shown >= 1:
            progress(f"{label}: {now - began:4.0f}/{seconds:.0f} s")
            shown = now
    progress("")
    wall = time.perf_counter() - began
    client.close()
    return values / wall, reads / wall


@contextlib.asynccontextmanager
async def modbus_server(tags: int) -> AsyncIterator[int]:
    port = free_port()
    async with child([sys.executable, "-c", SERVER.format(tags=tags, port=port)], port, "the pymodbus server"):
        yield port


@contextlib.asynccontextmanager
async def throttled(port: int, bytes_per_s: int) -> AsyncIterator[int]:
    """A TCP relay to ``port`` on 127.0.0.1 that passes at most ``bytes_per_s`` upstream."""

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, rate: int | None) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(4096):
                sink.write(data)
                await sink.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        sink.close()

    relays: set[asyncio.Future[Any]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        both = asyncio.gather(pipe(reader, up_writer, bytes_per_s), pipe(up_reader, writer, None))
        relays.add(both)
        await both

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    async with server:
        yield int(server.sockets[0].getsockname()[1])
        if relays:  # both ends are closing: let the relays see it rather than cancel them
            await asyncio.wait(relays, timeout=5)


async def throughput(options: BenchOptions, mqtt_url: str, workdir: Path) -> dict[str, float]:
    """Rounds of (bare client, agent) back to back, the agent frozen (SIGSTOP) while the bare
    client runs: each ratio compares two windows seconds apart, whatever else the machine does."""
    async with modbus_server(options.tags) as port:
        config = modbus_config(mqtt_url, port, options.tags, poll_ms=1, buffer=workdir / "throughput.db", max_mb=512)
        blocks = planned_blocks(config)
        async with agent(config, workdir) as running:
            await wait(3, "agent warming up")
            bare: list[tuple[float, float]] = []
            windows: list[Window] = []
            for round_ in range(1, options.rounds + 1):
                os.kill(running.pid, signal.SIGSTOP)
                try:
                    bare.append(
                        await bare_client(port, blocks, options.seconds, f"round {round_}: bare pymodbus client")
                    )
                finally:
                    os.kill(running.pid, signal.SIGCONT)
                await asyncio.sleep(0.5)
                windows.append(await measure(running, options.seconds, f"round {round_}: agent, {options.tags} tags"))
    ratios = [w.values_s / b[0] for w, b in zip(windows, bare, strict=True)]
    cpu_s, values, wall = (sum(getattr(w, f) for w in windows) for f in ("cpu_s", "values", "wall_s"))
    return {
        "rounds": options.rounds,
        "bare_client_values_s": round(statistics.median(b[0] for b in bare)),
        "bare_client_reads_s": round(statistics.median(b[1] for b in bare)),
        "agent_values_s": round(statistics.median(w.values_s for w in windows)),
        "agent_reads_s": round(statistics.median(w.reads / w.wall_s for w in windows)),
        "agent_vs_bare": round(statistics.median(ratios), 3),  # the median of the rounds' ratios
        "cpu_us_per_value": round(cpu_s / max(values, 1) * 1e6, 2),  # = CPU seconds per million values
        "agent_cpu_share_of_a_core": round(cpu_s / wall, 3),
        "rss_mb": round(windows[-1].rss_mb, 1),
    }


async def idle(options: BenchOptions, mqtt_url: str, workdir: Path) -> dict[str, float]:
    async with modbus_server(options.idle_tags) as port:
        config = modbus_config(mqtt_url, port, options.idle_tags, poll_ms=1000, buffer=workdir / "idle.db", max_mb=512)
        async with agent(config, workdir) as running:
            await wait(5, "agent warming up")
            window = await measure(running, options.idle_seconds, f"agent, {options.idle_tags} tags every second")
    return {
        "idle_tags": options.idle_tags,
        "idle_values_s": round(window.values_s),
        "idle_cpu_share_of_a_core": round(window.cpu_s / window.wall_s, 4),
        "idle_rss_mb": round(window.rss_mb, 1),
    }


async def overload(options: BenchOptions, mqtt_url: str, workdir: Path) -> dict[str, float]:
    """The throughput load through a slow link to the broker: memory must stay flat."""
    broker_port = int(mqtt_url.rsplit(":", 1)[1])
    async with throttled(broker_port, options.link_kb_s * 1000) as slow, modbus_server(options.tags) as port:
        url = f"mqtt://127.0.0.1:{slow}"
        config = modbus_config(
            url, port, options.tags, poll_ms=1, buffer=workdir / "overload.db", max_mb=options.max_mb
        )
        async with agent(config, workdir) as running:
            await wait(5, "agent warming up")
            start, began, peak = running.rss_mb(), await running.metrics(), 0.0
            deadline = time.monotonic() + options.overload_seconds
            while (left := deadline - time.monotonic()) > 0:
                peak = max(peak, running.rss_mb())
                progress(f"overload ({options.link_kb_s} kB/s to the broker): {left:4.0f} s left, "
                         f"RSS {running.rss_mb():.1f} MB")  # fmt: skip
                await asyncio.sleep(min(1.0, left))
            progress("")
            end, ended = running.rss_mb(), await running.metrics()
    seconds = options.overload_seconds

    def rate(name: str) -> float:
        return (ended.get(name, 0.0) - began.get(name, 0.0)) / seconds

    return {
        "overload_seconds": seconds,
        "overload_link_kb_s": options.link_kb_s,
        "overload_polled_values_s": round(rate("factory_edge_points_emitted_total")),
        "overload_published_values_s": round(rate("factory_edge_points_published_total")),
        "overload_buffered_points": round(ended.get("factory_edge_buffer_points", 0.0)),
        "overload_dropped_points": round(ended.get("factory_edge_buffer_dropped_points_total", 0.0)),
        "overload_rss_start_mb": round(start, 1),
        "overload_rss_end_mb": round(end, 1),
        "overload_rss_max_mb": round(max(peak, end), 1),
    }


async def run_bench(options: BenchOptions) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="factory-bench-edge-") as tmp:
        workdir = Path(tmp)
        async with embedded_broker(workdir / "mqtt") as mqtt_url:
            result: dict[str, Any] = {"bench": "edge", "tags": options.tags}
            result |= await throughput(options, mqtt_url, workdir)
            result |= await idle(options, mqtt_url, workdir)
            result |= await overload(options, mqtt_url, workdir)
    return result
