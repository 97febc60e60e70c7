"""The alert bridge: domain events and device states in, Alertmanager alerts out.

Two loops share ``alerting.alert``:

- the consumer takes messages from a persistent MQTT session (QoS 1, its own broker
  account) or, on a NATS cluster, from its own durable consumer (``alerts``) of the
  ``FACTORY_EVENTS`` stream; turns each into changes (``alerting.rules``), records them and
  only then acknowledges the message: at least once, and a redelivered message changes
  nothing. On NATS the devices' status messages are in ingest's work queue, which only
  ingest reads; the bridge takes device states from what ingest stored of them
  (``telemetry.device``), looked at every ``status_poll_s``;
- the poster sends every firing alert, and every resolve not yet taken, to Alertmanager's
  ``POST /api/v2/alerts`` at once after a change and every ``repost_s`` (well inside
  Alertmanager's ``resolve_timeout``, after which an alert not heard of again resolves by
  itself). A restart re-posts the same label sets with the same start: no new notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import httpx
import psycopg
from pydantic import BaseModel, ConfigDict, Field

from alerting import store
from alerting.rules import EVENT_KINDS, STATUS_FILTER, LinkBase, changes_for, device_change
from factory import bus, mqtt, nats
from factory.events import TOPIC_PREFIX
from factory.metrics import Metric, serve_http
from factory.runtime import Listen, keep_running

__all__ = ["DURABLE", "AlertmanagerError", "BridgeConfig", "BridgeStats", "run_bridge", "topic_filters"]

log = logging.getLogger(__name__)
TAKE: Final = 200
DURABLE: Final = "alerts"  # the bridge's consumer of FACTORY_EVENTS on a NATS cluster


class AlertmanagerError(Exception):
    """Alertmanager refused the alerts or could not be reached."""


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str
    bus_url: str = Field(
        description="the bridge's own account: mqtt://factory-alerts:PASSWORD@HOST:PORT, or on a"
        " NATS cluster nats://alerts:PASSWORD@HOST1:4222,HOST2:4222,..."
    )
    client_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    site: str = Field("+", pattern=r"^(\+|[a-z0-9][a-z0-9_-]{0,62})$", description="only this site's devices")
    alertmanager_url: str = Field(pattern=r"^https?://")
    grafana_url: str = Field("http://localhost:3000", pattern=r"^https?://", description="for dashboard links")
    repost_s: float = Field(60.0, gt=0, description="firing alerts are posted again this often (< resolve_timeout)")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=60)
    status_poll_s: float = Field(2.0, gt=0, description="on NATS: how often device states are read from the database")
    http_host: str = "127.0.0.1"
    http_port: int = Field(9110, ge=0, le=65535)
    http_fallback: bool = True  # a busy default port moves to a free one


def topic_filters(site: str = "+", *, status: bool = True) -> list[str]:
    """Exactly what the bridge subscribes to (with the default ``site``, what its broker
    account may read; events are not per site); without ``status``, only the events."""
    events = [f"{TOPIC_PREFIX}/{kind}" for kind in EVENT_KINDS]
    return [*events, STATUS_FILTER.replace("/+/", f"/{site}/", 1)] if status else events


class BridgeStats:
    def __init__(self) -> None:
        self.messages = 0
        self.changes = 0
        self.posts = 0
        self.post_failures = 0
        self.posted_at = 0.0  # epoch seconds Alertmanager last took the alerts (or answered, with none to post)
        self.firing = 0
        self.connected = False

    def metrics(self) -> list[Metric]:
        def one(value: Callable[[], float]) -> Callable[[], list[tuple[tuple[tuple[str, str], ...], float]]]:
            return lambda: [((), float(value()))]

        return [
            Metric("factory_alerts_messages_total", "Messages the bridge took from the broker.", "counter",
                   one(lambda: self.messages)),
            Metric("factory_alerts_changes_total", "Alerts fired or resolved by the bridge.", "counter",
                   one(lambda: self.changes)),
            Metric("factory_alerts_posts_total", "Posts Alertmanager accepted.", "counter", one(lambda: self.posts)),
            Metric("factory_alerts_post_failures_total", "Posts Alertmanager refused or missed.", "counter",
                   one(lambda: self.post_failures)),
            Metric("factory_alerts_firing", "Alerts of the bridge firing now.", "gauge", one(lambda: self.firing)),
            Metric("factory_alerts_last_post_timestamp_seconds", "When Alertmanager last took the bridge's alerts.",
                   "gauge", one(lambda: self.posted_at)),
        ]  # fmt: skip


class _Bridge:
    def __init__(self, config: BridgeConfig, stats: BridgeStats) -> None:
        self.config = config
        self.stats = stats
        self.links = LinkBase(config.grafana_url)
        self.wake = asyncio.Event()

    async def consume(self) -> None:
        await keep_running(self._consume, retry_on=(psycopg.OperationalError, mqtt.MqttError, nats.NatsError, OSError,
                                                    TimeoutError),
                           what="alert bridge (broker)", logger=log, healthy=lambda: self.stats.connected,
                           on_error=lambda _exc: self._lost())  # fmt: skip

    def _lost(self) -> None:
        self.stats.connected = False

    def _subscriber(self, target: bus.BusTarget) -> mqtt.Subscriber | nats.JetStreamSubscriber:
        if isinstance(target, nats.NatsTarget):  # a consumer of its own; where it starts when first made: now
            return nats.JetStreamSubscriber(target, self.config.client_id, topic_filters(status=False),
                                            durable=DURABLE, stream=nats.EVENTS, deliver="new")  # fmt: skip
        return mqtt.Subscriber(target, self.config.client_id, topic_filters(self.config.site),
                               session_expiry_s=self.config.session_expiry_s)  # fmt: skip

    async def _consume(self) -> None:
        target = bus.parse_bus_url(self.config.bus_url)
        connecting = psycopg.AsyncConnection.connect(self.config.database_url, autocommit=True, connect_timeout=10)
        async with await connecting as conn:
            subscriber = self._subscriber(target)
            async with subscriber:
                self.stats.connected = True
                log.info("alert bridge reading %s as %s", target.url, self.config.client_id)
                while True:
                    messages = await subscriber.take(TAKE, None)
                    changed = 0
                    async with conn.transaction():
                        for message in messages:
                            payload = message.payload if isinstance(message.payload, bytes) else b""
                            for change in changes_for(str(message.topic), payload, self.links, datetime.now(UTC)):
                                changed += await store.apply(conn, change)
                    taken = [(m.mid, m.qos) for m in messages]
                    if isinstance(subscriber, nats.JetStreamSubscriber):
                        await subscriber.ack(taken)
                    else:
                        subscriber.ack(taken)
                    self.stats.messages += len(messages)
                    self._changed(changed)

    def _changed(self, changed: int) -> None:
        self.stats.changes += changed
        if changed:
            self.wake.set()

    async def watch_devices(self) -> None:
        await keep_running(self._watch_devices, retry_on=(psycopg.OperationalError, psycopg.errors.UndefinedTable,
                                                          OSError),
                           what="alert bridge (device states)", logger=log)  # fmt: skip

    async def _watch_devices(self) -> None:
        """Device states from ``telemetry.device``: each new one (a state or its time that
        differs from the one last applied) is applied as a status message would be. Looked
        at every ``status_poll_s`` rather than told by NOTIFY: a notifying transaction holds
        a database-wide lock through its commit, which would queue ingest's flushes behind
        each other (``erp_api.outbox`` met the same)."""
        applied: dict[tuple[str, str], tuple[str, datetime]] = {}
        connecting = psycopg.AsyncConnection.connect(self.config.database_url, autocommit=True, connect_timeout=10)
        async with await connecting as conn:
            while True:
                states = await store.device_states(conn, self.config.site)
                fresh = [s for s in states if applied.get((s.site, s.device)) != (s.state, s.at)]
                changed = 0
                if fresh:
                    async with conn.transaction():
                        for state in fresh:
                            changed += await store.apply(
                                conn, device_change(state.site, state.device, state.state, state.at, self.links)
                            )
                    applied.update(((s.site, s.device), (s.state, s.at)) for s in fresh)
                self._changed(changed)
                await asyncio.sleep(self.config.status_poll_s)

    async def post(self) -> None:
        await keep_running(self._post, retry_on=(psycopg.OperationalError, AlertmanagerError, OSError),
                           what="alert bridge (Alertmanager)", logger=log,
                           on_error=lambda _exc: self._failed())  # fmt: skip

    def _failed(self) -> None:
        self.stats.post_failures += 1

    async def _post(self) -> None:
        connecting = psycopg.AsyncConnection.connect(self.config.database_url, autocommit=True, connect_timeout=10)
        async with await connecting as conn, httpx.AsyncClient(base_url=self.config.alertmanager_url,
                                                                 timeout=10) as http:  # fmt: skip
            while True:
                self.wake.clear()
                alerts = await store.pending(conn)
                if alerts:
                    await _send(http, alerts)
                    await store.mark_posted(conn, alerts)
                    self.stats.posts += 1
                else:
                    await _healthy(http)  # nothing to say: still, /healthz tells whether it could
                self.stats.posted_at = time.time()
                self.stats.firing = sum(1 for a in alerts if a.ends_at is None)
                await store.purge(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.config.repost_s)

    def health(self) -> tuple[bool, dict[str, object]]:
        age = time.time() - self.stats.posted_at if self.stats.posted_at else None
        posting = age is not None and age < 3 * self.config.repost_s
        return self.stats.connected and posting, {
            "broker": "connected" if self.stats.connected else "disconnected",
            "alertmanager": "ok" if posting else "not reached",
            "firing": self.stats.firing,
        }


async def _healthy(http: httpx.AsyncClient) -> None:
    try:
        reply = await http.get("/-/healthy")
    except httpx.HTTPError as exc:
        raise AlertmanagerError(f"{http.base_url}: {exc}") from exc
    if reply.status_code != 200:
        raise AlertmanagerError(f"{http.base_url} is not healthy: {reply.status_code}")


async def _send(http: httpx.AsyncClient, alerts: list[store.Stored]) -> None:
    try:
        reply = await http.post("/api/v2/alerts", json=[a.to_api() for a in alerts])
    except httpx.HTTPError as exc:
        raise AlertmanagerError(f"{http.base_url}: {exc}") from exc
    if reply.status_code != 200:
        raise AlertmanagerError(f"{http.base_url} refused the alerts: {reply.status_code} {reply.text[:200]}")


async def run_bridge(
    config: BridgeConfig, *, stats: BridgeStats | None = None, on_listening: Callable[[int], None] | None = None
) -> None:
    """Run until cancelled: consumer, poster and the /healthz and /metrics endpoint (and on
    NATS the device states' reader)."""
    bridge = _Bridge(config, stats or BridgeStats())
    where = Listen(config.http_host, config.http_port, "--http", config.http_fallback)
    on_nats = isinstance(bus.parse_bus_url(config.bus_url), nats.NatsTarget)
    async with asyncio.TaskGroup() as group:
        group.create_task(bridge.consume(), name="alerts-consume")
        if on_nats:
            group.create_task(bridge.watch_devices(), name="alerts-devices")
        group.create_task(bridge.post(), name="alerts-post")
        group.create_task(serve_http(where, bridge.stats.metrics(), bridge.health, on_listening=on_listening),
                          name="alerts-http")  # fmt: skip
