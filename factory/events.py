"""Domain events on ``factory/v1/events/{kind}``: the one envelope every producer publishes.

An event is named by its ``source`` and ``id`` together (as in CloudEvents): ``id`` counts
within one producer's outbox, ``source`` names that outbox: the producer (``erp``,
``analytics``) and the database it lives in (the cluster's system identifier and the
database's oid). Two ERPs on one broker, or the ERP and analytics, number their events
independently; consumers deduplicate on the pair. A streaming replica keeps its primary's
system identifier, so a promoted replica goes on as the same source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel

from factory.metrics import Labels, Metric

if TYPE_CHECKING:
    import psycopg

__all__ = ["TOPIC_PREFIX", "OutboxLag", "dumps", "envelope", "lag_metrics", "outbox_lag", "source"]

TOPIC_PREFIX: Final = "factory/v1/events"
# Per outbox: its unpublished events (the partial index on published_at IS NULL keeps this
# cheap while the relay keeps up) and the age of the oldest of them.
_LAG: Final = {
    schema: f"SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8"
    f" FROM {schema}.outbox WHERE published_at IS NULL"
    for schema in ("erp", "analytics")
}


@dataclass(frozen=True, slots=True)
class OutboxLag:
    """How far the relay is behind: events not yet published, and how long the oldest has waited."""

    unpublished: int
    oldest_s: float  # 0 when none waits


async def outbox_lag(conn: psycopg.AsyncConnection[Any], producer: Literal["erp", "analytics"]) -> OutboxLag:
    """The lag of ``producer``'s outbox now, whether or not a relay runs."""
    cur = await conn.execute(_LAG[producer])
    row = await cur.fetchone()
    assert row is not None
    return OutboxLag(int(row[0]), max(0.0, float(row[1])))


def lag_metrics(prefix: str, read: Callable[[], OutboxLag | None]) -> list[Metric]:
    """``{prefix}_outbox_unpublished`` and ``{prefix}_outbox_oldest_unpublished_seconds``,
    from ``read()`` when scraped (None: not known, shown as NaN)."""

    def sample(pick: Callable[[OutboxLag], float]) -> Callable[[], Iterable[tuple[Labels, float]]]:
        def read_one() -> Iterable[tuple[Labels, float]]:
            lag = read()
            return [((), float("nan") if lag is None else pick(lag))]

        return read_one

    return [
        Metric(f"{prefix}_outbox_unpublished", "Events in the outbox not published yet.", "gauge",
               sample(lambda lag: float(lag.unpublished))),
        Metric(f"{prefix}_outbox_oldest_unpublished_seconds",
               "How long the oldest unpublished event has waited (0: none waits).", "gauge",
               sample(lambda lag: lag.oldest_s)),
    ]  # fmt: skip


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: object) -> str:
    """Compact JSON that also takes decimals, dates and pydantic models."""
    return json.dumps(value, default=_default, separators=(",", ":"))


async def source(conn: psycopg.AsyncConnection[Any], producer: str) -> str:
    """``producer/system-identifier.database-oid`` for the database ``conn`` is on."""
    cur = await conn.execute(
        "SELECT system_identifier, (SELECT oid FROM pg_database WHERE datname = current_database())"
        " FROM pg_control_system()"
    )
    row = await cur.fetchone()
    assert row is not None
    return f"{producer}/{row[0]}.{row[1]}"


def envelope(
    source: str,
    event_id: int,
    kind: str,
    *,
    aggregate: tuple[str, object],
    occurred_at: datetime,
    data: object,
    actor: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """The message body: who sent it, which event it is, what it is about and what happened;
    with ``actor``, who caused it (and in answer to which request, when there was one)."""
    body: dict[str, object] = {
        "source": source,
        "id": event_id,
        "kind": kind,
        "aggregate": {"type": aggregate[0], "id": aggregate[1]},
        "occurred_at": occurred_at,
        "data": data,
    }
    if actor is not None:
        body["actor"] = actor
        body["request_id"] = request_id
    return dumps(body).encode()
