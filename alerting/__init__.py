"""Alerting: the bridge that turns domain events and device states into Alertmanager alerts
(``factory alerts bridge``). Prometheus' rules and Alertmanager's routing are written by
``factory provision alerts`` (provisioning.alerts)."""

from alerting.bridge import AlertmanagerError, BridgeConfig, BridgeStats, run_bridge, topic_filters
from alerting.rules import EVENT_KINDS, STATUS_FILTER, Change, LinkBase, changes_for

__all__ = [
    "EVENT_KINDS",
    "STATUS_FILTER",
    "AlertmanagerError",
    "BridgeConfig",
    "BridgeStats",
    "Change",
    "LinkBase",
    "changes_for",
    "run_bridge",
    "topic_filters",
]
