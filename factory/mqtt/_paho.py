"""Every place the platform reaches into paho-mqtt's and aiomqtt's insides, fenced here.

aiomqtt exposes neither paho's manual acknowledgement nor its message queue, and paho reads
one packet per event-loop turn and rebuilds its property tables per packet: ingest's
throughput needs all four. ``missing()`` names the internals this module relies on that the
installed versions do not have; a test keeps it empty, so an upgrade that moves them fails
there, not in production.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import struct
from collections.abc import Iterable
from typing import Any, Final

import aiomqtt
import paho.mqtt._packet
import paho.mqtt.client
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "BurstReader",
    "disconnected",
    "install_shared_tables",
    "manual_ack",
    "missing",
    "queue",
    "send_acks",
]

# (object, attribute) pairs the code below uses, checked by ``missing``.
_PAHO_CLIENT: Final = ("_sock_recv", "_packet_read", "_loop_rc_handle", "_packet_queue", "loop_read",
                       "manual_ack_set", "ack")  # fmt: skip
_AIOMQTT_CLIENT: Final = ("_client", "_queue", "_disconnected")


def missing() -> list[str]:
    """The internals used here that the installed paho-mqtt and aiomqtt lack (empty: all present)."""
    gone = [f"paho.mqtt.client.Client.{name}" for name in _PAHO_CLIENT if not hasattr(paho.mqtt.client.Client, name)]
    if not re.search(r"self\._sock\s*[:=]", inspect.getsource(paho.mqtt.client.Client.__init__)):
        gone.append("paho.mqtt.client.Client._sock")
    made = inspect.getsource(aiomqtt.Client.__init__)  # set there; a client needs a running loop to exist
    gone += [f"aiomqtt.Client.{name}" for name in _AIOMQTT_CLIENT if not re.search(rf"self\.{name}\s*[:=]", made)]
    gone += [f"{module.__name__}.Properties" for module in (paho.mqtt._packet, paho.mqtt.client)  # noqa: SLF001
             if not hasattr(module, "Properties")]  # fmt: skip
    tables = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    gone += [f"Properties.{name}" for name in ("types", "names", "properties") if not hasattr(tables, name)]
    return gone


def queue(client: aiomqtt.Client) -> asyncio.Queue[aiomqtt.Message]:
    """aiomqtt's queue of received messages."""
    return client._queue  # noqa: SLF001


def disconnected(client: aiomqtt.Client) -> asyncio.Future[Any]:
    """aiomqtt's future that completes when the connection is lost."""
    return client._disconnected  # noqa: SLF001


class SharedTablesProperties(Properties):
    """paho's MQTT v5 ``Properties`` with its lookup tables built once, not per instance.

    paho builds three tables (property names, types, which packets allow which property)
    afresh for every received PUBLISH and PUBACK: measured at about a quarter of ingest's
    CPU per one-point message. The tables are constant, so they become class attributes;
    everything else, including the wire format, is paho's own code. ``install_shared_tables``
    puts it into the two paho modules that create properties for incoming packets.
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


def install_shared_tables() -> None:
    """Put ``SharedTablesProperties`` where paho makes properties for received packets (idempotent)."""
    paho.mqtt._packet.Properties = SharedTablesProperties  # type: ignore[attr-defined]  # noqa: SLF001
    paho.mqtt.client.Properties = SharedTablesProperties  # type: ignore[attr-defined]


def manual_ack(client: aiomqtt.Client) -> None:
    """Hold back PUBACK until ``send_acks``, so a message is acknowledged only once it is
    safely stored (paho's switch, which aiomqtt does not expose); before connecting."""
    client._client.manual_ack_set(on=True)  # noqa: SLF001


class BurstReader:
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


def send_acks(client: aiomqtt.Client, messages: Iterable[tuple[int, int]]) -> None:
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
