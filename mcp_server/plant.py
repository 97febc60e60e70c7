"""Reads of the plant: devices, tags, anomaly episodes, asset health, OEE and production orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mcp_server.db import Conn
from mcp_server.models import (
    AssetHealth,
    Contribution,
    DeviceStatus,
    Episode,
    HealthTrend,
    MaintenanceOrder,
    OeeRow,
    ProductionOrder,
    SiteStatus,
    SparePartState,
    TagValue,
)  # fmt: skip

__all__ = [
    "asset_health",
    "episodes",
    "known_asset",
    "known_line",
    "maintenance_orders",
    "now",
    "oee_shifts",
    "production_orders",
    "sites",
    "tag_values",
]  # fmt: skip

QUALITY = {0: "good", 1: "uncertain", 2: "bad"}


async def now(conn: Conn) -> datetime:
    cur = await conn.execute("SELECT now() AS now")
    row = await cur.fetchone()
    assert row is not None
    return row["now"]  # type: ignore[no-any-return]


async def _rows(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cur = await conn.execute(query, params)  # constant SQL, values as parameters
    return await cur.fetchall()


async def known_asset(conn: Conn, asset: str) -> bool:
    rows = await _rows(
        conn,
        """SELECT 1 FROM telemetry.tag WHERE asset = %s
                                UNION ALL SELECT 1 FROM maintenance.asset_health WHERE asset = %s
                                UNION ALL SELECT 1 FROM analytics.oee WHERE line = %s LIMIT 1""",
        (asset,) * 3,
    )
    return bool(rows)


async def known_line(conn: Conn, line: str) -> bool:
    rows = await _rows(conn, "SELECT 1 FROM analytics.oee WHERE line = %s LIMIT 1", (line,))
    return bool(rows)


async def sites(conn: Conn, site: str | None, limit: int) -> list[SiteStatus]:
    """Devices (at most ``limit``) by site, with their status and edge buffer."""
    rows = await _rows(
        conn,
        """SELECT d.site, d.name, d.status, d.last_seen, b.value AS buffer_points, o.value AS buffer_oldest_s,
                  greatest(b.time, o.time) AS buffer_at
             FROM telemetry.device d
             LEFT JOIN LATERAL (SELECT s.value, s.time FROM telemetry.tag t JOIN telemetry.sample s ON s.tag_id = t.id
                                 WHERE t.device_id = d.id AND t.name = 'agent.buffer_points'
                                 ORDER BY s.time DESC LIMIT 1) b ON true
             LEFT JOIN LATERAL (SELECT s.value, s.time FROM telemetry.tag t JOIN telemetry.sample s ON s.tag_id = t.id
                                 WHERE t.device_id = d.id AND t.name = 'agent.buffer_oldest_s'
                                 ORDER BY s.time DESC LIMIT 1) o ON true
            WHERE %s::text IS NULL OR d.site = %s
            ORDER BY d.site, d.name LIMIT %s""",
        (site, site, limit),
    )
    out: dict[str, SiteStatus] = {}
    for r in rows:
        s = out.setdefault(r["site"], SiteStatus(site=r["site"], online=0, offline=0, devices=[]))
        s.devices.append(DeviceStatus(name=r["name"], status=r["status"], last_seen=r["last_seen"],
                                      buffer_points=r["buffer_points"], buffer_oldest_s=r["buffer_oldest_s"],
                                      buffer_reported_at=r["buffer_at"]))  # fmt: skip
        s.online += r["status"] == "online"
        s.offline += r["status"] == "offline"
    return list(out.values())


async def tag_values(conn: Conn, site: str | None, tags: list[str], limit: int) -> list[TagValue]:
    rows = await _rows(
        conn,
        """SELECT d.site, d.name AS device, t.name AS tag, t.asset, t.unit, s.value, s.quality, s.time
             FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
             LEFT JOIN LATERAL (SELECT value, quality, time FROM telemetry.sample
                                 WHERE tag_id = t.id ORDER BY time DESC LIMIT 1) s ON true
            WHERE t.name = ANY(%s) AND (%s::text IS NULL OR d.site = %s)
            ORDER BY t.name, d.site, d.name LIMIT %s""",
        (tags, site, site, limit),
    )
    return [TagValue(site=r["site"], device=r["device"], tag=r["tag"], asset=r["asset"], unit=r["unit"],
                     value=r["value"], quality=QUALITY.get(r["quality"]) if r["quality"] is not None else None,
                     time=r["time"]) for r in rows]  # fmt: skip


def _episode(r: dict[str, Any]) -> Episode:
    details = r["details"] or {}
    top = details.get("top") or []
    return Episode(
        id=r["id"], site=r["site"], asset=r["asset"], detector=r["detector"], tag=r["tag"],
        started_at=r["started_at"], ended_at=r["ended_at"], peak_score=r["peak_score"],
        contributions=[Contribution(tag=str(t), share=float(c)) for t, c in top],
        reason=details.get("reason"),
    )  # fmt: skip


_EPISODES = """SELECT e.id, e.site, e.asset, e.detector, t.name AS tag, e.started_at, e.ended_at, e.peak_score,
                      e.details
                 FROM analytics.anomaly_episode e LEFT JOIN telemetry.tag t ON t.id = e.tag_id"""


async def episodes(
    conn: Conn, *, asset: str | None, since: datetime | None, until: datetime | None, open_only: bool, limit: int
) -> list[Episode]:
    """Episodes overlapping [since, until) (open ones: ``open_only``), newest first, ``limit`` of them."""
    rows = await _rows(
        conn,
        _EPISODES
        + """ WHERE (%s::text IS NULL OR e.asset = %s)
                          AND (NOT %s OR e.ended_at IS NULL)
                          AND (%s::timestamptz IS NULL OR coalesce(e.ended_at, 'infinity') >= %s)
                          AND (%s::timestamptz IS NULL OR e.started_at < %s)
                        ORDER BY e.started_at DESC, e.id DESC LIMIT %s""",
        (asset, asset, open_only, since, since, until, until, limit),
    )
    return [_episode(r) for r in rows]


async def asset_health(conn: Conn, asset: str | None, trend_since: datetime) -> list[AssetHealth]:
    rows = await _rows(
        conn,
        """SELECT DISTINCT ON (h.site, h.asset) h.site, h.asset, h.time, h.model_version, h.rul, h.failure_prob,
                  f.time AS first_time, f.rul AS first_rul, f.failure_prob AS first_prob
             FROM maintenance.asset_health h
             JOIN LATERAL (SELECT a.time, a.rul, a.failure_prob
                             FROM maintenance.asset_health a
                            WHERE a.site = h.site AND a.asset = h.asset AND a.time >= %s
                            ORDER BY a.time LIMIT 1) f ON true
            WHERE %s::text IS NULL OR h.asset = %s
            ORDER BY h.site, h.asset, h.time DESC, h.model_version DESC""",
        (trend_since, asset, asset),
    )
    counts = {(r["site"], r["asset"]): r["n"] for r in await _rows(
        conn, "SELECT site, asset, count(*) AS n FROM maintenance.asset_health WHERE time >= %s GROUP BY 1, 2",
        (trend_since,))}  # fmt: skip
    return [AssetHealth(site=r["site"], asset=r["asset"], scored_at=r["time"], model_version=r["model_version"],
                        rul=r["rul"], failure_prob=r["failure_prob"],
                        trend=HealthTrend(since=r["first_time"], scores=counts.get((r["site"], r["asset"]), 0),
                                          rul_change=r["rul"] - r["first_rul"],
                                          failure_prob_change=r["failure_prob"] - r["first_prob"]))
            for r in rows]  # fmt: skip


async def maintenance_orders(conn: Conn, asset: str | None, limit: int) -> list[MaintenanceOrder]:
    rows = await _rows(
        conn,
        """SELECT w.id, erp.numbered('WO-', w.id) AS number, w.site, w.asset, w.status, w.priority, w.reason,
                  w.created_by, w.created_at,
                  coalesce((SELECT json_agg(json_build_object('sku', p.sku, 'quantity', wp.quantity,
                                                              'reserved', wp.reserved,
                                                              'backordered', wp.quantity - wp.reserved)
                                            ORDER BY wp.product_id)
                              FROM erp.work_order_part wp JOIN erp.product p ON p.id = wp.product_id
                             WHERE wp.work_order_id = w.id), '[]') AS parts
             FROM erp.work_order w
            WHERE w.kind = 'maintenance' AND w.status IN ('open', 'in_progress')
              AND (%s::text IS NULL OR w.asset = %s)
            ORDER BY w.id DESC LIMIT %s""",
        (asset, asset, limit),
    )
    return [MaintenanceOrder(id=r["id"], number=r["number"], site=r["site"], asset=r["asset"], status=r["status"],
                             priority=r["priority"], reason=r["reason"], created_by=r["created_by"],
                             created_at=r["created_at"],
                             spare_parts=[SparePartState.model_validate(p) for p in r["parts"]])
            for r in rows]  # fmt: skip


async def oee_shifts(
    conn: Conn, *, site: str | None, line: str | None, since: datetime, until: datetime, limit: int
) -> list[OeeRow]:
    rows = await _rows(
        conn,
        """SELECT site, line, shift, bucket, bucket_end, availability, performance, quality, oee, total_count,
                  good_count, work_order_id
             FROM analytics.oee
            WHERE period = 'shift' AND bucket >= %s AND bucket < %s
              AND (%s::text IS NULL OR site = %s) AND (%s::text IS NULL OR line = %s)
            ORDER BY bucket DESC, site, line LIMIT %s""",
        (since, until, site, site, line, line, limit),
    )
    return [OeeRow(site=r["site"], line=r["line"], shift=r["shift"], start=r["bucket"], end=r["bucket_end"],
                   availability=r["availability"], performance=r["performance"], quality=r["quality"],
                   oee=r["oee"], total_count=r["total_count"], good_count=r["good_count"],
                   work_order_id=r["work_order_id"]) for r in rows]  # fmt: skip


async def production_orders(conn: Conn, line: str | None, limit: int) -> list[ProductionOrder]:
    rows = await _rows(
        conn,
        """SELECT w.id, erp.numbered('WO-', w.id) AS number, w.site, w.asset, w.status, p.sku, w.planned_quantity,
                  w.produced_quantity
             FROM erp.work_order w JOIN erp.product p ON p.id = w.product_id
            WHERE w.kind = 'production' AND w.status IN ('open', 'in_progress')
              AND (%s::text IS NULL OR w.asset = %s)
            ORDER BY w.id DESC LIMIT %s""",
        (line, line, limit),
    )
    return [ProductionOrder(id=r["id"], number=r["number"], line=r["asset"], status=r["status"], sku=r["sku"],
                            planned=r["planned_quantity"], produced=r["produced_quantity"],
                            progress=float(r["produced_quantity"] / r["planned_quantity"])) for r in rows]  # fmt: skip
