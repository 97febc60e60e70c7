"""Grafana's alert rules over the platform's SQL, as a file-provisioning document.

Three conditions that only the database knows, beside the Prometheus rules about the
services (docs/alerts.md): an anomaly episode open on an asset, an asset's failure
probability at or above the threshold, a line's OEE below its target in the running shift.
Grafana evaluates them against the provisioned datasource and hands its alerts to the
plant's Alertmanager (a contact point of type prometheus-alertmanager and a policy that
sends everything there), so one set of receivers, groupings and silences covers both.

Each query returns one row per asset (or line): string columns become the alert's labels
(``site``, ``device``, ``asset``, ``line``: the ones Alertmanager groups and inhibits by),
the one numeric column is the value the threshold is applied to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from dashboards.catalog import FOLDER
from dashboards.model import DATASOURCE

__all__ = ["ALERTMANAGER_URL", "CONTACT_POINT", "RUNBOOK_URL", "GrafanaRule", "alerting_provisioning", "grafana_rules"]

CONTACT_POINT: Final = "factory-alertmanager"
ALERTMANAGER_URL: Final = "http://alertmanager:9093"  # the compose service
# Where alerts point people to; the plant may give its own copy (a wiki, the repository's web page).
RUNBOOK_URL: Final = "docs/alerts.md"
EXPRESSIONS: Final = "__expr__"  # Grafana's server-side expressions, not a datasource

# The device that reads an asset (the first by name when several do), for inhibition while it is offline.
_DEVICE_OF = (
    "LEFT JOIN LATERAL (SELECT d.site, d.name FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id"
    " WHERE t.asset = {asset} {site} ORDER BY d.site, d.name LIMIT 1) dev ON true"
)

ANOMALY_SQL: Final = (
    "SELECT e.site, e.asset, coalesce(dev.name, '') AS device, count(*)::float8 AS open_episodes"
    " FROM analytics.anomaly_episode e "
    + _DEVICE_OF.format(asset="e.asset", site="AND d.site = e.site")
    + " WHERE e.ended_at IS NULL GROUP BY e.site, e.asset, dev.name"
)
FAILURE_SQL: Final = (
    "SELECT coalesce(dev.site, h.site) AS site, h.asset, coalesce(dev.name, '') AS device, h.failure_prob"
    " FROM (SELECT DISTINCT ON (site, asset) site, asset, failure_prob FROM maintenance.asset_health"
    " WHERE time > now() - interval '1 day' ORDER BY site, asset, time DESC) h "
    + _DEVICE_OF.format(asset="h.asset", site="AND (h.site = '' OR d.site = h.site)")
)
# The running shift once an hour of it is planned: earlier, one stop swings the figure too much.
OEE_SQL: Final = (
    "SELECT site, line, oee FROM analytics.oee"
    " WHERE period = 'shift' AND bucket <= now() AND bucket_end > now() AND planned_s >= 3600"
)


@dataclass(frozen=True, slots=True)
class GrafanaRule:
    uid: str
    title: str
    sql: str
    comparison: str  # Grafana's threshold evaluator: gt or lt
    limit: float
    hold: str
    severity: str
    summary: str
    description: str


def grafana_rules(failure_prob: float = 0.5, oee_target: float = 0.6) -> list[GrafanaRule]:
    """The defaults: maintenance's own work-order threshold, and a common OEE floor for a
    process plant (world class is 0.85; below 0.6 a shift lost a lot)."""
    return [
        GrafanaRule(
            "factory-anomaly-open",
            "AnomalyEpisodeOpen",
            ANOMALY_SQL,
            "gt",
            0,
            "5m",
            "warning",
            "Anomaly on {{ $labels.asset }} at {{ $labels.site }}",
            "An anomaly episode has been open on {{ $labels.asset }} for 5 minutes or more.",
        ),
        GrafanaRule(
            "factory-failure-probability",
            "FailureProbabilityHigh",
            FAILURE_SQL,
            "gt",
            failure_prob,
            "0s",
            "critical",
            "{{ $labels.asset }} is likely to fail",
            f"The latest failure probability of {{{{ $labels.asset }}}} is above {failure_prob:g}.",
        ),
        GrafanaRule(
            "factory-oee-below-target",
            "OeeBelowTarget",
            OEE_SQL,
            "lt",
            oee_target,
            "30m",
            "warning",
            "OEE of line {{ $labels.line }} at {{ $labels.site }} is below target",
            f"The running shift's OEE has stayed below {oee_target:g} for 30 minutes.",
        ),
    ]


def _rule(rule: GrafanaRule, runbook_url: str) -> dict[str, Any]:
    query = {
        "refId": "A",
        "datasource": DATASOURCE,
        "rawSql": rule.sql,
        "rawQuery": True,
        "editorMode": "code",
        "format": "table",
        "intervalMs": 60000,
        "maxDataPoints": 43200,
    }
    threshold = {
        "refId": "B",
        "datasource": {"type": "__expr__", "uid": EXPRESSIONS},
        "type": "threshold",
        "expression": "A",
        "conditions": [{"evaluator": {"type": rule.comparison, "params": [rule.limit]}}],
    }
    return {
        "uid": rule.uid,
        "title": rule.title,
        "condition": "B",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": DATASOURCE["uid"],
                "model": query,
            },
            {"refId": "B", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": EXPRESSIONS, "model": threshold},
        ],
        "noDataState": "OK",  # no row: nothing is wrong (no open episode, no shift running)
        "execErrState": "Error",
        "for": rule.hold,
        "labels": {"severity": rule.severity},
        "annotations": {
            "summary": rule.summary,
            "description": rule.description,
            "runbook_url": f"{runbook_url}#{rule.title.lower()}",
        },
        "isPaused": False,
    }


def alerting_provisioning(
    alertmanager_url: str = ALERTMANAGER_URL,
    runbook_url: str = RUNBOOK_URL,
    *,
    failure_prob: float = 0.5,
    oee_target: float = 0.6,
) -> dict[str, Any]:
    """provisioning/alerting/factory.yaml: the rules, and everything they raise sent to Alertmanager."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "factory-plant",
                "folder": FOLDER,
                "interval": "1m",
                "rules": [_rule(r, runbook_url) for r in grafana_rules(failure_prob, oee_target)],
            }
        ],
        "contactPoints": [
            {
                "orgId": 1,
                "name": CONTACT_POINT,
                "receivers": [
                    {
                        "uid": CONTACT_POINT,
                        "type": "prometheus-alertmanager",
                        "disableResolveMessage": False,
                        "settings": {"url": alertmanager_url},
                    },
                ],
            }
        ],
        "policies": [{"orgId": 1, "receiver": CONTACT_POINT, "group_by": ["alertname", "site", "asset"]}],
    }
