"""What every kind of equipment source is to the agent, and the registry of kinds.

A source reads its tags until cancelled (connecting, scheduling and reconnecting itself) and
hands what it read to the agent through ``hand_over``, which waits while the buffer writer
is behind: the one back-pressure rule. It writes a tag when a write-back command asks, and
reads every tag once for ``factory edge check``.

Adding a source kind: its config model in ``edge_agent/config.py`` (a ``kind`` literal in
the ``Source`` union), one module that implements ``Source``, and its line in ``open_source``;
a sample config in ``edge_agent/samples/`` (a test loads every one).
"""

from __future__ import annotations

from typing import Protocol

from edge_agent.config import ModbusSource, SourceConfig, TagCommon
from edge_agent.modbus import ModbusReader
from edge_agent.reading import HandOver
from edge_agent.stats import Probe, SourceStats
from factory.commands import WriteValue

__all__ = ["HandOver", "Probe", "Source", "open_source"]


class Source(Protocol):
    """One source of one device config."""

    @property
    def source(self) -> SourceConfig:
        """Its config."""
        ...

    @property
    def stats(self) -> SourceStats: ...

    @property
    def ready(self) -> bool:
        """Connected: it reads, and a write can go through."""
        ...

    async def run(self, hand_over: HandOver) -> None:
        """Read and hand over until cancelled; reconnect after failures."""
        ...

    async def write(self, tag: TagCommon, value: WriteValue) -> None:
        """Write one tag of this source; ``WriteRefusedError`` says why not."""
        ...

    async def probe(self) -> Probe:
        """Connect on its own, read every tag once, disconnect."""
        ...


def open_source(config: SourceConfig) -> Source:
    """The source of ``config``'s kind (not connected yet)."""
    if isinstance(config, ModbusSource):
        return ModbusReader(config)
    # asyncua (and the cryptography it loads) is 30 MB of RSS: imported only for such a source
    from edge_agent.opcua import OpcuaReader  # noqa: PLC0415

    return OpcuaReader(config)
