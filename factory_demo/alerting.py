"""The demo's alerting: Prometheus and Alertmanager when their binaries are installed (as the
broker is Mosquitto when it is), provisioned with ``factory provision alerts``' files, and the
alert bridge feeding Alertmanager the plant's domain events.

Without a settings file of the user's, Alertmanager notifies a webhook the demo serves itself,
so the summary can say which alerts reached people, and e-mails the shift lead through the
demo's own mail server (``factory_demo.mail``), which keeps each message as a ``.eml`` file in
``WORKDIR/mail/``. With ``--alert-settings`` the plant's own receivers (mail, chat) are told
instead; a file without a mail server (``smtp``) gets the demo's webhook and mail server
beside its receivers. Without the binaries the demo says what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from alerting import BridgeConfig, BridgeStats, run_bridge
from factory_demo.mail import Mail, Mailbox, smtp_sink
from factory_servers import free_port
from provisioning.alert_rules import SEVERITIES
from provisioning.alertmanager import AlertSettings, Receiver, Smtp, Timing, load_alert_settings
from provisioning.alerts import AlertOptions, write_alerts
from provisioning.gateway import Upstream

__all__ = ["DEMO_MAIL_TO", "INSTALL_HINT", "AlertingPorts", "DemoAlerting", "demo_alerting", "find_binary"]

log = logging.getLogger(__name__)
INSTALL_HINT: Final = "apt install prometheus prometheus-alertmanager"
LOOPBACK: Final = "127.0.0.1"
DEMO_MAIL_TO: Final = "shift-lead@mill.demo"  # who the demo's own receiver mails
DEMO_MAIL_FROM: Final = "alerts@factory-demo.local"


def find_binary(*names: str) -> str | None:
    """A tool from the distribution's packages (Debian installs Alertmanager as prometheus-alertmanager)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    return None


@dataclass(frozen=True, slots=True)
class AlertingPorts:
    """Where the demo's services serve /metrics, for Prometheus to scrape."""

    erp: int
    ingest: int
    analytics: int
    bridge: int = field(default_factory=free_port)


@dataclass
class DemoAlerting:
    """What runs, where to look, and what Alertmanager told the demo's webhook."""

    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # installed, but did not start (the demo goes on without)
    receivers: str = ""  # who is told: the demo's webhook, or the settings file's receivers
    notifications: list[str] = field(default_factory=list)  # "firing AnomalyEpisode mill-a/mill1", ...
    bridge: BridgeStats = field(default_factory=BridgeStats)
    # The demo's mail server (smtp://127.0.0.1:PORT) and what it received, each in mailbox.folder;
    # None when there is no Alertmanager to send, or the settings file's mail server is used.
    smtp_url: str | None = None
    mailbox: Mailbox | None = None
    mail_relay: str = ""  # the settings file's mail server (HOST:PORT) when it has one

    def mail_line(self) -> str:
        """The banner's line about e-mail."""
        if self.mailbox is not None and self.mailbox.folder is not None:
            return (f"  Mail:               {self.smtp_url} keeps each alert e-mail (to {DEMO_MAIL_TO}) as"
                    f" {self.mailbox.folder}/NNN-subject.eml   (open it in any mail program)")  # fmt: skip
        return f"  Mail:               alert e-mails go through {self.mail_relay} ({self.receivers})"

    def lines(self) -> list[str]:
        """The demo banner's lines about alerting."""
        if self.alertmanager_url is None and self.failed:
            return [f"  Alerting:           not started: {'; '.join(self.failed)}"]
        if self.alertmanager_url is None:
            return [f"  Alerting:           not started: {', '.join(self.missing)} not installed ({INSTALL_HINT})"]
        lines = [
            f"  Alertmanager:       {self.alertmanager_url}/#/alerts   (alerts from domain events; {self.receivers})",
            self.mail_line(),
        ]
        if self.prometheus_url is not None:
            lines.append(f"  Prometheus:         {self.prometheus_url}/alerts   (rules over every service's /metrics)")
        elif self.failed:
            lines.append(f"  Prometheus:         not started: {'; '.join(self.failed)}")
        else:
            lines.append(f"  Prometheus:         not started: prometheus not installed ({INSTALL_HINT})")
        return lines


class _Webhook:
    """Just enough HTTP for Alertmanager's webhook POSTs: each notification becomes a line."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await asyncio.wait_for(reader.readline(), 60):
                length = 0
                while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    length = int(value.strip()) if name.strip().lower() == "content-length" else length
                self._record(await asyncio.wait_for(reader.readexactly(length), 10))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("demo webhook: %s", exc)
        finally:
            writer.close()

    def _record(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        for alert in message.get("alerts", []):
            labels = alert.get("labels", {})
            where = "/".join(labels[k] for k in ("site", "asset", "device", "sku", "work_order") if k in labels)
            line = f"{alert.get('status')} {labels.get('alertname')} {where}".rstrip()
            self.into.append(line)
            print(f"  alert: {line}", file=sys.stderr, flush=True)  # noqa: T201 - the demo's own output


def _mail(mail: Mail) -> None:
    print(f"  e-mail: {mail.subject}  -> {mail.path}", file=sys.stderr, flush=True)  # noqa: T201 - the demo's own output


def _settings(user: AlertSettings | None, webhook_port: int, smtp_port: int) -> AlertSettings:
    """The user's settings as they are when they name a mail server; else the demo's receiver
    (its webhook, and e-mail through its mail server), beside the user's receivers if any."""
    if user is not None and user.smtp is not None:
        return user
    taken = {r.name for r in user.receivers} if user is not None else set()
    receiver = Receiver.model_validate({
        "name": next(n for n in ("demo", "factory-demo", "factory-demo-mail") if n not in taken),
        "severities": list(SEVERITIES), "email": [DEMO_MAIL_TO],
        "webhooks": [f"http://{LOOPBACK}:{webhook_port}/alerts"],
    })  # fmt: skip
    smtp = Smtp.model_validate({"smarthost": f"{LOOPBACK}:{smtp_port}", "from": DEMO_MAIL_FROM, "require_tls": False})
    if user is not None:
        return user.model_copy(update={"smtp": smtp, "receivers": [*user.receivers, receiver]})
    timing = Timing(group_wait="2s", group_interval="10s", repeat_interval="4h", critical_repeat_interval="4h")
    return AlertSettings(smtp=smtp, receivers=[receiver], timing=timing)


@contextlib.asynccontextmanager
async def _process(log_file: Path, *argv: str) -> AsyncIterator[asyncio.subprocess.Process]:
    with log_file.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _started(stack: contextlib.AsyncExitStack, state: DemoAlerting, log_file: Path, port: int,
                   *argv: str) -> bool:  # fmt: skip
    """Start ``argv`` (stopped when ``stack`` closes) and wait until it listens on ``port``;
    False, noted in ``state``, if it does not (the demo goes on without it)."""
    proc = await stack.enter_async_context(_process(log_file, *argv))
    try:
        await _until_listening(port, log_file, proc)
    except TimeoutError as exc:
        log.warning("%s", exc)
        state.failed.append(f"{Path(argv[0]).name} did not start (see {log_file})")
        return False
    return True


async def _until_listening(port: int, log_file: Path, proc: asyncio.subprocess.Process, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if proc.returncode is not None:
            raise TimeoutError(
                f"{log_file.stem} exited ({proc.returncode}): {log_file.read_text(errors='replace')[-500:]}"
            )
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1)
        except (OSError, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s:.0f} s:\n{tail}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def demo_alerting(
    workdir: Path, database_url: str, mqtt_url: str, ports: AlertingPorts, *, client_id: str, site: str = "+",
    settings_file: Path | None = None, find: Callable[..., str | None] = find_binary,
) -> AsyncIterator[DemoAlerting]:  # fmt: skip
    """Alertmanager, Prometheus and the bridge for as long as the block runs (each where its
    binary is found); the state says where they are and what Alertmanager notified."""
    state = DemoAlerting()
    alertmanager, prometheus = find("alertmanager", "prometheus-alertmanager"), find("prometheus")
    state.missing = [name for name, path in (("alertmanager", alertmanager), ("prometheus", prometheus)) if not path]
    if alertmanager is None:
        yield state
        return
    folder = workdir / "alerting"
    folder.mkdir(parents=True, exist_ok=True)
    user = load_alert_settings(settings_file) if settings_file is not None else None
    webhook = await asyncio.start_server(_Webhook(state.notifications).handle, LOOPBACK, 0)
    async with webhook, contextlib.AsyncExitStack() as stack:
        smtp_port = 0
        if user is None or user.smtp is None:
            state.mailbox = Mailbox(folder=workdir / "mail", on_mail=_mail)
            smtp_port = await stack.enter_async_context(smtp_sink(state.mailbox))
            state.smtp_url = f"smtp://{LOOPBACK}:{smtp_port}"
        else:
            state.mail_relay = user.smtp.smarthost
        settings = _settings(user, webhook.sockets[0].getsockname()[1], smtp_port)
        if settings_file is None:
            state.receivers = "notifications shown here"
        else:
            state.receivers = f"receivers from {settings_file}" + ("" if user and user.smtp else ", and shown here")
        manager_port, prometheus_port = free_port(), free_port()
        options = AlertOptions(
            ingest=(Upstream(LOOPBACK, ports.ingest),), erp=(Upstream(LOOPBACK, ports.erp),),
            analytics=(Upstream(LOOPBACK, ports.analytics),), bridge=(Upstream(LOOPBACK, ports.bridge),),
            alertmanager=Upstream(LOOPBACK, manager_port), alertmanager_url=f"http://{LOOPBACK}:{manager_port}",
            scrape_s=15, evaluation_s=15,
        )  # fmt: skip
        files = write_alerts(folder, options, settings)
        manager = (alertmanager, f"--config.file={files.alertmanager}", f"--storage.path={folder / 'am-data'}",
                   f"--web.listen-address={LOOPBACK}:{manager_port}", "--cluster.listen-address=")  # fmt: skip
        if not await _started(stack, state, folder / "alertmanager.log", manager_port, *manager):
            yield state
            return
        state.alertmanager_url = f"http://{LOOPBACK}:{manager_port}"
        if prometheus is not None:
            argv = (prometheus, f"--config.file={files.prometheus}",
                    f"--storage.tsdb.path={folder / 'prometheus-data'}",
                    f"--web.listen-address={LOOPBACK}:{prometheus_port}")  # fmt: skip
            if await _started(stack, state, folder / "prometheus.log", prometheus_port, *argv):
                state.prometheus_url = f"http://{LOOPBACK}:{prometheus_port}"
        config = BridgeConfig(database_url=database_url, bus_url=mqtt_url, client_id=client_id, site=site,
                              alertmanager_url=state.alertmanager_url, repost_s=30, http_port=ports.bridge,
                              session_expiry_s=600)  # fmt: skip
        task = asyncio.create_task(run_bridge(config, stats=state.bridge), name="alert-bridge")
        try:
            yield state
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - the demo ends with its summary, saying why alerts stopped
                log.warning("alert bridge stopped: %s", exc)
