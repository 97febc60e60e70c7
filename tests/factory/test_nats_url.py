"""``factory.nats``: the cluster URL and the MQTT topic <-> NATS subject mapping; ``factory.bus``'s choice."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from factory.bus import event_key, parse_bus_url
from factory.mqtt import MqttTarget
from factory.nats import DEVICES, EVENTS, NatsTarget, NatsUrlError, parse_nats_url, subject, topic_of


def test_a_cluster_url_lists_every_server_with_credentials_kept_out_of_its_printable_form() -> None:
    target = parse_nats_url("nats://ingest:s%40cret@10.0.0.1:4222,10.0.0.2,10.0.0.3:4333")
    assert target.servers == ("10.0.0.1:4222", "10.0.0.2:4222", "10.0.0.3:4333")
    assert (target.username, target.password, target.replicas) == ("ingest", "s@cret", 3)
    assert "cret" not in target.url
    assert "cret" not in repr(target)
    assert parse_nats_url("nats://h").replicas == 1
    assert parse_nats_url("nats://a,b,c,d,e").replicas == 3
    assert parse_nats_url("nats://a,b,c?replicas=1").replicas == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [("mqtt://h:1883", "nats://"), ("nats://h:99999", "port"), ("nats://a,,b", "empty host"),
     ("nats://h?replicas=9", "replicas"), ("nats://h?foo=1", "replicas"), ("nats://h:x", "port")],
)  # fmt: skip
def test_a_bad_url_is_refused_saying_why(url: str, reason: str) -> None:
    with pytest.raises(NatsUrlError, match=reason):
        parse_nats_url(url)


NAME = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)


@given(NAME, NAME, st.sampled_from(["telemetry", "status", "tags", "cmd/reply", "ack", "cmd"]))
def test_a_device_topic_maps_to_a_subject_and_back(site: str, device: str, kind: str) -> None:
    topic = f"factory/v1/{site}/{device}/{kind}"
    assert topic_of(subject(topic)) == topic
    assert "/" not in subject(topic)


def test_the_streams_capture_the_subjects_the_mqtt_filters_name() -> None:
    assert subject("factory/v1/+/+/cmd/reply") == "factory.v1.*.*.cmd.reply"
    assert "factory.v1.*.*.telemetry" in DEVICES.subjects
    assert EVENTS.subjects == ("factory.v1.events.>",)
    written = json.loads(json.dumps(DEVICES.as_json(3)))  # as `factory provision nats` writes it
    assert (written["retention"], written["num_replicas"], written["storage"]) == ("workqueue", 3, "file")
    assert json.loads(json.dumps(EVENTS.as_json(1)))["retention"] == "limits"


def test_a_bus_url_picks_the_broker_or_the_cluster() -> None:
    assert isinstance(parse_bus_url("nats://alerts:pw@n1:4222,n2:4222"), NatsTarget)
    assert isinstance(parse_bus_url("mqtt://factory-alerts:pw@broker:1883"), MqttTarget)
    with pytest.raises(ValueError, match="mqtt:// or mqtts://"):
        parse_bus_url("http://broker:1883")
    assert event_key("erp/7301.16384", 42) == "erp/7301.16384:42"  # source and id: unique across producers
