"""What every tool shares: its dependencies, argument types, the result shape, the error boundary."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ParamSpec

import psycopg
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from mcp_server import plant
from mcp_server.auth import Caller
from mcp_server.config import McpConfig
from mcp_server.db import Conn, ReadOnlyDatabase
from mcp_server.errors import RequestError

__all__ = ["READ", "Deps", "Name", "Site", "guarded", "known_asset", "result", "time_range", "utc"]

log = logging.getLogger(__name__)
P = ParamSpec("P")
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Site = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


@dataclass(frozen=True, slots=True)
class Deps:
    """What the tools work with: the settings, the read-only database, the stdio session's caller."""

    config: McpConfig
    database: ReadOnlyDatabase
    stdio_caller: Caller | None

    @property
    def rows(self) -> Any:
        """The bounds of a tool's ``limit`` argument (``Annotated[int, deps.rows]``)."""
        most = self.config.limits.max_rows
        return Field(ge=1, le=most, description=f"rows, at most {most}")


def result(doc: BaseModel, summary: str) -> CallToolResult:
    """The typed document as structured content, and the short summary as text."""
    return CallToolResult(
        content=[TextContent(type="text", text=summary)], structured_content=doc.model_dump(mode="json")
    )


def guarded(fn: Callable[P, Awaitable[CallToolResult]]) -> Callable[P, Awaitable[CallToolResult]]:
    """The caller's mistakes and refusals become tool errors with their message."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
        try:
            return await fn(*args, **kwargs)
        except RequestError as exc:
            raise ToolError(str(exc)) from exc
        except psycopg.OperationalError as exc:
            log.warning("database unavailable: %s", exc)
            raise ToolError("the plant database is not available right now; try again shortly") from exc

    return call


def utc(at: datetime) -> datetime:
    """An instant in UTC; a time without zone is taken as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def time_range(now: datetime, since: datetime | None, until: datetime | None, default: timedelta,
               max_days: float) -> tuple[datetime, datetime]:  # fmt: skip
    """[since, until) with their defaults (until: now; since: ``default`` before until), at most ``max_days``."""
    end = utc(until) if until else now
    start = utc(since) if since else end - default
    if start >= end:
        raise RequestError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    if end - start > timedelta(days=max_days):
        raise RequestError(f"the range is {(end - start).total_seconds() / 86400:.1f} days; at most {max_days:g} days")
    return start, end


async def known_asset(conn: Conn, asset: str | None) -> None:
    if asset is not None and not await plant.known_asset(conn, asset):
        raise RequestError(f"unknown asset {asset!r}: see the resource factory://assets")
