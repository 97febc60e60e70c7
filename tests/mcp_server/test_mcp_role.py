"""The database role provisioning makes for the MCP server: it reads what the tools need and
nothing it should not (password hashes), and it cannot write, even outside a read-only transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from mcp_server.db import ReadOnlyDatabase

pytestmark = pytest.mark.integration


@pytest.fixture
def mcp_url(database_url: str) -> Iterator[str]:
    """A log-in user in role factory_mcp (made by the migrations), on this session's database."""
    user = f"mcp_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE USER {user} IN ROLE factory_mcp")
    params = psycopg.conninfo.conninfo_to_dict(database_url) | {"user": user}
    try:
        yield psycopg.conninfo.make_conninfo("", **params)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {user}")
            conn.execute(f"DROP USER {user}")


async def test_the_mcp_role_reads_but_never_writes(mcp_url: str) -> None:
    async with ReadOnlyDatabase(mcp_url, statement_timeout_ms=5000) as database:
        async with database.read() as conn:
            for table in ("telemetry.sample", "analytics.anomaly_episode", "maintenance.asset_health",
                          "erp.work_order", "erp.api_key", "erp.token_revocation", "analytics.oee"):  # fmt: skip
                await conn.execute(f"SELECT count(*) FROM {table}")
            await conn.execute("SELECT count(*) FROM erp.reorder_suggestions(NULL)")
        async with database.read() as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT password_hash FROM erp.app_user")
    async with await psycopg.AsyncConnection.connect(mcp_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("INSERT INTO analytics.outbox (kind, payload) VALUES ('x', '{}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("UPDATE erp.work_order SET priority = 'low'")
