"""``factory mcp serve --http`` as its own process, reached with the SDK's streamable HTTP client:
bearer tokens checked as the ERP checks them, roles as the ERP has them."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from erp_support import SECRET, Api, running, tokens
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_support import Plant, fill, rows, work_orders_of

from factory_servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextlib.contextmanager
def mcp_process(database_url: str, erp_url: str) -> Iterator[str]:
    port = free_port()
    env = os.environ | {"FACTORY_DATABASE_URL": database_url, "FACTORY_JWT_SECRET": SECRET, "FACTORY_ERP_URL": erp_url}
    env.pop("FACTORY_ERP_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "factory_cli", "mcp", "serve", "--http", "--port", str(port)],
                            env=env, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "factory mcp serve did not listen"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


@contextlib.asynccontextmanager
async def client(url: str, token: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as session:
        yield session


async def call(session: Client, tool: str, **arguments: Any) -> Any:
    return await session.call_tool(tool, arguments)


@pytest.fixture
async def erp(database_url: str) -> AsyncIterator[Api]:
    async with running(database_url) as api:
        yield api


async def test_tokens_and_roles_over_http(database_url: str, erp: Api) -> None:
    plant: Plant = await fill(database_url, erp)
    with mcp_process(database_url, erp.base_url) as url:
        async with httpx.AsyncClient(timeout=10) as raw:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            assert (await raw.post(url, json=body)).status_code == 401
            bad = await raw.post(url, json=body, headers={"Authorization": "Bearer fk_not-a-key"})
            assert bad.status_code == 401

        operator = tokens().issue("op-anna", "operator").access_token
        async with client(url, operator) as session:
            status = await call(session, "plant_status", site=plant.site, tags=[plant.temp_tag])
            assert not status.is_error, status.content
            [db_tag] = await rows(
                database_url,
                """SELECT s.value FROM telemetry.sample s JOIN telemetry.tag t
                ON t.id = s.tag_id WHERE t.name = %s ORDER BY s.time DESC LIMIT 1""",
                plant.temp_tag,
            )
            assert status.structured_content["tags"][0]["value"] == db_tag["value"]
            refused = await call(session, "schedule_maintenance", asset=plant.asset, open_work_order=True)
            assert refused.is_error
            assert "role 'operator' may not" in refused.content[0].text

        # An API key works as a bearer token too, with the key's role.
        async with client(url, plant.keys["accountant"]) as session:
            figures = await call(session, "business_figures")
            assert not figures.is_error
            assert figures.structured_content["receivables"] is not None

        planner = tokens().issue("planner-ben", "planner").access_token
        async with client(url, planner) as session:
            proposal = await call(session, "schedule_maintenance", asset=plant.asset)
            start = proposal.structured_content["window"]["start"]
            answers = [await call(session, "schedule_maintenance", asset=plant.asset, open_work_order=True,
                                  window_start=start) for _ in range(2)]  # fmt: skip
        assert [a.is_error for a in answers] == [False, False]
        ids = {a.structured_content["work_order"]["id"] for a in answers}
        assert len(ids) == 1
        planned = [o for o in await work_orders_of(erp, plant.asset) if o["reason"].startswith("planned-maintenance")]
        assert [o["id"] for o in planned] == list(ids)
        assert planned[0]["created_by"] == "planner-ben"  # the caller's token went to the ERP
