"""Events through a real three-node NATS cluster: the ERP's outbox relay and analytics' event
relay publish into the FACTORY_EVENTS stream with their provisioned users, the alert bridge
reads it through its durable consumer and posts to a real Alertmanager; a node is killed
and the bridge restarted mid-stream. Device states come from what ingest stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import psycopg
import pytest
from alerting_support import alertmanager_running, process, provision, wait_for
from helpers import cancel, healthz
from nats.js import JetStreamContext
from psycopg.types.json import Jsonb

from alerting import DURABLE, BridgeConfig, BridgeStats, run_bridge
from analytics.events import EventRelay
from erp_api.outbox import OutboxRelay
from factory.bus import event_key
from factory.nats import EVENTS, JetStreamPublisher, NatsError, ensure_stream, parse_nats_url
from factory_servers import free_port
from provisioning.devices import bcrypt_hash
from provisioning.nats import ALERTS_DURABLE, NatsUser, service_user
from tests.nats_cluster import NatsCluster, nats_cluster

pytestmark = pytest.mark.integration

PASSWORD = "events-secret"
ROUNDS = 3
PER_ROUND = 10  # anomaly episodes and maintenance orders each, per round


def _users() -> list[NatsUser]:
    digest = bcrypt_hash(PASSWORD)
    # the platform's three event services as provisioned, and the test's own reader of the stream
    return [*(service_user(name, digest) for name in ("erp-relay", "analytics", "alerts")),
            NatsUser("inspector", digest, (">",), (">",))]  # fmt: skip


def _url(cluster: NatsCluster, user: str, *nodes: int) -> str:
    return cluster.nats_url(*nodes, credentials=f"{user}:{PASSWORD}@")


@contextlib.asynccontextmanager
async def _inspector(cluster: NatsCluster, *nodes: int) -> AsyncIterator[JetStreamContext]:
    """The test's own JetStream client, once the cluster has a metadata leader and the stream."""
    target = parse_nats_url(_url(cluster, "inspector", *nodes))
    async with await nats.connect(servers=target.server_urls, user=target.username, password=target.password,
                                  connect_timeout=5) as nc:  # fmt: skip
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                await ensure_stream(nc.jetstream(timeout=2), EVENTS, 3)  # as every URL here lists three nodes
                break
            except NatsError:  # no leader elected yet: the request went unanswered
                assert time.monotonic() < deadline, "the cluster elected no JetStream leader"
        yield js


@contextlib.asynccontextmanager
async def _bridge(database_url: str, bus_url: str, alertmanager_url: str, site: str) -> AsyncIterator[BridgeStats]:
    stats = BridgeStats()
    config = BridgeConfig(database_url=database_url, bus_url=bus_url, client_id=f"factory-alerts-{site}", site=site,
                          alertmanager_url=alertmanager_url, repost_s=1.0, http_port=0, status_poll_s=0.3)  # fmt: skip
    task = asyncio.create_task(run_bridge(config, stats=stats), name="bridge")
    try:
        deadline = time.monotonic() + 30
        while not (stats.connected and stats.posted_at):
            assert time.monotonic() < deadline, "the bridge did not connect and post"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        yield stats
    finally:
        await cancel(task)


@contextlib.asynccontextmanager
async def _running(*jobs: tuple[str, Callable[[], Awaitable[object]]]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(job(), name=name) for name, job in jobs]
    try:
        yield
    finally:
        await cancel(*tasks)


async def _relay_analytics(database_url: str, bus_url: str) -> None:
    """What analytics' scheduler does after each anomaly run: relay the outbox (here every 0.2 s)."""
    relay = EventRelay(bus_url)
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while True:
                with contextlib.suppress(NatsError):  # the next run sends what this one could not
                    await relay.relay(conn)
                await asyncio.sleep(0.2)
    finally:
        await relay.close()


async def _write_round(conn: psycopg.AsyncConnection[Any], site: str, first: int, *, anomalies: bool = True) -> None:
    """PER_ROUND anomaly episodes (analytics' outbox; unless not ``anomalies``) and maintenance
    orders (the ERP's)."""
    now = datetime.now(UTC)
    async with conn.transaction():
        for n in range(first, first + PER_ROUND):
            at = (now - timedelta(seconds=60 - n)).isoformat()
            await conn.execute(
                "INSERT INTO analytics.outbox (kind, payload) SELECT 'anomaly', %s WHERE %s",
                (Jsonb({"site": site, "asset": "mill1", "detector": "multivariate", "episode": n, "state": "start",
                        "at": at, "score": 7.5}), anomalies),
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO erp.outbox (aggregate_type, aggregate_id, kind, payload)"
                " VALUES ('work_order', %s, 'work_order.created', %s)",
                (n, Jsonb({"kind": "maintenance", "number": f"WO-{site}-{n}", "priority": "normal",
                           "asset": f"{site}-mill1", "reason": "bearing noise"})),
            )  # fmt: skip


async def _unpublished(conn: psycopg.AsyncConnection[Any], site: str) -> int:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM analytics.outbox WHERE published_at IS NULL AND payload->>'site' = %(s)s)"
        " + (SELECT count(*) FROM erp.outbox WHERE published_at IS NULL AND payload->>'asset' = %(s)s || '-mill1')",
        {"s": site},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _all_published(conn: psycopg.AsyncConnection[Any], site: str, log: Path) -> None:
    async def done() -> bool:
        return await _unpublished(conn, site) == 0

    await wait_for(done, "every event of the round published", log, timeout=90)


async def _active(api: httpx.AsyncClient, *matchers: str) -> list[dict[str, Any]]:
    reply = await api.get("/api/v2/alerts", params={"filter": list(matchers)})
    return [a for a in reply.json() if a["status"]["state"] == "active"]


async def _stream_events(js: JetStreamContext, site: str) -> list[tuple[str, str]]:
    """Every message of the stream about this test's site, as (Nats-Msg-Id, source:id of its body)."""
    info = await js.stream_info(EVENTS.name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(EVENTS.name, seq)
        body = json.loads(msg.data or b"{}")
        data = body.get("data") or {}
        if data.get("site") == site or data.get("asset") == f"{site}-mill1":
            found.append(((msg.headers or {}).get("Nats-Msg-Id", ""), event_key(body["source"], body["id"])))
    return found


async def test_events_through_the_cluster_become_alerts_once_with_a_node_lost_and_the_bridge_restarted(
    tmp_path: Path, database_url: str, site: str
) -> None:
    assert ALERTS_DURABLE == DURABLE  # the users file grants the consumer the bridge makes
    total = ROUNDS * PER_ROUND
    with nats_cluster(tmp_path, users=_users()) as cluster:
        async with _inspector(cluster):
            pass
        files = provision(tmp_path / "alerts")
        erp = OutboxRelay(database_url, _url(cluster, "erp-relay", 0, 1, 2), idle_s=0.2)
        analytics_url = _url(cluster, "analytics", 1, 0, 2)
        bridge_url = _url(cluster, "alerts", 2, 1, 0)  # the bridge starts on the node that will be lost
        async with (
            alertmanager_running(files["alertmanager"], tmp_path) as (api, am_url, log),
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
            _running(
                ("erp-relay", erp.run), ("analytics-relay", lambda: _relay_analytics(database_url, analytics_url))
            ),
        ):
            async with _bridge(database_url, bridge_url, am_url, site) as first:
                await _write_round(conn, site, 0)
                await _all_published(conn, site, log)
                await wait_for(lambda: _taken(first, 2 * PER_ROUND), "round 1 taken", log)
                await _write_round(conn, site, PER_ROUND)  # the relays poll every 0.2-0.25 s:
                cluster.kill(2)  # SIGKILL, as they publish round 2 and the bridge, connected to it, reads
                await _all_published(conn, site, log)
                await wait_for(lambda: _taken(first, 4 * PER_ROUND), "round 2 taken after the failover", log)
            # The bridge is down (a restart) while round 3 is published; then the relays send
            # round 3 again, as after a crash between the stream's acknowledgement and the stamp.
            await _write_round(conn, site, 2 * PER_ROUND)
            await _all_published(conn, site, log)
            await _forget_published(conn, site, since=2 * PER_ROUND)
            await _all_published(conn, site, log)
            async with _bridge(database_url, bridge_url, am_url, site) as second:
                anomalies = await wait_for(_count(api, total, 'alertname="AnomalyEpisode"', f'site="{site}"'),
                                           "every anomaly alert", log)  # fmt: skip
                orders = await wait_for(_count(api, total, 'alertname="MaintenanceWorkOrderOpen"',
                                               f'asset="{site}-mill1"'), "every work-order alert", log)  # fmt: skip
                await _device_goes_offline_and_back(conn, api, site, log)
                await asyncio.sleep(2)  # two re-posts: still exactly these
                assert len(await _active(api, 'alertname="AnomalyEpisode"', f'site="{site}"')) == total
                assert len(await _active(api, 'alertname="MaintenanceWorkOrderOpen"', f'asset="{site}-mill1"')) == total
                handled = first.messages + second.messages
            assert sorted(int(a["labels"]["episode"]) for a in anomalies) == list(range(total))
            assert sorted(a["labels"]["work_order"] for a in orders) == sorted(f"WO-{site}-{n}" for n in range(total))
            cur = await conn.execute(
                "SELECT count(*) FROM alerting.alert WHERE ends_at IS NULL AND (labels->>'site' = %s"
                " OR labels->>'asset' = %s)",
                (site, f"{site}-mill1"),
            )
            assert await cur.fetchone() == (2 * total,)
        async with _inspector(cluster, 0, 1) as js:
            events = await _stream_events(js, site)
            assert len(events) == 2 * total  # each event once in the stream, the resent round 3 too
            assert len({key for key, _ in events}) == 2 * total
            assert all(msg_id == key for msg_id, key in events)  # the message id is the event's identity
            consumer = await js.consumer_info(EVENTS.name, DURABLE)
            stream = await js.stream_info(EVENTS.name)
    assert consumer.num_pending == 0
    assert consumer.num_ack_pending == 0
    assert consumer.ack_floor.stream_seq == stream.state.last_seq  # every message acknowledged
    # Each message of the stream handled by one of the two bridges, once.
    assert handled == stream.state.messages, (handled, stream.state.messages)


async def _forget_published(conn: psycopg.AsyncConnection[Any], site: str, since: int) -> None:
    """Unstamp events from ``since`` on: the relays send them again."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE analytics.outbox SET published_at = NULL WHERE payload->>'site' = %s"
            " AND (payload->>'episode')::int >= %s",
            (site, since),
        )
        await conn.execute(
            "UPDATE erp.outbox SET published_at = NULL WHERE payload->>'asset' = %s AND aggregate_id >= %s",
            (f"{site}-mill1", since),
        )


async def _device_goes_offline_and_back(
    conn: psycopg.AsyncConnection[Any], api: httpx.AsyncClient, site: str, log: Path
) -> None:
    """As ingest records a device's status (telemetry.device, by the device's clock)."""
    offline_at = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO telemetry.device (site, name, status, status_at) VALUES (%s, 'pi1', 'offline', %s)",
        (site, offline_at),
    )
    matchers = ('alertname="DeviceOffline"', f'site="{site}"')
    (alert,) = await wait_for(lambda: _active(api, *matchers), "the device's alert", log)
    assert alert["labels"] == {"alertname": "DeviceOffline", "severity": "critical", "site": site, "device": "pi1"}
    assert abs(datetime.fromisoformat(alert["startsAt"]) - offline_at) < timedelta(milliseconds=1)  # its own time
    await conn.execute(
        "UPDATE telemetry.device SET status = 'online', status_at = %s WHERE site = %s AND name = 'pi1'",
        (offline_at + timedelta(seconds=1), site),
    )

    async def resolved() -> bool:
        return not await _active(api, *matchers)

    await wait_for(resolved, "the device's alert resolved", log)


async def test_a_resent_event_is_stored_once_and_readers_cannot_publish(tmp_path: Path) -> None:
    with nats_cluster(tmp_path, users=_users()) as cluster:
        async with _inspector(cluster):
            pass
        target = parse_nats_url(_url(cluster, "analytics", 0, 1, 2))
        async with JetStreamPublisher(target, "analytics-test") as publisher:
            topic = "factory/v1/events/anomaly"
            first = await publisher.publish(topic, b'{"id": 1}', msg_id="analytics/test:1")
            again = await publisher.publish(topic, b'{"id": 1}', msg_id="analytics/test:1")
            other = await publisher.publish(topic, b'{"id": 2}', msg_id="analytics/test:2")
        assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
        assert again.sequence == first.sequence
        assert other.sequence == first.sequence + 1
        # The bridge's user reads the stream and publishes nothing into it.
        bridge = parse_nats_url(_url(cluster, "alerts", 0, 1, 2))
        async with JetStreamPublisher(bridge, "alerts-test") as publisher:
            with pytest.raises(NatsError):
                await publisher.publish(topic, b'{"id": 3}', msg_id="alerts/test:3", timeout_s=2)
        async with _inspector(cluster, 0) as js:
            stream = await js.stream_info(EVENTS.name)
        assert stream.state.messages == 2


async def _taken(stats: BridgeStats, at_least: int) -> bool:
    return stats.messages >= at_least


def _count(api: httpx.AsyncClient, n: int, *matchers: str) -> Callable[[], Awaitable[list[dict[str, Any]] | None]]:
    async def check() -> list[dict[str, Any]] | None:
        found = await _active(api, *matchers)
        assert len(found) <= n, f"more alerts than events: {len(found)}"
        return found if len(found) == n else None

    return check


async def test_the_commands_read_and_publish_events_on_the_cluster_from_factory_events_url(
    tmp_path: Path, database_url: str, site: str
) -> None:
    """``factory erp serve`` and ``factory alerts bridge`` as processes: FACTORY_EVENTS_URL
    takes them to the cluster (FACTORY_MQTT_URL points nowhere)."""
    nowhere = f"mqtt://127.0.0.1:{free_port()}"
    with nats_cluster(tmp_path, users=_users()) as cluster:
        async with _inspector(cluster):
            pass
        files = provision(tmp_path / "alerts")
        base = {**os.environ, "FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": nowhere}
        bridge_port, erp_port = free_port(), free_port()
        bridge_log, erp_log = tmp_path / "bridge.log", tmp_path / "erp.log"
        async with (
            alertmanager_running(files["alertmanager"], tmp_path) as (api, am_url, _log),
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
            process(bridge_log, sys.executable, "-m", "factory_cli", "alerts", "bridge", "--alertmanager-url", am_url,
                    "--http", f"127.0.0.1:{bridge_port}", "--repost-s", "1",
                    env={**base, "FACTORY_EVENTS_URL": _url(cluster, "alerts", 0, 1, 2)}) as bridge,
            process(erp_log, sys.executable, "-m", "factory_cli", "erp", "serve", "--dev", "--port", str(erp_port),
                    env={**base, "FACTORY_EVENTS_URL": _url(cluster, "erp-relay", 1, 2, 0)}),
        ):  # fmt: skip

            async def healthy() -> dict[str, object] | None:
                state = await asyncio.to_thread(healthz, bridge_port)
                return state if state.get("status") == "ok" else None

            assert (await wait_for(healthy, "the bridge healthy", bridge_log))["broker"] == "connected"
            await _write_round(conn, site, 0, anomalies=False)  # the ERP's relay publishes its 10 orders
            orders = await wait_for(
                _count(api, PER_ROUND, 'alertname="MaintenanceWorkOrderOpen"', f'asset="{site}-mill1"'),
                "the orders' alerts", erp_log,
            )  # fmt: skip
            assert len(orders) == PER_ROUND
            bridge.terminate()
            assert await asyncio.wait_for(bridge.wait(), 20) == 0
        async with _inspector(cluster) as js:
            consumer = await js.consumer_info(EVENTS.name, DURABLE)
        assert consumer.num_ack_pending == 0
    assert f"alert bridge: consumer {DURABLE} at nats://" in bridge_log.read_text()
