"""``factory alerts bridge``: domain events and device states become Alertmanager alerts."""

from __future__ import annotations

import click

from alerting.bridge import BridgeConfig, run_bridge
from factory.runtime import claim_instance, given, run_service
from factory.settings import current

__all__ = ["alerts"]


@click.group()
def alerts() -> None:
    """Alerts from domain events (anomalies, maintenance, stock, devices)."""


@alerts.command("bridge")
@click.option("--alertmanager-url", default="http://127.0.0.1:9093", show_default=True,
              help="Alertmanager's base URL; alerts go to its /api/v2/alerts.")  # fmt: skip
@click.option("--grafana-url", default="http://localhost:3000", show_default=True,
              help="Grafana's root URL, for the dashboard link in each alert.")  # fmt: skip
@click.option("--repost-s", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Firing alerts are posted again this often: well inside Alertmanager's resolve_timeout.",
              )  # fmt: skip
@click.option("--client-id", default=None,
              help="MQTT client id: keep it across restarts [default: factory-alerts-HOST-N].")  # fmt: skip
@click.option("--site", default="+", show_default=True, help="Only this site's device states ('+' for all).")
@click.option("--http", "http", default="127.0.0.1:9110", show_default=True,
              help="HOST:PORT for /healthz and /metrics. The default, if busy, moves to a free port.")  # fmt: skip
def bridge(*, alertmanager_url: str, grafana_url: str, repost_s: float, client_id: str | None, site: str,
           http: str) -> None:  # fmt: skip
    """Subscribe to the events and device states that alert; post them to Alertmanager.

    FACTORY_MQTT_URL carries the bridge's own broker account (`factory-alerts`, written by
    `factory provision broker`); FACTORY_DATABASE_URL the database with its `alerting` schema."""
    settings = current()
    instance = claim_instance("factory-alerts")
    host, _, port = http.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {http!r}", param_hint="--http")
    config = BridgeConfig(database_url=settings.database(), mqtt_url=settings.mqtt(),
                          client_id=client_id or instance.client_id, alertmanager_url=alertmanager_url,
                          grafana_url=grafana_url, repost_s=repost_s, site=site, http_host=host, http_port=int(port),
                          http_fallback=not given("http"))  # fmt: skip
    click.echo(f"alert bridge: MQTT client id {config.client_id}, Alertmanager {alertmanager_url}", err=True)
    run_service(run_bridge(config))
