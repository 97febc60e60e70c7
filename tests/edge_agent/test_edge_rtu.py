"""Modbus RTU over a real serial link (a pty pair made by socat) with pymodbus' RTU server at
the other end: one bus arbiter per port, the inter-frame delay, and a dead slave beside a
live one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from modbus_servers import rtu_server, serial_link

from edge_agent import EdgeAgent
from edge_agent.config import EdgeConfig, ModbusSource
from edge_agent.modbus import ModbusReader, poll_forever
from factory.mqtt import connect, parse_mqtt_url
from factory.wire import Point, Quality

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE, DEAD = 1, 2


def rtu_source(name: str, port: str, unit: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "kind": "modbus", "transport": "rtu", "serial_port": port, "baudrate": 38400,
        "parity": "N", "unit": unit, "poll_ms": 100, "timeout_ms": 400, "inter_frame_ms": 20,
        "tags": [
            {"name": f"{name}.level", "table": "holding", "address": 0, "type": "int16", "scale": 0.1},
            {"name": f"{name}.flow", "table": "holding", "address": 1, "type": "float32"},
            {"name": f"{name}.pump_on", "table": "coil", "address": 2, "type": "bool"},
        ],
        **extra,
    }  # fmt: skip


async def test_dead_slave_never_holds_up_the_live_one(tmp_path: Path) -> None:
    """Both units polled side by side for 4 s through one arbiter: every poll of the live
    unit reads good values; the dead unit's tags read bad, and it is asked less and less."""
    with serial_link(tmp_path) as (device_port, master_port):
        async with rtu_server(device_port, units=(LIVE,)) as server:
            await server.set(LIVE, "holding", 0, [523, 0x4148, 0x0000])  # 52.3 and 12.5
            await server.set(LIVE, "coil", 2, [True])
            live = ModbusSource.model_validate(rtu_source("tank", master_port, LIVE))
            dead = ModbusSource.model_validate(rtu_source("press", master_port, DEAD))
            polls: dict[str, list[list[Point]]] = {"tank": [], "press": []}

            async def poll(src: ModbusSource) -> None:
                async with ModbusReader(src) as reader:
                    for period, blocks in reader.poll_groups().items():
                        async for readings in poll_forever(reader, period, blocks):
                            polls[src.name].append([p for reading in readings for p in reading.points()])

            tasks = [asyncio.create_task(poll(live)), asyncio.create_task(poll(dead))]
            await asyncio.sleep(4)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            requests = list(server.requests)
    assert len(polls["tank"]) >= 15  # 100 ms polls, held up only by three 400 ms timeouts of the other
    for points in polls["tank"]:
        assert {p.tag: (p.value, p.quality) for p in points} == {
            "tank.level": (52.3, Quality.GOOD), "tank.flow": (12.5, Quality.GOOD), "tank.pump_on": (True, Quality.GOOD)
        }  # fmt: skip
    assert polls["press"]
    assert all(p.value is None and p.quality is Quality.BAD for points in polls["press"] for p in points)
    dead_asked = [r for r in requests if r.unit == DEAD]
    assert 1 <= len(dead_asked) <= 4  # rests of 1, 2, 4 s after each miss, not every 100 ms (40 polls)
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= 0.018  # the inter-frame delay (20 ms) between every two requests on the bus


async def test_agent_publishes_live_slave_and_marks_dead_one_bad(tmp_path: Path, mqtt_url: str, site: str) -> None:
    """The whole agent, two units on one serial port, to Mosquitto: the live unit's points and
    a later change all arrive with quality good; the dead unit's arrive with quality bad."""
    with serial_link(tmp_path) as (device_port, master_port):
        async with rtu_server(device_port, units=(LIVE,)) as server:
            await server.set(LIVE, "holding", 0, [523, 0x4148, 0x0000])
            config = EdgeConfig.model_validate({
                "site": site, "device": "pi1", "mqtt": {"url": mqtt_url}, "buffer": {"path": "buffer.db"},
                "publish": {"max_points": 50, "max_interval_ms": 100},
                "sources": [rtu_source("tank", master_port, LIVE), rtu_source("press", master_port, DEAD)],
            })  # fmt: skip
            seen: list[dict[str, Any]] = []
            async with connect(parse_mqtt_url(mqtt_url), "") as client:
                await client.subscribe(f"factory/v1/{site}/pi1/telemetry", qos=1)
                agent = asyncio.create_task(EdgeAgent(config, tmp_path).run())
                try:
                    async with asyncio.timeout(20):
                        await _collect(client, seen, lambda: {"tank.level", "press.level"} <= _tags(seen))
                        await server.set(LIVE, "holding", 0, [611])
                        await _collect(client, seen, lambda: 61.1 in _values(seen, "tank.level"))
                finally:
                    agent.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await agent
    points = [p for batch in seen for p in batch["points"]]
    live = [p for p in points if p["t"].startswith("tank.")]
    dead = [p for p in points if p["t"].startswith("press.")]
    assert {(p["t"], p["v"]) for p in live} >= {("tank.level", 52.3), ("tank.flow", 12.5), ("tank.pump_on", False),
                                                ("tank.level", 61.1)}  # fmt: skip
    assert all(p.get("q", 0) == 0 for p in live)
    assert {p["t"] for p in dead} == {"press.level", "press.flow", "press.pump_on"}
    assert all(p["q"] == 2 and p["v"] is None for p in dead)


def _tags(seen: list[dict[str, Any]]) -> set[str]:
    return {p["t"] for batch in seen for p in batch["points"]}


def _values(seen: list[dict[str, Any]], tag: str) -> list[Any]:
    return [p["v"] for batch in seen for p in batch["points"] if p["t"] == tag]


async def _collect(client: Any, seen: list[dict[str, Any]], done: Any) -> None:
    async for message in client.messages:
        seen.append(json.loads(message.payload))
        if done():
            return
