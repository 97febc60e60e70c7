"""The write-back record: replies on ``cmd/reply`` from a running agent land in
``telemetry.write_back`` through the real broker, once each; broken replies are dead-lettered;
no row can be changed or deleted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import publish, running_ingest, until
from modbus_servers import tcp_server

from edge_agent import EdgeAgent
from edge_agent.config import EdgeConfig
from factory.commands import WriteReply, WriteRequest, decode_reply, encode_reply, encode_request
from factory.mqtt import connect, parse_mqtt_url

pytestmark = pytest.mark.integration
NOW_MS = int(time.time() * 1000)

TAGS: list[dict[str, Any]] = [
    {"name": "tank.setpoint", "table": "holding", "address": 10, "type": "float32", "writable": True, "max": 100},
    {"name": "tank.level", "table": "holding", "address": 0, "type": "uint16"},
]


async def write_backs(db: psycopg.AsyncConnection[tuple[object, ...]], site: str) -> list[tuple[object, ...]]:
    cur = await db.execute(
        """SELECT d.name, w.request_id, w.tag, w.value, w.requested_by, w.ok, w.error, w.reason,
                  (extract(epoch FROM w.time) * 1000)::bigint
           FROM telemetry.write_back w JOIN telemetry.device d ON d.id = w.device_id
           WHERE d.site = %s ORDER BY w.id""",
        (site,),
    )
    return await cur.fetchall()


@contextlib.asynccontextmanager
async def agent_at(tmp_path: Path, mqtt_url: str, site: str, port: int) -> AsyncIterator[EdgeAgent]:
    """A running agent for device pi1, its Modbus source connected and its cmd topic listened to."""
    source = {"name": "tank", "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1, "poll_ms": 200,
              "tags": TAGS}  # fmt: skip
    config = EdgeConfig.model_validate({
        "site": site, "device": "pi1", "mqtt": {"url": mqtt_url}, "buffer": {"path": "buffer.db"}, "sources": [source],
    })  # fmt: skip
    agent = EdgeAgent(config, tmp_path)
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(15):
            while not (agent.publisher and agent.publisher.listening.is_set() and all(s.ready for s in agent.sources)):
                await asyncio.sleep(0.05)
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ask(mqtt_url: str, site: str, requests: list[WriteRequest]) -> list[WriteReply]:
    """Send write-backs to pi1 as a sender would, and wait for each one's reply."""
    replies: dict[str | None, WriteReply] = {}
    async with connect(parse_mqtt_url(mqtt_url), "") as client:
        await client.subscribe(f"factory/v1/{site}/pi1/cmd/reply", qos=1)
        for request in requests:
            await client.publish(f"factory/v1/{site}/pi1/cmd", encode_request(request), qos=1)
        async with asyncio.timeout(15):
            async for message in client.messages:
                reply = decode_reply(message.payload)
                replies[reply.id] = reply
                if len(replies) == len(requests):
                    break
    return [replies[r.id] for r in requests]


async def test_a_write_back_and_a_refusal_are_recorded_with_who_what_and_outcome(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    async with (
        tcp_server() as (server, port),
        running_ingest(database_url, mqtt_url, site) as ingest,
        agent_at(tmp_path, mqtt_url, site, port),
    ):
        done, refused = await ask(mqtt_url, site, [
            WriteRequest("sp-1", "tank.setpoint", 42.5, by="ana.lopez"),
            WriteRequest("sp-2", "tank.level", 7, by="Shift lead B"),
        ])  # fmt: skip
        await until(ingest, lambda: ingest.stats.write_backs == 2)
        assert await server.get(1, "holding", 10, 2) == list(struct.unpack(">HH", struct.pack(">f", 42.5)))
    assert (done.ok, done.by, done.value, refused.ok, refused.error) == (True, "ana.lopez", 42.5, False, "not_writable")
    assert await write_backs(db, site) == [
        ("pi1", "sp-1", "tank.setpoint", 42.5, "ana.lopez", True, None, None, done.ts),
        ("pi1", "sp-2", "tank.level", 7, "Shift lead B", False, "not_writable", refused.reason, refused.ts),
    ]
    assert "not writable" in (refused.reason or "")
    assert ingest.stats.write_backs_recorded == 2
    assert ingest.stats.dead_letters == 0


async def test_a_redelivered_reply_is_stored_once(
    database_url: str, mqtt_url: str, site: str, db: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    """At-least-once delivery: the same reply in one flush, then again in a later one; a reply
    without an id (a request too broken to read one) likewise; a sender that predates ``by``.
    The device is one ingest has never seen: the reply registers it, as telemetry would."""
    reply = encode_reply(WriteReply("r-1", ok=True, ts=NOW_MS, tag="boiler1.pressure_setpoint", by="mes", value=13.5))
    unnamed = encode_reply(WriteReply(None, ok=False, ts=NOW_MS + 1, error="bad_request", reason="not JSON"))
    old_sender = encode_reply(WriteReply("r-2", ok=True, ts=NOW_MS + 2, tag="boiler1.burner_on"))
    topic = f"factory/v1/{site}/new-pi/cmd/reply"
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [(topic, reply), (topic, reply), (topic, unnamed), (topic, unnamed)])
        await until(ingest, lambda: ingest.stats.write_backs == 4)
        await publish(mqtt_url, [(topic, reply), (topic, unnamed), (topic, old_sender)])
        await until(ingest, lambda: ingest.stats.write_backs == 7)
        assert ingest.stats.write_backs_recorded == 3
    assert await write_backs(db, site) == [
        ("new-pi", "r-1", "boiler1.pressure_setpoint", 13.5, "mes", True, None, None, NOW_MS),
        ("new-pi", None, None, None, None, False, "bad_request", "not JSON", NOW_MS + 1),
        ("new-pi", "r-2", "boiler1.burner_on", None, None, True, None, None, NOW_MS + 2),
    ]


async def test_broken_replies_are_dead_lettered_and_ingest_goes_on(
    database_url: str, mqtt_url: str, site: str, db: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    topic = f"factory/v1/{site}/pi1/cmd/reply"
    bad = [
        b"not json",
        b"",  # not a retained topic: an empty message is no reply
        json.dumps({"v": 1, "id": "b-1", "ok": True}).encode(),
        json.dumps({"v": 1, "id": "b-2", "ok": True, "ts": NOW_MS, "error": "not_writable"}).encode(),
        b'{"v": 1, "id": "b-3", "ok": true, "ts": %d, "value": "a\\u0000b"}' % NOW_MS,
        json.dumps({"v": 1, "id": "b-4", "ok": True, "ts": NOW_MS, "by": "x" * 129}).encode(),
    ]
    good = encode_reply(WriteReply("g-1", ok=True, ts=NOW_MS, tag="tank.setpoint", by="ana", value=1.5))
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [*((topic, payload) for payload in bad), (topic, good)])
        await until(ingest, lambda: ingest.stats.messages == len(bad) + 1)
        assert (ingest.stats.dead_letters, ingest.stats.reconnects, ingest.stats.write_backs) == (len(bad), 0, 1)
    cur = await db.execute("SELECT payload, reason FROM telemetry.dead_letter WHERE topic = %s ORDER BY id", (topic,))
    rows = await cur.fetchall()
    assert [bytes(r[0]) for r in rows] == bad  # type: ignore[arg-type]
    reasons = [str(r[1]) for r in rows]
    assert reasons[0].startswith("reply is not UTF-8 JSON")
    assert reasons[1].startswith("reply is not UTF-8 JSON")
    assert reasons[2] == 'reply must hold "v": 1, "ok" (boolean) and "ts" (integer)'
    assert reasons[3].startswith("reply error must be absent when ok")
    assert reasons[4] == "value must not contain NUL characters"
    assert reasons[5] == "by must be 1 to 128 printable characters"
    assert await write_backs(db, site) == [("pi1", "g-1", "tank.setpoint", 1.5, "ana", True, None, None, NOW_MS)]


async def test_the_record_cannot_be_changed_or_deleted(
    database_url: str, mqtt_url: str, site: str, db: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    topic = f"factory/v1/{site}/pi1/cmd/reply"
    reply = encode_reply(WriteReply("k-1", ok=True, ts=NOW_MS, tag="tank.setpoint", by="ana", value=2))
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [(topic, reply)])
        await until(ingest, lambda: ingest.stats.write_backs_recorded == 1)
    mine = "device_id IN (SELECT id FROM telemetry.device WHERE site = %s)"
    for statement in (
        f"UPDATE telemetry.write_back SET requested_by = 'someone else' WHERE {mine}",
        f"DELETE FROM telemetry.write_back WHERE {mine}",
        "TRUNCATE telemetry.write_back",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"telemetry\.write_back is append-only"):
            await db.execute(statement.encode(), (site,) if "%s" in statement else None)
    assert await write_backs(db, site) == [("pi1", "k-1", "tank.setpoint", 2, "ana", True, None, None, NOW_MS)]
