"""The desktop assistant's way in: the configuration ``factory demo`` prints starts
``factory mcp serve`` on stdio, which acts with the configured API key."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest
from erp_support import Api, running
from mcp import Client, StdioServerParameters
from mcp_support import fill, rows

from mcp_server.desktop import desktop_config_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def erp(database_url: str) -> AsyncIterator[Api]:
    async with running(database_url) as api:
        yield api


async def test_the_printed_configuration_starts_a_working_stdio_server(database_url: str, erp: Api) -> None:
    plant = await fill(database_url, erp)
    entry = json.loads(desktop_config_json(database_url, erp.base_url, plant.keys["operator"]))["mcpServers"]["factory"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")} | entry["env"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
    async with Client(params) as client:
        answer = await client.call_tool("maintenance", {"asset": plant.asset})
        assert not answer.is_error, answer.content
        [newest] = await rows(
            database_url,
            """SELECT failure_prob FROM maintenance.asset_health WHERE asset = %s
            ORDER BY time DESC LIMIT 1""",
            plant.asset,
        )
        assert answer.structured_content["assets"][0]["failure_prob"] == newest["failure_prob"]
        refused = await client.call_tool("schedule_maintenance", {"asset": plant.asset, "open_work_order": True})
        assert refused.is_error
        assert "role 'operator'" in refused.content[0].text
