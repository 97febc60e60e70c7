"""Prometheus' alerting rules for the platform, on the metrics the services export.

Each rule says what is wrong at the plant in the words of docs/alerts.md, where a section
of the rule's name says what to do. Annotations use only ``{{ $labels.NAME }}`` and
``{{ $value | printf "%.0f" }}``: the tests state the text they expect, alert by alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["SEVERITIES", "Rule", "Severity", "Thresholds", "duration", "rule_groups", "rules"]

Severity = Literal["critical", "warning"]
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "warning")
# The scrape jobs (provisioning.alerts names them); the service label is the job without "factory-".
SERVICES: Final = "factory-ingest|factory-erp|factory-analytics|factory-alerts|alertmanager"


def duration(seconds: int) -> str:
    """Prometheus' spelling of a whole number of seconds: 90s, 5m, 2h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a rule fires; seconds throughout. The defaults suit a plant: a device may drop
    off Wi-Fi for a minute without anyone being called, data lost or a service down may not."""

    down_after_s: int = 120  # up == 0 this long: a service is down
    device_offline_s: int = 300  # a device's status says offline this long
    device_silent_s: int = 300  # an online device has sent no telemetry this long
    ingest_lag_s: int = 120  # the newest stored point is this old (warning) ...
    ingest_lag_critical_s: int = 900  # ... and this old (critical)
    ingest_behind_s: int = 120  # ingest's queue at its limit this long
    flush_slow_s: int = 5  # a database commit of ingest takes this long
    dead_letter_window_s: int = 600  # any refused message in this window
    buffer_age_s: int = 600  # the oldest point in an edge buffer is this old (warning) ...
    buffer_age_critical_s: int = 3600  # ... and this old (critical)
    outbox_lag_s: int = 120  # the oldest unpublished event has waited this long (warning) ...
    outbox_lag_critical_s: int = 900  # ... and this long (critical)
    job_failures: int = 3  # an analytics job failed this many times in a row
    hold_s: int = 300  # how long most conditions must hold before they fire


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    group: str
    expr: str
    hold_s: int
    severity: Severity
    summary: str
    description: str

    def to_yaml(self, runbook_url: str) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.hold_s:
            rule["for"] = duration(self.hold_s)
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{runbook_url}#{self.name.lower()}",
        }
        return rule


def _levels(warning: int, critical: int) -> list[tuple[Severity, int]]:
    """One rule, two limits: the critical alert inhibits the warning one (provisioning.alertmanager)."""
    return [("warning", warning), ("critical", critical)]


VALUE: Final = '{{ $value | printf "%.0f" }}'


def _service_rules(t: Thresholds) -> list[Rule]:
    return [
        Rule(
            "FactoryServiceDown",
            "factory-services",
            f'label_replace(up{{job=~"{SERVICES}"}}, "service", "$1", "job", "(?:factory-)?(.*)") == 0',
            t.down_after_s,
            "critical",
            "{{ $labels.service }} at {{ $labels.instance }} is down",
            "Prometheus cannot scrape {{ $labels.service }} at {{ $labels.instance }}: the process is stopped, "
            "crashed or unreachable.",
        ),
    ]


def _ingest_rules(t: Thresholds) -> list[Rule]:
    lag = "Telemetry reaches the database late: the newest stored point is {} s old."
    return [
        *(
            Rule(
                "IngestLagHigh",
                "factory-ingest",
                f"factory_ingest_lag_seconds > {limit}",
                t.hold_s,
                severity,
                "Ingest is behind at {{ $labels.instance }}",
                lag.format(VALUE),
            )
            for severity, limit in _levels(t.ingest_lag_s, t.ingest_lag_critical_s)
        ),
        Rule(
            "IngestBehind",
            "factory-ingest",
            "factory_ingest_queued_messages >= factory_ingest_queue_limit_messages"
            " and factory_ingest_queue_limit_messages > 0",
            t.ingest_behind_s,
            "warning",
            "Ingest at {{ $labels.instance }} cannot keep up",
            f"{VALUE} messages wait to be written: the broker is holding the rest.",
        ),
        Rule(
            "IngestFlushSlow",
            "factory-ingest",
            f"factory_ingest_last_flush_seconds > {t.flush_slow_s}",
            t.hold_s,
            "warning",
            "Database writes of ingest at {{ $labels.instance }} are slow",
            f"The last commit took {VALUE} s.",
        ),
        Rule(
            "IngestDeadLetters",
            "factory-ingest",
            f"increase(factory_ingest_dead_letters_total[{duration(t.dead_letter_window_s)}]) > 0",
            0,
            "warning",
            "Ingest at {{ $labels.instance }} refused messages",
            f"Messages were dead-lettered in the last {duration(t.dead_letter_window_s)}: see telemetry.dead_letter "
            "for their topics and reasons.",
        ),
        Rule(
            "IngestLostBatches",
            "factory-ingest",
            "increase(factory_ingest_lost_batches_total[1h]) > 0",
            0,
            "warning",
            "Batches of {{ $labels.site }}/{{ $labels.device }} never arrived",
            "Batch numbers the device sent went missing in the last hour: the broker or the network lost "
            "messages (see telemetry.event kind seq_gap).",
        ),
        Rule(
            "IngestUpkeepFailing",
            "factory-ingest",
            "increase(factory_ingest_upkeep_failures_total[1h]) >= 3",
            0,
            "warning",
            "Storage upkeep of ingest at {{ $labels.instance }} keeps failing",
            "Partitions, retention or rollups failed 3 times or more in the last hour.",
        ),
    ]


def _edge_rules(t: Thresholds) -> list[Rule]:
    buffer = (
        "The oldest point buffered on {{ $labels.site }}/{{ $labels.device }} is %s s old:"
        " it has not reached the database yet."
    )
    return [
        Rule(
            "EdgeSiteOffline",
            "factory-edge",
            "max by (site) (factory_ingest_device_up) == 0",
            t.device_offline_s,
            "critical",
            "Every device of site {{ $labels.site }} is offline",
            "No edge device of {{ $labels.site }} is connected to the broker: the site's network or power is out.",
        ),
        Rule(
            "EdgeDeviceOffline",
            "factory-edge",
            "factory_ingest_device_up == 0",
            t.device_offline_s,
            "critical",
            "Edge device {{ $labels.site }}/{{ $labels.device }} is offline",
            "Its last status is offline (it stopped, or the broker lost it and published its last will).",
        ),
        Rule(
            "EdgeDeviceSilent",
            "factory-edge",
            "time() - max by (site, device) (factory_ingest_device_last_message_timestamp_seconds)"
            f" > {t.device_silent_s} unless on (site, device) (factory_ingest_device_up == 0)",
            0,
            "warning",
            "Edge device {{ $labels.site }}/{{ $labels.device }} sends nothing",
            f"No telemetry from it was stored for {VALUE} s, though it is not known to be offline.",
        ),
        Rule(
            "EdgeScrapeFailed",
            "factory-edge",
            'up{job="factory-edge"} == 0',
            t.down_after_s,
            "warning",
            "Edge agent {{ $labels.site }}/{{ $labels.device }} cannot be scraped",
            "Prometheus cannot reach the agent's /metrics at {{ $labels.instance }}.",
        ),
        *(
            Rule(
                "EdgeBufferBacklog",
                "factory-edge",
                f"factory_edge_buffer_oldest_age_seconds > {limit}",
                t.hold_s,
                severity,
                "Edge device {{ $labels.site }}/{{ $labels.device }} holds old data",
                buffer % VALUE,
            )
            for severity, limit in _levels(t.buffer_age_s, t.buffer_age_critical_s)
        ),
        Rule(
            "EdgeBufferDropping",
            "factory-edge",
            "increase(factory_edge_buffer_dropped_points_total[15m]) > 0",
            0,
            "critical",
            "Edge device {{ $labels.site }}/{{ $labels.device }} is losing data",
            "Its buffer is full (size limit or disk): the oldest points are being dropped.",
        ),
        Rule(
            "EdgeSourceFailing",
            "factory-edge",
            "rate(factory_edge_poll_errors_total[5m]) > 0",
            t.hold_s,
            "warning",
            "Reads of {{ $labels.source }} on {{ $labels.site }}/{{ $labels.device }} fail",
            "The agent keeps failing to read {{ $labels.source }}: the machine, its network or its settings changed.",
        ),
    ]


def _outbox_rules(t: Thresholds) -> list[Rule]:
    rules = []
    for producer, name, title in (("erp", "ErpOutboxLag", "ERP"), ("analytics", "AnalyticsOutboxLag", "Analytics")):
        metric = f"factory_{producer}_outbox_oldest_unpublished_seconds"
        for severity, limit in _levels(t.outbox_lag_s, t.outbox_lag_critical_s):
            rules.append(
                Rule(
                    name,
                    f"factory-{producer}",
                    f"max without (instance) ({metric}) > {limit}",
                    t.hold_s,
                    severity,
                    f"{title} events are not published",
                    f"The oldest unpublished {producer} event has waited {VALUE} s: consumers of "
                    "factory/v1/events (work orders, reports, alerts) are behind.",
                )
            )
    return rules


def _app_rules(t: Thresholds) -> list[Rule]:
    return [
        Rule(
            "ErpDatabasePoolTimeouts",
            "factory-erp",
            "increase(factory_erp_db_pool_timeouts_total[5m]) > 0",
            0,
            "warning",
            "ERP requests at {{ $labels.instance }} wait in vain for the database",
            "Requests gave up waiting for a database connection in the last 5 minutes.",
        ),
        Rule(
            "AnalyticsJobFailing",
            "factory-analytics",
            f"factory_analytics_job_consecutive_failures >= {t.job_failures}",
            0,
            "warning",
            "Analytics job {{ $labels.analytics_job }} keeps failing",
            f"It failed {VALUE} times in a row: its results (anomalies, OEE, health scores) are not current.",
        ),
        Rule(
            "AlertmanagerNotificationsFailing",
            "alerting",
            "increase(alertmanager_notifications_failed_total[15m]) > 0",
            0,
            "critical",
            "Alert notifications by {{ $labels.integration }} fail",
            "Alertmanager could not deliver notifications: check the mail server or webhook settings.",
        ),
    ]


def rules(t: Thresholds) -> list[Rule]:
    return [*_service_rules(t), *_ingest_rules(t), *_edge_rules(t), *_outbox_rules(t), *_app_rules(t)]


def rule_groups(t: Thresholds, runbook_url: str, evaluation_s: int) -> dict[str, Any]:
    """The rule file: one group per part of the platform, in the order the rules are listed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules(t):
        groups.setdefault(rule.group, []).append(rule.to_yaml(runbook_url))
    return {
        "groups": [{"name": name, "interval": duration(evaluation_s), "rules": items} for name, items in groups.items()]
    }
