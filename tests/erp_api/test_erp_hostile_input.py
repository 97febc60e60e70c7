"""Hostile input is a 4xx problem document, never a 500, and the service keeps serving: bodies
too large or nested too deep are refused before they are parsed and before authentication;
tampered cursors and If-Match values beyond any version are refused with the field named.
Over real HTTP with the real database."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from erp_support import customer, ok, running, unique
from psycopg_pool import AsyncConnectionPool

from erp_api import users
from erp_api.config import LoginPolicy
from erp_api.errors import BusyError
from erp_api.hotpath import MAX_DEPTH
from erp_api.security import SignInGate, hash_password

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
PASSWORD = "correct horse battery"


def cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    if field is not None:
        assert [e["field"] for e in body["errors"]] == [field], body
    return body


async def test_bodies_too_large_or_too_deep_are_refused_before_authentication(database_url: str) -> None:
    async with running(database_url, max_content=4096) as api, api.client(None) as anonymous:
        for path in ("/api/v1/orders", "/api/v1/customers", "/api/v1/invoices/1/payments", "/api/v1/auth/token"):
            declared = await anonymous.post(path, content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"})  # fmt: skip
            assert "4096 bytes" in problem(declared, 413)["detail"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
                for _ in range(10):
                    yield b" " * 1000

            streamed = await anonymous.post(path, content=chunks(), headers={"content-type": "application/json"})
            problem(streamed, 413)
            deep = await anonymous.post(path, content=b"[" * 1000 + b"]" * 1000, headers={"content-type": "application/json"})  # fmt: skip
            assert f"at most {MAX_DEPTH} levels" in problem(deep, 422, "body")["detail"]
        # Just under the limits is the ordinary path: authentication first, then validation.
        shallow = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
        assert (await anonymous.post("/api/v1/orders", content=shallow, headers={"content-type": "application/json"})).status_code == 401  # fmt: skip
        assert (await anonymous.get("/healthz")).status_code == 200


async def test_brackets_inside_strings_and_forms_are_not_nesting(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        name = "[" * 100 + ' {deep} in a string \\" ' + "}" * 100
        made = await ok(await client.post("/api/v1/customers", json={"name": name[:200]}), 201)
        assert made["name"] == name[:200]
        # A password full of brackets is a form field, not JSON.
        login = await client.post("/api/v1/auth/token", data={"username": "nobody", "password": "[" * 100})
        problem(login, 401)


async def test_tampered_cursors_are_refused_with_the_field(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        await customer(client)
        for path, sort, payload in (
            ("/api/v1/customers", "name", {"s": "name", "v": "\ud800", "i": 1}),  # a lone surrogate
            ("/api/v1/orders", "id", {"s": "id", "v": "1", "i": 10**30}),  # beyond any id
            ("/api/v1/orders", "id", {"s": "id", "v": "1", "i": True}),
            ("/api/v1/products", "name", {"s": "name", "v": "a\x00b", "i": 1}),
            ("/api/v1/customers", "name", "not json at all"),
        ):
            raw = cursor(payload) if isinstance(payload, dict) else payload
            refused = await client.get(path, params={"sort": sort, "cursor": raw})
            assert "not a cursor this API issued" in problem(refused, 422, "query.cursor")["detail"]
        other = await client.get("/api/v1/customers", params={"sort": "id", "cursor": cursor({"s": "name", "v": "a", "i": 1})})  # fmt: skip
        assert "another sort order" in problem(other, 422, "query.cursor")["detail"]
        wrong_type = cursor({"s": "created_at", "v": "not a time", "i": 1})
        problem(await client.get("/api/v1/orders", params={"sort": "created_at", "cursor": wrong_type}), 422)


async def test_if_match_beyond_any_version_is_a_failed_precondition(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        made = await customer(client)
        url = f"/api/v1/customers/{made['id']}"
        for tag in (b'"2147483648"', b'"9' + b"9" * 5000 + b'"'):
            refused = await client.patch(url, json={"name": "renamed"}, headers=[(b"If-Match", tag)])
            assert "ever reaches version" in problem(refused, 412)["detail"]
            for command in ("/api/v1/orders/1/confirm", "/api/v1/invoices/1/payments"):
                body = {"amount": {"amount": "1.00", "currency": "EUR"}} if command.endswith("payments") else None
                problem(await client.post(command, json=body, headers=[(b"If-Match", tag)]), 412)
        for tag in ('"²"'.encode(), b'"1.0"', b"3"):  # a superscript two is a digit to str.isdigit
            problem(
                await client.patch(url, json={"name": "renamed"}, headers=[(b"If-Match", tag)]), 422, "header.If-Match"
            )
        assert (await client.get(url)).json()["version"] == made["version"]


async def test_a_login_flood_leaves_the_database_pool_to_everyone_else(database_url: str) -> None:
    """64 parallel wrong passwords against a pool of 2 connections: password checks hold no
    connection and wait in a bounded line, so every read meanwhile is answered (before, the
    flood held the pool while Argon2 ran and reads got 503 "Database unavailable")."""
    async with running(database_url, pool_max_size=2) as api, api.client("admin") as reader, api.client(None) as anon:

        async def login() -> httpx.Response:
            return await anon.post("/api/v1/auth/token", data={"username": unique("nobody"), "password": "wrong"})

        flood = [asyncio.create_task(login()) for _ in range(64)]
        reads: list[int] = []
        while not all(task.done() for task in flood):
            reads.append((await reader.get("/api/v1/orders", params={"limit": 1})).status_code)
        answers = await asyncio.gather(*flood)
    assert reads
    assert set(reads) == {200}
    assert {a.status_code for a in answers} <= {401, 503}  # checked, or turned away at once when too many wait
    for busy in (a for a in answers if a.status_code == 503):
        assert problem(busy, 503)["type"] == "urn:factory:erp:problem:busy"
        assert busy.headers["retry-after"] == "1"


async def test_sign_ins_wait_in_a_bounded_line() -> None:
    """One check at a time and two waiting: of 20 at once, 3 are checked (real Argon2), 17 are
    refused at once with Retry-After."""
    gate = SignInGate(concurrent=1, waiting=2)
    stored = await hash_password(PASSWORD)

    async def sign_in() -> bool:
        async with gate.admitted():
            return await gate.verify(PASSWORD, stored)

    outcomes = await asyncio.gather(*(sign_in() for _ in range(20)), return_exceptions=True)
    checked = [o for o in outcomes if o is True]
    refused = [o for o in outcomes if isinstance(o, BusyError)]
    assert (len(checked), len(refused)) == (3, 17)
    assert all(r.headers == {"Retry-After": "1"} for r in refused)
    assert await sign_in()  # the line is free again


async def test_a_name_that_is_no_user_costs_a_password_check(database_url: str) -> None:
    """Otherwise the time of an answer tells which names exist, and a flood of made-up names
    would pass by the line that bounds password checks."""

    class Counting(SignInGate):
        checks: list[bool] = []  # noqa: RUF012 - one gate per test

        async def verify(self, password: str, stored: str | None) -> bool:
            self.checks.append(stored is None)
            return await super().verify(password, stored)

    gate = Counting()
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        name = unique("nobody")
        args = {"username": name, "password": "wrong", "address": "192.0.2.7"}
        assert await users.authenticate(pool, gate, LoginPolicy(), **args) is None
    assert gate.checks == [True]
