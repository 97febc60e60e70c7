"""Idempotency-Key on every POST: one transaction for the effect and its recorded response.

Every command is one SQL function that claims the key *first* (``erp.claim_key``), inside
the statement that makes the change and records its reply. A concurrent request
with the same key waits on that row's unique index until the first commits, then finds
it and replays the recorded response; if the first rolls back, the key is free again and
the second runs. So a success is recorded exactly once with its effect, and a failure
leaves nothing behind: retrying a refused request under the same key runs it again.
Keys are scoped to the caller (user or API key), so two callers never collide, and are
kept for ``KEEP_DAYS``.

A command that waits on something slower than the database (a setpoint waits seconds for a
device) cannot hold a transaction that long; it claims the key in a short transaction of its
own (``claim_outside``), then records its reply or releases the key (``keep``, ``release``),
each in the transaction that records its effect (``erp_api/sql/0025_setpoint_keys.sql``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from fastapi import Request, Response
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from erp_api.audit import Actor, acting
from erp_api.db import Conn, translated
from erp_api.errors import RequestInProgressError
from erp_api.responses import JSON

__all__ = [
    "KEEP_DAYS", "REPLAY_HEADER", "Claim", "claim_outside", "fingerprint", "keep", "release", "run_function",
    "run_inside",
]  # fmt: skip

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


@dataclass(frozen=True, slots=True)
class Claim:
    """A key held outside any transaction while its request runs; ``at`` names this claim
    (a retry that takes over a stale claim makes a new one)."""

    principal: str
    key: str
    at: datetime


async def claim_outside(
    conn: Conn, actor: Actor, key: str, request: Request, body: BaseModel, *, wait: timedelta,
    stale_after: timedelta,
) -> Claim | Response:  # fmt: skip
    """Claim ``key`` in a transaction of its own: the claim, or the replay of the reply
    recorded under it. 409 ``request-in-progress`` while another request holds it (claimed
    less than ``stale_after`` ago, no reply yet; ``Retry-After``: when its ``wait`` ends);
    409 ``idempotency-key-reused`` for a different request under it. A claim older than
    ``stale_after`` without a reply is taken over: the process that made it stopped."""
    with translated():
        cur = await conn.execute(
            "SELECT state, claimed_at, status, body, headers, extract(epoch FROM claimed_at + %s - now())::float8"
            " FROM erp.claim_key_outside(%s, %s, %s, %s)",
            (wait, actor.name, key, fingerprint(request, body), stale_after),
        )
        row = await cur.fetchone()
    assert row is not None
    state, claimed_at, status, content, headers, left_s = row
    if state == "replay":
        return _replay(status, content, headers)
    if state == "in_progress":
        after = max(1, math.ceil(left_s))
        raise RequestInProgressError(
            "a request with this Idempotency-Key is still waiting for its answer; retry with the same key"
            f" once it has one (in about {after}s)",
            headers={"Retry-After": str(after)},
        )
    return Claim(actor.name, key, claimed_at)


async def keep(conn: Conn, claim: Claim, answer: Response) -> bool:
    """Record the answer under the claim (status, body, headers but its length), in the
    caller's transaction; False when the claim was taken over meanwhile (nothing recorded)."""
    headers = {k: v for k, v in answer.headers.items() if k != "content-length"}
    cur = await conn.execute(
        "SELECT erp.record_key_outside(%s, %s, %s, %s, %s, %s)",
        (claim.principal, claim.key, claim.at, answer.status_code, bytes(answer.body).decode(), Jsonb(headers)),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def release(conn: Conn, claim: Claim) -> bool:
    """Free the key (nothing was done under it), in the caller's transaction; False when
    the claim was taken over meanwhile."""
    cur = await conn.execute("SELECT erp.release_key_outside(%s, %s, %s)", (claim.principal, claim.key, claim.at))
    row = await cur.fetchone()
    return bool(row and row[0])
