"""Writes the telemetry schema: devices, tags, samples (COPY), events and dead letters.

All SQL that writes ``telemetry.*`` lives here. Samples are packed into PostgreSQL's
binary COPY format as each message arrives and COPYed straight into the keyed table; a
flush that hits the key (a redelivered or replayed batch) goes through a staging table and
``INSERT ... ON CONFLICT DO NOTHING`` instead, so repeats are absorbed by the key.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

import psycopg

from factory.wire import Status, TagInfo, Value
from ingest.rollup import ensure_partitions
from provisioning.migrate import Flavor

__all__ = ["Packed", "Samples", "TelemetryStore", "ms_to_datetime"]

DAY_MS: Final = 86_400_000
EPOCH_DAY: Final = date(1970, 1, 1)

_INSERT_TAG = """INSERT INTO telemetry.tag (device_id, name, asset, unit, data_type, description, source)
                  VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, name) """
# A no-op update so RETURNING yields the id of an existing row too.
INSERT_TAG_IF_NEW: Final = _INSERT_TAG + "DO UPDATE SET device_id = EXCLUDED.device_id RETURNING id"
UPSERT_TAG: Final = _INSERT_TAG + (
    "DO UPDATE SET asset = EXCLUDED.asset, unit = EXCLUDED.unit, data_type = EXCLUDED.data_type,"
    " description = EXCLUDED.description, source = EXCLUDED.source RETURNING id"
)


@dataclass(slots=True)
class Samples:
    """Samples of one flush as parallel lists (no object per point on the hot path)."""

    tag_ids: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)  # epoch milliseconds
    values: list[Value] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def extend(self, tag_ids: list[int], ts: list[int], values: list[Value], quality: list[int]) -> None:
        self.tag_ids += tag_ids
        self.ts += ts
        self.values += values
        self.quality += quality

    def copy_rows(self) -> bytes:
        """The rows in PostgreSQL's binary COPY format (tag_id int4, time timestamptz,
        value float8, quality int2), without the stream's header and trailer: no text
        parsing on the server, and chunks of several messages join by concatenation."""
        full, null = _ROW.pack, _ROW_NULL.pack
        return b"".join([
            null(4, 4, tag, 8, (ms - PG_EPOCH_MS) * 1000, -1, 2, q)
            if v is None
            else full(4, 4, tag, 8, (ms - PG_EPOCH_MS) * 1000, 8, v, 2, q)
            for tag, ms, v, q in zip(self.tag_ids, self.ts, self.values, self.quality, strict=True)
        ])  # fmt: skip


@dataclass(slots=True)
class Packed:
    """Rows ready for COPY, gathered message by message, with the days and minutes they touch."""

    chunks: list[bytes] = field(default_factory=list)
    rows: int = 0
    minutes: set[int] = field(default_factory=set)  # since the epoch

    @classmethod
    def of(cls, samples: Samples) -> Packed:
        return cls([samples.copy_rows()], len(samples), {ms // 60_000 for ms in samples.ts})

    def add(self, other: Packed) -> None:
        self.chunks += other.chunks
        self.rows += other.rows
        self.minutes |= other.minutes

    def copy_binary(self) -> bytes:
        return b"".join([_COPY_HEADER, *self.chunks, b"\xff\xff"])


# Binary COPY: header, then per row a field count and (length, bytes) per field; -1 is NULL.
# timestamptz is microseconds since 2000-01-01 UTC.
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_ROW: Final = struct.Struct(">hiiiqidih")  # 4 fields: (4, tag_id) (8, time) (8, value) (2, quality)
_ROW_NULL: Final = struct.Struct(">hiiiqiih")  # the same with value NULL (length -1)
PG_EPOCH_MS: Final = 946_684_800_000


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class TelemetryStore:
    """One connection's view of the telemetry schema, with device and tag id caches.

    Methods run inside the caller's transaction; the caller commits.
    """

    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]], flavor: Flavor = "postgres") -> None:
        self.conn = conn
        self.flavor = flavor
        self._devices: dict[tuple[str, str], int] = {}
        self._tags: dict[tuple[int, str], int] = {}
        self._days: set[int] = set()  # UTC days (since the epoch) known to have a partition
        self._staging_ready = False

    def forget(self) -> None:
        """Drop caches after a rollback: ids created in it no longer exist."""
        self._devices.clear()
        self._tags.clear()
        self._days.clear()
        self._staging_ready = False

    async def device_id(self, site: str, name: str) -> int:
        key = (site, name)
        if (cached := self._devices.get(key)) is not None:
            return cached
        cur = await self.conn.execute(
            """INSERT INTO telemetry.device (site, name) VALUES (%s, %s)
               ON CONFLICT (site, name) DO UPDATE SET site = EXCLUDED.site
               RETURNING id""",
            key,
        )
        row = await cur.fetchone()
        assert row is not None
        self._devices[key] = int(row[0])  # type: ignore[call-overload]
        return self._devices[key]

    async def tag_ids(self, device_id: int, names: Iterable[str]) -> dict[str, int]:
        """Ids for tag names, registering unknown ones (asset = the part before the first dot)."""
        wanted = set(names)
        missing = [n for n in wanted if (device_id, n) not in self._tags]
        if missing:
            await self.register_tags(
                device_id, [TagInfo(n, "", "number", n.split(".", 1)[0]) for n in missing], only_new=True
            )
        return {n: self._tags[(device_id, n)] for n in wanted}

    async def register_tags(self, device_id: int, tags: Sequence[TagInfo], *, only_new: bool = False) -> None:
        """Upsert tag metadata; a catalog overrides what first sight guessed, not the reverse."""
        query = INSERT_TAG_IF_NEW if only_new else UPSERT_TAG
        async with self.conn.cursor() as cur:
            for tag in tags:
                asset = tag.asset or tag.name.split(".", 1)[0]
                await cur.execute(
                    query, (device_id, tag.name, asset, tag.unit, tag.type, tag.description, tag.source or None)
                )
                row = await cur.fetchone()
                assert row is not None
                self._tags[(device_id, tag.name)] = int(row[0])  # type: ignore[call-overload]

    def cached_tag_ids(self, site: str, device: str, names: list[str]) -> list[int] | None:
        """Ids for a batch's tags without the database, if every one is known already."""
        device_id = self._devices.get((site, device))
        if device_id is None:
            return None
        tags = self._tags
        try:
            return [tags[(device_id, n)] for n in names]
        except KeyError:
            return None

    async def write_samples(self, samples: Samples) -> int:
        return await self.write_packed(Packed.of(samples))

    async def write_packed(self, packed: Packed) -> int:
        """Store rows; return how many were new (the rest were repeats).

        Repeats are rare (a redelivered or replayed batch), so the first try is one binary
        COPY straight into the table, inside a savepoint. Only if that hits the key does the
        flush go the slower way: the same rows COPYed into a staging table, then
        ``INSERT ... ON CONFLICT DO NOTHING``.
        """
        if not packed.rows:
            return 0
        if self.flavor == "postgres":
            days = {m // 1440 for m in packed.minutes} - self._days
            await ensure_partitions(self.conn, {EPOCH_DAY + timedelta(days=d) for d in days})
            self._days |= days
        data = packed.copy_binary()
        try:
            async with (
                self.conn.transaction(),
                self.conn.cursor() as cur,
                cur.copy("COPY telemetry.sample (tag_id, time, value, quality) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                await copy.write(data)
            inserted = packed.rows
        except psycopg.errors.UniqueViolation:
            inserted = await self._write_with_repeats(data)
        if self.flavor == "postgres":
            await self.conn.execute(
                """INSERT INTO telemetry.rollup_pending (bucket)
                   SELECT TIMESTAMPTZ 'epoch' + m * INTERVAL '1 minute' FROM unnest(%s::bigint[]) AS m""",
                (sorted(packed.minutes),),
            )
        return inserted

    async def _write_with_repeats(self, data: bytes) -> int:
        if not self._staging_ready:
            await self.conn.execute(
                """CREATE TEMP TABLE IF NOT EXISTS sample_repeat
                   (tag_id int, time timestamptz, value float8, quality int2) ON COMMIT DELETE ROWS"""
            )
            self._staging_ready = True
        async with self.conn.cursor() as cur:
            async with cur.copy("COPY sample_repeat FROM STDIN (FORMAT BINARY)") as copy:
                await copy.write(data)
            await cur.execute(
                """INSERT INTO telemetry.sample (tag_id, time, value, quality)
                   SELECT tag_id, time, value, quality FROM sample_repeat
                   ON CONFLICT (tag_id, time) DO NOTHING"""
            )
            return max(cur.rowcount, 0)

    async def touch_devices(self, last_seen: dict[int, datetime]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(
                """UPDATE telemetry.device SET last_seen = GREATEST(last_seen, %s)
                   WHERE id = %s""",
                [(when, device_id) for device_id, when in last_seen.items()],
            )

    async def record_status(self, device_id: int, status: Status) -> None:
        when = ms_to_datetime(status.ts)
        await self.conn.execute(
            """UPDATE telemetry.device SET status = %s, agent = %s, status_at = %s
               WHERE id = %s AND (status_at IS NULL OR status_at <= %s)""",
            (status.state, status.agent or None, when, device_id, when),
        )
        await self.conn.execute(
            """INSERT INTO telemetry.event (time, device_id, kind, data) VALUES (%s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            (when, device_id, f"device_{status.state}", json.dumps({"agent": status.agent})),
        )

    async def dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        await self.conn.execute(
            "INSERT INTO telemetry.dead_letter (topic, payload, reason) VALUES (%s, %s, %s)",
            (topic, payload, reason),
        )
