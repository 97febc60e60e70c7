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
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import psycopg
from fastapi import Request, Response
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel

from erp_api.db import Conn, transaction, translated
from erp_api.responses import JSON, Reply
from erp_api.security import Principal

__all__ = ["KEEP_DAYS", "REPLAY_HEADER", "fingerprint", "purge_forever", "run_command", "run_function"]

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
                "SELECT erp.record_reply(%s, %s, %s, %s, %s)",
                (who.name, key, result.status, result.body.decode(), Jsonb(result.headers)),
            )
    return result.response()


async def _claim(conn: Conn, principal: str, key: str, request_hash: bytes) -> Response | None:
    """None when the key is ours now; the recorded response when it was used for this request
    (``erp.claim_key`` refuses a different request under the same key)."""
    cur = await conn.execute(
        "SELECT status, body, headers FROM erp.claim_key(%s, %s, %s)", (principal, key, request_hash)
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    return _replay(row[0], bytes(row[1]), row[2])


def _replay(status: int, body: bytes | str, headers: dict[str, str]) -> Response:
    return Response(content=body, status_code=status, headers={**headers, REPLAY_HEADER: "true"}, media_type=JSON)


async def run_function(
    conn: Conn,
    who: Principal,
    key: str | None,
    request: Request,
    body: BaseModel | None,
    *,
    call: str,
    args: Sequence[Any],
) -> Response:
    """Run a command that is one SQL function (``erp_api/sql/0008_commands.sql``): it claims
    the key, makes the change, writes the event and records its reply in one statement,
    which is its own transaction. ``call`` takes (principal, key, request hash, *args)."""
    digest = fingerprint(request, body) if key is not None else None
    with translated():
        cur = await conn.execute(call, (who.name, key, digest, *args))
        row = await cur.fetchone()
    assert row is not None
    status, content, headers, replayed = row
    if replayed:
        return _replay(status, content, headers)
    return Response(content=content, status_code=status, headers=headers, media_type=JSON)


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
