"""The receiving side ingest stands on: a backlog read in bursts without outrunning the
consumer, every message delivered once and in order, and acknowledgements that land."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import OwnBroker

from factory.mqtt import Subscriber, connect

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


def subscriber(broker: OwnBroker, high_water: int = 500) -> Subscriber:
    return Subscriber(broker.target, "stream-test", [TOPIC], session_expiry_s=60, high_water=high_water)


async def publish(broker: OwnBroker, messages: list[tuple[str, bytes]]) -> None:
    async with connect(broker.target, "") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


async def test_a_backlog_is_read_in_bursts_within_the_high_water_once_and_in_order(broker: OwnBroker) -> None:
    async with subscriber(broker):
        pass  # subscribed: the persistent session queues from now on
    await publish(broker, [(TOPIC, str(i).encode()) for i in range(BACKLOG)])

    seen: list[int] = []
    queued: list[int] = []
    async with subscriber(broker, high_water=HIGH_WATER) as stream:
        while len(seen) < BACKLOG:
            await asyncio.sleep(0.002)  # a slow consumer: the reader runs ahead meanwhile
            queued.append(stream.waiting)
            got = await stream.take(50, 5.0)
            assert got, f"stalled after {len(seen)} messages"
            seen += [int(bytes(m.payload)) for m in got]  # type: ignore[arg-type]
            stream.ack([(m.mid, m.qos) for m in got])
    assert seen == list(range(BACKLOG))
    # What arrived while the subscriptions were confirmed is queued (bounded by the broker's
    # in-flight limit); once that is taken, reading stops exactly at the high water, and resumes.
    caught_up = next(i for i, n in enumerate(queued) if n <= HIGH_WATER)
    assert max(queued[caught_up:]) == HIGH_WATER
    assert max(queued) <= 1000

    async with subscriber(broker) as stream:  # every acknowledgement reached the broker
        left = await stream.take(10, 1.0)
        assert [bytes(m.payload) for m in left] == [], [(m.mid, m.qos, m.retain) for m in left]
