"""All SQL of the live anomaly job: it reads ``telemetry.*`` and writes ``analytics.*``.

Methods run inside the caller's transaction. Timestamps cross this boundary as epoch
seconds (float), which is what the numpy side works in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

__all__ = [
    "AnomalyRow",
    "AssetState",
    "AssetTags",
    "TagRow",
    "close_episode",
    "emit",
    "fetch_samples",
    "flag_earlier",
    "last_sample",
    "list_assets",
    "load_state",
    "open_episode",
    "save_state",
    "to_datetime",
    "write_anomalies",
]

Conn = psycopg.AsyncConnection[Any]
Series = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # times (s), values


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class TagRow:
    id: int
    name: str
    data_type: str


@dataclass(frozen=True, slots=True)
class AssetTags:
    site: str
    asset: str
    tags: tuple[TagRow, ...]


async def list_assets(conn: Conn, site: str | None, assets: Sequence[str] | None) -> list[AssetTags]:
    """Every asset with its tags, from the tag catalog ingest keeps."""
    cur = await conn.execute(
        """SELECT d.site, t.asset, t.id, t.name, t.data_type
           FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
           WHERE (%(site)s::text IS NULL OR d.site = %(site)s)
             AND (%(assets)s::text[] IS NULL OR t.asset = ANY(%(assets)s::text[]))
           ORDER BY d.site, t.asset, t.name""",
        {"site": site, "assets": list(assets) if assets is not None else None},
    )
    grouped: dict[tuple[str, str], list[TagRow]] = {}
    for s, a, tag_id, name, data_type in await cur.fetchall():
        grouped.setdefault((s, a), []).append(TagRow(tag_id, name, data_type))
    return [AssetTags(s, a, tuple(tags)) for (s, a), tags in grouped.items()]


async def fetch_samples(conn: Conn, tag_ids: Sequence[int], after: float, until: float) -> dict[int, Series]:
    """Samples of good or uncertain quality in (after, until], oldest first; NULL values are NaN."""
    cur = await conn.execute(
        """SELECT tag_id, extract(epoch FROM time)::float8, value FROM telemetry.sample
           WHERE tag_id = ANY(%s) AND time > %s AND time <= %s AND quality < 2
           ORDER BY tag_id, time""",
        (list(tag_ids), to_datetime(after), to_datetime(until)),
    )
    rows = await cur.fetchall()
    out: dict[int, Series] = {}
    if not rows:
        return out
    ids = np.array([r[0] for r in rows])
    times = np.array([r[1] for r in rows], dtype=np.float64)
    values = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
    starts = np.flatnonzero(np.diff(ids, prepend=-1))
    for start, stop in zip(starts, [*starts[1:], len(ids)], strict=True):
        out[int(ids[start])] = (times[start:stop], values[start:stop])
    return out


async def last_sample(conn: Conn, tag_id: int, at: float) -> Series:
    """The tag's last sample at or before ``at`` (an empty series if it has none)."""
    cur = await conn.execute(
        """SELECT extract(epoch FROM time)::float8, value FROM telemetry.sample
           WHERE tag_id = %s AND time <= %s AND quality < 2 ORDER BY time DESC LIMIT 1""",
        (tag_id, to_datetime(at)),
    )
    row = await cur.fetchone()
    if row is None:
        return np.zeros(0), np.zeros(0)
    return np.array([row[0]], dtype=np.float64), np.array([np.nan if row[1] is None else row[1]], dtype=np.float64)


@dataclass(slots=True)
class AssetState:
    """One row of analytics.detector_state."""

    site: str
    asset: str
    tag_ids: list[int]
    model: str  # Model.to_json()
    stream: dict[str, Any]
    checks: dict[str, Any]
    healthy_from: float
    healthy_to: float
    trained_at: float
    scored_until: float


async def load_state(conn: Conn, site: str, asset: str) -> AssetState | None:
    cur = await conn.execute(
        """SELECT tag_ids, model, stream, checks, extract(epoch FROM healthy_from)::float8,
                  extract(epoch FROM healthy_to)::float8, extract(epoch FROM trained_at)::float8,
                  extract(epoch FROM scored_until)::float8
           FROM analytics.detector_state WHERE site = %s AND asset = %s FOR UPDATE""",
        (site, asset),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    tag_ids, model, stream, checks, healthy_from, healthy_to, trained_at, scored_until = row
    return AssetState(site, asset, list(tag_ids), json.dumps(model), stream, checks,
                      healthy_from, healthy_to, trained_at, scored_until)  # fmt: skip


async def save_state(conn: Conn, state: AssetState) -> None:
    await conn.execute(
        """INSERT INTO analytics.detector_state
               (site, asset, tag_ids, model, stream, checks, healthy_from, healthy_to, trained_at, scored_until)
           VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (site, asset) DO UPDATE SET
               tag_ids = EXCLUDED.tag_ids, model = EXCLUDED.model, stream = EXCLUDED.stream,
               checks = EXCLUDED.checks, healthy_from = EXCLUDED.healthy_from, healthy_to = EXCLUDED.healthy_to,
               trained_at = EXCLUDED.trained_at, scored_until = EXCLUDED.scored_until""",
        (state.site, state.asset, state.tag_ids, state.model, Jsonb(state.stream), Jsonb(state.checks),
         to_datetime(state.healthy_from), to_datetime(state.healthy_to), to_datetime(state.trained_at),
         to_datetime(state.scored_until)),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    time: float
    site: str
    asset: str
    tag_id: int | None
    detector: str
    score: float
    _: KW_ONLY
    is_anomaly: bool
    details: dict[str, Any]


async def write_anomalies(conn: Conn, rows: Sequence[AnomalyRow]) -> None:
    """Idempotent: a point scored twice (a retried run) keeps its first row."""
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO analytics.anomaly (time, site, asset, tag_id, detector, score, is_anomaly, details)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT ON CONSTRAINT anomaly_key DO NOTHING""",
            [(to_datetime(r.time), r.site, r.asset, r.tag_id, r.detector, r.score, r.is_anomaly, Jsonb(r.details))
             for r in rows],
        )  # fmt: skip


async def flag_earlier(conn: Conn, site: str, asset: str, detector: str, *, start: float, end: float) -> None:
    """Rows of an asset-wide detector already written in [start, end) become anomalous: an
    episode that opened later took them in (its change began among them)."""
    await conn.execute(
        """UPDATE analytics.anomaly SET is_anomaly = true
           WHERE site = %s AND asset = %s AND detector = %s AND tag_id IS NULL
             AND time >= %s AND time < %s AND NOT is_anomaly""",
        (site, asset, detector, to_datetime(start), to_datetime(end)),
    )


async def open_episode(  # noqa: PLR0917 - one column each
    conn: Conn, site: str, asset: str, tag_id: int | None, detector: str, started: float, score: float,
    details: dict[str, Any],
) -> int:  # fmt: skip
    cur = await conn.execute(
        """INSERT INTO analytics.anomaly_episode (site, asset, tag_id, detector, started_at, peak_score, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (site, asset, tag_id, detector, to_datetime(started), score, Jsonb(details)),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def close_episode(conn: Conn, episode_id: int, ended: float | None, peak: float) -> None:
    """Record the peak so far; with ``ended`` the episode is over."""
    await conn.execute(
        """UPDATE analytics.anomaly_episode SET ended_at = %s, peak_score = GREATEST(peak_score, %s)
           WHERE id = %s""",
        (to_datetime(ended) if ended is not None else None, peak, episode_id),
    )


async def emit(conn: Conn, kind: str, payload: dict[str, Any]) -> None:
    """Queue an event for factory/v1/events/{kind}, in the caller's transaction."""
    await conn.execute("INSERT INTO analytics.outbox (kind, payload) VALUES (%s, %s)", (kind, Jsonb(payload)))
