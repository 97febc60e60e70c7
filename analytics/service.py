"""``factory analytics run`` as a coroutine: the scheduler, its event relay and its health endpoints.

``factory demo`` (or any supervisor) can run it in a task of its own: it runs until
cancelled and closes what it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from analytics.events import EventRelay
from analytics.health import serve
from analytics.jobs import JOBS, Services
from analytics.scheduler import JobSpec, Scheduler
from factory.events import lag_metrics
from factory.runtime import Listen

__all__ = ["run_analytics"]


async def run_analytics(
    database_url: str, bus_url: str, services: Services, *, http: Listen | None = None,
    jobs: tuple[JobSpec[Services], ...] = JOBS, on_listening: Callable[[int], None] | None = None,
) -> None:  # fmt: skip
    """``services`` are the jobs' as they run (a caller may change them meanwhile); the event
    relay to ``bus_url`` (an MQTT broker, or a NATS cluster: ``factory.bus``) joins them here."""
    relay = services.relay = EventRelay(bus_url)
    scheduler = Scheduler(jobs, database_url, services=services)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(scheduler.run(), name="analytics-scheduler")
            where = http or Listen("127.0.0.1", 9108)
            lag = lag_metrics("factory_analytics", lambda: services.outbox_lag)
            served = serve(scheduler, where, on_listening=on_listening, extra=lag)
            group.create_task(served, name="analytics-http")
    finally:
        await relay.close()
