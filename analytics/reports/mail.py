"""Mailing the shift report when a shift ends: the settings file, the SMTP send, the record.

Once a shift has ended and ``settle_s`` has passed (late telemetry, the last OEE and
production-count runs), the job builds its report and mails it, PDF attached, to the
configured recipients. ``analytics.report_sent`` records each report: one with ``sent_at``
is never sent again (a restarted scheduler does not mail twice); one that failed keeps its
error and is tried again on the next run, for up to ``retry_h`` hours. A crash between the
mail server's acceptance and the record would send it once more: at least once, by design.

The SMTP settings follow the alerting settings (``provisioning/alertmanager.py``): the
password is a ``SecretStr`` read from the file, never from the command line, and a
placeholder is refused.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Final

import psycopg
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from analytics.errors import ReportError
from analytics.oee import OeeConfig
from analytics.reports.figures import Period, collect, last_finished_shift, shift_period
from analytics.reports.pdf import summary_lines, write_pdf
from factory.configfile import load_yaml_model

__all__ = ["MailSummary", "ReportMailConfig", "Smtp", "load_report_config", "mail_shift_reports", "send_mail"]

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
EMAIL: Final = r"^[^@\s]+@[^@\s]+$"
PLACEHOLDERS: Final = frozenset({"", "...", "changeme", "change-me", "change_me", "secret", "password", "xxx", "todo"})


class Smtp(BaseModel):
    """The plant's mail server; STARTTLS unless ``require_tls: false`` (a relay on the same host)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    smarthost: str = Field(pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", description="HOST:PORT")
    from_: str = Field(alias="from", pattern=EMAIL)
    username: str | None = None
    password: SecretStr | None = None
    require_tls: bool = True
    hello: str = Field("localhost", pattern=r"^[A-Za-z0-9.-]+$", description="the name said in EHLO")
    timeout_s: float = Field(30.0, gt=0, description="per connection and command")

    @field_validator("password")
    @classmethod
    def _real(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDERS:
            raise ValueError("a placeholder: give the mail account's password")
        return value


class ReportMailConfig(BaseModel):
    """The file named by ``FACTORY_REPORT_CONFIG`` (docs/reports.md, "Mailing the shift report")."""

    model_config = ConfigDict(extra="forbid")

    sites: list[str] = Field(min_length=1, description="A report per site and shift")
    recipients: list[str] = Field(min_length=1)
    smtp: Smtp
    settle_s: float = Field(600.0, ge=0, description="Wait this long after a shift ends before reporting it")
    retry_h: float = Field(24.0, gt=0, description="A report that failed is tried again for this long")
    failure_prob: float = Field(0.5, ge=0, le=1, description="Assets at or above it are at risk")
    out_dir: Path | None = Field(None, description="Keep each PDF here (default: a temporary file)")

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if "@" not in v or any(c.isspace() for c in v)]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return value


def load_report_config(path: Path) -> ReportMailConfig:
    return load_yaml_model(path, ReportMailConfig)


def send_mail(smtp: Smtp, recipients: list[str], subject: str, body: str, pdf: Path) -> None:
    """One message with the PDF attached; blocking (run it in a thread). Raises ReportError."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = smtp.from_
    message["To"] = ", ".join(recipients)
    message.set_content(body)
    message.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename=pdf.name)
    host, _, port = smtp.smarthost.rpartition(":")
    try:
        with smtplib.SMTP(host, int(port), local_hostname=smtp.hello, timeout=smtp.timeout_s) as client:
            if smtp.require_tls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username is not None and smtp.password is not None:
                client.login(smtp.username, smtp.password.get_secret_value())
            client.send_message(message, to_addrs=recipients)
    except (smtplib.SMTPException, OSError) as exc:
        raise ReportError(f"mail to {smtp.smarthost} failed: {type(exc).__name__}: {exc}") from exc


@dataclass(slots=True)
class MailSummary:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: int = 0  # already sent, or not yet settled


_CLAIM: Final = """INSERT INTO analytics.report_sent (site, kind, period_start, period_end, label, recipients)
    VALUES (%s, 'shift', %s, %s, %s, %s) ON CONFLICT (site, kind, period_start) DO NOTHING"""
_DUE: Final = """SELECT period_start FROM analytics.report_sent
    WHERE site = %s AND kind = 'shift' AND sent_at IS NULL AND period_end >= %s ORDER BY period_start"""
_SENT: Final = """UPDATE analytics.report_sent SET sent_at = now(), attempts = attempts + 1, last_error = NULL,
    recipients = %s, updated_at = now() WHERE site = %s AND kind = 'shift' AND period_start = %s"""
_FAILED: Final = """UPDATE analytics.report_sent SET attempts = attempts + 1, last_error = %s, updated_at = now()
    WHERE site = %s AND kind = 'shift' AND period_start = %s"""


def _subject(period: Period) -> str:
    return f"Shift report {period.site}: {period.label}"


async def _send_one(conn: Conn, config: ReportMailConfig, oee: OeeConfig, period: Period, workdir: Path) -> None:
    data = await collect(conn, period, oee, failure_prob=config.failure_prob)
    folder = config.out_dir or workdir
    name = f"shift-report-{period.site}-{period.start:%Y%m%d-%H%M}.pdf"
    pdf = await asyncio.to_thread(write_pdf, data, folder / name, oee.calendar.timezone)
    body = "\n".join(f"{heading}: {sentence}" for heading, sentence in summary_lines(data))
    body += "\n\nThe full report is attached (PDF).\n"
    await asyncio.to_thread(send_mail, config.smtp, config.recipients, _subject(period), body, pdf)


async def mail_shift_reports(
    conn: Conn, config: ReportMailConfig, oee: OeeConfig, now: datetime | None = None
) -> MailSummary:
    """Mail each site's last settled shift, and any earlier one whose mail failed; raises ReportError
    (after trying them all) when one failed, so the run counts as failed on /healthz."""
    now = now or datetime.now(UTC)
    summary = MailSummary()
    settled = now - timedelta(seconds=config.settle_s)
    with tempfile.TemporaryDirectory(prefix="factory-report-") as tmp:
        for site in config.sites:
            latest = last_finished_shift(oee.calendar, site, settled)
            await conn.execute(_CLAIM, (site, latest.start, latest.end, latest.label, config.recipients))
            cur = await conn.execute(_DUE, (site, now - timedelta(hours=config.retry_h)))
            due = [row[0] for row in await cur.fetchall()]
            summary.waiting += 1 if latest.start not in due else 0
            for start in due:
                period = shift_period(oee.calendar, site, start, now)
                try:
                    await _send_one(conn, config, oee, period, Path(tmp))
                except ReportError as exc:
                    log.error("shift report %s %s not sent: %s", site, period.label, exc)
                    await conn.execute(_FAILED, (str(exc), site, start))
                    summary.failed.append(f"{site} {period.label}")
                    continue
                await conn.execute(_SENT, (config.recipients, site, start))
                summary.sent.append(f"{site} {period.label}")
                log.info("shift report %s %s mailed to %d recipients", site, period.label, len(config.recipients))
    if summary.failed:
        raise ReportError(f"{len(summary.failed)} report(s) not sent, tried again next run: {summary.failed}")
    return summary
