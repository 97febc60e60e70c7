"""``factory edge check``: probe every source once and show what each tag reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asyncua.ua.uaerrors import UaError

from edge_agent.config import EdgeConfig, ModbusSource, OpcuaSource
from edge_agent.modbus import ModbusReader
from edge_agent.opcua import OpcuaReader, explain, make_client, resolve
from factory.wire import Quality

__all__ = ["probe_all"]

Echo = Callable[[str], None]


Shown = tuple[str, object, Quality]


def _show(echo: Echo, readings: list[Shown], units: dict[str, str | None], notes: dict[str, str]) -> bool:
    good = True
    for name, value, quality in readings:
        unit = units.get(name) or ""
        mark = "ok " if quality is Quality.GOOD else "BAD"
        good &= quality is not Quality.BAD
        note = f"  ({notes[name]})" if name in notes else ""
        echo(f"    {mark} {name:<40} {value!s:>14} {unit}{note}")
    return good


async def _probe_modbus(source: ModbusSource, echo: Echo) -> bool:
    async with ModbusReader(source) as reader:
        readings = await reader.probe()
    shown: list[Shown] = [(tag.name, value, Quality.BAD if value is None else Quality.GOOD) for tag, value in readings]
    return _show(echo, shown, {t.name: t.unit for t in source.tags}, {})


async def _probe_opcua(source: OpcuaSource, echo: Echo) -> bool:
    reader = OpcuaReader(source, lambda _points: None)
    try:
        client = await make_client(source, auto_reconnect=False)
        await asyncio.wait_for(client.connect(), source.timeout_ms / 1000 + 1)
    except (OSError, TimeoutError, UaError, ValueError) as exc:  # ValueError: unreadable certificate
        echo(f"    cannot connect to {source.endpoint}: {explain(exc)}")
        return False
    try:
        nodes, failed = await resolve(client, source.tags)
        points = await reader.read_once(client, nodes)
    finally:
        await client.disconnect()
    shown: list[Shown] = [(p.tag, p.value, p.quality) for p in points]
    shown += [(name, None, Quality.BAD) for name in failed]
    return _show(echo, shown, {t.name: t.unit for t in source.tags}, failed)


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
