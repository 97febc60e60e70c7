"""ERP commands for the ``factory`` CLI: ``erp serve``, ``erp api-key``, ``erp locks``, ``erp unlock``,
``provision user``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar, get_args

import click

from erp_api import setpoints_client, users
from erp_api.audit import Actor
from erp_api.config import MAX_CONTENT, OUTBOX_DAYS, resolve_jwt_secret
from erp_api.errors import ErpConfigError, ErpError
from erp_api.security import Role
from erp_api.server import serve as run
from erp_api.server import tune_gc
from erp_api.setpoints import DEFAULT_TIMEOUT_S
from factory.db import connect
from factory.runtime import fail, run_service
from factory.settings import current

__all__ = [
    "api_key", "disable", "enable", "erp", "list_users", "locks", "provision_user", "serve", "setpoint", "unlock",
]  # fmt: skip

ROLES = get_args(Role)
T = TypeVar("T")


def _database_url() -> str:
    return current().database()


def _on_db(work: Callable[[users.Conn], Awaitable[T]], failing: str) -> T:
    """Run ``work`` on a connection to FACTORY_DATABASE_URL; a refusal is one line, exit 2."""

    async def go() -> T:
        async with await connect(_database_url(), autocommit=True) as conn:
            return await work(conn)

    try:
        return asyncio.run(go())
    except ErpError as exc:
        fail(f"{failing}: {exc.detail}")


@click.group()
def erp() -> None:
    """The ERP API."""


@erp.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--dev", is_flag=True, help="Dev mode: run without FACTORY_JWT_SECRET (tokens signed with a dev secret).")
@click.option(
    "--relay/--no-relay",
    default=True,
    show_default=True,
    help="Publish outbox events while serving, to FACTORY_EVENTS_URL (mqtt:// or nats://; default"
    " FACTORY_MQTT_URL, which setpoints use either way).",
)
@click.option("--max-body", type=click.IntRange(min=1), default=MAX_CONTENT, show_default=True,
              help="The largest request body in bytes; a larger one gets 413 before it is read.")  # fmt: skip
@click.option("--outbox-days", type=click.IntRange(min=1), default=OUTBOX_DAYS, show_default=True,
              help="Published events are kept this long in erp.outbox, then deleted (unpublished never).")  # fmt: skip
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              help="Addresses or networks (comma-separated) whose X-Forwarded-For counts (the gateway).")  # fmt: skip
@click.option("--setpoint-timeout", type=click.FloatRange(min=0.1, max=300), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Seconds a setpoint waits for the device's reply (then 504).")  # fmt: skip
def serve(
    *, host: str, port: int, dev: bool, relay: bool, max_body: int, outbox_days: int, forwarded_allow_ips: str,
    setpoint_timeout: float,
) -> None:  # fmt: skip
    """Serve the ERP API (OpenAPI page at /docs)."""
    settings = current()
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    try:
        resolve_jwt_secret(secret, dev=dev)
    except ErpConfigError as exc:
        fail(f"cannot start the ERP API: {exc}")
    with contextlib.suppress(ImportError):  # uvloop: a cheaper event loop, where it is installed
        import uvloop  # noqa: PLC0415  (not on every platform)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    tune_gc()
    served = run(settings.database(), host, port, dev=dev, mqtt_url=settings.mqtt(), events_url=settings.events(),
                 relay=relay, jwt_secret=secret, max_content=max_body, outbox_days=outbox_days,
                 forwarded_allow_ips=forwarded_allow_ips, setpoint_timeout_s=setpoint_timeout)  # fmt: skip
    run_service(served)  # a busy port: one line, exit 2


@erp.command("setpoint")
@click.argument("site")
@click.argument("device")
@click.argument("tag")
@click.argument("value")
@click.option("--text", is_flag=True, help="Send VALUE as text (else true/false are booleans, numbers numbers).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for the ERP's answer (the ERP waits for the device less long).")  # fmt: skip
@click.option("--idempotency-key", "key", help="Send this Idempotency-Key: repeated with the same key after a lost"
              " answer, the command gets the device's answer again instead of writing again.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the ERP's answer as one JSON object.")
def setpoint(
    *, site: str, device: str, tag: str, value: str, text: bool, timeout: float, key: str | None, as_json: bool
) -> None:
    """Write VALUE to TAG of DEVICE at SITE through the ERP (FACTORY_ERP_URL, FACTORY_ERP_API_KEY).

    Exit status: 0 written, 1 refused by the device, 2 not asked (no ERP, no key, not allowed,
    not valid, broker down), 3 no answer from the device in time."""
    settings = current()
    if not settings.erp_url or settings.erp_api_key is None:
        fail("set FACTORY_ERP_URL and FACTORY_ERP_API_KEY (an API key of role operator, planner or admin)")
    asked = setpoints_client.Setpoint(site, device, tag, setpoints_client.parse_value(value, as_text=text))
    try:
        answer = setpoints_client.write(settings.erp_url, settings.erp_api_key.get_secret_value(), asked,
                                        timeout_s=timeout, idempotency_key=key)  # fmt: skip
    except setpoints_client.SetpointClientError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(answer.body))
    else:
        click.echo(answer.summary(), err=answer.exit_code != 0)
    sys.exit(answer.exit_code)


@erp.command("api-key")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="service", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {name, role, key} as JSON.")
def api_key(name: str, role: str, as_json: bool) -> None:
    """Create an API key for a service; the key is printed once."""
    key = _on_db(lambda conn: users.create_api_key(conn, name, role, by=Actor.local()), "cannot create API key")
    if as_json:
        click.echo(json.dumps({"name": key.name, "role": key.role, "key": key.key}))
    else:
        click.echo(f"API key {key.name!r} ({key.role}); send it as X-API-Key, it is not shown again:", err=True)
        click.echo(key.key)


@erp.command("locks")
@click.option("--json", "as_json", is_flag=True, help="Print them as a JSON list.")
def locks(as_json: bool) -> None:
    """Account names and client addresses with failed sign-ins in the last hour, locked or not."""
    rows = _on_db(users.list_locks, "cannot list sign-in locks")
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for row in rows:
        until = f"locked until {row['locked_until']:%H:%M:%S}" if row["locked"] else "not locked"
        click.echo(f"{row['kind']} {row['key']}: {row['failures']} failed, {until}")


@erp.command("unlock")
@click.argument("key")
@click.option("--address", is_flag=True, help="KEY is a client address, not an account name.")
def unlock(key: str, address: bool) -> None:
    """Unlock an account name (or, with --address, a client address) after failed sign-ins."""
    kind = "address" if address else "account"
    if not _on_db(lambda conn: users.unlock(conn, kind, key, by=Actor.local()), f"cannot unlock {kind} {key!r}"):
        fail(f"no failed sign-ins recorded for {kind} {key!r}")
    click.echo(f"unlocked {kind} {key!r}")


@erp.command("users")
@click.option("--json", "as_json", is_flag=True, help="Print them as a JSON list.")
def list_users(as_json: bool) -> None:
    """Every ERP user with role and state."""
    rows = _on_db(users.list_users, "cannot list users")
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for row in rows:
        click.echo(f"{row['username']}: {row['role']}{'' if row['active'] else ', disabled'}")


def _set_active(username: str, active: bool) -> None:
    changed = _on_db(lambda conn: users.change_user(conn, username, role=None, active=active, by=Actor.local()),
                     f"cannot change user {username!r}")  # fmt: skip
    if changed is None:
        fail(f"no user named {username!r}")
    click.echo(f"user {username!r} is {'enabled' if active else 'disabled; their sessions have ended'}")


@erp.command("disable")
@click.argument("username")
def disable(username: str) -> None:
    """Disable a user: sign-in refused, sessions ended, tokens already issued refused."""
    _set_active(username, active=False)


@erp.command("enable")
@click.argument("username")
def enable(username: str) -> None:
    """Enable a disabled user again (they sign in anew)."""
    _set_active(username, active=True)


@click.command("user")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (non-interactive).")
@click.option("--replace", is_flag=True, help="Reset the role and password of an existing user.")
@click.option("--json", "as_json", is_flag=True, help="Print {username, role, created} as JSON.")
def provision_user(username: str, role: str, password_stdin: bool, replace: bool, as_json: bool) -> None:
    """Create an ERP user (password hashed with Argon2id)."""
    if password_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)

    user = _on_db(lambda conn: users.create_user(conn, username, role, password, replace=replace, by=Actor.local()),
                  f"cannot create user {username!r}")  # fmt: skip
    if as_json:
        click.echo(json.dumps({"username": user.username, "role": user.role, "id": user.id}))
    else:
        click.echo(f"user {user.username!r} has role {user.role}")
