"""``factory provision alerts``: the alerting files from the settings file and the options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from factory.configfile import ConfigError
from factory.runtime import fail
from provisioning.alert_rules import Thresholds
from provisioning.alertmanager import load_alert_settings
from provisioning.alerts import DEFAULT_RUNBOOK, AlertOptions, parse_edge_target, write_alerts
from provisioning.cli import _count, _json, _report
from provisioning.devices import ProvisioningError
from provisioning.gateway import Upstream, parse_upstream

__all__ = ["alerts"]

DEFAULTS = Thresholds()


def _targets(values: tuple[str, ...], option: str) -> tuple[Upstream, ...]:
    return tuple(parse_upstream(v, option) for v in values)


@click.command("alerts")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for prometheus/, alertmanager/ and grafana/ (see docs/alerts.md).")  # fmt: skip
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              required=True, help="Alert settings YAML: receivers, mail server, webhooks (secrets).")  # fmt: skip
@click.option("--ingest", "ingest_at", multiple=True, default=("ingest:9101",), show_default=True,
              help="An ingest worker's /metrics, HOST:PORT (repeat for several).")  # fmt: skip
@click.option("--erp", "erp_at", multiple=True, default=("erp:8000",), show_default=True,
              help="An ERP API process's /metrics, HOST:PORT (repeat).")  # fmt: skip
@click.option("--analytics", "analytics_at", multiple=True, default=("analytics:9108",), show_default=True,
              help="The analytics scheduler's /metrics, HOST:PORT.")  # fmt: skip
@click.option("--alerts-bridge", "bridge_at", multiple=True, default=("alerts:9110",), show_default=True,
              help="The alert bridge's /metrics (factory alerts bridge), HOST:PORT.")  # fmt: skip
@click.option(
    "--edge",
    "edge_at",
    multiple=True,
    metavar="SITE/DEVICE=HOST:PORT",
    help="An edge agent's /metrics (its http.host must be reachable), with its site and device (repeat).",
)
@click.option("--alertmanager", "alertmanager_at", default="alertmanager:9093", show_default=True,
              help="Where Prometheus sends alerts, HOST:PORT.")  # fmt: skip
@click.option("--alertmanager-url", default="http://alertmanager:9093", show_default=True,
              help="Alertmanager's URL as Grafana reaches it.")  # fmt: skip
@_count("--scrape-interval", 15, "Seconds between two scrapes of a service (edge agents: 30 at least).")
@_count("--evaluation-interval", 15, "Seconds between two evaluations of the rules.")
@_count("--down-after", DEFAULTS.down_after_s, "Seconds a service is unreachable before it is down.")
@_count("--hold", DEFAULTS.hold_s, "Seconds most conditions must hold before their alert fires.", low=0)
@_count(
    "--device-offline-after",
    DEFAULTS.device_offline_s,
    "Seconds a device is offline before its alert fires.",
    low=0,
)
@click.option("--runbook-url", default=DEFAULT_RUNBOOK, show_default=True,
              help="docs/alerts.md as people reach it; each alert links to its section.")  # fmt: skip
@click.option("--failure-prob", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Grafana: alert when an asset's failure probability is above this.")  # fmt: skip
@click.option("--oee-target", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Grafana: alert when a line's OEE in the running shift stays below this.")  # fmt: skip
@_json
def alerts(  # noqa: PLR0917 - one parameter per option, as click passes them
    out: Path,
    settings_file: Path,
    ingest_at: tuple[str, ...],
    erp_at: tuple[str, ...],
    analytics_at: tuple[str, ...],
    bridge_at: tuple[str, ...],
    edge_at: tuple[str, ...],
    alertmanager_at: str,
    alertmanager_url: str,
    scrape_interval: int,
    evaluation_interval: int,
    down_after: int,
    hold: int,
    device_offline_after: int,
    runbook_url: str,
    failure_prob: float,
    oee_target: float,
    as_json: bool,
) -> None:
    """Write Prometheus' scrape config and rules, Alertmanager's config and Grafana's alert rules.

    Receivers, the mail server and webhooks come from --settings (docs/alerts.md shows one).
    Check: promtool check config OUT/prometheus/prometheus.yml; amtool check-config
    OUT/alertmanager/alertmanager.yml. Reload: POST /-/reload to each, or SIGHUP."""
    try:
        settings = load_alert_settings(settings_file)
    except ConfigError as exc:
        fail(exc.report())
    try:
        thresholds = replace(DEFAULTS, down_after_s=down_after, hold_s=hold, device_offline_s=device_offline_after)
        options = AlertOptions(
            ingest=_targets(ingest_at, "--ingest"), erp=_targets(erp_at, "--erp"),
            analytics=_targets(analytics_at, "--analytics"), bridge=_targets(bridge_at, "--alerts-bridge"),
            edge=tuple(parse_edge_target(e) for e in edge_at),
            alertmanager=parse_upstream(alertmanager_at, "--alertmanager"), alertmanager_url=alertmanager_url,
            scrape_s=scrape_interval, evaluation_s=evaluation_interval, thresholds=thresholds,
            runbook_url=runbook_url, failure_prob=failure_prob, oee_target=oee_target,
        )  # fmt: skip
        files = write_alerts(out, options, settings)
    except ProvisioningError as exc:
        fail(str(exc))
    payload = {"prometheus": str(files.prometheus), "rules": str(files.rules), "alertmanager": str(files.alertmanager),
               "grafana": str(files.grafana), "receivers": [r.name for r in settings.receivers],
               "edge_targets": len(options.edge)}  # fmt: skip
    lines = [f"wrote {files.prometheus}, {files.rules}", f"wrote {files.alertmanager} (mode 0600: it holds secrets)",
             f"wrote {files.grafana} (Grafana's provisioning/alerting)",
             f"check: promtool check config {files.prometheus}; amtool check-config {files.alertmanager}"]  # fmt: skip
    _report(as_json, payload, "\n".join(lines))
