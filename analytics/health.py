"""``/healthz`` and ``/metrics`` for the analytics scheduler, on the platform's one health server
(``factory.metrics.serve_http``, as the edge agent and ingest serve theirs).

``/healthz`` is 200 while the scheduler runs and no job has failed ``unhealthy_after``
times in a row, 503 otherwise; its JSON has every job's last run, duration, result and
error. ``/metrics`` is the Prometheus text format with the same figures per job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from analytics.scheduler import JobStats, Scheduler
from factory.metrics import Labels, Metric, serve_http
from factory.runtime import Listen

__all__ = ["health", "metrics", "serve"]

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


def metrics(scheduler: Scheduler[Any], extra: Sequence[Metric] = ()) -> list[Metric]:
    """One family per figure, a sample per job (NaN where a job has no such figure yet),
    then ``extra`` (the outbox's lag)."""

    def per_job(value: Callable[[JobStats], float | None]) -> Callable[[], Iterable[tuple[Labels, float]]]:
        def read() -> Iterable[tuple[Labels, float]]:
            samples: list[tuple[Labels, float]] = []
            for job, stats in sorted(scheduler.stats().items()):
                number = value(stats)
                samples.append(((("job", job),), float("nan") if number is None else float(number)))
            return samples

        return read

    return [*(Metric(f"factory_analytics_job_{name}", help_text, kind, per_job(value))
              for name, kind, help_text, value in _METRICS), *extra]  # fmt: skip


def _job(stats: JobStats) -> dict[str, Any]:
    return {
        "runs": stats.runs, "failures": stats.failures, "skipped": stats.skipped,
        "consecutive_failures": stats.consecutive_failures, "last_started": stats.last_started,
        "last_finished": stats.last_finished, "last_duration_s": stats.last_duration_s,
        "last_error": stats.last_error, "last_result": stats.last_result,
    }  # fmt: skip


def health(scheduler: Scheduler[Any], *, unhealthy_after: int = 5) -> tuple[bool, dict[str, object]]:
    stats = scheduler.stats()
    failing = sorted(n for n, s in stats.items() if s.consecutive_failures >= unhealthy_after)
    ok = scheduler.running.is_set() and not failing
    return ok, {
        "status": "ok" if ok else "unhealthy",
        "failing": failing,
        "jobs": {n: _job(s) for n, s in stats.items()},
    }


async def serve(
    scheduler: Scheduler[Any], where: Listen, *, on_listening: Callable[[int], None] | None = None,
    extra: Sequence[Metric] = (),
) -> None:  # fmt: skip
    """Serve until cancelled; ``on_listening`` gets the bound port (``port=0`` picks a free one).
    A port in use fails at once (``StartupError``)."""
    await serve_http(where, metrics(scheduler, extra), lambda: health(scheduler), on_listening=on_listening)
