"""``factory ingest``: the service, and replaying its dead letters."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime

import click

from factory.bus import parse_bus_url
from factory.db import connect
from factory.mqtt import MqttTarget, parse_mqtt_url
from factory.nats import NatsTarget
from factory.runtime import Listen, claim_instance, given, run_service
from factory.settings import current
from ingest.replay import ReplayResult, replay_dead_letters
from ingest.retention import ROLLUP_1H_DAYS, ROLLUP_1M_DAYS, SAMPLE_DAYS, Retention, RetentionError
from ingest.service import IngestConfig, IngestService
from ingest.upkeep import UpkeepConfig

__all__ = ["ingest"]

_FLAGS = {"sample_days": "--retention-days", "sites": "--site-retention", "rollup_1m_days": "--rollup-1m-days",
          "rollup_1h_days": "--rollup-1h-days"}  # fmt: skip


def _site_days(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    """``SITE=DAYS`` options as a mapping; a malformed one or a site named twice is refused."""
    sites: dict[str, int] = {}
    for text in values:
        site, sep, days = text.partition("=")
        if not sep or not days.strip().isdigit():
            raise click.BadParameter(f"expected SITE=DAYS, got {text!r}")
        if site in sites:
            raise click.BadParameter(f"site {site} is given twice")
        sites[site] = int(days)  # the name and the days are checked with the other retentions
    return sites


@click.group()
def ingest() -> None:
    """The ingest service (MQTT to PostgreSQL)."""


@ingest.command("run")
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id [default: factory-ingest-HOST-N, N the lowest instance number free on this host].",
)
@click.option("--bus", default=None, metavar="URL",
              help="Read from this MQTT broker (mqtt://...) or NATS JetStream cluster (nats://h1:4222,h2:4222)"
                   " [default: FACTORY_INGEST_URL, else FACTORY_MQTT_URL].")  # fmt: skip
@click.option(
    "--shared-group",
    default=None,
    help="Share the subscription with other workers ($share/GROUP/...; on NATS, the consumer's name).",
)
@click.option("--site", default="+", show_default=True, help="Only this site's devices ('+' for all).")
@click.option("--session-expiry", type=int, default=7 * 24 * 3600, show_default=True,
              help="Seconds the broker keeps queueing for this client while it is away.")  # fmt: skip
@click.option(
    "--http",
    "http",
    default="127.0.0.1:9101",
    show_default=True,
    help="HOST:PORT for /healthz and /metrics ('' to turn off). The default, if busy, moves to a free port.",
)
@click.option("--batch-points", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="A flush is written once it holds this many points ...")  # fmt: skip
@click.option("--batch-ms", type=click.IntRange(min=1), default=200, show_default=True,
              help="... or once its first message is this old.")  # fmt: skip
@click.option("--upkeep/--no-upkeep", default=True, show_default=True,
              help="Partitions, retention and rollups; with several workers, one is enough.")  # fmt: skip
@click.option("--dead-letter-bytes", type=click.IntRange(min=0), default=4096, show_default=True,
              help="How much of a refused message's payload is kept with its reason.")  # fmt: skip
@click.option("--dead-letter-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Dead letters older than this are deleted (by the worker that does the upkeep).")  # fmt: skip
@click.option("--dead-letters-per-minute", type=click.IntRange(min=1), default=60, show_default=True,
              help="Kept per device; more in a minute are counted, not kept.")  # fmt: skip
@click.option("--retention-days", type=click.IntRange(min=1), default=SAMPLE_DAYS, show_default=True,
              help="Telemetry is kept this long: older points are refused, older partitions dropped.")  # fmt: skip
@click.option("--site-retention", "site_retention", multiple=True, metavar="SITE=DAYS", callback=_site_days,
              help="This site's telemetry is kept this long instead (repeatable; cost: docs/ingest.md).")  # fmt: skip
@click.option("--rollup-1m-days", type=click.IntRange(min=1), default=ROLLUP_1M_DAYS, show_default=True,
              help="Minute rollups are kept this long: at least as long as any site's telemetry.")  # fmt: skip
@click.option("--rollup-1h-days", type=click.IntRange(min=1), default=ROLLUP_1H_DAYS, show_default=True,
              help="Hour rollups are kept this long: at least as long as minute rollups.")  # fmt: skip
def ingest_run(*, bus: str | None, client_id: str | None, shared_group: str | None, site: str, session_expiry: int,
               http: str, batch_points: int, batch_ms: int, upkeep: bool, dead_letter_bytes: int, dead_letter_days: int,
               dead_letters_per_minute: int, retention_days: int, site_retention: dict[str, int],
               rollup_1m_days: int, rollup_1h_days: int) -> None:  # fmt: skip
    """Subscribe to device topics (MQTT, or a NATS JetStream consumer) and write telemetry into the database."""
    settings = current()
    upkeep_config = UpkeepConfig(dead_letter_days=dead_letter_days, rollup_1m_days=rollup_1m_days,
                                 rollup_1h_days=rollup_1h_days)  # fmt: skip
    try:
        Retention(retention_days, site_retention, rollup_1m_days, rollup_1h_days)
    except RetentionError as exc:
        raise click.BadParameter(str(exc), param_hint=_FLAGS[exc.setting]) from exc
    try:
        target = parse_bus_url(bus or settings.ingest())
        nats = target if isinstance(target, NatsTarget) else None
        mqtt = target if isinstance(target, MqttTarget) else parse_mqtt_url(settings.mqtt())  # unused on NATS
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bus") from exc
    instance = claim_instance("factory-ingest")  # held until the process ends
    if client_id is None:
        client_id = instance.client_id
    click.echo(f"ingest: MQTT client id {client_id}", err=True)
    config = IngestConfig(
        database_url=settings.database(), mqtt=mqtt, nats=nats, client_id=client_id,
        shared_group=shared_group, site=site, session_expiry_s=session_expiry,
        http=_listen_option(http, option="--http", fallback=not given("http")), batch_points=batch_points,
        batch_ms=batch_ms, upkeep=upkeep_config if upkeep else None,
        dead_letter_bytes=dead_letter_bytes, dead_letters_per_minute=dead_letters_per_minute,
        retention_days=retention_days, site_retention_days=site_retention,
    )  # fmt: skip
    run_service(IngestService(config).run())


@ingest.command("replay")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Only dead letters received since then (UTC).")  # fmt: skip
@click.option("--topic", "topic_like", default="%", show_default=True, help="Only topics LIKE this.")
@click.option("--retention-days", type=click.IntRange(min=1), default=365, show_default=True,
              help="The window ingest runs with: points older than this are refused again.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would be stored; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def ingest_replay(*, since: datetime | None, topic_like: str, retention_days: int, dry_run: bool,
                  as_json: bool) -> None:  # fmt: skip
    """Run dead letters through ingest again; those now stored leave the dead letters."""
    settings = current()
    config = IngestConfig(database_url=settings.database(), mqtt=parse_mqtt_url("mqtt://127.0.0.1"), upkeep=None,
                          retention_days=retention_days)  # fmt: skip

    async def go() -> ReplayResult:
        async with await connect(config.database_url) as conn:
            when = since.replace(tzinfo=UTC) if since else None
            return await replay_dead_letters(conn, IngestService(config), since=when, topic_like=topic_like,
                                             dry_run=dry_run)  # fmt: skip

    result = asyncio.run(go())
    if as_json:
        click.echo(json.dumps({**asdict(result), "dry_run": dry_run}))
        return
    verb = "would be stored" if dry_run else "stored and removed from the dead letters"
    click.echo(f"{result.examined} dead letters: {result.stored} {verb}, {result.refused} refused again,"
               f" {result.cut} kept cut short (cannot be replayed)")  # fmt: skip
    for reason, count in sorted(result.reasons.items(), key=lambda kv: -kv[1])[:10]:
        click.echo(f"  {count} x {reason}")


def _listen_option(text: str, *, option: str, fallback: bool) -> Listen | None:
    """``HOST:PORT`` from a command line ('' turns the listener off)."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return Listen(host, int(port), option=option, fallback=fallback)
