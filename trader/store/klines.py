"""KlineStore: closed klines per (symbol, interval) as columnar float64 chunks in diskcache.

Layout (format 2; all keys in one diskcache ``Cache``, i.e. one SQLite database in WAL mode):

- ``a/<symbol>/<interval>`` -> the series meta as JSON: chunk ids with their row counts,
  first/last open time, gaps the exchange really has (maintenance), and where the exchange's
  history starts. ``a/`` sorts before every other key, so listing the series reads only these
  keys, and an append touches only its own series: O(1) in the number of series stored.
- ``c/<symbol>/<interval>/<chunk_id>`` -> a kline block (:mod:`trader.models`: C-contiguous
  ``(11, n)`` float64, oldest first, no duplicate open times) as raw bytes, followed by the CRC32
  of those bytes (4 bytes, little-endian). ``chunk_id = open_time_ms // (interval_ms * 1024)``:
  chunks are fixed time spans of 1024 klines, so an append rewrites only the newest chunk
  (≤ 88 KB) and never history. Values stay below ``disk_min_file_size`` (1 MiB), so they live
  inside SQLite: ~15-60 µs per read here; a write costs SQLite ~0.5 ms per 88 KB. The database
  is opened without a memory map and with a 4 MB page cache, so a scan's RSS stays flat in the
  number of series it reads.
- ``t/<symbol>/<interval>`` -> the newest :data:`TAIL_ROWS` klines in the chunk format, rewritten
  in the same transaction as every append: a scan's ``load(limit <= 512)`` is one read.
- ``clock`` -> the exchange clock of the last warm (JSON); ``format`` -> ``2``.

Integrity: every chunk and tail read is checked against its CRC32 and its meta row count; a
mismatch raises :class:`StoreCorruptError` naming the series. Consistency: every
:meth:`KlineStore.append` writes its chunks, tail and meta in one SQLite transaction
(``Cache.transact``), so a process killed at any instant (SIGKILL included) leaves the store as it
was before or after that append, never between. Readers never block (WAL). ``trader warm`` also
holds :meth:`KlineStore.writer_lock` (an ``flock``, released by the kernel if the process dies) so
two warms never duplicate work. Eviction is disabled: the store never drops klines to save space.

A format-1 store (pickled meta under ``m/``, a pickled index of every series, no checksums) is
migrated in place, in one transaction, the first time it is opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pickle
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trader.errors import StoreCorruptError, StoreError, StoreLockedError
from trader.models import N_FIELDS, OPEN_TIME, check_klines, empty_klines, interval_ms

__all__ = ["CHUNK_ROWS", "FORMAT", "TAIL_ROWS", "KlineStore", "SeriesStats", "missing_ranges"]

CHUNK_ROWS = 1024
TAIL_ROWS = 512
FORMAT = 2
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


def _pack(block: np.ndarray) -> bytes:
    """Kline block -> stored bytes: the array's bytes + their CRC32 (little-endian)."""
    payload = np.ascontiguousarray(block, dtype=np.float64).tobytes()
    return payload + zlib.crc32(payload).to_bytes(_CRC_BYTES, "little")


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
                f"store at {self.path} is corrupt ({exc}); move it aside and run 'trader warm' to rebuild"
            ) from None
        except OSError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreError(f"cannot open store at {self.path}: {exc.strerror or exc}") from None
        with self._guard():
            if self._cache.get("format") is None:
                if self._cache.get("index") is not None:
                    self._migrate_v1()
                else:
                    self._cache.set("format", str(FORMAT).encode())

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
            raise StoreCorruptError(f"store at {self.path} is unreadable ({exc}); move it aside and re-warm") from None
        except OSError as exc:
            if _read_only(self.path, exc):
                raise StoreError(_READ_ONLY.format(path=self.path)) from None
            raise StoreError(f"store at {self.path}: {exc.strerror or exc}") from None

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

    def _unpack(self, raw: Any, what: str, rows: int | None = None) -> np.ndarray:
        """Stored bytes -> read-only kline block view, after checking size, CRC32 and row count."""
        if not isinstance(raw, bytes) or len(raw) < _CRC_BYTES or (len(raw) - _CRC_BYTES) % _ROW_BYTES:
            raise StoreCorruptError(f"store at {self.path}: {what} has a bad size; run 'trader warm' to refetch it")
        payload = memoryview(raw)[:-_CRC_BYTES]
        if zlib.crc32(payload) != int.from_bytes(raw[-_CRC_BYTES:], "little"):
            raise StoreCorruptError(f"store at {self.path}: {what} fails its checksum; run 'trader warm' to refetch it")
        block = np.frombuffer(payload, dtype=np.float64).reshape(N_FIELDS, -1)
        if rows is not None and block.shape[1] != rows:
            raise StoreCorruptError(f"store at {self.path}: {what} holds {block.shape[1]} klines, its meta says {rows}")
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
        raw = self._cache.get(self._chunk_key(symbol, interval, chunk_id))
        what = f"chunk {chunk_id} of {symbol} {interval}"
        if raw is None:
            raise StoreCorruptError(f"store at {self.path}: {what} is missing; run 'trader warm' to refetch it")
        return self._unpack(raw, what, rows)

    def _tail(self, symbol: str, interval: str) -> np.ndarray | None:
        raw = self._cache.get(self._tail_key(symbol, interval))
        return None if raw is None else self._unpack(raw, f"the tail of {symbol} {interval}")

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
                self._cache.set(self._chunk_key(symbol, interval, cid), _pack(merged))
                counts[cid] = int(merged.shape[1])
            try:
                old_tail = self._tail(symbol, interval)
            except StoreCorruptError:  # derived data: rebuild it from the chunks just written
                ids = sorted(counts)[-2:]
                old_tail = np.concatenate([self._chunk(symbol, interval, c, counts[c]) for c in ids], axis=1)
            tail = cols if old_tail is None else _dedupe_last(np.concatenate([old_tail, cols], axis=1))
            self._cache.set(self._tail_key(symbol, interval), _pack(tail[:, -TAIL_ROWS:]))
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

    def check(self, symbol: str, interval: str) -> list[str]:
        """Every damaged entry of one series, one line each (empty: the series is sound)."""
        problems = []
        try:
            meta = self.meta(symbol, interval)
        except StoreCorruptError as exc:
            return [str(exc)]
        if meta is None:
            return []
        for cid, rows in sorted(meta["chunks"].items()):
            try:
                with self._guard():
                    self._chunk(symbol, interval, cid, rows)
            except StoreCorruptError as exc:
                problems.append(str(exc))
        try:
            with self._guard():
                tail = self._tail(symbol, interval)
            if tail is None and meta["chunks"]:
                problems.append(f"store at {self.path}: the tail of {symbol} {interval} is missing")
        except StoreCorruptError as exc:
            problems.append(str(exc))
        return problems

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

        A damaged chunk's bytes move to ``q/<symbol>/<interval>/<chunk>`` (kept for inspection, never
        read as data) and the chunk leaves the meta; first/last open times and the tail are rebuilt
        from the sound chunks, so the warm sees a hole (or shorter history) and refetches it. An
        unreadable meta drops the whole series, which the next warm fetches anew.

        Returns:
            What was done, one line each (empty: nothing was damaged).
        """
        done: list[str] = []
        try:
            meta = self.meta(symbol, interval)
        except StoreCorruptError:
            meta = None
            with self._guard(), self._cache.transact():
                for key in [k for k in self._cache.iterkeys() if isinstance(k, str) and k.split("/")[1:3] == [symbol, interval]]:
                    if key.startswith(("c/", "t/")):
                        self._cache.set("q/" + key, self._cache.get(key))
                    self._cache.delete(key)
            return [f"{symbol} {interval}: unreadable meta; the series was dropped and will be fetched again"]
        if meta is None:
            return done
        with self._guard(), self._cache.transact():
            sound: dict[int, np.ndarray] = {}
            for cid, rows in sorted(meta["chunks"].items()):
                try:
                    sound[cid] = np.array(self._chunk(symbol, interval, cid, rows))
                except StoreCorruptError as exc:
                    raw = self._cache.get(self._chunk_key(symbol, interval, cid))
                    if raw is not None:
                        self._cache.set(f"q/{symbol}/{interval}/{cid}", raw)
                    self._cache.delete(self._chunk_key(symbol, interval, cid))
                    done.append(f"{symbol} {interval}: quarantined chunk {cid} ({exc}); its klines will be refetched")
            try:
                tail_ok = self._tail(symbol, interval) is not None
            except StoreCorruptError:
                tail_ok = False
            if not done and tail_ok:
                return done
            if not sound:
                for key in (self._meta_key(symbol, interval), self._tail_key(symbol, interval)):
                    self._cache.delete(key)
                return [*done, f"{symbol} {interval}: nothing sound left; the series will be fetched again"]
            ids = sorted(sound)
            meta["chunks"] = {cid: int(sound[cid].shape[1]) for cid in ids}
            meta["first_open_ms"] = int(sound[ids[0]][OPEN_TIME, 0])
            meta["last_open_ms"] = int(sound[ids[-1]][OPEN_TIME, -1])
            recent = np.concatenate([sound[c] for c in ids[-2:]], axis=1)[:, -TAIL_ROWS:]
            self._cache.set(self._tail_key(symbol, interval), _pack(recent))
            self._set_meta(symbol, interval, meta)
            if not tail_ok:
                done.append(f"{symbol} {interval}: rebuilt the tail from the sound chunks")
        return done

    # ------------------------------------------------------------------ format 1 -> 2

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
                        if isinstance(raw, bytes) and len(raw) % _ROW_BYTES == 0:
                            c.set(self._chunk_key(symbol, interval, cid), _pack(np.frombuffer(raw).reshape(N_FIELDS, -1)))
                    tail = c.get(self._tail_key(symbol, interval))
                    if isinstance(tail, bytes) and len(tail) % _ROW_BYTES == 0:
                        c.set(self._tail_key(symbol, interval), _pack(np.frombuffer(tail).reshape(N_FIELDS, -1)))
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

