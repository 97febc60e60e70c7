"""What the edge agent reports on /metrics and /healthz."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from factory.metrics import Labels, Metric, single

if TYPE_CHECKING:
    from edge_agent.agent import EdgeAgent

__all__ = ["health", "metrics"]


def metrics(agent: EdgeAgent) -> list[Metric]:
    def per_source(field: str) -> list[tuple[Labels, float]]:
        return [((("source", s.source.name),), float(getattr(s.stats, field))) for s in agent.sources]

    def publisher(field: str) -> float:
        return float(getattr(agent.publisher.stats, field)) if agent.publisher else 0.0

    def buffer_depth() -> float:
        return float(agent.publisher.buffer.depth_now()[0]) if agent.publisher else 0.0

    def oldest_age() -> float:
        oldest = agent.publisher.buffer.depth_now()[1] if agent.publisher else None
        return max(0.0, time.time() - oldest / 1000) if oldest else 0.0

    return [
        Metric("factory_edge_polls_total", "Reads of a source (Modbus blocks, OPC UA reads or notifications)",
               "counter", lambda: per_source("polls")),
        Metric("factory_edge_poll_errors_total", "Failed reads per source", "counter", lambda: per_source("errors")),
        Metric("factory_edge_reconnects_total", "Source reconnects", "counter", lambda: per_source("reconnects")),
        Metric("factory_edge_poll_seconds", "Duration of the last poll per source", "gauge",
               lambda: per_source("last_poll_s")),
        Metric("factory_edge_source_dropped_points_total",
               "Points a subscription delivered while the agent was too far behind to take them", "counter",
               lambda: per_source("dropped")),
        Metric("factory_edge_points_emitted_total", "Points that passed the change filter", "counter",
               single(lambda: agent.emitted)),
        Metric("factory_edge_points_published_total", "Points acknowledged by the broker", "counter",
               single(lambda: publisher("published_points"))),
        Metric("factory_edge_backlog_points_published_total", "Backlog points sent with hist=true", "counter",
               single(lambda: publisher("hist_points"))),
        Metric("factory_edge_broker_reconnects_total", "Broker reconnects", "counter",
               single(lambda: publisher("reconnects"))),
        Metric("factory_edge_points_confirmed_total", "Points ingest confirmed stored (then removed from the buffer)",
               "counter", single(lambda: publisher("confirmed_points"))),
        Metric("factory_edge_points_resent_total", "Points sent again: unconfirmed after a reconnect or a lost batch",
               "counter", single(lambda: publisher("resent_points"))),
        Metric("factory_edge_unconfirmed_points", "Points the broker acknowledged that ingest has not confirmed yet",
               "gauge", single(lambda: agent.publisher.unconfirmed_points if agent.publisher else 0)),
        Metric("factory_edge_buffer_points", "Points in the durable buffer: unsent, or sent and not yet confirmed",
               "gauge", single(buffer_depth)),
        Metric("factory_edge_buffer_oldest_age_seconds", "Age of the oldest buffered point", "gauge",
               single(oldest_age)),
        Metric("factory_edge_buffer_dropped_points_total",
               "Points dropped at the buffer size limit or for a full disk (the oldest first)", "counter",
               single(lambda: agent.publisher.buffer.dropped if agent.publisher else 0)),
        Metric("factory_edge_buffer_disk_full_total", "Buffer writes that found the disk full", "counter",
               single(lambda: agent.publisher.buffer.full_events if agent.publisher else 0)),
    ]  # fmt: skip


FULL_RECENTLY_S = 60.0  # the disk counts as full this long after a write last found it so


def health(agent: EdgeAgent) -> tuple[bool, dict[str, object]]:
    connected = bool(agent.publisher and agent.publisher.connected)
    full_at = agent.publisher.buffer.full_at if agent.publisher else None
    full = full_at is not None and time.monotonic() - full_at < FULL_RECENTLY_S
    buffer = "disk full: dropping the oldest points" if full else "ok"
    return connected and not full, {"broker": "connected" if connected else "disconnected", "buffer": buffer,
                                    "sources": {s.source.name: s.stats.errors for s in agent.sources}}  # fmt: skip
