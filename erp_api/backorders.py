"""Back-ordered spare parts reserved as stock arrives (``erp.fill_backorders``,
``erp_api/sql/0018_backorders.sql``).

A maintenance order opened while its parts are short reserves what is there and waits
for the rest. Every API process calls ``fill_once`` every ``EVERY_S``: one statement that
finds nothing to do cheaply, and otherwise reserves free stock for the waiting orders,
most urgent first, each change an event (``work_order.parts_reserved``) and an audit
row by ``ACTOR``. Polling rather than a trigger on every receipt: the fill takes the
work orders' locks before the stock's, the order every command takes them in, which a
receipt already holding its stock could not. Several processes may poll; the locks make
them take turns, and the second finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from erp_api.db import Conn

__all__ = ["ACTOR", "EVERY_S", "fill_forever", "fill_once"]

log = logging.getLogger(__name__)

ACTOR: Final = "system:backorders"
EVERY_S: Final = 2.0


async def fill_once(conn: Conn) -> list[int]:
    """Reserve what has arrived for waiting orders; the ids of the orders that got parts."""
    async with conn.transaction():
        cur = await conn.execute("SELECT * FROM erp.fill_backorders(erp.acting(%s, NULL))", (ACTOR,))
        filled = [int(row[0]) for row in await cur.fetchall()]
    if filled:
        log.info("back-ordered spare parts reserved for work orders %s", filled)
    return filled


async def fill_forever(pool: AsyncConnectionPool[Any], *, every_s: float = EVERY_S) -> None:
    """``fill_once`` every ``every_s`` until cancelled; a failure is retried at the next tick."""
    while True:
        try:
            async with pool.connection(timeout=10) as conn:
                await fill_once(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("reserving back-ordered parts failed (will retry): %s", exc)
        await asyncio.sleep(every_s)
