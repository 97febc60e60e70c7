"""``factory edge check``: probe every source once and show what each tag reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asyncua.ua.uaerrors import UaError

from edge_agent.config import EdgeConfig, ModbusSource, OpcuaSource
from edge_agent.modbus import ModbusReader
from edge_agent.opcua import OpcuaReader, make_client
from factory.wire import Point, Quality

__all__ = ["probe_all"]

Echo = Callable[[str], None]


def _show(echo: Echo, points: list[Point], units: dict[str, str | None]) -> bool:
    good = True
    for p in points:
        unit = units.get(p.tag) or ""
        mark = "ok " if p.quality is Quality.GOOD else "BAD"
        good &= p.quality is not Quality.BAD
        echo(f"    {mark} {p.tag:<40} {p.value!s:>14} {unit}")
    return good


async def _probe_modbus(source: ModbusSource, echo: Echo) -> bool:
    async with ModbusReader(source) as reader:
        readings = [r for blocks in reader.poll_groups().values() for r in await reader.read(blocks)]
    points = [p for reading in readings for p in reading.points()]
    return _show(echo, points, {t.name: t.unit for t in source.tags})


async def _probe_opcua(source: OpcuaSource, echo: Echo) -> bool:
    reader = OpcuaReader(source, lambda _points: None)
    try:
        client = await make_client(source, auto_reconnect=False)
        await asyncio.wait_for(client.connect(), source.timeout_ms / 1000 + 1)
    except (OSError, TimeoutError, UaError) as exc:
        echo(f"    cannot connect to {source.endpoint}: {exc}")
        return False
    try:
        points = await reader.read_once(client, {t.name: client.get_node(t.node) for t in source.tags})
    finally:
        await client.disconnect()
    return _show(echo, points, {t.name: t.unit for t in source.tags})


async def probe_all(config: EdgeConfig, echo: Echo) -> bool:
    """True when every source answered and no tag read bad."""
    ok = True
    for source in config.sources:
        where = (
            source.endpoint
            if isinstance(source, OpcuaSource)
            else f"{source.host or source.serial_port} unit {source.unit}"
        )
        echo(f"  {source.name} ({source.kind}, {where}):")
        try:
            if isinstance(source, ModbusSource):
                ok &= await _probe_modbus(source, echo)
            else:
                ok &= await _probe_opcua(source, echo)
        except Exception as exc:  # noqa: BLE001 - a probe reports every failure and goes on
            echo(f"    failed: {exc}")
            ok = False
    return ok
