"""Faults and bad input through the CLI, as a user meets them: streams that never connect, signals
in every state, a dead feed, a damaged or read-only store, malformed files and flags. Each must end
with one clear line on stderr, the documented exit code, and nothing stored lost or corrupted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import bundled_rows
from tests.integration.test_warm import assert_store_equals_source
from trader.config import ClientConfig, ProfileConfig, StreamConfig
from trader.config import WsReplayConfig as WsConfig
from trader.exchange.rest import BinanceClient
from trader.live import LiveFeed
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(p: subprocess.CompletedProcess[str], code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stderr[-500:])
    assert "Traceback" not in p.stderr and "╭" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("trader: error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


# ---------------------------------------------------------------------- streams


async def _spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, env={**os.environ, **(env or {})},
    )


async def test_a_stream_that_never_connects_fails_loudly(exchange: ReplayExchange, tmp_path: Path) -> None:
    proc = await _spawn("warm", "--follow", "-s", "BTCUSDT", "--rest-url", exchange.rest_url, "--ws-url", "ws://127.0.0.1:1",
                        "--store", str(tmp_path / "s"), env={"TRADER_STREAM__CONNECT_DEADLINE_S": "2"})
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3, err.decode()
    assert "cannot open the WebSocket stream at ws://127.0.0.1:1 within 2 s" in err.decode()
    p = cli("warm", "--follow", "-s", "BTCUSDT", "--ws-url", "http://127.0.0.1:1", "--store", str(tmp_path / "s"))
    assert "is not a ws or wss URL" in one_line_error(p, 2)


@pytest.mark.parametrize("state", ["connecting", "warming", "following"])
async def test_sigint_stops_follow_within_two_seconds(dataset: ReplayDataset, tmp_path: Path, state: str) -> None:
    latency = 3000 if state == "warming" else 0  # a warm stuck on a slow exchange
    async with ReplayExchange(dataset, port=0, speed=0, faults=__import__("trader.config", fromlist=["FaultConfig"]).FaultConfig(latency_ms=latency)) as ex:
        ws = "ws://127.0.0.1:1" if state == "connecting" else ex.ws_url
        proc = await _spawn("warm", "--follow", "-s", "BTCUSDT,ETHUSDT", "--rest-url", ex.rest_url, "--ws-url", ws,
                            "--store", str(tmp_path / "s"), "--klines", "100")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        if state == "warming":
            while ex.stats.requests["/api/v3/klines"] == 0 and loop.time() < deadline:
                await asyncio.sleep(0.01)  # waits for a state; nothing is timed by it
        elif state == "connecting":
            while ex.stats.requests["/api/v3/klines"] < 4 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # past the warm: now retrying a dead socket
        else:
            while not ex.hub.subs and loop.time() < deadline:
                await asyncio.sleep(0.01)
        t0 = loop.time()
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        elapsed = loop.time() - t0
    assert elapsed < 2.0, (state, elapsed, err.decode()[-300:])
    assert proc.returncode in (0, 130) and b"Traceback" not in err, (state, proc.returncode, err.decode()[-300:])


async def test_lag_watchdog_warns_and_backfills(dataset: ReplayDataset, tmp_path: Path) -> None:
    """Events that trail the exchange (a lagging stream) are noticed and the cache is backfilled over REST."""
    lags: list[list[tuple[str, str, float]]] = []
    async with ReplayExchange(dataset, port=0, speed=0, ws=WsConfig(latency_ms=5_000)) as ex:
        cfg = StreamConfig(snapshot_s=0, watchdog_s=0.1, lag_grace_s=0, silence_s=120, open_timeout_s=20)
        with KlineStore(tmp_path) as store:
            async with BinanceClient(ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url), ClientConfig()) as client:
                feed = LiveFeed(client, store, ["BTCUSDT"], ["1h"], ex.ws_url, stream_cfg=cfg, depth=300, on_lag=lags.append)
                async with feed:
                    before = feed.cache.ring("BTCUSDT", "1h").last_open_ms
                    ex.clock.step(HOUR + 30_000)  # a kline closed 30 s ago; its event will only arrive 5 s later
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    while feed.cache.ring("BTCUSDT", "1h").last_open_ms == before and loop.time() < t0 + 20:
                        await asyncio.sleep(0.02)
                    assert loop.time() - t0 < 4.5  # the watchdog's REST backfill came before the late event
                    assert feed.cache.ring("BTCUSDT", "1h").last_open_ms == before + HOUR  # backfilled over REST
                    assert feed.stats.lag_events >= 1 and lags and lags[0][0][:2] == ("BTCUSDT", "1h")


# ---------------------------------------------------------------------- exit codes a cron job can trust


def test_a_dead_feed_is_exit_6_not_a_quiet_market(warmed_store: tuple[Path, int], tmp_path: Path) -> None:
    path = tmp_path / "s"
    shutil.copytree(warmed_store[0], path)
    with KlineStore(path) as store:
        store.set_clock(server_ms=warmed_store[1] + 2 * HOUR, local_ms=int(time.time() * 1000))  # 2 h since the warm
    for fmt in ("json", "table", "csv"):
        p = cli("scan", "--store", str(path), "-f", fmt)
        line = one_line_error(p, 6)
        assert "nothing could be scored" in line and "stale" in line
        assert p.stderr.count("stale series not scored") == 1  # the stale list, in every format
    p = cli("scan", "--store", str(warmed_store[0]), "-f", "json", "-m", "100", "--no-model", env={"TRADER_SCAN__GRACE_S": "1e9"})
    assert p.returncode == 1 and json.loads(p.stdout)["signals"] == []  # scanned, nothing passed: still 1


# ---------------------------------------------------------------------- store damage


async def test_damaged_store_is_detected_repaired_and_refetched(exchange: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    path = tmp_path / "s"
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    warm = ["warm", "--rest-url", exchange.rest_url, "--store", str(path), "-s", ",".join(syms), "--klines", "1500", "--json"]
    assert (await asyncio.to_thread(cli, *warm)).returncode == 0
    with KlineStore(path) as store:
        c = store._cache
        btc = sorted(store.meta("BTCUSDT", "1h")["chunks"])  # type: ignore[index]
        key = store._chunk_key("BTCUSDT", "1h", btc[0])
        raw = bytearray(c.get(key))
        raw[800:880] = b"\x00" * 80  # ten garbage rows' worth, same length
        c.set(key, bytes(raw))
        c.delete(store._chunk_key("ETHUSDT", "4h", sorted(store.meta("ETHUSDT", "4h")["chunks"])[-1]))  # type: ignore[index]
        c.set(store._meta_key("SOLUSDT", "1h"), b"\x80\x04garbage")
        tail = bytearray(c.get(store._tail_key("BTCUSDT", "4h")))
        tail[-40] ^= 0xFF  # the value a scan reads
        c.set(store._tail_key("BTCUSDT", "4h"), bytes(tail))
    p = await asyncio.to_thread(cli, "store", "check", "--store", str(path), "--json")
    assert p.returncode == 4
    found = {(d["symbol"], d["interval"]) for d in json.loads(p.stdout)["damaged"]}
    assert found == {("BTCUSDT", "1h"), ("BTCUSDT", "4h"), ("ETHUSDT", "4h"), ("SOLUSDT", "1h")}
    p = await asyncio.to_thread(cli, "scan", "--store", str(path), "-f", "json", "-m", "0", env={"TRADER_SCAN__GRACE_S": "1e9"})
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and [e["symbol"] for e in doc["errors"]] == ["BTCUSDT"] and "checksum" in doc["errors"][0]["message"]
    assert {s["symbol"] for s in doc["signals"]} == {"ETHUSDT", "SOLUSDT"}  # the others are scored (their tails are sound)
    p = await asyncio.to_thread(cli, *warm)
    assert p.returncode == 0, p.stderr
    repaired = sorted(map(tuple, json.loads(p.stdout)["repaired"]))  # the damaged tail too: warm checks every series
    assert repaired == [("BTCUSDT", "1h"), ("BTCUSDT", "4h"), ("ETHUSDT", "4h"), ("SOLUSDT", "1h")]
    with KlineStore(path) as store:
        assert store.damaged() == []
        assert_store_equals_source(store, dataset, exchange.clock.now_ms(), syms, 1500)  # 0 garbage rows survive
    assert (await asyncio.to_thread(cli, "store", "check", "--store", str(path))).returncode == 0


def test_store_check_repair(warmed_store: tuple[Path, int], tmp_path: Path) -> None:
    path = tmp_path / "s"
    shutil.copytree(warmed_store[0], path)
    with KlineStore(path) as store:
        key = store._tail_key("XRPUSDT", "4h")
        raw = bytearray(store._cache.get(key))
        raw[5] ^= 1
        store._cache.set(key, bytes(raw))
    p = cli("store", "check", "--store", str(path), "--repair")
    assert p.returncode == 0 and "rebuilt the tail" in p.stdout
    with KlineStore(path) as store:
        assert store.damaged() == [] and store.load("XRPUSDT", "4h", limit=300).shape == (11, 300)


def test_read_only_media_is_not_called_corrupt(warmed_store: tuple[Path, int], tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(warmed_store[0], mnt / "s")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        p = cli("scan", "--store", str(mnt / "s"), "-f", "json")
        line = one_line_error(p, 4)
        assert "read-only" in line and "nothing is wrong with its data" in line and "corrupt" not in line
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ---------------------------------------------------------------------- bad input, one line each


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"scan:\n  min_score: 7\xff\n", "not UTF-8"),
        (b"scan:\n" + b"".join(b"  " * (i + 1) + b"a:\n" for i in range(500)), "nested deeper"),  # 500 levels, 250 KB
        (b"a: &a [*a]\n", "recursive YAML alias"),
        (b"\n".join([b"a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]".encode() for i in range(1, 13)]), "more than 100 YAML aliases"),
        (b"scan:\n  weights: {trend: 0, momentum: 0, volume: 0, volatility: 0, structure: 0, mtf: 0}\n", "at least one factor weight"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: bytes, expected: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes(content)
    t0 = time.monotonic()
    p = cli("scan", "--config", str(f), "--store", str(tmp_path / "none"), timeout=60)
    assert expected in one_line_error(p, 2) and time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["warm", "--klines", "0", "-s", "BTCUSDT"], "--klines"),
        (["warm", "--top", "-1"], "--top"),
        (["scan", "--min-score", "1000"], "--min-score"),
        (["scan", "--store", ""], "store path is empty"),
        (["scan", "-i", "1x"], "invalid interval"),
        (["warm", "-s", "BTC/USDT"], "invalid symbol"),
        (["compare", "--plot", "/nonexistent/x.png", "--json"], "does not exist"),
    ],
)
def test_bad_flags_are_one_line(args: list[str], expected: str) -> None:
    assert expected in one_line_error(cli(*args), 2)


def test_non_utf8_url_is_one_line() -> None:
    p = subprocess.run([sys.executable.encode(), b"-m", b"cli.main", b"warm", b"-s", b"BTCUSDT", b"--rest-url", b"http://127.0.0.1:1/\xff"],
                       capture_output=True, cwd=ROOT, timeout=60)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2 and "not a URL" in err and "Traceback" not in err


async def test_one_malformed_csv_breaks_only_its_symbol(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        rows = bundled_rows(sym, "1h")[:500]
        if sym == "ETHUSDT":
            rows[123][4] = "not-a-price"
        (data / f"{sym}-1h.csv").write_text("\n".join([HEADER] + [",".join(r) for r in rows]) + "\n")
    async with ReplayExchange(ReplayDataset(data), port=0, speed=0, start_ms=int(bundled_rows("BTCUSDT", "1h")[499][6]) + 1,
                              background_load=True) as ex:
        p = await asyncio.to_thread(cli, "warm", "--rest-url", ex.rest_url, "--store", str(tmp_path / "s"), "-i", "1h",
                                    "-s", "BTCUSDT,ETHUSDT,SOLUSDT", "--klines", "200", "--json")
        assert p.returncode == 3 and "ETHUSDT 1h" in p.stderr and "Invalid symbol" in p.stderr
        assert "ETHUSDT-1h.csv:125" in ex.problems["ETHUSDT"]  # file and line, on the venue's side
        with KlineStore(tmp_path / "s") as store:
            assert store.load("BTCUSDT", "1h").shape[1] == 200 and store.load("SOLUSDT", "1h").shape[1] == 200
        top = await asyncio.to_thread(cli, "warm", "--rest-url", ex.rest_url, "--store", str(tmp_path / "t"), "-i", "1h",
                                      "--top", "3", "--klines", "50", "--json")
        assert top.returncode == 0, top.stderr  # the broken symbol is simply not offered
    assert np.isfinite(KlineStore(tmp_path / "t").load("BTCUSDT", "1h")).all()


async def test_warm_of_an_interval_the_exchange_lacks_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = bundled_rows("BTCUSDT", "4h")[:300]
    (data / "BTCUSDT-4h.csv").write_text("\n".join([HEADER] + [",".join(r) for r in rows]) + "\n")
    async with ReplayExchange(ReplayDataset(data), port=0, speed=0, start_ms=int(rows[-1][6]) + 1) as ex:
        p = await asyncio.to_thread(cli, "warm", "--rest-url", ex.rest_url, "--store", str(tmp_path / "s"), "-s", "BTCUSDT", "-i", "1h")
    assert p.returncode == 3 and "Invalid interval" in p.stderr and "4h" in p.stderr  # never a silent 0-kline success
