"""A webhook and an SMTP server of the test's own (asyncio), for what the platform sends out:
Alertmanager's notifications, the mailed shift reports. (No tests in this module.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage as Message
from email.parser import BytesParser
from typing import Any


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
async def smtp_running(sinks: Sinks, port: int = 0) -> AsyncIterator[int]:
    """Only the SMTP server, on ``port`` (0: any free one); yields the port it listens on."""
    server = await asyncio.start_server(lambda r, w: _smtp(sinks, r, w), "127.0.0.1", port)
    async with server:
        yield server.sockets[0].getsockname()[1]
