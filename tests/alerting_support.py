"""Real Prometheus and Alertmanager for the tests (tests/provisioning/test_alerts.py,
tests/alerting/); the webhook and SMTP server Alertmanager delivers to are tests/mail_sink.py
(the SMTP server is the demo's, factory_demo/mail.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
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
