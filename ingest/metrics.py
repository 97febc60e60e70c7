"""What ingest reports on /metrics and /healthz."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from factory.metrics import Labels, Metric, single

if TYPE_CHECKING:
    from ingest.service import IngestService

__all__ = ["health", "metrics"]


def per_device(counts: Callable[[], dict[str, int]]) -> Callable[[], list[tuple[Labels, float]]]:
    """Samples labelled ``device="site/name"`` from a live mapping of counts."""
    return lambda: [((("device", key),), float(n)) for key, n in sorted(counts().items())]


def metrics(service: IngestService) -> list[Metric]:
    stats = service.stats
    upkeep = service.upkeep.stats if service.upkeep else None

    def lag() -> float:
        return max(0.0, time.time() - stats.newest_point_ms / 1000) if stats.newest_point_ms else 0.0

    families = [
        Metric("factory_ingest_messages_total", "MQTT messages committed", "counter", single(lambda: stats.messages)),
        Metric("factory_ingest_points_received_total", "Points committed (new or repeated)", "counter",
               single(lambda: stats.points_received)),
        Metric("factory_ingest_points_inserted_total", "Points that were new rows", "counter",
               single(lambda: stats.points_inserted)),
        Metric("factory_ingest_dead_letters_total", "Messages refused (kept in telemetry.dead_letter, or counted)",
               "counter", single(lambda: stats.dead_letters)),
        Metric("factory_ingest_dead_letters_unkept_total", "Refused past a device's budget: counted, not kept",
               "counter", single(lambda: stats.dead_letters_unkept)),
        Metric("factory_ingest_write_backs_total", "Write-back replies committed (new or repeated)", "counter",
               single(lambda: stats.write_backs)),
        Metric("factory_ingest_write_backs_recorded_total", "Write-back replies that were new rows", "counter",
               single(lambda: stats.write_backs_recorded)),
        Metric("factory_ingest_flushes_total", "Committed write transactions", "counter",
               single(lambda: stats.flushes)),
        Metric("factory_ingest_flush_seconds_total", "Time spent in committed flushes", "counter",
               single(lambda: stats.flush_seconds)),
        Metric("factory_ingest_last_flush_seconds", "Duration of the last flush (commit latency)", "gauge",
               single(lambda: stats.last_flush_ms / 1000)),
        Metric("factory_ingest_last_flush_points", "Points in the last flush (batch size)", "gauge",
               single(lambda: stats.last_flush_points)),
        Metric("factory_ingest_lag_seconds", "Now minus the newest point committed", "gauge", single(lag)),
        Metric("factory_ingest_reconnects_total", "Broker or database reconnects", "counter",
               single(lambda: stats.reconnects)),
        Metric("factory_ingest_device_points_total", "Points committed per device", "counter",
               per_device(lambda: stats.per_device)),
    ]  # fmt: skip
    if upkeep is not None:
        families += [
            Metric("factory_ingest_rollup_minutes_total", "Minutes rolled up", "counter",
                   single(lambda: upkeep.minutes_rolled_up)),
            Metric("factory_ingest_upkeep_failures_total", "Failed storage upkeep cycles", "counter",
                   single(lambda: upkeep.failures)),
            Metric("factory_ingest_partitions_dropped_total", "Partitions or chunks dropped by retention", "counter",
                   single(lambda: upkeep.partitions_dropped)),
            Metric("factory_ingest_site_samples_deleted_total", "Samples of sites kept for less, deleted by retention",
                   "counter", single(lambda: upkeep.site_samples_deleted)),
            Metric("factory_ingest_rollups_deleted_total", "Rollup rows deleted by retention (plain PostgreSQL)",
                   "counter", single(lambda: upkeep.rollups_deleted)),
            Metric("factory_ingest_lost_batches_total", "Batches a device numbered but never delivered (seq gaps)",
                   "counter", per_device(lambda: upkeep.lost_batches)),
        ]  # fmt: skip
    return families


STALLED_S = 10.0  # a flush writing longer than this means the database is not keeping up


def health(service: IngestService) -> tuple[bool, dict[str, object]]:
    """Healthy while subscribed (which implies a live database connection too) and keeping
    up: with its own queue at the mark, or a flush writing for more than ``STALLED_S``, the
    broker is holding (and queueing) the rest."""
    subscribed = service.subscribed.is_set()
    stream = service.stream
    waiting = stream.waiting if stream is not None and subscribed else 0
    writing = time.monotonic() - service.writing_since if service.writing_since is not None else 0.0
    queue = "ok"
    if stream is not None and waiting >= stream.high_water:
        queue = f"behind: {waiting} messages waiting"
    elif writing > STALLED_S:
        queue = f"behind: a flush has been writing for {writing:.0f} s"
    return subscribed and queue == "ok", {
        "subscribed": subscribed, "queue": queue,
        "points_received": service.stats.points_received, "dead_letters": service.stats.dead_letters,
    }  # fmt: skip
