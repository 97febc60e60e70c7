"""Writes the telemetry schema: devices, tags, samples (COPY), events, write-backs and dead letters.

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
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from factory.commands import WriteReply
from factory.db import Flavor
from factory.wire import Status, TagInfo, Value
from ingest.rollup import ensure_partitions
from ingest.timescale import LATE_AFTER

__all__ = ["KnownIds", "Packed", "Samples", "TelemetryStore", "ms_to_datetime"]

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
    """Samples as parallel lists (no object per point on the hot path)."""

    tag_ids: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)  # epoch milliseconds
    values: list[Value] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)

    def extend(self, tag_ids: list[int], ts: list[int], values: list[Value], quality: list[int]) -> None:
        self.tag_ids += tag_ids
        self.ts += ts
        self.values += values
        self.quality += quality


# Binary COPY: header, then per row a field count and (length, bytes) per field; -1 is NULL.
# timestamptz is microseconds since 2000-01-01 UTC.
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER: Final = b"\xff\xff"
_ROW_NULL: Final = struct.Struct(">hiiiqiih")  # 4 fields: (4, tag_id) (8, time) (-1: NULL value) (2, quality)
# A row with a value, as a record: what numpy writes for a whole block of rows at once.
_ROW: Final = np.dtype([
    ("fields", ">i2"), ("tag_len", ">i4"), ("tag", ">i4"), ("time_len", ">i4"), ("time", ">i8"),
    ("value_len", ">i4"), ("value", ">f8"), ("quality_len", ">i4"), ("quality", ">i2"),
])  # fmt: skip
_ROW_BYTES: Final = np.dtype((np.void, _ROW.itemsize))  # the same rows as opaque records: cheap to move
_ROW_TEMPLATE: Final = np.array([(4, 4, 0, 8, 0, 8, 0.0, 2, 0)], dtype=_ROW)
PG_EPOCH_MS: Final = 946_684_800_000
LATE_AFTER_MS: Final = int(LATE_AFTER.total_seconds() * 1000)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


_PG_EPOCH_MINUTE: Final = PG_EPOCH_MS // 60_000  # 2000-01-01 in minutes since 1970 (a whole number)


@dataclass(slots=True)
class Packed:
    """Rows ready for binary COPY, gathered block by block.

    A block is a numpy record array in COPY's row layout, built from a slice of messages
    at once; the rare NULL value takes a row of its own (shorter) form.
    """

    blocks: list[npt.NDArray[np.void]] = field(default_factory=list)
    null_rows: list[bytes] = field(default_factory=list)
    null_keys: list[int] = field(default_factory=list)  # (tag, minute) of each NULL row, as in ``touched``
    rows: int = 0

    @classmethod
    def of(cls, samples: Samples) -> Packed:
        packed = cls()
        packed.add(samples.tag_ids, samples.ts, samples.values, samples.quality)
        return packed

    def add(self, tag_ids: list[int], ts: list[int], values: list[Value], quality: list[int]) -> None:
        if not ts:
            return
        self.rows += len(ts)
        ms = np.array(ts, dtype=np.int64)
        if None in values:
            self._add_nulls(tag_ids, ts, values, quality)
            keep = np.array([v is not None for v in values])
            tag_ids, values, quality = _where(keep, tag_ids), _where(keep, values), _where(keep, quality)
            ms = ms[keep]
            if not len(ms):
                return
        block = np.repeat(_ROW_TEMPLATE, len(ms))
        block["tag"] = tag_ids
        block["time"] = (ms - PG_EPOCH_MS) * 1000
        block["value"] = values
        block["quality"] = quality
        self.blocks.append(block)

    def _add_nulls(self, tag_ids: list[int], ts: list[int], values: list[Value], quality: list[int]) -> None:
        null = _ROW_NULL.pack
        for tag, ms, value, q in zip(tag_ids, ts, values, quality, strict=True):
            if value is None:
                self.null_rows.append(null(4, 4, tag, 8, (ms - PG_EPOCH_MS) * 1000, -1, 2, q))
                self.null_keys.append(tag << 32 | ms // 60_000)

    def copy_binary(self) -> bytes:
        """The COPY stream, rows ordered by tag (arrival order within a tag).

        Neighbouring keys then go into the index one after another instead of jumping
        between every tag's page: PostgreSQL inserts sorted flushes about a quarter faster
        (``docs/ingest.md``).
        """
        body = b""
        if self.blocks:
            rows = np.concatenate([b.view(_ROW_BYTES) for b in self.blocks])
            order = np.argsort(rows.view(_ROW)["tag"].astype(np.int32), kind="stable")
            body = rows[order].tobytes()
        return b"".join([_COPY_HEADER, body, *self.null_rows, _COPY_TRAILER])

    def oldest_ms(self) -> int | None:
        """The epoch milliseconds of the oldest row (None when empty)."""
        oldest = [int(b["time"].min()) // 1000 + PG_EPOCH_MS for b in self.blocks if len(b)]
        oldest += [(key & 0xFFFF_FFFF) * 60_000 for key in self.null_keys]  # to the minute: early enough
        return min(oldest, default=None)

    def hours_before(self, cutoff_ms: int) -> list[int]:
        """The distinct hours (since the epoch) of the rows older than ``cutoff_ms``."""
        oldest = self.oldest_ms()
        if oldest is None or oldest >= cutoff_ms:
            return []
        _, minutes = self.touched()
        return sorted({m // 60 for m in minutes if m * 60_000 < cutoff_ms})

    def touched(self) -> tuple[list[int], list[int]]:
        """The distinct (tag id, minute since the epoch) pairs of the rows, as two lists."""
        keys = [(b["tag"].astype(np.int64) << 32) | (b["time"] // 60_000_000 + _PG_EPOCH_MINUTE) for b in self.blocks]
        unique = np.unique(np.concatenate([*keys, np.array(self.null_keys, dtype=np.int64)]))
        return (unique >> 32).tolist(), (unique & 0xFFFF_FFFF).tolist()


def _where(keep: npt.NDArray[np.bool_], items: list[Any]) -> list[Any]:
    return [item for item, kept in zip(items, keep.tolist(), strict=True) if kept]


@dataclass(frozen=True, slots=True)
class KnownIds:
    device: int
    tags: list[int]  # one per point


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
        self._tags: dict[int, dict[str, int]] = {}  # device id -> tag name -> tag id
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
        known = self._tags.setdefault(device_id, {})
        missing = [n for n in wanted if n not in known]
        if missing:
            await self.register_tags(
                device_id, [TagInfo(n, "", "number", n.split(".", 1)[0]) for n in missing], only_new=True
            )
        return {n: known[n] for n in wanted}

    async def register_tags(self, device_id: int, tags: Sequence[TagInfo], *, only_new: bool = False) -> None:
        """Upsert tag metadata; a catalog overrides what first sight guessed, not the reverse.

        One pipelined round trip for all of them, in name order, so two workers registering
        the same new tags lock their rows in the same order.
        """
        query = INSERT_TAG_IF_NEW if only_new else UPSERT_TAG
        ordered = sorted({tag.name: tag for tag in tags}.values(), key=lambda tag: tag.name)
        params = [
            (device_id, t.name, t.asset or t.name.split(".", 1)[0], t.unit, t.type, t.description, t.source or None)
            for t in ordered
        ]
        if not params:
            return
        known = self._tags.setdefault(device_id, {})
        async with self.conn.cursor() as cur:
            await cur.executemany(query, params, returning=True)
            for tag in ordered:
                row = await cur.fetchone()
                assert row is not None
                known[tag.name] = int(row[0])  # type: ignore[call-overload]
                cur.nextset()

    def cached_ids(self, site: str, device: str, names: list[str]) -> KnownIds | None:
        """A batch's device and tag ids without the database, if every one is known already."""
        device_id = self._devices.get((site, device))
        if device_id is None:
            return None
        try:
            return KnownIds(device_id, list(map(self._tags[device_id].__getitem__, names)))
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
        # Plain PostgreSQL: the days need partitions, the (minute, tag) pairs a rollup refresh.
        tags, minutes = packed.touched() if self.flavor == "postgres" else ([], [])
        if self.flavor == "postgres":
            days = {m // 1440 for m in set(minutes)} - self._days
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
        if self.flavor == "timescaledb" and (hours := packed.hours_before(_now_ms() - LATE_AFTER_MS)):
            await self.conn.execute(  # hours the upkeep's refresh window no longer covers (ingest 0009)
                """INSERT INTO telemetry.aggregate_pending (bucket)
                   SELECT TIMESTAMPTZ 'epoch' + h * INTERVAL '1 hour' FROM unnest(%s::bigint[]) AS h""",
                (hours,),
            )
        if self.flavor == "postgres":
            await self.conn.execute(
                """INSERT INTO telemetry.rollup_pending (bucket, tag_ids)
                   SELECT TIMESTAMPTZ 'epoch' + m * INTERVAL '1 minute', array_agg(t)
                   FROM unnest(%s::bigint[], %s::integer[]) AS u (m, t) GROUP BY m""",
                (minutes, tags),
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

    async def track_seqs(self, seqs: dict[int, list[int]]) -> None:
        """Record the batch numbers devices delivered (device id -> numbers); see ingest 0008."""
        devices = [device for device, numbers in seqs.items() for _ in numbers]
        numbers = [n for ns in seqs.values() for n in ns]
        await self.conn.execute("SELECT telemetry.track_seqs(%s::integer[], %s::bigint[])", (devices, numbers))

    async def touch_devices(self, last_seen: dict[int, datetime]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(
                """UPDATE telemetry.device SET last_seen = GREATEST(last_seen, %s)
                   WHERE id = %s""",
                [(when, device_id) for device_id, when in sorted(last_seen.items())],  # one lock order for all workers
            )

    async def retire_device(self, site: str, device: str) -> None:
        """The device's retained status was cleared (``factory provision revoke``): it is retired,
        from now on, whatever it said before. A device never seen is not made for it."""
        cur = await self.conn.execute(
            """UPDATE telemetry.device SET status = 'retired', status_at = now()
               WHERE site = %s AND name = %s RETURNING id, status_at""",
            (site, device),
        )
        if (row := await cur.fetchone()) is not None:
            await self.conn.execute(
                """INSERT INTO telemetry.event (time, device_id, kind, data) VALUES (%s, %s, 'device_retired', '{}')
                   ON CONFLICT DO NOTHING""",
                (row[1], row[0]),
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

    async def record_write_back(self, device_id: int, reply: WriteReply) -> bool:
        """Keep one write-back reply; False when it was kept already (a redelivery)."""
        cur = await self.conn.execute(
            """INSERT INTO telemetry.write_back
                   (time, device_id, request_id, tag, value, requested_by, ok, error, reason)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (
                ms_to_datetime(reply.ts), device_id, reply.id, reply.tag,
                None if reply.value is None else Jsonb(reply.value), reply.by, reply.ok, reply.error, reply.reason,
            ),
        )  # fmt: skip
        return cur.rowcount == 1

    async def dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        await self.conn.execute(
            "INSERT INTO telemetry.dead_letter (topic, payload, reason) VALUES (%s, %s, %s)",
            (topic, payload, reason),
        )
