"""What the ERP keeps, and for how long: the recorded replies of idempotent requests (a
retry within ``KEEP_DAYS`` replays) and published outbox events (kept ``OUTBOX_DAYS`` for
inspection; unpublished ones are never deleted). Every API process runs ``purge_forever``;
the DELETEs are idempotent, so several may."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from erp_api.config import OUTBOX_DAYS
from erp_api.db import Conn
from erp_api.idempotency import KEEP_DAYS

__all__ = ["purge_forever", "purge_once"]

log = logging.getLogger(__name__)

_PURGES: Final = {
    "idempotency records": "DELETE FROM erp.idempotency_key WHERE created_at < now() - make_interval(days => %s)",
    "published outbox events": "DELETE FROM erp.outbox WHERE published_at < now() - make_interval(days => %s)",
}


async def purge_once(conn: Conn, *, keep_days: int = KEEP_DAYS, outbox_days: int = OUTBOX_DAYS) -> dict[str, int]:
    """Delete what is past its time; how many of each were deleted."""
    days = {"idempotency records": keep_days, "published outbox events": outbox_days}
    deleted = {}
    for what, statement in _PURGES.items():
        cur = await conn.execute(statement, (days[what],))
        deleted[what] = cur.rowcount
        if cur.rowcount:
            log.info("purged %d %s older than %d days", cur.rowcount, what, days[what])
    return deleted


async def purge_forever(
    pool: AsyncConnectionPool[Any], *, keep_days: int = KEEP_DAYS, outbox_days: int = OUTBOX_DAYS, every_s: float = 3600
) -> None:
    """``purge_once`` at start and then every ``every_s``, until cancelled; a failure is retried."""
    while True:
        try:
            async with pool.connection(timeout=10) as conn:
                await purge_once(conn, keep_days=keep_days, outbox_days=outbox_days)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("purge failed (will retry): %s", exc)
        await asyncio.sleep(every_s)
