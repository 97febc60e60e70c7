"""Sessions that can be ended: refresh tokens rotate on use and a reused one ends its session;
a session ends 7 days after its sign-in however often it is refreshed; disabling, deleting or
resetting the password of a user ends their sessions at once, access tokens included; admins
manage users over the API and the command line. Over real HTTP with the real database."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from click.testing import CliRunner
from erp_support import SECRET, customer, ok, order, product, receive, running, unique, warehouse

from erp_api.cli import erp

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


async def sign_in(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    return await ok(await client.post("/api/v1/auth/token", data={"username": name, "password": password}))


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def made_user(admin: httpx.AsyncClient, role: str = "planner") -> str:
    name = unique("u").lower()
    created = await ok(await admin.post("/api/v1/auth/users", json={"username": name, "role": role, "password": PASSWORD}), 201)  # fmt: skip
    assert (created["username"], created["role"], created["active"]) == (name, role, True)
    return name


async def test_refresh_tokens_rotate_and_a_reused_one_ends_the_session(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as admin, api.client(None) as anon:
        name = await made_user(admin)
        first = await sign_in(anon, name)
        second = await ok(await refresh(anon, first["refresh_token"]))
        assert second["refresh_token"] != first["refresh_token"]
        # The session keeps its end: the new refresh token expires when the first did.
        claims = [jwt.decode(p["refresh_token"], SECRET, algorithms=["HS256"], options={"verify_iss": False})
                  for p in (first, second)]  # fmt: skip
        assert claims[1]["exp"] == claims[0]["exp"]
        third = await ok(await refresh(anon, second["refresh_token"]))
        # The first token again: it leaked, so the whole session ends, its newest token too.
        reused = await refresh(anon, first["refresh_token"])
        assert reused.status_code == 401
        assert "used before" in reused.json()["detail"]
        ended = await refresh(anon, third["refresh_token"])
        assert ended.status_code == 401
        assert "session was ended" in ended.json()["detail"]
        # Another sign-in is another session, untouched by the first one's end.
        other = await sign_in(anon, name)
        await ok(await refresh(anon, other["refresh_token"]))
        forged = await refresh(anon, tokens_of_a_stranger())
        assert forged.status_code == 401


def tokens_of_a_stranger() -> str:
    """A refresh token signed with this service's secret but never issued by it."""
    claims = {"iss": "factory-erp", "sub": "nobody", "role": "admin", "iat": 1, "exp": 4_000_000_000,
              "typ": "refresh", "jti": "00000000-0000-0000-0000-000000000000"}  # fmt: skip
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize("ending", ["disable", "password", "delete"])
async def test_ending_a_user_refuses_their_tokens_at_once(database_url: str, ending: str) -> None:
    async with running(database_url) as api, api.client("admin") as admin, api.client(None) as anon:
        name = await made_user(admin)
        pair = await sign_in(anon, name)
        assert (await anon.get("/api/v1/orders", headers=bearer(pair))).status_code == 200
        url = f"/api/v1/auth/users/{name}"
        if ending == "disable":
            changed = await ok(await admin.patch(url, json={"active": False}))
            assert changed["active"] is False
        elif ending == "password":
            reset = await admin.put(f"{url}/password", json={"password": "another long password"})
            assert reset.status_code == 204
        else:
            assert (await admin.delete(url)).status_code == 204
        refused = await anon.get("/api/v1/orders", headers=bearer(pair))
        assert refused.status_code == 401
        assert "revoked" in refused.json()["detail"]
        assert (await refresh(anon, pair["refresh_token"])).status_code == 401
        if ending == "disable":
            assert (await anon.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})).status_code == 401  # fmt: skip
            await ok(await admin.patch(url, json={"active": True}))
            again = await sign_in(anon, name)  # enabled: a new sign-in works, old tokens stay refused
            assert (await anon.get("/api/v1/orders", headers=bearer(again))).status_code == 200
            assert (await anon.get("/api/v1/orders", headers=bearer(pair))).status_code == 401
        if ending == "password":
            await sign_in(anon, name, "another long password")


async def test_other_processes_refuse_the_tokens_within_a_second(database_url: str) -> None:
    """Two API processes on one database: a user disabled through one is refused by the other
    as soon as it reads the revocations (every second)."""
    async with (
        running(database_url) as one, running(database_url) as two,
        one.client("admin") as admin, one.client(None) as anon, two.client(None) as elsewhere,
    ):  # fmt: skip
        name = await made_user(admin)
        pair = await sign_in(anon, name)
        assert (await elsewhere.get("/api/v1/orders", headers=bearer(pair))).status_code == 200
        await ok(await admin.patch(f"/api/v1/auth/users/{name}", json={"active": False}))
        async with asyncio.timeout(5):
            while (await elsewhere.get("/api/v1/orders", headers=bearer(pair))).status_code != 401:
                await asyncio.sleep(0.1)


async def test_admins_manage_users_and_only_admins(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as admin, api.client("planner") as planner:
        name = await made_user(admin, "operator")
        listed = await ok(await admin.get("/api/v1/auth/users"))
        assert any(u["username"] == name and u["role"] == "operator" for u in listed)
        assert all("password" not in json.dumps(u) for u in listed)
        promoted = await ok(await admin.patch(f"/api/v1/auth/users/{name}", json={"role": "planner"}))
        assert promoted["role"] == "planner"
        taken = await admin.post("/api/v1/auth/users", json={"username": name, "role": "planner", "password": PASSWORD})
        assert taken.status_code == 409
        short = await admin.post("/api/v1/auth/users", json={"username": unique("s").lower(), "role": "planner", "password": "short"})  # fmt: skip
        assert short.status_code == 422
        assert short.json()["errors"][0]["field"] == "body.password"
        assert (await admin.patch("/api/v1/auth/users/nobody-at-all", json={"active": False})).status_code == 404
        assert (await admin.delete("/api/v1/auth/users/test-admin")).status_code == 409  # not yourself
        for method, url in (("GET", "/api/v1/auth/users"), ("DELETE", f"/api/v1/auth/users/{name}")):
            assert (await planner.request(method, url)).status_code == 403


async def test_users_from_the_command_line(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    runner = CliRunner()
    async with running(database_url) as api, api.client("admin") as admin, api.client(None) as anon:
        name = await made_user(admin)
        pair = await sign_in(anon, name)
        disabled = await asyncio.to_thread(runner.invoke, erp, ["disable", name])
        assert disabled.exit_code == 0, disabled.output
        async with asyncio.timeout(5):  # the server reads the revocation within a second
            while (await anon.get("/api/v1/orders", headers=bearer(pair))).status_code != 401:
                await asyncio.sleep(0.1)
        listed = await asyncio.to_thread(runner.invoke, erp, ["users", "--json"])
        assert {"username": name, "role": "planner", "active": False}.items() <= next(
            u for u in json.loads(listed.output) if u["username"] == name
        ).items()
        enabled = await asyncio.to_thread(runner.invoke, erp, ["enable", name])
        assert enabled.exit_code == 0, enabled.output
        await sign_in(anon, name)
        missing = await asyncio.to_thread(runner.invoke, erp, ["disable", "nobody-at-all"])
        assert missing.exit_code == 2
        assert "no user named" in missing.output


async def test_a_clerk_enters_orders_and_receipts_and_nothing_of_the_books(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as admin, api.client(None) as anon:
        name = await made_user(admin, "clerk")
        clerk = httpx.AsyncClient(base_url=api.base_url, headers=bearer(await sign_in(anon, name)), timeout=20)
        async with clerk:
            p = await product(admin)
            w = await warehouse(admin)
            c = await customer(clerk)  # customers: yes
            await receive(clerk, p["id"], w["id"], "5")  # goods receipts: yes
            o = await order(clerk, c["id"], w["id"], [(p["id"], "2")])
            await ok(await clerk.post(f"/api/v1/orders/{o['id']}/confirm"))
            assert (await clerk.get("/api/v1/invoices")).status_code == 200
            refused = {
                "POST /api/v1/products": await clerk.post("/api/v1/products", json={}),
                "POST /api/v1/inventory/adjustments": await clerk.post("/api/v1/inventory/adjustments", json={}),
                "POST /api/v1/invoices": await clerk.post("/api/v1/invoices", json={"order_id": o["id"]}),
                "GET /api/v1/ledger/trial-balance": await clerk.get("/api/v1/ledger/trial-balance"),
                "GET /api/v1/auth/users": await clerk.get("/api/v1/auth/users"),
            }
            assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 403)
