"""Idempotency-Key on POST /api/v1/setpoints, end to end as in test_erp_setpoints.py (a real
ERP, Mosquitto, a running edge agent writing a real pymodbus server): a repeat replays the
device's answer and writes nothing; a retry while the first waits is 409; after 504 the key
is free and a retry writes; a key left by an ERP process that was killed while it waited is
taken over once it is stale; the same key with another value is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
from erp_support import SECRET, ok, running, tokens, unique
from modbus_servers import RecordingServer, Request
from test_erp_setpoints import DEVICE, audit_of, factory, plant, setpoint, words

from erp_api import create_app
from erp_api.idempotency import REPLAY_HEADER
from erp_api.setpoints import STALE_MARGIN_S
from factory_servers import free_port

pytestmark = pytest.mark.integration

Db = psycopg.AsyncConnection[tuple[object, ...]]
WRITES = (5, 6, 15, 16)  # Modbus function codes that write


def writes(server: RecordingServer) -> list[Request]:
    """The writes the pymodbus server received on the setpoint's registers."""
    return [r for r in server.requests if r.function in WRITES and r.address == 10]


async def claim_of(db: Db, key: str) -> tuple[object, ...] | None:
    cur = await db.execute("SELECT status, created_at FROM erp.idempotency_key WHERE key = %s", (key,))
    return await cur.fetchone()


async def until_claimed(db: Db, key: str) -> None:
    async with asyncio.timeout(10):
        while await claim_of(db, key) is None:
            await asyncio.sleep(0.02)


async def test_a_repeat_replays_the_answer_and_writes_nothing(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db
) -> None:
    async with (
        plant(tmp_path, database_url, mqtt_url, site, db) as p,
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=10) as api,
        api.client("operator") as operator,
        api.client("planner") as planner,
    ):
        key = {"Idempotency-Key": unique("sp")}
        first = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 42.5), headers=key)
        await ok(first)
        again = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 42.5), headers=key)
        assert (again.status_code, again.content) == (200, first.content)
        assert (first.headers.get(REPLAY_HEADER), again.headers[REPLAY_HEADER]) == (None, "true")
        assert again.headers["content-type"] == "application/json"
        assert len(writes(p.server)) == 1
        assert await p.server.get(1, "holding", 10, 2) == words(42.5)

        other = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 43.5), headers=key)
        assert other.status_code == 409, other.text
        assert other.json()["type"] == "urn:factory:erp:problem:idempotency-key-reused"
        assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
        assert len(writes(p.server)) == 1
        assert await p.server.get(1, "holding", 10, 2) == words(42.5)

        # keys belong to the caller: the planner's request under the same key is a request of its own
        theirs = await ok(await planner.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 42.5),
                                             headers=key))  # fmt: skip
        assert theirs["by"] == "test-planner"
        assert len(writes(p.server)) == 2

        # a refusal is the device's answer too: replayed, not asked again
        refused_key = {"Idempotency-Key": unique("sp")}
        refused = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 250),
                                      headers=refused_key)  # fmt: skip
        assert refused.status_code == 422, refused.text
        replayed = await operator.post("/api/v1/setpoints", json=setpoint(site, "tank.setpoint", 250),
                                       headers=refused_key)  # fmt: skip
        assert (replayed.status_code, replayed.content) == (422, refused.content)
        assert replayed.headers[REPLAY_HEADER] == "true"
        assert replayed.headers["content-type"] == "application/problem+json"
        assert replayed.json()["error"] == "out_of_range"

        trail = await audit_of(api, site, DEVICE, "tank.setpoint")
        assert [(r["action"], r["actor"]) for r in trail] == [
            ("setpoint.written", "test-operator"), ("setpoint.written", "test-planner"),
            ("setpoint.refused", "test-operator"),
        ]  # fmt: skip
        assert trail[0]["detail"]["command_id"] == first.json()["request_id"]

        # the command line sends a key with --idempotency-key: the repeat prints the same answer
        async with api.client("admin") as admin:
            made = await admin.post(
                "/api/v1/auth/api-keys", json={"name": unique("console").lower(), "role": "operator"}
            )
        api_key = (await ok(made, 201))["key"]
        cli_key = unique("cli")
        runs = [await factory(api, api_key, site, DEVICE, "tank.setpoint", "44", "--json", "--idempotency-key", cli_key)
                for _ in range(2)]  # fmt: skip
        assert [code for code, _, _ in runs] == [0, 0]
        assert json.loads(runs[0][1]) == json.loads(runs[1][1])
        code, out, _ = await factory(api, api_key, site, DEVICE, "tank.setpoint", "44", "--idempotency-key", cli_key)
        assert code == 0
        assert out.rstrip().endswith(", replayed)")
        assert len(writes(p.server)) == 3
        assert await p.server.get(1, "holding", 10, 2) == words(44.0)


async def test_a_retry_while_waiting_is_409_and_after_no_reply_a_retry_writes(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db
) -> None:
    """The device is offline for the first request (its agent not yet started): a retry while
    the first waits is 409; the first is 504 and frees the key; once the device is back the
    retry under the same key writes, and a repeat of that replays."""
    async with (
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=2) as api,
        api.client("operator") as operator,
    ):
        key = unique("sp")
        headers = {"Idempotency-Key": key}
        body = setpoint(site, "tank.setpoint", 42.5)
        waiting = asyncio.create_task(operator.post("/api/v1/setpoints", json=body, headers=headers))
        await until_claimed(db, key)
        busy = await operator.post("/api/v1/setpoints", json=body, headers=headers)
        assert busy.status_code == 409, busy.text
        assert busy.json()["type"] == "urn:factory:erp:problem:request-in-progress"
        assert "still waiting" in busy.json()["detail"]
        assert 1 <= int(busy.headers["Retry-After"]) <= 2
        offline = await waiting
        assert offline.status_code == 504, offline.text
        assert await claim_of(db, key) is None  # released: nothing was written
        assert [r["action"] for r in await audit_of(api, site, DEVICE, "tank.setpoint")] == ["setpoint.timeout"]

        async with plant(tmp_path, database_url, mqtt_url, site, db) as p:
            written = await ok(await operator.post("/api/v1/setpoints", json=body, headers=headers))
            assert written["value"] == 42.5
            assert written["request_id"] != offline.json()["request_id"]
            assert await p.server.get(1, "holding", 10, 2) == words(42.5)
            replayed = await operator.post("/api/v1/setpoints", json=body, headers=headers)
            assert (replayed.json(), replayed.headers[REPLAY_HEADER]) == (written, "true")
            assert len(writes(p.server)) == 1
        trail = await audit_of(api, site, DEVICE, "tank.setpoint")
        assert [r["action"] for r in trail] == ["setpoint.timeout", "setpoint.written"]


@contextlib.asynccontextmanager
async def erp_process(database_url: str, mqtt_url: str, timeout_s: float) -> AsyncIterator[tuple[str, int]]:
    """The ERP in a process of its own, to be killed: (its URL, its pid)."""
    port = free_port()
    options = {"mqtt_url": mqtt_url, "relay": False, "setpoint_timeout_s": timeout_s}
    code = ("import asyncio, json, sys; from erp_api.server import serve; "
            "asyncio.run(serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]), jwt_secret=sys.argv[3],"
            " **json.loads(sys.argv[4])))")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, database_url, str(port), SECRET,
                                                json.dumps(options))  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as probe, asyncio.timeout(30):
            while True:
                assert proc.returncode is None, "the ERP process exited"
                with contextlib.suppress(httpx.TransportError):
                    await probe.get(f"{base}/healthz")
                    break
                await asyncio.sleep(0.05)
        yield base, proc.pid
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_key_left_by_a_killed_process_is_taken_over_once_stale(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db
) -> None:
    key = unique("sp")
    token = tokens().issue("test-operator", "operator").access_token
    headers = {"Idempotency-Key": key, "Authorization": f"Bearer {token}"}
    body = setpoint(site, "tank.setpoint", 42.5)
    async with (
        erp_process(database_url, mqtt_url, timeout_s=30) as (base, pid),
        httpx.AsyncClient(base_url=base, timeout=60) as client,
    ):
        asked = asyncio.create_task(client.post("/api/v1/setpoints", json=body, headers=headers))
        await until_claimed(db, key)
        os.kill(pid, signal.SIGKILL)  # stopped while it waits for the device: no answer, no release
        with pytest.raises(httpx.TransportError):
            await asyncio.wait_for(asked, 10)
    left = await claim_of(db, key)
    assert left is not None
    assert left[0] is None  # claimed, never answered

    async with (
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=5) as api,
        api.client("operator") as operator,
        plant(tmp_path, database_url, mqtt_url, site, db) as p,
    ):
        held = await operator.post("/api/v1/setpoints", json=body, headers={"Idempotency-Key": key})
        assert held.status_code == 409, held.text
        assert held.json()["type"] == "urn:factory:erp:problem:request-in-progress"
        assert writes(p.server) == []
        # the claim as it is once the setpoint timeout and the margin have passed since it was made
        await db.execute(
            "UPDATE erp.idempotency_key SET created_at = created_at - make_interval(secs => %s) WHERE key = %s",
            (5 + STALE_MARGIN_S + 1, key),
        )
        written = await ok(await operator.post("/api/v1/setpoints", json=body, headers={"Idempotency-Key": key}))
        assert written["value"] == 42.5
        assert len(writes(p.server)) == 1
        assert await p.server.get(1, "holding", 10, 2) == words(42.5)
        replayed = await operator.post("/api/v1/setpoints", json=body, headers={"Idempotency-Key": key})
        assert (replayed.json(), replayed.headers[REPLAY_HEADER]) == (written, "true")
        assert len(writes(p.server)) == 1
        assert [r["action"] for r in await audit_of(api, site, DEVICE, "tank.setpoint")] == ["setpoint.written"]


def test_the_document_names_the_key_and_its_answers() -> None:
    operation = create_app("postgresql://unused", jwt_secret=SECRET).openapi()["paths"]["/api/v1/setpoints"]["post"]
    [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key.get("required", False), key["schema"]["maxLength"]) == ("header", False, 255)
    assert {"200", "409", "422", "502", "503", "504"} <= set(operation["responses"])
    assert "`request-in-progress`" in operation["description"]
    assert "Not idempotent" not in operation["description"]


async def test_a_device_error_is_replayed(tmp_path: Path, database_url: str, mqtt_url: str, site: str, db: Db) -> None:
    """The device took the request and could not write (its Modbus server is gone): 502, an
    answer of the device's, so a repeat under the key replays it and asks nothing."""
    async with (
        plant(tmp_path, database_url, mqtt_url, site, db) as p,
        running(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=10) as api,
        api.client("operator") as operator,
    ):
        await p.server.server.shutdown()  # type: ignore[no-untyped-call]
        body = setpoint(site, "tank.setpoint", 42.5)
        async with asyncio.timeout(30):  # until the agent sees its source down
            while (await operator.post("/api/v1/setpoints", json=body)).status_code != 502:
                await asyncio.sleep(0.2)
        before = len(await audit_of(api, site, DEVICE, "tank.setpoint"))
        key = {"Idempotency-Key": unique("sp")}
        failed = await operator.post("/api/v1/setpoints", json=body, headers=key)
        assert failed.status_code == 502, failed.text
        assert (failed.json()["type"], failed.json()["error"]) == (
            "urn:factory:erp:problem:device-error",
            "device_error",
        )
        replayed = await operator.post("/api/v1/setpoints", json=body, headers=key)
        assert (replayed.status_code, replayed.content, replayed.headers[REPLAY_HEADER]) == (
            502,
            failed.content,
            "true",
        )
        trail = await audit_of(api, site, DEVICE, "tank.setpoint")
        assert len(trail) == before + 1
        assert (trail[-1]["detail"]["command_id"], trail[-1]["detail"]["error"]) == (
            failed.json()["request_id"], "device_error",
        )  # fmt: skip
        assert writes(p.server) == []
