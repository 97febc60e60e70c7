"""The edge agent's durable buffer: every point is written here before it is published.

SQLite in WAL mode on the Pi's disk. Points leave only after the broker acknowledged the
batch that carried them; until then they survive a crash, a kill -9 or a reboot. When the
file reaches ``max_mb`` the oldest points are dropped, counted and logged: after a long
outage the newest data is worth more than the oldest (documented in docs/edge-agent.md).
A full disk is handled the same way: the file only grows into the disk's free space less a
reserve (``_cap_growth``), so SQLite says "full" while there is still room to write the
deletion of the oldest tenth; the write is then retried, and only when even that finds no
room are the new points dropped. Either way they are counted, the log says so at most every ``FULL_LOG_S``, and the
agent goes on; ``full_at`` tells the health check when the disk was last full.

One row (a *chunk*) holds the points of one write, already in their wire form (JSON
objects joined by commas, see ``factory.wire.encode_points``) with the end offset of each:
a batch is a header around slices of chunks, and a point costs one encoding and a share of
one row instead of a row of its own. Every point has an ordinal (1, 2, 3, ... never
reused); a chunk's id is the ordinal of its last point, so ``sqlite_sequence`` counts the
points ever buffered. A chunk partly acknowledged keeps its unsent tail (``skip``).

All SQLite work runs on one dedicated thread, so the event loop never blocks on the disk
and the connection is only ever used from one thread.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import sqlite3
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Final, TypeVar

from edge_agent.reading import Reading
from factory.wire import Point, Quality, encode_points

__all__ = ["Buffer", "BufferFileError", "Range", "Stored"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chunk (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,  -- the ordinal of the chunk's last point
    n    INTEGER NOT NULL,                   -- points in the chunk
    skip INTEGER NOT NULL DEFAULT 0,         -- leading points already acknowledged
    body BLOB NOT NULL,                      -- the points' wire form, joined by commas
    ends BLOB NOT NULL                       -- uint32 (native order): where each point ends in body
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

CHECK_EVERY: Final = 2000  # points (~100 KB) between size checks
FULL_LOG_S: Final = 10.0  # at most one "disk full" warning this often


class BufferFileError(Exception):
    """The buffer file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class _Slice:
    """Points ``lo`` to ``hi - 1`` (0-based) of one chunk."""

    chunk: int
    first: int  # ordinal of the chunk's point 0
    n: int
    lo: int
    hi: int
    body: bytes
    ends: array[int]

    @property
    def start(self) -> int:
        return self.ends[self.lo - 1] + 1 if self.lo else 0

    def bytes_to(self, hi: int) -> int:
        """Length of the encoded points ``lo`` to ``hi - 1``."""
        return self.ends[hi - 1] - self.start

    def data(self) -> bytes:
        return self.body[self.start : self.ends[self.hi - 1]]

    def cut(self, hi: int) -> _Slice:
        return _Slice(self.chunk, self.first, self.n, self.lo, hi, self.body, self.ends)


Range = tuple[int, int, int, int]  # chunk id, its points, and the span lo..hi-1 of them


@dataclass(frozen=True, slots=True)
class Stored:
    """Points read back from the buffer, in order, still in their wire form."""

    slices: tuple[_Slice, ...]

    @property
    def count(self) -> int:
        return sum(s.hi - s.lo for s in self.slices)

    @property
    def ranges(self) -> tuple[Range, ...]:
        """Which points these are, for ``Buffer.remove`` and ``Buffer.reread``."""
        return tuple((s.chunk, s.n, s.lo, s.hi) for s in self.slices)

    @property
    def last_id(self) -> int:
        """The ordinal of the last point."""
        last = self.slices[-1]
        return last.first + last.hi - 1

    def data(self) -> bytes:
        """The points as a batch's ``points`` array holds them, without the brackets."""
        return b",".join(s.data() for s in self.slices)

    def within(self, max_bytes: int) -> Stored:
        """The longest head (at least one point) whose ``data()`` fits in ``max_bytes``."""
        room, kept = max_bytes, []
        for piece in self.slices:
            size = piece.bytes_to(piece.hi)
            if size <= room:
                kept.append(piece)
                room -= size + 1  # and the comma before the next
                continue
            # the first hi past lo whose bytes_to(hi) exceeds room
            hi = bisect.bisect_right(piece.ends, room + piece.start, piece.lo, piece.hi)
            if hi > piece.lo or not kept:
                kept.append(piece.cut(max(hi, piece.lo + 1)))
            break
        return Stored(tuple(kept))

    @property
    def points(self) -> tuple[Point, ...]:
        """Decoded (for inspection and tests; publishing never decodes)."""
        raw = json.loads(b"[" + self.data() + b"]")
        return tuple(Point(p["t"], p["ts"], p["v"], Quality(p["q"])) for p in raw)


def _ends(blob: bytes) -> array[int]:
    ends = array("I")
    ends.frombytes(blob)
    return ends


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
        self._last_ordinal = 0
        self._seq = 0  # the last batch number handed out
        # Kept up to date on the buffer's thread, read anywhere (for /metrics).
        self._count = 0
        self._oldest_ts: int | None = None
        self._ahead: dict[int, list[tuple[int, int]]] = {}  # chunk -> acknowledged spans past its skip
        self.full_at: float | None = None  # monotonic time the disk was last found full
        self.reserve_bytes = 0  # free space kept on the disk (set on open)
        self.full_events = 0
        self._full_logged = (0.0, 0)  # when the last warning went out, and the dropped count then

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
            # A quarter of the disk (512 KiB to 64 MiB) is kept free for the write-ahead log,
            # which is checkpointed and cut back at a quarter of that (_cap_growth).
            disk = os.statvfs(self.path.parent)
            self.reserve_bytes = min(max(disk.f_blocks * disk.f_frsize // 4, 512 * 1024), 64 * 2**20)
            page = int(db.execute("PRAGMA page_size").fetchone()[0])
            db.execute(f"PRAGMA wal_autocheckpoint={min(1000, self.reserve_bytes // 4 // page)}")
            db.execute(f"PRAGMA journal_size_limit={self.reserve_bytes // 4}")
            db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BufferFileError(f"{self.path}: cannot open the buffer: {exc}") from exc
        self._db = db
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunk'").fetchone()
        self._last_ordinal = int(row[0]) if row else 0
        row = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        self._seq = int(row[0]) if row else 0
        self._migrate_point_rows()
        self._count = int(db.execute("SELECT coalesce(sum(n - skip), 0) FROM chunk").fetchone()[0])
        self._note_oldest()
        self._cap_growth()

    def _migrate_point_rows(self) -> None:
        """Buffers written by versions that stored one row per point: move their points over."""
        db = self._conn()
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'point'").fetchone():
            return
        with db:
            db.execute("BEGIN")
            rows = db.execute("SELECT tag, ts, value, is_bool, quality FROM point ORDER BY id")
            moved = 0
            while page := rows.fetchmany(5000):
                values = [bool(v) if is_bool and v is not None else v for _, _, v, is_bool, _ in page]
                self._insert(Reading([r[0] for r in page], [r[1] for r in page], values, [r[4] for r in page]))
                moved += len(page)
            db.execute("DROP TABLE point")
        log.info("buffer %s: moved %d points to the chunk layout", self.path, moved)

    def _note_oldest(self) -> None:
        row = self._conn().execute("SELECT skip, body, ends FROM chunk ORDER BY id LIMIT 1").fetchone()
        if row is None:
            self._oldest_ts = None
            return
        skip, body, blob = row
        first = _Slice(0, 0, skip + 1, skip, skip + 1, body, _ends(blob))
        self._oldest_ts = int(json.loads(first.data())["ts"])

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

    async def append(self, readings: Sequence[Reading]) -> int:
        """Store the readings' points as one chunk, in one transaction; returns how many."""
        if not readings:
            return 0
        return await self._run(lambda: self._append(readings))

    def _append(self, readings: Sequence[Reading]) -> int:
        reading = readings[0] if len(readings) == 1 else Reading(
            list(chain.from_iterable(r.tags for r in readings)), list(chain.from_iterable(r.ts for r in readings)),
            list(chain.from_iterable(r.values for r in readings)),
            list(chain.from_iterable(r.quality for r in readings)),
        )  # fmt: skip
        try:
            count = self._insert_whole(reading)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            count = self._make_room(reading)
        if self._oldest_ts is None:
            self._note_oldest()
        self._unchecked += count
        if self._unchecked >= CHECK_EVERY:  # checking the size costs a few PRAGMAs and a statvfs
            self._unchecked = 0
            try:
                self._enforce_limit()
            except sqlite3.OperationalError as exc:  # dropping needs a little room too: next time
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                self.full_at = time.monotonic()
        return count

    def _insert_whole(self, reading: Reading) -> int:
        db, before = self._conn(), (self._last_ordinal, self._count)
        try:
            with db:
                db.execute("BEGIN")
                return self._insert(reading)
        except BaseException:
            self._last_ordinal, self._count = before  # rolled back
            raise

    def _make_room(self, reading: Reading) -> int:
        """The disk is full: drop the oldest tenth and try again; if there is still no room,
        drop ``reading`` itself. Every point dropped is counted; nothing here raises SQLITE_FULL."""
        self.full_at = time.monotonic()
        self.full_events += 1
        lost = 0
        try:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's space back to the disk
            if self._count > 0:
                self._drop_oldest(quiet=True)
            return self._insert_whole(reading)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            lost = len(reading.tags)
            self.dropped += lost
            return 0
        finally:
            self._note_full(lost)

    def _note_full(self, lost: int) -> None:
        at, dropped_then = self._full_logged
        if time.monotonic() - at >= FULL_LOG_S:
            log.warning("buffer %s: the disk is full; %d points dropped since the last warning (%d in all)%s",
                        self.path, self.dropped - dropped_then, self.dropped,
                        f", {lost} of them new" if lost else "")  # fmt: skip
            self._full_logged = (time.monotonic(), self.dropped)

    def _insert(self, reading: Reading) -> int:
        """One chunk, inside the caller's transaction."""
        body, ends = encode_points(reading.tags, reading.ts, reading.values, reading.quality)
        if not ends:
            return 0
        last = self._last_ordinal + len(ends)
        self._conn().execute(
            "INSERT INTO chunk (id, n, body, ends) VALUES (?, ?, ?, ?)", (last, len(ends), body, array("I", ends))
        )
        self._last_ordinal = last
        self._count += len(ends)
        return len(ends)

    def _size(self) -> int:
        db = self._conn()
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(db.execute("PRAGMA page_size").fetchone()[0])

    def _enforce_limit(self) -> None:
        """Past ``max_mb``, drop the oldest tenth of what is buffered (and count it)."""
        while self._size() > self.max_bytes and self._count > 0:
            self._drop_oldest()
        self._cap_growth()

    def _cap_growth(self) -> None:
        """Let the file grow only into the disk's free space less the reserve: SQLite then
        reports a full database while the disk still has room for the write-ahead log, and
        dropping the oldest points (into the file's free pages) can always go through. A
        disk filled to the last byte leaves nothing to write even a deletion with."""
        db = self._conn()
        page, pages = (int(db.execute(f"PRAGMA {name}").fetchone()[0]) for name in ("page_size", "page_count"))
        disk = os.statvfs(self.path.parent)
        room = max(0, disk.f_bavail * disk.f_frsize - self.reserve_bytes)
        db.execute(f"PRAGMA max_page_count={pages + room // page}")

    def _drop_oldest(self, *, quiet: bool = False) -> None:
        """Whole chunks, oldest first, until at least a tenth of the points are gone."""
        db = self._conn()
        goal, drop, upto = max(1, self._count // 10), 0, 0
        oldest = db.execute("SELECT id, n - skip FROM chunk ORDER BY id")
        for chunk, waiting in oldest:
            drop, upto = drop + waiting, chunk
            if drop >= goal:
                break
        oldest.close()
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM chunk WHERE id <= ?", (upto,))
        self.dropped += drop
        self._count -= drop
        self._note_oldest()
        if not quiet:  # a full disk has its own, rate-limited warning
            log.warning(
                "buffer %s is over %d MB: dropped the %d oldest points (%d dropped so far)",
                self.path, self.max_bytes // 2**20, drop, self.dropped,
            )  # fmt: skip

    async def read(self, after_id: int, up_to_id: int | None, limit: int) -> Stored | None:
        """The oldest points with ``after_id < ordinal <= up_to_id`` (no upper bound when None)."""

        def query() -> Stored | None:
            bound = up_to_id if up_to_id is not None else 2**63 - 1
            slices, wanted = [], limit
            sql = "SELECT id, n, skip, body, ends FROM chunk WHERE id > ? ORDER BY id"
            rows = self._conn().execute(sql, (after_id,))
            for chunk, n, skip, body, blob in rows:
                first = chunk - n + 1
                if first > bound or wanted <= 0:
                    break
                lo = max(skip, after_id - first + 1)
                hi = min(n, bound - first + 1, lo + wanted)
                if lo < hi:
                    slices.append(_Slice(chunk, first, n, lo, hi, body, _ends(blob)))
                    wanted -= hi - lo
            rows.close()  # an unfinished statement would hold its WAL snapshot (no checkpoints)
            return Stored(tuple(slices)) if slices else None

        return await self._run(query)

    async def reread(self, ranges: Sequence[Range]) -> Stored | None:
        """What is still buffered of points read before (to send them again)."""

        def query() -> Stored | None:
            slices = []
            for chunk, n, lo, hi in ranges:
                row = self._conn().execute("SELECT skip, body, ends FROM chunk WHERE id = ?", (chunk,)).fetchone()
                if row is not None and max(lo, row[0]) < hi:
                    slices.append(_Slice(chunk, chunk - n + 1, n, max(lo, row[0]), hi, row[1], _ends(row[2])))
            return Stored(tuple(slices)) if slices else None

        return await self._run(query)

    async def remove(self, ranges: Sequence[Range]) -> None:
        """Forget points that are safe elsewhere, in any order: a chunk goes (or its ``skip``
        moves on) once everything before the range is gone too; ranges acknowledged ahead of
        that wait here, in memory (after a restart, such points are only sent again)."""

        def delete() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                for chunk, n, lo, hi in ranges:
                    row = db.execute("SELECT skip FROM chunk WHERE id = ?", (chunk,)).fetchone()
                    if row is None:
                        self._ahead.pop(chunk, None)
                        continue
                    skip = done = int(row[0])
                    ahead = []
                    for start, end in sorted([*self._ahead.pop(chunk, []), (lo, hi)]):
                        if start <= done:
                            done = max(done, end)
                        else:
                            ahead.append((start, end))
                    if done >= n:
                        db.execute("DELETE FROM chunk WHERE id = ?", (chunk,))
                    elif done > skip:
                        db.execute("UPDATE chunk SET skip = ? WHERE id = ?", (done, chunk))
                    if ahead and done < n:
                        self._ahead[chunk] = ahead
                    self._count -= min(done, n) - skip
            self._note_oldest()

        def delete_or_keep() -> None:
            try:
                self._when_full_retry(delete)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                self._ahead.clear()  # kept, and sent again later: ingest absorbs the repeat

        await self._run(delete_or_keep)

    async def last_id(self) -> int:
        """The ordinal of the newest buffered point (0 when empty)."""
        return await self._run(
            lambda: int(self._conn().execute("SELECT coalesce(max(id), 0) FROM chunk").fetchone()[0])
        )

    async def depth(self) -> tuple[int, int | None]:
        """How many points wait, and the timestamp (ms) of the oldest."""

        def count() -> tuple[int, int | None]:
            self._count = int(self._conn().execute("SELECT coalesce(sum(n - skip), 0) FROM chunk").fetchone()[0])
            self._note_oldest()
            return self._count, self._oldest_ts

        return await self._run(count)

    async def next_seq(self) -> int:
        """The next batch number; persisted, so numbering continues across restarts."""

        def bump() -> int:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                db.execute(  # past any number handed out while the disk was full
                    "INSERT INTO meta (key, value) VALUES ('seq', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = max(value + 1, excluded.value)",
                    (self._seq + 1,),
                )
                return int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

        def bump_or_count() -> int:
            try:
                self._seq = self._when_full_retry(bump)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                self._seq += 1  # numbered on in memory until the disk has room again
            return self._seq

        return await self._run(bump_or_count)

    def _when_full_retry(self, work: Callable[[], T]) -> T:
        """``work()``; on a full disk, once more after the WAL's space went back to the disk."""
        try:
            return work()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            self.full_at = time.monotonic()
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return work()
