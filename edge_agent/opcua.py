"""OPC UA source: data-change subscription or batched polling of one server.

asyncua's own supervisor (``auto_reconnect``) detects a dead server through its
keep-alive watchdog and recreates the subscription; we only add the first connect
with backoff. A node with a bad status is published with quality bad, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError

from edge_agent.config import OpcuaSource, OpcuaTag
from edge_agent.errors import SourceError, stop_if_cancelled
from edge_agent.reading import Reading
from edge_agent.stats import SourceStats
from factory.wire import Point, Quality

__all__ = ["OpcuaReader", "make_client", "quality_of", "to_value"]

log = logging.getLogger(__name__)
Emit = Callable[[Reading], None]
# Short enough that a server frees the session of a crashed agent soon; the keep-alive
# watchdog (1 s) keeps a live one open. Servers revise it within their own limits.
SESSION_TIMEOUT_MS = 60_000


def quality_of(status: ua.StatusCode | None) -> Quality:
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def to_value(raw: object) -> float | int | bool | None:
    """OPC UA scalars as wire values; anything else (text, arrays) is not a telemetry value."""
    if isinstance(raw, bool | int | float):
        return raw
    return None


def _ts_ms(when: datetime | None) -> int:
    return int(when.timestamp() * 1000) if when is not None else int(time.time() * 1000)


def point_of(tag: OpcuaTag, data: ua.DataValue) -> Point:
    value = to_value(data.Value.Value if data.Value is not None else None)
    quality = quality_of(data.StatusCode)
    if value is None and quality is Quality.GOOD:
        quality = Quality.BAD  # a value we cannot represent is not a good reading
    return Point(tag.name, _ts_ms(data.SourceTimestamp or data.ServerTimestamp), value, quality)


async def make_client(source: OpcuaSource, *, auto_reconnect: bool) -> Client:
    """An unconnected client with the source's credentials and security applied."""
    client = Client(source.endpoint, timeout=source.timeout_ms / 1000, auto_reconnect=auto_reconnect)
    client.session_timeout = SESSION_TIMEOUT_MS
    if source.username:
        client.set_user(source.username)
    if source.password_file:
        client.set_password(source.password_file.read_text(encoding="utf-8").strip())
    if source.security is not None and (security := source.security.as_string()) is not None:
        await client.set_security_string(security)
    return client


class _Handler:
    """asyncua subscription callbacks, turned into points.

    asyncua calls back once per changed node; the points of one burst (one publish
    response) are handed on together, as one reading, on the next turn of the loop.
    """

    def __init__(self, tags: dict[str, OpcuaTag], emit: Emit) -> None:
        self._tags = tags
        self._emit = emit
        self._burst: list[Point] = []

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        tag = self._tags.get(node.nodeid.to_string())
        if tag is None:
            return
        if not self._burst:
            asyncio.get_running_loop().call_soon(self._flush)
        self._burst.append(point_of(tag, data.monitored_item.Value))

    def _flush(self) -> None:
        burst, self._burst = self._burst, []
        self._emit(Reading.of(burst))

    def status_change_notification(self, status: Any) -> None:
        log.warning("opcua subscription status changed: %s", status)


class OpcuaReader:
    """Reads the tags of one OPC UA source until cancelled, calling ``emit`` with points."""

    def __init__(self, source: OpcuaSource, emit: Emit) -> None:
        self.source = source
        self._sink = emit
        self.stats = SourceStats()

    def _emit(self, reading: Reading) -> None:
        self.stats.polls += 1
        self._sink(reading)

    async def _lost(self, exc: Exception) -> None:
        """asyncua noticed a dead connection; its supervisor reconnects and resubscribes."""
        self.stats.reconnects += 1
        log.warning("opcua %s: connection lost (%s); reconnecting", self.source.name, exc)

    async def _client(self) -> Client:
        client = await make_client(self.source, auto_reconnect=True)
        client.connection_lost_callback = self._lost
        return client

    async def run(self) -> None:
        """Connect (retrying with capped backoff), then serve data until cancelled."""
        delay = 0.5
        while True:
            client = await self._client()
            try:
                await asyncio.wait_for(client.connect(), self.source.timeout_ms / 1000 + 1)
            except (OSError, TimeoutError, UaError) as exc:
                self.stats.errors += 1
                log.warning("opcua %s: cannot connect to %s: %s", self.source.name, self.source.endpoint, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                await self._serve(client)
            except (SourceError, OSError, TimeoutError, UaError) as exc:
                self.stats.errors += 1
                log.warning("opcua %s: %s; reconnecting", self.source.name, exc)
                await asyncio.sleep(delay)
            finally:
                await _quietly_disconnect(client)

    async def _serve(self, client: Client) -> None:
        nodes = {tag.name: client.get_node(tag.node) for tag in self.source.tags}
        if self.source.mode == "subscribe":
            tags = {nodes[t.name].nodeid.to_string(): t for t in self.source.tags}
            sub = await client.create_subscription(self.source.sampling_ms, _Handler(tags, self._emit))
            results = await sub.subscribe_data_change(list(nodes.values()))
            refused = [t for t, r in zip(self.source.tags, results, strict=True) if isinstance(r, ua.StatusCode)]
            if refused:  # a node the server refuses is reported bad, and its neighbours go on
                log.warning("opcua %s: server refused %s", self.source.name, ", ".join(t.name for t in refused))
                now = int(time.time() * 1000)
                self._emit(Reading.at([t.name for t in refused], now, [None] * len(refused), Quality.BAD))
            await asyncio.Event().wait()  # data arrives through the handler until cancelled
        period = self.source.sampling_ms / 1000
        while True:
            stop_if_cancelled()
            began = time.perf_counter()
            self._emit(Reading.of(await self.read_once(client, nodes)))
            self.stats.last_poll_s = time.perf_counter() - began
            await asyncio.sleep(max(0.0, period - self.stats.last_poll_s))

    async def read_once(self, client: Client, nodes: dict[str, Node]) -> list[Point]:
        try:
            values = await client.read_attributes(list(nodes.values()))
        except (OSError, TimeoutError, UaError) as exc:
            raise SourceError(f"opcua {self.source.name}: read failed: {exc}") from exc
        return [point_of(tag, data) for tag, data in zip(self.source.tags, values, strict=True)]


async def _quietly_disconnect(client: Client) -> None:
    """Close a session that may already be dead; its errors say nothing new."""
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except (OSError, TimeoutError, UaError) as exc:
        log.debug("opcua disconnect: %s", exc)
