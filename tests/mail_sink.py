"""A webhook of the test's own (asyncio) and the demo's SMTP server, for what the platform sends
out: Alertmanager's notifications, the mailed shift reports. (No tests in this module.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from factory_demo.mail import Mailbox, smtp_sink


@dataclass
class Sinks:
    """What Alertmanager delivered: webhook calls (path, JSON) and mails (envelope, message, AUTH)
    to the demo's mail server (``factory_demo.mail``), which the tests use as theirs."""

    hooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mailbox: Mailbox = field(default_factory=Mailbox)

    @property
    def mails(self) -> list[tuple[list[str], EmailMessage]]:
        return [(m.recipients, m.message) for m in self.mailbox.mails]

    @property
    def logins(self) -> list[str]:
        return self.mailbox.logins

    def mails_about(self, alertname: str) -> list[tuple[list[str], EmailMessage]]:
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


@contextlib.asynccontextmanager
async def sinks_running() -> AsyncIterator[tuple[Sinks, int, int]]:
    sinks = Sinks()
    hook = await asyncio.start_server(lambda r, w: _webhook(sinks, r, w), "127.0.0.1", 0)
    async with hook, smtp_sink(sinks.mailbox) as smtp_port:
        yield sinks, hook.sockets[0].getsockname()[1], smtp_port


@contextlib.asynccontextmanager
async def smtp_running(sinks: Sinks, port: int = 0) -> AsyncIterator[int]:
    """Only the SMTP server, on ``port`` (0: any free one); yields the port it listens on."""
    async with smtp_sink(sinks.mailbox, port) as listening:
        yield listening
