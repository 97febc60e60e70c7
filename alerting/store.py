"""``alerting.alert``: the bridge's alerts, firing and resolved, in its own schema.

A change is applied here before the message that caused it is acknowledged, and posted to
Alertmanager from here: a crash at any point repeats a post (harmless: same labels, same
start) and never loses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from alerting.rules import Change

__all__ = ["KEEP_DAYS", "DeviceState", "Stored", "apply", "device_states", "mark_posted", "pending", "purge"]

KEEP_DAYS: Final = 7  # resolved alerts are kept this long: a late duplicate of their "fire" stays quiet

Conn = psycopg.AsyncConnection[Any]
# A resolve ends the firing alert of its label set, or (with ``match``) every firing alert
# whose labels include those; an alert that started later than the resolve (past a minute of
# clock skew between producers) is a newer one and stays.
_RESOLVE: Final = """UPDATE alerting.alert SET ends_at = greatest(%(at)s, starts_at), posted = false, updated_at = now()
     WHERE fingerprint = %(fp)s AND ends_at IS NULL AND starts_at <= %(at)s + interval '1 minute'"""
_RESOLVE_MATCHING: Final = """UPDATE alerting.alert SET ends_at = greatest(%(at)s, starts_at), posted = false,
           updated_at = now()
     WHERE labels @> %(match)s AND ends_at IS NULL AND starts_at <= %(at)s + interval '1 minute'"""


@dataclass(frozen=True, slots=True)
class Stored:
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    updated_at: datetime

    def to_api(self) -> dict[str, Any]:
        """The alert as Alertmanager's ``POST /api/v2/alerts`` takes it."""
        alert: dict[str, Any] = {"labels": self.labels, "annotations": self.annotations,
                                 "startsAt": self.starts_at.isoformat()}  # fmt: skip
        if self.ends_at is not None:
            alert["endsAt"] = self.ends_at.isoformat()
        return alert


async def apply(conn: Conn, change: Change) -> bool:
    """Record ``change``; True if it changed anything (a duplicate or stale message does not).

    Fire: a new alert, or one resolved before ``change.at`` fires again from then; one that
    fires already keeps its start. Resolve: a firing alert that started no later ends then."""
    if change.action == "fire":
        cur = await conn.execute(
            """INSERT INTO alerting.alert (fingerprint, labels, annotations, starts_at)
               VALUES (%(fp)s, %(labels)s, %(annotations)s, %(at)s)
               ON CONFLICT (fingerprint) DO UPDATE
                  SET starts_at = excluded.starts_at, ends_at = NULL, annotations = excluded.annotations,
                      posted = false, updated_at = now()
                WHERE alert.ends_at IS NOT NULL AND alert.ends_at < excluded.starts_at""",
            {"fp": change.fingerprint, "labels": Jsonb(change.labels), "annotations": Jsonb(change.annotations),
             "at": change.at},
        )  # fmt: skip
    else:
        cur = await conn.execute(
            _RESOLVE_MATCHING if change.match is not None else _RESOLVE,
            {"fp": change.fingerprint, "match": Jsonb(change.match), "at": change.at},
        )
    return cur.rowcount > 0


async def pending(conn: Conn) -> list[Stored]:
    """What Alertmanager must hear (again): every firing alert, and the resolves it has not taken."""
    cur = await conn.execute(
        """SELECT fingerprint, labels, annotations, starts_at, ends_at, updated_at FROM alerting.alert
            WHERE ends_at IS NULL OR NOT posted ORDER BY starts_at, fingerprint"""
    )
    return [Stored(*row) for row in await cur.fetchall()]


async def mark_posted(conn: Conn, alerts: list[Stored]) -> None:
    """Alertmanager took these; a change made since (newer ``updated_at``) stays pending."""
    for alert in alerts:
        await conn.execute(
            "UPDATE alerting.alert SET posted = true WHERE fingerprint = %s AND updated_at = %s",
            (alert.fingerprint, alert.updated_at),
        )


async def purge(conn: Conn, days: int = KEEP_DAYS) -> int:
    cur = await conn.execute(
        "DELETE FROM alerting.alert WHERE posted AND ends_at < now() - make_interval(days => %s)", (days,)
    )
    return cur.rowcount


@dataclass(frozen=True, slots=True)
class DeviceState:
    site: str
    device: str
    state: str  # online | offline
    at: datetime  # the status message's own time


async def device_states(conn: Conn, site: str = "+") -> list[DeviceState]:
    """Each device's last status as ingest stored it (``telemetry.device``, newest by the
    device's clock): where the bridge reads device states on a NATS cluster, whose status
    messages ingest's work queue takes."""
    cur = await conn.execute(
        """SELECT site, name, status, status_at FROM telemetry.device
            WHERE status <> 'unknown' AND status_at IS NOT NULL AND (%(site)s = '+' OR site = %(site)s)
            ORDER BY site, name""",
        {"site": site},
    )
    return [DeviceState(*row) for row in await cur.fetchall()]
