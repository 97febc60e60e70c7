"""``factory provision``: the database, device identities, the broker's files, Grafana, the gateway
(``factory provision alerts`` is in provisioning/alerts_cli.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
import yaml

from dashboards.catalog import DASHBOARDS
from factory.db import connect, create_database, redact
from factory.mqtt import parse_mqtt_url
from factory.runtime import fail
from factory.settings import current
from provisioning.backup import backup, restore
from provisioning.broker import TlsFiles, parse_listen, write_broker_files
from provisioning.certs import given_certificate, own_ca
from provisioning.devices import (
    ProvisioningError,
    clear_status,
    register_device,
    revoke_device,
    rotate_device,
    username,
    write_bundle,
)
from provisioning.gateway import DEFAULT_MAX_BODY, GatewayOptions, parse_upstream, write_gateway
from provisioning.grafana import GrafanaTarget, connect_grafana, provision_grafana
from provisioning.migrate import MigrationError, migrate
from provisioning.nats import parse_node, provision_nats

__all__ = [
    "backup_command", "broker", "db", "device", "gateway", "grafana", "nats", "restore_command", "revoke", "rotate",
]  # fmt: skip

T = TypeVar("T")


def _with_db(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on FACTORY_DATABASE_URL; provisioning errors become exit code 2."""
    url = current().database()

    async def go() -> T:
        async with await connect(url, autocommit=True, application_name="factory-provision") as conn:
            return await work(conn)

    return _or_fail(url, go())


def _or_fail(url: str, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a provisioning or database error is one line and exit code 2."""
    try:
        return asyncio.run(work)
    except ProvisioningError as exc:
        fail(str(exc))
    except psycopg.Error as exc:
        fail(f"database {redact(url)}: {exc}")


@click.command("db")
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
def db(as_json: bool) -> None:
    """Create the database if needed and apply migrations (idempotent)."""
    url = current().database()

    async def go() -> list[str]:
        created = await create_database(url)
        async with await connect(url) as conn:
            applied = await migrate(conn)
        if created:
            click.echo(f"created database {redact(url)}", err=True)
        return applied

    try:
        applied = asyncio.run(go())
    except MigrationError as exc:
        fail(f"error: {exc}")
    except psycopg.Error as exc:
        fail(f"error: database {redact(url)}: {exc}")
    if as_json:
        click.echo(json.dumps({"applied": applied}))
    else:
        click.echo("\n".join(f"applied {a}" for a in applied) or "database is up to date")


def _broker_url(explicit: str | None) -> str:
    """The URL the device will use: --mqtt-url, else FACTORY_MQTT_URL without its credentials."""
    return explicit or parse_mqtt_url(current().mqtt()).url


def _sources(path: Path | None) -> list[dict[str, Any]] | None:
    if path is None:
        return None

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        fail(f"{path}: no `sources` list to copy")
    return list(data["sources"])


def _report(as_json: bool, payload: dict[str, Any], human: str) -> None:
    click.echo(json.dumps(payload) if as_json else human)


_out = click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the edge bundle."
)
_mqtt = click.option("--mqtt-url", default=None, help="Broker URL for the device (default: FACTORY_MQTT_URL).")
_ca = click.option("--ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                   help="CA certificate the device trusts (copied into the bundle).")  # fmt: skip
_src = click.option("--sources", "sources_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                    default=None, help="Copy the `sources` list from this edge config YAML.")  # fmt: skip
_json = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")


def _issue(  # noqa: PLR0917 - the options of `device` and `rotate`, passed on
    new_password: Callable[[Any, str, str], Awaitable[str]],
    site: str,
    name: str,
    out: Path,
    mqtt_url: str | None,
    ca_file: Path | None,
    sources_file: Path | None,
) -> Any:
    """A new password from the database (register or rotate), then the bundle that carries it."""
    url, sources = _broker_url(mqtt_url), _sources(sources_file)
    password = _with_db(lambda conn: new_password(conn, site, name))
    return write_bundle(out, site, name, password, mqtt_url=url, ca_file=ca_file, sources=sources)


@click.command("device")
@click.argument("site")
@click.argument("name", metavar="DEVICE")
@_out
@_mqtt
@_ca
@_src
@_json
def device(  # noqa: PLR0917 - one parameter per option, as click passes them
    site: str,
    name: str,
    out: Path,
    mqtt_url: str | None,
    ca_file: Path | None,
    sources_file: Path | None,
    as_json: bool,
) -> None:
    """Register DEVICE at SITE and write its edge config bundle into --out."""
    bundle = _issue(register_device, site, name, out, mqtt_url, ca_file, sources_file)
    payload = {"site": site, "device": name, "username": username(site, name),
               "config": str(bundle.config), "secret": str(bundle.secret)}  # fmt: skip
    _report(as_json, payload, f"registered {site}/{name}; edge config {bundle.config} (secret {bundle.secret})\n"
            "run `factory provision broker` and reload the broker so it accepts the device")  # fmt: skip


@click.command("revoke")
@click.argument("site")
@click.argument("name", metavar="DEVICE")
@click.option("--mqtt-url", default=None,
              help="Broker URL of an account that may write device status, the `provision` service account"
                   " (default: FACTORY_MQTT_URL).")  # fmt: skip
@_json
def revoke(site: str, name: str, mqtt_url: str | None, as_json: bool) -> None:
    """Revoke DEVICE at SITE: the next broker files refuse it; its retained status is cleared.

    No consumer then sees the retired device offline for ever, and its DeviceOffline resolves."""
    _with_db(lambda conn: revoke_device(conn, site, name))
    url = mqtt_url or current().mqtt()
    _or_fail(url, clear_status(url, site, name))
    _report(as_json, {"site": site, "device": name, "revoked": True, "status_cleared": True},
            f"revoked {site}/{name} and cleared its retained status;"
            " run `factory provision broker` and reload the broker (SIGHUP)")  # fmt: skip


@click.command("rotate")
@click.argument("site")
@click.argument("name", metavar="DEVICE")
@_out
@_mqtt
@_ca
@_src
@_json
def rotate(  # noqa: PLR0917 - one parameter per option, as click passes them
    site: str,
    name: str,
    out: Path,
    mqtt_url: str | None,
    ca_file: Path | None,
    sources_file: Path | None,
    as_json: bool,
) -> None:
    """A new password for DEVICE at SITE, with a fresh edge bundle in --out."""
    bundle = _issue(rotate_device, site, name, out, mqtt_url, ca_file, sources_file)
    _report(as_json, {"site": site, "device": name, "config": str(bundle.config), "secret": str(bundle.secret)},
            f"rotated {site}/{name}; new bundle {bundle.config}")  # fmt: skip


@click.command("broker")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for mosquitto.conf and the password and ACL files.")  # fmt: skip
@click.option("--listen", default="127.0.0.1:1883", show_default=True,
              help="The cloud services' listener, HOST:PORT (no device logs in here).")  # fmt: skip
@click.option("--device-listen", default="127.0.0.1:1884", show_default=True,
              help="The devices' plain listener, HOST:PORT; 'none' for TLS only.")  # fmt: skip
@click.option("--run-as", default=None, help="User Mosquitto runs as (default: the current user).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Persistence folder (default: no persistence).")  # fmt: skip
@click.option("--tls-listen", default=None,
              help="The devices' TLS listener HOST:PORT (with --cafile, --certfile, --keyfile).")  # fmt: skip
@click.option("--cafile", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--certfile", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_json
def broker(  # noqa: PLR0917 - one parameter per option, as click passes them
    out: Path,
    listen: str,
    device_listen: str,
    run_as: str | None,
    data_dir: Path | None,
    tls_listen: str | None,
    cafile: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    as_json: bool,
) -> None:
    """Write Mosquitto's config, password and ACL files from the registered identities."""
    tls_parts = (cafile, certfile, keyfile)
    if any(tls_parts) and not all(tls_parts):
        fail("TLS needs all of --cafile, --certfile and --keyfile")
    tls = TlsFiles(cafile.resolve(), certfile.resolve(), keyfile.resolve()) if cafile and certfile and keyfile else None
    try:
        plain = parse_listen(listen)
        devices = None if device_listen == "none" else parse_listen(device_listen)
        secure = parse_listen(tls_listen) if tls_listen else None
    except ProvisioningError as exc:
        fail(str(exc))
    data = data_dir.resolve() if data_dir else None
    files = _with_db(
        lambda conn: write_broker_files(
            conn, out, plain, run_as=run_as, data_dir=data, device_listen=devices, tls_listen=secure, tls=tls
        )
    )
    secrets = {k: str(v) for k, v in files.new_service_secrets.items()}
    payload = {"conf": str(files.conf), "passwd": str(files.passwd), "acl": str(files.acl),
               "service_passwd": str(files.service_passwd), "service_acl": str(files.service_acl),
               "devices": files.devices, "services": files.services, "new_service_secrets": secrets}  # fmt: skip
    lines = [f"wrote {files.conf} and the password and ACL files in {files.conf.parent}"
             f" ({files.devices} devices, {files.services} services)"]  # fmt: skip
    lines += [f"new password for service {k}: {v}" for k, v in files.new_service_secrets.items()]
    lines.append(f"start: mosquitto -c {files.conf}   reload after changes: kill -HUP <pid>")
    _report(as_json, payload, "\n".join(lines))


@click.command("nats")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the files.")
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME@HOST[:CLIENT[:CLUSTER[:MQTT]]]",
              help="A server of the cluster (repeat for each; ports default 4222, 6222, 1883).")  # fmt: skip
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/var/lib/nats"),
              show_default=True, help="JetStream's store on each node.")  # fmt: skip
@_json
def nats(out: Path, nodes: tuple[str, ...], store_dir: Path, as_json: bool) -> None:
    """Write a NATS cluster's node configs (routes, JetStream, MQTT, users and permissions) and streams.

    The users get the devices' and services' topic permissions of the Mosquitto ACL."""
    try:
        parsed = [parse_node(text, store_dir) for text in nodes]
    except ValueError as exc:
        fail(str(exc))
    if len({n.name for n in parsed}) != len(parsed):
        fail("node names must be unique (they are the servers' server_name)")
    files, secrets, missing = _with_db(lambda conn: provision_nats(conn, out, parsed))
    payload = {"confs": [str(c) for c in files.confs], "users": str(files.users),
               "streams": [str(s) for s in files.streams], "without_nats_hash": missing,
               "new_service_secrets": {k: str(v) for k, v in secrets.items()}}  # fmt: skip
    lines = [f"wrote {len(files.confs)} node configs, users and streams in {out}"]
    lines += [f"new password for service {k}: {v}" for k, v in secrets.items()]
    if missing:
        lines.append(f"{missing} identities were made before NATS support: `factory provision rotate` them to add them")
    lines.append("start on each node: nats-server -c NODE.conf   reload after changes: nats-server --signal reload")
    _report(as_json, payload, "\n".join(lines))


@click.command("grafana")
@click.option("--url", required=True, help="Grafana's base URL, e.g. http://grafana:3000.")
@click.option("--token", envvar="FACTORY_GRAFANA_TOKEN", required=True, show_envvar=True,
              help="A service account token with the Admin role.")  # fmt: skip
@click.option("--db-host", default="timescaledb:5432", show_default=True, help="Database host:port Grafana uses.")
@click.option("--database", default="factory", show_default=True)
@click.option("--db-user", default="grafana", show_default=True, help="A log-in role in factory_grafana (read-only).")
@click.option("--db-password", envvar="FACTORY_GRAFANA_DB_PASSWORD", default=None, show_envvar=True,
              help="That role's password; needed when the datasource is created.")  # fmt: skip
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per HTTP request.")
@_json
def grafana(  # noqa: PLR0917 - one parameter per option, as click passes them
    url: str,
    token: str,
    db_host: str,
    database: str,
    db_user: str,
    db_password: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Create or update the datasource, folders and dashboards in a running Grafana (idempotent)."""
    target = GrafanaTarget(db_host=db_host, database=database, db_user=db_user, db_password=db_password)
    try:
        api = connect_grafana(url, token, timeout_s=timeout)
        version, changes = provision_grafana(api, url, DASHBOARDS, target)
    except ProvisioningError as exc:
        fail(str(exc))
    counts = {action: sum(c.action == action for c in changes) for action in ("created", "updated", "unchanged")}
    payload = {"url": url, "grafana_version": version, **counts, "changes": [c.as_dict() for c in changes]}
    lines = [f"{c.action:9} {c.kind} {c.uid} ({c.title})" for c in changes]
    lines.append(f"Grafana {version} at {url}: " + ", ".join(f"{n} {action}" for action, n in counts.items()))
    _report(as_json, payload, "\n".join(lines))


@click.command("backup")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("backups"),
    show_default=True,
    help="Where the backups are kept.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="How many backups to keep; older ones are deleted once the new one is complete.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")  # fmt: skip
def backup_command(directory: Path, keep: int, as_json: bool) -> None:
    """Back up the database: a pg_dump with a manifest (checksum, rows per table); keeps the newest.

    The database is FACTORY_DATABASE_URL's; backups beyond --keep are deleted, oldest first."""
    url = current().database()
    made = _or_fail(url, backup(url, directory, keep=keep))
    rows = sum(made.rows.values())
    _report(as_json, asdict(made), f"{directory / made.file}: {made.bytes} bytes, {len(made.rows)} tables, {rows} rows")


@click.command("restore")
@click.argument("dump", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print what was restored as JSON.")
def restore_command(dump: Path, as_json: bool) -> None:
    """Restore a backup into an empty database, checked against its manifest.

    DUMP is made by `factory backup`; the database is FACTORY_DATABASE_URL's, which must be
    empty or missing. The checksum and every table's row count are checked."""
    url = current().database()
    done = _or_fail(url, restore(dump, url))
    _report(as_json, asdict(done), f"restored {done.file} into {done.database}: {done.tables} tables, "
                                   f"{done.rows} rows, as saved ({done.seconds} s)")  # fmt: skip


def _count(name: str, default: int, text: str, low: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(name, type=click.IntRange(min=low), default=default, show_default=True, help=text)


@click.command("gateway")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for nginx.conf, tls/ (nginx's) and ca/ (our own CA: never give it to nginx).")  # fmt: skip
@click.option("--host", "hosts", multiple=True, default=("localhost",), show_default=True,
              help="A name or address clients use (repeat); the own CA's certificate is issued for these.")  # fmt: skip
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The plant's certificate (PEM, chain after it) instead of our own CA; with --key.")  # fmt: skip
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
@click.option("--new-ca", is_flag=True, help="Replace our own CA (every client must then trust the new one).")
@click.option("--erp", default="erp:8000", show_default=True, help="The ERP API, HOST:PORT.")
@click.option("--grafana", "grafana_to", default="grafana:3000", show_default=True,
              help="Grafana (served under /grafana/), HOST:PORT; 'none' for no Grafana.")  # fmt: skip
@click.option("--mcp", default=None, help="The MCP server's HTTP endpoint (served at /mcp), HOST:PORT.")
@click.option("--listen-address", default="", help="Address nginx listens on (default: all).")
@_count("--https-port", 443, "HTTPS port.")
@_count("--http-port", 80, "Plain HTTP port; it only redirects to HTTPS.")
@_count("--rate", 10, "Requests a second per client address, sustained.")
@_count("--burst", 40, "Requests beyond --rate served at once before 429s begin.", low=0)
@_count("--login-rate", 10, "Sign-ins (POST /api/v1/auth/token) a minute per client address.")
@_count("--login-burst", 5, "Sign-ins beyond --login-rate at once.", low=0)
@_count("--conns", 50, "Requests in progress at once per client address.")
@_count("--max-body", DEFAULT_MAX_BODY, "The largest request body in bytes (the ERP's own limit); larger: 413.")
@_count("--header-timeout", 10, "Seconds to receive a request's headers.")
@click.option("--handshake-timeout", type=click.IntRange(min=1), default=None,
              help="Seconds for the TLS handshake (nginx 1.25.5 or later; before, --header-timeout).")  # fmt: skip
@_count("--body-timeout", 30, "Seconds between two reads of a request body.")
@_count("--upstream-timeout", 60, "Seconds between two reads or writes to a service behind the gateway.")
@click.option("--run-as", default=None, help="User for nginx's workers when it starts as root (e.g. nginx).")
@click.option("--access-log", default="access.log", show_default=True,
              help="Relative to nginx's prefix (-p), or absolute: /dev/stdout in a container.")  # fmt: skip
@_json
def gateway(  # noqa: PLR0917 - one parameter per option, as click passes them
    out: Path,
    hosts: tuple[str, ...],
    cert_file: Path | None,
    key_file: Path | None,
    new_ca: bool,
    erp: str,
    grafana_to: str,
    mcp: str | None,
    listen_address: str,
    https_port: int,
    http_port: int,
    rate: int,
    burst: int,
    login_rate: int,
    login_burst: int,
    conns: int,
    max_body: int,
    header_timeout: int,
    handshake_timeout: int | None,
    body_timeout: int,
    upstream_timeout: int,
    run_as: str | None,
    access_log: str,
    as_json: bool,
) -> None:
    """Write the nginx gateway's config and TLS files: HTTPS, rate and size limits, timeouts.

    nginx then runs it: `nginx -p PREFIX -c OUT/nginx.conf` (PREFIX: a writable folder for its
    pid and temporary files). Our own CA is made once and kept; give --cert and --key to use
    the plant's certificate instead."""
    if (cert_file is None) != (key_file is None):
        fail("--cert and --key go together")
    try:
        options = GatewayOptions(
            erp=parse_upstream(erp, "--erp"),
            grafana=None if grafana_to == "none" else parse_upstream(grafana_to, "--grafana"),
            mcp=parse_upstream(mcp, "--mcp") if mcp else None,
            https_port=https_port, http_port=http_port, listen_address=listen_address, rate=rate, burst=burst,
            login_rate=login_rate, login_burst=login_burst, conns=conns, max_body=max_body,
            header_timeout_s=header_timeout, handshake_timeout_s=handshake_timeout, body_timeout_s=body_timeout,
            upstream_timeout_s=upstream_timeout, run_as=run_as, access_log=access_log,
        )  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        tls = (given_certificate(out / "tls", cert_file, key_file) if cert_file and key_file
               else own_ca(out / "ca", out / "tls", hosts, new_ca=new_ca))  # fmt: skip
        files = write_gateway(out, options, tls)
    except ProvisioningError as exc:
        fail(str(exc))
    payload = {"conf": str(files.conf), "cert": str(tls.cert), "key": str(tls.key),
               "ca": str(tls.ca_cert) if tls.ca_cert else None, "ca_created": tls.ca_created,
               "cert_issued": tls.cert_issued, "hosts": list(hosts)}  # fmt: skip
    lines = [f"wrote {files.conf}; certificate {tls.cert}" + (" (new)" if tls.cert_issued else " (kept)")]
    if tls.ca_cert:
        lines.append(f"clients trust {tls.ca_cert}" + (" (a new CA)" if tls.ca_created else " (the CA, kept)"))
    lines.append(f"check: nginx -t -p PREFIX -c {files.conf}   run: nginx -p PREFIX -c {files.conf}"
                 "   reload: nginx -s reload -p PREFIX -c ...")  # fmt: skip
    _report(as_json, payload, "\n".join(lines))
