"""``/healthz`` and ``/metrics`` (Prometheus text format) for any of our services.

Standard library only, so the edge agent can serve it too. Metrics are read from the
service's own counters when scraped: nothing is updated twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from factory.runtime import Listen, listen

__all__ = ["CONTENT_TYPE", "Health", "Labels", "Metric", "render", "serve_http"]

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family; ``read`` returns its samples as (labels, value)."""

    name: str
    help: str
    kind: str  # "counter" or "gauge"
    read: Callable[[], Iterable[tuple[Labels, float]]]


def single(fn: Callable[[], float]) -> Callable[[], Iterable[tuple[Labels, float]]]:
    return lambda: [((), float(fn()))]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Prometheus' spelling of a sample value (``NaN`` for "not known yet", ``+Inf``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The Prometheus text format of ``metrics``, read now."""
    lines = []
    for metric in metrics:
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        for labels, value in metric.read():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            name = f"{metric.name}{{{label_text}}}" if label_text else metric.name
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


# ok, and the details /healthz shows; "status" among them overrides "ok"/"degraded"
Health = Callable[[], tuple[bool, dict[str, object]]]


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, metrics: list[Metric], health: Health
) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass  # headers are not needed
        parts = request.decode("latin-1").split()
        path = parts[1] if len(parts) >= 2 else ""
        if parts and parts[0] != "GET":
            status, ctype, body = "405 Method Not Allowed", "text/plain", "GET only\n"
        elif path == "/metrics":
            status, ctype, body = "200 OK", CONTENT_TYPE, render(metrics)
        elif path == "/healthz":
            ok, details = health()
            status = "200 OK" if ok else "503 Service Unavailable"
            ctype, body = "application/json", json.dumps({"status": "ok" if ok else "degraded", **details})
        else:
            status, ctype, body = "404 Not Found", "text/plain", "try /healthz or /metrics\n"
        data = body.encode()
        head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + data)
        await asyncio.wait_for(writer.drain(), 5)
    except (TimeoutError, ConnectionError, UnicodeDecodeError) as exc:
        log.debug("http: %s", exc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_http(
    where: Listen, metrics: list[Metric], health: Health, *, on_listening: Callable[[int], None] | None = None
) -> None:
    """Serve until cancelled; a busy port is a ``StartupError`` (or, with ``where.fallback``,
    another port); ``on_listening`` gets the bound port (``port=0`` picks a free one)."""
    sock = listen(where)
    server = await asyncio.start_server(lambda r, w: _handle(r, w, metrics, health), sock=sock)
    host, port = sock.getsockname()[:2]
    log.info("health and metrics on http://%s:%d/healthz and /metrics", host, port)
    if on_listening is not None:
        on_listening(int(port))
    async with server:
        await server.serve_forever()
