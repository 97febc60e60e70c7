"""How the cloud side reads the platform's topics from a NATS cluster with JetStream: the one
module that owns nats-py. Cloud only: the edge agent talks MQTT 3.1.1 to NATS's MQTT
listener and never imports this.

Devices keep their MQTT topics; NATS maps them to subjects (``/`` becomes ``.``), so
``factory/v1/mill-a/pi-1/telemetry`` is ``factory.v1.mill-a.pi-1.telemetry``. The device
topics ingest stores are captured by one work-queue stream (``DEVICES``), the ERP's and
analytics' events by a stream of their own (``EVENTS``). ``JetStreamSubscriber`` reads one
durable pull consumer, shared by every ingest worker on any machine: each message goes to
one worker, and is acknowledged only once that worker has committed it; one never
acknowledged (a crash, a lost connection) is delivered again after ``ack_wait_s``. Each
reader of the events (the alert bridge) has a durable consumer of its own on ``EVENTS``.

``JetStreamPublisher`` is how the outbox relays put their events into ``EVENTS``: a publish
returns only once the stream has stored the message (its publish acknowledgement, as a
PUBACK on MQTT), and every message carries ``Nats-Msg-Id``, the event's identity, so a
resend of an event the stream already has (after a crash between the stream's
acknowledgement and the outbox's stamp) is dropped by the stream within its
``duplicate_window``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import unquote

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

__all__ = [
    "DEVICES",
    "EVENTS",
    "BusLostError",
    "JetStreamPublisher",
    "JetStreamSubscriber",
    "NatsError",
    "NatsTarget",
    "NatsUrlError",
    "Published",
    "Received",
    "StreamSpec",
    "ensure_stream",
    "parse_nats_url",
    "subject",
    "topic_of",
]

log = logging.getLogger(__name__)
DEFAULT_PORT: Final = 4222
FETCH_MAX: Final = 500  # messages asked for in one pull request
FETCH_WAIT_S: Final = 1.0  # how long one pull request waits for the first message
STREAM_NAME_IN_USE: Final = 10058  # JetStream's error code


class NatsError(Exception):
    """The NATS cluster refused or failed an operation."""


class BusLostError(NatsError):
    """No server of the cluster could be reached, or the connection was lost for good."""


class NatsUrlError(ValueError):
    """A NATS URL that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class NatsTarget:
    servers: tuple[str, ...]  # "host:port", any of the cluster's nodes (the client learns the rest)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    replicas: int = 1  # copies of each stream the platform creates (at most the cluster's size)

    @property
    def url(self) -> str:
        """The URL without credentials: safe to print and log."""
        return f"nats://{','.join(self.servers)}" + (f"?replicas={self.replicas}" if self.replicas != 1 else "")

    @property
    def server_urls(self) -> list[str]:
        return [f"nats://{server}" for server in self.servers]


def parse_nats_url(url: str) -> NatsTarget:
    """Parse ``nats://[user:pass@]host[:port][,host2[:port2]...][?replicas=N]``.

    ``replicas`` defaults to the number of servers listed, at most 3 (a stream in three
    copies survives one node lost; more copies cost writes and buy little)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "nats" or not sep:
        raise NatsUrlError(f"NATS URL must start with nats://, got {url.split('://', maxsplit=1)[0]!r}")
    rest, _, query = rest.partition("?")
    rest = rest.rstrip("/")
    credentials, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    servers: list[str] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise NatsUrlError(f"NATS URL has an empty host in {hosts!r}")
        if colon and not (port.isdigit() and 0 < int(port) < 65536):
            raise NatsUrlError(f"NATS URL port {port!r} is not a port number")
        servers.append(f"{host}:{port or DEFAULT_PORT}")
    replicas = min(3, len(servers))
    if query:
        key, _, value = query.partition("=")
        if key != "replicas" or not value.isdigit() or not 1 <= int(value) <= 5:
            raise NatsUrlError(f"NATS URL query must be replicas=1..5, got {query!r}")
        replicas = int(value)
    return NatsTarget(tuple(servers), username, password, replicas)


def subject(mqtt_topic: str) -> str:
    """The NATS subject of an MQTT topic or filter, as NATS's MQTT listener maps it."""
    return mqtt_topic.replace("/", ".").replace("+", "*").replace("#", ">")


def topic_of(nats_subject: str) -> str:
    """The MQTT topic of a subject (the platform's names hold no ``.`` of their own)."""
    return nats_subject.replace(".", "/")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A JetStream stream the platform relies on; ``config`` is what is created or updated."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["workqueue", "limits"]
    max_age_s: float
    max_bytes: int  # -1: bounded by the server's JetStream store (``max_file_store``)
    description: str

    def config(self, replicas: int) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name, description=self.description, subjects=list(self.subjects),
            retention=api.RetentionPolicy(self.retention), storage=api.StorageType.FILE, num_replicas=replicas,
            max_age=self.max_age_s, max_bytes=self.max_bytes, discard=api.DiscardPolicy.NEW,
            max_msg_size=256 * 1024 + 1024, duplicate_window=120.0,
        )  # fmt: skip

    def as_json(self, replicas: int) -> dict[str, Any]:
        """The config as the NATS CLI takes it (``nats stream add --config FILE``)."""
        return {k: v for k, v in self.config(replicas).as_dict().items() if v is not None}


WEEK_S: Final = 7 * 24 * 3600.0
# The device topics ingest stores: a work queue, so each message is kept until one worker
# has acknowledged it (what Mosquitto's persistent session held before), then dropped.
DEVICES: Final = StreamSpec(
    "FACTORY_DEVICES",
    tuple(subject(f"factory/v1/+/+/{kind}") for kind in ("telemetry", "status", "tags", "cmd/reply")),
    "workqueue", WEEK_S, -1, "device telemetry, status, tag catalogs and write-back replies, for ingest",
)  # fmt: skip
# Domain events: kept for a week for every reader (alerts, reports, MCP), each with its own consumer.
EVENTS: Final = StreamSpec(
    "FACTORY_EVENTS", (subject("factory/v1/events/#"),), "limits", WEEK_S, -1,
    "domain events from the ERP outbox and from analytics",
)  # fmt: skip


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int) -> None:
    """Create the stream, or bring an existing one to ``spec`` (idempotent; several workers
    starting at once are fine: the loser of the race updates to the same config)."""
    config = spec.config(replicas)
    try:
        try:
            await js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:  # else created meanwhile by another worker
                    raise
            else:
                return
        await js.update_stream(config)
    except nats.errors.Error as exc:
        detail = getattr(exc, "description", None) or exc
        raise NatsError(f"stream {spec.name}: {detail}") from exc


async def connect(target: NatsTarget, name: str, timeout_s: float = 5.0) -> Client:
    """A connection to any reachable node; it follows the cluster and reconnects by itself."""
    try:
        return await nats.connect(
            servers=target.server_urls, user=target.username, password=target.password, name=name,
            connect_timeout=timeout_s, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            allow_reconnect=True,
        )  # fmt: skip
    except (nats.errors.Error, OSError) as exc:
        raise BusLostError(f"no NATS server reachable at {target.url}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Received:
    """A message from the stream, shaped as an MQTT one (``topic``, ``payload``, ``mid``, ``qos``)."""

    topic: str
    payload: bytes
    mid: int  # this subscriber's number for it, passed back to ``ack``
    qos: int = 1


class JetStreamSubscriber:
    """One worker's share of a durable consumer (ingest's work queue, or a reader's own
    consumer of the events): ``take`` a batch, store it, then ``ack`` it. The same interface
    as ``factory.mqtt.Subscriber``, except that ``ack`` is awaited. Messages are pulled
    ahead up to ``high_water``; a pull never holds more."""

    def __init__(
        self, target: NatsTarget, client_id: str, filters: Sequence[str], *, durable: str = "ingest",
        stream: StreamSpec = DEVICES, high_water: int = 2000, ack_wait_s: float = 60.0,
        deliver: Literal["all", "new"] = "all",
    ) -> None:  # fmt: skip
        self._target = target
        self._name = client_id
        self._filters = [subject(f) for f in filters]
        self._durable = durable
        self._spec = stream
        self._high_water = high_water
        self._ack_wait_s = ack_wait_s
        self._deliver = api.DeliverPolicy.ALL if deliver == "all" else api.DeliverPolicy.NEW
        self._nc: Client | None = None
        self._queue: asyncio.Queue[Received] = asyncio.Queue()
        self._pending: dict[int, Msg] = {}
        self._next_mid = 0
        self._room = asyncio.Event()
        self._puller: asyncio.Task[None] | None = None
        self._getter: asyncio.Task[Received] | None = None

    async def __aenter__(self) -> JetStreamSubscriber:
        self._nc = await connect(self._target, self._name)
        try:
            js = self._nc.jetstream(timeout=10.0)
            await ensure_stream(js, self._spec, self._target.replicas)
            config = api.ConsumerConfig(
                durable_name=self._durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self._ack_wait_s,
                max_deliver=-1, max_ack_pending=100_000, filter_subjects=self._filters,
                deliver_policy=self._deliver,  # where a new consumer starts; replicas: as its stream
            )  # fmt: skip
            await js.add_consumer(self._spec.name, config)  # the same config again is no change
            pull = await js.pull_subscribe_bind(durable=self._durable, stream=self._spec.name)
        except nats.errors.Error as exc:
            await self._nc.close()
            raise NatsError(f"consumer {self._durable} on {self._spec.name}: {exc}") from exc
        except BaseException:
            await self._nc.close()
            raise
        self._room.set()
        self._puller = asyncio.create_task(self._pull(pull), name=f"pull {self._durable}")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in (self._puller, self._getter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
                    await task
        if self._nc is not None:
            # What was taken and not stored goes back at once, not after ack_wait.
            with contextlib.suppress(nats.errors.Error, OSError):
                for msg in self._pending.values():
                    await msg.nak()
                await self._nc.flush(timeout=2)
            self._pending.clear()
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.close()

    async def _pull(self, pull: JetStreamContext.PullSubscription) -> None:
        """Keep up to ``high_water`` messages fetched ahead of ``take``."""
        while True:
            room = self._high_water - self._queue.qsize()
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                msgs = await pull.fetch(min(room, FETCH_MAX), timeout=FETCH_WAIT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as exc:  # a node lost or a leader elected: the client reconnects
                log.warning("pull from %s: %s; retrying", self._spec.name, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                self._next_mid += 1
                self._pending[self._next_mid] = msg
                self._queue.put_nowait(Received(topic_of(msg.subject), msg.data, self._next_mid))

    async def take(
        self, limit: int, wait_s: float | None, *, wake: asyncio.Future[Any] | None = None,
        max_bytes: int | None = None,
    ) -> list[Received]:  # fmt: skip
        """Up to ``limit`` messages (and, past the first, up to ``max_bytes`` of payload);
        waits at most ``wait_s`` (None: forever) for the first, and no longer than until
        ``wake`` (if given) is done. Always lets the event loop run once."""
        if self._puller is None:
            raise NatsError("the subscriber is not connected")
        out: list[Received] = []
        if self._getter is None and not self._queue.empty():
            await asyncio.sleep(0)
            out.append(self._queue.get_nowait())
        else:
            if self._getter is None:
                self._getter = asyncio.ensure_future(self._queue.get())
            waiting: set[asyncio.Future[Any]] = {self._getter, self._puller}
            if wake is not None:
                waiting.add(wake)
            done, _ = await asyncio.wait(waiting, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if self._getter in done:
                out.append(self._getter.result())
                self._getter = None
            elif self._puller in done:
                raise BusLostError(f"pulling from {self._spec.name} stopped: {self._puller.exception()!r}")
        budget = (max_bytes or 0) - len(out[0].payload) if out and max_bytes else None
        while len(out) < limit and not self._queue.empty() and (budget is None or budget > 0):
            message = self._queue.get_nowait()
            out.append(message)
            if budget is not None:
                budget -= len(message.payload)
        if self._queue.qsize() < self._high_water // 2:
            self._room.set()
        return out

    async def ack(self, messages: Iterable[tuple[int, int]]) -> None:
        """Acknowledge messages, as (``mid``, ``qos``), once they are stored: the stream drops them."""
        try:
            for mid, _qos in messages:
                msg = self._pending.pop(mid, None)
                if msg is not None:
                    await msg.ack()
        except nats.errors.Error as exc:  # unacknowledged ones come again; the key absorbs them
            raise BusLostError(f"acknowledging to {self._spec.name}: {exc}") from exc

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """A plain NATS message on the topic's subject; MQTT subscribers of the topic get it."""
        if self._nc is None:
            raise NatsError("the subscriber is not connected")
        try:
            await self._nc.publish(subject(topic), payload)
        except nats.errors.Error as exc:
            raise BusLostError(f"publish to {topic}: {exc}") from exc

    @property
    def waiting(self) -> int:
        """Messages fetched and not yet taken."""
        return self._queue.qsize()

    @property
    def high_water(self) -> int:
        """At most this many are fetched ahead (the stream holds the rest)."""
        return self._high_water

    def empty(self) -> bool:
        """Nothing fetched that has not been taken."""
        return self._getter is None and self._queue.empty()


@dataclass(frozen=True, slots=True)
class Published:
    """The stream's acknowledgement of one message."""

    sequence: int  # its place in the stream (the first copy's, for a duplicate)
    duplicate: bool  # the stream had it already (same ``Nats-Msg-Id``): nothing was added


class JetStreamPublisher:
    """Publishes to a stream and waits for the stream's acknowledgement; ``async with``.

    ``publish`` raises ``NatsError`` (``BusLostError`` when no node answered in time): the
    message may or may not be stored, and sending it again with the same ``msg_id`` is safe.
    The stream is created or updated to ``stream`` on connecting, so publishers and readers
    may start in any order."""

    def __init__(self, target: NatsTarget, client_id: str, *, stream: StreamSpec = EVENTS) -> None:
        self._target = target
        self._name = client_id
        self._spec = stream
        self._js: JetStreamContext | None = None
        self._nc: Client | None = None

    @property
    def url(self) -> str:
        return self._target.url

    async def __aenter__(self) -> JetStreamPublisher:
        self._nc = await connect(self._target, self._name)
        try:
            self._js = self._nc.jetstream(timeout=10.0)
            await ensure_stream(self._js, self._spec, self._target.replicas)
        except BaseException:
            await self._nc.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()

    async def publish(self, topic: str, payload: bytes, *, msg_id: str, timeout_s: float = 10.0) -> Published:
        """Store ``payload`` on ``topic``'s subject; returns once the stream has it."""
        if self._js is None:
            raise NatsError("the publisher is not connected")
        try:
            ack = await self._js.publish(subject(topic), payload, timeout=timeout_s, stream=self._spec.name,
                                         headers={"Nats-Msg-Id": msg_id})  # fmt: skip
        except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusLostError(f"{self._spec.name} did not confirm {topic} in {timeout_s:g} s: {exc!r}") from exc
        except nats.errors.Error as exc:
            detail = getattr(exc, "description", None) or exc
            raise NatsError(f"publish to {self._spec.name}: {detail}") from exc
        return Published(ack.seq, bool(ack.duplicate))
