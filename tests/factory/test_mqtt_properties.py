"""What factory.mqtt._paho does inside paho-mqtt and aiomqtt: every internal it uses is there
in the installed versions; paho's MQTT v5 properties with the lookup tables shared decode as
paho's own class does, and properties still arrive intact through the real broker."""

# paho's Properties has no type annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import asyncio

import paho.mqtt._packet
import paho.mqtt.client
import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from factory.mqtt import connect, parse_mqtt_url
from factory.mqtt._paho import SharedTablesProperties, install_shared_tables, missing


def _publish_properties(cls: type[Properties]) -> Properties:
    props = cls(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 3600
    props.ContentType = "application/json"
    props.ResponseTopic = "factory/v1/s/d/cmd/reply"
    props.CorrelationData = b"\x00\x01req"
    props.UserProperty = [("schema", "telemetry-batch.v1"), ("schema", "again")]
    return props


def test_the_internals_we_reach_into_are_there() -> None:
    """Fails when a paho-mqtt or aiomqtt upgrade moves what factory.mqtt._paho relies on."""
    assert missing() == []


def test_decoding_matches_paho_and_instances_do_not_share_values() -> None:
    packed = _publish_properties(Properties).pack()
    ours, _ = SharedTablesProperties(PacketTypes.PUBLISH).unpack(packed)
    theirs, _ = Properties(PacketTypes.PUBLISH).unpack(packed)
    assert ours.json() == theirs.json()
    assert ours.pack() == packed
    assert not hasattr(SharedTablesProperties(PacketTypes.PUBLISH), "ContentType")
    ours.clear()
    assert ours.json() == {}
    with pytest.raises(MQTTException):
        SharedTablesProperties(PacketTypes.PUBACK).ContentType = "text/plain"  # not allowed in PUBACK


def test_installed_where_paho_decodes_incoming_packets() -> None:
    install_shared_tables()
    assert paho.mqtt._packet.Properties is SharedTablesProperties  # type: ignore[attr-defined]
    assert paho.mqtt.client.Properties is SharedTablesProperties  # type: ignore[attr-defined]


@pytest.mark.integration
async def test_properties_arrive_through_the_broker(mqtt_url: str, site: str) -> None:
    topic = f"factory/v1/{site}/props/telemetry"
    target = parse_mqtt_url(mqtt_url)
    install_shared_tables()
    async with connect(target, "") as subscriber, connect(target, "") as publisher:
        await subscriber.subscribe(topic, qos=1)
        await publisher.publish(topic, b"{}", qos=1, properties=_publish_properties(Properties))
        message = await asyncio.wait_for(anext(aiter(subscriber.messages)), 10)
    assert isinstance(message.properties, SharedTablesProperties)
    received = message.properties.json()
    assert received["ContentType"] == "application/json"
    assert received["UserProperty"] == [("schema", "telemetry-batch.v1"), ("schema", "again")]
    assert received["CorrelationData"] == "0001726571"
