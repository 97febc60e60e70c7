"""Database migrations: plain SQL files in the package that owns each schema, and a tiny runner.

Files are ``NNNN_name.sql`` (always), ``NNNN_name.timescaledb.sql`` (only where the
TimescaleDB extension is available) and ``NNNN_name.postgres.sql`` (only where it is
not); a version number names one step, whichever variant ran. Applied steps are
recorded with a checksum in ``provisioning.schema_migration``; an applied file that
changed afterwards is an error, not something to paper over.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import psycopg

from factory.db import Flavor

__all__ = [
    "COMPONENTS",
    "Flavor",
    "Migration",
    "MigrationError",
    "detect_flavor",
    "migrate",
    "plan",
]

log = logging.getLogger(__name__)

# (schema, package holding its SQL), in the order they must be applied.
COMPONENTS: Final = (
    ("telemetry", "ingest.sql"),
    # one line per part that owns a schema, in the order they must be applied
    ("erp", "erp_api.sql"),
    ("analytics", "analytics.sql"),
    ("maintenance", "maintenance_models.sql"),
    ("provisioning", "provisioning.sql"),
    ("alerting", "alerting.sql"),
)
LOCK_KEY: Final = 0x6661637472790001  # pg_advisory_xact_lock key: one migrator at a time
FILE_RE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(timescaledb|postgres))?\.sql$")


class MigrationError(RuntimeError):
    """Migrations cannot be applied; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def plan(flavor: Flavor) -> list[Migration]:
    """Every migration for this database flavor, in order."""
    steps: list[Migration] = []
    for component, package in COMPONENTS:
        seen: set[int] = set()
        for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
            match = FILE_RE.match(entry.name)
            if not match or (match.group(3) and match.group(3) != flavor):
                continue
            version = int(match.group(1))
            if version in seen:
                raise MigrationError(f"{package}/{entry.name}: version {version} appears twice")
            seen.add(version)
            steps.append(Migration(component, version, entry.name, entry.read_text(encoding="utf-8")))
    return steps


async def detect_flavor(conn: psycopg.AsyncConnection[Any]) -> Flavor:
    """TimescaleDB when the extension is installed or can be; plain PostgreSQL otherwise.

    The extension only works when the server preloads its library: ``CREATE EXTENSION``
    without that ends the connection with a FATAL error, so it is not even tried then."""
    cur = await conn.execute(
        "SELECT installed_version, current_setting('shared_preload_libraries')"
        " FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    row = await cur.fetchone()
    if row is None:
        return "postgres"
    installed, preload = row
    if not _preloads_timescaledb(str(preload)):
        if installed is not None:
            raise MigrationError(
                "the timescaledb extension is installed in this database but the server does not preload it:"
                " add timescaledb to shared_preload_libraries and restart PostgreSQL"
            )
        log.warning("timescaledb is available but not in shared_preload_libraries: using plain PostgreSQL")
        return "postgres"
    if installed is None:
        try:
            async with conn.transaction():
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:  # e.g. no privilege to create it
            log.warning("timescaledb is available but cannot be created (%s); using plain PostgreSQL", exc)
            return "postgres"
    return "timescaledb"


def _preloads_timescaledb(setting: str) -> bool:
    """``shared_preload_libraries`` names timescaledb (also as a versioned ``timescaledb-2.x``)."""
    names = (name.strip().strip('"').removesuffix(".so") for name in setting.split(","))
    return any(name.rsplit("/", 1)[-1].split("-")[0] == "timescaledb" for name in names)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Apply what is missing, each file in its own transaction; return the names applied."""
    await conn.execute("CREATE SCHEMA IF NOT EXISTS provisioning")
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS provisioning.schema_migration (
               component  text NOT NULL,
               version    integer NOT NULL,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (component, version))"""
    )
    await conn.commit()
    flavor = await detect_flavor(conn)
    applied: list[str] = []
    for step in plan(flavor):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            cur = await conn.execute(
                "SELECT name, checksum FROM provisioning.schema_migration WHERE component = %s AND version = %s",
                (step.component, step.version),
            )
            done = await cur.fetchone()
            if done is not None:
                if done[1] != step.checksum and done[0] == step.name:
                    raise MigrationError(f"{step.component}/{step.name} changed after it was applied")
                continue
            try:
                await conn.execute(step.sql.encode())
            except psycopg.Error as exc:
                raise MigrationError(f"{step.component}/{step.name}: {exc}") from exc
            await conn.execute(
                "INSERT INTO provisioning.schema_migration (component, version, name, checksum)"
                " VALUES (%s, %s, %s, %s)",
                (step.component, step.version, step.name, step.checksum),
            )
            applied.append(f"{step.component}/{step.name}")
            log.info("applied %s/%s", step.component, step.name)
    return applied
