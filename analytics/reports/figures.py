"""The figures of a shift or day report, read from the tables their owners keep.

Analytics' own tables (``analytics.oee``, ``analytics.oee_loss``, ``analytics.anomaly_episode``,
``analytics.production_count``) are filtered by site. The ERP and maintenance tables know
assets, not sites: their rows count when their asset belongs to the site (a line in the
site's OEE rows or configuration, or an asset of the site's telemetry tags). Sales and
invoices are the ERP's, for the whole plant. Every SQL statement here only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import psycopg

from analytics.oee import OeeConfig, ShiftCalendar, shifts_between

__all__ = [
    "AssetRisk",
    "Episode",
    "HourPoint",
    "LineOee",
    "MaintenanceOrder",
    "OrderOutput",
    "Period",
    "ReportData",
    "Sales",
    "collect",
    "day_period",
    "last_finished_shift",
    "shift_period",
]

Conn = psycopg.AsyncConnection[Any]
Kind = Literal["shift", "day"]


@dataclass(frozen=True, slots=True)
class Period:
    """What a report covers: [start, end), counted up to ``until`` (now, for one in progress)."""

    kind: Kind
    site: str
    label: str
    start: datetime
    end: datetime
    until: datetime


def shift_period(calendar: ShiftCalendar, site: str, at: datetime, now: datetime | None = None) -> Period:
    """The shift of the calendar that ``at`` falls in (or the last one before it, between shifts)."""
    t = at.timestamp()
    shifts = [s for s in shifts_between(calendar, t - 48 * 3600, t + 1) if s.start <= t]
    window = shifts[-1]
    zone = ZoneInfo(calendar.timezone)
    start, end = datetime.fromtimestamp(window.start, UTC), datetime.fromtimestamp(window.end, UTC)
    label = f"shift {window.name} of {start.astimezone(zone):%Y-%m-%d} ({start.astimezone(zone):%H:%M}-" \
            f"{end.astimezone(zone):%H:%M} {calendar.timezone})"  # fmt: skip
    return Period("shift", site, label, start, end, min(end, now or datetime.now(UTC)))


def last_finished_shift(calendar: ShiftCalendar, site: str, now: datetime) -> Period:
    """The shift that ended last at or before ``now``."""
    t = now.timestamp()
    ended = [s for s in shifts_between(calendar, t - 48 * 3600, t) if s.end <= t]
    return shift_period(calendar, site, datetime.fromtimestamp(ended[-1].start, UTC), now)


def day_period(calendar: ShiftCalendar, site: str, at: datetime, now: datetime | None = None) -> Period:
    """The calendar day (in the shift calendar's time zone) that ``at`` falls in."""
    zone = ZoneInfo(calendar.timezone)
    local = at.astimezone(zone)
    start = datetime(local.year, local.month, local.day, tzinfo=zone)
    end = datetime.combine(start.date() + timedelta(days=1), start.timetz())
    label = f"day {start:%Y-%m-%d} ({calendar.timezone})"
    return Period("day", site, label, start.astimezone(UTC), end.astimezone(UTC),
                  min(end.astimezone(UTC), now or datetime.now(UTC)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class OrderOutput:
    """A production work order that ran on one of the site's lines in the period."""

    number: str
    line: str
    product: str
    status: str
    planned: Decimal
    produced: Decimal  # the order's totals so far
    scrapped: Decimal
    progress: Decimal  # produced / planned
    good_in_period: Decimal  # what the lines' counters posted to it in the period
    scrap_in_period: Decimal


@dataclass(frozen=True, slots=True)
class LineOee:
    line: str
    availability: float
    performance: float | None
    quality: float | None
    oee: float
    planned_s: float
    run_s: float
    total: float
    good: float
    stops: int  # unplanned stops of every reason but microstops
    stop_s: float
    microstops: int
    microstop_s: float
    losses: list[tuple[str, int, float]] = field(default_factory=list)  # reason, stops, seconds


@dataclass(frozen=True, slots=True)
class HourPoint:
    line: str
    hour: datetime
    oee: float
    total: float
    good: float


@dataclass(frozen=True, slots=True)
class Episode:
    asset: str
    detector: str
    started: datetime
    ended: datetime | None
    peak_score: float
    tags: list[tuple[str, float | None]]  # the tags that moved, biggest contribution first


@dataclass(frozen=True, slots=True)
class AssetRisk:
    asset: str
    at: datetime
    rul: float
    failure_prob: float
    at_risk: bool


@dataclass(frozen=True, slots=True)
class MaintenanceOrder:
    number: str
    asset: str
    reason: str
    priority: str
    status: str
    opened: bool  # created in the period
    closed: bool  # done in the period
    backordered: list[tuple[str, Decimal]]  # part SKU, quantity still missing


@dataclass(frozen=True, slots=True)
class Sales:
    currency: str
    shipped: int
    shipped_value: Decimal  # net value of the shipped orders' lines
    invoiced: int
    invoiced_net: Decimal
    invoiced_gross: Decimal


@dataclass(frozen=True, slots=True)
class ReportData:
    period: Period
    output: list[OrderOutput]
    oee: list[LineOee]
    hours: list[HourPoint]
    episodes: list[Episode]
    assets: list[AssetRisk]
    maintenance: list[MaintenanceOrder]
    sales: Sales
    generated_at: datetime


_LINES: Final = """SELECT line FROM analytics.oee WHERE site = %(site)s AND bucket < %(end)s AND bucket_end > %(start)s
    UNION SELECT line FROM analytics.production_count
     WHERE site = %(site)s AND interval_start < %(end)s AND interval_end > %(start)s"""
_ASSETS: Final = """SELECT DISTINCT t.asset FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
    WHERE d.site = %s AND t.asset IS NOT NULL"""
_OUTPUT: Final = """SELECT erp.numbered('WO-', w.id), w.asset, p.sku, w.status, w.planned_quantity, w.produced_quantity,
           w.scrapped_quantity, round(w.produced_quantity / w.planned_quantity, 4),
           coalesce(c.good, 0), coalesce(c.scrap, 0)
      FROM erp.work_order w JOIN erp.product p ON p.id = w.product_id
      LEFT JOIN (SELECT work_order_id, sum(good) AS good, sum(scrap) AS scrap FROM analytics.production_count
                  WHERE site = %(site)s AND outcome = 'posted' AND interval_start >= %(start)s
                    AND interval_end <= %(end)s
                  GROUP BY work_order_id) c ON c.work_order_id = w.id
     WHERE w.kind = 'production' AND w.asset = ANY(%(lines)s) AND (w.site = %(site)s OR w.site IS NULL)
       AND ((w.started_at < %(end)s AND (w.finished_at IS NULL OR w.finished_at > %(start)s))
            OR c.work_order_id IS NOT NULL)
     ORDER BY w.asset, w.id"""
# One formula for a shift and a day: the period's shift rows summed (a shift has one per line).
_OEE: Final = """SELECT line, sum(run_s) / nullif(sum(planned_s), 0),
           sum(total_count * 3600 / ideal_rate) / nullif(sum(run_s), 0),
           sum(good_count) / nullif(sum(total_count), 0),
           sum(planned_s), sum(run_s), sum(total_count), sum(good_count)
      FROM analytics.oee
     WHERE site = %(site)s AND period = 'shift' AND bucket >= %(start)s AND bucket < %(end)s
     GROUP BY line ORDER BY line"""
_LOSSES: Final = """SELECT line, reason, sum(stops)::int, sum(seconds) FROM analytics.oee_loss
     WHERE site = %(site)s AND period = 'shift' AND bucket >= %(start)s AND bucket < %(end)s
     GROUP BY line, reason ORDER BY line, sum(seconds) DESC"""
_HOURS: Final = """SELECT line, bucket, oee, total_count, good_count FROM analytics.oee
     WHERE site = %(site)s AND period = 'hour' AND bucket >= %(start)s AND bucket < %(end)s
     ORDER BY line, bucket"""
_EPISODES: Final = """SELECT asset, detector, started_at, ended_at, peak_score, details FROM analytics.anomaly_episode
     WHERE site = %(site)s AND started_at < %(until)s AND (ended_at IS NULL OR ended_at > %(start)s)
     ORDER BY started_at, id"""
_HEALTH: Final = """SELECT DISTINCT ON (asset) asset, time, rul, failure_prob FROM maintenance.asset_health
     WHERE asset = ANY(%(assets)s) AND site IN (%(site)s, '') AND time <= %(until)s
     ORDER BY asset, time DESC, model_version DESC"""
_MAINTENANCE: Final = """SELECT erp.numbered('WO-', w.id), w.asset, w.reason, w.priority, w.status,
           w.created_at >= %(start)s AND w.created_at < %(end)s,
           w.status = 'done' AND w.finished_at >= %(start)s AND w.finished_at < %(end)s,
           coalesce((SELECT json_agg(json_build_array(p.sku, (x.quantity - x.reserved)::text) ORDER BY p.sku)
                       FROM erp.work_order_part x JOIN erp.product p ON p.id = x.product_id
                      WHERE x.work_order_id = w.id AND x.reserved < x.quantity
                        AND w.status IN ('open', 'in_progress')), '[]')
      FROM erp.work_order w
     WHERE w.kind = 'maintenance' AND w.asset = ANY(%(assets)s) AND (w.site = %(site)s OR w.site IS NULL)
       AND ((w.created_at >= %(start)s AND w.created_at < %(end)s)
            OR (w.status = 'done' AND w.finished_at >= %(start)s AND w.finished_at < %(end)s))
     ORDER BY w.id"""
_SHIPPED: Final = """SELECT count(DISTINCT o.id), coalesce(sum(round(l.quantity * l.unit_price, 2)), 0)
      FROM erp.sales_order o JOIN erp.sales_order_line l ON l.order_id = o.id
     WHERE o.shipped_at >= %(start)s AND o.shipped_at < %(end)s"""
_INVOICED: Final = """SELECT count(*), coalesce(sum(net), 0), coalesce(sum(gross), 0) FROM erp.invoice
     WHERE kind = 'invoice' AND created_at >= %(start)s AND created_at < %(end)s"""


def _episode_tags(details: dict[str, Any]) -> list[tuple[str, float | None]]:
    """The multivariate detector names its top contributions; a per-tag check names its tag."""
    if isinstance(top := details.get("top"), list):
        return [(str(t), float(c)) for t, c in top]
    if isinstance(contributions := details.get("contributions"), dict):
        ranked = sorted(contributions.items(), key=lambda p: -float(p[1]))[:3]
        return [(str(t), float(c)) for t, c in ranked]
    return [(str(details["tag"]), None)] if details.get("tag") else []


async def _rows(conn: Conn, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return list(await cur.fetchall())


async def _oee(conn: Conn, params: dict[str, Any], microstop: str = "microstop") -> list[LineOee]:
    losses: dict[str, list[tuple[str, int, float]]] = {}
    for line, reason, stops, seconds in await _rows(conn, _LOSSES, params):
        losses.setdefault(line, []).append((str(reason), int(stops), float(seconds)))
    out = []
    for line, avail, perf, qual, planned, run, total, good in await _rows(conn, _OEE, params):
        mine = losses.get(line, [])
        micro = [loss for loss in mine if loss[0] == microstop]
        other = [loss for loss in mine if loss[0] != microstop]
        a = float(avail or 0.0)
        p = None if perf is None else float(perf)
        q = None if qual is None else float(qual)
        out.append(LineOee(
            str(line), a, p, q, a * p * q if p is not None and q is not None else 0.0, float(planned), float(run),
            float(total), float(good), sum(s for _, s, _ in other), sum(x for _, _, x in other),
            sum(s for _, s, _ in micro), sum(x for _, _, x in micro), mine,
        ))  # fmt: skip
    return out


async def collect(conn: Conn, period: Period, config: OeeConfig, *, failure_prob: float = 0.5) -> ReportData:
    """Everything the report shows for ``period``; assets at or above ``failure_prob`` are at risk."""
    params: dict[str, Any] = {"site": period.site, "start": period.start, "end": period.end, "until": period.until}
    lines = {str(r[0]) for r in await _rows(conn, _LINES, params)}
    lines |= {line.name for line in config.lines if line.site in (None, period.site)}
    cur = await conn.execute(_ASSETS, (period.site,))
    assets = {str(r[0]) for r in await cur.fetchall()} | lines
    params |= {"lines": sorted(lines), "assets": sorted(assets)}
    output = [OrderOutput(*r) for r in await _rows(conn, _OUTPUT, params)]
    hours = [HourPoint(str(line), bucket, float(oee), float(total), float(good))
             for line, bucket, oee, total, good in await _rows(conn, _HOURS, params)]  # fmt: skip
    episodes = [Episode(str(a), str(d), s, e, float(p), _episode_tags(details))
                for a, d, s, e, p, details in await _rows(conn, _EPISODES, params)]  # fmt: skip
    health = [AssetRisk(str(a), t, float(rul), float(fp), float(fp) >= failure_prob)
              for a, t, rul, fp in await _rows(conn, _HEALTH, params)]  # fmt: skip
    health.sort(key=lambda h: (-h.failure_prob, h.rul))
    maintenance = [MaintenanceOrder(str(n), str(a), str(r), str(pr), str(s), bool(o), bool(c),
                                    [(str(sku), Decimal(q)) for sku, q in parts])
                   for n, a, r, pr, s, o, c, parts in await _rows(conn, _MAINTENANCE, params)]  # fmt: skip
    cur = await conn.execute("SELECT currency FROM erp.company LIMIT 1")
    currency = (row := await cur.fetchone()) and str(row[0]).strip()
    ((shipped, value),) = await _rows(conn, _SHIPPED, params)
    ((invoiced, net, gross),) = await _rows(conn, _INVOICED, params)
    sales = Sales(currency or "", int(shipped), Decimal(value), int(invoiced), Decimal(net), Decimal(gross))
    return ReportData(period, output, await _oee(conn, params), hours, episodes, health, maintenance, sales,
                      datetime.now(UTC))  # fmt: skip
