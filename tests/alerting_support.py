"""Real Prometheus and Alertmanager for the tests, and the sinks Alertmanager delivers to: an
asyncio webhook and an SMTP server of the tests' own (tests/provisioning/test_alerts.py,
tests/alerting/)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage as Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from click.testing import CliRunner

from factory_servers import free_port
from provisioning.alerts_cli import alerts

T = TypeVar("T")


def binary(*names: str) -> str:
    """A tool from the distribution's packages. Never a skip: without it the tests fail, saying why."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    pytest.fail(f"the alerting tests need {names[0]}: scripts/test installs it as root on Debian/Ubuntu;"
                " otherwise install the packages prometheus and prometheus-alertmanager")  # fmt: skip


SETTINGS = """\
smtp:
  smarthost: {smarthost}
  from: factory-alerts@plant.test
  username: factory-alerts
  password: {password}
  require_tls: false
receivers:
  - name: shift-lead
    severities: [critical]
    email: [shift-lead@plant.test]
    webhooks: ["{webhook}"]
  - name: maintenance
    severities: [warning]
    email: [maintenance@plant.test, planner@plant.test]
timing: {{group_wait: 1s, group_interval: 1s, repeat_interval: 1h, critical_repeat_interval: 1h}}
"""


def write_settings(folder: Path, *, smarthost: str = "mail.plant.test:25", webhook: str = "https://chat.plant.test/hook",
                   password: str = "mail-secret") -> Path:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "alert-settings.yml"
    path.write_text(SETTINGS.format(smarthost=smarthost, webhook=webhook, password=password), encoding="utf-8")
    return path


def provision(out: Path, *args: str, settings: Path | None = None) -> dict[str, Any]:
    settings = settings or write_settings(out.parent / f"{out.name}-settings")
    result = CliRunner().invoke(alerts, ["--out", str(out), "--settings", str(settings), "--json", *args])
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


@contextlib.asynccontextmanager
async def process(log: Path, *argv: str, env: dict[str, str] | None = None) -> AsyncIterator[Process]:
    """A process whose output goes to ``log`` (shown when the test fails); stopped at the end."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def wait_for(check: Callable[[], Awaitable[T | None]], what: str, log: Path, timeout: float = 60) -> T:
    """The first non-empty answer of ``check``, asked every 0.2 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    pytest.fail(f"not within {timeout:g} s: {what}\n--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class Sinks:
    """What Alertmanager delivered: webhook calls (path, JSON) and mails (envelope, message, AUTH)."""

    hooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mails: list[tuple[list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def mails_about(self, alertname: str) -> list[tuple[list[str], Message]]:
        return [(to, m) for to, m in self.mails if alertname in str(m["Subject"])]

    def hooks_about(self, alertname: str) -> list[dict[str, Any]]:
        return [body for _, body in self.hooks if body["groupLabels"].get("alertname") == alertname]


async def _webhook(sinks: Sinks, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Just enough HTTP/1.1 for Alertmanager's webhook POSTs (with keep-alive)."""
    try:
        while request := await reader.readline():
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            sinks.hooks.append((request.decode().split()[1], json.loads(body)))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    finally:
        writer.close()


async def _smtp(sinks: Sinks, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Just enough SMTP (RFC 5321) for Alertmanager: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT."""
    writer.write(b"220 sink.plant.test ESMTP\r\n")
    recipients: list[str] = []
    try:
        while line := await reader.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb in {"EHLO", "HELO"}:
                writer.write(b"250-sink.plant.test\r\n250 AUTH PLAIN\r\n")
            elif verb == "AUTH":
                sinks.logins.append(base64.b64decode(command.split()[2]).decode())
                writer.write(b"235 2.7.0 Authentication successful\r\n")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip(" <>"))
                writer.write(b"250 OK\r\n")
            elif verb == "DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                lines = []
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                sinks.mails.append((recipients, BytesParser(policy=policy.default).parsebytes(b"".join(lines))))
                recipients = []
                writer.write(b"250 OK\r\n")
            elif verb == "QUIT":
                writer.write(b"221 Bye\r\n")
                await writer.drain()
                break
            else:  # MAIL, RSET, NOOP
                writer.write(b"250 OK\r\n")
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def sinks_running() -> AsyncIterator[tuple[Sinks, int, int]]:
    sinks = Sinks()
    hook = await asyncio.start_server(lambda r, w: _webhook(sinks, r, w), "127.0.0.1", 0)
    smtp = await asyncio.start_server(lambda r, w: _smtp(sinks, r, w), "127.0.0.1", 0)
    async with hook, smtp:
        yield sinks, hook.sockets[0].getsockname()[1], smtp.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def alertmanager_running(
    config: str | Path, workdir: Path, port: int | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, str, Path]]:
    """Alertmanager on ``config`` at ``port`` (default: a free one), ready: its API client, base URL and log."""
    port = port or free_port()
    log = workdir / "alertmanager.log"
    argv = [binary("alertmanager", "prometheus-alertmanager"), f"--config.file={config}",
            f"--storage.path={workdir / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address="]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with process(log, *argv), httpx.AsyncClient(base_url=url, timeout=10) as api:

        async def ready() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return (await api.get("/-/ready")).status_code == 200
            return False

        await wait_for(ready, "Alertmanager is ready", log)
        yield api, url, log
