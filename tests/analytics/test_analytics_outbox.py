"""The analytics outbox's lag on analytics' /metrics: it grows while the broker is away and
goes back to 0 once the relay has published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest
from helpers import eventually, scrape
from psycopg.types.json import Jsonb

from analytics.jobs import Services, anomaly, outbox_purge
from analytics.live import LiveConfig
from analytics.scheduler import JobContext, JobSpec
from analytics.service import run_analytics
from factory.runtime import Listen

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def analytics(database_url: str, mqtt_url: str, services: Services) -> AsyncIterator[int]:
    """``factory analytics run`` with only the anomaly job (and its relay); yields the /metrics port."""
    ports: list[int] = []
    task = asyncio.create_task(run_analytics(database_url, mqtt_url, services, http=Listen("127.0.0.1", 0),
                                             jobs=(JobSpec("anomaly", 0.2, anomaly),), on_listening=ports.append))  # fmt: skip
    try:
        await eventually(lambda: ports, timeout=10, what="analytics listening")
        yield ports[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _unpublished(db: psycopg.AsyncConnection) -> int:
    cur = await db.execute("SELECT count(*) FROM analytics.outbox WHERE published_at IS NULL")
    return int((await cur.fetchone())[0])  # type: ignore[index]


async def test_outbox_lag_shows_until_the_relay_publishes(
    database_url: str, mqtt_url: str, db: psycopg.AsyncConnection, site: str
) -> None:
    await db.execute(
        "INSERT INTO analytics.outbox (kind, payload, created_at) VALUES ('anomaly', %s, now() - interval '5 s')",
        (Jsonb({"site": site, "asset": "pump1", "state": "start"}),),
    )
    waiting = await _unpublished(db)
    services = Services(live=LiveConfig(site=site))
    async with analytics(database_url, "mqtt://127.0.0.1:1", services) as port:  # no broker there
        await eventually(lambda: services.outbox_lag is not None, timeout=10, what="a first anomaly run")
        scraped = await asyncio.to_thread(scrape, port)
    assert waiting >= 1
    assert scraped["factory_analytics_outbox_unpublished"] == waiting
    assert scraped["factory_analytics_outbox_oldest_unpublished_seconds"] >= 5

    services = Services(live=LiveConfig(site=site))
    async with analytics(database_url, mqtt_url, services) as port:
        await eventually(lambda: services.outbox_lag is not None and services.outbox_lag.unpublished == 0,
                         timeout=15, what="the outbox published")  # fmt: skip
        scraped = await asyncio.to_thread(scrape, port)
    assert await _unpublished(db) == 0
    assert scraped["factory_analytics_outbox_unpublished"] == 0
    assert scraped["factory_analytics_outbox_oldest_unpublished_seconds"] == 0


async def test_published_events_are_purged_after_their_days(db: psycopg.AsyncConnection, site: str) -> None:
    """Published 10 days ago: deleted; published yesterday, or never (however old): kept."""
    for created, published in (("30 days", None), ("10 days", "10 days"), ("1 day", "1 day"), ("1 hour", None)):
        await db.execute(
            "INSERT INTO analytics.outbox (kind, payload, created_at, published_at)"
            " VALUES ('anomaly', %s, now() - %s::interval, now() - %s::interval)",
            (Jsonb({"site": site, "created": created}), created, published),
        )

    async def ours() -> list[str]:
        cur = await db.execute(
            "SELECT payload->>'created' FROM analytics.outbox WHERE payload->>'site' = %s ORDER BY id", (site,)
        )
        return [r[0] for r in await cur.fetchall()]

    assert await ours() == ["30 days", "10 days", "1 day", "1 hour"]
    async with await psycopg.AsyncConnection.connect(db.info.dsn, autocommit=True) as conn:
        deleted = await outbox_purge(JobContext(conn, "", Services(outbox_days=7)))
    assert deleted >= 1
    assert await ours() == ["30 days", "1 day", "1 hour"]
