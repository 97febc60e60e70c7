"""The tools' results: typed documents (their JSON Schema is each tool's output schema).

Every result says ``as_of``: the database's clock when the answer was read (one snapshot per
call); rows carry their own times (last seen, bucket, scored at) beside it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgingRow", "AnomalyReport", "AssetHealth", "BusinessReport", "Contribution", "DeviceStatus", "Episode",
    "HealthTrend", "HourlyOutput", "MaintenanceOrder", "MaintenanceReport", "MaintenanceWindow", "OeeRow",
    "OpenOrder", "OpenedWorkOrder", "PlantStatus", "ProductionOrder", "ProductionReport", "ReorderRow",
    "RevenuePeriod", "ScheduleResult", "ShiftReport", "SiteStatus", "SparePartState", "TagValue",
]  # fmt: skip


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceStatus(Doc):
    name: str
    status: Literal["unknown", "online", "offline", "retired"]
    last_seen: datetime | None
    buffer_points: float | None = Field(description="agent.buffer_points: points waiting in the edge buffer")
    buffer_oldest_s: float | None = Field(description="agent.buffer_oldest_s: age of the oldest buffered point")
    buffer_reported_at: datetime | None


class SiteStatus(Doc):
    site: str
    online: int
    offline: int
    devices: list[DeviceStatus]


class TagValue(Doc):
    site: str
    device: str
    tag: str
    asset: str
    unit: str | None
    value: float | None
    quality: Literal["good", "uncertain", "bad"] | None
    time: datetime | None  # None: the tag has no sample yet


class Contribution(Doc):
    tag: str
    share: float = Field(description="the tag's part of the episode's opening score")


class Episode(Doc):
    id: int
    site: str
    asset: str
    detector: str
    tag: str | None
    started_at: datetime
    ended_at: datetime | None  # None: still open
    peak_score: float
    contributions: list[Contribution]
    reason: str | None


class PlantStatus(Doc):
    as_of: datetime
    sites: list[SiteStatus]
    tags: list[TagValue]
    open_episodes: list[Episode]


class AnomalyReport(Doc):
    as_of: datetime
    since: datetime
    until: datetime
    episodes: list[Episode]
    truncated: bool = Field(description="more episodes matched than the limit")


class HealthTrend(Doc):
    since: datetime
    scores: int
    rul_change: float = Field(description="newest minus oldest RUL in the trend window")
    failure_prob_change: float


class AssetHealth(Doc):
    site: str = Field(description="the asset's site ('' for scores made before scores had one)")
    asset: str
    scored_at: datetime
    model_version: int
    rul: float
    failure_prob: float
    trend: HealthTrend


class SparePartState(Doc):
    sku: str
    quantity: Decimal
    reserved: Decimal
    backordered: Decimal


class MaintenanceOrder(Doc):
    id: int
    number: str
    site: str | None = Field(description="the site the order names (none on orders made before orders had one)")
    asset: str
    status: Literal["open", "in_progress"]
    priority: str
    reason: str | None
    created_by: str
    created_at: datetime
    spare_parts: list[SparePartState]


class MaintenanceReport(Doc):
    as_of: datetime
    assets: list[AssetHealth]
    open_work_orders: list[MaintenanceOrder]


class OeeRow(Doc):
    site: str
    line: str
    shift: str
    start: datetime
    end: datetime
    availability: float
    performance: float | None
    quality: float | None
    oee: float
    total_count: float
    good_count: float
    work_order_id: int | None


class ProductionOrder(Doc):
    id: int
    number: str
    line: str
    status: str
    sku: str
    planned: Decimal
    produced: Decimal
    progress: float = Field(description="produced / planned")


class ProductionReport(Doc):
    as_of: datetime
    since: datetime
    until: datetime
    shifts: list[OeeRow]
    orders: list[ProductionOrder]


class ReorderRow(Doc):
    sku: str
    warehouse: str
    available: Decimal
    on_order: Decimal
    back_ordered: Decimal
    reorder_point: Decimal
    suggested_quantity: Decimal
    supplier: str | None
    needed_by: datetime | None
    reasons: list[str]


class OpenOrder(Doc):
    id: int
    number: str
    customer: str
    status: Literal["draft", "confirmed", "shipped"]
    created_at: datetime
    net: Decimal


class AgingRow(Doc):
    customer: str
    current: Decimal
    days_1_30: Decimal
    days_31_60: Decimal
    days_61_90: Decimal
    over_90: Decimal
    total: Decimal


class RevenuePeriod(Doc):
    start: datetime
    invoices: int
    net: Decimal = Field(description="invoiced net, less credit notes")


class BusinessReport(Doc):
    as_of: datetime
    currency: str
    below_reorder: list[ReorderRow]
    open_orders: list[OpenOrder]
    receivables: list[AgingRow] | None = Field(description="None: the caller's role may not see receivables")
    revenue: list[RevenuePeriod] | None = Field(description="None: the caller's role may not see revenue")


class ForecastHour(Doc):
    start: datetime
    expected: float = Field(description="expected output in the hour (the line's count unit)")
    lower: float = Field(description="80 % prediction interval, lower bound")
    upper: float = Field(description="80 % prediction interval, upper bound")


class OrderForecast(Doc):
    work_order: str
    remaining: float
    due: datetime = Field(description="the order's planned end: started + planned quantity / ideal rate")
    expected_finish: datetime | None = Field(description="None when the forecast's horizon ends first")
    earliest_finish: datetime | None
    latest_finish: datetime | None
    on_time_probability: float
    verdict: Literal["on_time", "at_risk", "late", "done"]


class ProductionForecast(Doc):
    as_of: datetime
    site: str
    line: str
    level: float = Field(description="the interval's coverage (0.8)")
    basis: str
    hours: list[ForecastHour]
    orders: list[OrderForecast] = Field(description="production orders in progress on the line")


class HourlyOutput(Doc):
    start: datetime
    expected: float = Field(description="expected output in the hour (the line's count unit)")


class MaintenanceWindow(Doc):
    start: datetime
    end: datetime
    expected_output: float = Field(description="output expected in the window, i.e. what maintenance then costs")
    basis: str = Field(description="where the expected output comes from")


class OpenedWorkOrder(Doc):
    id: int
    number: str
    status: str
    idempotency_key: str
    replayed: bool = Field(description="True: the ERP had opened it on an earlier call with the same key")
    backordered: dict[str, Decimal]


class ScheduleResult(Doc):
    as_of: datetime
    asset: str
    line: str
    health: AssetHealth | None
    window: MaintenanceWindow
    expected_by_hour: list[HourlyOutput]
    work_order: OpenedWorkOrder | None


class ShiftReport(Doc):
    as_of: datetime
    site: str
    shift: str
    start: datetime
    end: datetime
    lines: list[OeeRow]
    episodes: list[Episode]
    maintenance_orders_opened: int
    text: str
