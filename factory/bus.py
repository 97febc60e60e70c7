"""Which bus a cloud service talks to, from its URL: one MQTT broker (``mqtt://``,
``mqtts://``) or a NATS cluster with JetStream (``nats://``). Ingest reads device topics by
this choice (``FACTORY_INGEST_URL``); the event publishers (the ERP's outbox relay,
analytics' event relay) and the event readers (the alert bridge) by ``FACTORY_EVENTS_URL``.

``event_publisher`` is what an outbox relay publishes through: it returns from ``publish``
only once the bus holds the event (MQTT: the broker's PUBACK; NATS: the ``FACTORY_EVENTS``
stream's acknowledgement), so a relay stamps an event sent only after that. On NATS the
event's identity (``event_key``) is its message id, and the stream drops a resend of one it
already has.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from factory import mqtt, nats
from factory.mqtt import MqttTarget
from factory.nats import NatsTarget

__all__ = ["BusTarget", "EventPublisher", "event_key", "event_publisher", "parse_bus_url"]

BusTarget = MqttTarget | NatsTarget


def parse_bus_url(url: str) -> BusTarget:
    """``nats://...`` (``factory.nats.parse_nats_url``) or ``mqtt[s]://...``
    (``factory.mqtt.parse_mqtt_url``); a ``ValueError`` saying why for anything else."""
    if url.startswith("nats://"):
        return nats.parse_nats_url(url)
    return mqtt.parse_mqtt_url(url)


def event_key(source: str, event_id: int) -> str:
    """An event's identity across producers (``factory.events``): its ``source`` and ``id``."""
    return f"{source}:{event_id}"


class EventPublisher(Protocol):
    @property
    def url(self) -> str: ...

    async def __aenter__(self) -> EventPublisher: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def publish_event(self, topic: str, payload: bytes, *, key: str, timeout_s: float = 10.0) -> None:
        """Returns once the bus has stored the event; raises ``mqtt.MqttError`` or
        ``nats.NatsError`` (it may or may not be stored: send it again with the same key)."""
        ...


class _MqttEvents:
    def __init__(self, target: MqttTarget, client_id: str) -> None:
        self._target = target
        self._session = mqtt.connect(target, client_id)

    @property
    def url(self) -> str:
        return self._target.url

    async def __aenter__(self) -> _MqttEvents:
        await self._session.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._session.__aexit__(kind, exc, tb)

    async def publish_event(self, topic: str, payload: bytes, *, key: str, timeout_s: float = 10.0) -> None:
        del key  # MQTT has no message id: readers deduplicate on the event's source and id
        await self._session.publish(topic, payload, qos=1, timeout_s=timeout_s)


class _NatsEvents:
    def __init__(self, target: NatsTarget, client_id: str) -> None:
        self._publisher = nats.JetStreamPublisher(target, client_id, stream=nats.EVENTS)

    @property
    def url(self) -> str:
        return self._publisher.url

    async def __aenter__(self) -> _NatsEvents:
        await self._publisher.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._publisher.__aexit__(kind, exc, tb)

    async def publish_event(self, topic: str, payload: bytes, *, key: str, timeout_s: float = 10.0) -> None:
        await self._publisher.publish(topic, payload, msg_id=key, timeout_s=timeout_s)


def event_publisher(target: BusTarget, client_id: str) -> EventPublisher:
    """A publisher of domain events on ``target``, connected when entered (``async with``)."""
    if isinstance(target, NatsTarget):
        return _NatsEvents(target, client_id)
    return _MqttEvents(target, client_id)
