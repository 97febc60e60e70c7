"""The receiving side ingest stands on: a backlog read in bursts without outrunning the
consumer, every message delivered once and in order, and acknowledgements that land."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from helpers import OwnBroker

from factory.mqtt import MessageStream, ack, connect, enable_manual_ack

pytestmark = pytest.mark.integration
TOPIC = "factory/v1/s1/pi1/telemetry"
BACKLOG = 3000
HIGH_WATER = 64


@pytest.fixture(params=["plain", "tls"])
def broker(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Plain and over TLS (paho's TLS reads under the buffered ones)."""
    own = OwnBroker(tmp_path / "mosquitto", tls=request.param == "tls")
    own.start()
    yield own
    own.stop()


def subscriber(broker: OwnBroker) -> aiomqtt.Client:
    client = connect(broker.target, "stream-test", persistent=True, session_expiry_s=60)
    enable_manual_ack(client)
    return client


async def publish(broker: OwnBroker, messages: list[tuple[str, bytes]]) -> None:
    async with connect(broker.target, "") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


async def test_a_backlog_is_read_in_bursts_within_the_high_water_once_and_in_order(broker: OwnBroker) -> None:
    async with subscriber(broker) as client:
        await client.subscribe(TOPIC, qos=1)  # the persistent session queues from now on
    await publish(broker, [(TOPIC, str(i).encode()) for i in range(BACKLOG)])

    seen: list[int] = []
    queued: list[int] = []
    async with subscriber(broker) as client:
        stream = MessageStream(client, high_water=HIGH_WATER)
        while len(seen) < BACKLOG:
            await asyncio.sleep(0.002)  # a slow consumer: the reader runs ahead meanwhile
            queued.append(client._queue.qsize())
            got = await stream.take(50, 5.0)
            assert got, f"stalled after {len(seen)} messages"
            seen += [int(bytes(m.payload)) for m in got]  # type: ignore[arg-type]
            ack(client, [(m.mid, m.qos) for m in got])
        stream.close()
    assert seen == list(range(BACKLOG))
    assert max(queued) == HIGH_WATER  # reading stopped exactly there, and resumed every time

    async with subscriber(broker) as client:  # every acknowledgement reached the broker
        stream = MessageStream(client)
        assert await stream.take(10, 1.0) == []
        stream.close()
