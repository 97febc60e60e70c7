"""``factory provision nats``'s files, run: three real nats-server processes started with
them, a device over MQTT 3.1.1 with its own credentials, ingest with its service account."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psycopg

from factory.mqtt import MqttError, connect, parse_mqtt_url
from factory.nats import parse_nats_url
from factory.wire import Point, TelemetryBatch, decode_ack, encode_batch
from ingest import IngestConfig, IngestService
from provisioning.devices import register_device
from provisioning.nats import NatsNode, parse_node, provision_nats, render_nats_conf, service_user
from tests.helpers import count_rows, eventually
from tests.nats_cluster import NatsCluster


def test_node_config_lists_the_other_nodes_as_routes() -> None:
    nodes = [parse_node(f"n{i}@10.0.0.{i}", Path("/var/lib/nats")) for i in range(3)]
    text = render_nats_conf(nodes[0], nodes)
    assert 'server_name: "n0"' in text
    assert '"nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222"' in text
    assert '10.0.0.0:6222"]' not in text  # not itself
    assert 'listen: "10.0.0.0:1883"' in text  # MQTT
    assert parse_node("a@h:1:2:3", Path("/x")) == NatsNode("a", "h", 1, 2, 3, store_dir=Path("/x"))


def test_the_event_services_get_their_stream_and_nothing_of_the_devices() -> None:
    erp, analytics, alerts = (service_user(name, "hash") for name in ("erp-relay", "analytics", "alerts"))
    for publisher in (erp, analytics):
        assert "factory.v1.events.>" in publisher.publish
        assert "$JS.API.STREAM.CREATE.FACTORY_EVENTS" in publisher.publish
        assert not any("CONSUMER" in s or "FACTORY_DEVICES" in s for s in publisher.publish)
        assert publisher.subscribe[-1] == "_INBOX.>"
    assert "factory.v1.*.*.cmd" in erp.publish  # its setpoints
    assert "factory.v1.*.*.cmd" not in analytics.publish
    # the bridge: its own consumer of the events' stream; no event, no device subject
    assert not any(s.startswith("factory.") for s in alerts.publish)
    assert "$JS.API.CONSUMER.MSG.NEXT.FACTORY_EVENTS.alerts" in alerts.publish
    assert all("FACTORY_EVENTS" in s for s in alerts.publish)
    assert not any(s.endswith((".*", ".*.>")) for s in alerts.publish)  # no other consumer
    assert alerts.subscribe == ("_INBOX.>",)


async def test_provisioned_cluster_enforces_device_permissions(
    tmp_path: Path, database_url: str, db: psycopg.AsyncConnection[tuple[object, ...]], site: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        device_password = await register_device(conn, site, "pi-1")
        await register_device(conn, site, "pi-2")
        cluster = NatsCluster(tmp_path, 3)
        files, secrets, missing = await provision_nats(conn, tmp_path / "conf", cluster.nodes)
        await conn.commit()
    assert missing == 0
    assert files.users is not None
    assert (files.users.stat().st_mode & 0o777) == 0o600
    assert ".pi-1.telemetry" in files.users.read_text()
    assert 'user: "alerts"' in files.users.read_text()
    cluster.files = files  # the provisioned configs, users included
    ingest_password = secrets["ingest"].read_text().strip()
    cluster.start()
    try:
        nats = parse_nats_url(cluster.nats_url(credentials=f"ingest:{ingest_password}@"))
        service = IngestService(IngestConfig(database_url=database_url, mqtt=parse_mqtt_url("mqtt://127.0.0.1"),
                                             nats=nats, client_id="ingest-1", batch_ms=50, upkeep=None))  # fmt: skip
        worker = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.subscribed.wait(), 30)
            device = parse_mqtt_url(cluster.mqtt_url(0)).with_credentials(f"{site}.pi-1", device_password)
            now = int(time.time() * 1000)
            own = encode_batch(TelemetryBatch(seq=1, points=(Point("a.b", now, 1.0),)))
            confirmed: list[int] = []
            async with connect(device, f"{site}-pi-1") as client:
                await client.subscribe(f"factory/v1/{site}/pi-1/ack", qos=1)
                await client.publish(f"factory/v1/{site}/pi-1/telemetry", own, qos=1, timeout_s=10)

                async def listen() -> None:
                    async for message in client.messages:
                        confirmed.extend(decode_ack(bytes(message.payload)))  # type: ignore[arg-type]

                listener = asyncio.create_task(listen())
                try:
                    await eventually(lambda: confirmed == [1], 30, "the device's batch confirmed on its ack topic")
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, MqttError):
                        await listener
            # Another device's topic: refused by the server (the connection is closed, nothing stored).
            with contextlib.suppress(MqttError):
                async with connect(device, f"{site}-pi-1") as client:
                    forged = encode_batch(TelemetryBatch(seq=1, points=(Point("a.b", now + 1, 2.0),)))
                    await client.publish(f"factory/v1/{site}/pi-2/telemetry", forged, qos=1, timeout_s=5)
            # A wrong password is refused.
            wrong = parse_mqtt_url(cluster.mqtt_url(1)).with_credentials(f"{site}.pi-2", "not-its-password")
            refused = False
            try:
                async with connect(wrong, f"{site}-pi-2"):
                    pass
            except MqttError:
                refused = True
            assert refused
            await asyncio.sleep(1.0)
            assert await count_rows(db, site) == 1
            assert service.stats.per_device == {f"{site}/pi-1": 1}
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    finally:
        cluster.stop()
