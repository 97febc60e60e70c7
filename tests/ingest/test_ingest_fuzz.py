"""10,000 fuzzed messages through ingest's real write path: nothing crashes, and every one
is stored or dead-lettered with a reason (telemetry, statuses, catalogs and write-back
replies: a reply the decoder accepts is one the database stores).

The messages are handed to ``IngestService.flush`` directly (real database, real message
objects): the broker round trip is covered elsewhere, and here it would only slow the
10,000 cases down.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiomqtt import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import batches, near_batches

from factory.commands import ERROR_CODES, CommandError, WriteReply, decode_reply, encode_reply
from factory.db import connect
from factory.mqtt import parse_mqtt_url
from factory.wire import WireError, decode_batch, encode_batch
from ingest import IngestConfig, IngestService, TelemetryStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW_MS = int(time.time() * 1000)
recent = batches.map(lambda b: b.__class__(seq=b.seq, hist=b.hist, points=tuple(
    p.__class__(p.tag, NOW_MS - (p.ts % 86_400_000), p.value, p.quality) for p in b.points)))  # fmt: skip


def mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, value in flips:
        if out:
            out[index % len(out)] = value
    return bytes(out)


payloads = st.one_of(
    recent.map(encode_batch),  # valid, and recent enough to be stored
    batches.map(encode_batch),  # valid wire, but mostly far outside the accepted time window
    near_batches.map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=200),
    st.tuples(
        recent.map(encode_batch), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3)
    ).map(lambda pair: mutate(*pair)),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)
TEXT = st.text(max_size=40)  # NUL, unpaired surrogates and control characters included
write_values = st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT
reply_fields = {
    "id": st.none() | TEXT | JSON, "tag": st.sampled_from(["a.b", "a b"]) | JSON, "by": TEXT | JSON,
    "value": write_values | JSON, "error": st.sampled_from(sorted(ERROR_CODES)) | JSON, "reason": TEXT | JSON,
}  # fmt: skip
near_replies = st.fixed_dictionaries(
    {"v": st.just(1) | JSON, "ok": st.booleans() | JSON, "ts": st.integers(-1, 2**62) | JSON},
    optional=reply_fields,
).map(lambda body: json.dumps(body).encode())
replies = st.builds(
    WriteReply, id=st.none() | st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), ok=st.just(value=True),
    ts=st.integers(0, NOW_MS), tag=st.just("a.b"), by=st.none() | st.text(min_size=1, max_size=128),
    value=write_values,
).map(encode_reply)  # fmt: skip
payloads = payloads | near_replies | replies
devices = st.sampled_from(["pi1", "pi2", "Bad_Device", "x" * 70])
kinds = st.sampled_from(["telemetry", "telemetry", "telemetry", "status", "tags", "cmd/reply"])
CASES_PER_EXAMPLE = 50
EXAMPLES = 200  # 10,000 messages in all


def expect_stored(topic: str, payload: bytes, config: IngestConfig) -> bool:
    """Independent of ingest: would a correct ingest store this telemetry message?"""
    parts = topic.split("/")
    if parts[-1] != "telemetry" or parts[3] not in ("pi1", "pi2"):
        return False
    try:
        batch = decode_batch(payload)
    except WireError:
        return False
    now = time.time() * 1000
    oldest = now - config.retention_days * 86_400_000
    return all(oldest <= p.ts <= now + config.max_future_s * 1000 for p in batch.points)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(st.tuples(devices, kinds, payloads), min_size=CASES_PER_EXAMPLE, max_size=CASES_PER_EXAMPLE))
def test_fuzzed_messages_are_stored_or_dead_lettered(database_url: str, cases: list[tuple[str, str, bytes]]) -> None:
    asyncio.run(check(database_url, cases))


async def check(database_url: str, cases: list[tuple[str, str, bytes]]) -> None:
    config = IngestConfig(database_url=database_url, mqtt=parse_mqtt_url("mqtt://127.0.0.1"), upkeep=None)
    service = IngestService(config)
    site = "fuzz"
    messages = [
        Message(f"factory/v1/{site}/{d}/{k}", p, qos=1, retain=False, mid=i, properties=None)
        for i, (d, k, p) in enumerate(cases)
    ]
    telemetry = [(str(m.topic), bytes(m.payload)) for m in messages if str(m.topic).endswith("/telemetry")]  # type: ignore[arg-type]
    stored = [t for t in telemetry if expect_stored(*t, config)]
    async with await connect(database_url) as conn:
        before = await dead_letters(conn)
        await service.flush(TelemetryStore(conn), messages)
        after = await dead_letters(conn)
    assert service.stats.messages == len(messages)
    assert after - before == service.stats.dead_letters - service.stats.dead_letters_unkept
    assert service.stats.points_received == sum(len(decode_batch(p).points) for _, p in stored)
    invalid_telemetry = len(telemetry) - len(stored)
    assert service.stats.dead_letters >= invalid_telemetry  # status/tags junk is dead-lettered too
    good_replies = [m for m in messages if str(m.topic).endswith("/cmd/reply") and "/Bad_Device/" not in str(m.topic)]
    good_replies = [m for m in good_replies if "/xxx" not in str(m.topic) and accepted(bytes(m.payload))]  # type: ignore[arg-type]
    assert service.stats.write_backs == len(good_replies)


def accepted(payload: bytes) -> bool:
    try:
        decode_reply(payload)
    except CommandError:
        return False
    return True


async def dead_letters(conn) -> int:  # type: ignore[no-untyped-def]
    cur = await conn.execute("SELECT count(*) FROM telemetry.dead_letter WHERE topic LIKE 'factory/v1/fuzz/%%'")
    row = await cur.fetchone()
    return int(row[0])
