"""``/healthz`` and ``/metrics`` for the analytics scheduler, served by uvicorn in its loop.

``/healthz`` is 200 while the scheduler runs and no job has failed ``unhealthy_after``
times in a row, 503 otherwise; its JSON has every job's last run, duration, result and
error. ``/metrics`` is the Prometheus text format with the same figures per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from analytics.scheduler import JobStats, Scheduler
from factory.runtime import Listen, listen

__all__ = ["create_app", "prometheus", "serve"]

_METRICS: tuple[tuple[str, str, str, Callable[[JobStats], float | None]], ...] = (
    ("runs_total", "counter", "Completed runs.", lambda s: s.runs),
    ("failures_total", "counter", "Failed attempts (each retry counts).", lambda s: s.failures),
    ("skipped_total", "counter", "Ticks skipped because another instance held the job's lock.", lambda s: s.skipped),
    ("consecutive_failures", "gauge", "Failed attempts since the last success.", lambda s: s.consecutive_failures),
    ("last_run_timestamp_seconds", "gauge", "When the last run started (epoch).", lambda s: s.last_started),
    ("last_success_timestamp_seconds", "gauge", "When the last successful run ended (epoch).",
     lambda s: s.last_finished if s.last_error is None else None),
    ("last_duration_seconds", "gauge", "How long the last run took.", lambda s: s.last_duration_s),
)  # fmt: skip


def prometheus(stats: dict[str, JobStats]) -> str:
    lines: list[str] = []
    for name, kind, help_text, value in _METRICS:
        metric = f"factory_analytics_job_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for job, job_stats in sorted(stats.items()):
            number = value(job_stats)
            shown = "NaN" if number is None or math.isnan(number) else repr(float(number))
            lines.append(f'{metric}{{job="{job}"}} {shown}')
    return "\n".join(lines) + "\n"


def _job(stats: JobStats) -> dict[str, Any]:
    return {
        "runs": stats.runs, "failures": stats.failures, "skipped": stats.skipped,
        "consecutive_failures": stats.consecutive_failures, "last_started": stats.last_started,
        "last_finished": stats.last_finished, "last_duration_s": stats.last_duration_s,
        "last_error": stats.last_error, "last_result": stats.last_result,
    }  # fmt: skip


def create_app(scheduler: Scheduler[Any], *, unhealthy_after: int = 5) -> FastAPI:
    app = FastAPI(title="factory analytics", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        stats = scheduler.stats()
        failing = sorted(n for n, s in stats.items() if s.consecutive_failures >= unhealthy_after)
        ok = scheduler.running.is_set() and not failing
        body = {
            "status": "ok" if ok else "unhealthy",
            "failing": failing,
            "jobs": {n: _job(s) for n, s in stats.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(prometheus(scheduler.stats()), media_type="text/plain; version=0.0.4")

    return app


async def serve(scheduler: Scheduler[Any], where: Listen, *, on_listening: Callable[[int], None] | None = None) -> None:
    """Serve until cancelled; ``on_listening`` gets the bound port (``port=0`` picks a free one).

    The socket is bound here, so a port in use fails at once (``StartupError``); the
    process entry point owns signals, so uvicorn's capture stays off.
    """
    sock = listen(where)
    config = uvicorn.Config(create_app(scheduler), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]), name="analytics-http")
    if on_listening is not None:
        on_listening(int(sock.getsockname()[1]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
    finally:
        sock.close()
