"""``factory analytics run`` as a coroutine: the scheduler, its event relay and its health endpoints.

``factory demo`` (or any supervisor) can run it in a task of its own: it runs until
cancelled and closes what it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from analytics.events import EventRelay
from analytics.health import serve
from analytics.jobs import JOBS
from analytics.live import LiveConfig
from analytics.scheduler import JobSpec, Scheduler
from factory.runtime import Listen

__all__ = ["run_analytics"]


async def run_analytics(
    database_url: str, mqtt_url: str, *, live: LiveConfig | None = None, http: Listen | None = None,
    jobs: tuple[JobSpec, ...] = JOBS, on_listening: Callable[[int], None] | None = None,
    services: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """``services`` are shared with the jobs as they run: a caller may add one later (``"oee"``, ...)."""
    relay = EventRelay(mqtt_url)
    shared = services if services is not None else {}
    shared.setdefault("live", live or LiveConfig())
    shared["relay"] = relay
    scheduler = Scheduler(jobs, database_url, services=shared)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(scheduler.run(), name="analytics-scheduler")
            where = http or Listen("127.0.0.1", 9108)
            group.create_task(serve(scheduler, where, on_listening=on_listening), name="analytics-http")
    finally:
        await relay.close()
