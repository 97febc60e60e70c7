"""Failed sign-ins lock the account name and the client address with growing locks; a locked
sign-in is refused before its password is checked (even the right one), an admin unlocks,
and a name that is no account locks the same way. Over real HTTP with the real database."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from erp_support import ok, running, unique

from erp_api import users
from erp_api.audit import Actor
from erp_api.cli import erp
from erp_api.config import LoginPolicy

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


async def sign_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": name, "password": password})


def address() -> dict[str, str]:
    """An address of this test's own: the server trusts X-Forwarded-For from loopback, as
    from a gateway in front of it."""
    return {"X-Forwarded-For": f"10.{os.getpid() % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"}


async def test_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    name = unique("clerk").lower()
    await users.create_user(db, name, "accountant", PASSWORD, by=Actor.local())
    async with (
        running(database_url, login=LoginPolicy(refusal_delay_s=0)) as api,  # 200 answers, not 200 s
        api.client(None, **address()) as anon,
        api.client("admin") as admin,
    ):
        statuses = [(await sign_in(anon, name, "wrong password")).status_code for _ in range(200)]
        # Five free failures, the sixth locks for 1 s; from then on refusals cost no Argon2.
        assert statuses[:6] == [401] * 6
        assert statuses.count(401) < 12  # a few more only where a short lock ran out meanwhile
        assert statuses.count(429) > 180
        locked = await sign_in(anon, name, PASSWORD)  # the right password is not even checked
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) >= 1
        assert locked.json()["type"] == "urn:factory:erp:problem:too-many-attempts"

        listed = await ok(await admin.get("/api/v1/auth/locks"))
        mine = next(row for row in listed if row["kind"] == "account" and row["key"] == name)
        assert mine["locked"] is True
        assert mine["failures"] == statuses.count(401)
        assert (await admin.delete(f"/api/v1/auth/locks/account/{name}")).status_code == 204
        assert (await admin.delete(f"/api/v1/auth/locks/account/{name}")).status_code == 404
        assert (await sign_in(anon, name, PASSWORD)).status_code == 200
        async with api.client("planner") as planner:
            assert (await planner.get("/api/v1/auth/locks")).status_code == 403


async def test_a_lock_runs_out_and_a_success_forgets_the_failures(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    name = unique("op").lower()
    await users.create_user(db, name, "operator", PASSWORD, by=Actor.local())
    async with running(database_url, login=LoginPolicy()) as api, api.client(None, **address()) as anon:
        for _ in range(6):
            assert (await sign_in(anon, name, "wrong password")).status_code == 401
        sent = time.monotonic()
        refused = await sign_in(anon, name, PASSWORD)
        assert refused.status_code == 429
        assert time.monotonic() - sent >= LoginPolicy().refusal_delay_s  # refusals come late: no hammering
        await asyncio.sleep(int(refused.headers["retry-after"]))
        assert (await sign_in(anon, name, PASSWORD)).status_code == 200
        # The success forgot the name's failures: five wrong ones are free again.
        for _ in range(5):
            assert (await sign_in(anon, name, "wrong password")).status_code == 401


async def test_one_address_trying_many_names_is_locked_too(database_url: str) -> None:
    async with (
        running(database_url, login=LoginPolicy(free_address=10)) as api,
        api.client(None, **address()) as anon,
        api.client(None, **address()) as elsewhere,
    ):
        statuses = [(await sign_in(anon, unique("nobody"), "wrong password")).status_code for _ in range(12)]
        assert statuses[:11] == [401] * 11  # 10 free failures for the address, the 11th locks it
        assert statuses[11] == 429
        assert (await sign_in(elsewhere, unique("nobody"), "wrong password")).status_code == 401


async def test_unlock_from_the_command_line(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    name = unique("ghost").lower()
    async with running(database_url, login=LoginPolicy()) as api, api.client(None, **address()) as anon:
        for _ in range(6):
            await sign_in(anon, name, "wrong password")
        runner = CliRunner()
        listed = await asyncio.to_thread(runner.invoke, erp, ["locks", "--json"])
        assert listed.exit_code == 0, listed.output
        assert any(row["key"] == name and row["locked"] for row in json.loads(listed.output))
        done = await asyncio.to_thread(runner.invoke, erp, ["unlock", name])
        assert done.exit_code == 0, done.output
        again = await asyncio.to_thread(runner.invoke, erp, ["unlock", name])
        assert again.exit_code == 2
        assert "no failed sign-ins recorded" in again.output
        assert (await sign_in(anon, name, "wrong password")).status_code == 401  # unlocked: checked again
