"""``factory edge check``: probe every source once and show what each tag reads."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.config import EdgeConfig, OpcuaSource
from edge_agent.source import open_source
from edge_agent.stats import Probe
from factory.wire import Quality

__all__ = ["probe_all"]

Echo = Callable[[str], None]


def _show(echo: Echo, probe: Probe, units: dict[str, str | None]) -> bool:
    if probe.failed is not None:
        echo(f"    {probe.failed}")
        return False
    good = True
    for name, value, quality in probe.rows:
        unit = units.get(name) or ""
        mark = "ok " if quality is Quality.GOOD else "BAD"
        good &= quality is not Quality.BAD
        note = f"  ({probe.notes[name]})" if name in probe.notes else ""
        echo(f"    {mark} {name:<40} {value!s:>14} {unit}{note}")
    return good


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
            ok &= _show(echo, await open_source(source).probe(), {t.name: t.unit for t in source.tags})
        except Exception as exc:  # noqa: BLE001 - a probe reports every failure and goes on
            echo(f"    failed: {exc}")
            ok = False
    return ok
