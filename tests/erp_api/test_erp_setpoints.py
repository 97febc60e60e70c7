"""Setpoints end to end: POST /api/v1/setpoints on a real ERP, through Mosquitto, to a real
edge agent writing a real pymodbus server, with ingest storing its telemetry (the old value)
and its replies; the answers (written, refused, no reply), the audit trail, the roles, and
``factory erp setpoint`` against the same setup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from erp_support import Api, ok, running, unique
from helpers import running_ingest, until
from modbus_servers import RecordingServer, tcp_server

from edge_agent import EdgeAgent
from edge_agent.config import EdgeConfig
from erp_api.setpoints_client import parse_value
from factory_servers import free_port
from ingest.service import IngestService

pytestmark = pytest.mark.integration

DEVICE = "pi1"
TAGS: list[dict[str, Any]] = [
    {"name": "tank.setpoint", "table": "holding", "address": 10, "type": "float32", "writable": True,
     "min": 0, "max": 100},
    {"name": "tank.level", "table": "holding", "address": 0, "type": "uint16"},
]  # fmt: skip
Db = psycopg.AsyncConnection[tuple[object, ...]]


def words(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]


@dataclass
class Plant:
    site: str
    server: RecordingServer
    ingest: IngestService


@contextlib.asynccontextmanager
async def plant(tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db) -> AsyncIterator[Plant]:
    """A pymodbus server whose setpoint register holds 41.5, read by a running agent for
    device ``pi1`` at ``site``, with ingest storing what it publishes; yields once 41.5 is stored."""
    async with tcp_server() as (server, port), running_ingest(database_url, mqtt_url, site) as ingest:
        await server.set(1, "holding", 10, words(41.5))
        source = {"name": "tank", "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1, "poll_ms": 100,
                  "tags": TAGS}  # fmt: skip
        config = EdgeConfig.model_validate({
            "site": site, "device": DEVICE, "mqtt": {"url": mqtt_url}, "buffer": {"path": "buffer.db"},
            "http": {"port": 0}, "publish": {"max_points": 50, "max_interval_ms": 100}, "sources": [source],
        })  # fmt: skip
        agent = EdgeAgent(config, tmp_path)
        task = asyncio.create_task(agent.run(), name="edge-agent")
        try:
            async with asyncio.timeout(20):  # subscribed to cmd, the source connected, 41.5 stored
                while not (agent.publisher and agent.publisher.listening.is_set() and all(s.ready for s in agent.sources)
                           and (await stored(db, site, "tank.setpoint")) == 41.5):  # fmt: skip
                    await asyncio.sleep(0.05)
            yield Plant(site, server, ingest)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def stored(db: Db, site: str, tag: str) -> object:
    cur = await db.execute(
        "SELECT s.value FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND d.name = %s AND t.name = %s"
        " ORDER BY s.time DESC LIMIT 1",
        (site, DEVICE, tag),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def audit_of(api: Api, site: str, device: str, tag: str) -> list[dict[str, Any]]:
    async with api.client("accountant") as accountant:
        params = {"entity_type": "setpoint", "entity_id": f"{site}/{device}/{tag}"}
        page = await ok(await accountant.get("/api/v1/audit", params=params))
    records: list[dict[str, Any]] = page["items"]
    return records


def setpoint(site: str, tag: str, value: object, device: str = DEVICE) -> dict[str, object]:
    return {"site": site, "device": device, "tag": tag, "value": value}


async def test_a_setpoint_is_written_answered_and_recorded(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db
) -> None:
    async with (
        plant(tmp_path, database_url, mqtt_url, site, db) as p,
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=10) as api,
        api.client("operator") as operator,
    ):
        asked = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 42.5),
                                    headers={"X-Request-Id": "setpoint-test-1"})  # fmt: skip
        written = await ok(asked)
        assert await p.server.get(1, "holding", 10, 2) == words(42.5)
        assert {k: written[k] for k in ("ok", "site", "device", "tag", "value", "by")} == {
            "ok": True, "site": site, "device": DEVICE, "tag": "tank.setpoint", "value": 42.5, "by": "test-operator",
        }  # fmt: skip
        cur = await db.execute(
            "SELECT max(s.time) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
            " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name = 'tank.setpoint'",
            (site,),
        )
        row = await cur.fetchone()
        assert row is not None
        assert written["old"]["value"] == 41.5
        assert datetime.fromisoformat(written["old"]["at"]) == row[0]  # the latest sample, before the write
        assert datetime.fromisoformat(written["replied_at"]) > row[0]

        async with asyncio.timeout(10):  # the new value stored: the next request's old value
            while await stored(db, site, "tank.setpoint") != 42.5:
                await asyncio.sleep(0.05)
        not_writable = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.level", 7))
        out_of_range = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 250))
        for refused, code, field, words_in_reason in (
            (not_writable, "not_writable", "body.tag", "not writable"),
            (out_of_range, "out_of_range", "body.value", "above max 100"),
        ):
            assert refused.status_code == 422, refused.text
            problem = refused.json()
            assert problem["type"] == "urn:factory:erp:problem:setpoint-refused"
            assert problem["error"] == code
            assert words_in_reason in problem["detail"]
            assert problem["errors"] == [{"field": field, "reason": problem["detail"]}]
        assert await p.server.get(1, "holding", 10, 2) == words(42.5)  # the refused value never landed
        assert await p.server.get(1, "holding", 0, 1) == [0]

        first, second = await audit_of(api, site, DEVICE, "tank.setpoint")
        assert (first["action"], first["actor"], first["request_id"]) == (
            "setpoint.written", "test-operator", "setpoint-test-1",
        )  # fmt: skip
        assert first["detail"] == {
            "command_id": written["request_id"], "site": site, "device": DEVICE, "tag": "tank.setpoint", "value": 42.5,
            "old": {"value": 41.5, "at": first["detail"]["old"]["at"]}, "outcome": "written", "error": None,
            "reason": None, "replied_at": first["detail"]["replied_at"],
        }  # fmt: skip
        assert datetime.fromisoformat(first["detail"]["old"]["at"]) == row[0]
        assert datetime.fromisoformat(first["detail"]["replied_at"]) == datetime.fromisoformat(written["replied_at"])
        assert (second["action"], second["actor"]) == ("setpoint.refused", "test-operator")
        assert {k: second["detail"][k] for k in ("command_id", "value", "outcome", "error")} == {
            "command_id": out_of_range.json()["request_id"], "value": 250, "outcome": "refused", "error": "out_of_range",
        }  # fmt: skip
        assert second["detail"]["old"]["value"] == 42.5
        assert "above max 100" in second["detail"]["reason"]
        [level] = await audit_of(api, site, DEVICE, "tank.level")
        assert (level["action"], level["detail"]["error"], level["detail"]["old"]["value"]) == (
            "setpoint.refused", "not_writable", 0.0,
        )  # fmt: skip

        # ingest keeps the device's side of the same record: every reply, with who asked
        await until(p.ingest, lambda: p.ingest.stats.write_backs_recorded == 3)
        cur = await db.execute(
            "SELECT w.request_id, w.tag, w.value, w.requested_by, w.ok, w.error FROM telemetry.write_back w"
            " JOIN telemetry.device d ON d.id = w.device_id WHERE d.site = %s ORDER BY w.id",
            (site,),
        )
        assert await cur.fetchall() == [
            (written["request_id"], "tank.setpoint", 42.5, "test-operator", True, None),
            (not_writable.json()["request_id"], "tank.level", 7, "test-operator", False, "not_writable"),
            (out_of_range.json()["request_id"], "tank.setpoint", 250, "test-operator", False, "out_of_range"),
        ]


async def test_no_reply_is_a_timeout_and_recorded_and_only_some_roles_may_ask(
    database_url: str, mqtt_url: str, site: str
) -> None:
    """Nothing answers for this device (its agent is offline): 504 after the ERP's timeout."""
    async with running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=0.5) as api:
        for role in ("operator", "planner", "admin"):
            async with api.client(role) as caller:
                offline = await caller.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 12, "offline"))
            assert offline.status_code == 504, offline.text
            problem = offline.json()
            assert (problem["type"], problem["status"]) == ("urn:factory:erp:problem:device-timeout", 504)
            assert f"{site}/offline did not answer within 0.5s" in problem["detail"]
        for role in ("clerk", "accountant", "service"):
            async with api.client(role) as caller:
                denied = await caller.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 12, "offline"))
            assert denied.status_code == 403, denied.text
        async with api.client(None) as anonymous:
            assert (await anonymous.post("/api/v1/setpoints", json=setpoint(site, "x", 1))).status_code == 401
        trail = await audit_of(api, site, "offline", "tank.setpoint")
        assert [(r["action"], r["actor"]) for r in trail] == [
            ("setpoint.timeout", "test-operator"), ("setpoint.timeout", "test-planner"),
            ("setpoint.timeout", "test-admin"),
        ]  # fmt: skip
        assert {(r["detail"]["outcome"], r["detail"]["old"], r["detail"]["value"]) for r in trail} == {
            ("timeout", None, 12)
        }


async def test_without_a_broker_nothing_is_sent_and_that_is_recorded(database_url: str, site: str) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"  # a broker that is down: nothing listens there
    for options, device, because in (
        ({}, DEVICE, "this ERP has no MQTT broker configured"),
        ({"mqtt_url": nobody, "relay": False, "setpoint_timeout_s": 5}, "pi2", "the broker could not be reached"),
    ):
        async with running(database_url, **options) as api, api.client("operator") as operator:
            unsent = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 1.5, device))
            assert unsent.status_code == 503, unsent.text
            assert unsent.json()["type"] == "urn:factory:erp:problem:broker-unavailable"
            assert unsent.json()["detail"].startswith(because)
            [record] = await audit_of(api, site, device, "tank.setpoint")
            assert (record["action"], record["detail"]["outcome"]) == ("setpoint.unsent", "unsent")
            assert record["detail"]["reason"].startswith(because)


async def test_invalid_requests_are_refused_before_anything_is_sent(
    database_url: str, mqtt_url: str, site: str
) -> None:
    async with (
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=0.5) as api,
        api.client("operator") as operator,
    ):
        for body in (
            setpoint("Not A Site", "tank.setpoint", 1),
            setpoint(site, "tank setpoint", 1),
            setpoint(site, "tank.setpoint", None),
            setpoint(site, "tank.setpoint", [1]),
            setpoint(site, "tank.setpoint", "x" * 1025),
            {**setpoint(site, "tank.setpoint", 1), "unit": 1},
        ):
            refused = await operator.post("/api/v1/setpoints", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["type"] == "urn:factory:erp:problem:validation"
        lone = b'{"site": "%s", "device": "pi1", "tag": "t", "value": "\\ud800"}' % site.encode()
        refused = await operator.post("/api/v1/setpoints", content=lone, headers={"Content-Type": "application/json"})
        assert refused.status_code == 422, refused.text
        assert await audit_of(api, site, DEVICE, "tank.setpoint") == []


async def factory(api: Api, key: str, *args: str) -> tuple[int, str, str]:
    """``factory erp setpoint ...`` in its own process, as an operator would run it."""
    env = {**os.environ, "FACTORY_ERP_URL": api.base_url, "FACTORY_ERP_API_KEY": key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "factory_cli", "erp", "setpoint", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_factory_command(tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db) -> None:
    async with (
        plant(tmp_path, database_url, mqtt_url, site, db) as p,
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=3) as api,
        api.client("admin") as admin,
    ):
        name = unique("console").lower()
        key = (await ok(await admin.post("/api/v1/auth/api-keys", json={"name": name, "role": "operator"}), 201))["key"]

        code, out, _ = await factory(api, key, site, DEVICE, "tank.setpoint", "60", "--json")
        assert code == 0
        answer = json.loads(out)
        assert (answer["ok"], answer["value"], answer["by"], answer["old"]["value"]) == (True, 60, f"key:{name}", 41.5)
        assert await p.server.get(1, "holding", 10, 2) == words(60.0)

        code, out, err = await factory(api, key, site, DEVICE, "tank.setpoint", "60.5")
        assert (code, err) == (0, "")
        assert f"{site}/{DEVICE} tank.setpoint: " in out
        assert "-> 60.5, written at" in out

        code, out, _ = await factory(api, key, site, DEVICE, "tank.setpoint", "500", "--json")
        assert code == 1
        problem = json.loads(out)
        assert (problem["status"], problem["error"]) == (422, "out_of_range")
        assert await p.server.get(1, "holding", 10, 2) == words(60.5)

        code, out, err = await factory(api, key, site, DEVICE, "tank.level", "3")
        assert (code, out) == (1, "")
        assert "(not_writable)" in err
        assert "[HTTP 422]" in err

        code, out, _ = await factory(api, key, site, "offline", "tank.setpoint", "1", "--json")
        assert code == 3
        assert json.loads(out)["type"] == "urn:factory:erp:problem:device-timeout"

        code, out, err = await factory(api, "fk_not-a-key", site, DEVICE, "tank.setpoint", "1", "--json")
        assert code == 2
        assert json.loads(out)["status"] == 401

        actions = [r["action"] for r in await audit_of(api, site, DEVICE, "tank.setpoint")]
        assert actions == ["setpoint.written", "setpoint.written", "setpoint.refused"]
        assert {r["actor"] for r in await audit_of(api, site, DEVICE, "tank.setpoint")} == {f"key:{name}"}


@pytest.mark.parametrize(
    ("text", "as_text", "value"),
    [
        ("true", False, True), ("FALSE", False, False), ("42", False, 42), ("-12", False, -12), ("+7", False, 7),
        ("12.5", False, 12.5), ("1e3", False, 1000.0), ("nan", False, "nan"), ("inf", False, "inf"),
        ("MIX-2", False, "MIX-2"), ("42", True, "42"), ("true", True, "true"),
    ],
)  # fmt: skip
def test_command_line_values(text: str, as_text: bool, value: object) -> None:
    parsed = parse_value(text, as_text=as_text)
    assert (parsed, type(parsed)) == (value, type(value))
