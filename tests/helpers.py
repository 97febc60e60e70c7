"""Shared test helpers: a running ingest service, waiting on its progress, publishing."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from factory.mqtt import MqttTarget, connect, parse_mqtt_url
from factory_servers import free_port, mosquitto_binary, mosquitto_conf
from ingest import IngestConfig, IngestService


def mosquitto() -> str:
    """The Mosquitto binary the tests run. Never a skip: without it the suite fails, saying why."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.fail("the tests need Mosquitto: scripts/test installs it as root on Debian/Ubuntu;"
                    " otherwise install the package mosquitto")  # fmt: skip
    return binary


@contextlib.asynccontextmanager
async def running_ingest(database_url: str, mqtt_url: str, site: str, **overrides: Any) -> AsyncIterator[IngestService]:
    """An ingest service for one site, with a short-lived session so tests leave nothing behind."""
    settings: dict[str, Any] = {
        "client_id": f"ingest-{site}", "site": site, "session_expiry_s": 60, "batch_ms": 50,
        "upkeep": None,  # storage upkeep has tests of its own; here it would only race with them
    }  # fmt: skip
    service = IngestService(
        IngestConfig(database_url=database_url, mqtt=parse_mqtt_url(mqtt_url), **(settings | overrides))
    )
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.subscribed.wait(), 10)
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel the tasks and wait until each has stopped."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(service: IngestService, done: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until ``done()`` holds, checking after each committed flush (and at least every 0.2 s,
    for conditions that other services fulfil)."""
    async with asyncio.timeout(timeout):
        while not done():
            service.flushed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.flushed.wait(), 0.2)


async def eventually(condition: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    """Wait until ``condition()`` is true, looking every 50 ms; TimeoutError (naming ``what``) after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"not within {timeout:g} s: {what or condition}") from None


async def publish(mqtt_url: str, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    async with connect(parse_mqtt_url(mqtt_url), "") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


class OwnBroker:
    """A Mosquitto of the test's own, with the limits we ship, that a test may stop and start.

    Persistence is on, so sessions and queued messages survive a restart as in production.
    """

    def __init__(
        self, workdir: Path, *, tls: bool = False, autosave_s: int = 1, queue_bytes: int | None = None
    ) -> None:
        self.binary = mosquitto()
        self.autosave_s = autosave_s  # how often it saves its state: what a crash loses
        self.queue_bytes = queue_bytes  # a smaller queue per client than we ship, to see it overflow
        self.workdir = workdir
        self.port = free_port()
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        self.ca_file: Path | None = workdir / "server.pem" if tls else None  # self-signed: its own CA
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> MqttTarget:
        return replace(parse_mqtt_url(self.url), ca_file=self.ca_file)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        text = mosquitto_conf(self.port, self.workdir, autosave_s=self.autosave_s)
        if self.queue_bytes is not None:
            text += f"max_queued_bytes {self.queue_bytes}\n"  # the last setting wins
        if self.ca_file is not None:
            key_file = self.workdir / "server.key"
            if not self.ca_file.exists():
                _self_signed(self.ca_file, key_file)
            text += f"certfile {self.ca_file}\nkeyfile {key_file}\n"  # for the listener above
        conf.write_text(text)
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("mosquitto did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # SIGTERM: Mosquitto saves its persistence file on the way out
            self._proc.wait(10)
            self._proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, so what was not saved yet is gone."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


def _self_signed(cert_file: Path, key_file: Path) -> None:
    """A certificate for 127.0.0.1 that is its own certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test broker")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


async def count_rows(db: psycopg.AsyncConnection[tuple[object, ...]], site: str) -> int:
    cur = await db.execute(
        """SELECT count(*) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id
           JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s""",
        (site,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


async def until_rows(
    db: psycopg.AsyncConnection[tuple[object, ...]], site: str, expected: int, timeout: float = 30
) -> int:
    """Wait until the site has at least ``expected`` sample rows (redelivered points count once
    there, unlike in the service's counters); then give stragglers a moment and return the count."""
    async with asyncio.timeout(timeout):
        while await count_rows(db, site) < expected:
            await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    return await count_rows(db, site)


def buffered_ever(path: Path) -> int:
    """Points ever written to the buffer: a chunk's id is the ordinal of its last point, and the
    AUTOINCREMENT counter never goes back."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunk'").fetchone()
    return int(row[0]) if row else 0


def scrape(port: int) -> dict[str, float]:
    """A service's /metrics on 127.0.0.1, unlabelled series only."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) (\S+)$", text, re.MULTILINE)}


def healthz(port: int) -> dict[str, object]:
    """A service's /healthz body, whether it answers 200 or 503 ({} while nothing listens)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 503: degraded, with the reason in the body
        return dict(json.loads(exc.read()))
    except OSError:
        return {}


def modbus_config(tmp_path: Path, site: str, mqtt_url: str, port: int, **publish: float) -> Path:
    """An edge config for the mill's boiler house (unit 1) polled every 100 ms, every change
    published; ``publish`` overrides the publish settings."""
    config = {
        "site": site, "device": "pi1", "mqtt": {"url": mqtt_url},
        "buffer": {"path": "buffer.db", "max_mb": 64},
        "publish": {"max_points": 200, "max_interval_ms": 200, **publish},
        "sources": [{"name": "boiler", "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1,
                     "poll_ms": 100, "tags": [
                         {"name": "boiler1.drum_pressure", "table": "holding", "address": 0, "type": "int16",
                          "scale": 0.01},
                         {"name": "boiler1.steam_flow", "table": "holding", "address": 2, "type": "float32"}]}],
    }  # fmt: skip
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
