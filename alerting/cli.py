"""``factory alerts bridge``: domain events and device states become Alertmanager alerts."""

from __future__ import annotations

import click

from alerting.bridge import DURABLE, BridgeConfig, run_bridge
from factory.bus import parse_bus_url
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
@click.option("--bus", default=None, metavar="URL",
              help="Read events from this MQTT broker (mqtt://...) or NATS cluster (nats://h1:4222,h2:4222,...)"
                   " [default: FACTORY_EVENTS_URL, else FACTORY_MQTT_URL].")  # fmt: skip
@click.option("--client-id", default=None,
              help="MQTT client id: keep it across restarts [default: factory-alerts-HOST-N].")  # fmt: skip
@click.option("--site", default="+", show_default=True, help="Only this site's device states ('+' for all).")
@click.option("--http", "http", default="127.0.0.1:9110", show_default=True,
              help="HOST:PORT for /healthz and /metrics. The default, if busy, moves to a free port.")  # fmt: skip
def bridge(*, alertmanager_url: str, grafana_url: str, repost_s: float, bus: str | None, client_id: str | None,
           site: str, http: str) -> None:  # fmt: skip
    """Subscribe to the events and device states that alert; post them to Alertmanager.

    FACTORY_EVENTS_URL (or FACTORY_MQTT_URL) carries the bridge's own account: `factory-alerts`
    on Mosquitto (`factory provision broker`), `alerts` on a NATS cluster (`factory provision
    nats`), where it reads the FACTORY_EVENTS stream through its durable consumer `alerts` and
    device states from the database; FACTORY_DATABASE_URL the database with its `alerting` schema."""
    settings = current()
    bus_url = bus or settings.events()
    try:
        target = parse_bus_url(bus_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bus") from exc
    instance = claim_instance("factory-alerts")
    host, _, port = http.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {http!r}", param_hint="--http")
    config = BridgeConfig(database_url=settings.database(), bus_url=bus_url,
                          client_id=client_id or instance.client_id, alertmanager_url=alertmanager_url,
                          grafana_url=grafana_url, repost_s=repost_s, site=site, http_host=host, http_port=int(port),
                          http_fallback=not given("http"))  # fmt: skip
    reading = (
        f"consumer {DURABLE} at {target.url}"
        if target.url.startswith("nats:")
        else f"MQTT client id {config.client_id}"
    )
    click.echo(f"alert bridge: {reading}, Alertmanager {alertmanager_url}", err=True)
    run_service(run_bridge(config))
