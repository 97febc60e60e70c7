"""The production forecast through the MCP server (in-memory client, real database, real ERP):
the line's expected output with its interval and the running order's outlook are what
``analytics.forecast_db`` computes from the same rows; the scheduler plans by the forecast
when it can, and says so; a line without history is a clear tool error."""

from __future__ import annotations

import time
from typing import Any

import pytest
from erp_support import ok, product, receive, running, unique, warehouse
from mcp import Client
from pydantic import SecretStr

from analytics.forecast_db import forecast_line, order_outlooks
from analytics.forecast_job import ForecastJob
from analytics.oee import LineConfig, OeeConfig
from factory.db import connect
from ingest.store import Samples, TelemetryStore
from mcp_server import McpConfig, build_server
from mcp_server.db import ReadOnlyDatabase
from mcp_server.service import stdio_identity

pytestmark = [pytest.mark.integration, pytest.mark.slow]

H = 3600
DAYS = 16
LINE = LineConfig(name="mill7", state_tag="mill7.state", count_tag="mill7.cane", ideal_rate=240.0)


async def _history(database_url: str, site: str, now: float) -> None:
    """16 days of a counter sampled every 10 minutes up to now: 180 t/h by day, 120 by night."""
    end = int(now // 600) * 600
    samples, total = Samples(), 0.0
    async with await connect(database_url) as conn, conn.transaction():
        store = TelemetryStore(conn)
        ids = await store.tag_ids(await store.device_id(site, "pi1"), [LINE.count_tag, LINE.state_tag])
        for at in range(end - DAYS * 24 * H, end + 1, 600):
            total += (180 if 6 <= time.gmtime(at).tm_hour < 22 else 120) / 6
            samples.extend(
                [ids[LINE.count_tag], ids[LINE.state_tag]], [at * 1000] * 2, [float(int(total)), 1.0], [0, 0]
            )
        await store.write_samples(samples)


async def _stored_forecast_calls(client: Client, database_url: str, site: str) -> tuple[Any, Any]:
    """The tool's answers after the production-forecast job stored the line's forecast this
    hour (its expected output then overwritten with its lower bound), and once that is an hour old."""
    async with await connect(database_url, autocommit=True) as conn:
        summary = await ForecastJob(OeeConfig(lines=[LINE.model_copy(update={"site": site})])).run(conn)
        assert (summary.forecasts, summary.rows) == (1, 24)
        await conn.execute("UPDATE analytics.production_forecast SET expected = lower WHERE site = %s", (site,))
        failed, stored = await _call(client, "production_forecast", site=site, line=LINE.name, horizon_hours=24)
        assert not failed, stored
        await conn.execute("""UPDATE analytics.production_forecast SET made_at = made_at - interval '1 hour',
                                     hour = hour - interval '1 hour' WHERE site = %s""", (site,))  # fmt: skip
        failed, stale = await _call(client, "production_forecast", site=site, line=LINE.name, horizon_hours=24)
        assert not failed, stale
    return stored, stale


async def _call(client: Client, tool: str, **arguments: Any) -> tuple[bool, Any]:
    result = await client.call_tool(tool, arguments)
    return result.is_error, result.structured_content if not result.is_error else result.content[0].text


async def test_the_forecast_tool_and_the_scheduler_use_the_lines_forecast(database_url: str, site: str) -> None:
    now = time.time()
    await _history(database_url, site, now)
    async with running(database_url) as api, api.client("planner") as planner, api.client("admin") as admin:
        w = await warehouse(planner)
        cane = await product(planner)
        crush = await product(planner, bom=[{"component_id": cane["id"], "quantity": "1"}])
        await receive(planner, cane["id"], w["id"], "10000")
        order = await ok(await planner.post("/api/v1/work-orders", json={
            "kind": "production", "product_id": crush["id"], "planned_quantity": "3000", "warehouse_id": w["id"],
            "asset": LINE.name}), 201)  # fmt: skip
        await ok(await planner.post(f"/api/v1/work-orders/{order['id']}/start"))
        key = await ok(await admin.post("/api/v1/auth/api-keys", json={"name": unique("mcp"), "role": "planner"}),
                       201)  # fmt: skip
        config = McpConfig(database_url=SecretStr(database_url), erp_url=api.base_url, api_key=SecretStr(key["key"]),
                           lines=OeeConfig(lines=[LINE]))  # fmt: skip
        async with ReadOnlyDatabase(database_url, statement_timeout_ms=10_000) as database:
            caller = await stdio_identity(config, database)
            async with Client(build_server(config, database, stdio_caller=caller)) as client:
                failed, doc = await _call(client, "production_forecast", site=site, line=LINE.name, horizon_hours=12)
                assert not failed, doc
                failed, schedule = await _call(client, "schedule_maintenance", asset=LINE.name, line=LINE.name,
                                               site=site, horizon_hours=24, duration_hours=2)  # fmt: skip
                assert not failed, schedule
                failed, none = await _call(client, "production_forecast", site=site, line="mill1")
                failed_unknown, unknown = await _call(client, "production_forecast", site=site, line="mill0")
                stored, stale = await _stored_forecast_calls(client, database_url, site)
    async with await connect(database_url) as conn:
        expected = await forecast_line(conn, site, LINE, 12, now=time.time())
        outlooks = await order_outlooks(conn, site, LINE, now=time.time())
        day = await forecast_line(conn, site, LINE, 24, now=time.time())
    assert [h["expected"] for h in doc["hours"]] == pytest.approx(list(expected.expected))
    assert [h["lower"] for h in doc["hours"]] == pytest.approx(list(expected.lower))
    assert [h["upper"] for h in doc["hours"]] == pytest.approx(list(expected.upper))
    assert doc["level"] == 0.8
    [(order_id, outlook)] = outlooks
    [mine] = doc["orders"]
    assert (mine["work_order"], mine["verdict"]) == (order["number"], outlook.verdict)
    assert mine["on_time_probability"] == pytest.approx(outlook.on_time_probability)
    assert order_id == order["id"]
    assert schedule["window"]["basis"].startswith("production forecast")
    # The job's forecast of this hour is read as stored (here altered, to tell it from one made
    # on the spot); one stored in an earlier hour is not: the tool makes its own again.
    assert [h["expected"] for h in stored["hours"]] == pytest.approx(list(day.lower))
    assert [h["upper"] for h in stored["hours"]] == pytest.approx(list(day.upper))
    assert [h["expected"] for h in stale["hours"]] == pytest.approx(list(day.expected))
    assert failed  # mill1 is not among this server's lines
    assert "not a configured production line" in none
    assert failed_unknown
    assert "mill0" in unknown
