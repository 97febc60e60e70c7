"""``/healthz`` and ``/metrics`` (Prometheus text format) for any of our services.

Standard library only, so the edge agent can serve it too. Metrics are read from the
service's own counters when scraped: nothing is updated twice.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from factory.runtime import Listen, listen

__all__ = ["CONTENT_TYPE", "SUFFIX", "Health", "Histogram", "Labels", "Metric", "render", "serve_http"]

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family; ``read`` returns its samples as (labels, value). A label named
    ``SUFFIX`` is not a label: it ends the sample's name (a histogram's ``_bucket``)."""

    name: str
    help: str
    kind: str  # "counter", "gauge" or "histogram"
    read: Callable[[], Iterable[tuple[Labels, float]]]


SUFFIX = "__suffix__"


class Histogram:
    """Observations counted into cumulative buckets per label values, with their sum and
    count: Prometheus' histogram, kept in this process."""

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help_text, label_names, buckets
        self._series: dict[tuple[str, ...], list[float]] = {}  # per labels: bucket counts, then sum and count

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self.buckets) + 2)
        index = bisect.bisect_left(self.buckets, value)  # the first bound >= value: "le"
        if index < len(self.buckets):
            series[index] += 1  # past the last bound only +Inf (the count) holds it
        series[-2] += value
        series[-1] += 1

    def metric(self) -> Metric:
        def read() -> Iterable[tuple[Labels, float]]:
            for values, series in sorted(self._series.items()):
                labels = tuple(zip(self.label_names, values, strict=True))
                running = 0.0
                for bound, count in zip(self.buckets, series, strict=False):
                    running += count
                    yield ((SUFFIX, "_bucket"), *labels, ("le", _number(bound))), running
                yield ((SUFFIX, "_bucket"), *labels, ("le", "+Inf")), series[-1]
                yield ((SUFFIX, "_sum"), *labels), series[-2]
                yield ((SUFFIX, "_count"), *labels), series[-1]

        return Metric(self.name, self.help, "histogram", read)


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
            suffix = labels[0][1] if labels and labels[0][0] == SUFFIX else ""
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels[1 if suffix else 0 :])
            name = f"{metric.name}{suffix}{{{label_text}}}" if label_text else metric.name + suffix
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
