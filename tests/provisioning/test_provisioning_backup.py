"""`factory backup` and `factory restore` with the real pg_dump and pg_restore: a database with
telemetry, ERP documents and the journal comes back table for table (row counts and a
checksum of every table's contents); a damaged dump, a missing manifest and a non-empty
target are refused with a clear message; old backups are rotated out."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from erp_support import customer, ok, order, product, receive, running, warehouse
from psycopg import sql

from factory.db import connect, drop_database
from factory_cli.command import main
from ingest.store import Samples, TagInfo, TelemetryStore
from provisioning.backup import _tables, backups

pytestmark = pytest.mark.integration


def _sibling(url: str, name: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **params)


@pytest.fixture
async def scratch(database_url: str) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet, dropped afterwards."""
    url = _sibling(database_url, f"factory_restore_{uuid.uuid4().hex[:10]}")
    yield url
    await drop_database(url)


async def _cli(args: list[str], url: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, args, env={"FACTORY_DATABASE_URL": url})


async def _fill(database_url: str, db: psycopg.AsyncConnection[Any], site: str) -> None:
    """Telemetry (with a NULL value) and an order that was confirmed, invoiced and paid."""
    async with db.transaction():
        store = TelemetryStore(db)
        device = await store.device_id(site, "plc1")
        await store.register_tags(device, [TagInfo("mill.speed", "rpm", "number")])
        ids = await store.tag_ids(device, ["mill.speed"])
        samples = Samples()
        samples.extend([ids["mill.speed"]] * 3, [1_700_000_000_000, 1_700_000_001_000, 1_700_000_002_000],
                       [1.5, None, 2.5], [0, 2, 0])  # fmt: skip
        await store.write_samples(samples)
    async with running(database_url) as api, api.client("admin") as client:
        c, w, p = await customer(client), await warehouse(client), await product(client, price="12.34")
        await receive(client, p["id"], w["id"], "5")
        o = await order(client, c["id"], w["id"], [(p["id"], "2")])
        await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm"))
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        await ok(await client.post(f"/api/v1/invoices/{invoice['id']}/payments", json={"amount": invoice["gross"]}), 201)  # fmt: skip


async def _contents(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and an MD5 of its rows in a fixed order."""
    async with await connect(url, autocommit=True) as conn:
        found = {}
        for table in await _tables(conn):
            schema, name = table.split(".", 1)
            ident = sql.Identifier(schema, name)
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t")
            cur = await conn.execute(query.format(ident))
            row = await cur.fetchone()
            assert row is not None
            found[table] = (int(row[0]), str(row[1]))
        return found


async def test_a_backup_restores_table_for_table(
    database_url: str, db: psycopg.AsyncConnection[Any], site: str, scratch: str, tmp_path: Path
) -> None:
    await _fill(database_url, db, site)
    made = await _cli(["backup", "--dir", str(tmp_path), "--json"], database_url)
    assert made.exit_code == 0, made.output
    manifest = json.loads(made.output)
    assert manifest["rows"]["erp.journal_line"] >= 4  # an invoice and its payment post two lines each at least
    assert manifest["rows"]["telemetry.sample"] >= 3
    assert manifest["timescaledb"] is None
    saved = await _contents(database_url)
    assert {t: n for t, (n, _) in saved.items()} == manifest["rows"]  # nothing wrote in between

    dump = tmp_path / manifest["file"]
    restored = await _cli(["restore", str(dump), "--json"], scratch)
    assert restored.exit_code == 0, restored.output
    report = json.loads(restored.output)
    assert report["tables"] == len(saved)
    assert report["rows"] == sum(n for n, _ in saved.values())
    assert await _contents(scratch) == saved

    # The restored database is a working one: the ERP serves it, and its ledger balances.
    async with running(scratch) as api, api.client("accountant") as client:
        balance = await ok(await client.get("/api/v1/ledger/trial-balance"))
    assert balance["balanced"]
    assert Decimal(balance["total_debit"]["amount"]) > 0

    again = await _cli(["restore", str(dump)], scratch)
    assert again.exit_code == 2
    assert "is not empty" in again.output
    assert "restore into a new or empty database" in again.output


async def test_a_damaged_or_incomplete_backup_is_refused(database_url: str, scratch: str, tmp_path: Path) -> None:
    made = await _cli(["backup", "--dir", str(tmp_path), "--json"], database_url)
    dump = tmp_path / json.loads(made.output)["file"]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged" / dump.name
    damaged.parent.mkdir()
    damaged.write_bytes(bytes(data))
    (damaged.parent / dump.with_suffix(".json").name).write_text(dump.with_suffix(".json").read_text())
    refused = await _cli(["restore", str(damaged)], scratch)
    assert refused.exit_code == 2
    assert "checksum does not match the manifest" in refused.output
    dump.with_suffix(".json").unlink()
    alone = await _cli(["restore", str(dump)], scratch)
    assert alone.exit_code == 2
    assert "no manifest beside the dump" in alone.output


async def test_old_backups_are_rotated_out(database_url: str, tmp_path: Path) -> None:
    names = []
    for _ in range(3):
        made = await _cli(["backup", "--dir", str(tmp_path), "--keep", "2", "--json"], database_url)
        assert made.exit_code == 0, made.output
        names.append(json.loads(made.output)["file"])
        await asyncio.sleep(1.1)  # backups are named by the second they were made
    assert [p.name for p in backups(tmp_path)] == names[1:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[1:], *(Path(n).with_suffix(".json").name for n in names[1:])])  # fmt: skip
