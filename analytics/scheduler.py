"""The analytics scheduler: APScheduler runs registered jobs; PostgreSQL keeps them single.

Each job runs on an interval in one asyncio loop (``AsyncIOScheduler``). Before a run,
the job takes a session advisory lock named after it (``pg_try_advisory_lock``) on its
own connection: if another scheduler instance holds it, this run is skipped, so two
instances never run the same job at once, and if that instance dies its connection
closes and the lock is free for the next tick. A run that raises is logged, counted
and tried again (``retries`` times, with backoff) before the next tick; it never stops
the scheduler. ``stats`` feed ``/healthz`` and ``/metrics`` (``analytics.health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from analytics.errors import AnalyticsError
from factory.db import connect, installed_flavor
from factory.runtime import Backoff
from maintenance_models.errors import MaintenanceError

__all__ = ["JobContext", "JobSpec", "JobStats", "Scheduler", "lock_key"]

log = logging.getLogger(__name__)

S = TypeVar("S")  # what the jobs of one scheduler share (``analytics.jobs.Services``)


@dataclass(slots=True)
class JobContext(Generic[S]):
    """What a job gets on each run: its connection (autocommit) and the services its scheduler shares."""

    conn: psycopg.AsyncConnection[Any]
    database_url: str
    services: S


@dataclass(frozen=True, slots=True)
class JobSpec(Generic[S]):
    """One line in a registry (``analytics.jobs.JOBS``): ``await run(ctx)`` every ``every_s``.

    ``flavor`` limits a job to plain PostgreSQL or TimescaleDB databases. A run longer than
    ``timeout_s`` is cancelled and counts as failed.
    """

    name: str
    every_s: float
    run: Callable[[JobContext[S]], Awaitable[object]]
    flavor: Literal["any", "postgres", "timescaledb"] = "any"
    timeout_s: float = 300.0


@dataclass(slots=True)
class JobStats:
    runs: int = 0
    failures: int = 0
    skipped: int = 0  # another instance held the job's lock
    consecutive_failures: int = 0
    last_started: float | None = None
    last_finished: float | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    last_result: Any = None


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key per job name."""
    return int.from_bytes(hashlib.sha256(f"factory.analytics.job:{name}".encode()).digest()[:8], "big", signed=True)


class _Job(Generic[S]):
    """One job's connection, lock and statistics."""

    def __init__(self, spec: JobSpec[S], scheduler: Scheduler[S]) -> None:
        self.spec = spec
        self.scheduler = scheduler
        self.stats = JobStats()
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = await connect(self.scheduler.database_url, autocommit=True,
                                      application_name=f"factory-analytics-{self.spec.name}")  # fmt: skip
        return self.conn

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()
            self.conn = None

    async def tick(self) -> None:
        """One scheduled run: skip if another instance runs it, retry what fails."""
        for attempt in range(self.scheduler.retries + 1):
            try:
                conn = await self._connection()
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.spec.name),))
                row = await cur.fetchone()
                if not (row and row[0]):
                    self.stats.skipped += 1
                    return
                try:
                    await self._run(conn)
                finally:
                    if not conn.broken:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(self.spec.name),))
                return
            except Exception as exc:  # noqa: BLE001 - the supervisor: log, count, back off, retry
                self._failed(exc, attempt)
                if attempt < self.scheduler.retries:
                    await asyncio.sleep(min(self.scheduler.backoff_s * 2**attempt, self.spec.every_s))

    async def _run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        stats = self.stats
        stats.last_started = time.time()
        started = time.perf_counter()
        context = JobContext(conn, self.scheduler.database_url, self.scheduler.services)
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                stats.last_result = await self.spec.run(context)
        finally:
            stats.last_duration_s = time.perf_counter() - started
            stats.last_finished = time.time()
        stats.runs += 1
        stats.consecutive_failures = 0
        stats.last_error = None
        log.debug("job %s done in %.3f s: %s", self.spec.name, stats.last_duration_s, stats.last_result)

    def _failed(self, exc: Exception, attempt: int) -> None:
        stats = self.stats
        stats.failures += 1
        stats.consecutive_failures += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        log.error("job %s failed (attempt %d of %d): %s", self.spec.name, attempt + 1, self.scheduler.retries + 1,
                  stats.last_error, exc_info=not isinstance(exc, _SAID_IN_WORDS))  # fmt: skip


# Failures that say all in their message (the database away, the platform's own errors, such as
# the ERP refusing or a model missing): logged without a traceback, which is for the unexpected.
_SAID_IN_WORDS: tuple[type[Exception], ...] = (psycopg.OperationalError, AnalyticsError, MaintenanceError)


class Scheduler(Generic[S]):
    """Runs ``jobs`` until cancelled; every run gets ``services`` (e.g. the event relay)."""

    def __init__(
        self, jobs: Sequence[JobSpec[S]], database_url: str, *, services: S, retries: int = 2, backoff_s: float = 0.5,
    ) -> None:  # fmt: skip
        names = [spec.name for spec in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.specs = list(jobs)
        self.database_url = database_url
        self.services = services
        self.retries = retries
        self.backoff_s = backoff_s
        self.jobs: dict[str, _Job[S]] = {}
        self.running = asyncio.Event()
        self._active: set[asyncio.Task[Any]] = set()

    async def prepare(self) -> None:
        """Keep the jobs for this database's flavour."""
        async with await connect(self.database_url, autocommit=True, application_name="factory-analytics") as conn:
            flavor = await installed_flavor(conn)
        for spec in self.specs:
            if spec.flavor in ("any", flavor):
                self.jobs[spec.name] = _Job(spec, self)
            else:
                log.info("job %s is for %s databases; this one is %s", spec.name, spec.flavor, flavor)

    async def run(self) -> None:
        backoff = Backoff()
        while True:  # a database that is not up yet delays the start; it does not end the service
            try:
                await self.prepare()
                break
            except psycopg.OperationalError as exc:
                delay = backoff.next()
                log.warning("analytics scheduler: database unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        for name, job in self.jobs.items():
            scheduler.add_job(self._tick, "interval", args=[name], seconds=job.spec.every_s, id=name, name=name,
                              next_run_time=datetime.now(UTC))  # fmt: skip
        scheduler.start()
        self.running.set()
        log.info("analytics scheduler running: %s", ", ".join(f"{n} every {j.spec.every_s:g} s" for n, j in
                                                             self.jobs.items()))  # fmt: skip
        try:
            await asyncio.Event().wait()
        finally:
            self.running.clear()
            scheduler.pause()  # no new runs; one submitted a moment ago has a task not started yet:
            await asyncio.sleep(0)  # let it reach _tick, or its cancellation is logged as a failure
            scheduler.shutdown(wait=False)  # cancels the runs in progress ...
            await asyncio.gather(*self._active, return_exceptions=True)  # ... which end here
            for job in self.jobs.values():
                await job.close()

    async def _tick(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        try:
            await self.jobs[name].tick()
        except asyncio.CancelledError:
            if self.running.is_set():
                raise
            # Stopped with the scheduler: the run ends here, quietly (APScheduler would log
            # the cancellation as a job failure with a traceback).
            log.info("job %s stopped with the scheduler", name)
        finally:
            self._active.discard(task)

    def stats(self) -> dict[str, JobStats]:
        return {name: job.stats for name, job in self.jobs.items()}
