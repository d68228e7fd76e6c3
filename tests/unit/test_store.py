"""KlineStore on a real diskcache in a temp dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trader.errors import StoreCorruptError
from trader.exchange.replay.dataset import ReplayDataset
from trader.store.klines import CHUNK_ROWS, KlineStore, missing_ranges

HOUR = 3_600_000


@pytest.fixture
def rows(dataset: ReplayDataset) -> np.ndarray:
    return dataset.series("BTCUSDT", "1h").values[:3000].copy()


def test_append_load_roundtrip_and_slices(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        assert store.append("BTCUSDT", "1h", rows) == 3000
        assert np.array_equal(store.load("BTCUSDT", "1h").T, rows)
        assert np.array_equal(store.load("BTCUSDT", "1h", limit=1000).T, rows[-1000:])
        t = rows[:, 0]
        assert np.array_equal(store.load("BTCUSDT", "1h", start_ms=int(t[10]), limit=5).T, rows[10:15])
        assert np.array_equal(store.load("BTCUSDT", "1h", end_ms=int(t[2000]), limit=7).T, rows[1994:2001])
        assert np.array_equal(store.load("BTCUSDT", "1h", start_ms=int(t[5]), end_ms=int(t[8])).T, rows[5:9])
        assert store.load("BTCUSDT", "4h").shape == (11, 0)
        assert store.last_open_time("BTCUSDT", "1h") == int(t[-1])
        assert store.series() == [("BTCUSDT", "1h")]
        (st,) = store.stats()
        assert (st.rows, st.bytes, st.newest_close_ms) == (3000, 3000 * 88, int(rows[-1, 6]))


def test_dedupe_last_wins_and_out_of_order(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", rows[1000:2000])
        changed = rows[1500:2500].copy()
        changed[:, 4] += 1.0  # a corrected close for overlapping open times
        assert store.append("BTCUSDT", "1h", changed[::-1]) == 500  # reversed order is fine
        got = store.load("BTCUSDT", "1h").T
        assert got.shape[0] == 1500 and np.all(np.diff(got[:, 0]) == HOUR)
        assert np.array_equal(got[500:], changed)
        assert store.append("BTCUSDT", "1h", np.concatenate([rows[:10], rows[:10]])) == 10


def test_append_touches_only_the_newest_chunk(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", rows[:2999])
        meta = store.meta("BTCUSDT", "1h")
        assert meta is not None
        old_ids = meta["chunks"][:-1]
        before = {c: store._cache.get(store._chunk_key("BTCUSDT", "1h", c), tag=False) for c in old_ids}
        store.append("BTCUSDT", "1h", rows[2999:3000])
        for c, raw in before.items():
            assert store._cache.get(store._chunk_key("BTCUSDT", "1h", c)) == raw
        assert all(n <= CHUNK_ROWS for n in store.meta("BTCUSDT", "1h")["chunk_rows"].values())  # type: ignore[index]


def test_rejects_rows_that_are_not_klines(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        with pytest.raises(ValueError, match="expected"):
            store.append("BTCUSDT", "1h", rows[:, :5])
        with pytest.raises(ValueError, match="close_time"):
            store.append("BTCUSDT", "4h", rows[:3])  # 1h rows stored as 4h
        assert store.series() == []


def test_gaps_and_exchange_gaps(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", np.concatenate([rows[:10], rows[13:20]]))
        hole = (int(rows[10, 0]), int(rows[12, 0]))
        assert store.gaps("BTCUSDT", "1h") == [hole]
        store.record_exchange_gaps("BTCUSDT", "1h", [hole])
        assert store.gaps("BTCUSDT", "1h") == []
        (st,) = store.stats()
        assert st.gaps == 1
    assert missing_ranges(np.array([0, HOUR, 4 * HOUR, 5 * HOUR, 7 * HOUR]), HOUR) == [(2 * HOUR, 3 * HOUR), (6 * HOUR, 6 * HOUR)]


def test_persists_across_processes_and_clock(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", rows[:100])
        store.set_clock(server_ms=1_000_000, local_ms=400_000)
    with KlineStore(tmp_path) as store:
        assert store.load("BTCUSDT", "1h").shape == (11, 100)
        assert store.clock() == {"server_ms": 1_000_000, "local_ms": 400_000, "offset_ms": 600_000}


def test_corrupt_database_is_a_clear_error_and_not_deleted(tmp_path: Path) -> None:
    (tmp_path / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(StoreCorruptError, match="corrupt"):
        KlineStore(tmp_path)
    assert (tmp_path / "cache.db").read_bytes().startswith(b"this is not")


def test_corrupt_chunk_is_detected(tmp_path: Path, rows: np.ndarray) -> None:
    with KlineStore(tmp_path) as store:
        store.append("BTCUSDT", "1h", rows[:10])
        cid = store.meta("BTCUSDT", "1h")["chunks"][0]  # type: ignore[index]
        store._cache.set(store._chunk_key("BTCUSDT", "1h", cid), b"\x00" * 13)
        with pytest.raises(StoreCorruptError, match="bad size"):
            store.load("BTCUSDT", "1h")
