"""The edge agent's durable buffer: every point is written here before it is published.

SQLite in WAL mode on the Pi's disk. Points leave only after the broker acknowledged the
batch that carried them; until then they survive a crash, a kill -9 or a reboot. When the
file reaches ``max_mb`` the oldest points are dropped, counted and logged: after a long
outage the newest data is worth more than the oldest (documented in docs/edge-agent.md).

All SQLite work runs on one dedicated thread, so the event loop never blocks on the disk
and the connection is only ever used from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from factory.wire import Point, Quality

__all__ = ["Buffer", "BufferFileError", "Stored"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS point (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    tag     TEXT NOT NULL,
    ts      INTEGER NOT NULL,
    value   REAL,
    is_bool INTEGER NOT NULL DEFAULT 0,
    quality INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


CHECK_EVERY: Final = 2000  # points (~100 KB) between size checks


class BufferFileError(Exception):
    """The buffer file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Stored:
    """Points read back from the buffer, with their row ids (ascending)."""

    ids: tuple[int, ...]
    points: tuple[Point, ...]

    @property
    def last_id(self) -> int:
        return self.ids[-1]

    def head(self, count: int) -> Stored:
        return Stored(self.ids[:count], self.points[:count])


def _to_row(point: Point) -> tuple[str, int, float | None, int, int]:
    value = point.value
    return (point.tag, point.ts, None if value is None else float(value), isinstance(value, bool), int(point.quality))


def _to_point(row: tuple[int, str, int, float | None, int, int]) -> Point:
    _, tag, ts, value, is_bool, quality = row
    restored: float | bool | None = bool(value) if is_bool and value is not None else value
    return Point(tag, ts, restored, Quality(quality))


class Buffer:
    """Open with ``await Buffer.open(path, max_mb)``; close with ``await buffer.close()``."""

    def __init__(self, path: Path, max_mb: int, *, fsync: bool = False) -> None:
        self.path = path
        self.max_bytes = max_mb * 1024 * 1024
        self.fsync = fsync
        self.dropped = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-buffer")
        self._db: sqlite3.Connection | None = None
        self._unchecked = 0  # points appended since the size was last checked
        # Kept up to date on the buffer's thread, read anywhere (for /metrics).
        self._count = 0
        self._oldest_ts: int | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @classmethod
    async def open(cls, path: Path, max_mb: int, *, fsync: bool = False) -> Buffer:
        buffer = cls(path, max_mb, fsync=fsync)
        await buffer._run(buffer._open)
        return buffer

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (the WAL is in the OS cache);
            # FULL also survives power loss, at a cost in SD-card writes.
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BufferFileError(f"{self.path}: cannot open the buffer: {exc}") from exc
        self._db = db
        self._count = int(db.execute("SELECT count(*) FROM point").fetchone()[0])
        self._note_oldest()

    def _note_oldest(self) -> None:
        row = self._conn().execute("SELECT ts FROM point ORDER BY id LIMIT 1").fetchone()
        self._oldest_ts = int(row[0]) if row else None

    def depth_now(self) -> tuple[int, int | None]:
        """Points waiting and the oldest one's timestamp (ms), without touching the disk."""
        return self._count, self._oldest_ts

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise BufferFileError("the buffer is closed")
        return self._db

    async def append(self, points: Sequence[Point]) -> None:
        if points:
            await self._run(lambda: self._append(points))

    def _append(self, points: Sequence[Point]) -> None:
        db = self._conn()
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT INTO point (tag, ts, value, is_bool, quality) VALUES (?, ?, ?, ?, ?)",
                           [_to_row(p) for p in points])  # fmt: skip
        self._count += len(points)
        if self._oldest_ts is None:
            self._note_oldest()
        self._unchecked += len(points)
        if self._unchecked >= CHECK_EVERY:  # checking the size costs three PRAGMAs: not every time
            self._unchecked = 0
            self._enforce_limit()

    def _size(self) -> int:
        db = self._conn()
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(db.execute("PRAGMA page_size").fetchone()[0])

    def _enforce_limit(self) -> None:
        """Past ``max_mb``, drop the oldest tenth of what is buffered (and count it)."""
        while self._size() > self.max_bytes and self._count > 0:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        db = self._conn()
        drop = max(1, self._count // 10)
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM point WHERE id IN (SELECT id FROM point ORDER BY id LIMIT ?)", (drop,))
        self.dropped += drop
        self._count -= drop
        self._note_oldest()
        log.warning(
            "buffer %s is over %d MB: dropped the %d oldest points (%d dropped so far)",
            self.path, self.max_bytes // 2**20, drop, self.dropped,
        )  # fmt: skip

    async def read(self, after_id: int, up_to_id: int | None, limit: int) -> Stored | None:
        """The oldest points with ``after_id < id <= up_to_id`` (no upper bound when None)."""

        def query() -> Stored | None:
            bound = up_to_id if up_to_id is not None else 2**63 - 1
            rows = (
                self._conn()
                .execute(
                    "SELECT id, tag, ts, value, is_bool, quality FROM point"
                    " WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                    (after_id, bound, limit),
                )
                .fetchall()
            )
            if not rows:
                return None
            return Stored(tuple(r[0] for r in rows), tuple(_to_point(r) for r in rows))

        return await self._run(query)

    async def remove(self, stored: Stored) -> None:
        """Forget points the broker acknowledged."""

        def delete() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                deleted = db.execute(
                    "DELETE FROM point WHERE id BETWEEN ? AND ?", (stored.ids[0], stored.ids[-1])
                ).rowcount
            self._count -= deleted
            self._note_oldest()

        await self._run(delete)

    async def last_id(self) -> int:
        return await self._run(
            lambda: int(self._conn().execute("SELECT coalesce(max(id), 0) FROM point").fetchone()[0])
        )

    async def depth(self) -> tuple[int, int | None]:
        """How many points wait, and the timestamp (ms) of the oldest."""
        row = await self._run(lambda: self._conn().execute("SELECT count(*), min(ts) FROM point").fetchone())
        return int(row[0]), row[1]

    async def next_seq(self) -> int:
        """The next batch number; persisted, so numbering continues across restarts."""

        def bump() -> int:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('seq', 1) ON CONFLICT (key) DO UPDATE SET value = value + 1"
                )
                return int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

        return await self._run(bump)
