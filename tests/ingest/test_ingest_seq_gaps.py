"""Lost batches (ingest 0008, docs/ingest.md "Lost batches"): a batch number that never
arrives becomes a seq_gap event after the grace period, with its range, and is counted on
/metrics; numbers arriving out of order, a restart of the agent and a device whose count
starts over are not gaps. Batches are published through the real broker to a real ingest;
the agent test runs a real edge agent against a real Modbus server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import publish, running_ingest, until
from modbus_servers import tcp_server

from edge_agent import EdgeAgent
from edge_agent.config import EdgeConfig
from factory.wire import batch_payload
from ingest.metrics import metrics
from ingest.retention import Retention
from ingest.upkeep import Upkeep, UpkeepConfig

pytestmark = pytest.mark.integration
Conn = psycopg.AsyncConnection[tuple[object, ...]]


def _batch(seq: int) -> bytes:
    point = b'{"t":"boiler1.drum_pressure","ts":%d,"v":%d,"q":0}' % (
        int(time.time() * 1000) - 60_000 + seq % 10_000,
        seq % 10_000,
    )
    return batch_payload(seq, hist=False, points=point)


async def _send(mqtt_url: str, site: str, device: str, seqs: list[int]) -> None:
    await publish(mqtt_url, [(f"factory/v1/{site}/{device}/telemetry", _batch(s)) for s in seqs])


async def _missing(db: Conn, site: str, device: str) -> list[tuple[object, ...]]:
    cur = await db.execute(
        "SELECT m.first, m.last FROM telemetry.seq_missing m JOIN telemetry.device d ON d.id = m.device_id"
        " WHERE d.site = %s AND d.name = %s ORDER BY m.first",
        (site, device),
    )
    return await cur.fetchall()


async def _events(db: Conn, site: str, kind: str) -> list[tuple[object, ...]]:
    cur = await db.execute(
        "SELECT d.name, e.data FROM telemetry.event e JOIN telemetry.device d ON d.id = e.device_id"
        " WHERE d.site = %s AND e.kind = %s ORDER BY e.time, d.name",
        (site, kind),
    )
    return await cur.fetchall()


async def _declare(database_url: str, db: Conn, site: str, grace_s: float = 0.0) -> dict[str, int]:
    """One upkeep step declaring gaps (of every site: tests running beside may add theirs),
    and the lost batches it counted for this test's site."""
    upkeep = Upkeep(database_url, UpkeepConfig(seq_grace_s=grace_s), Retention())
    await upkeep._declare_gaps(db)
    return {key: n for key, n in upkeep.stats.lost_batches.items() if key.startswith(f"{site}/")}


async def test_a_dropped_batch_becomes_a_gap_and_late_ones_do_not(
    database_url: str, mqtt_url: str, site: str, db: Conn
) -> None:
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await _send(mqtt_url, site, "pi1", [1, 2, 3, 5])  # 4 dropped on purpose
        await until(ingest, lambda: ingest.stats.messages == 4)
        await _send(mqtt_url, site, "pi1", [8, 7])  # 6 dropped; 7 after 8, in the same flush
        await until(ingest, lambda: ingest.stats.messages == 6)
        await _send(mqtt_url, site, "pi1", [10])
        await until(ingest, lambda: ingest.stats.messages == 7)
        assert await _missing(db, site, "pi1") == [(4, 4), (6, 6), (9, 9)]
        await _send(mqtt_url, site, "pi1", [9])  # late, within the grace period: no gap
        await until(ingest, lambda: ingest.stats.messages == 8)
        assert await _missing(db, site, "pi1") == [(4, 4), (6, 6)]

        assert await _declare(database_url, db, site, grace_s=3600) == {}  # still in grace
        assert await _declare(database_url, db, site) == {f"{site}/pi1": 2}
        [(device, data)] = await _events(db, site, "seq_gap")
        assert (device, data["ranges"], data["batches"]) == ("pi1", [[4, 4], [6, 6]], 2)  # type: ignore[index]
        assert await _missing(db, site, "pi1") == []
        assert await _declare(database_url, db, site) == {}  # declared once

        ingest.upkeep = Upkeep(database_url, UpkeepConfig(), Retention())
        ingest.upkeep.stats.lost_batches = {f"{site}/pi1": 2}
        lost = next(m for m in metrics(ingest) if m.name == "factory_ingest_lost_batches_total")
        assert list(lost.read()) == [((("device", f"{site}/pi1"),), 2.0)]


async def test_a_count_that_starts_over_is_a_reset_not_a_gap(
    database_url: str, mqtt_url: str, site: str, db: Conn
) -> None:
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await _send(mqtt_url, site, "pi2", [5000, 5001])
        await until(ingest, lambda: ingest.stats.messages == 2)
        await _send(mqtt_url, site, "pi2", [1, 2, 4])  # a new buffer: numbering from 1 (3 lost on the way)
        await until(ingest, lambda: ingest.stats.messages == 5)
    assert await _events(db, site, "seq_reset") == [("pi2", {"from": 5001, "to": 1})]
    assert await _missing(db, site, "pi2") == [(3, 3)]
    cur = await db.execute(
        "SELECT s.high FROM telemetry.device_seq s JOIN telemetry.device d ON d.id = s.device_id WHERE d.site = %s",
        (site,),
    )
    assert await cur.fetchall() == [(4,)]


async def test_two_workers_flushing_one_device_out_of_order_leave_no_gap(
    database_url: str, mqtt_url: str, site: str, db: Conn
) -> None:
    """Two ingest workers share the device's batches (a shared subscription): each sees every
    other number, their flushes interleave, and nothing is missing at the end."""
    shared = {"shared_group": f"g-{site}"}
    async with (
        running_ingest(database_url, mqtt_url, site, client_id=f"a-{site}", **shared) as a,
        running_ingest(database_url, mqtt_url, site, client_id=f"b-{site}", **shared) as b,
    ):
        await _send(mqtt_url, site, "pi3", list(range(1, 201)))
        await until(a, lambda: a.stats.messages + b.stats.messages == 200, timeout=30)
        assert a.stats.messages > 0
        assert b.stats.messages > 0
    assert await _missing(db, site, "pi3") == []
    cur = await db.execute(
        "SELECT s.high FROM telemetry.device_seq s JOIN telemetry.device d ON d.id = s.device_id WHERE d.site = %s",
        (site,),
    )
    assert await cur.fetchall() == [(200,)]


@contextlib.asynccontextmanager
async def _agent(tmp_path: Path, mqtt_url: str, site: str, port: int) -> Any:
    source = {"name": "tank", "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1, "poll_ms": 100,
              "tags": [{"name": "tank.level", "table": "holding", "address": 0, "type": "uint16", "max_age_ms": 0}]}  # fmt: skip
    config = EdgeConfig.model_validate({
        "site": site, "device": "pi1", "mqtt": {"url": mqtt_url}, "buffer": {"path": "buffer.db"},
        "publish": {"max_interval_ms": 200}, "http": {"port": 0}, "sources": [source],
    })  # fmt: skip
    agent = EdgeAgent(config, tmp_path)
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_agent_restarted_mid_stream_leaves_no_gap(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Conn
) -> None:
    async with tcp_server() as (_server, port), running_ingest(database_url, mqtt_url, site) as ingest:
        for _ in range(3):  # run, stop cleanly, start again on the same buffer
            async with _agent(tmp_path, mqtt_url, site, port) as agent:
                await until(
                    ingest, lambda: agent.publisher is not None and agent.publisher.stats.published_batches >= 5
                )
        sent = ingest.stats.messages
        await asyncio.sleep(1)  # anything still on its way
        assert await _missing(db, site, "pi1") == []
        assert await _declare(database_url, db, site) == {}
        cur = await db.execute(
            "SELECT s.high FROM telemetry.device_seq s JOIN telemetry.device d ON d.id = s.device_id WHERE d.site = %s",
            (site,),
        )
        [(high,)] = await cur.fetchall()
        assert isinstance(high, int)
        assert high >= 15
        assert sent >= 15


async def test_the_largest_batch_numbers_are_tracked_without_overflow(
    database_url: str, mqtt_url: str, site: str, db: Conn
) -> None:
    top = 2**63 - 1
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await _send(mqtt_url, site, "pi4", [top - 3, top])
        await until(ingest, lambda: ingest.stats.messages == 2)
        await _send(mqtt_url, site, "pi4", [top - 1])
        await until(ingest, lambda: ingest.stats.messages == 3)
        assert ingest.stats.dead_letters == 0
    assert await _missing(db, site, "pi4") == [(top - 2, top - 2)]
