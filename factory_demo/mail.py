"""The demo's mail server: an SMTP server on a loopback port that keeps every message it is
given, as the plant's mail server would deliver it, so the demo's alert e-mails can be read.

Each message is written as ``NNN-subject.eml`` into a folder (any mail program opens them;
they are plain text too) and kept in memory for the summary. It speaks just enough SMTP
(RFC 5321) for Alertmanager and ``factory report``: EHLO/HELO, AUTH PLAIN (accepted and
noted, never checked), MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, so it listens on loopback
only. The tests use it as their mail server too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Final

__all__ = ["Mail", "Mailbox", "smtp_sink"]

log = logging.getLogger(__name__)
LOOPBACK: Final = "127.0.0.1"
MAX_MESSAGE: Final = 10 * 1024 * 1024  # bytes; a report with its plots is well below
IDLE_S: Final = 60.0  # a client silent this long is dropped


@dataclass(frozen=True, slots=True)
class Mail:
    """One message received: its envelope recipients, the message, and the file it is in."""

    recipients: list[str]
    message: EmailMessage
    path: Path | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")


@dataclass
class Mailbox:
    """What the server received; with a ``folder``, each message is also written there.
    ``on_mail`` is called with each one as it arrives (the demo prints it)."""

    folder: Path | None = None
    mails: list[Mail] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # AUTH PLAIN's "authzid\0user\0password"
    on_mail: Callable[[Mail], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def deliver(self, recipients: list[str], data: bytes) -> Mail:
        """Keep one message. Sessions deliver from threads at once (Alertmanager sends each
        notification on its own connection): one at a time, so each gets its own number and
        ``mails`` lists them in the order of their numbers."""
        message = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(data)
        with self._lock:
            path = None if self.folder is None else _write(self.folder, data, str(message["Subject"] or "no subject"))
            mail = Mail(list(recipients), message, path)
            self.mails.append(mail)
            if self.on_mail is not None:
                self.on_mail(mail)
        return mail


def _write(folder: Path, data: bytes, subject: str) -> Path:
    """``NNN-subject.eml``, numbered on from what the folder holds (a demo's workdir is kept
    between runs); written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in folder.glob("*.eml") if (m := re.match(r"(\d+)-", p.name))]
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:80] or "no-subject"
    path = folder / f"{max(numbers, default=0) + 1:03d}-{slug}.eml"
    partial = path.with_suffix(".eml.part")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path


class _Session:
    """One client's conversation."""

    def __init__(self, mailbox: Mailbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.mailbox, self.reader, self.writer = mailbox, reader, writer
        self.recipients: list[str] = []

    async def run(self) -> None:
        try:
            await self._reply(b"220 factory-demo ESMTP")
            while line := await asyncio.wait_for(self.reader.readline(), IDLE_S):
                if not await self._command(line.decode("utf-8", "replace").rstrip("\r\n")):
                    break
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("mail sink: %s", exc)
        finally:
            self.writer.close()

    async def _reply(self, line: bytes) -> None:
        self.writer.write(line + b"\r\n")
        await asyncio.wait_for(self.writer.drain(), IDLE_S)

    async def _command(self, command: str) -> bool:
        """Answer one command; False after QUIT."""
        verb = command.split(" ", 1)[0].upper()
        if verb in {"EHLO", "HELO"}:
            await self._reply(b"250-factory-demo\r\n250-AUTH PLAIN\r\n250 SIZE %d" % MAX_MESSAGE)
        elif verb == "AUTH":
            await self._auth(command.split())
        elif verb == "RCPT":
            self.recipients.append(command.split(":", 1)[-1].strip(" <>"))
            await self._reply(b"250 OK")
        elif verb == "DATA":
            if not self.recipients:
                await self._reply(b"503 RCPT first")
                return True
            await self._reply(b"354 End data with <CR><LF>.<CR><LF>")
            data = await self._data()
            if data is None:
                await self._reply(b"552 message too large")
            else:
                await asyncio.to_thread(self.mailbox.deliver, self.recipients, data)
                await self._reply(b"250 OK")
            self.recipients = []
        elif verb == "QUIT":
            await self._reply(b"221 Bye")
            return False
        elif verb in {"MAIL", "RSET"}:
            self.recipients = []
            await self._reply(b"250 OK")
        elif verb == "NOOP":
            await self._reply(b"250 OK")
        else:
            await self._reply(b"502 not implemented")
        return True

    async def _auth(self, words: list[str]) -> None:
        if len(words) < 2 or words[1].upper() != "PLAIN":
            await self._reply(b"504 only AUTH PLAIN")
            return
        if len(words) == 2:  # the credentials on a line of their own
            await self._reply(b"334 ")
            words.append((await asyncio.wait_for(self.reader.readline(), IDLE_S)).decode().strip())
        try:
            self.mailbox.logins.append(base64.b64decode(words[2], validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            await self._reply(b"501 not base64")
            return
        await self._reply(b"235 2.7.0 Authentication successful")

    async def _data(self) -> bytes | None:
        """The message up to the lone dot, dot-unstuffed; None (read to its end) if too large."""
        lines: list[bytes] = []
        size = 0
        while (line := await asyncio.wait_for(self.reader.readline(), IDLE_S)) not in (b".\r\n", b".\n", b""):
            size += len(line)
            if size <= MAX_MESSAGE:
                lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines) if size <= MAX_MESSAGE else None


@contextlib.asynccontextmanager
async def smtp_sink(mailbox: Mailbox, port: int = 0) -> AsyncIterator[int]:
    """The server on 127.0.0.1:``port`` (0: a free one) while the block runs; yields its port."""
    server = await asyncio.start_server(lambda r, w: _Session(mailbox, r, w).run(), LOOPBACK, port)
    async with server:
        yield server.sockets[0].getsockname()[1]
