"""Shared pieces of the MCP server tests: a plant and an ERP filled with real data, through the
platform's own code paths where they exist. (No tests in this module.)

Telemetry goes in through ingest's ``TelemetryStore``, anomaly episodes through analytics'
store functions, the ERP's data through the running ERP's HTTP API. The OEE rows and asset
health scores are written as rows of their tables (what the OEE job and the scoring job write),
because computing them needs hours of counter data and a trained model."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
from erp_support import Api, customer, ok, order, product, receive, warehouse

from analytics import store as analytics_store
from erp_api import users
from erp_api.audit import Actor
from factory.db import connect
from factory.wire import Status, TagInfo
from ingest.store import Samples, TelemetryStore

# The line's output per hour of day (UTC): lowest at 02:00 and 03:00.
PATTERN = {h: 240.0 - (200.0 if h in (2, 3) else 0.0) - (20.0 if h in (4, 14) else 0.0) for h in range(24)}


@dataclass
class Plant:
    site: str
    device: str
    asset: str  # also the production line's name
    temp_tag: str
    open_episode: int
    closed_episode: int
    spare_sku: str
    warehouse_code: str
    maintenance_order: int
    production_order: int
    customer: str
    keys: dict[str, str]  # role -> ERP API key


async def _telemetry(conn: psycopg.AsyncConnection[Any], site: str, device: str, asset: str, now: datetime) -> str:
    store = TelemetryStore(conn)
    device_id = await store.device_id(site, device)
    temp = f"{asset}.bearing_temp"
    await store.register_tags(
        device_id,
        [
            TagInfo(temp, "modbus", "number", asset, "degC"),
            TagInfo("agent.buffer_points", "agent", "number", "agent", "points"),
            TagInfo("agent.buffer_oldest_s", "agent", "number", "agent", "s"),
        ],
    )
    ids = await store.tag_ids(device_id, [temp, "agent.buffer_points", "agent.buffer_oldest_s"])
    samples = Samples()
    for minutes, value in ((30, 61.0), (10, 63.5), (2, 64.25)):
        ms = int((now - timedelta(minutes=minutes)).timestamp() * 1000)
        samples.extend(
            [ids[temp], ids["agent.buffer_points"], ids["agent.buffer_oldest_s"]],
            [ms] * 3,
            [value, minutes * 10.0, minutes * 6.0],
            [0 if minutes != 2 else 1, 0, 0],
        )
    await store.write_samples(samples)
    await store.record_status(device_id, Status("online", int(now.timestamp() * 1000), "1.0"))
    await store.touch_devices({device_id: now - timedelta(minutes=2)})
    return temp


async def _analytics(
    conn: psycopg.AsyncConnection[Any], site: str, asset: str, temp_tag: str, now: datetime
) -> tuple[int, int]:
    t = now.timestamp()
    closed = await analytics_store.open_episode(
        conn, site, asset, None, "multivariate", t - 7200, 3.5, {"top": [[temp_tag, 2.1], [f"{asset}.speed", 0.9]]}
    )
    await analytics_store.close_episode(conn, closed, t - 6000, 7.25)
    opened = await analytics_store.open_episode(
        conn, site, asset, None, "multivariate", t - 600, 4.5, {"top": [[temp_tag, 3.0]]}
    )
    # The OEE job's rows: 8 days of hourly buckets in PATTERN, and one shift row per 8 hours.
    await conn.execute(
        """INSERT INTO analytics.oee (bucket, bucket_end, period, site, line, shift, shift_start, availability,
                                      performance, quality, oee, planned_s, run_s, total_count, good_count,
                                      ideal_rate, work_order_id)
           SELECT b, b + interval '1 hour', 'hour', %(site)s, %(line)s, 'any', b, 0.9, 0.8, 0.95, 0.684, 3600, 3240,
                  (%(pattern)s::float8[])[extract(hour FROM b AT TIME ZONE 'UTC')::int + 1],
                  (%(pattern)s::float8[])[extract(hour FROM b AT TIME ZONE 'UTC')::int + 1] * 0.95, 240, NULL
             FROM generate_series(date_trunc('hour', %(now)s::timestamptz) - interval '8 days',
                                  date_trunc('hour', %(now)s::timestamptz) - interval '1 hour', interval '1 hour') b""",
        {"site": site, "line": asset, "pattern": [PATTERN[h] for h in range(24)], "now": now},
    )
    await conn.execute(
        """INSERT INTO analytics.oee (bucket, bucket_end, period, site, line, shift, shift_start, availability,
                                      performance, quality, oee, planned_s, run_s, total_count, good_count,
                                      ideal_rate)
           SELECT b, b + interval '8 hours', 'shift', %(site)s, %(line)s,
                  CASE extract(hour FROM b AT TIME ZONE 'UTC')::int WHEN 6 THEN 'early' WHEN 14 THEN 'late'
                       ELSE 'night' END, b, 0.8 + n * 0.01, 0.9, 0.97, (0.8 + n * 0.01) * 0.9 * 0.97, 28800,
                  23040 + n * 288, 1500 + n, 1455 + n, 240
             FROM generate_series(1, 6) n,
                  LATERAL (SELECT date_trunc('day', %(now)s::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                  - interval '2 days' + (n - 1) * interval '8 hours' - interval '2 hours' AS b) x""",
        {"site": site, "line": asset, "now": now},
    )
    # The scoring job's rows, under a registered model version.
    artifact = uuid.uuid4().bytes
    cur = await conn.execute(
        """INSERT INTO maintenance.model (kind, training_data, config, artifact, artifact_sha256, code_version)
           VALUES ('mcp-test', '{}', '{}', %s, %s, 'test') RETURNING version""",
        (artifact, hashlib.sha256(artifact).hexdigest()),
    )
    row = await cur.fetchone()
    assert row is not None
    for days, rul, prob in ((10, 90.0, 0.05), (5, 60.0, 0.2), (2, 35.0, 0.45), (0.01, 20.0, 0.71)):
        await conn.execute(
            "INSERT INTO maintenance.asset_health (time, site, asset, model_version, rul, failure_prob)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (now - timedelta(days=days), site, asset, row[0], rul, prob),
        )
    return opened, closed


async def _erp(conn: psycopg.AsyncConnection[Any], api: Api, asset: str) -> dict[str, Any]:
    keys = {role: (await users.create_api_key(conn, f"mcp-{role}-{uuid.uuid4().hex[:8]}", role,
                                              by=Actor.local())).key
            for role in ("admin", "planner", "operator", "accountant")}  # fmt: skip
    async with api.client("admin") as erp:
        wh = await warehouse(erp)
        spare = await product(erp, reorder_point="10")
        await receive(erp, spare["id"], wh["id"], "2")
        part = await product(erp, cost="1.00")
        await receive(erp, part["id"], wh["id"], "1000")
        good = await product(erp, price="50.00", bom=[{"component_id": part["id"], "quantity": "1"}])
        body = {
            "kind": "maintenance",
            "asset": asset,
            "reason": "bearing: vibration rising",
            "priority": "high",
            "warehouse_id": wh["id"],
            "spare_parts": [{"product_id": spare["id"], "quantity": "5"}],
        }
        maint = await ok(await erp.post("/api/v1/work-orders", json=body), 201)
        body = {
            "kind": "production",
            "product_id": good["id"],
            "planned_quantity": "400",
            "warehouse_id": wh["id"],
            "asset": asset,
        }
        prod = await ok(await erp.post("/api/v1/work-orders", json=body), 201)
        await ok(await erp.post(f"/api/v1/work-orders/{prod['id']}/start"))
        await ok(await erp.post(f"/api/v1/work-orders/{prod['id']}/produce", json={"quantity": "100"}))
        buyer = await customer(erp, terms=0)
        finished = await product(erp, price="25.00")
        await receive(erp, finished["id"], wh["id"], "50")
        so = await order(erp, buyer["id"], wh["id"], [(finished["id"], "4")])
        await ok(await erp.post(f"/api/v1/orders/{so['id']}/confirm"))
        await ok(await erp.post("/api/v1/invoices", json={"order_id": so["id"]}), 201)
        await order(erp, buyer["id"], wh["id"], [(finished["id"], "1")])  # stays a draft: an open order
    return {
        "keys": keys,
        "warehouse": wh["code"],
        "spare": spare["sku"],
        "maintenance": maint["id"],
        "production": prod["id"],
        "customer": buyer["name"],
    }


async def fill(database_url: str, api: Api) -> Plant:
    site, asset = f"m{uuid.uuid4().hex[:10]}", f"mill{uuid.uuid4().hex[:8]}"
    async with await connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT now()")
        row = await cur.fetchone()
        assert row is not None
        now = row[0].astimezone(UTC)
        temp = await _telemetry(conn, site, "pi1", asset, now)
        opened, closed = await _analytics(conn, site, asset, temp, now)
        erp = await _erp(conn, api, asset)
    return Plant(
        site,
        "pi1",
        asset,
        temp,
        opened,
        closed,
        erp["spare"],
        erp["warehouse"],
        erp["maintenance"],
        erp["production"],
        erp["customer"],
        erp["keys"],
    )


async def rows(database_url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


def money(value: Any) -> Decimal:
    return Decimal(str(value))


async def work_orders_of(api: Api, asset: str) -> list[dict[str, Any]]:
    async with api.client("admin") as erp:
        body = await ok(await erp.get("/api/v1/work-orders", params={"kind": "maintenance", "asset": asset}))
    return list(body["items"])


__all__ = ["PATTERN", "Plant", "fill", "httpx", "money", "rows", "work_orders_of"]
