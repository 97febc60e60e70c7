"""The demo's mail server (``factory_demo.mail``) with Python's own SMTP client: each message
kept as it was sent, in a file numbered on from what the folder holds; what it refuses."""

from __future__ import annotations

import asyncio
import smtplib
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from factory_demo.mail import MAX_MESSAGE, Mail, Mailbox, smtp_sink


def _message(subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, "alerts@plant.test", "shift-lead@plant.test"
    message.set_content(body)
    return message


def _send(port: int, *messages: EmailMessage, login: tuple[str, str] | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if login is not None:
            client.login(*login)
        for message in messages:
            client.send_message(message, to_addrs=["shift-lead@plant.test", "planner@plant.test"])


async def test_each_message_is_kept_whole_in_a_numbered_file(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "007-from-an-earlier-run.eml").write_text("kept")
    arrived: list[Mail] = []
    mailbox = Mailbox(folder=folder, on_mail=arrived.append)
    body = "Bearing worn on centrifugal1.\n.a line that starts with a dot\n..and one with two\n"
    async with smtp_sink(mailbox) as port:
        await asyncio.to_thread(_send, port, _message("[FIRING] warning: AssetAtRisk (centrifugal1)", body),
                                _message("Ümlaut / and:colons", "second"), login=("alerts", "pa55"))  # fmt: skip
    assert arrived == mailbox.mails
    first, second = mailbox.mails
    assert first.recipients == ["shift-lead@plant.test", "planner@plant.test"]
    assert first.subject == "[FIRING] warning: AssetAtRisk (centrifugal1)"
    assert first.path == folder / "008-firing-warning-assetatrisk-centrifugal1.eml"
    assert second.path == folder / "009-mlaut-and-colons.eml"
    assert (folder / "007-from-an-earlier-run.eml").read_text() == "kept"  # an earlier run's mail stays
    assert sorted(p.name for p in folder.iterdir()) == [
        "007-from-an-earlier-run.eml", "008-firing-warning-assetatrisk-centrifugal1.eml", "009-mlaut-and-colons.eml"
    ]  # fmt: skip
    kept = BytesParser(policy=policy.default).parsebytes(first.path.read_bytes())
    assert kept["Subject"] == first.subject
    assert kept.get_content().replace("\r\n", "\n") == body  # dot-stuffing undone (lines end in CRLF, as sent)
    assert second.subject == "Ümlaut / and:colons"
    assert mailbox.logins == ["\0alerts\0pa55"]


async def test_messages_sent_at_once_on_many_connections_each_get_their_own_number(tmp_path: Path) -> None:
    # Alertmanager sends each notification on its own connection, several at a time.
    mailbox = Mailbox(folder=tmp_path / "mail")
    async with smtp_sink(mailbox) as port:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(12) as clients:  # the server's own threads stay free to deliver
            await asyncio.gather(
                *(loop.run_in_executor(clients, _send, port, _message(f"alert {i}", "body")) for i in range(12))
            )
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert [f.name[:3] for f in files] == [f"{n:03d}" for n in range(1, 13)]
    assert [m.path for m in mailbox.mails] == files  # listed in the order of their numbers
    assert sorted(m.subject for m in mailbox.mails) == sorted(f"alert {i}" for i in range(12))


async def test_without_a_folder_messages_are_only_kept_in_memory(tmp_path: Path) -> None:
    mailbox = Mailbox()
    async with smtp_sink(mailbox) as port:
        await asyncio.to_thread(_send, port, _message("hello", "there"))
    (mail,) = mailbox.mails
    assert mail.path is None
    assert mail.message.get_content() == "there\r\n"


def _refused(port: int) -> list[tuple[str, int]]:
    """What the server answers to DATA before RCPT, and to a message over the size limit."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("alerts@plant.test")
        early = client.docmd("DATA")
        client.rcpt("shift-lead@plant.test")
        late = client.data(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX_MESSAGE // 1000 + 1))
        return [(early[1].decode(), early[0]), (late[1].decode(), late[0])]


@pytest.mark.timeout(60)
async def test_it_refuses_data_before_a_recipient_and_a_message_too_large(tmp_path: Path) -> None:
    mailbox = Mailbox(folder=tmp_path / "mail")
    async with smtp_sink(mailbox) as port:
        answers = await asyncio.to_thread(_refused, port)
    assert answers == [("RCPT first", 503), ("message too large", 552)]
    assert mailbox.mails == []
    assert not (tmp_path / "mail").exists()
