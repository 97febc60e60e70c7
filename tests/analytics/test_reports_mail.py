"""Mailing the shift report: a real SMTP server of the test's own (tests/mail_sink.py) receives
it once however often the job runs, and a mail server that is away is tried again next run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from mail_sink import Sinks, smtp_running
from pdf_text import pdf_pages

from analytics.errors import ReportError
from analytics.jobs import Services, shift_report
from analytics.live import LiveConfig
from analytics.oee import OeeConfig
from analytics.reports import ReportMailConfig, load_report_config, mail_shift_reports
from analytics.scheduler import JobContext
from factory.configfile import ConfigError
from factory.settings import Settings
from factory_servers import free_port

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[Any]
PASSWORD = "Tr0ub4dor-mail-7"


def settings_file(folder: Path, site: str, port: int, **extra: Any) -> Path:
    path = folder / "report.yaml"
    path.write_text(yaml.safe_dump({
        "sites": [site], "recipients": ["manager@plant.test", "planner@plant.test"], "settle_s": 300,
        "smtp": {"smarthost": f"127.0.0.1:{port}", "from": "factory@plant.test", "username": "reports",
                 "password": PASSWORD, "require_tls": False},
        **extra,
    }))  # fmt: skip
    return path


async def sent_rows(db: Conn, site: str) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT label, attempts, sent_at IS NOT NULL, last_error FROM analytics.report_sent WHERE site = %s", (site,)
    )
    return await cur.fetchall()


def attachment(message: Any) -> tuple[str, bytes]:
    (part,) = list(message.iter_attachments())
    return part.get_filename(), part.get_content()


async def test_the_job_mails_the_last_shift_once_with_the_pdf(
    db: Conn, database_url: str, site: str, tmp_path: Path
) -> None:
    sinks = Sinks()
    async with smtp_running(sinks) as port:
        settings = Settings(report_config=settings_file(tmp_path, site, port, out_dir=str(tmp_path / "kept")))
        services = Services.from_settings(settings, LiveConfig())
        ctx = JobContext(db, database_url, services)
        first = await shift_report(ctx)
        second = await shift_report(ctx)
    assert len(first["sent"]) == 1
    assert second == {"sent": [], "failed": [], "waiting": 1}
    assert len(sinks.mails) == 1
    to, message = sinks.mails[0]
    assert to == ["manager@plant.test", "planner@plant.test"]
    assert str(message["Subject"]).startswith(f"Shift report {site}: shift ")
    assert "Output: production orders: none in this shift" in message.get_body(("plain",)).get_content()
    name, pdf = attachment(message)
    assert name.startswith(f"shift-report-{site}-")
    assert name.endswith(".pdf")
    assert pdf.startswith(b"%PDF-")
    kept = tmp_path / "kept" / name
    assert kept.read_bytes() == pdf
    assert pdf_pages(kept) == 4
    assert sinks.logins == [f"\0reports\0{PASSWORD}"]  # the password from the file, over AUTH PLAIN
    ((label, attempts, sent, error),) = await sent_rows(db, site)
    assert (attempts, sent, error) == (1, True, None)
    assert label in first["sent"][0]


async def test_a_mail_server_that_is_away_is_tried_again_next_run(db: Conn, site: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    config = load_report_config(settings_file(tmp_path, site, port))
    oee = OeeConfig(lines=[])
    now = datetime(2002, 3, 4, 14, 20, tzinfo=UTC)  # shift A (06:00-14:00) ended, and settled (300 s)
    with pytest.raises(ReportError, match="not sent"):
        await mail_shift_reports(db, config, oee, now)
    ((label, attempts, sent, error),) = await sent_rows(db, site)
    assert (label, attempts, sent) == ("shift A of 2002-03-04 (06:00-14:00 UTC)", 1, False)
    assert "Connection refused" in error or "ConnectionRefused" in error

    sinks = Sinks()
    async with smtp_running(sinks, port):
        later = await mail_shift_reports(db, config, oee, now.replace(minute=50))
        again = await mail_shift_reports(db, config, oee, now.replace(minute=55))
    assert later.sent == [f"{site} shift A of 2002-03-04 (06:00-14:00 UTC)"]
    assert again.sent == []
    assert len(sinks.mails) == 1
    assert await sent_rows(db, site) == [(label, 2, True, None)]


def test_the_settings_file_refuses_typos_placeholders_and_bad_addresses(tmp_path: Path) -> None:
    for extra, problem in (({"settle": 10}, "settle"), ({"recipients": ["manager at plant"]}, "recipients"),
                           ({"smtp": {"smarthost": "mail:25", "from": "f@plant.test", "password": "changeme"}},
                            "password")):  # fmt: skip
        path = settings_file(tmp_path, "mill-a", 25, **extra)
        with pytest.raises(ConfigError) as caught:
            load_report_config(path)
        assert problem in caught.value.report()
    assert isinstance(load_report_config(settings_file(tmp_path, "mill-a", 25)), ReportMailConfig)
