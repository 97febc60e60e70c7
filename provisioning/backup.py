"""Backups that can be restored: ``factory backup`` and ``factory restore``.

A backup is ``pg_dump``'s custom format (compressed, restorable table by table) and a
manifest beside it (``factory-<UTC time>.dump`` and ``.json``). The manifest holds the
dump's SHA-256, the server and TimescaleDB versions, and the row count of every table,
counted in the very snapshot ``pg_dump`` dumps (an exported snapshot), so a restore can
prove it brought back exactly what was saved. Older backups beyond ``keep`` are deleted
after a new one is complete; a half-written dump never carries a backup's name.

A restore goes only into an empty database (it is created when missing): it checks the
dump against its manifest, runs ``pg_restore`` (TimescaleDB's ``timescaledb_pre_restore``
and ``timescaledb_post_restore`` around it where the backup had the extension), applies the
platform's role grants again (``provisioning/sql/0002_roles.sql``; ownership and grants are
not restored, so a backup restores into another cluster too), and compares every table's
row count with the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from factory.db import Flavor, client_binary, connect, create_database, redact
from provisioning.devices import ProvisioningError
from provisioning.migrate import plan

__all__ = ["BACKUP_RE", "Manifest", "Restored", "backup", "backups", "restore"]

BACKUP_RE: Final = re.compile(r"^factory-(\d{8}T\d{6}Z)\.dump$")
ROLES_MIGRATION: Final = "0002_roles.sql"
# The tables a backup counts: every schema but PostgreSQL's and TimescaleDB's own; a
# partitioned table or hypertable once, its count including its partitions or chunks.
_TABLES: Final = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'timescaledb_information', 'timescaledb_experimental')
   AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE '\\_timescaledb%'
 ORDER BY 1, 2"""


@dataclass(frozen=True, slots=True)
class Manifest:
    file: str
    created_at: str
    database: str  # redacted URL
    server_version: str
    timescaledb: str | None  # the extension's version, None on plain PostgreSQL
    bytes: int
    sha256: str
    rows: dict[str, int]  # "schema.table" -> rows, in the dumped snapshot

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, dump: Path) -> Manifest:
        path = dump.with_suffix(".json")
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise ProvisioningError(f"{path}: no manifest beside the dump; a backup is both files") from None
        except (ValueError, TypeError) as exc:
            raise ProvisioningError(f"{path}: not a backup manifest ({exc})") from None


@dataclass(frozen=True, slots=True)
class Restored:
    file: str
    database: str
    tables: int
    rows: int
    seconds: float


def backups(directory: Path) -> list[Path]:
    """The complete backups in ``directory``, oldest first."""
    return sorted(p for p in directory.glob("factory-*.dump") if BACKUP_RE.match(p.name))


async def backup(url: str, directory: Path, *, keep: int) -> Manifest:
    """Dump the database at ``url`` into ``directory``; keep the newest ``keep`` backups."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = directory / f"factory-{stamp}.dump"
    partial = final.with_suffix(".dump.partial")
    async with await connect(url, application_name="factory-backup") as conn:
        # One REPEATABLE READ transaction holds the snapshot pg_dump dumps while we count in it.
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            snapshot = await _scalar(conn, "SELECT pg_export_snapshot()")
            rows = await _row_counts(conn)
            server = await _scalar(conn, "SHOW server_version")
            timescaledb = await _extension_version(conn)
            await _run(url, client_binary("pg_dump"), "--format=custom", f"--snapshot={snapshot}", f"--file={partial}")
    digest = _sha256(partial)
    manifest = Manifest(
        file=final.name, created_at=datetime.now(UTC).isoformat(), database=redact(url), server_version=server,
        timescaledb=timescaledb, bytes=partial.stat().st_size, sha256=digest, rows=rows,
    )  # fmt: skip
    manifest.write(final.with_suffix(".json"))
    partial.rename(final)
    for old in backups(directory)[:-keep]:
        old.unlink()
        old.with_suffix(".json").unlink(missing_ok=True)
    return manifest


async def restore(dump: Path, url: str) -> Restored:
    """Restore ``dump`` into the empty (or missing) database at ``url`` and prove it whole."""
    started = time.monotonic()
    manifest = Manifest.read(dump)
    if _sha256(dump) != manifest.sha256:
        raise ProvisioningError(
            f"{dump}: its checksum does not match the manifest; the file is damaged or not this backup"
        )
    await create_database(url)
    async with await connect(url, autocommit=True, application_name="factory-restore") as conn:
        present = await _tables(conn)
        if present:
            raise ProvisioningError(
                f"database {redact(url)} is not empty ({len(present)} tables, such as {present[0]}): "
                "restore into a new or empty database"
            )
        if manifest.timescaledb is not None:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            await conn.execute("SELECT timescaledb_pre_restore()")
        try:
            await _run(url, client_binary("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", str(dump))
        finally:
            if manifest.timescaledb is not None:
                await conn.execute("SELECT timescaledb_post_restore()")
        await conn.execute(_roles_sql(manifest))
        restored = await _row_counts(conn)
    differ = {t: (n, restored.get(t)) for t, n in manifest.rows.items() if restored.get(t) != n}
    if differ:
        shown = ", ".join(f"{t}: {n} saved, {got} restored" for t, (n, got) in list(differ.items())[:5])
        raise ProvisioningError(f"the restore of {dump.name} differs from its manifest: {shown}")
    return Restored(file=dump.name, database=redact(url), tables=len(restored), rows=sum(restored.values()),
                    seconds=round(time.monotonic() - started, 2))  # fmt: skip


def _roles_sql(manifest: Manifest) -> str:
    flavor: Flavor = "postgres" if manifest.timescaledb is None else "timescaledb"
    return next(m.sql for m in plan(flavor) if m.component == "provisioning" and m.name == ROLES_MIGRATION)


async def _tables(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute(_TABLES)
    return [f"{schema}.{name}" for schema, name in await cur.fetchall()]


async def _row_counts(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in await _tables(conn):
        schema, name = table.split(".", 1)
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts[table] = int(await _scalar(conn, query))
    return counts


async def _extension_version(conn: psycopg.AsyncConnection[Any]) -> str | None:
    cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def _scalar(conn: psycopg.AsyncConnection[Any], query: sql.Composable | str) -> Any:
    cur = await conn.execute(query)  # type: ignore[arg-type]
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def _run(url: str, program: str, *args: str) -> None:
    """Run a PostgreSQL client program on the database at ``url``, the password (if any) in
    its environment rather than on its command line; its error output becomes the error."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password is not None else {})}
    proc = await asyncio.create_subprocess_exec(
        program, *args, f"--dbname={make_conninfo('', **params)}", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        said = redact(err.decode(errors="replace").strip())[:2000]
        raise ProvisioningError(f"{Path(program).name} failed (exit {proc.returncode}): {said}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
