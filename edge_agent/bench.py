"""``factory bench edge``: tag values per second through the whole agent, with the ceiling.

A pymodbus server in a child process holds ``tags`` holding registers whose values change
on every read. The ceiling is a bare pymodbus client reading the same blocks as fast as it
can; the agent then polls them (block reads → decode → change filter → durable buffer →
MQTT with PUBACK) into a broker of the bench's own. CPU time and RSS are the agent
process's own (the server runs elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig
from factory.embedded import embedded_broker, free_port

__all__ = ["run_bench"]

SERVER = """
import asyncio, sys
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


@contextlib.asynccontextmanager
async def _server(tags: int) -> AsyncIterator[int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER.format(tags=tags, port=port), stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def ceiling(port: int, tags: int, seconds: float) -> float:
    """Tag values/s a bare client reads in blocks of 125 registers, one request in flight."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    reads, deadline = 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < deadline:
        for address in range(0, tags, 125):
            await client.read_holding_registers(address, count=min(125, tags - address), device_id=1)
            reads += min(125, tags - address)
    client.close()
    return reads / (time.perf_counter() - began)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def through_agent(port: int, mqtt_url: str, tags: int, seconds: float, workdir: Path) -> dict[str, float]:
    config = EdgeConfig.model_validate({
        "site": "bench", "device": "edge", "mqtt": {"url": mqtt_url},
        "buffer": {"path": str(workdir / "buffer.db"), "max_mb": 512},
        "publish": {"max_points": 2000, "max_interval_ms": 200},
        "sources": [{"name": "plc", "kind": "modbus", "host": "127.0.0.1", "port": port, "poll_ms": 10,
                     "tags": [{"name": f"plc.r{i}", "table": "holding", "address": i, "type": "uint16"}
                              for i in range(tags)]}],
    })  # fmt: skip
    agent = EdgeAgent(config, workdir)
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(2)  # connected, first polls done
    published, cpu, began = agent.published_points, time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    values = agent.published_points - published
    cpu_s, wall = time.process_time() - cpu, time.perf_counter() - began
    rss = _rss_mb()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {"values_s": values / wall, "cpu_s_per_million": cpu_s / max(values, 1) * 1e6, "rss_mb": rss,
            "cpu_share": cpu_s / wall}  # fmt: skip


async def run_bench(tags: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="factory-bench-edge-") as tmp:
        workdir = Path(tmp)
        async with _server(tags) as port, embedded_broker(workdir / "mqtt") as mqtt_url:
            bare = await ceiling(port, tags, seconds)
            agent = await through_agent(port, mqtt_url, tags, seconds, workdir)
    return {
        "bench": "edge",
        "tags": tags,
        "bare_client_values_s": round(bare),
        "agent_values_s": round(agent["values_s"]),
        "agent_vs_bare": round(agent["values_s"] / bare, 3),
        "cpu_s_per_million_values": round(agent["cpu_s_per_million"], 2),  # = CPU microseconds per value
        "agent_cpu_share_of_a_core": round(agent["cpu_share"], 3),
        "rss_mb": round(agent["rss_mb"], 1),
    }


def main(tags: int, seconds: float) -> str:
    return json.dumps(asyncio.run(run_bench(tags, seconds)))
