"""How every part talks to the MQTT broker, edge and cloud alike: the one module that owns
aiomqtt (itself paho-mqtt on asyncio). Edge-safe: no cloud imports.

``connect`` gives a ``Session`` (``async with``): publish, subscribe, receive. A
``Subscriber`` is a persistent session that acknowledges a message only when its caller
has stored it. Every failure of the broker or the connection is an ``MqttError`` (a lost
or refused connection a ``ConnectionLostError``); callers reconnect with
``factory.runtime.keep_running``. What reaches into paho's and aiomqtt's insides lives in
``factory.mqtt._paho``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from factory.mqtt import _paho

__all__ = [
    "SESSION_EXPIRY_S",
    "ConnectionLostError",
    "Message",
    "MqttError",
    "MqttTarget",
    "MqttUrlError",
    "Session",
    "Subscriber",
    "Will",
    "connect",
    "parse_mqtt_url",
]

Message = aiomqtt.Message


class MqttError(Exception):
    """The broker refused or failed an operation."""


class ConnectionLostError(MqttError):
    """The connection to the broker could not be made, or was lost."""


Protocol = Literal["5", "3.1.1"]
SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent subscriber keeps its queue across a week of downtime


class MqttUrlError(ValueError):
    """An MQTT URL that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    protocol: Protocol = "5"

    @property
    def url(self) -> str:
        """The URL without credentials: safe to print and log."""
        scheme = "mqtts" if self.tls else "mqtt"
        suffix = "" if self.protocol == "5" else "?protocol=3.1.1"
        return f"{scheme}://{self.host}:{self.port}{suffix}"

    def with_credentials(self, username: str | None, password: str | None) -> MqttTarget:
        return replace(self, username=username or self.username, password=password or self.password)


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt[s]://[user:pass@]host[:port][?protocol=3.1.1]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttUrlError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme!r}")
    if not parts.hostname:
        raise MqttUrlError("MQTT URL has no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise MqttUrlError(f"MQTT URL port: {exc}") from exc
    protocol: Protocol = "5"
    if parts.query:
        key, _, value = parts.query.partition("=")
        if key != "protocol" or value not in ("5", "3.1.1"):
            raise MqttUrlError(f"MQTT URL query must be protocol=5 or protocol=3.1.1, got {parts.query!r}")
        protocol = "5" if value == "5" else "3.1.1"
    return MqttTarget(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        protocol=protocol,
    )


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect(
    target: MqttTarget,
    client_id: str,
    *,
    will: Will | None = None,
    persistent: bool = False,
    session_expiry_s: int = SESSION_EXPIRY_S,
    keepalive_s: int = 30,
    timeout_s: float = 10.0,
) -> Session:
    """A session, connected when entered with ``async with``.

    ``persistent`` asks the broker to keep the session (and queue QoS 1 messages)
    while the client is away: clean_session=False on 3.1.1, clean_start=False with a
    session expiry on MQTT 5.
    """
    return Session(_client(target, client_id, will=will, persistent=persistent, session_expiry_s=session_expiry_s,
                           keepalive_s=keepalive_s, timeout_s=timeout_s))  # fmt: skip


def _client(
    target: MqttTarget, client_id: str, *, will: Will | None, persistent: bool, session_expiry_s: int,
    keepalive_s: int = 30, timeout_s: float = 10.0,
) -> aiomqtt.Client:  # fmt: skip
    v5 = target.protocol == "5"
    properties: Properties | None = None
    if v5 and persistent:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_s
    tls_context: ssl.SSLContext | None = None
    if target.tls:
        tls_context = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
    return aiomqtt.Client(
        hostname=target.host,
        port=target.port,
        identifier=client_id,
        username=target.username,
        password=target.password,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        clean_session=None if v5 else not persistent,
        clean_start=(not persistent) if v5 else MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        keepalive=keepalive_s,
        timeout=timeout_s,
        tls_context=tls_context,
        max_queued_outgoing_messages=None,
    )


class Session:
    """One connection to the broker, for ``async with``; its failures are ``MqttError``s."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def __aenter__(self) -> Session:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise ConnectionLostError(str(exc)) from exc
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._client.__aexit__(kind, exc, tb)
        except aiomqtt.MqttError as lost:
            if exc is None:
                raise ConnectionLostError(str(lost)) from lost
        if isinstance(exc, aiomqtt.MqttError):  # raised by aiomqtt inside the block
            raise ConnectionLostError(str(exc)) from exc

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float | None = None,
        properties: Properties | None = None,
    ) -> None:  # fmt: skip
        """QoS 1 and 2 return once the broker has the message; ``timeout_s`` bounds the wait."""
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout_s, properties=properties)
        except aiomqtt.MqttError as exc:
            raise MqttError(f"publish to {topic}: {exc}") from exc

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        try:
            await self._client.subscribe(topic_filter, qos=qos)
        except aiomqtt.MqttError as exc:
            raise MqttError(f"subscribe to {topic_filter}: {exc}") from exc

    @property
    def messages(self) -> AsyncIterator[Message]:
        """Messages as they arrive, until the connection is lost (``ConnectionLostError``)."""
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        try:
            async for message in self._client.messages:
                yield message
        except aiomqtt.MqttError as exc:
            raise ConnectionLostError(str(exc)) from exc


class Subscriber:
    """A persistent subscription that acknowledges a message only when told: ``take`` a
    batch, store it, then ``ack`` it. A message taken and never acknowledged (a crash, a
    lost connection) comes again on the next session, so what is acknowledged is stored.
    """

    def __init__(
        self, target: MqttTarget, client_id: str, filters: Sequence[str], *,
        session_expiry_s: int = SESSION_EXPIRY_S, high_water: int = 500,
    ) -> None:  # fmt: skip
        _paho.install_shared_tables()  # a quarter of the CPU per small message (see _paho)
        client = _client(target, client_id, will=None, persistent=True, session_expiry_s=session_expiry_s)
        _paho.manual_ack(client)
        self._client = client
        self._session = Session(client)
        self._filters = list(filters)
        self._high_water = high_water
        self._stream: _MessageStream | None = None

    async def __aenter__(self) -> Subscriber:
        await self._session.__aenter__()
        try:
            for name in self._filters:
                await self._session.subscribe(name, qos=1)
        except BaseException as exc:
            await self._session.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # A persistent session's backlog arrives with the connection, before the
        # subscriptions are confirmed: what came meanwhile (at most the broker's in-flight
        # limit, as nothing is acknowledged) is queued; from here the stream holds the
        # queue to its high water.
        self._stream = _MessageStream(self._client, self._high_water)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stream is not None:
            self._stream.close()
        await self._session.__aexit__(kind, exc, tb)

    @property
    def _open(self) -> _MessageStream:
        if self._stream is None:
            raise MqttError("the subscriber is not connected")
        return self._stream

    async def take(
        self, limit: int, wait_s: float | None, *, wake: asyncio.Future[Any] | None = None,
        max_bytes: int | None = None,
    ) -> list[Message]:  # fmt: skip
        """Up to ``limit`` messages (and, past the first, up to ``max_bytes`` of payload);
        waits at most ``wait_s`` (None: forever) for the first, and no longer than until
        ``wake`` (if given) is done. Always lets the event loop run once."""
        return await self._open.take(limit, wait_s, wake=wake, max_bytes=max_bytes)

    def ack(self, messages: Iterable[tuple[int, int]]) -> None:
        """Acknowledge messages, as (``message.mid``, ``message.qos``), once they are stored."""
        _paho.send_acks(self._client, messages)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        await self._session.publish(topic, payload, qos=qos)

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
        return self._stream.waiting if self._stream is not None else 0

    @property
    def high_water(self) -> int:
        """Past this many waiting, the socket is no longer read (the broker holds the rest)."""
        return self._high_water

    def empty(self) -> bool:
        """Nothing received that has not been taken."""
        return self._stream is None or self._stream.empty()


class _MessageStream:
    """Received messages in batches, with a wait limit that never loses one.

    aiomqtt's message iterator makes a task per message, and a timeout around it
    (``wait_for``) can drop a message that arrives just as the timeout fires. This reads
    aiomqtt's queue directly (with manual ack, the other place that depends on aiomqtt's
    insides): one pending get survives timeouts, and whatever else is queued is taken
    without waiting.
    """

    def __init__(self, client: aiomqtt.Client, high_water: int = 500) -> None:
        self._queue = _paho.queue(client)
        self._disconnected = _paho.disconnected(client)
        self._getter: asyncio.Task[aiomqtt.Message] | None = None
        self._reader = _paho.BurstReader(client, high_water)

    async def take(
        self,
        limit: int,
        wait_s: float | None,
        *,
        wake: asyncio.Future[Any] | None = None,
        max_bytes: int | None = None,
    ) -> list[aiomqtt.Message]:
        """Up to ``limit`` messages (and, past the first, up to ``max_bytes`` of payload);
        waits at most ``wait_s`` (None: forever) for the first, and no longer than until
        ``wake`` (if given) is done. Always lets the event loop run once, so a caller that
        works through a backlog slice by slice does not starve the other tasks."""
        out: list[aiomqtt.Message] = []
        if self._getter is None and not self._queue.empty():
            await asyncio.sleep(0)
            out.append(self._queue.get_nowait())
        else:
            if self._getter is None:
                self._getter = asyncio.ensure_future(self._queue.get())
            waiting: set[asyncio.Future[Any]] = {self._getter, self._disconnected}
            if wake is not None:
                waiting.add(wake)
            done, _ = await asyncio.wait(waiting, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if self._getter in done:
                out.append(self._getter.result())
                self._getter = None
            elif self._disconnected in done:
                raise ConnectionLostError("disconnected while waiting for messages")
        budget = (max_bytes or 0) - len(out[0].payload or b"") if out and max_bytes else None
        while len(out) < limit and not self._queue.empty() and (budget is None or budget > 0):
            message = self._queue.get_nowait()
            out.append(message)
            if budget is not None:
                budget -= len(message.payload or b"")
        self._reader.resume()
        return out

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
        return self._queue.qsize()

    @property
    def high_water(self) -> int:
        """Past this many waiting, the socket is no longer read (the broker holds the rest)."""
        return self._reader.high_water

    def empty(self) -> bool:
        """Nothing received that has not been taken."""
        return self._getter is None and self._queue.empty()

    def close(self) -> None:
        """Stop waiting. A message taken but not yet handled was not acknowledged, so the
        broker delivers it again on the next connection."""
        if self._getter is not None:
            self._getter.cancel()
            self._getter = None
