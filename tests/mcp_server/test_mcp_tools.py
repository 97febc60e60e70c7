"""The MCP server's tools through the SDK's in-process client, against a database and an ERP
filled with real data: every figure checked against the same figure computed in SQL here."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from erp_support import Api, running, tokens
from mcp import Client
from mcp_support import PATTERN, Plant, fill, money, rows, work_orders_of
from pydantic import SecretStr

from erp_api.security import hash_api_key
from factory.db import connect
from mcp_server import McpConfig, build_server
from mcp_server.auth import ErpTokenVerifier
from mcp_server.db import ReadOnlyDatabase
from mcp_server.service import stdio_identity

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextlib.asynccontextmanager
async def session(database_url: str, api: Api, key: str, **limits: Any) -> AsyncIterator[Client]:
    """A stdio-like session acting with ``key``, over the SDK's in-process transport."""
    config = McpConfig(database_url=SecretStr(database_url), erp_url=api.base_url, api_key=SecretStr(key),
                       limits=limits or {})  # fmt: skip
    async with ReadOnlyDatabase(database_url, statement_timeout_ms=5000) as database:
        caller = await stdio_identity(config, database)
        async with Client(build_server(config, database, stdio_caller=caller)) as client:
            yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.content
    assert result.content[0].text
    doc: dict[str, Any] = result.structured_content
    assert datetime.fromisoformat(doc["as_of"]) <= datetime.now(UTC) + timedelta(seconds=5)
    return doc


async def error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text
    assert "Traceback" not in text
    return str(text)


@pytest.fixture
async def erp(database_url: str) -> AsyncIterator[Api]:
    async with running(database_url) as api:
        yield api


@pytest.fixture
async def plant(database_url: str, erp: Api) -> Plant:
    return await fill(database_url, erp)


async def test_read_tools_answer_what_sql_says(database_url: str, erp: Api, plant: Plant) -> None:
    async with session(database_url, erp, plant.keys["admin"]) as client:
        # plant status
        doc = await call(client, "plant_status", site=plant.site, tags=[plant.temp_tag])
        [site] = doc["sites"]
        [device] = site["devices"]
        [db_device] = await rows(
            database_url, "SELECT status, last_seen FROM telemetry.device WHERE site = %s", plant.site
        )
        assert (device["status"], datetime.fromisoformat(device["last_seen"])) == (
            db_device["status"],
            db_device["last_seen"],
        )
        assert site["online"] == 1
        [buffer] = await rows(
            database_url,
            """SELECT s.value FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id
            JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s AND t.name = 'agent.buffer_points'
            ORDER BY s.time DESC LIMIT 1""",
            plant.site,
        )
        assert device["buffer_points"] == buffer["value"] == 20.0
        [tag] = doc["tags"]
        [latest] = await rows(
            database_url,
            """SELECT s.value, s.quality, s.time FROM telemetry.sample s
            JOIN telemetry.tag t ON t.id = s.tag_id WHERE t.name = %s ORDER BY s.time DESC LIMIT 1""",
            plant.temp_tag,
        )
        assert (tag["value"], tag["quality"], datetime.fromisoformat(tag["time"])) == (
            latest["value"],
            "uncertain",
            latest["time"],
        )
        mine = [e for e in doc["open_episodes"] if e["asset"] == plant.asset]
        assert [e["id"] for e in mine] == [plant.open_episode]
        assert mine[0]["contributions"] == [{"tag": plant.temp_tag, "share": 3.0}]

        # anomalies
        doc = await call(client, "anomalies", asset=plant.asset)
        expected = await rows(
            database_url,
            """SELECT id, peak_score, ended_at FROM analytics.anomaly_episode
            WHERE asset = %s AND coalesce(ended_at, 'infinity') >= now() - interval '24 hours'
            ORDER BY started_at DESC""",
            plant.asset,
        )
        assert [(e["id"], e["peak_score"]) for e in doc["episodes"]] == [(r["id"], r["peak_score"]) for r in expected]
        assert {e["id"] for e in doc["episodes"]} == {plant.open_episode, plant.closed_episode}
        closed = next(e for e in doc["episodes"] if e["id"] == plant.closed_episode)
        assert closed["peak_score"] == 7.25
        assert closed["ended_at"] is not None
        assert [c["tag"] for c in closed["contributions"]] == [plant.temp_tag, f"{plant.asset}.speed"]

        # maintenance
        doc = await call(client, "maintenance", asset=plant.asset, trend_days=7)
        [health] = doc["assets"]
        [newest] = await rows(
            database_url,
            """SELECT rul, failure_prob, model_version FROM maintenance.asset_health
            WHERE asset = %s ORDER BY time DESC LIMIT 1""",
            plant.asset,
        )
        [oldest] = await rows(
            database_url,
            """SELECT rul, failure_prob FROM maintenance.asset_health
            WHERE asset = %s AND time >= now() - interval '7 days' ORDER BY time LIMIT 1""",
            plant.asset,
        )
        assert (health["rul"], health["failure_prob"], health["model_version"]) == (
            newest["rul"],
            newest["failure_prob"],
            newest["model_version"],
        )
        assert health["trend"]["rul_change"] == pytest.approx(newest["rul"] - oldest["rul"]) == -40.0
        assert health["trend"]["scores"] == 3
        [wo] = doc["open_work_orders"]
        parts = await rows(
            database_url,
            """SELECT p.sku, wp.quantity, wp.reserved FROM erp.work_order_part wp
            JOIN erp.product p ON p.id = wp.product_id WHERE wp.work_order_id = %s""",
            plant.maintenance_order,
        )
        assert wo["id"] == plant.maintenance_order
        assert (
            [(p["sku"], money(p["reserved"]), money(p["backordered"])) for p in wo["spare_parts"]]
            == [(p["sku"], p["reserved"], p["quantity"] - p["reserved"]) for p in parts]
            == [(plant.spare_sku, 2, 3)]
        )

        # production
        doc = await call(
            client, "production", line=plant.asset, since=(datetime.now(UTC) - timedelta(days=3)).isoformat()
        )
        shifts = await rows(
            database_url,
            """SELECT bucket, oee, availability FROM analytics.oee WHERE line = %s
            AND period = 'shift' AND bucket >= now() - interval '3 days' ORDER BY bucket DESC""",
            plant.asset,
        )
        assert [(datetime.fromisoformat(s["start"]), s["oee"], s["availability"]) for s in doc["shifts"]] == [
            (r["bucket"], r["oee"], r["availability"]) for r in shifts
        ]
        assert len(shifts) == 6
        [prod] = doc["orders"]
        assert (prod["id"], money(prod["produced"]), prod["progress"]) == (plant.production_order, 100, 0.25)

        # business
        doc = await call(client, "business_figures", limit=200)
        suggestions = await rows(
            database_url, "SELECT sku, quantity FROM erp.reorder_suggestions(NULL) ORDER BY product_id, warehouse_id"
        )
        assert [(r["sku"], money(r["suggested_quantity"])) for r in doc["below_reorder"]] == [
            (r["sku"], r["quantity"]) for r in suggestions
        ][:200]
        assert plant.spare_sku in {r["sku"] for r in doc["below_reorder"]}
        [owed] = await rows(
            database_url,
            """SELECT sum(i.gross - i.paid - i.credited) AS total FROM erp.invoice i
            JOIN erp.customer c ON c.id = i.customer_id WHERE c.name = %s AND i.kind = 'invoice'""",
            plant.customer,
        )
        [aging] = [r for r in doc["receivables"] if r["customer"] == plant.customer]
        assert money(aging["total"]) == owed["total"] == money("119.00")
        [revenue] = await rows(
            database_url,
            """SELECT sum(CASE WHEN kind = 'invoice' THEN net ELSE -net END) AS net
            FROM erp.invoice WHERE issue_date >= current_date - 365""",
        )
        assert sum(money(p["net"]) for p in doc["revenue"]) == revenue["net"]
        open_orders = await rows(
            database_url, "SELECT count(*) AS n FROM erp.sales_order WHERE status IN ('draft', 'confirmed', 'shipped')"
        )
        assert len(doc["open_orders"]) == min(open_orders[0]["n"], 200)

        # shift report
        doc = await call(client, "shift_report", site=plant.site)
        [last] = await rows(
            database_url,
            """SELECT bucket, oee FROM analytics.oee WHERE site = %s AND period = 'shift'
            ORDER BY bucket DESC LIMIT 1""",
            plant.site,
        )
        assert datetime.fromisoformat(doc["start"]) == last["bucket"]
        assert f"OEE {last['oee']:.0%}" in doc["text"]
        assert plant.asset in doc["text"]

        # resources and the prompt
        assets = await client.read_resource("factory://assets")
        listed = json.loads(assets.contents[0].text)
        assert datetime.fromisoformat(listed["as_of"]) <= datetime.now(UTC) + timedelta(seconds=5)
        [mine] = [a for a in listed["assets"] if a["asset"] == plant.asset]
        assert mine == {"asset": plant.asset, "sites": [plant.site], "devices": [plant.device], "tags": 1}
        boards = await client.read_resource("factory://dashboards")
        assert "/d/" in boards.contents[0].text
        prompt = await client.get_prompt("shift_handover", {"site": plant.site})
        assert plant.asset in prompt.messages[0].content.text


async def test_the_scheduler_picks_the_quietest_hours_and_opens_the_order_once(
    database_url: str, erp: Api, plant: Plant
) -> None:
    async with session(database_url, erp, plant.keys["planner"]) as client:
        doc = await call(client, "schedule_maintenance", asset=plant.asset, horizon_hours=24, duration_hours=2)
        assert doc["work_order"] is None
        # The same in SQL: the mean hourly output per hour of day, the cheapest two consecutive hours ahead.
        means = {
            r["h"]: r["mean"]
            for r in await rows(
                database_url,
                """SELECT extract(hour FROM bucket AT TIME ZONE 'UTC')::int AS h,
            avg(total_count) AS mean FROM analytics.oee WHERE line = %s AND period = 'hour'
            AND bucket >= date_trunc('hour', now()) + interval '1 hour' - interval '7 days' GROUP BY 1""",
                plant.asset,
            )
        }
        first = datetime.fromisoformat(doc["expected_by_hour"][0]["start"])
        starts = [first + timedelta(hours=i) for i in range(23)]
        best = min(starts, key=lambda s: (means[s.hour] + means[(s + timedelta(hours=1)).hour], s))
        assert datetime.fromisoformat(doc["window"]["start"]) == best
        assert doc["window"]["expected_output"] == pytest.approx(
            means[best.hour] + means[(best + timedelta(hours=1)).hour]
        )
        if first.hour != 3:  # the 24 h from `first` hold both quiet hours of PATTERN, 02:00 and 03:00
            assert best.hour == 2
            assert doc["window"]["expected_output"] == pytest.approx(PATTERN[2] + PATTERN[3])

        window_start = doc["window"]["start"]
        opened = [await call(client, "schedule_maintenance", asset=plant.asset, site=plant.site, open_work_order=True,
                             window_start=window_start, warehouse=plant.warehouse_code,
                             spare_parts=[{"sku": plant.spare_sku, "quantity": 1}]) for _ in range(2)]  # fmt: skip
    first_order, retried = (o["work_order"] for o in opened)
    assert first_order["id"] == retried["id"]
    assert not first_order["replayed"]
    assert retried["replayed"]
    orders = [o for o in await work_orders_of(erp, plant.asset) if o["reason"].startswith("planned-maintenance")]
    assert [(o["id"], o["site"]) for o in orders] == [(first_order["id"], plant.site)]
    [audit] = await rows(database_url, "SELECT created_by FROM erp.work_order WHERE id = %s", first_order["id"])
    assert audit["created_by"].startswith("key:mcp-planner-")  # the caller, not the server


async def test_bad_arguments_and_refusals_are_tool_errors(database_url: str, erp: Api, plant: Plant) -> None:
    async with session(database_url, erp, plant.keys["operator"], max_rows=100, max_range_days=7) as client:
        assert "unknown asset 'no-such-asset'" in await error(client, "anomalies", asset="no-such-asset")
        assert "at most 7 days" in await error(
            client, "anomalies", asset=plant.asset, since=(datetime.now(UTC) - timedelta(days=30)).isoformat()
        )
        assert "limit" in await error(client, "production", limit=101)
        assert "must be before" in await error(
            client,
            "anomalies",
            since=datetime.now(UTC).isoformat(),
            until=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        )
        assert "unknown tag" in await error(client, "plant_status", tags=["no.such.tag"])
        refused = await error(client, "schedule_maintenance", asset=plant.asset, open_work_order=True)
        assert "role 'operator' may not open maintenance work orders" in refused
        # Reading still works for the operator, and money figures stay hidden from that role.
        doc = await call(client, "business_figures")
        assert doc["receivables"] is None
        assert doc["revenue"] is None
    assert [o["id"] for o in await work_orders_of(erp, plant.asset)] == [plant.maintenance_order]


async def test_the_database_connection_cannot_write(database_url: str) -> None:
    async with ReadOnlyDatabase(database_url, statement_timeout_ms=5000) as database, database.read() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("CREATE TABLE analytics.mcp_must_not_exist (x int)")


async def test_ended_sessions_and_revoked_keys_are_refused(database_url: str, erp: Api, plant: Plant) -> None:
    async with ReadOnlyDatabase(database_url, statement_timeout_ms=5000) as database:
        verifier = ErpTokenVerifier(database, tokens())
        token = tokens().issue("mcp-revoked-user", "planner").access_token
        caller = await verifier.caller(token)
        assert caller is not None
        assert (caller.name, caller.role, caller.via) == ("mcp-revoked-user", "planner", "token")
        assert await verifier.caller(token[:-2] + "xx") is None  # a forged signature
        key = plant.keys["accountant"]
        assert (await verifier.caller(key)).role == "accountant"
        async with await connect(database_url, autocommit=True) as conn:
            await conn.execute("SELECT erp.end_sessions(%s)", ("mcp-revoked-user",))
            await conn.execute("UPDATE erp.api_key SET revoked_at = now() WHERE key_hash = %s", (hash_api_key(key),))
        assert await verifier.caller(token) is None
        assert await verifier.caller(key) is None
        assert await ErpTokenVerifier(database, None).caller(tokens().issue("x", "admin").access_token) is None


async def test_revenue_by_day_over_years_is_too_many_rows(database_url: str, erp: Api, plant: Plant) -> None:
    async with session(database_url, erp, plant.keys["accountant"]) as client:
        since = (datetime.now(UTC) - timedelta(days=700)).isoformat()
        assert "revenue periods; at most 200" in await error(client, "business_figures", revenue_by="day", since=since)
        doc = await call(client, "business_figures", revenue_by="month", since=since)
        assert doc["revenue"] is not None
