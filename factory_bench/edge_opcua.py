"""``factory bench edge --opcua``: subscribed value changes carried end to end.

An asyncua server in a child process holds ``nodes`` variables and writes a new value
into every one of them ``rate_hz`` times a second. The ceiling is a bare asyncua
subscription client (the same calls the agent makes) counting data-change notifications,
measured just before and just after the agent in the same run; the agent (a ``factory
edge run`` child process) subscribes to the same nodes and publishes every change
through the change filter, the durable buffer and MQTT with PUBACK.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua.client.client import Client

from factory_bench.edge import agent, child, measure, progress, wait
from factory_servers import embedded_broker, free_port

__all__ = ["OpcuaBenchOptions", "run_opcua_bench"]

SERVER = """
import asyncio
from asyncua import Server, ua

async def main():
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:{port}/bench")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:factory:bench")
    assert ns == 2, ns
    folder = await server.nodes.objects.add_folder(ns, "bench")
    ids = [(await folder.add_variable(ua.NodeId(f"n{{i}}", ns), f"n{{i}}", 0.0)).nodeid for i in range({nodes})]
    loop = asyncio.get_running_loop()
    async with server:
        tick, next_at = 0, loop.time()
        while True:
            tick += 1
            for i, nodeid in enumerate(ids):
                value = ua.DataValue(ua.Variant(i + tick / 1000, ua.VariantType.Double))
                await server.write_attribute_value(nodeid, value)
            next_at = max(next_at + 1 / {rate_hz}, loop.time())
            await asyncio.sleep(next_at - loop.time())

asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class OpcuaBenchOptions:
    nodes: int = 1000
    rate_hz: float = 10.0
    seconds: float = 10.0


class _Count:
    def __init__(self) -> None:
        self.changes = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.changes += 1


async def bare_client(endpoint: str, node_ids: list[str], sampling_ms: int, seconds: float, label: str) -> float:
    """Data changes/s a bare asyncua subscription client receives."""
    client = Client(endpoint, timeout=10)
    await client.connect()
    try:
        count = _Count()
        subscription = await client.create_subscription(sampling_ms, count)
        await subscription.subscribe_data_change([client.get_node(n) for n in node_ids])
        await wait(2, f"{label}, subscribing")
        changes, began = count.changes, time.perf_counter()
        await wait(seconds, label)
        return (count.changes - changes) / (time.perf_counter() - began)
    finally:
        await client.disconnect()


@contextlib.asynccontextmanager
async def opcua_server(options: OpcuaBenchOptions) -> AsyncIterator[str]:
    port = free_port()
    script = SERVER.format(port=port, nodes=options.nodes, rate_hz=options.rate_hz)
    async with child([sys.executable, "-c", script], port, "the asyncua server"):
        yield f"opc.tcp://127.0.0.1:{port}/bench"


async def run_opcua_bench(options: OpcuaBenchOptions) -> dict[str, Any]:
    node_ids = [f"ns=2;s=n{i}" for i in range(options.nodes)]
    sampling_ms = round(1000 / options.rate_hz)
    with tempfile.TemporaryDirectory(prefix="factory-bench-edge-opcua-") as tmp:
        workdir = Path(tmp)
        async with embedded_broker(workdir / "mqtt") as mqtt_url, opcua_server(options) as endpoint:
            await wait(3, f"asyncua server writing {options.nodes} nodes at {options.rate_hz:g} Hz")
            bare = [await bare_client(endpoint, node_ids, sampling_ms, options.seconds, "bare asyncua client (before)")]
            config = {
                "site": "bench", "device": "edge", "mqtt": {"url": mqtt_url},
                "buffer": {"path": str(workdir / "buffer.db")},
                "publish": {"max_points": 2000, "max_interval_ms": 200, "confirm": "broker"},  # no ingest here
                "sources": [{"name": "ua", "kind": "opcua", "endpoint": endpoint, "mode": "subscribe",
                             "sampling_ms": sampling_ms, "timeout_ms": 10_000,
                             "tags": [{"name": f"ua.n{i}", "node": n} for i, n in enumerate(node_ids)]}],
            }  # fmt: skip
            async with agent(config, workdir) as running:
                await wait(5, "agent subscribing")
                window = await measure(running, options.seconds, f"agent, {options.nodes} nodes subscribed")
            bare.append(
                await bare_client(endpoint, node_ids, sampling_ms, options.seconds, "bare asyncua client (after)")
            )
    progress("")
    ceiling = sum(bare) / len(bare)
    return {
        "bench": "edge-opcua",
        "nodes": options.nodes,
        "rate_hz": options.rate_hz,
        "offered_changes_s": round(options.nodes * options.rate_hz),
        "bare_client_changes_s": round(ceiling),
        "agent_values_s": round(window.values_s),
        "agent_vs_bare": round(window.values_s / ceiling, 3),
        "cpu_us_per_value": round(window.cpu_us_per_value, 2),
        "agent_cpu_share_of_a_core": round(window.cpu_s / window.wall_s, 3),
        "rss_mb": round(window.rss_mb, 1),
    }
