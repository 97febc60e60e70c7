"""Alerting as code: Prometheus' scrape config and rules, Alertmanager's config and Grafana's
alert rules, written into one folder by ``factory provision alerts``.

Layout of the folder (docs/alerts.md)::

    prometheus/prometheus.yml        scrape jobs for every service's /metrics, and Alertmanager
    prometheus/rules/factory.yml     the alerting rules (provisioning.alert_rules)
    alertmanager/alertmanager.yml    receivers, routes, inhibitions (mode 0600: it holds secrets)
    grafana/alerting/factory.yaml    Grafana's alert rules over the platform's SQL

Prometheus and Alertmanager (the distribution's packages, or the official images in compose)
run them: ``prometheus --config.file=OUT/prometheus/prometheus.yml`` and
``alertmanager --config.file=OUT/alertmanager/alertmanager.yml``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from dashboards.alerting import ALERTMANAGER_URL, RUNBOOK_URL, alerting_provisioning
from provisioning.alert_rules import Thresholds, duration, rule_groups
from provisioning.alertmanager import AlertSettings, render_alertmanager
from provisioning.devices import ProvisioningError
from provisioning.gateway import Upstream, parse_upstream

__all__ = ["AlertFiles", "AlertOptions", "EdgeTarget", "parse_edge_target", "render_prometheus", "write_alerts"]

RULES_FILE: Final = "rules/factory.yml"
# The compose services (deploy/docker-compose.yml).
INGEST: Final = Upstream("ingest", 9101)
ERP: Final = Upstream("erp", 8000)
ANALYTICS: Final = Upstream("analytics", 9108)
BRIDGE: Final = Upstream("alerts", 9110)  # factory alerts bridge
ALERTMANAGER: Final = Upstream("alertmanager", 9093)
DEFAULT_RUNBOOK: Final = RUNBOOK_URL
_EDGE = re.compile(r"^(?P<site>[a-z0-9][a-z0-9_-]{0,62})/(?P<device>[a-z0-9][a-z0-9_-]{0,62})=(?P<at>.+)$")


@dataclass(frozen=True, slots=True)
class EdgeTarget:
    """An edge agent's /metrics (its ``http`` section must listen on an address Prometheus reaches)."""

    site: str
    device: str
    at: Upstream


def parse_edge_target(text: str) -> EdgeTarget:
    match = _EDGE.match(text)
    if match is None:
        example = "mill-a/boiler-pi=10.0.0.31:9102"
        raise ProvisioningError(f"--edge {text!r}: expected SITE/DEVICE=HOST:PORT, e.g. {example}")
    return EdgeTarget(match["site"], match["device"], parse_upstream(match["at"], "--edge"))


@dataclass(frozen=True, slots=True)
class AlertOptions:
    """Where the services are and how often to look; the defaults fit deploy/docker-compose.yml."""

    ingest: tuple[Upstream, ...] = (INGEST,)
    erp: tuple[Upstream, ...] = (ERP,)
    analytics: tuple[Upstream, ...] = (ANALYTICS,)
    bridge: tuple[Upstream, ...] = (BRIDGE,)
    edge: tuple[EdgeTarget, ...] = ()
    alertmanager: Upstream = ALERTMANAGER
    alertmanager_url: str = ALERTMANAGER_URL  # for Grafana, which sends its alerts there too
    scrape_s: int = 15
    evaluation_s: int = 15
    thresholds: Thresholds = field(default_factory=Thresholds)
    runbook_url: str = DEFAULT_RUNBOOK
    failure_prob: float = 0.5  # Grafana: an asset's failure probability above this
    oee_target: float = 0.6  # Grafana: a line's OEE in the running shift below this

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.:/%~+-]+", self.runbook_url):
            raise ProvisioningError(f"--runbook-url {self.runbook_url!r}: a URL or path of docs/alerts.md, no fragment")
        if not self.alertmanager_url.startswith(("http://", "https://")):
            raise ProvisioningError(f"--alertmanager-url {self.alertmanager_url!r}: an http(s) URL")
        names = [f"{e.site}/{e.device}" for e in self.edge]
        if len(set(names)) != len(names):
            raise ProvisioningError("--edge: a device is given twice")


@dataclass(frozen=True, slots=True)
class AlertFiles:
    prometheus: Path
    rules: Path
    alertmanager: Path
    grafana: Path


def _job(name: str, targets: tuple[Upstream, ...], scrape_s: int, **extra: Any) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": duration(scrape_s),
        "scrape_timeout": duration(min(scrape_s, 10)),
        "static_configs": [{"targets": [str(t) for t in targets]}],
        **extra,
    }


def render_prometheus(o: AlertOptions) -> dict[str, Any]:
    """prometheus.yml: a job per service, one per edge agent (labelled with its site and
    device, which its own metrics do not carry), Alertmanager itself, and the rule file."""
    jobs = [
        _job("factory-ingest", o.ingest, o.scrape_s),
        _job("factory-erp", o.erp, o.scrape_s),
        # analytics labels its figures by job, which Prometheus' own job label would shadow.
        _job(
            "factory-analytics",
            o.analytics,
            o.scrape_s,
            metric_relabel_configs=[
                {"source_labels": ["exported_job"], "target_label": "analytics_job"},
                {"action": "labeldrop", "regex": "exported_job"},
            ],
        ),
        _job("factory-alerts", o.bridge, o.scrape_s),
        _job("alertmanager", (o.alertmanager,), o.scrape_s),
    ]
    if o.edge:
        # Over Wi-Fi: a slower look, with time to answer.
        jobs.append(
            {
                "job_name": "factory-edge",
                "scrape_interval": duration(max(o.scrape_s, 30)),
                "scrape_timeout": duration(min(max(o.scrape_s, 30), 10)),
                "static_configs": [
                    {"targets": [str(e.at)], "labels": {"site": e.site, "device": e.device}} for e in o.edge
                ],
            }
        )
    return {
        # No external labels: they would be added to every alert, and notifications show them.
        "global": {"scrape_interval": duration(o.scrape_s), "evaluation_interval": duration(o.evaluation_s)},
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [str(o.alertmanager)]}]}]},
        "scrape_configs": jobs,
    }


def _write(path: Path, content: dict[str, Any], header: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {header}\n# Written by `factory provision alerts`; changes here are lost on the next run.\n"
    text += yaml.safe_dump(content, sort_keys=False, width=120, allow_unicode=True)
    # Created with its final mode, so a secret is never readable by others, even for a moment.
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path.with_suffix(".tmp"), mode)
    os.replace(path.with_suffix(".tmp"), path)
    return path


def write_alerts(out: Path, options: AlertOptions, settings: AlertSettings) -> AlertFiles:
    prometheus = _write(out / "prometheus" / "prometheus.yml", render_prometheus(options), "Prometheus")
    rules = _write(
        out / "prometheus" / RULES_FILE,
        rule_groups(options.thresholds, options.runbook_url, options.evaluation_s),
        "Alerting rules",
    )
    manager = _write(out / "alertmanager" / "alertmanager.yml", render_alertmanager(settings), "Alertmanager", 0o600)
    grafana = _write(
        out / "grafana" / "alerting" / "factory.yaml",
        alerting_provisioning(
            options.alertmanager_url,
            options.runbook_url,
            failure_prob=options.failure_prob,
            oee_target=options.oee_target,
        ),
        "Grafana alerting",
    )
    return AlertFiles(prometheus, rules, manager, grafana)
