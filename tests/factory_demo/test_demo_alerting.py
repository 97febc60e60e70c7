"""The demo's alerting wiring: with Prometheus and Alertmanager installed it starts them on
``factory provision alerts``' files and runs the bridge, whose alerts reach the demo's own
webhook and, by e-mail, its own mail server, which keeps each as a .eml file; a settings file
with a mail server of its own is used instead; without the binaries it says what to install."""

from __future__ import annotations

import asyncio
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest
import yaml
from alerting_support import write_settings
from helpers import publish
from mail_sink import Sinks, sinks_running, smtp_running

from factory.wire import Status, encode_status
from factory_demo.alerting import DEMO_MAIL_TO, INSTALL_HINT, AlertingPorts, demo_alerting, find_binary
from factory_demo.mail import Mail, Mailbox
from factory_servers import free_port

pytestmark = pytest.mark.integration


async def test_the_demo_starts_and_provisions_alertmanager_prometheus_and_the_bridge(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    topic = f"factory/v1/{site}/pi1/status"
    async with demo_alerting(tmp_path, database_url, mqtt_url, ports, client_id=f"factory-alerts-{site}",
                             site=site) as state:  # fmt: skip
        assert state.missing == []
        assert state.alertmanager_url is not None
        assert state.prometheus_url is not None
        assert state.mailbox is not None
        async with httpx.AsyncClient(timeout=5) as http:
            for url in (state.alertmanager_url, state.prometheus_url):
                for _ in range(100):
                    if (await http.get(f"{url}/-/ready")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert (await http.get(f"{url}/-/ready")).status_code == 200, url
        config = yaml.safe_load((tmp_path / "alerting" / "prometheus" / "prometheus.yml").read_text())
        targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
        assert targets["factory-erp"] == [f"127.0.0.1:{ports.erp}"]
        assert targets["factory-ingest"] == [f"127.0.0.1:{ports.ingest}"]
        assert targets["factory-alerts"] == [f"127.0.0.1:{ports.bridge}"]
        assert targets["alertmanager"] == [state.alertmanager_url.removeprefix("http://")]
        try:
            # The simulated plant's fault of choice for a quick test: its edge device drops off.
            offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
            await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)
            deadline = time.monotonic() + 30
            while f"firing DeviceOffline {site}/pi1" not in state.notifications or not _mails(state.mailbox, site):
                assert time.monotonic() < deadline, (state.notifications, state.mailbox.mails)
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # a second notice would follow the first after group_wait
        finally:
            await publish(mqtt_url, [(topic, b"")], retain=True)
        lines = "\n".join(state.lines())
        assert f"{state.alertmanager_url}/#/alerts" in lines
        assert f"{state.prometheus_url}/alerts" in lines
        assert f"{state.smtp_url} keeps each alert e-mail (to {DEMO_MAIL_TO}) as {tmp_path / 'mail'}/" in lines
    # The same notice by e-mail, once, kept as a file in WORKDIR/mail that names the alert and the device.
    (mail,) = _mails(state.mailbox, site)
    assert mail.recipients == [DEMO_MAIL_TO]
    assert mail.subject == f"[FIRING] critical: DeviceOffline at {site}"
    assert mail.path is not None
    assert mail.path.parent == tmp_path / "mail"
    assert sorted((tmp_path / "mail").iterdir()) == sorted(m.path for m in state.mailbox.mails if m.path)
    kept = BytesParser(policy=policy.default).parsebytes(mail.path.read_bytes())
    assert kept["Subject"] == mail.subject
    body = kept.get_body(("html", "plain"))
    assert body is not None
    text = body.get_content()
    assert "DeviceOffline" in text
    assert "pi1" in text, text
    assert state.bridge.changes >= 1


def _mails(mailbox: Mailbox, site: str) -> list[Mail]:
    """The test's own (the bridge reposts what it stored of other tests' sites too)."""
    return [m for m in mailbox.mails if m.subject.endswith(f"DeviceOffline at {site}")]


async def test_a_settings_file_with_a_mail_server_gets_the_mail_instead(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    """The plant's own mail server wins over the demo's: nothing is kept in WORKDIR/mail."""
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    topic = f"factory/v1/{site}/pi2/status"
    plant = Sinks()
    async with smtp_running(plant) as smtp_port:
        settings = write_settings(tmp_path / "settings", smarthost=f"127.0.0.1:{smtp_port}")
        async with demo_alerting(tmp_path / "demo", database_url, mqtt_url, ports, client_id=f"factory-alerts-{site}",
                                 site=site, settings_file=settings,
                                 find=lambda *names: find_binary(*names) if "alertmanager" in names else None,
                                 ) as state:  # fmt: skip
            assert state.mailbox is None
            assert state.smtp_url is None
            assert f"alert e-mails go through 127.0.0.1:{smtp_port} (receivers from {settings})" in "\n".join(
                state.lines()
            )
            try:
                offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
                await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)
                deadline = time.monotonic() + 30
                while not _mails(plant.mailbox, site):
                    assert time.monotonic() < deadline, plant.mails
                    await asyncio.sleep(0.2)
            finally:
                await publish(mqtt_url, [(topic, b"")], retain=True)
    (mail,) = _mails(plant.mailbox, site)
    assert mail.recipients == ["shift-lead@plant.test"]  # the settings file's receiver
    assert mail.subject == f"[FIRING] critical: DeviceOffline at {site}"
    assert plant.logins[:1] == ["\0factory-alerts\0mail-secret"]
    assert not (tmp_path / "demo" / "mail").exists()


async def test_without_the_binaries_the_demo_says_what_to_install(
    tmp_path: Path, database_url: str, mqtt_url: str
) -> None:
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    async with demo_alerting(tmp_path, database_url, mqtt_url, ports, client_id="factory-alerts-none",
                             find=lambda *_names: None) as state:  # fmt: skip
        assert state.alertmanager_url is None
        assert state.missing == ["alertmanager", "prometheus"]
        (line,) = state.lines()
        assert INSTALL_HINT in line
    assert not (tmp_path / "alerting").exists()  # nothing was provisioned for servers that cannot run


async def test_a_server_that_does_not_start_leaves_the_demo_running_without_it(
    tmp_path: Path, database_url: str, mqtt_url: str
) -> None:
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    broken = tmp_path / "alertmanager"
    broken.write_text("#!/bin/sh\necho 'cannot open storage' >&2\nexit 1\n")
    broken.chmod(0o755)
    async with demo_alerting(tmp_path, database_url, mqtt_url, ports, client_id="factory-alerts-broken",
                             find=lambda *names: str(broken) if "alertmanager" in names else None) as state:  # fmt: skip
        assert state.alertmanager_url is None
        (line,) = state.lines()
        assert "alertmanager did not start" in line
    assert "cannot open storage" in (tmp_path / "alerting" / "alertmanager.log").read_text()


async def test_a_settings_file_without_a_mail_server_keeps_the_demos_beside_its_receivers(
    tmp_path: Path, database_url: str, mqtt_url: str, site: str
) -> None:
    """Webhooks only (and a receiver named as the demo's own): the file's webhook is called,
    and the demo's receiver still shows the notice and keeps its e-mail in WORKDIR/mail."""
    ports = AlertingPorts(erp=free_port(), ingest=free_port(), analytics=free_port())
    topic = f"factory/v1/{site}/pi3/status"
    async with sinks_running() as (plant, hook_port, _):
        settings = tmp_path / "alert-settings.yml"
        settings.write_text(
            "receivers:\n"
            f"  - {{name: demo, severities: [critical, warning], webhooks: ['http://127.0.0.1:{hook_port}/plant']}}\n"
            "timing: {group_wait: 1s, group_interval: 1s, repeat_interval: 1h, critical_repeat_interval: 1h}\n"
        )
        async with demo_alerting(tmp_path / "demo", database_url, mqtt_url, ports, client_id=f"factory-alerts-{site}",
                                 site=site, settings_file=settings,
                                 find=lambda *names: find_binary(*names) if "alertmanager" in names else None,
                                 ) as state:  # fmt: skip
            assert state.mailbox is not None
            assert f"receivers from {settings}, and shown here" in "\n".join(state.lines())
            try:
                offline = Status(state="offline", ts=int(time.time() * 1000), agent="1.0")
                await publish(mqtt_url, [(topic, encode_status(offline))], retain=True)
                deadline = time.monotonic() + 30
                hooks: list[dict[str, object]] = []
                while not (_mails(state.mailbox, site) and hooks):
                    assert time.monotonic() < deadline, (plant.hooks, state.mailbox.mails)
                    await asyncio.sleep(0.2)
                    hooks = [h for h in plant.hooks_about("DeviceOffline") if h["groupLabels"].get("site") == site]
            finally:
                await publish(mqtt_url, [(topic, b"")], retain=True)
    assert f"firing DeviceOffline {site}/pi3" in state.notifications
    assert hooks[0]["receiver"] == "demo"  # the file's receiver, under its own name
    (mail,) = _mails(state.mailbox, site)
    assert mail.recipients == [DEMO_MAIL_TO]
    assert mail.path is not None
    assert mail.path.parent == tmp_path / "demo" / "mail"
