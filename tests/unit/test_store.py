"""KlineStore on a real diskcache in a temp dir (kline blocks: (11, n), rows by trader.models names)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from trader.errors import InvalidKlinesError, StoreCorruptError
from trader.models import CLOSE, CLOSE_TIME, OPEN_TIME
from trader.replay.dataset import ReplayDataset
from trader.store.klines import CHUNK_ROWS, KlineStore, missing_ranges

HOUR = 3_600_000


@pytest.fixture
def block(dataset: ReplayDataset) -> np.ndarray:
    return dataset.series("BTCUSDT", "1h").values[:, :3000].copy()


def test_append_load_roundtrip_and_slices(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        assert store.append("BTCUSDT", "1h", block) == 3000
        assert np.array_equal(store.load("BTCUSDT", "1h"), block)
        assert np.array_equal(store.load("BTCUSDT", "1h", limit=1000), block[:, -1000:])
        assert np.array_equal(store.load("BTCUSDT", "1h", limit=300), block[:, -300:])  # the one-read tail
        t = block[OPEN_TIME]
        assert np.array_equal(store.load("BTCUSDT", "1h", start_ms=int(t[10]), limit=5), block[:, 10:15])
        assert np.array_equal(store.load("BTCUSDT", "1h", end_ms=int(t[2000]), limit=7), block[:, 1994:2001])
        assert np.array_equal(store.load("BTCUSDT", "1h", start_ms=int(t[5]), end_ms=int(t[8])), block[:, 5:9])
        assert store.load("BTCUSDT", "4h").shape == (11, 0)
        assert store.last_open_time("BTCUSDT", "1h") == int(t[-1])
        assert store.series() == [("BTCUSDT", "1h")]
        (st,) = store.stats()
        assert (st.rows, st.bytes, st.newest_close_ms) == (3000, 3000 * 88, int(block[CLOSE_TIME, -1]))


def test_dedupe_last_wins_and_out_of_order(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", block[:, 1000:2000])
        changed = block[:, 1500:2500].copy()
        changed[CLOSE] += 1.0  # a corrected close for overlapping open times
        assert store.append("BTCUSDT", "1h", changed[:, ::-1]) == 500  # reversed order is fine
        got = store.load("BTCUSDT", "1h")
        assert got.shape[1] == 1500 and np.all(np.diff(got[OPEN_TIME]) == HOUR)
        assert np.array_equal(got[:, 500:], changed)
        assert store.append("BTCUSDT", "1h", np.concatenate([block[:, :10], block[:, :10]], axis=1)) == 10


def test_append_touches_only_the_newest_chunk(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", block[:, :2999])
        meta = store.meta("BTCUSDT", "1h")
        assert meta is not None
        old_ids = sorted(meta["chunks"])[:-1]
        before = {c: store._cache.get(store._chunk_key("BTCUSDT", "1h", c)) for c in old_ids}
        store.append("BTCUSDT", "1h", block[:, 2999:3000])
        for c, raw in before.items():
            assert store._cache.get(store._chunk_key("BTCUSDT", "1h", c)) == raw
        assert all(n <= CHUNK_ROWS for n in store.meta("BTCUSDT", "1h")["chunks"].values())  # type: ignore[index]


def test_append_cost_does_not_grow_with_the_number_of_series(tmp_path: Path, block: np.ndarray) -> None:
    """O(1) in the number of series: no whole-index value is read or rewritten per append."""
    with KlineStore(tmp_path) as store:
        for k in range(300):
            store.append(f"S{k:03d}USDT", "1h", block[:, :5])
        keys_before = set(store._cache.iterkeys())
        store.append("NEWUSDT", "1h", block[:, :5])
        written = set(store._cache.iterkeys()) - keys_before
        assert all("NEWUSDT" in k for k in written)  # only the new series' own keys appear
        assert len(store.series()) == 301


def test_rejects_blocks_that_are_not_klines(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        with pytest.raises(InvalidKlinesError, match="expected"):
            store.append("BTCUSDT", "1h", block[:5])
        with pytest.raises(InvalidKlinesError, match="close_time"):
            store.append("BTCUSDT", "4h", block[:, :3])  # 1h klines stored as 4h
        bad = block[:, :3].copy()
        bad[CLOSE, 1] = np.nan
        with pytest.raises(InvalidKlinesError, match="non-finite"):
            store.append("BTCUSDT", "1h", bad)
        assert store.series() == []


def test_gaps_and_exchange_gaps(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", np.concatenate([block[:, :10], block[:, 13:20]], axis=1))
        hole = (int(block[OPEN_TIME, 10]), int(block[OPEN_TIME, 12]))
        assert store.gaps("BTCUSDT", "1h") == [hole]
        store.record_exchange_gaps("BTCUSDT", "1h", [hole])
        assert store.gaps("BTCUSDT", "1h") == []
        (st,) = store.stats()
        assert st.gaps == 1
    assert missing_ranges(np.array([0, HOUR, 4 * HOUR, 5 * HOUR, 7 * HOUR]), HOUR) == [(2 * HOUR, 3 * HOUR), (6 * HOUR, 6 * HOUR)]


def test_persists_across_processes_and_clock(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", block[:, :100])
        store.set_clock(server_ms=1_000_000, local_ms=400_000)
    with KlineStore(tmp_path) as store:
        assert store.load("BTCUSDT", "1h").shape == (11, 100)
        assert store.clock() == {"server_ms": 1_000_000, "local_ms": 400_000, "offset_ms": 600_000}


def test_corrupt_database_is_a_clear_error_and_not_deleted(tmp_path: Path) -> None:
    (tmp_path / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(StoreCorruptError, match="corrupt"):
        KlineStore(tmp_path)
    assert (tmp_path / "cache.db").read_bytes().startswith(b"this is not")


def test_damaged_chunks_are_detected(tmp_path: Path, block: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", block[:, :10])
        (cid,) = store.meta("BTCUSDT", "1h")["chunks"]  # type: ignore[index]
        key = store._chunk_key("BTCUSDT", "1h", cid)
        good = store._cache.get(key)
        store._cache.set(key, b"\x00" * 13)
        with pytest.raises(StoreCorruptError, match="bad size"):
            store.load("BTCUSDT", "1h")
        garbled = bytearray(good)
        garbled[100] ^= 0xFF  # same length, one flipped byte: only the checksum can tell
        store._cache.set(key, bytes(garbled))
        with pytest.raises(StoreCorruptError, match="checksum"):
            store.load("BTCUSDT", "1h")
        store._cache.delete(key)
        with pytest.raises(StoreCorruptError, match="missing"):
            store.load("BTCUSDT", "1h")
        store._cache.set(store._meta_key("BTCUSDT", "1h"), b"{not json")
        with pytest.raises(StoreCorruptError, match="meta of BTCUSDT 1h"):
            store.meta("BTCUSDT", "1h")


def test_format_1_store_is_migrated_in_place(tmp_path: Path, block: np.ndarray) -> None:
    """A store written by the previous release (pickled meta and index, no checksums) opens as format 2."""
    import diskcache

    data = block[:, :1500]
    c = diskcache.Cache(str(tmp_path), disk_min_file_size=2**20, eviction_policy="none", size_limit=2**62, cull_limit=0)
    span = HOUR * CHUNK_ROWS
    ids = (data[OPEN_TIME] // span).astype(int)
    rows = {}
    for cid in np.unique(ids):
        part = np.ascontiguousarray(data[:, ids == cid])
        c.set(f"c/BTCUSDT/1h/{cid}", part.tobytes())
        rows[int(cid)] = part.shape[1]
    c.set("t/BTCUSDT/1h", np.ascontiguousarray(data[:, -512:]).tobytes())
    c.set("m/BTCUSDT/1h", {"chunks": sorted(rows), "chunk_rows": rows, "first_open_ms": int(data[0, 0]),
                           "last_open_ms": int(data[0, -1]), "exchange_gaps": [], "history_start_ms": None})
    c.set("index", {("BTCUSDT", "1h")})
    c.set("clock", {"server_ms": 5, "local_ms": 2, "offset_ms": 3})
    c.close()
    with KlineStore(tmp_path) as store:
        assert store.series() == [("BTCUSDT", "1h")]
        assert np.array_equal(store.load("BTCUSDT", "1h"), data)
        assert np.array_equal(store.load("BTCUSDT", "1h", limit=100), data[:, -100:])
        assert store.clock() == {"server_ms": 5, "local_ms": 2, "offset_ms": 3}
        assert store._cache.get("index") is None and store._cache.get("m/BTCUSDT/1h") is None


async def test_async_writer_lock_never_blocks_the_event_loop(tmp_path: Path) -> None:
    import asyncio

    from trader.errors import StoreLockedError

    with KlineStore(tmp_path) as store, store.writer_lock(1.0):
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        t = time.monotonic()
        with pytest.raises(StoreLockedError, match="being written"):
            async with KlineStore(tmp_path).writer_lock_async(0.3):
                pass
        task.cancel()
        assert time.monotonic() - t >= 0.3 and ticks >= 5  # the loop kept running while waiting
