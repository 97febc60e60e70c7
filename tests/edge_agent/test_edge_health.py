"""The agent's own tags: buffer depth and the age of its oldest point, through the buffer like
any reading, so that after an outage the database shows how the backlog grew."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent import EdgeAgent
from edge_agent.agent import catalog
from edge_agent.buffer import Buffer
from edge_agent.config import AGENT_TAGS, HTTP_PORT, EdgeConfig
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


async def _get(port: int, path: str) -> tuple[str, str]:
    """The status line and body of a GET on loopback."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    reply = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    head, _, body = reply.partition("\r\n\r\n")
    return head.splitlines()[0], body


async def _started(agent: EdgeAgent) -> asyncio.Task[None]:
    task = asyncio.create_task(agent.run())
    async with asyncio.timeout(10):
        while agent.http_port is None and not task.done():
            await asyncio.sleep(0.05)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_health_is_on_by_default_on_loopback(tmp_path: Path) -> None:
    """No ``http`` key: /healthz and /metrics answer on 127.0.0.1 at the default port."""
    agent = EdgeAgent(config(free_port(), 0), tmp_path)  # no Modbus server and no broker: degraded
    assert (agent.config.http.enabled, agent.config.http.host) == (True, "127.0.0.1")
    task = await _started(agent)
    try:
        assert agent.http_port == HTTP_PORT == 9102
        status, body = await _get(HTTP_PORT, "/healthz")
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert json.loads(body)["status"] == "degraded"
        status, body = await _get(HTTP_PORT, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        assert "# TYPE " in body
    finally:
        await _stop(task)


async def test_health_can_be_turned_off(tmp_path: Path) -> None:
    data = config(free_port(), 0).model_dump(mode="json")
    agent = EdgeAgent(EdgeConfig.model_validate({**data, "http": {"enabled": False, "port": HTTP_PORT}}), tmp_path)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.sleep(1)
        assert not task.done()  # running, only without the server
        assert agent.http_port is None
        with pytest.raises(ConnectionRefusedError):
            await _get(HTTP_PORT, "/healthz")
    finally:
        await _stop(task)


async def test_port_zero_lets_agents_run_side_by_side(tmp_path: Path) -> None:
    data = config(free_port(), 0).model_dump(mode="json")
    agents = [EdgeAgent(EdgeConfig.model_validate({**data, "http": {"port": 0}}), tmp_path / str(i)) for i in range(2)]
    for i in range(2):
        (tmp_path / str(i)).mkdir()
    tasks = [await _started(agent) for agent in agents]
    try:
        ports = [agent.http_port for agent in agents]
        assert None not in ports
        assert len(set(ports)) == 2
        for port in ports:
            assert port is not None
            assert (await _get(port, "/healthz"))[0].startswith("HTTP/1.1 ")
    finally:
        for task in tasks:
            await _stop(task)


def test_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    """The port held by another process: exit status 2 and one line naming the port and the
    key that moves it, not a traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        data = config(free_port(), 0).model_dump(mode="json")
        (tmp_path / "edge.yaml").write_text(yaml.safe_dump({**data, "http": {"port": port}}))
        args = [sys.executable, "-m", "factory_cli", "edge", "run", "--config", str(tmp_path / "edge.yaml")]
        result = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (choose another with http.port in the config, or http.enabled: false)"
    )
