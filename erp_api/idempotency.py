"""Idempotency-Key on every POST: one transaction for the effect and its recorded response.

The key row is inserted *first*, inside the command's transaction. A concurrent request
with the same key waits on that row's unique index until the first commits, then finds
it and replays the recorded response; if the first rolls back, the key is free again and
the second runs. So a success is recorded exactly once with its effect, and a failure
leaves nothing behind: retrying a refused request under the same key runs it again.
Keys are scoped to the caller (user or API key), so two callers never collide, and are
kept for ``KEEP_DAYS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import psycopg
from fastapi import Request, Response
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel

from erp_api.db import Conn, transaction
from erp_api.errors import IdempotencyConflictError
from erp_api.responses import JSON, Reply
from erp_api.security import Principal

__all__ = ["KEEP_DAYS", "REPLAY_HEADER", "fingerprint", "purge_forever", "run_command"]

log = logging.getLogger(__name__)

REPLAY_HEADER: Final = "Idempotent-Replayed"
KEEP_DAYS: Final = 7  # a retry within a week replays; after that the key may be reused


def fingerprint(request: Request, body: BaseModel | None) -> bytes:
    """What makes two requests "the same": method, path, query and the parsed body."""
    digest = hashlib.sha256(f"{request.method} {request.url.path}?{request.url.query}\n".encode())
    if body is not None:
        digest.update(body.model_dump_json().encode())
    return digest.digest()


async def run_command(
    conn: Conn,
    who: Principal,
    key: str | None,
    request: Request,
    body: BaseModel | None,
    *,
    command: Callable[[], Awaitable[Reply]],
) -> Response:
    """Run ``command`` in one transaction, honouring ``Idempotency-Key`` when given."""
    async with transaction(conn):
        if key is not None:
            replay = await _claim(conn, who.name, key, fingerprint(request, body))
            if replay is not None:
                return replay
        result = await command()
        if key is not None:
            await conn.execute(
                "UPDATE erp.idempotency_key SET status = %s, body = %s, headers = %s WHERE principal = %s AND key = %s",
                (result.status, result.body, json.dumps(result.headers), who.name, key),
            )
    return result.response()


async def _claim(conn: Conn, principal: str, key: str, request_hash: bytes) -> Response | None:
    cur = await conn.execute(
        "INSERT INTO erp.idempotency_key (principal, key, request_hash) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        (principal, key, request_hash),
    )
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute(
        "SELECT request_hash, status, body, headers FROM erp.idempotency_key WHERE principal = %s AND key = %s",
        (principal, key),
    )
    row = await cur.fetchone()
    assert row is not None  # the conflicting row is committed: we waited for it
    if bytes(row[0]) != request_hash:
        raise IdempotencyConflictError.on_field(
            "header.Idempotency-Key", "already used for a different request; use a new key for a new request"
        )
    headers = {**row[3], REPLAY_HEADER: "true"}
    return Response(content=bytes(row[2]), status_code=row[1], headers=headers, media_type=JSON)


async def purge_forever(pool: AsyncConnectionPool[Any], *, keep_days: int = KEEP_DAYS, every_s: float = 3600) -> None:
    """Delete recorded responses older than ``keep_days``, once at start and then every ``every_s``.
    Several API processes may all run this: the DELETE is idempotent."""
    while True:
        try:
            async with pool.connection(timeout=10) as conn:
                cur = await conn.execute(
                    "DELETE FROM erp.idempotency_key WHERE created_at < now() - make_interval(days => %s)", (keep_days,)
                )
                if cur.rowcount:
                    log.info("purged %d idempotency records older than %d days", cur.rowcount, keep_days)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("idempotency purge failed (will retry): %s", exc)
        await asyncio.sleep(every_s)
