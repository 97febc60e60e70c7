"""A lean HTTP/1.1 keep-alive client and open-loop pacing, for ``factory bench erp``.

The load generator shares two cores with the server and PostgreSQL, so its own cost per
request must be small: a general-purpose client (httpx) spends several times more CPU per
request than this one, which only speaks what the bench needs (JSON bodies,
Content-Length responses, persistent connections). Latencies are measured from when a
request was *due*, not when it was sent, so a stalled server cannot hide its queueing
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HttpError", "Latencies", "RawHttp", "paced"]


class HttpError(RuntimeError):
    """An unexpected status from the server under test."""


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)  # seconds
    errors: int = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def percentile(self, q: float) -> float:
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    def summary(self) -> dict[str, float | int]:
        return {
            "count": len(self.samples),
            "errors": self.errors,
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
        }


class RawHttp:
    """Up to ``size`` persistent connections to one host; ``request`` returns (status, JSON)."""

    def __init__(self, host: str, port: int, headers: dict[str, str], size: int = 64) -> None:
        self.host, self.port, self.size = host, port, size
        base = {"Host": f"{host}:{port}", **headers}
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in base.items())
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._open = 0
        self._slot = asyncio.Semaphore(size)

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self._idle.empty():
            return self._idle.get_nowait()
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)

    async def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        headers: dict[str, str] | None = None,
        *,
        form: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``body`` is sent as JSON, ``form`` as an HTML form (the OAuth2 token endpoint)."""
        if form is not None:
            payload, content_type = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        else:
            payload, content_type = b"" if body is None else json.dumps(body).encode(), "application/json"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\n{self._headers}{extra}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        async with self._slot:
            reader, writer = await self._connection()
            try:
                writer.write(head.encode() + payload)
                status, data, keep = await asyncio.wait_for(self._read(reader), 30)
            except BaseException:
                writer.close()
                raise
            if keep:
                self._idle.put_nowait((reader, writer))
            else:
                writer.close()
        return status, json.loads(data) if data else None

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, keep = 0, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection" and value.strip().lower() == b"close":
                keep = False
        return status, await reader.readexactly(length) if length else b"", keep


async def paced(rate: float, seconds: float, job: Callable[[float], Awaitable[None]], limit: int = 2000) -> int:
    """Start ``job(due)`` ``rate`` times per second for ``seconds`` (open loop); wait for all.

    ``due`` is the perf_counter time the job was scheduled for. At most ``limit`` jobs run at
    once (a safety net: hitting it means the server is far past saturation)."""
    tasks: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(limit)
    start = time.perf_counter()
    total = int(rate * seconds)

    async def guarded(due: float) -> None:
        async with gate:
            await job(due)

    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(guarded(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)
    return total
