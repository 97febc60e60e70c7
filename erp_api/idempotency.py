"""Idempotency-Key on every POST: one transaction for the effect and its recorded response.

Every command is one SQL function that claims the key *first* (``erp.claim_key``), inside
the statement that makes the change and records its reply. A concurrent request
with the same key waits on that row's unique index until the first commits, then finds
it and replays the recorded response; if the first rolls back, the key is free again and
the second runs. So a success is recorded exactly once with its effect, and a failure
leaves nothing behind: retrying a refused request under the same key runs it again.
Keys are scoped to the caller (user or API key), so two callers never collide, and are
kept for ``KEEP_DAYS``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

from erp_api.audit import Actor, acting
from erp_api.db import Conn, translated
from erp_api.responses import JSON

__all__ = ["KEEP_DAYS", "REPLAY_HEADER", "fingerprint", "run_function", "run_inside"]

log = logging.getLogger(__name__)

REPLAY_HEADER: Final = "Idempotent-Replayed"
KEEP_DAYS: Final = 7  # a retry within a week replays; after that the key may be reused

Model = TypeVar("Model", bound=BaseModel)


def fingerprint(request: Request, body: BaseModel | None) -> bytes:
    """What makes two requests "the same": method, path, query and the parsed body."""
    digest = hashlib.sha256(f"{request.method} {request.url.path}?{request.url.query}\n".encode())
    if body is not None:
        digest.update(body.model_dump_json().encode())
    return digest.digest()


def _replay(status: int, body: bytes | str, headers: dict[str, str]) -> Response:
    return Response(content=body, status_code=status, headers={**headers, REPLAY_HEADER: "true"}, media_type=JSON)


async def run_function(
    conn: Conn,
    actor: Actor,
    key: str | None,
    request: Request,
    body: BaseModel | None,
    *,
    call: str,
    args: Sequence[Any],
) -> Response:
    """Run a command that is one SQL function (``erp_api/sql/0008_commands.sql``): it claims
    the key, makes the change, writes the event and records its reply in one statement,
    which is its own transaction. ``call`` takes (principal, key, request hash, *args); the
    actor and request id are set for the audit trail (``erp_api.audit``)."""
    digest = fingerprint(request, body) if key is not None else None
    with translated():
        cur = await conn.execute(acting(call), (actor.name, actor.request_id, key, digest, *args))
        row = await cur.fetchone()
    assert row is not None
    status, content, headers, replayed = row
    if replayed:
        return _replay(status, content, headers)
    return Response(content=content, status_code=status, headers=headers, media_type=JSON)


async def run_inside(
    conn: Conn, call: str, args: Sequence[Any], model: type[Model], actor: Actor | None = None
) -> Model:
    """The same command function inside the caller's own transaction and without an
    Idempotency-Key, for in-process callers that set up data without the HTTP API; its
    reply parsed as ``model``."""
    with translated():
        who = (actor.name, actor.request_id) if actor is not None else (None, None)
        cur = await conn.execute(acting(call), (*who, None, None, *args))
        row = await cur.fetchone()
    assert row is not None
    return model.model_validate_json(row[1])
