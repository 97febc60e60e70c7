"""Running the ERP API under uvicorn inside our own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket

import uvicorn

from erp_api.app import create_app
from erp_api.config import DEFAULT_LOGIN, MAX_CONTENT, OUTBOX_DAYS, LoginPolicy
from erp_api.setpoints import DEFAULT_TIMEOUT_S
from factory.runtime import Listen, listen

__all__ = ["serve", "tune_gc"]


def tune_gc() -> None:
    """For a process that only serves (``factory erp serve``), once its modules are
    loaded: move what exists now out of the collector's sight (``gc.freeze``) and collect
    the young generation less often, so the collections a request can land on are fewer
    and shorter (the p99 of cheap reads)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def serve(
    database_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    dev: bool = False,
    mqtt_url: str | None = None,
    events_url: str | None = None,
    jwt_secret: str | None = None,
    pool_max_size: int = 10,
    max_content: int = MAX_CONTENT,
    login: LoginPolicy = DEFAULT_LOGIN,
    outbox_days: int = OUTBOX_DAYS,
    relay: bool = True,
    setpoint_timeout_s: float = DEFAULT_TIMEOUT_S,
    sock: socket.socket | None = None,
    forwarded_allow_ips: str = "127.0.0.1",
) -> None:
    """Serve until cancelled, then shut down gracefully (lifespan closes the pool).

    ``dev`` allows running without ``jwt_secret`` (see ``erp_api.config``); with
    ``mqtt_url`` setpoints go to the devices, and (unless not ``relay``) the outbox relay
    publishes events to ``events_url`` (default ``mqtt_url``) while the API serves. The socket is
    bound here (or given, already bound, as ``sock``), so a busy port is one
    ``StartupError`` before anything else starts. uvicorn's own signal capture stays off:
    the process entry point owns signals. X-Forwarded-For and X-Forwarded-Proto are believed
    only from ``forwarded_allow_ips`` (comma-separated addresses or networks: the gateway),
    so the client address the sign-in lock counts cannot be made up.
    """
    sock = sock or listen(Listen(host, port, option="--port"))
    app = create_app(
        database_url, jwt_secret=jwt_secret, dev=dev, mqtt_url=mqtt_url, events_url=events_url,
        pool_max_size=pool_max_size,
        max_content=max_content, login=login, outbox_days=outbox_days, relay=relay,
        setpoint_timeout_s=setpoint_timeout_s,
    )  # fmt: skip
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                            forwarded_allow_ips=forwarded_allow_ips)  # fmt: skip
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
    finally:
        sock.close()
    if server.started is False:
        raise OSError(f"ERP API did not start on {host}:{port} (see the log above)")
