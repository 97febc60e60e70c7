"""OPC UA source: data-change subscription or batched polling of one server, and writes.

asyncua's own supervisor (``auto_reconnect``) detects a dead server through its
keep-alive watchdog and recreates the subscription; we add the first connect with
backoff, and resolve browse paths on every connect: after asyncua reconnects, they are
resolved again, and if a path now leads to another node the session is rebuilt with the
new ones. A node with a bad status, or a path that leads nowhere, is published with
quality bad, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Final, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from edge_agent.config import OpcuaSource, OpcuaTag, ServerDeadband, TagCommon
from edge_agent.errors import SourceError, WriteRefusedError, stop_if_cancelled
from edge_agent.reading import HandOver, Reading
from edge_agent.stats import Probe, SourceStats
from factory.runtime import keep_running
from factory.wire import Point, Quality

__all__ = ["OpcuaReader", "explain", "make_client", "quality_of", "resolve", "to_value"]

log = logging.getLogger(__name__)
Emit = Callable[[Reading], None]  # a burst of notifications, handed on
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


_USER_REFUSED = frozenset({"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"})
_CERT_REFUSED = frozenset({
    "BadCertificateUntrusted", "BadCertificateInvalid", "BadSecurityChecksFailed", "BadCertificateUriInvalid",
    "BadCertificateUseNotAllowed", "BadCertificateTimeInvalid", "BadCertificateRevoked",
})  # fmt: skip


def explain(exc: BaseException) -> str:
    """What went wrong, in words a plant engineer can act on (the status name included)."""
    if isinstance(exc, UaStatusCodeError):
        name = ua.StatusCode(exc.code).name
        if name in _USER_REFUSED:
            return f"the server refused the user name or password ({name})"
        if name in _CERT_REFUSED:
            return f"the server does not trust the client certificate ({name}); add it to the server's trusted list"
        return f"{name}: {ua.StatusCode(exc.code).doc}"
    text = str(exc) or type(exc).__name__
    if "Server certificate mismatch" in text:
        return "the server's certificate is not the one in security.server_cert"
    if "No matching endpoints" in text:
        return f"the server offers no endpoint with this security policy and mode ({text})"
    return text


async def make_client(source: OpcuaSource, *, auto_reconnect: bool) -> Client:
    """An unconnected client with the source's credentials and security applied.

    The client's application URI is taken from its certificate (servers check that they
    match). Without ``server_cert`` the server's certificate comes from its endpoint list.
    """
    client = Client(source.endpoint, timeout=source.timeout_ms / 1000, auto_reconnect=auto_reconnect)
    client.session_timeout = SESSION_TIMEOUT_MS
    if source.username:
        client.set_user(source.username)
    if source.password_file:
        client.set_password(source.password_file.read_text(encoding="utf-8").strip())
    security = source.security
    if security is not None and security.policy != "None":
        assert security.cert is not None  # checked by the config model, with key
        assert security.key is not None
        certificate = await uacrypto.load_certificate(security.cert)
        uris = _uris_of(certificate)
        if uris:
            client.application_uri = uris[0]
        await client.set_security(
            getattr(security_policies, f"SecurityPolicy{security.policy}"), str(security.cert), str(security.key),
            server_certificate=str(security.server_cert) if security.server_cert else None,
            mode=getattr(ua.MessageSecurityMode, security.mode),
        )  # fmt: skip
    return client


def _uris_of(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


_HIERARCHICAL = ua.NodeId.from_string(f"i={ObjectIds.HierarchicalReferences}")
_ROOT = ua.NodeId.from_string(f"i={ObjectIds.RootFolder}")
_FORWARD = False  # IsInverse of a path element: follow references from parent to child


def _relative_path(path: list[str]) -> ua.RelativePath:
    """Forward hierarchical references (and their subtypes) by browse name, ``ns:Name`` each."""
    elements = []
    for part in path:
        index, _, name = part.partition(":")
        element = ua.RelativePathElement(ReferenceTypeId=_HIERARCHICAL, TargetName=ua.QualifiedName(name, int(index)))
        element.IsInverse = cast("ua.Boolean", _FORWARD)  # asyncua types the flag as its own Boolean class
        elements.append(element)
    return ua.RelativePath(Elements=elements)


async def resolve(client: Client, tags: list[OpcuaTag]) -> tuple[dict[str, Node], dict[str, str]]:
    """The node of every tag (by NodeId, or by browse path from the root folder, 100 paths
    per request), and the reason for each tag that has none."""
    nodes = {t.name: client.get_node(t.node) for t in tags if t.node is not None}
    failed: dict[str, str] = {}
    by_path = [t for t in tags if t.browse_path is not None]
    for start in range(0, len(by_path), 100):
        chunk = by_path[start : start + 100]
        paths = []
        for tag in chunk:
            assert tag.browse_path is not None
            paths.append(ua.BrowsePath(StartingNode=_ROOT, RelativePath=_relative_path(tag.browse_path)))
        try:
            results = await client.uaclient.translate_browsepaths_to_nodeids(paths)
        except (OSError, TimeoutError, UaError) as exc:
            raise SourceError(f"cannot resolve browse paths: {explain(exc)}") from exc
        for tag, result in zip(chunk, results, strict=True):
            if not result.StatusCode.is_good() or not result.Targets:
                failed[tag.name] = f"browse path {'/'.join(tag.browse_path or [])}: {result.StatusCode.name}"
                continue
            target = result.Targets[0].TargetId
            nodes[tag.name] = client.get_node(ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType))
    return nodes, failed


Monitoring = tuple[int, int, ServerDeadband | None]  # sampling interval (ms), queue size, server-side deadband


def _monitoring_groups(tags: list[OpcuaTag], default_ms: int) -> list[tuple[Monitoring, list[OpcuaTag]]]:
    """Tags that the server monitors alike, so that each group is one CreateMonitoredItems call."""
    groups: dict[Monitoring, list[OpcuaTag]] = {}
    for tag in tags:
        key = (default_ms if tag.sampling_ms is None else tag.sampling_ms, tag.queue_size, tag.server_deadband)
        groups.setdefault(key, []).append(tag)
    return list(groups.items())


def _filter(deadband: ServerDeadband | None) -> ua.DataChangeFilter | None:
    """Report on a change of status or value beyond the deadband (OPC UA Part 4, DataChangeFilter)."""
    if deadband is None:
        return None
    kind = ua.DeadbandType.Absolute if deadband.type == "absolute" else ua.DeadbandType.Percent
    trigger = ua.DataChangeTrigger.StatusValue
    return ua.DataChangeFilter(Trigger=trigger, DeadbandType=kind, DeadbandValue=deadband.value)


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
    """Reads (and writes) the tags of one OPC UA source: an ``edge_agent.source.Source``.

    Subscription notifications cannot wait, so what arrives while the agent is behind is
    held here (up to ``HELD_POINTS``; past that the newest are dropped and counted) and
    handed over as soon as the agent takes it: one reading per burst of notifications.
    """

    HELD_POINTS: Final = 50_000

    def __init__(self, source: OpcuaSource) -> None:
        self.source = source
        self.stats = SourceStats()
        self._session: tuple[Client, dict[str, Node]] | None = None  # while connected
        self._served = False  # the last connection got as far as serving
        self._held: list[Reading] = []
        self._held_points = 0
        self._arrived = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._session is not None

    def _emit(self, reading: Reading) -> None:
        self.stats.polls += 1
        if self._held_points >= self.HELD_POINTS:
            self.stats.dropped += len(reading)
            log.error("opcua %s: the agent is behind; %d points dropped", self.source.name, len(reading))
            return
        self._held.append(reading)
        self._held_points += len(reading)
        self._arrived.set()

    async def _pass_on(self, hand_over: HandOver) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            held, self._held, self._held_points = self._held, [], 0
            await hand_over(held)

    async def _lost(self, exc: Exception) -> None:
        """asyncua noticed a dead connection; its supervisor reconnects and resubscribes."""
        self.stats.reconnects += 1
        log.warning("opcua %s: connection lost (%s); reconnecting", self.source.name, exc)

    async def run(self, hand_over: HandOver) -> None:
        """Connect, then serve data until cancelled; reconnect with capped jittered backoff."""
        connection = keep_running(self._connection, retry_on=(SourceError, OSError, TimeoutError, UaError),
                                  what=f"opcua {self.source.name}", logger=log, healthy=lambda: self._served,
                                  on_error=self._count)  # fmt: skip
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pass_on(hand_over), name=f"opcua:{self.source.name}:hand-over")
            group.create_task(connection, name=f"opcua:{self.source.name}")

    async def probe(self) -> Probe:
        try:
            client = await make_client(self.source, auto_reconnect=False)
            await asyncio.wait_for(client.connect(), self.source.timeout_ms / 1000 + 1)
        except (OSError, TimeoutError, UaError, ValueError) as exc:  # ValueError: unreadable certificate
            return Probe(failed=f"cannot connect to {self.source.endpoint}: {explain(exc)}")
        try:
            nodes, failed = await resolve(client, self.source.tags)
            points = await self.read_once(client, nodes)
        finally:
            await client.disconnect()
        rows: list[tuple[str, object, Quality]] = [(p.tag, p.value, p.quality) for p in points]
        return Probe(rows + [(name, None, Quality.BAD) for name in failed], failed)

    async def _connection(self) -> None:
        self._served = False
        try:
            client = await make_client(self.source, auto_reconnect=True)
            client.connection_lost_callback = self._lost
            await asyncio.wait_for(client.connect(), self.source.timeout_ms / 1000 + 1)
        except (OSError, TimeoutError, UaError, ValueError) as exc:  # ValueError: unreadable certificate
            raise SourceError(f"cannot connect to {self.source.endpoint}: {explain(exc)}") from exc
        self.stats.last_error = ""
        self._served = True
        try:
            await self._serve(client)
        finally:
            self._session = None
            await _quietly_disconnect(client)

    def _count(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc) if isinstance(exc, SourceError) else f"reconnecting: {explain(exc)}"

    async def _serve(self, client: Client) -> None:
        nodes, failed = await resolve(client, self.source.tags)
        self._report_bad(failed)
        self._session = (client, nodes)
        tags = [t for t in self.source.tags if t.name in nodes]
        work = self._subscribe(client, nodes, tags) if self.source.mode == "subscribe" else self._poll(client, nodes)
        if any(t.browse_path is not None for t in self.source.tags):
            await _first_to_end(work, self._watch_paths(client, nodes, failed))
        else:
            await work

    async def _subscribe(self, client: Client, nodes: dict[str, Node], tags: list[OpcuaTag]) -> None:
        if tags:
            by_id = {nodes[t.name].nodeid.to_string(): t for t in tags}
            sub = await client.create_subscription(self.source.sampling_ms, _Handler(by_id, self._emit))
            refused: dict[str, str] = {}
            for (sampling_ms, queue_size, deadband), group in _monitoring_groups(tags, self.source.sampling_ms):
                # asyncua's public helpers take either a filter or a sampling interval, not both:
                # its one method that takes everything is the one they call.
                results = await sub._subscribe(  # noqa: SLF001
                    [nodes[t.name] for t in group], mfilter=_filter(deadband), queuesize=queue_size,
                    sampling_interval=ua.Double(sampling_ms),
                )  # fmt: skip
                refused |= {t.name: str(r) for t, r in zip(group, results, strict=True) if isinstance(r, ua.StatusCode)}
            self._report_bad(refused)  # a node the server refuses is reported bad, and its neighbours go on
        await asyncio.Event().wait()  # data arrives through the handler until cancelled

    async def _poll(self, client: Client, nodes: dict[str, Node]) -> None:
        period = self.source.sampling_ms / 1000
        while True:
            stop_if_cancelled()
            began = time.perf_counter()
            self._emit(Reading.of(await self.read_once(client, nodes)))
            self.stats.last_poll_s = time.perf_counter() - began
            await asyncio.sleep(max(0.0, period - self.stats.last_poll_s))

    def _report_bad(self, reasons: dict[str, str]) -> None:
        if reasons:
            listed = "; ".join(f"{name} ({why})" for name, why in reasons.items())
            log.warning("opcua %s: no data for %s", self.source.name, listed)
            now = int(time.time() * 1000)
            self._emit(Reading.at(list(reasons), now, [None] * len(reasons), Quality.BAD))

    async def _watch_paths(self, client: Client, nodes: dict[str, Node], failed: dict[str, str]) -> None:
        """After each reconnect by asyncua, resolve the browse paths again; when one now leads
        elsewhere (the server was rebuilt), end the session so that it is set up anew."""
        was = ({n: node.nodeid for n, node in nodes.items()}, set(failed))
        async with client.subscribe_state() as states:
            while True:
                await states.wait_for_state(UaClientState.RECONNECTING)
                await states.wait_for_state(UaClientState.CONNECTED)
                fresh, fresh_failed = await resolve(client, self.source.tags)
                if ({n: node.nodeid for n, node in fresh.items()}, set(fresh_failed)) != was:
                    raise SourceError("browse paths lead to other nodes after the reconnect")

    async def read_once(self, client: Client, nodes: dict[str, Node]) -> list[Point]:
        tags = [t for t in self.source.tags if t.name in nodes]
        try:
            values = await client.read_attributes([nodes[t.name] for t in tags])
        except (OSError, TimeoutError, UaError) as exc:
            raise SourceError(f"opcua {self.source.name}: read failed: {explain(exc)}") from exc
        return [point_of(tag, data) for tag, data in zip(tags, values, strict=True)]

    async def write(self, tag: TagCommon, value: float | int | bool | str) -> None:
        """Write ``value`` in the node's own data type; raises ``WriteRefusedError``."""
        assert isinstance(tag, OpcuaTag)  # a source holds tags of its own kind
        if self._session is None or tag.name not in self._session[1]:
            raise WriteRefusedError("device_error", f"{tag.name}: not connected to {self.source.endpoint}")
        node = self._session[1][tag.name]
        try:
            variant = await node.read_data_type_as_variant_type()
            await node.write_value(ua.DataValue(ua.Variant(_as_variant(tag.name, value, variant), variant)))
        except (OSError, TimeoutError, UaError) as exc:
            raise WriteRefusedError("device_error", f"{tag.name}: {explain(exc)}") from exc


_INT_BITS = {
    ua.VariantType.SByte: (True, 8), ua.VariantType.Byte: (False, 8), ua.VariantType.Int16: (True, 16),
    ua.VariantType.UInt16: (False, 16), ua.VariantType.Int32: (True, 32), ua.VariantType.UInt32: (False, 32),
    ua.VariantType.Int64: (True, 64), ua.VariantType.UInt64: (False, 64),
}  # fmt: skip


def _as_variant(name: str, value: float | int | bool | str, variant: ua.VariantType) -> float | int | bool | str:
    """``value`` as the node's type wants it, or ``WriteRefusedError`` (wrong_type, out_of_range)."""
    if variant is ua.VariantType.Boolean:
        if isinstance(value, bool):
            return value
    elif variant is ua.VariantType.String:
        if isinstance(value, str):
            return value
    elif isinstance(value, bool | str):
        pass
    elif variant in (ua.VariantType.Float, ua.VariantType.Double):
        return float(value)
    elif variant in _INT_BITS:
        if float(value).is_integer():
            signed, bits = _INT_BITS[variant]
            low, high = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
            if not low <= int(value) <= high:
                raise WriteRefusedError("out_of_range", f"{name}: {value} is outside {variant.name} ({low}..{high})")
            return int(value)
    else:
        raise WriteRefusedError("wrong_type", f"{name}: the node holds {variant.name}, which is not written here")
    given = f"{type(value).__name__} {value!r}"
    raise WriteRefusedError("wrong_type", f"{name}: the node holds {variant.name}, not {given}")


async def _first_to_end(*work: Coroutine[Any, Any, None]) -> None:
    """Run side by side until one ends; cancel the others; its error, if any, is raised."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _quietly_disconnect(client: Client) -> None:
    """Close a session that may already be dead; its errors say nothing new."""
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except (OSError, TimeoutError, UaError) as exc:
        log.debug("opcua disconnect: %s", exc)
