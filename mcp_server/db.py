"""The MCP server's only way into the database: pooled connections that cannot write.

Every connection starts with ``default_transaction_read_only`` and a statement timeout, and
every read runs in a transaction opened with ``SET TRANSACTION READ ONLY`` as well, so even a
role with write grants (the demo's) cannot change a row through this server. Deployments give
it a role with SELECT only (docs/mcp.md). Changes go through the ERP's HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from factory.db import redact
from factory.runtime import StartupError
from mcp_server.errors import RequestError

__all__ = ["Conn", "ReadOnlyDatabase"]

Conn = psycopg.AsyncConnection[dict[str, Any]]


class ReadOnlyDatabase:
    """A small pool of read-only connections; ``async with`` opens and closes it."""

    def __init__(self, url: str, *, statement_timeout_ms: int, max_size: int = 4) -> None:
        self._url = url
        options = f"-c default_transaction_read_only=on -c statement_timeout={statement_timeout_ms}"
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            connection_class=psycopg.AsyncConnection[dict[str, Any]],
            kwargs={"options": options, "application_name": "factory-mcp", "row_factory": dict_row,
                    "connect_timeout": 10},
            name="mcp-read",
        )  # fmt: skip

    async def __aenter__(self) -> ReadOnlyDatabase:
        try:
            await self._pool.open(wait=True, timeout=15)
        except PoolTimeout as exc:
            await self._pool.close()
            raise StartupError(f"database {redact(self._url)} is not reachable (or refuses this user)") from exc
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        """A connection inside one read-only transaction: every query in it sees one snapshot."""
        async with self._pool.connection(timeout=10) as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                yield conn
            except psycopg.errors.QueryCanceled as exc:
                raise RequestError("the query took too long; ask for a shorter range or fewer rows") from exc
