"""The analytics scheduler on the real database: single runs across instances, retries, health."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from helpers import cancel

from analytics.errors import ErpError
from analytics.health import serve
from analytics.jobs import JOBS, Services
from analytics.scheduler import JobContext, JobSpec, Scheduler
from factory.runtime import Listen

pytestmark = pytest.mark.integration

Context = JobContext[dict[str, Any]]  # these jobs share a plain dict
RUNS: list[tuple[str, float, float]] = []  # (instance, started, ended) of every run of slow_job


async def slow_job(ctx: Context) -> str:
    started = time.monotonic()
    await asyncio.sleep(0.15)
    RUNS.append((ctx.services["instance"], started, time.monotonic()))
    return ctx.services["instance"]


async def flaky_job(ctx: Context) -> int:
    ctx.services["calls"] += 1
    if ctx.services["calls"] <= 2:
        raise RuntimeError(f"failure number {ctx.services['calls']}")
    return ctx.services["calls"]


async def broken_job(ctx: Context) -> None:
    raise RuntimeError("always")


async def hung_job(ctx: Context) -> None:
    await asyncio.Event().wait()  # never returns by itself


async def steady_job(ctx: Context) -> int:
    cur = await ctx.conn.execute("SELECT 1")
    return int((await cur.fetchone())[0])


async def until(condition: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(*schedulers: Scheduler) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    try:
        await until(lambda: all(s.running.is_set() for s in schedulers))
        yield
    finally:
        await cancel(*tasks)


async def test_two_instances_never_run_the_same_job_at_once(database_url: str) -> None:
    RUNS.clear()
    spec = [JobSpec("slow-test-job", 0.05, slow_job)]
    a = Scheduler(spec, database_url, services={"instance": "a"})
    b = Scheduler(spec, database_url, services={"instance": "b"})
    async with running(a, b):
        await until(
            lambda: len(RUNS) >= 6 and a.stats()["slow-test-job"].skipped + b.stats()["slow-test-job"].skipped > 0
        )
    runs = sorted(RUNS, key=lambda r: r[1])
    for (_, _, ended), (_, started, _) in itertools.pairwise(runs):
        assert started >= ended  # one run at a time, whichever instance holds the lock
    stats = [s.stats()["slow-test-job"] for s in (a, b)]
    assert sum(s.runs for s in stats) >= len(runs)
    assert all(s.failures == 0 for s in stats)


async def test_failures_are_counted_retried_and_never_stop_the_scheduler(database_url: str) -> None:
    specs = [
        JobSpec("flaky-test-job", 60, flaky_job),
        JobSpec("broken-test-job", 0.05, broken_job),
        JobSpec("steady-test-job", 0.05, steady_job),
    ]
    scheduler = Scheduler(specs, database_url, services={"calls": 0}, retries=2, backoff_s=0.01)
    ports: list[int] = []
    async with running(scheduler):
        server = asyncio.create_task(serve(scheduler, Listen("127.0.0.1", 0), on_listening=ports.append))
        try:
            await until(lambda: bool(ports) and scheduler.stats()["broken-test-job"].consecutive_failures >= 6)
            await until(lambda: scheduler.stats()["steady-test-job"].runs >= 3)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as client:
                health = await client.get("/healthz")
                metrics = (await client.get("/metrics")).text
        finally:
            await cancel(server)
    flaky = scheduler.stats()["flaky-test-job"]
    assert (flaky.runs, flaky.failures, flaky.consecutive_failures, flaky.last_result) == (1, 2, 0, 3)
    assert flaky.last_error is None
    assert scheduler.stats()["broken-test-job"].last_error == "RuntimeError: always"
    assert health.status_code == 503
    assert health.json()["failing"] == ["broken-test-job"]
    assert health.json()["jobs"]["flaky-test-job"]["last_result"] == 3
    assert 'factory_analytics_job_runs_total{job="flaky-test-job"} 1.0' in metrics
    assert 'factory_analytics_job_failures_total{job="flaky-test-job"} 2.0' in metrics
    assert 'factory_analytics_job_last_duration_seconds{job="steady-test-job"}' in metrics


async def test_a_run_that_hangs_is_cancelled_and_counted(database_url: str) -> None:
    spec = JobSpec("hung-test-job", 60, hung_job, timeout_s=0.2)
    scheduler = Scheduler([spec], database_url, services={}, retries=1, backoff_s=0.01)
    async with running(scheduler):
        await until(lambda: scheduler.stats()["hung-test-job"].failures >= 2)
    stats = scheduler.stats()["hung-test-job"]
    assert stats.runs == 0
    assert stats.last_error is not None
    assert stats.last_error.startswith("TimeoutError")


async def test_stopping_mid_run_is_quiet(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A run still going when the service stops ends with it: no failure, no traceback."""
    spec = JobSpec("stopped-test-job", 60, hung_job, timeout_s=60)
    scheduler = Scheduler([spec], database_url, services={})
    async with running(scheduler):
        await until(lambda: scheduler.stats()["stopped-test-job"].last_started is not None)
    assert scheduler.stats()["stopped-test-job"].failures == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def quick_job(ctx: Context) -> None:
    await asyncio.sleep(0.001)


async def test_stopping_as_runs_are_submitted_is_quiet(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Stopped at any moment, even as a run was submitted but its task had not started (which
    APScheduler logged as a failed job with a traceback: seen at the end of a demo): 100 stops of
    five jobs every 10 ms, no error logged."""
    rng = random.Random(7)
    for _ in range(100):
        scheduler = Scheduler([JobSpec(f"quick-{k}", 0.01, quick_job) for k in range(5)], database_url, services={})
        task = asyncio.create_task(scheduler.run())
        await until(scheduler.running.is_set)
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        await cancel(task)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_healthy_scheduler_says_so(database_url: str) -> None:
    scheduler = Scheduler([JobSpec("steady-test-job", 0.05, steady_job)], database_url, services={})
    ports: list[int] = []
    async with running(scheduler):
        server = asyncio.create_task(serve(scheduler, Listen("127.0.0.1", 0), on_listening=ports.append))
        try:
            await until(lambda: bool(ports) and scheduler.stats()["steady-test-job"].runs >= 1)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as client:
                health = await client.get("/healthz")
        finally:
            await cancel(server)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["jobs"]["steady-test-job"]["last_result"] == 1


async def test_the_registry_keeps_the_jobs_for_this_database(database_url: str) -> None:
    scheduler = Scheduler(JOBS, database_url, services=Services())
    await scheduler.prepare()
    assert set(scheduler.jobs) == {
        "anomaly",
        "rollups",
        "oee",
        "production-counts",
        "production-forecast",
        "maintenance-scoring",
        "outbox-purge",
        "shift-report",
    }  # CI runs plain PostgreSQL: rollups included


def test_job_names_must_be_unique(database_url: str) -> None:
    spec = JobSpec("twice", 1, steady_job)
    with pytest.raises(ValueError, match="unique"):
        Scheduler([spec, spec], database_url, services={})


async def _refused_job(ctx: Context) -> int:
    raise ErpError("the ERP refused: insufficient stock")


async def test_the_platforms_own_errors_are_logged_in_words_the_unexpected_with_a_traceback(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An ERP refusal is an operating condition (one line, no traceback); a bug keeps its traceback."""
    specs = [JobSpec("refused-test-job", 60, _refused_job), JobSpec("broken-test-job", 60, broken_job)]
    scheduler = Scheduler(specs, database_url, services={}, retries=0)
    async with running(scheduler):
        await until(lambda: all(s.failures >= 1 for s in scheduler.stats().values()))
    failed = {r.getMessage().split()[1]: r for r in caplog.records if r.levelno >= logging.ERROR}
    assert not failed["refused-test-job"].exc_info
    assert "ErpError: the ERP refused: insufficient stock" in failed["refused-test-job"].getMessage()
    assert failed["broken-test-job"].exc_info
