"""KlineStore: closed klines per (symbol, interval) as columnar float64 chunks in diskcache.

Layout (format 3; all keys in one diskcache ``Cache``, i.e. one SQLite database ``cache.db`` in WAL mode):

- ``a/<symbol>/<interval>`` -> the series meta as JSON: chunk ids with their row counts,
  first/last open time, gaps the exchange really has (maintenance), and where the exchange's
  history starts. ``a/`` sorts before every other key, so listing the series reads only these
  keys, and an append touches only its own series: O(1) in the number of series stored.
- ``c/<symbol>/<interval>/<chunk_id>`` -> a kline block (:mod:`trader.models`: C-contiguous
  ``(11, n)`` float64, oldest first, no duplicate open times) as raw bytes, followed by a CRC32
  seeded with the key (:func:`_seal`; 4 bytes, little-endian). ``chunk_id = open_time_ms //
  (interval_ms * 1024)``: chunks are fixed time spans of 1024 klines, so an append rewrites only
  the newest chunk (≤ 88 KB) and never history. Values stay below ``disk_min_file_size``
  (1 MiB), so they live inside SQLite: ~15-60 µs per read here; a write costs SQLite ~0.5 ms per
  88 KB. The database is opened without a memory map and with a 4 MB page cache, so a scan's RSS
  stays flat in the number of series it reads.
- ``t/<symbol>/<interval>`` -> the newest :data:`TAIL_ROWS` klines in the chunk format, rewritten
  in the same transaction as every append: a scan's ``load(limit <= 512)`` is one read.
- ``clock`` -> the exchange clock of the last warm (JSON); ``format`` -> ``3``.
- ``<store>/store.json`` (a file beside the database) -> written at the first append: this
  directory holds klines. A database that is later missing, emptied or holds no series is then
  reported as a lost store (:attr:`KlineStore.lost`), never silently taken for a new, empty one.

Integrity: every read checks the value's size, its key-bound checksum (so bytes copied or
swapped under another series or position fail, though their own bytes are intact), the meta's
row count and, for a chunk, that its open times lie in its span; a mismatch raises
:class:`StoreCorruptError` naming the series. :meth:`KlineStore.check` adds continuity between
chunks and the tail against the chunks; :meth:`KlineStore.repair` quarantines what fails
(``q/`` keys) for the next warm to refetch; :func:`salvage` rebuilds a database whose SQLite pages
are damaged from every row that still reads. Consistency: every :meth:`KlineStore.append` writes
its chunks, tail and meta in one SQLite transaction (``Cache.transact``), so a process killed at
any instant (SIGKILL included) leaves the store as it was before or after that append, never
between. Readers never block (WAL). ``trader warm`` also holds :meth:`KlineStore.writer_lock`
(an ``flock``, released by the kernel if the process dies) so two warms never duplicate work.
Eviction is disabled: the store never drops klines to save space.

Older formats migrate in place, in one transaction, the first time they are opened: format 1
(pickled meta under ``m/``, a pickled index, no checksums) and format 2 (CRC32 of the bytes alone:
re-sealed where that CRC and the span hold; tails rebuilt from the chunks).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import pickle
import shutil
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trader.errors import StoreCorruptError, StoreError, StoreLockedError
from trader.models import CLOSE, N_FIELDS, OPEN, OPEN_TIME, check_klines, empty_klines, interval_ms

__all__ = ["CHUNK_ROWS", "FORMAT", "TAIL_ROWS", "KlineStore", "SalvageReport", "SeriesStats", "missing_ranges", "page_damage", "salvage", "writer_lock"]

CHUNK_ROWS = 1024
TAIL_ROWS = 512
FORMAT = 3
DB_FILE = "cache.db"  # diskcache's database file name (diskcache.core.DBNAME)
MARKER_FILE = "store.json"  # written at the first append: this directory holds klines
_ROW_BYTES = N_FIELDS * 8
_CRC_BYTES = 4
_LOCK_POLL_S = 0.05  # polling another process's flock: waiting for a lock, not pacing requests


def missing_ranges(open_times: np.ndarray, step_ms: int) -> list[tuple[int, int]]:
    """Missing open-time ranges inside a sorted series. Pure.

    Args:
        open_times: ``(n,)`` sorted open times, epoch ms.
        step_ms: interval length, ms.

    Returns:
        ``[(first_missing_open_ms, last_missing_open_ms), ...]`` for every hole, inclusive.
    """
    if open_times.shape[0] < 2:
        return []
    ot = open_times.astype(np.int64)
    diffs = np.diff(ot)
    holes = np.nonzero(diffs > step_ms)[0]
    return [(int(ot[i]) + step_ms, int(ot[i + 1]) - step_ms) for i in holes]


def _seal(key: str, payload: bytes | memoryview) -> int:
    """CRC32 of ``key`` then ``payload`` (zlib's running CRC): binds the bytes to the key they are stored under.

    The key names the series and the position (``c/BTCUSDT/1h/478``: chunk 478; ``t/BTCUSDT/1h``: the
    tail), so a block copied or swapped under another key fails its check even though its own
    bytes are intact.
    """
    return zlib.crc32(payload, zlib.crc32(key.encode()))


def _pack(key: str, block: np.ndarray) -> bytes:
    """Kline block -> stored bytes for ``key``: the array's bytes + :func:`_seal` (4 bytes, little-endian)."""
    payload = np.ascontiguousarray(block, dtype=np.float64).tobytes()
    return payload + _seal(key, payload).to_bytes(_CRC_BYTES, "little")


@dataclass(frozen=True)
class SeriesStats:
    """Size and freshness of one stored series.

    Attributes:
        symbol, interval: the series.
        rows: klines stored.
        bytes: payload bytes of its chunks.
        first_open_ms, last_open_ms: oldest and newest open time, epoch ms.
        newest_close_ms: close time of the newest kline, epoch ms.
        gaps: holes inside the stored range that the exchange is known not to have.
    """

    symbol: str
    interval: str
    rows: int
    bytes: int
    first_open_ms: int
    last_open_ms: int
    newest_close_ms: int
    gaps: int


_CONTINUITY = 1.5  # adjacent chunks: next open / previous close within [1/1.5, 1.5] (the recording's worst: 1.0076)


@dataclass
class _Inspection:
    """One series read in full by :meth:`KlineStore._inspect`."""

    meta: dict[str, Any] | None = None
    meta_problem: str | None = None
    sound: dict[int, np.ndarray] = field(default_factory=dict)  # chunk id -> block that passed its checks
    bad: dict[int, str] = field(default_factory=dict)  # chunk id -> why it failed (checksum, size, span, missing)
    foreign: dict[int, str] = field(default_factory=dict)  # sound chunks that do not continue their neighbours
    breaks: list[str] = field(default_factory=list)
    tail_problem: str | None = None


def _span_text(chunk_id: int, span_ms: int) -> str:
    """``"open times 2024-05-01 00:00 .. 2024-06-12 15:00 UTC"`` of a chunk id."""
    import datetime as dt

    def fmt(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")

    return f"open times {fmt(chunk_id * span_ms)} .. {fmt((chunk_id + 1) * span_ms - 1)} UTC"


def _new_meta() -> dict[str, Any]:
    return {"chunks": {}, "first_open_ms": None, "last_open_ms": None, "exchange_gaps": [], "history_start_ms": None}


class KlineStore:
    """Persistent, incremental store of closed klines.

    Args:
        path: store directory (created if missing).

    Raises:
        StoreCorruptError: the directory holds a database that SQLite cannot read.
        StoreError: the directory cannot be created or opened.
    """

    def __init__(self, path: str | Path) -> None:
        import diskcache

        self.path = Path(path).expanduser()
        #: why the store's data is gone (``None``: it is not): the directory's ``store.json`` says it
        #: held klines, but the database is missing, emptied or holds no series
        self.lost: str | None = None
        marker = _read_marker(self.path)
        self._marked = marker is not None
        db = self.path / DB_FILE
        if marker is not None and (not db.exists() or db.stat().st_size == 0):
            self.lost = f"{db} is {'missing' if not db.exists() else 'empty (0 bytes)'}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.path),
                disk_min_file_size=2**20,
                eviction_policy="none",
                size_limit=2**62,
                cull_limit=0,
                statistics=False,
                tag_index=False,
                # no memory map and a 4 MB page cache: a scan of 960 symbols reads 1 920 tails once;
                # diskcache's defaults (64 MB mmap + 32 MB cache) added ~130 MB of RSS for nothing
                sqlite_mmap_size=0,
                sqlite_cache_size=1024,
            )
        except sqlite3.DatabaseError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreCorruptError(
                f"store at {self.path} is corrupt ({exc}); run 'trader store check --repair' to salvage what reads"
            ) from None
        except OSError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreError(f"cannot open store at {self.path}: {exc.strerror or exc}") from None
        with self._guard():
            fmt = self._cache.get("format")
            if fmt is None:
                if self._cache.get("index") is not None:
                    self._migrate_v1()
                else:
                    self._cache.set("format", str(FORMAT).encode())
            elif fmt == b"2":
                self._migrate_v2()
            elif fmt != str(FORMAT).encode():
                self._cache.close()
                raise StoreError(f"store at {self.path} has format {fmt!r}, written by a newer trader; this one reads format {FORMAT}")
            if marker is not None and self.lost is None and not self.series():
                self.lost = f"{db} holds no series"
        if self.lost is not None:
            held = marker.get("series") if marker else None
            self.lost = (
                f"store lost: {self.lost}, but {self.path / MARKER_FILE} says it held klines"
                + (f" ({held} series)" if held else "")
                + "; restore it from a backup, or run 'trader warm' to fetch everything again"
            )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the underlying database."""
        self._cache.close()

    def __enter__(self) -> KlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreCorruptError(f"store at {self.path} is unreadable ({exc}); run 'trader store check --repair' to salvage what reads") from None
        except OSError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreError(f"store at {self.path}: {exc.strerror or exc}") from None

    def _mark(self) -> None:
        """Write ``store.json`` (once): from now on an emptied database is reported as a lost store."""
        try:
            _write_marker(self.path, {"held_data": True, "format": FORMAT, "created_ms": int(time.time() * 1000)})
        except OSError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreError(f"cannot write {self.path / MARKER_FILE}: {exc.strerror or exc}") from None
        self._marked = True

    def note_series(self) -> None:
        """Record how many series the store holds in ``store.json`` (named in a "store lost" report)."""
        doc = _read_marker(self.path)
        if doc is None:
            return
        doc["series"] = len(self.series())
        with contextlib.suppress(OSError):
            _write_marker(self.path, doc)

    # ------------------------------------------------------------------ the writer lock

    def _open_lock(self) -> tuple[int, Path]:
        lock_path = self.path / "writer.lock"
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644), lock_path
        except OSError as exc:
            raise StoreError(f"cannot open {lock_path}: {exc.strerror}") from None

    def _try_lock(self, fd: int, lock_path: Path) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise StoreError(f"cannot lock {lock_path}: {exc.strerror}") from None
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return True

    def _locked_error(self, fd: int, timeout_s: float) -> StoreLockedError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        return StoreLockedError(
            f"store {self.path} is being written by another process (pid {holder}); gave up after {timeout_s:.0f} s"
        )

    @staticmethod
    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @contextlib.contextmanager
    def writer_lock(self, timeout_s: float = 60.0) -> Iterator[None]:
        """Hold the store's single-writer lock (``<store>/writer.lock``, flock) — for sync callers.

        A second writer waits up to ``timeout_s`` for the first to finish, then raises. The kernel
        releases the lock when the holder exits or is killed, so a crashed warm never blocks the
        next. Async code uses :meth:`writer_lock_async`, which never blocks the event loop.

        Raises:
            StoreLockedError: still locked after ``timeout_s`` (the message names the holder's pid).
        """
        fd, lock_path = self._open_lock()
        try:
            deadline = time.monotonic() + timeout_s
            while not self._try_lock(fd, lock_path):
                if time.monotonic() >= deadline:
                    raise self._locked_error(fd, timeout_s)
                time.sleep(_LOCK_POLL_S)
            yield
        finally:
            self._unlock(fd)

    @contextlib.asynccontextmanager
    async def writer_lock_async(self, timeout_s: float = 60.0) -> AsyncIterator[None]:
        """:meth:`writer_lock` for async code: waits with ``asyncio.sleep``, so the event loop runs on.

        Raises:
            StoreLockedError: still locked after ``timeout_s``.
        """
        import asyncio  # not at module level: `trader scan` never needs asyncio

        fd, lock_path = self._open_lock()
        try:
            deadline = time.monotonic() + timeout_s
            while not self._try_lock(fd, lock_path):
                if time.monotonic() >= deadline:
                    raise self._locked_error(fd, timeout_s)
                await asyncio.sleep(_LOCK_POLL_S)
            yield
        finally:
            self._unlock(fd)

    # ------------------------------------------------------------------ keys and values

    @staticmethod
    def _meta_key(symbol: str, interval: str) -> str:
        return f"a/{symbol}/{interval}"

    @staticmethod
    def _chunk_key(symbol: str, interval: str, chunk_id: int) -> str:
        return f"c/{symbol}/{interval}/{chunk_id}"

    @staticmethod
    def _tail_key(symbol: str, interval: str) -> str:
        return f"t/{symbol}/{interval}"

    def _unpack(self, raw: Any, key: str, what: str, rows: int | None = None, span: tuple[int, int] | None = None) -> np.ndarray:
        """Stored bytes -> read-only kline block view, after checking size, the key-bound CRC32
        (:func:`_seal`), the row count and, for a chunk, that every open time lies in its span
        ``[lo, hi)`` epoch ms."""
        if not isinstance(raw, bytes) or len(raw) < _CRC_BYTES or (len(raw) - _CRC_BYTES) % _ROW_BYTES:
            raise StoreCorruptError(f"store at {self.path}: {what} has a bad size; run 'trader warm' to refetch it")
        payload = memoryview(raw)[:-_CRC_BYTES]
        if _seal(key, payload) != int.from_bytes(raw[-_CRC_BYTES:], "little"):
            raise StoreCorruptError(
                f"store at {self.path}: {what} fails its checksum (damaged, or stored under the wrong series "
                "or position); run 'trader warm' to refetch it"
            )
        block = np.frombuffer(payload, dtype=np.float64).reshape(N_FIELDS, -1)
        if rows is not None and block.shape[1] != rows:
            raise StoreCorruptError(f"store at {self.path}: {what} holds {block.shape[1]} klines, its meta says {rows}")
        if span is not None and block.shape[1] and not (span[0] <= block[OPEN_TIME, 0] and block[OPEN_TIME, -1] < span[1]):
            raise StoreCorruptError(f"store at {self.path}: {what} holds klines outside its time span")
        return block

    def _meta(self, symbol: str, interval: str) -> dict[str, Any] | None:
        raw = self._cache.get(self._meta_key(symbol, interval))
        if raw is None:
            return None
        try:
            meta: dict[str, Any] = orjson.loads(raw)
            meta["chunks"] = {int(k): int(v) for k, v in meta["chunks"].items()}
            meta["exchange_gaps"] = [(int(a), int(b)) for a, b in meta.get("exchange_gaps", [])]
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
            raise StoreCorruptError(f"store at {self.path}: the meta of {symbol} {interval} is unreadable") from None
        return meta

    def _set_meta(self, symbol: str, interval: str, meta: dict[str, Any]) -> None:
        doc = dict(meta)
        doc["chunks"] = {str(k): v for k, v in sorted(meta["chunks"].items())}
        self._cache.set(self._meta_key(symbol, interval), orjson.dumps(doc))

    def _chunk(self, symbol: str, interval: str, chunk_id: int, rows: int) -> np.ndarray:
        key = self._chunk_key(symbol, interval, chunk_id)
        raw = self._cache.get(key)
        what = f"chunk {chunk_id} of {symbol} {interval}"
        if raw is None:
            raise StoreCorruptError(f"store at {self.path}: {what} is missing; run 'trader warm' to refetch it")
        span = interval_ms(interval) * CHUNK_ROWS
        return self._unpack(raw, key, what, rows, (chunk_id * span, (chunk_id + 1) * span))

    def _tail(self, symbol: str, interval: str) -> np.ndarray | None:
        key = self._tail_key(symbol, interval)
        raw = self._cache.get(key)
        return None if raw is None else self._unpack(raw, key, f"the tail of {symbol} {interval}")

    # ------------------------------------------------------------------ reads

    def series(self) -> list[tuple[str, str]]:
        """Every stored ``(symbol, interval)``, sorted (reads only the ``a/`` meta keys)."""
        out = []
        with self._guard():
            for key in self._cache.iterkeys():
                if not isinstance(key, str) or not key.startswith("a/"):
                    break
                _, symbol, interval = key.split("/", 2)
                out.append((symbol, interval))
        return out

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        """Open time of the newest stored kline, epoch ms, or None if the series is empty."""
        with self._guard():
            meta = self._meta(symbol, interval)
        return None if meta is None else int(meta["last_open_ms"])

    def meta(self, symbol: str, interval: str) -> dict[str, Any] | None:
        """A copy of the series meta: ``chunks`` {chunk id: rows}, ``first_open_ms``,
        ``last_open_ms``, ``exchange_gaps`` [(first, last), ...], ``history_start_ms``."""
        with self._guard():
            return self._meta(symbol, interval)

    def load(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> np.ndarray:
        """Stored klines of one series, oldest first.

        Args:
            symbol, interval: the series.
            start_ms: first open time (inclusive), epoch ms.
            end_ms: last open time (inclusive), epoch ms.
            limit: at most this many klines: the first ones from ``start_ms`` if given, else the newest.

        Returns:
            A kline block ``(11, n)`` (:mod:`trader.models` rows). Treat it as read-only: it may be a
            view of the cached bytes.

        Raises:
            StoreCorruptError: a chunk is missing, malformed or fails its checksum.
        """
        with self._guard():
            if limit is not None and limit <= TAIL_ROWS and start_ms is None and end_ms is None:
                tail = self._tail(symbol, interval)  # the hot path of every scan: one read
                if tail is not None:
                    return tail[:, max(tail.shape[1] - limit, 0) :]
            meta = self._meta(symbol, interval)
            if meta is None:
                return empty_klines()
            span = interval_ms(interval) * CHUNK_ROWS
            counts: dict[int, int] = meta["chunks"]
            ids = sorted(counts)
            if start_ms is not None:
                ids = [c for c in ids if (c + 1) * span > start_ms]
            if end_ms is not None:
                ids = [c for c in ids if c * span <= end_ms]
            if limit is not None and start_ms is None:
                picked: list[int] = []
                total = 0
                for c in reversed(ids):
                    picked.append(c)
                    total += counts[c]
                    if total >= limit + (0 if end_ms is None else counts[c]):
                        break
                ids = picked[::-1]
            parts = [self._chunk(symbol, interval, c, counts[c]) for c in ids]
        if not parts:
            return empty_klines()
        data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if start_ms is not None or end_ms is not None:
            ot = data[OPEN_TIME]
            lo = 0 if start_ms is None else int(np.searchsorted(ot, start_ms, side="left"))
            hi = data.shape[1] if end_ms is None else int(np.searchsorted(ot, end_ms, side="right"))
            data = data[:, lo:hi]
        if limit is not None:
            data = data[:, :limit] if start_ms is not None else data[:, max(data.shape[1] - limit, 0) :]
        return data

    def gaps(self, symbol: str, interval: str) -> list[tuple[int, int]]:
        """Holes inside the stored range not known to be the exchange's own gaps.

        Returns:
            ``[(first_missing_open_ms, last_missing_open_ms), ...]``, inclusive.
        """
        meta = self.meta(symbol, interval)
        if meta is None:
            return []
        holes = missing_ranges(self.load(symbol, interval)[OPEN_TIME], interval_ms(interval))
        known = {tuple(g) for g in meta.get("exchange_gaps", [])}
        return [h for h in holes if h not in known]

    def stats(self) -> list[SeriesStats]:
        """Size and freshness of every stored series."""
        out = []
        for symbol, interval in self.series():
            meta = self.meta(symbol, interval)
            if meta is None or meta["last_open_ms"] is None:
                continue
            rows = int(sum(meta["chunks"].values()))
            last = int(meta["last_open_ms"])
            out.append(
                SeriesStats(
                    symbol=symbol,
                    interval=interval,
                    rows=rows,
                    bytes=rows * _ROW_BYTES,
                    first_open_ms=int(meta["first_open_ms"]),
                    last_open_ms=last,
                    newest_close_ms=last + interval_ms(interval) - 1,
                    gaps=len(meta.get("exchange_gaps", [])),
                )
            )
        return out

    def clock(self) -> dict[str, int] | None:
        """The exchange clock recorded by the last warm: ``{"server_ms", "local_ms", "offset_ms"}``."""
        with self._guard():
            raw = self._cache.get("clock")
        if raw is None:
            return None
        try:
            value: dict[str, int] = orjson.loads(raw)
            return {k: int(value[k]) for k in ("server_ms", "local_ms", "offset_ms")}
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            raise StoreCorruptError(f"store at {self.path}: the recorded exchange clock is unreadable") from None

    # ------------------------------------------------------------------ writes

    def set_clock(self, server_ms: int, local_ms: int) -> None:
        """Record the exchange's time as seen at ``local_ms`` (both epoch ms); scan judges freshness by it."""
        doc = {"server_ms": int(server_ms), "local_ms": int(local_ms), "offset_ms": int(server_ms - local_ms)}
        with self._guard():
            self._cache.set("clock", orjson.dumps(doc))

    def append(self, symbol: str, interval: str, block: np.ndarray) -> int:
        """Add closed klines; an open time already stored is replaced (last wins).

        Args:
            symbol, interval: the series.
            block: a kline block ``(11, n)`` (as :func:`trader.exchange.rest.parse_klines` returns),
                any order, duplicates allowed.

        Returns:
            Number of open times that were not stored before.

        Raises:
            InvalidKlinesError: not a kline block of ``interval`` (shape, close_time, boundaries, NaN).
            StoreError: the write failed (nothing was changed).
        """
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2 or block.shape[0] != N_FIELDS or block.shape[1] == 0:
            check_klines(block, interval, f"{symbol} {interval}")  # raises for a wrong shape
            return 0
        cols = _dedupe_last(np.ascontiguousarray(block))
        check_klines(cols, interval, f"{symbol} {interval}")
        step = interval_ms(interval)
        span = step * CHUNK_ROWS
        chunk_ids = (cols[OPEN_TIME] // span).astype(np.int64)
        added = 0
        if not self._marked:
            self._mark()
        with self._guard(), self._cache.transact():
            meta = self._meta(symbol, interval) or _new_meta()
            counts: dict[int, int] = meta["chunks"]
            for cid in np.unique(chunk_ids):
                cid = int(cid)
                new = cols[:, chunk_ids == cid]
                if cid in counts:
                    old = self._chunk(symbol, interval, cid, counts[cid])
                    merged = _dedupe_last(np.concatenate([old, new], axis=1))
                    added += merged.shape[1] - old.shape[1]
                else:
                    merged = new
                    added += new.shape[1]
                key = self._chunk_key(symbol, interval, cid)
                self._cache.set(key, _pack(key, merged))
                counts[cid] = int(merged.shape[1])
            try:
                old_tail = self._tail(symbol, interval)
            except StoreCorruptError:  # derived data: rebuild it from the chunks just written
                ids = sorted(counts)[-2:]
                old_tail = np.concatenate([self._chunk(symbol, interval, c, counts[c]) for c in ids], axis=1)
            tail = cols if old_tail is None else _dedupe_last(np.concatenate([old_tail, cols], axis=1))
            tkey = self._tail_key(symbol, interval)
            self._cache.set(tkey, _pack(tkey, tail[:, -TAIL_ROWS:]))
            first, last = int(cols[OPEN_TIME, 0]), int(cols[OPEN_TIME, -1])
            meta["first_open_ms"] = first if meta["first_open_ms"] is None else min(first, meta["first_open_ms"])
            meta["last_open_ms"] = last if meta["last_open_ms"] is None else max(last, meta["last_open_ms"])
            self._set_meta(symbol, interval, meta)
        return added

    def record_exchange_gaps(self, symbol: str, interval: str, gaps: list[tuple[int, int]]) -> None:
        """Remember holes the exchange itself has, so they are reported but not refetched forever."""
        if not gaps:
            return
        with self._guard(), self._cache.transact():
            meta = self._meta(symbol, interval)
            if meta is None:
                return
            known = {tuple(g) for g in meta.get("exchange_gaps", [])}
            meta["exchange_gaps"] = [list(g) for g in sorted(known | {(int(a), int(b)) for a, b in gaps})]
            self._set_meta(symbol, interval, meta)

    def record_history_start(self, symbol: str, interval: str, first_open_ms: int) -> None:
        """Remember that the exchange has nothing older than ``first_open_ms`` (e.g. listing date)."""
        with self._guard(), self._cache.transact():
            meta = self._meta(symbol, interval)
            if meta is None:
                return
            meta["history_start_ms"] = int(first_open_ms)
            self._set_meta(symbol, interval, meta)

    # ------------------------------------------------------------------ integrity

    def _inspect(self, symbol: str, interval: str) -> _Inspection:
        """Read every value of one series and sort it into sound and damaged (see :meth:`check`)."""
        out = _Inspection()
        try:
            out.meta = self.meta(symbol, interval)
        except StoreCorruptError as exc:
            out.meta_problem = str(exc)
            return out
        if out.meta is None:
            return out
        for cid, rows in sorted(out.meta["chunks"].items()):
            try:
                with self._guard():
                    out.sound[cid] = np.array(self._chunk(symbol, interval, cid, rows))
            except StoreCorruptError as exc:
                out.bad[cid] = str(exc)
        ids = sorted(out.sound)
        breaks: set[int] = set()  # c: chunk c does not continue chunk c - 1
        for a, b in itertools.pairwise(ids):
            if b == a + 1 and out.sound[a].shape[1] and out.sound[b].shape[1]:
                close, nxt = float(out.sound[a][CLOSE, -1]), float(out.sound[b][OPEN, 0])
                if not (close > 0 and 1 / _CONTINUITY <= nxt / close <= _CONTINUITY):
                    breaks.add(b)
                    out.breaks.append(
                        f"store at {self.path}: chunk {b} of {symbol} {interval} does not continue chunk {a} "
                        f"(close {close:g} -> open {nxt:g}): klines of another series stored here?"
                    )
        for c in ids:  # the chunk on the wrong side of a break: both its edges break, or its only one
            before, after = c in breaks, (c + 1) in breaks
            first, last = (c - 1) not in out.sound, (c + 1) not in out.sound
            if (before and (after or last)) or (after and first):
                out.foreign[c] = f"chunk {c} of {symbol} {interval} does not continue its neighbours"
        for b in sorted(breaks):  # a lone break between two long runs: the shorter run goes
            if b in out.foreign or (b - 1) in out.foreign:
                continue
            left = [c for c in ids if c < b]
            right = [c for c in ids if c >= b]
            for c in right if len(right) <= len(left) else left:
                out.foreign.setdefault(c, f"chunk {c} of {symbol} {interval} is on the shorter side of a break")
        try:
            with self._guard():
                tail = self._tail(symbol, interval)
        except StoreCorruptError as exc:
            out.tail_problem = str(exc)
            return out
        if tail is None:
            if out.meta["chunks"]:
                out.tail_problem = f"store at {self.path}: the tail of {symbol} {interval} is missing"
            return out
        good = [c for c in ids if c not in out.foreign]
        if good and not out.bad:
            recent = np.concatenate([out.sound[c] for c in good], axis=1)[:, -TAIL_ROWS:]
            if tail.shape != recent.shape or not np.array_equal(tail, recent):
                out.tail_problem = f"store at {self.path}: the tail of {symbol} {interval} differs from its chunks"
        return out

    def check(self, symbol: str, interval: str) -> list[str]:
        """Every damaged entry of one series, one line each (empty: the series is sound).

        Checks: the meta parses; every chunk is present, passes its key-bound checksum
        (:func:`_seal`), holds the meta's row count and only open times of its span; adjacent chunks
        continue each other (next open within x1.5 of the previous close — real Binance klines move
        < 1 % there, a swapped series by orders of magnitude); the tail equals the newest chunk rows.
        """
        ins = self._inspect(symbol, interval)
        if ins.meta_problem:
            return [ins.meta_problem]
        return [*ins.bad.values(), *ins.breaks, *([ins.tail_problem] if ins.tail_problem else [])]

    def damaged(self) -> list[tuple[str, str, list[str]]]:
        """``(symbol, interval, problems)`` for every damaged series (reads every stored value)."""
        out = []
        for symbol, interval in self.series():
            problems = self.check(symbol, interval)
            if problems:
                out.append((symbol, interval, problems))
        return out

    def repair(self, symbol: str, interval: str) -> list[str]:
        """Quarantine the damaged entries of one series so the next warm refetches what they held.

        A damaged chunk (or one that does not continue its neighbours) moves to
        ``q/<symbol>/<interval>/<chunk>`` (kept for inspection, never read as data) and leaves the
        meta; first/last open times and the tail are rebuilt from the sound chunks, so the warm
        sees a hole (or shorter history) and refetches it. An unreadable meta drops the whole
        series, which the next warm fetches anew.

        Returns:
            What was done, one line each (empty: nothing was damaged).
        """
        ins = self._inspect(symbol, interval)
        if ins.meta_problem:
            with self._guard(), self._cache.transact():
                prefix = [symbol, interval]
                for key in [k for k in self._cache.iterkeys() if isinstance(k, str) and k.split("/")[1:3] == prefix]:
                    if key.startswith(("c/", "t/")):
                        self._cache.set("q/" + key, self._cache.get(key))
                    self._cache.delete(key)
            return [f"{symbol} {interval}: unreadable meta; the series was dropped and will be fetched again"]
        meta = ins.meta
        if meta is None or not (ins.bad or ins.foreign or ins.tail_problem):
            return []
        done: list[str] = []
        span = interval_ms(interval) * CHUNK_ROWS
        with self._guard(), self._cache.transact():
            for cid, why in sorted({**ins.bad, **ins.foreign}.items()):
                key = self._chunk_key(symbol, interval, cid)
                raw = self._cache.get(key)
                if raw is not None:
                    self._cache.set(f"q/{symbol}/{interval}/{cid}", raw)
                self._cache.delete(key)
                ins.sound.pop(cid, None)
                done.append(f"{symbol} {interval}: quarantined chunk {cid} ({why}); {_span_text(cid, span)} will be refetched")
            if not ins.sound:
                for key in (self._meta_key(symbol, interval), self._tail_key(symbol, interval)):
                    self._cache.delete(key)
                return [*done, f"{symbol} {interval}: nothing sound left; the series will be fetched again"]
            ids = sorted(ins.sound)
            meta["chunks"] = {cid: int(ins.sound[cid].shape[1]) for cid in ids}
            meta["first_open_ms"] = int(ins.sound[ids[0]][OPEN_TIME, 0])
            meta["last_open_ms"] = int(ins.sound[ids[-1]][OPEN_TIME, -1])
            recent = np.concatenate([ins.sound[c] for c in ids[-2:]], axis=1)[:, -TAIL_ROWS:]
            tkey = self._tail_key(symbol, interval)
            self._cache.set(tkey, _pack(tkey, recent))
            self._set_meta(symbol, interval, meta)
            if ins.tail_problem:
                done.append(f"{symbol} {interval}: rebuilt the tail from the sound chunks ({ins.tail_problem.split(': ', 1)[-1]})")
        return done

    # ------------------------------------------------------------------ older formats

    def _migrate_v1(self) -> None:
        """Rewrite a format-1 store (pickled meta ``m/``, pickled ``index``, no checksums) as format 2."""
        c = self._cache
        try:
            with c.transact():
                for symbol, interval in sorted(c.get("index") or set()):
                    old = c.get(f"m/{symbol}/{interval}")
                    if not isinstance(old, dict):
                        continue
                    rows = {int(k): int(v) for k, v in old["chunk_rows"].items()}
                    for cid in rows:
                        raw = c.get(self._chunk_key(symbol, interval, cid))
                        key = self._chunk_key(symbol, interval, cid)
                        if isinstance(raw, bytes) and len(raw) % _ROW_BYTES == 0:
                            c.set(key, _pack(key, np.frombuffer(raw).reshape(N_FIELDS, -1)))
                    tkey = self._tail_key(symbol, interval)
                    tail = c.get(tkey)
                    if isinstance(tail, bytes) and len(tail) % _ROW_BYTES == 0:
                        c.set(tkey, _pack(tkey, np.frombuffer(tail).reshape(N_FIELDS, -1)))
                    meta = {
                        "chunks": rows,
                        "first_open_ms": old.get("first_open_ms"),
                        "last_open_ms": old.get("last_open_ms"),
                        "exchange_gaps": [list(g) for g in old.get("exchange_gaps", [])],
                        "history_start_ms": old.get("history_start_ms"),
                    }
                    self._set_meta(symbol, interval, meta)
                    c.delete(f"m/{symbol}/{interval}")
                clock = c.get("clock")
                if isinstance(clock, dict):
                    c.set("clock", orjson.dumps({k: int(v) for k, v in clock.items()}))
                c.delete("index")
                c.set("format", str(FORMAT).encode())
        except (pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError, EOFError) as exc:
            raise StoreCorruptError(f"store at {self.path}: cannot migrate its format-1 data ({exc}); move it aside and re-warm") from None


    def _migrate_v2(self) -> None:
        """Re-seal a format-2 store (CRC32 of the bytes alone) with key-bound checksums (format 3).

        A chunk is re-sealed only if its format-2 CRC holds and its open times lie in its span;
        anything else keeps its old bytes, fails the new check and is quarantined by the next
        repair or warm. Tails are rebuilt from the chunks (derived data). One transaction.
        """
        c = self._cache
        with c.transact():
            for symbol, interval in self.series():
                meta = self._meta(symbol, interval)
                if meta is None:
                    continue
                span = interval_ms(interval) * CHUNK_ROWS
                sound: dict[int, np.ndarray] = {}
                for cid, rows in sorted(meta["chunks"].items()):
                    key = self._chunk_key(symbol, interval, cid)
                    raw = c.get(key)
                    if not isinstance(raw, bytes) or len(raw) < _CRC_BYTES or (len(raw) - _CRC_BYTES) % _ROW_BYTES:
                        continue
                    payload = raw[:-_CRC_BYTES]
                    if zlib.crc32(payload) != int.from_bytes(raw[-_CRC_BYTES:], "little"):
                        continue
                    block = np.frombuffer(payload, dtype=np.float64).reshape(N_FIELDS, -1)
                    if block.shape[1] != rows or not rows or not (cid * span <= block[OPEN_TIME, 0] and block[OPEN_TIME, -1] < (cid + 1) * span):
                        continue
                    c.set(key, _pack(key, block))
                    sound[cid] = block
                tkey = self._tail_key(symbol, interval)
                if sound:
                    recent = np.concatenate([sound[k] for k in sorted(sound)], axis=1)[:, -TAIL_ROWS:]
                    c.set(tkey, _pack(tkey, recent))
                else:
                    c.delete(tkey)
            c.set("format", str(FORMAT).encode())


@contextlib.contextmanager
def writer_lock(path: str | Path, timeout_s: float = 60.0) -> Iterator[None]:
    """:meth:`KlineStore.writer_lock` without opening the database (for :func:`salvage`, whose
    database may not open). Same lock file, same semantics.

    Raises:
        StoreLockedError: still locked after ``timeout_s``.
    """
    holder = KlineStore.__new__(KlineStore)  # the lock methods read only .path
    holder.path = Path(path).expanduser()
    with holder.writer_lock(timeout_s):
        yield


def salvage(path: str | Path) -> SalvageReport:
    """Rebuild a store whose database is damaged below the key level (SQLite pages) from what reads.

    Every row of diskcache's ``Cache`` table is read on its own (by rowid), so one bad page loses
    only the rows on it. Each series is rebuilt from its chunks that pass their checks (the meta is
    recomputed from them; gaps and history start are kept when the old meta reads), tails are
    rebuilt, and the new database replaces the old one with an atomic rename; the old file (and its
    WAL) stays beside it as ``cache.db.damaged-<epoch s>``. Hold the writer lock while calling.

    Returns:
        What was kept and what the next ``trader warm`` refetches.

    Raises:
        StoreError: there is no database file, or the new one cannot be written.
    """
    import diskcache

    root = Path(path).expanduser()
    db = root / DB_FILE
    if not db.exists():
        raise StoreError(f"no database at {db} to salvage")
    report = SalvageReport(store=str(root))
    rows: dict[str, bytes] = {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open {db} even read-only ({exc}); move it aside and run 'trader warm'") from None
    try:
        try:
            top = int(con.execute("SELECT max(rowid) FROM Cache").fetchone()[0] or 0)
        except sqlite3.DatabaseError:
            top = max(1, db.stat().st_size // 64)  # rowids are dense from 1; bounded by the rows a file this size holds
        for rowid in range(1, top + 1):
            try:
                row = con.execute("SELECT key, raw, mode, value FROM Cache WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                report.unreadable_rows += 1
                continue
            if row is None:
                continue
            key, _raw, mode, value = row
            if isinstance(key, str) and mode == 1 and isinstance(value, bytes) and key.startswith(("a/", "c/", "t/", "clock", "format")):
                rows[key] = value
    finally:
        con.close()
    fmt = rows.pop("format", str(FORMAT).encode())
    legacy = fmt == b"2"
    series: dict[tuple[str, str], dict[int, bytes]] = {}
    metas: dict[tuple[str, str], bytes] = {}
    for key, value in rows.items():
        parts = key.split("/")
        if parts[0] == "c" and len(parts) == 4 and parts[3].lstrip("-").isdigit():
            series.setdefault((parts[1], parts[2]), {})[int(parts[3])] = value
        elif parts[0] == "a" and len(parts) == 3:
            metas[(parts[1], parts[2])] = value
            series.setdefault((parts[1], parts[2]), {})
    work = root / f".salvage-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        new = diskcache.Cache(str(work), disk_min_file_size=2**20, eviction_policy="none", size_limit=2**62, cull_limit=0)
        with new.transact():
            new.set("format", str(FORMAT).encode())
            if "clock" in rows:
                new.set("clock", rows["clock"])
            for (symbol, interval), chunks in sorted(series.items()):
                try:
                    step = interval_ms(interval)
                except Exception:  # noqa: BLE001 - a key we never wrote: not a series
                    continue
                span = step * CHUNK_ROWS
                old: dict[str, Any] = {}
                with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                    doc = orjson.loads(metas.get((symbol, interval), b"null"))
                    old = doc if isinstance(doc, dict) else {}
                expected = {int(k) for k in (old.get("chunks") or {})}
                sound: dict[int, np.ndarray] = {}
                for cid, raw in sorted(chunks.items()):
                    key = f"c/{symbol}/{interval}/{cid}"
                    block = _verified(raw, key, (cid * span, (cid + 1) * span), legacy)
                    if block is None:
                        continue
                    sound[cid] = block
                    new.set(key, _pack(key, block))
                lost = sorted((expected | set(chunks)) - set(sound))
                for cid in lost:
                    report.refetch.append(f"{symbol} {interval}: chunk {cid} unreadable; {_span_text(cid, span)}")
                if not sound:
                    report.dropped.append(f"{symbol} {interval}")
                    continue
                ids = sorted(sound)
                meta = _new_meta()
                meta["chunks"] = {str(c): int(sound[c].shape[1]) for c in ids}
                meta["first_open_ms"] = int(sound[ids[0]][OPEN_TIME, 0])
                meta["last_open_ms"] = int(sound[ids[-1]][OPEN_TIME, -1])
                meta["exchange_gaps"] = old.get("exchange_gaps") or []
                meta["history_start_ms"] = old.get("history_start_ms")
                if old.get("last_open_ms") and int(old["last_open_ms"]) > meta["last_open_ms"]:
                    report.refetch.append(f"{symbol} {interval}: klines after the last readable chunk")
                new.set(f"a/{symbol}/{interval}", orjson.dumps(meta))
                tkey = f"t/{symbol}/{interval}"
                new.set(tkey, _pack(tkey, np.concatenate([sound[c] for c in ids], axis=1)[:, -TAIL_ROWS:]))
                report.kept.append((symbol, interval, sum(b.shape[1] for b in sound.values())))
        new.close()
        aside = root / f"{DB_FILE}.damaged-{int(time.time())}"
        os.link(db, aside)  # the old file stays, under a new name, before anything replaces it
        for suffix in ("-wal", "-shm"):
            side = root / (DB_FILE + suffix)
            if side.exists():
                os.replace(side, root / (aside.name + suffix))  # never let SQLite apply the old WAL to the new file
        os.replace(work / DB_FILE, db)
        report.kept_aside = str(aside)
    except OSError as exc:
        raise StoreError(f"cannot write the salvaged store under {root}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _verified(raw: bytes, key: str, span: tuple[int, int], legacy: bool) -> np.ndarray | None:
    """A stored chunk's block if it passes its checksum (format 2: bytes only) and span, else None."""
    if len(raw) <= _CRC_BYTES or (len(raw) - _CRC_BYTES) % _ROW_BYTES:
        return None
    payload = raw[:-_CRC_BYTES]
    crc = zlib.crc32(payload) if legacy else _seal(key, payload)
    if crc != int.from_bytes(raw[-_CRC_BYTES:], "little"):
        return None
    block = np.frombuffer(payload, dtype=np.float64).reshape(N_FIELDS, -1)
    if not block.shape[1] or not (span[0] <= block[OPEN_TIME, 0] and block[OPEN_TIME, -1] < span[1]):
        return None
    return block


@dataclass
class SalvageReport:
    """What :func:`salvage` recovered.

    Attributes:
        store: the store directory.
        kept: ``(symbol, interval, klines)`` of every series rebuilt.
        dropped: ``"SYMBOL interval"`` of series with nothing readable (the next warm fetches them anew).
        refetch: one line per lost range the next warm refetches.
        unreadable_rows: database rows that could not be read at all.
        kept_aside: path of the damaged database, kept for inspection.
    """

    store: str
    kept: list[tuple[str, str, int]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    refetch: list[str] = field(default_factory=list)
    unreadable_rows: int = 0
    kept_aside: str = ""


def page_damage(path: str | Path, limit: int = 5) -> list[str]:
    """SQLite's ``PRAGMA quick_check`` of the store's database: its complaints (empty: the pages are sound).

    Raises:
        StoreError: the database file cannot be opened at all.
    """
    db = Path(path).expanduser() / DB_FILE
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            found = [str(r[0]) for r in con.execute(f"PRAGMA quick_check({int(limit)})")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    if found == ["ok"]:
        return []
    lines = [ln.strip() for text in found for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("***")][:limit]


def _read_marker(path: Path) -> dict[str, Any] | None:
    """The store directory's ``store.json`` (None: absent or unreadable — then nothing is claimed)."""
    try:
        doc = orjson.loads((path / MARKER_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("held_data") else None


def _write_marker(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``store.json`` atomically (temp file + fsync + rename)."""
    tmp = path / f".{MARKER_FILE}.{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(doc))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path / MARKER_FILE)


_READ_ONLY = (
    "store at {path} is on read-only media or not writable by this user (nothing is wrong with its data); "
    "trader needs write access to it — use --store DIR for a writable copy"
)


def _read_only(path: Path, exc: BaseException) -> bool:
    """True when ``exc`` is about writing to read-only media or a directory we may not write."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text or "read only" in text:
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return True
    return path.exists() and not os.access(path, os.W_OK)


def _dedupe_last(cols: np.ndarray) -> np.ndarray:
    """Sort a kline block by open time keeping the last occurrence of each open time."""
    ot = cols[OPEN_TIME]
    if ot.shape[0] < 2 or bool(np.all(ot[1:] > ot[:-1])):
        return cols
    rev = ot[::-1]
    _, idx = np.unique(rev, return_index=True)
    keep = ot.shape[0] - 1 - idx  # positions of last occurrences, in open-time order (unique sorts)
    return cols[:, keep]

