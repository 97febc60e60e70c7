"""Which messages become which alerts (data-driven cases on the real envelopes), and how the
bridge's table takes repeated, stale and out-of-order changes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alerting import LinkBase, changes_for
from alerting.rules import Change
from alerting.store import apply, pending
from factory.events import envelope
from factory.wire import Status, encode_status

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
LINKS = LinkBase("https://grafana.plant.test")


def event(kind: str, data: dict[str, Any], aggregate: tuple[str, object] = ("work_order", 7)) -> bytes:
    return envelope("erp/1.2", 42, kind, aggregate=aggregate, occurred_at=NOW, data=data)


def order(kind: str = "maintenance", **fields: object) -> dict[str, Any]:
    return {"id": 7, "number": "WO-000007", "kind": kind, "status": "planned", "asset": "centrifugal2",
            "priority": "high", "reason": "predicted failure [cmapss]: failure probability 0.81"} | fields  # fmt: skip


def stock(*, below: bool, sku: str = "BRG-6205") -> dict[str, Any]:
    level = {"sku": sku, "warehouse_code": "MAIN", "on_hand": "1.000", "reserved": "0.000", "available": "1.000",
             "reorder_point": "4.000", "below_reorder": below}  # fmt: skip
    return {"movements": [], "stock": [level]}


CASES: list[tuple[str, str, bytes, list[tuple[str, dict[str, str]]]]] = [
    ("a predicted failure opens an order: the asset is at risk", "factory/v1/events/work_order.created",
     event("work_order.created", order()),
     [("fire", {"alertname": "AssetAtRisk", "severity": "warning", "asset": "centrifugal2", "work_order": "WO-000007"})]),
    ("an urgent maintenance order is critical", "factory/v1/events/work_order.created",
     event("work_order.created", order(priority="urgent", reason="seal leak")),
     [("fire", {"alertname": "MaintenanceWorkOrderOpen", "severity": "critical", "asset": "centrifugal2",
                "work_order": "WO-000007"})]),
    ("the order done resolves the same label set", "factory/v1/events/work_order.completed",
     event("work_order.completed", order(status="done")),
     [("resolve", {"alertname": "AssetAtRisk", "severity": "warning", "asset": "centrifugal2",
                   "work_order": "WO-000007"})]),
    ("a production order alerts no one", "factory/v1/events/work_order.created",
     event("work_order.created", order(kind="production")), []),
    ("stock below its reorder point", "factory/v1/events/inventory.adjusted",
     event("inventory.adjusted", stock(below=True), ("stock", 3)),
     [("fire", {"alertname": "StockBelowReorder", "severity": "warning", "sku": "BRG-6205", "warehouse": "MAIN"})]),
    ("stock back above it", "factory/v1/events/inventory.received",
     event("inventory.received", stock(below=False), ("stock", 3)),
     [("resolve", {"alertname": "StockBelowReorder", "severity": "warning", "sku": "BRG-6205", "warehouse": "MAIN"})]),
    ("a reservation took stock below it", "factory/v1/events/stock.reorder_crossed",
     event("stock.reorder_crossed", stock(below=True), ("stock", 3)),
     [("fire", {"alertname": "StockBelowReorder", "severity": "warning", "sku": "BRG-6205", "warehouse": "MAIN"})]),
    ("a maintenance order with a site groups by it", "factory/v1/events/work_order.created",
     event("work_order.created", order() | {"site": "mill-a"}),
     [("fire", {"alertname": "AssetAtRisk", "severity": "warning", "site": "mill-a", "asset": "centrifugal2",
                "work_order": "WO-000007"})]),
    ("a per-tag check's episode names its tag", "factory/v1/events/anomaly",
     event("anomaly", {"state": "start", "site": "mill-a", "asset": "boiler1", "detector": "stuck",
                       "tag": "boiler1.drum_pressure", "episode": 12, "at": NOW.isoformat(), "score": 1.0,
                       "reason": "no change for 120 s"}, ("asset", "mill-a/boiler1")),
     [("fire", {"alertname": "AnomalyEpisode", "severity": "warning", "site": "mill-a", "asset": "boiler1",
                "detector": "stuck", "tag": "boiler1.drum_pressure", "episode": "12"})]),
    ("a device's last will", "factory/v1/mill-a/pi1/status",
     encode_status(Status(state="offline", ts=1_765_076_400_000, agent="1.0")),
     [("fire", {"alertname": "DeviceOffline", "severity": "critical", "site": "mill-a", "device": "pi1"})]),
    ("a status that is not one", "factory/v1/mill-a/pi1/status", b'{"state": "sleeping"}', []),
    ("a retired device's status cleared (an empty retained message)", "factory/v1/mill-a/pi1/status", b"",
     [("resolve", {"alertname": "DeviceOffline", "severity": "critical", "site": "mill-a", "device": "pi1"})]),
    ("another event kind", "factory/v1/events/order.created", event("order.created", {"id": 1}), []),
]  # fmt: skip


@pytest.mark.parametrize(("why", "topic", "payload", "expected"), CASES, ids=[c[0] for c in CASES])
def test_messages_become_alerts(why: str, topic: str, payload: bytes, expected: list[tuple[str, Any]]) -> None:
    found = changes_for(topic, payload, LINKS, NOW)
    assert [(c.action, c.labels) for c in found] == expected, why
    for change in found:
        if change.action == "fire":
            assert change.annotations["summary"]
            assert change.annotations["dashboard"].startswith("https://grafana.plant.test/d/")


def test_a_transfer_changes_both_ends() -> None:
    data = {"movements": [], "stock": [stock(below=True, sku="BRG-1")["stock"][0] | {"warehouse_code": "MAIN"},
                                       stock(below=False, sku="BRG-1")["stock"][0] | {"warehouse_code": "EAST"}]}  # fmt: skip
    found = changes_for("factory/v1/events/inventory.transferred", event("inventory.transferred", data), LINKS, NOW)
    assert [(c.action, c.labels["warehouse"]) for c in found] == [("fire", "MAIN"), ("resolve", "EAST")]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["factory/v1/events/anomaly", "factory/v1/a/b/status",
                                                 "factory/v1/events/inventory.adjusted"]))  # fmt: skip
def test_junk_never_raises(payload: bytes, topic: str) -> None:
    assume(payload or not topic.endswith("/status"))  # an empty status is a retired device's (above)
    assert changes_for(topic, payload, LINKS, NOW) == []


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])  # a machine shared with others
@given(st.fixed_dictionaries({"state": st.sampled_from(["start", "end", None])},
                             optional=dict.fromkeys(["site", "asset", "episode", "top", "tag", "detector"],
                                                    st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                                              st.lists(st.integers(), max_size=3)))))  # fmt: skip
def test_odd_anomaly_data_never_raises(data: dict[str, Any]) -> None:
    body = json.dumps({"kind": "anomaly", "occurred_at": NOW.isoformat(), "data": data}).encode()
    for change in changes_for("factory/v1/events/anomaly", body, LINKS, NOW):
        assert change.labels["alertname"] == "AnomalyEpisode"


def _change(action: str, at: datetime, site: str) -> Change:
    labels = {"alertname": "DeviceOffline", "severity": "critical", "site": site, "device": "pi1"}
    return Change(action, labels, at, {"summary": "offline"} if action == "fire" else {})  # type: ignore[arg-type]


async def _mine(db: psycopg.AsyncConnection[Any], site: str) -> list[tuple[datetime, datetime | None]]:
    return [(a.starts_at, a.ends_at) for a in await pending(db) if a.labels.get("site") == site]


async def test_repeated_stale_and_late_changes_change_nothing(db: psycopg.AsyncConnection[Any], site: str) -> None:
    t0 = NOW
    assert await apply(db, _change("fire", t0, site))
    assert not await apply(db, _change("fire", t0 + timedelta(seconds=30), site))  # still firing: keeps its start
    assert await _mine(db, site) == [(t0, None)]
    assert await apply(db, _change("resolve", t0 + timedelta(minutes=5), site))
    assert not await apply(db, _change("resolve", t0 + timedelta(minutes=6), site))  # over already
    assert not await apply(db, _change("fire", t0, site))  # a redelivered old "offline": stays resolved
    assert await _mine(db, site) == [(t0, t0 + timedelta(minutes=5))]  # its resolve still to be posted
    later = t0 + timedelta(hours=1)
    assert await apply(db, _change("fire", later, site))  # offline again: a new firing from then
    assert await _mine(db, site) == [(later, None)]
    assert not await apply(db, _change("resolve", later - timedelta(minutes=30), site))  # older than the firing


async def test_a_resolve_for_nothing_firing_is_ignored(db: psycopg.AsyncConnection[Any], site: str) -> None:
    assert not await apply(db, _change("resolve", NOW, site))
    assert await _mine(db, site) == []


async def test_a_work_order_resolves_whatever_its_priority_became(db: psycopg.AsyncConnection[Any]) -> None:
    number = f"WO-{uuid.uuid4().hex[:8]}"
    opened = changes_for("factory/v1/events/work_order.created",
                         event("work_order.created", order(number=number, priority="urgent")), LINKS, NOW)  # fmt: skip
    done = changes_for("factory/v1/events/work_order.completed",
                       event("work_order.completed", order(number=number, priority="normal", status="done")),
                       LINKS, NOW + timedelta(hours=2))  # fmt: skip
    assert opened[0].labels["severity"] == "critical"
    assert done[0].labels["severity"] == "warning"  # the label sets differ ...
    assert await apply(db, opened[0])
    assert await apply(db, done[0])  # ... and the order's end still resolves its alert
    (alert,) = [a for a in await pending(db) if a.labels.get("work_order") == number]
    assert alert.ends_at is not None
