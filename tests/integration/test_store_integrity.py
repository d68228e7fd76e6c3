"""Store identity and salvage, as an outside audit damages a copy of a good store: values swapped
between series and positions, a database emptied or removed, SQLite pages overwritten. Each case
goes through the CLI (``store check``, ``--repair``, ``warm``, ``scan``) against the replay venue."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import source_rows
from trader.models import CLOSE, N_FIELDS, OPEN_TIME
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import CHUNK_ROWS, KlineStore, page_damage

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
DEPTH = 3000


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, waited for in a thread: the in-process venue keeps serving."""
    cmd = [sys.executable, "-m", "cli.main", *args]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


async def warm(url: str, store: Path) -> subprocess.CompletedProcess[str]:
    return await cli("warm", "--rest-url", url, "--store", str(store), "-s", ",".join(SYMBOLS), "--klines", str(DEPTH), "--json")


async def assert_sound(store: Path, dataset: ReplayDataset, now_ms: int) -> None:
    """Every series equals the recording, and `store check` agrees (exit 0)."""
    with KlineStore(store) as st:
        for s in SYMBOLS:
            for iv in ("1h", "4h"):
                got = st.load(s, iv)
                assert np.array_equal(got, source_rows(dataset, s, iv, int(got[OPEN_TIME, -1]), DEPTH)), (s, iv)
                assert np.array_equal(st.load(s, iv, limit=100), got[:, -100:])  # the tail a scan reads
    p = await cli("store", "check", "--store", str(store))
    assert p.returncode == 0 and "0 damaged" in p.stderr, p.stdout + p.stderr


@pytest.fixture
async def venue(dataset: ReplayDataset):  # type: ignore[no-untyped-def]
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        yield ex


async def test_swapped_tails_and_chunks_are_caught_and_refetched(venue: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert (await warm(venue.rest_url, store)).returncode == 0
    with KlineStore(store) as st:
        c = st._cache
        bt, et = "t/BTCUSDT/1h", "t/ETHUSDT/1h"
        c[bt], c[et] = c[et], c[bt]  # both CRCs valid for their bytes: only the key binding can tell
        ids = sorted(st.meta("BTCUSDT", "4h")["chunks"])  # type: ignore[index]
        shared = next(i for i in ids if i in st.meta("ETHUSDT", "4h")["chunks"])  # type: ignore[index]
        k1, k2 = f"c/BTCUSDT/4h/{shared}", f"c/ETHUSDT/4h/{shared}"
        c[k1], c[k2] = c[k2], c[k1]
    p = await cli("scan", "--store", str(store), "-m", "0", "-f", "json")  # never ETH's price printed as BTC's
    doc = json.loads(p.stdout)
    assert "BTCUSDT" not in {s["symbol"] for s in doc["signals"]} and "ETHUSDT" not in {s["symbol"] for s in doc["signals"]}
    errors = {e["symbol"]: e["message"] for e in doc["errors"]}
    assert "tail of BTCUSDT 1h fails its checksum" in errors["BTCUSDT"], doc["errors"]
    assert "BTCUSDT" in p.stderr and "fails its checksum" in p.stderr
    p = await cli("store", "check", "--store", str(store), "--json")
    assert p.returncode == 4
    damaged = {(d["symbol"], d["interval"]) for d in json.loads(p.stdout)["damaged"]}
    assert damaged == {("BTCUSDT", "1h"), ("ETHUSDT", "1h"), ("BTCUSDT", "4h"), ("ETHUSDT", "4h")}
    p = await warm(venue.rest_url, store)  # warm repairs what it finds, then refetches the quarantined spans
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("quarantined and refetched") == 4
    await assert_sound(store, dataset, venue.clock.now_ms())
    p = await cli("scan", "--store", str(store), "-m", "0", "-f", "json", "-s", "BTCUSDT")
    btc = json.loads(p.stdout)["signals"][0]
    with KlineStore(store) as st:
        assert btc["last_close"] == st.load("BTCUSDT", "1h", limit=1)[CLOSE, -1] > 10_000


async def test_format_2_store_is_resealed_and_a_swapped_chunk_is_found_by_continuity(
    venue: ReplayExchange, dataset: ReplayDataset, tmp_path: Path
) -> None:
    import zlib

    store = tmp_path / "store"
    assert (await warm(venue.rest_url, store)).returncode == 0
    with KlineStore(store) as st:  # rewrite as today's stores were: CRC32 of the bytes alone, format "2"
        c = st._cache
        for key in [k for k in c.iterkeys() if isinstance(k, str) and k[:2] in ("c/", "t/")]:
            payload = c[key][:-4]
            c[key] = payload + zlib.crc32(payload).to_bytes(4, "little")
        c["format"] = b"2"
        want = st.meta("BTCUSDT", "1h")
        # a swap made before the upgrade: ETH's middle chunk under BTC's key, with a valid format-2 CRC
        mid = sorted(want["chunks"])[1]  # type: ignore[index]
        c[f"c/BTCUSDT/1h/{mid}"] = c[f"c/ETHUSDT/1h/{mid}"]
    with KlineStore(store) as st:  # opening migrates (one transaction)
        assert st._cache["format"] == b"3"
        assert np.array_equal(st.load("SOLUSDT", "4h"), source_rows(dataset, "SOLUSDT", "4h", st.last_open_time("SOLUSDT", "4h") or 0, DEPTH))
        problems = st.check("BTCUSDT", "1h")
        assert any(f"chunk {mid} of BTCUSDT 1h does not continue" in p for p in problems), problems
        assert [s for s, i, _ in st.damaged()] == ["BTCUSDT"]
    p = await cli("store", "check", "--store", str(store), "--repair")
    assert p.returncode == 0 and f"quarantined chunk {mid}" in p.stdout, p.stdout + p.stderr
    assert (await warm(venue.rest_url, store)).returncode == 0
    await assert_sound(store, dataset, venue.clock.now_ms())


@pytest.mark.parametrize("how", ["truncate", "remove"])
async def test_an_emptied_or_removed_database_is_a_lost_store(venue: ReplayExchange, dataset: ReplayDataset, tmp_path: Path, how: str) -> None:
    store = tmp_path / "store"
    assert (await warm(venue.rest_url, store)).returncode == 0
    assert json.loads((store / "store.json").read_text())["series"] == 8
    db = store / "cache.db"
    for side in (store / "cache.db-wal", store / "cache.db-shm"):
        side.unlink(missing_ok=True)
    if how == "truncate":
        db.write_bytes(b"")
    else:
        db.unlink()
    for _ in range(2):  # the second time the database exists again (SQLite created it), still lost
        p = await cli("store", "check", "--store", str(store))
        assert p.returncode == 4 and p.stderr.startswith("trader: error: store lost:") and "(8 series)" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    p = await cli("scan", "--store", str(store), "-m", "0")
    assert p.returncode == 4 and "store lost" in p.stderr
    p = await warm(venue.rest_url, store)
    assert p.returncode == 0 and "store lost" in p.stderr and "fetching everything again" in p.stderr
    await assert_sound(store, dataset, venue.clock.now_ms())


async def test_page_damage_is_salvaged_into_a_fresh_database(venue: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert (await warm(venue.rest_url, store)).returncode == 0
    con = sqlite3.connect(store / "cache.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL into cache.db, so the damage below lands in the data
    con.close()
    for side in (store / "cache.db-wal", store / "cache.db-shm"):
        side.unlink(missing_ok=True)
    db = store / "cache.db"
    size = db.stat().st_size
    rng = np.random.default_rng(7)
    with open(db, "r+b") as fh:  # overwrite three 4 KB pages in the middle of the file with noise
        for off in (size // 3, size // 2, 2 * size // 3):
            fh.seek(off // 4096 * 4096)
            fh.write(rng.bytes(4096))
    assert page_damage(store)
    p = await cli("store", "check", "--store", str(store))
    assert p.returncode == 4 and "damaged: database:" in p.stdout and "--repair" in p.stderr, p.stdout + p.stderr
    p = await cli("store", "check", "--store", str(store), "--repair", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    salvage = doc["salvage"]
    assert Path(salvage["kept_aside"]).exists() and salvage["kept"]
    assert salvage["refetch"] or salvage["dropped"] or salvage["unreadable_rows"]
    kept = sum(k["klines"] for k in salvage["kept"])
    assert 0 < kept < len(SYMBOLS) * 2 * DEPTH
    assert not page_damage(store)
    p = await cli("store", "check", "--store", str(store))
    assert p.returncode == 0, p.stdout + p.stderr
    assert (await warm(venue.rest_url, store)).returncode == 0
    await assert_sound(store, dataset, venue.clock.now_ms())


def test_a_damaged_chunk_in_place_fails_its_span_and_checksum(tmp_path: Path, dataset: ReplayDataset) -> None:
    """Unit level: a chunk written under the right key but holding another position's klines."""
    block = dataset.series("BTCUSDT", "1h").values[:, :3000].copy()
    with KlineStore(tmp_path) as st:
        st.append("BTCUSDT", "1h", block)
        ids = sorted(st.meta("BTCUSDT", "1h")["chunks"])  # type: ignore[index]
        c = st._cache
        raw = c[f"c/BTCUSDT/1h/{ids[0]}"]
        c[f"c/BTCUSDT/1h/{ids[1]}"] = raw  # right series, wrong position
        problems = st.check("BTCUSDT", "1h")
        assert any(f"chunk {ids[1]} of BTCUSDT 1h fails its checksum" in p for p in problems)
        done = st.repair("BTCUSDT", "1h")
        assert any(f"quarantined chunk {ids[1]}" in d for d in done)
        got = st.load("BTCUSDT", "1h")
        span = 3_600_000 * CHUNK_ROWS
        assert not np.any(got[OPEN_TIME] // span == ids[1]) and got.shape[0] == N_FIELDS
        assert st.check("BTCUSDT", "1h") == []
    assert os.path.exists(tmp_path / "store.json")
