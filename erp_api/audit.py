"""The audit trail (``erp.audit``, ``erp_api/sql/0017_audit.sql``): who changed what, when,
and in which request, one append-only row per change.

Commands record themselves: every event they write is also an audit row, with the actor
and request id that ``erp_api.idempotency`` sets for the command's transaction (``acting``).
Changes without an event (accounts, API keys, sign-in locks) call ``note`` inside their own
transaction. Every request gets a request id (``REQUEST_ID_HEADER``): the caller's or the
gateway's when it is well formed, else a new one; the answer carries it back.
"""

from __future__ import annotations

import functools
import getpass
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from psycopg.types.json import Jsonb

from erp_api.db import Conn
from erp_api.documents import Documents

__all__ = ["DOCS", "REQUEST_ID_HEADER", "Actor", "acting", "note", "request_id"]

REQUEST_ID_HEADER: Final = "X-Request-Id"
_REQUEST_ID: Final = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")

DOCS: Final = Documents(
    "audit record", "erp.audit a", "erp.audit_doc(a)", {"id": "a.id"},
    filters={"actor": "a.actor = %s", "action": "a.action = %s", "entity_type": "a.entity_type = %s",
             "entity_id": "a.entity_id = %s", "request_id": "a.request_id = %s", "since": "a.at >= %s",
             "until": "a.at < %s"},
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, and in answer to which request."""

    name: str
    request_id: str | None = None

    @classmethod
    def local(cls) -> Actor:
        """Someone at this machine, through the ``factory`` command."""
        return cls(f"local:{getpass.getuser()}")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's id: the caller's ``X-Request-Id`` when it is 1-128 characters of
    letters, digits and ``._:@/+=-``, else a new one."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex


@functools.cache  # a handful of call strings, one per command, on every write
def acting(call: str) -> str:
    """A command call (``SELECT * FROM erp.f(%s, ...)``, principal first) that first sets
    who is acting: its principal argument becomes ``erp.acting(principal, request id)``."""
    head, paren, rest = call.partition("(%s")
    if not paren:
        raise ValueError(f"not a command call with the principal first: {call!r}")
    return f"{head}(erp.acting(%s, %s){rest}"


async def note(conn: Conn, actor: Actor, action: str, entity: tuple[str, object], detail: dict[str, Any]) -> None:
    """Record a change that writes no event, in the caller's transaction."""
    await conn.execute(
        "SELECT erp.audit_note(%s, %s, %s, %s, %s, %s)",
        (actor.name, actor.request_id, action, entity[0], str(entity[1]), Jsonb(detail)),
    )
