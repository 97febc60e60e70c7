"""Runs the simulated sugar mill: the plant model on a clock, feeding both servers.

One background task steps the model every ``tick_s`` and copies the values into the
Modbus datastore and the OPC UA address space. Tests that need exact values pin signals
with ``plant.model.hold(...)`` and call ``await plant.refresh()`` instead of waiting for
the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Self

from factory.runtime import within
from simulator.faults import FaultSchedule
from simulator.modbus_server import ModbusSimServer
from simulator.opcua_server import OpcUaSimServer
from simulator.plant import PlantModel, SimulatorError

logger = logging.getLogger(__name__)

DEFAULT_MODBUS_PORT = 5020  # what `factory sim` listens on, and the shipped edge config reads
DEFAULT_OPCUA_PORT = 4840
_MAX_BACKOFF_S = 5.0


class SimulatedPlant:
    """The simulated mill as an async context manager: servers up inside, down after.

    Port 0 binds a free port; read the real one from ``modbus_port`` / ``opcua_endpoint``.
    ``faults`` is the fault schedule (none by default); its times count from ``started_at``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        modbus_port: int = 0,
        opcua_port: int = 0,
        seed: int = 1,
        tick_s: float = 0.2,
        *,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 10.0,
        faults: FaultSchedule | None = None,
    ) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        self._host = host
        self._tick_s = tick_s
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._model = PlantModel(seed, faults)
        self._started_at: float | None = None
        self._modbus = ModbusSimServer(self._model, host=host, port=modbus_port)
        self._opcua = OpcUaSimServer(self._model, host=host, port=opcua_port)
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def model(self) -> PlantModel:
        return self._model

    @property
    def started_at(self) -> float:
        """Epoch seconds of the model's first step: fault ``start_s`` counts from here."""
        if self._started_at is None:
            raise SimulatorError("the simulated plant has not started")
        return self._started_at

    @property
    def host(self) -> str:
        return self._host

    @property
    def modbus_port(self) -> int:
        return self._modbus.port

    @property
    def opcua_port(self) -> int:
        return self._opcua.port

    @property
    def opcua_endpoint(self) -> str:
        return self._opcua.endpoint

    async def __aenter__(self) -> Self:
        if self._ticker is not None:
            raise SimulatorError("the simulated plant is already running")
        self._model.step(asyncio.get_running_loop().time())
        self._started_at = time.time()
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await self._modbus.start()
                await self._opcua.start()
        except BaseException:
            await self._stop_servers()
            raise
        self._ticker = asyncio.create_task(self._tick_forever(), name="simulator-tick")
        logger.info("simulated plant up: modbus %s:%s, %s", self._host, self.modbus_port, self.opcua_endpoint)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop ticking and close both servers; safe to call twice."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await self._stop_servers()

    async def refresh(self) -> None:
        """Step the model to now and publish its values on both servers at once."""
        async with self._lock:
            self._model.step(asyncio.get_running_loop().time())
            await self._modbus.refresh()
            await self._opcua.refresh()

    async def run_forever(self) -> None:
        """Serve until cancelled (``factory sim``); the caller's ``async with`` cleans up."""
        if self._ticker is None:
            raise SimulatorError("enter the simulated plant with 'async with' first")
        await asyncio.shield(self._ticker)

    async def _tick_forever(self) -> None:
        """Refresh on a fixed period; a failing refresh is logged and retried with backoff."""
        loop = asyncio.get_running_loop()
        due, failures = loop.time(), 0
        while True:
            due = max(due + self._tick_s, loop.time())  # after a stall, do not catch up in a burst
            await asyncio.sleep(due - loop.time())
            try:
                await self.refresh()
                failures = 0
            except Exception:
                failures += 1
                backoff = min(self._tick_s * 2**failures, _MAX_BACKOFF_S)
                logger.exception("simulator refresh failed (%d in a row); retrying in %.1f s", failures, backoff)
                await asyncio.sleep(backoff)

    async def _stop_servers(self) -> None:
        for name, server in (("OPC UA", self._opcua), ("Modbus", self._modbus)):
            try:
                await within(self._stop_timeout_s, server.stop())  # also when stopped by a cancellation
            except TimeoutError:
                logger.warning("%s server did not stop within %.0f s", name, self._stop_timeout_s)
