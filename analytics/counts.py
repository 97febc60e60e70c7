"""Production counts: the lines' counters become produced quantity on their running work orders.

Per configured line and site, time is cut into fixed intervals (``CountsConfig.interval_s``,
aligned to the epoch). An interval is taken once its end is ``settle_s`` old, so late
telemetry has arrived. Its count is the counter's increase (``oee.counter_increase``: a drop
is a reset, a drop across the line's ``counter_modulus`` a wrap-around); scrap comes from
the line's reject counter, or is count minus the good counter's increase. The production
work order that ran on the line last in the interval (``oee.running_work_order``, the same
order OEE names) gets the good units and the scrap through the ERP's API, under an
Idempotency-Key made of (work order, site, line, interval): repeating an interval, losing the
local record after the ERP call, or a second instance of the job cannot count it twice,
because the ERP answers the same key with its first reply.

Every interval processed is one row of ``analytics.production_count``: posted, or why not
(no order, order already closed, no increase, or the ERP's refusal). Each run starts after
the line's last recorded interval. An ERP that cannot be reached, or refuses for want of
component stock, stops the line's run there; the next run tries the same interval again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, Literal

from psycopg.types.json import Jsonb

from analytics.erp import ErpAccess, ErpClient, ErpReply
from analytics.errors import ErpError
from analytics.oee import (
    Conn,
    CountsConfig,
    LineConfig,
    OeeConfig,
    Series,
    counter_increase,
    line_tags,
    running_work_order,
    tag_series,
)

__all__ = ["CountsJob", "CountsSummary", "IntervalCount", "count_interval", "idempotency_key"]

log = logging.getLogger(__name__)

Outcome = Literal["posted", "no_order", "order_closed", "no_increase", "conflict", "refused"]
_PLACES: Final = Decimal("0.001")  # the ERP keeps quantities to 3 places
_RETRY_LATER: Final = frozenset({"insufficient-stock"})  # refusals that stock arriving later resolves

_LAST = """SELECT extract(epoch FROM interval_end)::float8 FROM analytics.production_count
           WHERE site = %s AND line = %s ORDER BY interval_start DESC LIMIT 1"""
_RECORD = """INSERT INTO analytics.production_count (site, line, interval_start, interval_end, work_order_id, count,
                 good, scrap, outcome, idempotency_key, posted_at, reply_status, reply)
             VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
             ON CONFLICT (site, line, interval_start) DO NOTHING"""


@dataclass(frozen=True, slots=True)
class IntervalCount:
    """What a line made in one interval, rounded to the ERP's 3 places: everything, good, scrap."""

    count: Decimal
    good: Decimal
    scrap: Decimal


def _quantity(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_PLACES, rounding=ROUND_HALF_EVEN)


def count_interval(line: LineConfig, counts: Series, quality: Series, start: float, end: float) -> IntervalCount:
    """The line's output in (start, end]. Scrap from the reject counter, or count minus the good
    counter; kept within [0, count] (the two counters may be sampled a moment apart)."""
    total = counter_increase(counts, start, end, line.counter_modulus, line.wrap_band)
    extra = counter_increase(quality, start, end, line.counter_modulus, line.wrap_band)
    scrap = extra if line.reject_tag else total - extra if line.good_tag else 0.0
    count = _quantity(total)
    scrap_q = min(max(_quantity(scrap), Decimal(0)), count)
    return IntervalCount(count, count - scrap_q, scrap_q)


def idempotency_key(work_order: int, site: str, line: str, start: float, end: float) -> str:
    """The same key whenever this interval of this line goes to this order, and no other's."""
    key = f"production-count:wo{work_order}:{site}:{line}:{int(start)}-{int(end)}"
    if len(key) <= 255:
        return key
    digest = hashlib.sha256(f"{site}\n{line}".encode()).hexdigest()[:32]
    return f"production-count:wo{work_order}:{digest}:{int(start)}-{int(end)}"


@dataclass(slots=True)
class CountsSummary:
    lines: int = 0
    intervals: int = 0
    posted: int = 0
    quantity: Decimal = Decimal(0)  # good units posted in this run
    scrap: Decimal = Decimal(0)
    outcomes: dict[str, int] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # line/site stopped at an interval to try again

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "intervals": self.intervals, "posted": self.posted,
                "quantity": str(self.quantity), "scrap": str(self.scrap), "outcomes": dict(self.outcomes),
                "waiting": list(self.waiting)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Line:
    line: LineConfig
    site: str
    ids: dict[str, list[int]]  # tag name -> ids at the site


@dataclass(frozen=True, slots=True)
class _Interval:
    site: str
    line: LineConfig
    start: float
    end: float


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class CountsJob:
    """One pass per ``run`` over the configured lines (``OeeConfig.lines``) and their sites."""

    def __init__(self, config: OeeConfig, erp: ErpAccess, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.settings: CountsConfig = config.counts
        self.erp = erp
        self.clock = clock

    def settled_until(self) -> float:
        """The end of the newest interval whose end is at least ``settle_s`` old."""
        step = self.settings.interval_s
        return math.floor((self.clock() - self.settings.settle_s) / step) * step

    async def run(self, conn: Conn) -> CountsSummary:
        """Every line's settled intervals. Raises ErpError at the end when a line had to stop at an
        interval (the ERP away or short of stock), so the run counts as failed on /healthz."""
        summary = CountsSummary()
        until = self.settled_until()
        async with ErpClient(self.erp, timeout_s=self.settings.timeout_s) as client:
            for line in self.config.lines:
                names = [n for n in (line.count_tag, line.good_tag or line.reject_tag) if n]
                by_site = await line_tags(conn, line, names)
                for site, ids in sorted(by_site.items()):
                    if any(name not in ids for name in names):
                        log.warning("production counts: line %s at site %s lacks a tag of %s", line.name, site, names)
                        continue
                    summary.lines += 1
                    await self._line(conn, client, _Line(line, site, ids), until, summary)
        if summary.waiting:
            raise ErpError(f"production counts wait for the ERP at {', '.join(summary.waiting)}: {summary.as_dict()}")
        return summary

    async def _start(self, conn: Conn, line: LineConfig, site: str, until: float) -> float:
        cur = await conn.execute(_LAST, (site, line.name))
        row = await cur.fetchone()
        if row is not None:
            return float(row[0])
        step = self.settings.interval_s
        return math.floor((until - self.settings.lookback_s) / step) * step

    async def _line(self, conn: Conn, client: ErpClient, where: _Line, until: float, summary: CountsSummary) -> None:
        line, site, ids = where.line, where.site, where.ids
        step = self.settings.interval_s
        start = await self._start(conn, line, site, until)
        end = min(until, start + self.settings.max_intervals * step)
        if end <= start:
            return
        extra = line.good_tag or line.reject_tag
        counts = await tag_series(conn, ids[line.count_tag], start, end)
        quality = await tag_series(conn, ids[extra], start, end) if extra else []
        at = start
        while at < end:
            interval = _Interval(site, line, at, at + step)
            made = count_interval(line, counts, quality, interval.start, interval.end)
            if not await self._interval(conn, client, interval, made, summary):
                summary.waiting.append(f"{line.name}@{site}")
                return
            at += step

    async def _interval(
        self, conn: Conn, client: ErpClient, interval: _Interval, made: IntervalCount, summary: CountsSummary
    ) -> bool:
        """Post and record one interval; False when it is to be tried again on the next run."""
        order = await running_work_order(conn, interval.line.name, interval.site, (interval.start, interval.end))
        reply: ErpReply | None = None
        key: str | None = None
        if order is None:
            outcome: Outcome = "no_order"
        elif made.count <= 0:
            outcome = "no_increase"
        elif order.status != "in_progress":
            outcome = "order_closed"
        else:
            key = idempotency_key(order.id, interval.site, interval.line.name, interval.start, interval.end)
            try:
                reply = await client.produce(order.id, made.good, made.scrap, key=key)
            except ErpError as exc:
                log.error("production counts: %s@%s: %s", interval.line.name, interval.site, exc)
                return False
            if reply.problem in _RETRY_LATER:
                log.error("production counts: work order %d refused %s@%s %s: %s", order.id, interval.line.name,
                          interval.site, _ts(interval.start).isoformat(), reply.describe())  # fmt: skip
                return False
            outcome = _outcome(reply)
        await conn.execute(_RECORD, (
            interval.site, interval.line.name, _ts(interval.start), _ts(interval.end), order.id if order else None,
            made.count, made.good, made.scrap, outcome, key, datetime.now(UTC) if reply else None,
            reply.status if reply else None, Jsonb(reply.body) if reply else None,
        ))  # fmt: skip
        summary.intervals += 1
        summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1
        if outcome == "posted":
            summary.posted += 1
            summary.quantity += made.good
            summary.scrap += made.scrap
        elif reply is not None:
            log.warning("production counts: %s@%s %s to work order %s: %s", interval.line.name, interval.site,
                        _ts(interval.start).isoformat(), order.id if order else None, reply.describe())  # fmt: skip
        return True


def _outcome(reply: ErpReply) -> Outcome:
    if reply.status < 300:
        return "posted"
    if reply.problem == "idempotency-key-reused":
        # This interval was posted to this order before with another count (its samples changed
        # after the local record was lost): the ERP keeps the first; it is not counted again.
        return "conflict"
    return "refused"
