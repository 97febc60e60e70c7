"""The agent's own tags: buffer depth and the age of its oldest point, through the buffer like
any reading, so that after an outage the database shows how the backlog grew."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from edge_agent import EdgeAgent
from edge_agent.agent import catalog
from edge_agent.buffer import Buffer
from edge_agent.config import AGENT_TAGS, EdgeConfig
from factory_servers import free_port
from simulator import SimulatedPlant

pytestmark = pytest.mark.integration


def config(modbus_port: int, every_s: float) -> EdgeConfig:
    return EdgeConfig.model_validate({
        "site": "s1", "device": "pi1", "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},  # nobody listens there
        "buffer": {"path": "buffer.db"}, "publish": {"health_every_s": every_s},
        "sources": [{"name": "boiler", "kind": "modbus", "host": "127.0.0.1", "port": modbus_port, "unit": 1, "poll_ms": 100, "tags": [
            {"name": "boiler1.drum_pressure", "table": "holding", "address": 0, "type": "int16"}]}],
    })  # fmt: skip


async def test_buffer_depth_is_reported_as_the_agents_own_tags(tmp_path: Path) -> None:
    async with SimulatedPlant() as plant:
        agent = EdgeAgent(config(plant.modbus_port, 0.3), tmp_path)
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    buffer = await Buffer.open(tmp_path / "buffer.db", 16)
    stored = await buffer.read(0, None, 10_000)
    await buffer.close()
    assert stored is not None
    depth = [p.value for p in stored.points if p.tag == "agent.buffer_points"]
    age = [p.value for p in stored.points if p.tag == "agent.buffer_oldest_s"]
    assert len(depth) >= 3
    assert depth == sorted(depth)  # the broker is away: the backlog only grows
    assert depth[-1] > depth[0] > 0
    assert age[-1] > age[0] > 0
    names = {t.name: t for t in catalog(agent.config)}
    assert names["agent.buffer_points"].unit == "points"
    assert names["agent.buffer_oldest_s"].asset == "agent"


def test_off_and_no_clash_with_a_source_tag() -> None:
    assert not set(AGENT_TAGS) & {t.name for t in catalog(config(502, 0))}
    with pytest.raises(ValueError, match="used twice"):
        EdgeConfig.model_validate({
            "site": "s1", "device": "pi1", "mqtt": {"url": "mqtt://127.0.0.1"}, "buffer": {"path": "b.db"},
            "sources": [{"name": "x", "kind": "modbus", "host": "127.0.0.1", "port": 502, "unit": 1, "tags": [
                {"name": "agent.buffer_points", "table": "holding", "address": 0, "type": "int16"}]}],
        })  # fmt: skip
