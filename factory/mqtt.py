"""One place that knows how we talk to the MQTT broker (edge and cloud alike).

Wraps aiomqtt (itself paho-mqtt on asyncio). Edge-safe: no cloud imports.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt._packet
import paho.mqtt.client
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, PUBACK
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "SESSION_EXPIRY_S",
    "MessageStream",
    "MqttTarget",
    "MqttUrlError",
    "SharedTablesProperties",
    "Will",
    "ack",
    "connect",
    "enable_manual_ack",
    "parse_mqtt_url",
]

Protocol = Literal["5", "3.1.1"]
SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent subscriber keeps its queue across a week of downtime


class SharedTablesProperties(Properties):
    """paho's MQTT v5 ``Properties`` with its lookup tables built once, not per instance.

    paho builds three tables (property names, types, which packets allow which property)
    afresh for every received PUBLISH and PUBACK: measured at about a quarter of ingest's
    CPU per one-point message. The tables are constant, so they become class attributes;
    everything else, including the wire format, is paho's own code. Installed below in
    the two paho modules that create properties for incoming packets.
    """

    _tables = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    types = _tables.types
    names = _tables.names
    properties = _tables.properties

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's name
        object.__setattr__(self, "packetType", packetType)

    def clear(self) -> None:
        for name in [n for n in vars(self) if n != "packetType"]:
            delattr(self, name)


paho.mqtt._packet.Properties = SharedTablesProperties  # type: ignore[attr-defined]  # noqa: SLF001
paho.mqtt.client.Properties = SharedTablesProperties  # type: ignore[attr-defined]


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
) -> aiomqtt.Client:
    """An unconnected client; enter it with ``async with``.

    ``persistent`` asks the broker to keep the session (and queue QoS 1 messages)
    while the client is away: clean_session=False on 3.1.1, clean_start=False with a
    session expiry on MQTT 5.
    """
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


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Hold back PUBACK until ``ack`` is called, so a message is acknowledged only once
    it is safely stored. aiomqtt does not expose paho's manual-ack switch, so this
    reaches its paho client; call before entering the client."""
    client._client.manual_ack_set(on=True)  # noqa: SLF001


class _BurstReader:
    """Reads many packets each time the socket is readable, from one ``recv`` of many bytes,
    and stops reading while the consumer is behind.

    paho reads one packet per ``loop_read`` (aiomqtt calls it once per readable event),
    with a ``recv`` for the first byte, one per length byte and one for the rest: every
    small message cost a full event-loop turn and three system calls (the largest share of
    ingest's CPU per one-point message). Here paho's reads are served from a buffer filled
    ``READ_BYTES`` at a time, and packets are read until the socket has nothing more, or
    ``PACKETS`` were read and the buffer is empty, so other tasks get their turn.

    Over TLS a read of ``READ_BYTES`` takes whole records (at most 16 KiB each), so no
    decrypted bytes are left inside the TLS socket, where the descriptor would not
    announce them (paho's one-byte reads did leave them; aiomqtt checks for that).

    Reading that fast outruns the consumer, so past ``high_water`` queued messages the
    socket is no longer watched (the broker holds the rest: nothing unacknowledged is lost)
    and ``resume`` watches it again once the consumer has taken the queue below half.
    """

    PACKETS: Final = 256
    READ_BYTES: Final = 64 * 1024

    def __init__(self, client: aiomqtt.Client, high_water: int) -> None:
        self._paho = client._client  # noqa: SLF001
        self._queue = client._queue  # noqa: SLF001
        self._disconnected = client._disconnected  # noqa: SLF001
        self._loop = asyncio.get_running_loop()
        self.high_water = high_water
        self._sock_recv = self._paho._sock_recv  # noqa: SLF001 - paho's own, with its TLS handling
        self._buffer = memoryview(b"")
        self._source: object = self._paho._sock  # noqa: SLF001 - the socket the buffer is read from
        self._paused: int | None = None  # the descriptor no longer watched
        self._paho._sock_recv = self._recv  # type: ignore[method-assign,assignment]  # noqa: SLF001
        self._paho.loop_read = self._read  # type: ignore[method-assign]

    def _recv(self, size: int) -> bytes:
        if self._source is not self._paho._sock:  # noqa: SLF001 - a new connection: nothing of the old one
            self._buffer, self._source = memoryview(b""), self._paho._sock  # noqa: SLF001
        if not self._buffer:
            self._buffer = memoryview(self._sock_recv(self.READ_BYTES))  # BlockingIOError when there is nothing
            if not self._buffer:
                return b""  # closed by the broker
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk.tobytes()

    def _read(self, max_packets: int = 1) -> MQTTErrorCode:
        paho_client, count = self._paho, 0
        while count < self.PACKETS or self._buffer:
            if paho_client._sock is None:  # noqa: SLF001
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if self._queue.qsize() >= self.high_water:
                self._pause()
                break
            rc = paho_client._packet_read()  # noqa: SLF001
            if rc > 0:
                return paho_client._loop_rc_handle(rc)  # noqa: SLF001
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
            count += 1
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _pause(self) -> None:
        sock = self._paho._sock  # noqa: SLF001
        if self._paused is None and sock is not None:
            self._paused = sock.fileno()
            self._loop.remove_reader(self._paused)

    def resume(self) -> None:
        """Watch the socket again if reading was paused and the consumer has caught up;
        what the buffer still holds is read at once (the socket may never signal it)."""
        if self._paused is None or self._queue.qsize() >= self.high_water // 2:
            return
        sock, self._paused = self._paho._sock, None  # noqa: SLF001
        if sock is not None and sock.fileno() >= 0:
            self._loop.add_reader(sock.fileno(), self._readable)
            self._loop.call_soon(self._readable)

    def _readable(self) -> None:
        """As aiomqtt's own reader: a failure to read is a lost connection."""
        try:
            self._paho.loop_read()
        except Exception as exc:  # noqa: BLE001
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)


_PUBACK: Final = struct.Struct("!BBH")  # PUBACK, remaining length 2, packet id: success, no properties


def ack(client: aiomqtt.Client, messages: Iterable[tuple[int, int]]) -> None:
    """Acknowledge messages, given as (packet id, QoS), received with manual ack enabled.

    The QoS 1 acknowledgements go out as one write (paho would make one packet, one wake-up
    write and one ``send`` each); a QoS 2 one goes through paho, after those before it.
    """
    paho_client = client._client  # noqa: SLF001
    pubacks = bytearray()
    for mid, qos in messages:
        if qos == 1:
            pubacks += _PUBACK.pack(PUBACK, 2, mid)
        elif qos == 2:
            if pubacks:
                paho_client._packet_queue(PUBACK, bytes(pubacks), 0, 1)  # noqa: SLF001
                pubacks.clear()
            paho_client.ack(mid, qos)
    if pubacks:
        paho_client._packet_queue(PUBACK, bytes(pubacks), 0, 1)  # noqa: SLF001


class MessageStream:
    """Received messages in batches, with a wait limit that never loses one.

    aiomqtt's message iterator makes a task per message, and a timeout around it
    (``wait_for``) can drop a message that arrives just as the timeout fires. This reads
    aiomqtt's queue directly (with manual ack, the other place that depends on aiomqtt's
    insides): one pending get survives timeouts, and whatever else is queued is taken
    without waiting.
    """

    def __init__(self, client: aiomqtt.Client, high_water: int = 500) -> None:
        self._queue = client._queue  # noqa: SLF001
        self._disconnected = client._disconnected  # noqa: SLF001
        self._getter: asyncio.Task[aiomqtt.Message] | None = None
        self._reader = _BurstReader(client, high_water)

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
                raise aiomqtt.MqttError("disconnected while waiting for messages")
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
