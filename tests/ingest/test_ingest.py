"""Ingest against the real broker and database: exact rows, duplicates, dead letters, status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
from helpers import publish, running_ingest, until

from alerting import LinkBase
from alerting import store as alerting_store
from alerting.rules import device_change
from factory.runtime import Listen
from factory_servers import free_port

pytestmark = pytest.mark.integration
NOW_MS = int(time.time() * 1000) // 1000 * 1000


def batch(seq: int, points: list[dict[str, object]]) -> bytes:
    return json.dumps({"v": 1, "seq": seq, "points": points}).encode()


async def samples(db: psycopg.AsyncConnection[tuple[object, ...]], site: str) -> list[tuple[object, ...]]:
    cur = await db.execute(
        """SELECT t.name, (extract(epoch FROM s.time) * 1000)::bigint, s.value, s.quality
           FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id
           JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s ORDER BY 1, 2""",
        (site,),
    )
    return await cur.fetchall()


async def test_batch_lands_with_exact_values(database_url: str, mqtt_url: str, site: str, db) -> None:
    points = [
        {"t": "boiler1.drum_pressure", "ts": NOW_MS, "v": 12.7, "q": 0},
        {"t": "boiler1.burner_on", "ts": NOW_MS, "v": True},
        {"t": "boiler1.drum_pressure", "ts": NOW_MS + 1000, "v": None, "q": 2},
    ]
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [(f"factory/v1/{site}/pi1/telemetry", batch(1, points))])
        await until(ingest, lambda: ingest.stats.points_received == 3)
    assert await samples(db, site) == [
        ("boiler1.burner_on", NOW_MS, 1.0, 0),
        ("boiler1.drum_pressure", NOW_MS, 12.7, 0),
        ("boiler1.drum_pressure", NOW_MS + 1000, None, 2),
    ]
    cur = await db.execute(
        "SELECT t.asset, d.last_seen IS NOT NULL FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id"
        " WHERE d.site = %s AND t.name = 'boiler1.drum_pressure'",
        (site,),
    )
    assert await cur.fetchone() == ("boiler1", True)


async def test_redelivered_and_overlapping_batches_create_no_duplicates(
    database_url: str, mqtt_url: str, site: str, db
) -> None:
    first = batch(1, [{"t": "mill1.speed", "ts": NOW_MS + i, "v": float(i)} for i in range(100)])
    overlap = batch(2, [{"t": "mill1.speed", "ts": NOW_MS + i, "v": float(i)} for i in range(50, 150)])
    topic = f"factory/v1/{site}/pi1/telemetry"
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [(topic, first), (topic, first), (topic, overlap)])
        await until(ingest, lambda: ingest.stats.points_received == 300)
        assert ingest.stats.points_inserted == 150
    rows = await samples(db, site)
    assert len(rows) == 150
    assert [r[2] for r in rows] == [float(i) for i in range(150)]


async def test_invalid_messages_are_dead_lettered_and_ingest_goes_on(
    database_url: str, mqtt_url: str, site: str, db
) -> None:
    far_future = NOW_MS + 10 * 24 * 3600 * 1000
    bad = [
        (f"factory/v1/{site}/pi1/telemetry", b"not json"),
        (f"factory/v1/{site}/pi1/telemetry", b'{"v":2,"seq":1,"points":[{"t":"a","ts":1,"v":1}]}'),
        (f"factory/v1/{site}/pi1/telemetry", batch(3, [{"t": "a", "ts": far_future, "v": 1}])),
        (f"factory/v1/{site}/Pi_1/telemetry", batch(4, [{"t": "a", "ts": NOW_MS, "v": 1}])),
        (f"factory/v1/{site}/pi1/status", b'{"state":"asleep"}'),
        # Valid JSON that PostgreSQL cannot store as text: it failed every flush again before.
        (f"factory/v1/{site}/pi1/status", b'{"state":"online","ts":%d,"agent":"a\\u0000b"}' % NOW_MS),
        (f"factory/v1/{site}/pi1/tags", b'{"v":1,"tags":[{"name":"a.b","unit":"\\u0000"}]}'),
        (f"factory/v1/{site}/pi1/status", b'{"state":"online","ts":%d,"agent":"\\ud800"}' % NOW_MS),
    ]
    good = (f"factory/v1/{site}/pi1/telemetry", batch(5, [{"t": "a.b", "ts": NOW_MS, "v": 1}]))
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [*bad, good])
        await until(ingest, lambda: ingest.stats.messages == len(bad) + 1)
        assert ingest.stats.dead_letters == len(bad)
        assert ingest.stats.reconnects == 0
    cur = await db.execute(
        "SELECT topic, payload, reason FROM telemetry.dead_letter WHERE topic LIKE %s ORDER BY id", (f"%{site}%",)
    )
    rows = await cur.fetchall()
    assert [(r[0], bytes(r[1])) for r in rows] == [(t, p) for t, p in bad]
    reasons = [str(r[2]) for r in rows]
    assert reasons[0].startswith("payload is not JSON")
    assert reasons[1].startswith("unsupported version v=2")
    assert "in the future" in reasons[2]
    assert "site and device must match" in reasons[3]
    assert "state" in reasons[4]
    assert reasons[5] == "status agent must not contain NUL characters"
    assert reasons[6] == "tags[0].unit must not contain NUL characters"
    assert reasons[7] == "status agent must be valid Unicode (it holds an unpaired surrogate)"
    assert await samples(db, site) == [("a.b", NOW_MS, 1.0, 0)]


async def test_a_cleared_status_retires_the_device(database_url: str, mqtt_url: str, site: str, db) -> None:
    """``factory provision revoke`` clears the retained status: the device is 'retired' in
    telemetry.device (where the alert bridge on a NATS cluster reads device states, and
    resolves its DeviceOffline), and an older last will arriving later does not undo it."""
    base = f"factory/v1/{site}/pi1"
    offline = json.dumps({"state": "offline", "ts": NOW_MS, "agent": "0.1.0"}).encode()
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [(f"{base}/status", offline)])
        await until(ingest, lambda: ingest.stats.messages == 1)
        await publish(mqtt_url, [(f"{base}/status", b"")], retain=True)
        await until(ingest, lambda: ingest.stats.messages == 2)
        await publish(mqtt_url, [(f"{base}/status", offline), (f"{base}/status", b"")])  # a late will, a repeat
        await until(ingest, lambda: ingest.stats.messages == 4)
        assert f"{site}/pi1" not in ingest.stats.device_states
    cur = await db.execute("SELECT status FROM telemetry.device WHERE site = %s", (site,))
    assert await cur.fetchall() == [("retired",)]
    cur = await db.execute(
        "SELECT e.kind FROM telemetry.event e JOIN telemetry.device d ON d.id = e.device_id"
        " WHERE d.site = %s ORDER BY e.time, e.kind",
        (site,),
    )
    assert [r[0] for r in await cur.fetchall()][:2] == ["device_offline", "device_retired"]
    (state,) = await alerting_store.device_states(db, site)
    change = device_change(state.site, state.device, state.state, state.at, LinkBase("https://grafana.test"))
    assert (change.action, change.labels["device"]) == ("resolve", "pi1")
    await publish(mqtt_url, [(f"{base}/status", b"")], retain=True)  # leave no retained message behind


async def test_status_and_catalog_register_the_device(database_url: str, mqtt_url: str, site: str, db) -> None:
    catalog = {"v": 1, "tags": [{"name": "c1.vibration", "source": "centrifugal1", "type": "number",
                                 "asset": "centrifugal-1", "unit": "mm/s"}]}  # fmt: skip
    base = f"factory/v1/{site}/pi1"
    async with running_ingest(database_url, mqtt_url, site) as ingest:
        await publish(mqtt_url, [
            (f"{base}/status", json.dumps({"state": "online", "ts": NOW_MS, "agent": "0.1.0"}).encode()),
            (f"{base}/tags", json.dumps(catalog).encode()),
            (f"{base}/status", json.dumps({"state": "offline", "ts": NOW_MS + 5000, "agent": "0.1.0"}).encode()),
            (f"{base}/status", json.dumps({"state": "online", "ts": NOW_MS + 1000, "agent": "0.1.0"}).encode()),
        ])  # fmt: skip
        await until(ingest, lambda: ingest.stats.messages == 4)
    cur = await db.execute("SELECT status, agent FROM telemetry.device WHERE site = %s", (site,))
    assert await cur.fetchone() == ("offline", "0.1.0")  # the late, older "online" does not win
    cur = await db.execute(
        "SELECT e.kind FROM telemetry.event e JOIN telemetry.device d ON d.id = e.device_id"
        " WHERE d.site = %s ORDER BY e.time",
        (site,),
    )
    assert [r[0] for r in await cur.fetchall()] == ["device_online", "device_online", "device_offline"]
    cur = await db.execute(
        "SELECT t.asset, t.unit, t.source FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id"
        " WHERE d.site = %s",
        (site,),
    )
    assert await cur.fetchone() == ("centrifugal-1", "mm/s", "centrifugal1")


async def test_health_and_metrics_over_http(database_url: str, mqtt_url: str, site: str) -> None:
    port = free_port()
    async with running_ingest(database_url, mqtt_url, site, http=Listen("127.0.0.1", port)) as ingest:
        await publish(mqtt_url, [(f"factory/v1/{site}/pi1/telemetry", batch(1, [{"t": "a.b", "ts": NOW_MS, "v": 1}])),
                                 (f"factory/v1/{site}/pi1/telemetry", b"junk")])  # fmt: skip
        await until(ingest, lambda: ingest.stats.messages == 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            before = time.time()
            health = await client.get("/healthz")
            text = (await client.get("/metrics")).text
            missing = await client.get("/nope")
    assert health.status_code == 200
    assert health.json()["subscribed"] is True
    assert "factory_ingest_points_received_total 1.0" in text
    assert "factory_ingest_dead_letters_total 1.0" in text
    assert f'factory_ingest_device_points_total{{device="{site}/pi1"}} 1.0' in text
    assert "# TYPE factory_ingest_lag_seconds gauge" in text
    # What the alerting rules read (docs/alerts.md): the queue against its limit, each device's last batch.
    assert "factory_ingest_queued_messages 0.0" in text
    assert "factory_ingest_queue_limit_messages 500.0" in text
    seen = re.search(rf'factory_ingest_device_last_message_timestamp_seconds{{site="{site}",device="pi1"}} (\S+)', text)
    assert seen is not None, text
    assert before - 30 < float(seen[1]) <= before
    assert missing.status_code == 404


async def test_dead_letters_replayed_after_a_fix(database_url: str, mqtt_url: str, site: str, db) -> None:  # type: ignore[no-untyped-def]
    """Two days old is refused by a 1-day window, stored by `ingest replay` with the default
    one (and removed from the dead letters); junk is refused again and stays; a payload kept
    cut short is left alone. A dry run changes nothing."""
    old = NOW_MS - 2 * 24 * 3600 * 1000
    messages = [
        (f"factory/v1/{site}/pi1/telemetry", batch(1, [{"t": "a.x", "ts": old, "v": 1.5}])),
        (f"factory/v1/{site}/pi1/telemetry", b"not json"),
    ]
    async with running_ingest(database_url, mqtt_url, site, retention_days=1) as ingest:
        await publish(mqtt_url, messages)
        await until(ingest, lambda: ingest.stats.dead_letters == 2)
    await db.execute(
        "INSERT INTO telemetry.dead_letter (topic, payload, reason) VALUES (%s, 'x', %s)",
        (f"factory/v1/{site}/pi2/telemetry", "payload is not UTF-8 (payload of 262,144 bytes, the first 1 kept)"),
    )
    env = {**os.environ, "FACTORY_DATABASE_URL": database_url}
    replay = [sys.executable, "-m", "factory_cli", "ingest", "replay", "--topic", f"factory/v1/{site}/%", "--json"]
    dry = subprocess.run([*replay, "--dry-run"], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(dry.stdout) | {"reasons": {}} == {"examined": 3, "stored": 1, "refused": 1, "cut": 1,
                                                        "reasons": {}, "dry_run": True}  # fmt: skip
    assert await _count(db, "SELECT count(*) FROM telemetry.dead_letter WHERE topic LIKE %s", site) == 3
    done = json.loads(subprocess.run(replay, env=env, capture_output=True, text=True, check=True, timeout=60).stdout)
    assert (done["stored"], done["refused"], done["cut"]) == (1, 1, 1)
    assert list(done["reasons"].values()) == [1], done  # the junk, for the reason it had before
    assert await _count(db, "SELECT count(*) FROM telemetry.dead_letter WHERE topic LIKE %s", site) == 2
    assert await _count(
        db, "SELECT count(*) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s", site, bare=True,
    ) == 1  # fmt: skip


async def _count(db, sql: str, site: str, *, bare: bool = False) -> int:  # type: ignore[no-untyped-def]
    cur = await db.execute(sql, (site if bare else f"factory/v1/{site}/%",))
    return int((await cur.fetchone())[0])


async def test_a_site_of_its_own_retention_accepts_and_refuses_by_it(
    database_url: str, mqtt_url: str, site: str, db: psycopg.AsyncConnection
) -> None:
    """Two days old: refused by the default 1-day window, stored for a site kept 5 days; ten
    days old is refused for that site too, naming its window."""
    day = 24 * 3600 * 1000
    messages = [
        (f"factory/v1/{site}/pi1/telemetry", batch(1, [{"t": "a.x", "ts": NOW_MS - 2 * day, "v": 1.5}])),
        (f"factory/v1/{site}/pi1/telemetry", batch(2, [{"t": "a.x", "ts": NOW_MS - 10 * day, "v": 2.5}])),
    ]
    async with running_ingest(database_url, mqtt_url, site, retention_days=1, site_retention_days={site: 5}) as ingest:
        await publish(mqtt_url, messages)
        await until(ingest, lambda: ingest.stats.messages == 2)
    assert await _count(
        db, "SELECT count(*) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
        " JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s", site, bare=True,
    ) == 1  # fmt: skip
    cur = await db.execute("SELECT reason FROM telemetry.dead_letter WHERE topic LIKE %s", (f"factory/v1/{site}/%",))
    (reason,) = [r[0] for r in await cur.fetchall()]
    assert "older than the 5-day retention" in reason
