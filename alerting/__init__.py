"""Alerting: the bridge that turns domain events and device states into Alertmanager alerts
(``factory alerts bridge``). Prometheus' rules and Alertmanager's routing are written by
``factory provision alerts`` (provisioning.alerts)."""

from alerting.bridge import DURABLE, AlertmanagerError, BridgeConfig, BridgeStats, run_bridge, topic_filters
from alerting.rules import EVENT_KINDS, STATUS_FILTER, Change, LinkBase, changes_for, device_change

__all__ = [
    "DURABLE",
    "EVENT_KINDS",
    "STATUS_FILTER",
    "AlertmanagerError",
    "BridgeConfig",
    "BridgeStats",
    "Change",
    "LinkBase",
    "changes_for",
    "device_change",
    "run_bridge",
    "topic_filters",
]
