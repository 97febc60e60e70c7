"""Dead letters run through ingest again, once a fix has made them valid (a retention window
widened, a device's clock corrected, a decoder that learnt a new form).

Each dead letter is replayed in a transaction of its own: if ingest now stores it, the row
leaves ``telemetry.dead_letter`` in that same transaction; if ingest refuses it again, the
transaction is rolled back and the row stays as it was (no second dead letter). A payload
kept cut short (only its head was stored) cannot be replayed and is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from factory.db import installed_flavor
from factory.mqtt import Message
from ingest.service import IngestService
from ingest.store import TelemetryStore

__all__ = ["ReplayResult", "replay_dead_letters"]

CUT_MARK = " kept)"  # the end of a reason whose payload was cut (ingest.service)


@dataclass(slots=True)
class ReplayResult:
    examined: int = 0
    stored: int = 0  # and deleted from the dead letters
    refused: int = 0  # refused again; still there
    cut: int = 0  # only the payload's head was kept: cannot be replayed
    reasons: dict[str, int] = field(default_factory=dict)  # why the refused ones were refused, now


async def replay_dead_letters(
    conn: psycopg.AsyncConnection[Any],
    service: IngestService,
    *,
    since: datetime | None = None,
    topic_like: str = "%",
    dry_run: bool = False,
) -> ReplayResult:
    """Replay the dead letters received since ``since`` whose topic is LIKE ``topic_like``."""
    result = ReplayResult()
    store = TelemetryStore(conn, await installed_flavor(conn))
    cur = await conn.execute(
        "SELECT id, topic, payload, reason FROM telemetry.dead_letter"
        " WHERE topic LIKE %s AND (%s::timestamptz IS NULL OR received_at >= %s) ORDER BY id",
        (topic_like, since, since),
    )
    rows = await cur.fetchall()
    await conn.commit()
    for row_id, topic, payload, reason in rows:
        result.examined += 1
        if str(reason).endswith(CUT_MARK):
            result.cut += 1
            continue
        before = service.stats.dead_letters
        async with conn.transaction(force_rollback=dry_run) as tx:
            await service.flush(store, [Message(topic, bytes(payload), qos=1, retain=False, mid=1, properties=None)])
            if service.stats.dead_letters > before:
                now = await conn.execute("SELECT reason FROM telemetry.dead_letter ORDER BY id DESC LIMIT 1")
                why = str((await now.fetchone() or ("?",))[0])
                result.refused += 1
                result.reasons[why] = result.reasons.get(why, 0) + 1
                raise psycopg.Rollback(tx)
            await conn.execute("DELETE FROM telemetry.dead_letter WHERE id = %s", (row_id,))
            result.stored += 1
    return result
