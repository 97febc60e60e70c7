"""The ERP API over real HTTP with the real database: health, OpenAPI, authentication and
the role check on every route."""

from __future__ import annotations

import asyncio
import re

import psycopg
import pytest
from click.testing import CliRunner
from erp_support import SECRET, running, unique
from fastapi.routing import APIRoute

from erp_api import create_app, users
from erp_api.app import api_routes
from erp_api.audit import Actor
from erp_api.cli import provision_user
from erp_api.config import DEV_JWT_SECRET, resolve_jwt_secret
from erp_api.errors import ErpConfigError
from erp_api.openapi import route_roles
from erp_api.security import ALL_ROLES, verify_password
from factory_servers import free_port

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


async def test_health_and_openapi(database_url: str) -> None:
    async with running(database_url) as api, api.client(None) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["database"] == "ok"
        spec = (await client.get("/openapi.json")).json()
        assert spec["info"]["title"] == "Factory ERP API"
        assert "/healthz" in spec["paths"]
        assert "/metrics" in spec["paths"]
        me = spec["paths"]["/api/v1/auth/me"]["get"]
        assert set(me["x-roles"]) == ALL_ROLES
        assert {"401", "403"} <= set(me["responses"])
        assert (await client.get("/docs")).status_code == 200
        for path in ("/api/v1/orders/123456789", "/api/v1/orders/987654321", "/nothing/here/1", "/nothing/here/2"):
            await client.get(path)  # no credentials: 401 from the order route; 404 from no route
        scraped = await client.get("/metrics")
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = dict(line.rsplit(" ", 1) for line in scraped.text.splitlines() if not line.startswith("#"))
        assert samples['factory_erp_info{version="0.1.0"}'] == "1.0"
        assert float(samples["factory_erp_db_pool_requests_total"]) >= 1  # the health check's connection
        assert float(samples["factory_erp_db_pool_timeouts_total"]) == 0
        assert "factory_erp_outbox_published_total" not in samples  # no relay in this app
        duration = "factory_erp_request_duration_seconds"
        assert float(samples[f'{duration}_count{{method="GET",route="/healthz",status="200"}}']) >= 1
        # One series per route template and status, whatever the ids; unknown paths share one.
        assert samples[f'{duration}_count{{method="GET",route="/api/v1/orders/{{order_id}}",status="401"}}'] == "2.0"
        assert samples[f'{duration}_count{{method="GET",route="other",status="404"}}'] == "2.0"
        assert samples[f'{duration}_bucket{{method="GET",route="other",status="404",le="+Inf"}}'] == "2.0"
        assert not any("123456789" in name or "/nothing" in name for name in samples)


async def test_health_reports_an_unreachable_database() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    async with running(dead) as api, api.client(None) as client:
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "database": "unreachable", "version": "0.1.0"}
        scraped = await client.get("/metrics")  # still answers: what an operator looks at then
        assert scraped.status_code == 200
        assert "factory_erp_db_pool_timeouts_total " in scraped.text


async def test_password_flow_refresh_and_me(database_url: str, db: psycopg.AsyncConnection) -> None:
    name = unique("planner").lower()
    await users.create_user(db, name, "planner", PASSWORD, by=Actor.local())
    async with running(database_url) as api, api.client(None) as client:
        issued = await client.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert issued.status_code == 200, issued.text
        pair = issued.json()
        assert set(pair) >= {"access_token", "refresh_token", "token_type"}
        assert pair["token_type"] == "bearer"
        me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.json() == {"name": name, "role": "planner", "via": "token"}
        # a refresh token is not an access token, and vice versa
        wrong = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['refresh_token']}"})
        assert wrong.status_code == 401
        assert wrong.headers["content-type"] == "application/problem+json"
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 200
        assert refreshed.json()["access_token"] != pair["access_token"]
        bad = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["access_token"]})
        assert bad.status_code == 401
        # a disabled user can no longer refresh
        await db.execute("UPDATE erp.app_user SET active = false WHERE username = %s", (name,))
        gone = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert gone.status_code == 401


async def test_wrong_password_and_unknown_user_get_the_same_401(database_url: str, db: psycopg.AsyncConnection) -> None:
    name = unique("acct").lower()
    await users.create_user(db, name, "accountant", PASSWORD, by=Actor.local())
    async with running(database_url) as api, api.client(None) as client:
        wrong = await client.post("/api/v1/auth/token", data={"username": name, "password": "not the password"})
        unknown = await client.post("/api/v1/auth/token", data={"username": "nobody-here", "password": PASSWORD})
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["detail"] == unknown.json()["detail"]
        stored = await (
            await db.execute("SELECT password_hash FROM erp.app_user WHERE username = %s", (name,))
        ).fetchone()
        assert stored is not None
        assert stored[0].startswith("$argon2id$")
        assert PASSWORD not in stored[0]


async def test_api_keys_for_services(database_url: str) -> None:
    name = unique("analytics").lower()
    async with running(database_url) as api, api.client("admin") as admin, api.client(None) as anon:
        created = await admin.post("/api/v1/auth/api-keys", json={"name": name, "role": "service"})
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        me = await anon.get("/api/v1/auth/me", headers={"X-API-Key": key})
        assert me.json() == {"name": f"key:{name}", "role": "service", "via": "api_key"}
        listed = (await admin.get("/api/v1/auth/api-keys")).json()
        assert any(k["name"] == name and "key" not in k for k in listed)
        again = await admin.post("/api/v1/auth/api-keys", json={"name": name, "role": "service"})
        assert again.status_code == 409
        assert again.json()["errors"][0]["field"] == "name"
        assert (await admin.delete(f"/api/v1/auth/api-keys/{name}")).status_code == 204
        assert (await anon.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 401
        assert (await anon.get("/api/v1/auth/me", headers={"X-API-Key": "fk_made-up"})).status_code == 401


def _api_routes() -> list[tuple[str, APIRoute]]:
    routes = api_routes()
    spec = create_app("postgresql://unused", jwt_secret=SECRET).openapi()
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert {(p, m.lower()) for p, r in routes for m in r.methods} <= documented
    assert len(documented) == len({(p, m.lower()) for p, r in routes for m in r.methods}) + 2  # + /healthz, /metrics
    return routes


# Routes every role may call (reads a service needs too: spare parts, their stock, work
# orders): there is no wrong role to try on them. Adding to this list must be deliberate.
OPEN_TO_ALL = {
    ("GET", "/api/v1/auth/me"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products/{product_id}"),
    ("GET", "/api/v1/warehouses"),
    ("GET", "/api/v1/warehouses/{warehouse_id}"),
    ("GET", "/api/v1/inventory/stock"),
    ("GET", "/api/v1/inventory/stock/{product_id}/{warehouse_id}"),
    ("GET", "/api/v1/inventory/movements"),
    ("GET", "/api/v1/work-orders"),
    ("GET", "/api/v1/work-orders/{work_order_id}"),
}
NO_CREDENTIALS = {"/api/v1/auth/token", "/api/v1/auth/refresh"}


async def test_every_route_answers_401_without_credentials_and_403_for_a_wrong_role(database_url: str) -> None:
    routes = _api_routes()
    assert len(routes) >= 5
    checked = 0
    async with running(database_url) as api, api.client(None) as anon:
        for full_path, route in routes:
            path = re.sub(r"\{[^}]+\}", "1", full_path)
            roles = route_roles(route)
            if full_path in NO_CREDENTIALS:
                assert roles is None
                continue
            assert roles, f"{full_path} has no role guard"
            for method in route.methods:
                response = await anon.request(method, path)
                assert response.status_code == 401, f"{method} {path}: {response.status_code}"
                assert response.headers["content-type"] == "application/problem+json"
                wrong = sorted(ALL_ROLES - roles)
                assert (not wrong) == ((method, full_path) in OPEN_TO_ALL), f"{method} {full_path}: {sorted(roles)}"
                if not wrong:
                    continue
                for role in wrong:
                    async with api.client(role) as client:
                        denied = await client.request(method, path)
                    assert denied.status_code == 403, f"{method} {path} as {role}: {denied.status_code}"
                    checked += 1
    assert checked >= len(routes) - len(NO_CREDENTIALS) - len(OPEN_TO_ALL)
    assert sum(len(r.methods) for _, r in routes) > 40


def test_jwt_secret_policy() -> None:
    with pytest.raises(ErpConfigError, match="FACTORY_JWT_SECRET is not set"):
        resolve_jwt_secret(None, dev=False)
    assert resolve_jwt_secret(None, dev=True) == DEV_JWT_SECRET
    for weak in (
        "changeme",
        DEV_JWT_SECRET,
        "short-but-random-7f3a",
        "a" * 36,
        "abc" * 20,
        "erp-test-secret-" + "k" * 40,
    ):
        with pytest.raises(ErpConfigError):
            resolve_jwt_secret(weak, dev=False)
    assert resolve_jwt_secret(SECRET, dev=False) == SECRET
    with pytest.raises(ErpConfigError):
        create_app("postgresql://unused", jwt_secret="changeme")


async def test_provision_user_reads_the_password_from_stdin(database_url: str, db: psycopg.AsyncConnection,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    name = unique("op").lower()
    runner = CliRunner()
    result = await _invoke(runner, [name, "--role", "operator", "--password-stdin", "--json"], PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert '"role": "operator"' in result.output
    found = await users.user_by_name(db, name)
    assert found is not None
    assert await verify_password(PASSWORD, found[1])
    assert not await verify_password(PASSWORD + "\n", found[1])
    again = await _invoke(runner, [name, "--role", "operator", "--password-stdin"], PASSWORD)
    assert again.exit_code == 2
    assert "already exists" in again.output
    short = await _invoke(runner, [unique("x").lower(), "--role", "admin", "--password-stdin"], "short")
    assert short.exit_code == 2
    assert "password" in short.output


async def _invoke(runner: CliRunner, args: list[str], stdin: str):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(runner.invoke, provision_user, args, input=stdin)
