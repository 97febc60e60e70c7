"""Write-back end to end: requests on the device's ``cmd`` topic through Mosquitto to a
running agent, writes landing in a real pymodbus server (and in the simulated mill), and
every refusal answered on ``cmd/reply`` with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modbus_servers import tcp_server

from edge_agent import EdgeAgent
from edge_agent.config import EdgeConfig
from factory.commands import (
    CommandError,
    WriteReply,
    WriteRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from factory.mqtt import connect, parse_mqtt_url
from simulator import SimulatedPlant

pytestmark = pytest.mark.integration

TAGS: list[dict[str, Any]] = [
    {"name": "tank.setpoint", "table": "holding", "address": 10, "type": "float32", "word_order": "little",
     "writable": True, "min": 0, "max": 100},
    {"name": "tank.speed", "table": "holding", "address": 12, "type": "int16", "scale": 0.1, "writable": True},
    {"name": "tank.total", "table": "holding", "address": 14, "type": "uint32", "writable": True},
    {"name": "tank.valve_open", "table": "holding", "address": 16, "type": "bool", "bit": 3, "writable": True},
    {"name": "tank.pump_on", "table": "coil", "address": 4, "type": "bool", "writable": True},
    {"name": "tank.label", "table": "holding", "address": 20, "type": "string", "length": 6, "writable": True},
    {"name": "tank.level", "table": "holding", "address": 0, "type": "uint16"},
]  # fmt: skip


class Operator:
    """Sends requests on ``cmd`` and waits for the reply with the same id."""

    def __init__(self, client: Any, site: str) -> None:
        self.client, self.topic = client, f"factory/v1/{site}/pi1/cmd"
        self.replies: dict[str | None, WriteReply] = {}

    async def send(self, payload: bytes, request_id: str | None) -> WriteReply:
        await self.client.publish(self.topic, payload, qos=1)
        async with asyncio.timeout(15):
            async for message in self.client.messages:
                reply = decode_reply(message.payload)
                self.replies[reply.id] = reply
                if request_id in self.replies:
                    return self.replies.pop(request_id)
        raise AssertionError("no reply")

    async def write(self, request_id: str, tag: str, value: Any, by: str | None = None) -> WriteReply:
        return await self.send(encode_request(WriteRequest(request_id, tag, value, by)), request_id)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, mqtt_url: str, site: str, sources: list[dict[str, Any]]) -> AsyncIterator[Operator]:
    config = EdgeConfig.model_validate({
        "site": site, "device": "pi1", "mqtt": {"url": mqtt_url}, "buffer": {"path": "buffer.db"},
        "sources": sources,
    })  # fmt: skip
    agent = EdgeAgent(config, tmp_path)
    task = asyncio.create_task(agent.run())
    try:
        async with connect(parse_mqtt_url(mqtt_url), "") as client:
            await client.subscribe(f"factory/v1/{site}/pi1/cmd/reply", qos=1)
            async with asyncio.timeout(15):  # subscribed, and every source connected
                while not (
                    agent.publisher and agent.publisher.listening.is_set() and all(s.ready for s in agent.sources)
                ):
                    await asyncio.sleep(0.05)
            yield Operator(client, site)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def modbus(name: str, port: int, tags: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1, "poll_ms": 200, "tags": tags}


async def test_writes_land_in_the_device_and_are_confirmed(tmp_path: Path, mqtt_url: str, site: str) -> None:
    async with tcp_server() as (server, port), running(tmp_path, mqtt_url, site, [modbus("tank", port, TAGS)]) as op:
        await server.set(1, "holding", 16, [0b1000_0000_0000_0001])  # bits 0 and 15 set: must survive
        replies = [
            await op.write("w1", "tank.setpoint", 42.5, by="ana.lopez"),
            await op.write("w2", "tank.speed", -12.3),  # a sender that predates `by`
            await op.write("w3", "tank.total", 4_000_000_000),
            await op.write("w4", "tank.valve_open", value=True),
            await op.write("w5", "tank.pump_on", value=True),
            await op.write("w6", "tank.label", "MIX-2"),
        ]
        assert [(r.id, r.ok, r.tag, r.error) for r in replies] == [
            ("w1", True, "tank.setpoint", None), ("w2", True, "tank.speed", None), ("w3", True, "tank.total", None),
            ("w4", True, "tank.valve_open", None), ("w5", True, "tank.pump_on", None),
            ("w6", True, "tank.label", None),
        ]  # fmt: skip
        assert [(r.by, r.value) for r in replies[:2]] == [("ana.lopez", 42.5), (None, -12.3)]
        assert replies[5].value == "MIX-2"
        be = struct.pack(">f", 42.5)
        assert await server.get(1, "holding", 10, 2) == [int.from_bytes(be[2:], "big"), int.from_bytes(be[:2], "big")]
        assert await server.get(1, "holding", 12, 1) == [(-123) & 0xFFFF]
        assert await server.get(1, "holding", 14, 2) == [4_000_000_000 >> 16, 4_000_000_000 & 0xFFFF]
        assert await server.get(1, "holding", 16, 1) == [0b1000_0000_0000_1001]
        assert await server.get(1, "coil", 4, 1) == [True]
        assert await server.get(1, "holding", 20, 3) == [0x4D49, 0x582D, 0x3200]  # "MI" "X-" "2\0"
        await op.write("w7", "tank.valve_open", value=False)
        assert await server.get(1, "holding", 16, 1) == [0b1000_0000_0000_0001]
        wire = [(r.function, r.address, r.count) for r in server.requests]  # single writes (5, 6) show count 0
        bit_write = len(wire) - 1 - wire[::-1].index((6, 16, 0))
        assert wire[bit_write - 1] == (3, 16, 1)  # a bit: read the register, write it back, nothing between
        assert {(16, 10, 2), (6, 12, 0), (16, 14, 2), (5, 4, 0), (16, 20, 3)} <= set(wire)


async def test_refusals_are_answered_with_their_reason(tmp_path: Path, mqtt_url: str, site: str) -> None:
    async with (
        tcp_server() as (server, port),
        SimulatedPlant(tick_s=3600) as plant,
    ):
        mill = [
            {"name": "boiler1.pressure_setpoint", "table": "holding", "address": 1, "type": "int16", "scale": 0.01,
             "writable": True},
            # writable here, but the device refuses writes to it (illegal address)
            {"name": "boiler1.drum_pressure", "table": "holding", "address": 0, "type": "int16", "scale": 0.01,
             "writable": True},
        ]  # fmt: skip
        sources = [modbus("tank", port, TAGS), modbus("boiler", plant.modbus_port, mill)]
        async with running(tmp_path, mqtt_url, site, sources) as op:
            before = list(server.requests)
            cases = {
                "unknown_tag": await op.write("r1", "tank.nothing", 1),
                "not_writable": await op.write("r2", "tank.level", 1, by="Shift lead B"),
                "wrong_type": await op.write("r3", "tank.setpoint", "high"),
                "wrong_type/bool": await op.write("r4", "tank.speed", value=True),
                "wrong_type/step": await op.write("r5", "tank.speed", 1.25),  # steps of 0.1
                "wrong_type/coil": await op.write("r6", "tank.pump_on", 1),
                "out_of_range/max": await op.write("r7", "tank.setpoint", 100.5),
                "out_of_range/min": await op.write("r8", "tank.setpoint", -1),
                "out_of_range/type": await op.write("r9", "tank.speed", 4000),  # 40000 counts > int16
                "out_of_range/text": await op.write("r10", "tank.label", "TOO-LONG"),
                "device_error": await op.write("r11", "boiler1.drum_pressure", 12.5),
                "ok": await op.write("r12", "boiler1.pressure_setpoint", 14.25),
            }
            bad_json = await op.send(b'{"v": 1, "id": "r13", "tag": "tank.speed"', None)
            no_value = await op.send(b'{"v": 1, "id": "r14", "tag": "tank.speed", "by": "scada"}', "r14")
            bad_by = await op.send(b'{"v": 1, "id": "r15", "tag": "tank.speed", "value": 3, "by": ""}', "r15")
            assert [r for r in server.requests[len(before) :] if r.function not in (1, 2, 3, 4)] == []
        assert plant.model.value("boiler1.pressure_setpoint") == 14.25
    for expected, reply in cases.items():
        code = expected.split("/")[0]
        assert (reply.ok, reply.error) == ((True, None) if code == "ok" else (False, code)), (expected, reply)
        assert reply.ok or reply.reason
    assert "max 100" in (cases["out_of_range/max"].reason or "")
    assert "not writable" in (cases["not_writable"].reason or "")
    assert "answered" in (cases["device_error"].reason or "")
    assert (bad_json.id, bad_json.error) == (None, "bad_request")
    assert (no_value.id, no_value.error) == ("r14", "bad_request")
    # who asked and what, as far as a refused request could be read, come back in the reply
    assert (cases["not_writable"].by, cases["not_writable"].value) == ("Shift lead B", 1)
    assert (no_value.tag, no_value.by, no_value.value) == ("tank.speed", "scada", None)
    assert (bad_by.error, bad_by.tag, bad_by.by, bad_by.value) == ("bad_request", "tank.speed", None, 3)
    assert "by must be" in (bad_by.reason or "")


STORABLE_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=50)
VALUES = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                   STORABLE_TEXT)  # fmt: skip
WHO = st.none() | st.text(
    st.characters(exclude_categories=("C", "Z"), include_characters=" "), min_size=1, max_size=128
)


@given(
    st.text(alphabet="abcXYZ019_.:-", min_size=1, max_size=128),
    st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True),
    VALUES,
    WHO,
)
def test_request_round_trip(request_id: str, tag: str, value: Any, by: str | None) -> None:
    request = WriteRequest(request_id, tag, value, by)
    assert decode_request(encode_request(request)) == request


@given(st.booleans(), VALUES, WHO, st.none() | STORABLE_TEXT)
def test_reply_round_trip_with_who_and_what(ok: bool, value: Any, by: str | None, reason: str | None) -> None:
    reply = WriteReply("x-1", ok=ok, ts=1_763_683_200_123, tag="a.b", error=None if ok else "device_error",
                       reason=reason, by=by, value=value)  # fmt: skip
    assert decode_reply(encode_reply(reply)) == reply


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[]", "JSON object"),
        (b'{"v": 1, "tag": "a.b", "value": 1}', "id must match"),
        (b'{"v": 2, "id": "x", "tag": "a.b", "value": 1}', "unsupported version"),
        (b'{"v": 1, "id": "x", "tag": "a b", "value": 1}', "tag must match"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": NaN}', "not UTF-8 JSON"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": [1]}', "value must be"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": 1, "when": 0}', "unknown fields"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": "a\\u0000b"}', "value must not contain NUL"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": "\\ud800"}', "unpaired surrogate"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": 1, "by": ""}', "by must be 1 to 128 printable"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": 1, "by": "a\\nb"}', "by must be"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": 1, "by": 7}', "by must be"),
        (b'{"v": 1, "id": "x", "tag": "a.b", "value": 1, "by": "%s"}' % (b"a" * 129), "by must be"),
    ],
)
def test_bad_requests_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        decode_request(payload)


def test_reply_round_trip() -> None:
    refused = WriteReply("x", ok=False, ts=5, tag="a.b", error="out_of_range", reason="too high")
    assert decode_reply(encode_reply(refused)) == refused
    assert decode_reply(encode_reply(WriteReply(None, ok=True, ts=1))) == WriteReply(None, ok=True, ts=1)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v": 1, "id": "x", "ok": true, "ts": true}', '"ts" \\(integer\\)'),
        (b'{"v": 1, "id": "x", "ok": true, "ts": 1e3}', '"ts" \\(integer\\)'),
        (b'{"v": 1, "id": "x", "ok": true, "ts": -1}', "reply ts must be"),
        (b'{"v": 1, "id": "x", "ok": true, "ts": 253402300800000}', "reply ts must be"),
        (b'{"v": 1, "id": "x", "ok": false, "ts": 1}', "reply error must be"),
        (b'{"v": 1, "id": "x", "ok": false, "ts": 1, "error": "oops"}', "reply error must be"),
        (b'{"v": 1, "id": "x", "ok": false, "ts": 1, "error": ["device_error"]}', "reply error must be"),
        (b'{"v": 1, "id": 7, "ok": true, "ts": 1}', "reply id must be"),
        (b'{"v": 1, "id": "x", "ok": true, "ts": 1, "tag": "a b"}', "tag must match"),
        (b'{"v": 1, "id": "x", "ok": true, "ts": 1, "by": ""}', "by must be"),
        (b'{"v": 1, "id": "x", "ok": true, "ts": 1, "value": {"a": 1}}', "value must be"),
        (b'{"v": 1, "id": "x", "ok": true, "ts": 1, "value": "\\u0000"}', "value must not contain NUL"),
        (b'{"v": 1, "id": "x", "ok": false, "ts": 1, "error": "bad_request", "reason": 5}', "reason must be a text"),
        (b'{"v": 1, "id": "x", "ok": false, "ts": 1, "error": "bad_request", "reason": "\\ud800"}', "surrogate"),
    ],
)
def test_bad_replies_say_why(payload: bytes, reason: str) -> None:
    """Ingest stores what decode_reply returns: anything the database would refuse is refused here."""
    with pytest.raises(CommandError, match=reason):
        decode_reply(payload)
