"""Which domain events and device states become which alerts: pure functions, no I/O.

Each message yields at most one ``Change``: an alert to fire, or one to resolve, named by
its label set. Labels come only from the message (the event's data, the status topic), so
the same fact always gives the same label set: Alertmanager's deduplication and the
bridge's own table (``alerting.store``) both rely on it. What changes between messages of
one alert (scores, the order's status) goes into annotations, never into labels.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode

from factory import wire

__all__ = [
    "ANOMALY",
    "DEVICE_OFFLINE",
    "EVENT_KINDS",
    "STATUS_FILTER",
    "STOCK_LOW",
    "Change",
    "LinkBase",
    "changes_for",
    "device_change",
    "fingerprint",
]

# The alerts the bridge raises (docs/alerts.md has a section for each).
ANOMALY: Final = "AnomalyEpisode"
ASSET_AT_RISK: Final = "AssetAtRisk"
MAINTENANCE_OPEN: Final = "MaintenanceWorkOrderOpen"
STOCK_LOW: Final = "StockBelowReorder"
DEVICE_OFFLINE: Final = "DeviceOffline"

# The event kinds the bridge reads (its broker account may read exactly these) and the
# devices' retained status, which is where a device's online/offline state lives.
EVENT_KINDS: Final = (
    "anomaly",
    "work_order.created",
    "work_order.completed",
    "work_order.cancelled",
    "inventory.received",
    "inventory.adjusted",
    "inventory.transferred",
    "stock.reorder_crossed",
)
STATUS_FILTER: Final = "factory/v1/+/+/status"
# maintenance_models opens its orders with this cause at the start of the reason.
RISK_CAUSE: Final = "predicted failure"
_STATUS = re.compile(r"^factory/v1/(?P<site>[a-z0-9][a-z0-9_-]{0,62})/(?P<device>[a-z0-9][a-z0-9_-]{0,62})/status$")


@dataclass(frozen=True, slots=True)
class LinkBase:
    """Where dashboard links in annotations point (Grafana's root URL)."""

    grafana_url: str = "http://localhost:3000"

    def asset(self, asset: str) -> str:
        """The asset detail dashboard on ``asset`` (its one variable)."""
        return f"{self.grafana_url.rstrip('/')}/d/factory-asset?{urlencode({'var-asset': asset})}"

    def dashboard(self, uid: str) -> str:
        return f"{self.grafana_url.rstrip('/')}/d/{uid}"


@dataclass(frozen=True, slots=True)
class Change:
    """Fire or resolve the alert with ``labels``, as of ``at``. A resolve with ``match``
    resolves every firing alert whose labels include those: a work order's priority (and
    with it the severity) may have changed between its opening and its end."""

    action: Literal["fire", "resolve"]
    labels: dict[str, str]
    at: datetime
    annotations: dict[str, str]
    match: dict[str, str] | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _labels(**values: object) -> dict[str, str]:
    """Labels with a value: an empty label is no label to Alertmanager, so leave it out."""
    return {k: str(v) for k, v in values.items() if v is not None and str(v) != ""}


def _when(value: object, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def _anomaly(event: dict[str, Any], at: datetime, links: LinkBase) -> Change | None:
    data = event.get("data")
    if not isinstance(data, dict) or data.get("state") not in ("start", "end") or data.get("episode") is None:
        return None
    site, asset = str(data.get("site") or ""), str(data.get("asset") or "")
    labels = _labels(alertname=ANOMALY, severity="warning", site=site, asset=asset, detector=data.get("detector"),
                     tag=data.get("tag"), episode=data["episode"])  # fmt: skip
    if data["state"] == "end":
        return Change("resolve", labels, _when(data.get("at"), at), {})
    top = data.get("top")
    tags = [f"{t[0]} ({t[1]})" for t in top if isinstance(t, list) and len(t) == 2] if isinstance(top, list) else []
    what = f"tag {data['tag']}" if data.get("tag") else "the asset's tags together"
    annotations = {
        "summary": f"Anomaly on {asset} at {site}: {what} left normal ({data.get('detector')})",
        "description": f"score {data.get('score')}" + (f"; {data['reason']}" if data.get("reason") else ""),
        "top_tags": ", ".join(tags) or str(data.get("tag") or ""),
        "dashboard": links.asset(asset),
    }
    return Change("fire", labels, _when(data.get("at"), at), {k: v for k, v in annotations.items() if v})


def _work_order(event: dict[str, Any], at: datetime, links: LinkBase) -> Change | None:
    order = event.get("data")
    if not isinstance(order, dict) or order.get("kind") != "maintenance" or not order.get("number"):
        return None
    reason = str(order.get("reason") or "")
    name = ASSET_AT_RISK if reason.startswith(RISK_CAUSE) else MAINTENANCE_OPEN
    severity = "critical" if order.get("priority") == "urgent" else "warning"
    labels = _labels(
        alertname=name, severity=severity, site=order.get("site"), asset=order.get("asset"), work_order=order["number"]
    )
    if event.get("kind") != "work_order.created":
        return Change("resolve", labels, at, {}, match={"work_order": str(order["number"])})
    annotations = {
        "summary": f"{order['number']} ({order.get('priority')}) on {order.get('asset')}: {reason}"[:500],
        "dashboard": links.dashboard("factory-maintenance"),
    }
    return Change("fire", labels, at, annotations)


def _stock(event: dict[str, Any], at: datetime, links: LinkBase) -> list[Change]:
    """One change per stock level the event carries (a transfer has both ends)."""
    data = event.get("data")
    levels = data.get("stock") if isinstance(data, dict) else None
    changes = []
    for level in levels if isinstance(levels, list) else []:
        if not isinstance(level, dict) or not level.get("sku") or not isinstance(level.get("below_reorder"), bool):
            continue
        labels = _labels(alertname=STOCK_LOW, severity="warning", sku=level["sku"],
                         warehouse=level.get("warehouse_code"))  # fmt: skip
        if not level["below_reorder"]:
            changes.append(Change("resolve", labels, at, {}))
            continue
        annotations = {
            "summary": f"{level['sku']} in {level.get('warehouse_code')} is below its reorder point"
            f" {level.get('reorder_point')}: {level.get('available')} available",
            "dashboard": links.dashboard("factory-erp"),
        }
        changes.append(Change("fire", labels, at, annotations))
    return changes


def _status(topic: str, payload: bytes, links: LinkBase, now: datetime) -> Change | None:
    match = _STATUS.match(topic)
    if match is None:
        return None
    if not payload:  # the retained status was cleared: the device is retired (factory provision revoke)
        return device_change(match["site"], match["device"], "retired", now, links)
    try:
        status = wire.decode_status(payload)
    except wire.WireError:
        return None
    return device_change(match["site"], match["device"], status.state, datetime.fromtimestamp(status.ts / 1000, UTC),
                         links)  # fmt: skip


def device_change(site: str, device: str, state: str, at: datetime, links: LinkBase) -> Change:
    """A device said it is ``state`` (``online`` resolves, and ``retired``, its status cleared;
    anything else fires) as of ``at``: from its status message, or from the state ingest stored
    of it (on a NATS cluster)."""
    labels = _labels(alertname=DEVICE_OFFLINE, severity="critical", site=site, device=device)
    if state in ("online", "retired"):
        return Change("resolve", labels, at, {})
    annotations = {
        "summary": f"Device {device} at {site} is offline (its last will, or it said so)",
        "dashboard": links.dashboard("factory-overview"),
    }
    return Change("fire", labels, at, annotations)


def changes_for(topic: str, payload: bytes, links: LinkBase, now: datetime) -> list[Change]:
    """The changes a message on ``topic`` makes: none for one the bridge does not alert on,
    or cannot read (a bad message is skipped, never retried)."""
    if topic.endswith("/status"):
        return [c for c in [_status(topic, payload, links, now)] if c is not None]
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return []
    if not isinstance(event, dict):
        return []
    at = _when(event.get("occurred_at"), now)
    kind = str(event.get("kind") or "")
    if kind.startswith("inventory.") or kind == "stock.reorder_crossed":
        return _stock(event, at, links)
    change = _anomaly(event, at, links) if kind == "anomaly" else None
    if kind.startswith("work_order."):
        change = _work_order(event, at, links)
    return [change] if change is not None else []
