"""`warm` against the replay exchange on 127.0.0.1:0 with a real diskcache store in a temp dir."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FakeClock, bundled_rows, source_rows
from trader.config import ClientConfig, FaultConfig, ProfileConfig
from trader.errors import CircuitOpenError, ConfigError, NetworkError, RateLimited
from trader.exchange.limits import CircuitBreaker, WeightBudget
from trader.exchange.rest import BinanceClient
from trader.models import OPEN_TIME
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.warm import last_closed_open_ms, warm

HOUR = 3_600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
ROOT = Path(__file__).resolve().parents[2]


def client_for(ex: ReplayExchange, clock: FakeClock | None = None, **cfg: object) -> BinanceClient:
    profile = ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url)
    config = ClientConfig(**{"backoff_base_s": 0.01, "backoff_max_s": 0.05, **cfg})  # type: ignore[arg-type]
    if clock is None:
        return BinanceClient(profile, config)
    breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s, clock=clock, sleep=clock.sleep)
    return BinanceClient(profile, config, sleep=clock.sleep, clock=clock, breaker=breaker)


def assert_store_equals_source(store: KlineStore, ds: ReplayDataset, now_ms: int, symbols: list[str], depth: int) -> None:
    for symbol in symbols:
        for interval in ("1h", "4h"):
            got = store.load(symbol, interval)
            want = source_rows(ds, symbol, interval, last_closed_open_ms(now_ms, interval), depth)
            assert got.shape == want.shape, (symbol, interval, got.shape, want.shape)
            assert np.array_equal(got, want), (symbol, interval)


async def test_cold_then_incremental_warm(exchange: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    with KlineStore(tmp_path) as store:
        async with client_for(exchange) as client:
            report = await warm(client, store, SYMBOLS, ["1h", "4h"], depth=300)
        assert report.errors == [] and report.kline_requests == 8 and report.candles_fetched == 8 * 300
        assert_store_equals_source(store, dataset, exchange.clock.now_ms(), SYMBOLS, 300)
        assert store.clock()["server_ms"] == exchange.clock.now_ms()  # type: ignore[index]

        # nothing new: no kline request at all
        exchange.stats.reset()
        async with client_for(exchange) as client:
            report = await warm(client, store, SYMBOLS, ["1h", "4h"], depth=300)
        assert report.kline_requests == 0 and exchange.stats.requests["/api/v3/klines"] == 0
        assert report.up_to_date == 8

        # three hours later: one request per 1h series, none for 4h (its next candle has not closed)
        exchange.clock.step(3 * HOUR)
        exchange.stats.reset()
        async with client_for(exchange) as client:
            report = await warm(client, store, SYMBOLS, ["1h", "4h"], depth=300)
        assert exchange.stats.requests["/api/v3/klines"] == 4 and report.candles_fetched == 12
        assert report.candles_added == 12
        now = exchange.clock.now_ms()
        for s in SYMBOLS:
            assert store.last_open_time(s, "1h") == last_closed_open_ms(now, "1h")
            assert store.load(s, "1h").shape[1] == 303  # history grows, nothing is dropped


async def test_deeper_history_is_backfilled_once(exchange: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    with KlineStore(tmp_path) as store:
        async with client_for(exchange) as client:
            await warm(client, store, ["BTCUSDT"], ["4h"], depth=100)
            report = await warm(client, store, ["BTCUSDT"], ["4h"], depth=1000)
        assert report.candles_fetched == 900
        assert_store_equals_source(store, dataset, exchange.clock.now_ms(), [], 0)
        got = store.load("BTCUSDT", "4h")
        want = source_rows(dataset, "BTCUSDT", "4h", last_closed_open_ms(exchange.clock.now_ms(), "4h"), 1000)
        assert np.array_equal(got, want)


async def test_store_gap_is_refetched(exchange: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    now = exchange.clock.now_ms()
    full = source_rows(dataset, "ETHUSDT", "1h", last_closed_open_ms(now, "1h"), 200)
    with KlineStore(tmp_path) as store:
        store.append("ETHUSDT", "1h", np.concatenate([full[:, :50], full[:, 60:]], axis=1))  # a hole of 10 klines
        assert store.gaps("ETHUSDT", "1h") == [(int(full[OPEN_TIME, 50]), int(full[OPEN_TIME, 59]))]
        async with client_for(exchange) as client:
            report = await warm(client, store, ["ETHUSDT"], ["1h"], depth=200)
        assert report.gaps_repaired == 1 and store.gaps("ETHUSDT", "1h") == []
        assert np.array_equal(store.load("ETHUSDT", "1h"), full)


async def test_exchange_gap_is_recorded_not_refetched_forever(tmp_path: Path) -> None:
    rows = bundled_rows("BTCUSDT", "1h")[:120]
    del rows[40:43]  # a maintenance window the exchange itself has
    data = tmp_path / "data"
    data.mkdir()
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"
    (data / "BTCUSDT-1h.csv").write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    ds = ReplayDataset(data)
    async with ReplayExchange(ds, port=0, speed=0, start_ms=int(rows[-1][6]) + 1) as ex:
        with KlineStore(tmp_path / "store") as store:
            async with client_for(ex) as client:
                report = await warm(client, store, ["BTCUSDT"], ["1h"], depth=100)
            assert report.exchange_gaps == 1
            missing = (int(rows[39][0]) + HOUR, int(rows[40][0]) - HOUR)
            assert store.meta("BTCUSDT", "1h")["exchange_gaps"] == [missing]  # type: ignore[index]
            assert store.gaps("BTCUSDT", "1h") == []
            ex.stats.reset()
            async with client_for(ex) as client:
                report = await warm(client, store, ["BTCUSDT"], ["1h"], depth=100)
            assert ex.stats.requests["/api/v3/klines"] == 0  # neither the gap nor older history is asked again


async def test_invalid_symbol_is_reported_others_warmed(exchange: ReplayExchange, dataset: ReplayDataset, tmp_path: Path) -> None:
    with KlineStore(tmp_path) as store:
        async with client_for(exchange) as client:
            report = await warm(client, store, ["BTCUSDT", "NOPEUSDT", "ETHUSDT"], ["1h"], depth=50)
        assert [(e.symbol, e.interval) for e in report.errors] == [("NOPEUSDT", "1h")]
        assert "Invalid symbol." in report.errors[0].message and "-1121" in report.errors[0].message
        assert report.retries == 0  # a 4xx is never retried
        assert store.load("BTCUSDT", "1h").shape[1] == 50 and store.load("ETHUSDT", "1h").shape[1] == 50


async def test_5xx_is_retried(dataset: ReplayDataset, tmp_path: Path) -> None:
    clock = FakeClock()
    faults = FaultConfig(error_rate=0.3, seed=3)
    async with ReplayExchange(dataset, port=0, speed=0, faults=faults, weight_clock=clock) as ex:
        with KlineStore(tmp_path) as store:
            async with client_for(ex, clock, max_attempts=10, breaker_failures=50) as client:
                report = await warm(client, store, SYMBOLS, ["1h", "4h"], depth=100)
            assert report.errors == [] and report.retries > 0 and ex.stats.statuses[500] == report.retries
            assert_store_equals_source(store, dataset, ex.clock.now_ms(), SYMBOLS, 100)


def _times(ex: ReplayExchange) -> list[tuple[float, str, int]]:
    return list(ex.stats.log)


async def test_429_pauses_every_request_until_retry_after(dataset: ReplayDataset, tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_010.0)
    # the exchange allows 10 weight/min but the client believes 6000: it will meet a 429
    async with ReplayExchange(dataset, port=0, speed=0, weight_limit=10, weight_clock=clock) as ex:
        with KlineStore(tmp_path) as store:
            async with client_for(ex, clock, concurrency=1) as client:
                report = await warm(client, store, SYMBOLS, ["1h", "4h"], depth=10)
        assert report.errors == [] and report.rate_limited >= 1
        log = _times(ex)
        statuses = [s for _, _, s in log]
        assert 429 in statuses
        for i, (t, _, status) in enumerate(log):
            if status == 429:
                window_end = (t // 60 + 1) * 60  # the server's Retry-After points here
                nxt = log[i + 1][0]
                assert nxt >= window_end, "a request was sent before Retry-After ended"
        assert 418 not in [s for _, _, s in log]
        assert_store_equals_source(store, dataset, ex.clock.now_ms(), SYMBOLS, 10)


async def test_418_ban_stops_all_requests_until_it_ends(dataset: ReplayDataset, tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_010.0)
    async with ReplayExchange(dataset, port=0, speed=0, weight_limit=10, ban_after_429s=0, weight_clock=clock) as ex:
        for _ in range(6):  # someone else on this IP got it banned
            ex.limiter.admit("127.0.0.1", 2)
        ban = ex.limiter.admit("127.0.0.1", 2)
        assert ban.status == 418 and ban.retry_after_s == 120
        async with client_for(ex, clock) as client:
            with pytest.raises(RateLimited, match="banned") as info:
                await client.fetch_server_time()  # a 418 is not retried
            assert info.value.banned and info.value.retry_after_s == 120
            t_ban = clock.t
            # every request of the process now waits for the ban to end, then goes through
            pages = await asyncio.gather(*(client.fetch_klines_page(s, "1h", limit=5) for s in SYMBOLS))
        assert all(p.shape == (11, 5) for p in pages)
        log = _times(ex)
        assert [s for _, _, s in log] == [418] + [200] * len(SYMBOLS)
        assert all(t >= t_ban + 120 for t, _, _ in log[1:])


async def test_budget_never_exceeded_at_concurrency_50(dataset: ReplayDataset, tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    async with ReplayExchange(dataset, port=0, speed=0, weight_limit=100, weight_clock=clock) as ex:
        with KlineStore(tmp_path) as store:
            async with client_for(ex, clock, concurrency=50, weight_limit=100, weight_margin=0.0) as client:
                # 192 requests of weight 2 against 100 per minute: needs four windows
                report = await warm(client, store, list(dataset.symbols), ["1h", "4h"], depth=1000)
        assert report.errors == []
        assert ex.stats.statuses[429] == 0 and ex.stats.statuses[418] == 0
        assert client.budget.waits > 0  # it did have to wait for windows to roll
        windows: dict[int, int] = {}
        for t, path, _ in ex.stats.log:
            w = 2 if path == "/api/v3/klines" else 1
            windows[int(t // 60)] = windows.get(int(t // 60), 0) + w
        assert max(windows.values()) <= 100


async def test_breaker_counts_requests_not_retries_and_waits_until_the_deadline() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed on exit: connections are refused
    profile = ProfileConfig(rest_url=f"http://127.0.0.1:{port}", ws_url=f"ws://127.0.0.1:{port}")
    clock = FakeClock()
    cfg = ClientConfig(max_attempts=5, breaker_failures=3, breaker_cooldown_s=30, backoff_base_s=0.001, backoff_max_s=0.002)
    breaker = CircuitBreaker(3, 30, clock=clock, sleep=clock.sleep)
    async with BinanceClient(profile, cfg, sleep=clock.sleep, clock=clock, breaker=breaker) as client:
        with pytest.raises(NetworkError, match="connect"):
            await client.fetch_server_time()  # 5 attempts of one request: one failure for the breaker
        assert breaker.state == "closed" and breaker.failures == 1
        for _ in range(2):
            with pytest.raises(NetworkError):
                await client.fetch_server_time()
        assert breaker.state == "open" and breaker.opened == 1
        client.deadline = clock() + 100  # waits the 30 s cool-downs (virtual time), 3 trials fail, then gives up
        t0 = clock()
        with pytest.raises(CircuitOpenError, match="deadline"):
            await client.fetch_server_time()
        assert clock() - t0 >= 90 and client.stats.breaker_waits >= 1


async def test_open_breaker_makes_the_batch_wait_and_complete(dataset: ReplayDataset, tmp_path: Path) -> None:
    """An exchange that was failing and recovers: every series waits for the half-open trial, none fails."""
    clock = FakeClock()
    async with ReplayExchange(dataset, port=0, speed=0, weight_clock=clock) as ex:
        with KlineStore(tmp_path) as store:
            async with client_for(ex, clock, breaker_failures=3, breaker_cooldown_s=30) as client:
                for _ in range(3):
                    client.breaker.failure()
                assert client.breaker.state == "open"
                report = await warm(client, store, SYMBOLS, ["1h", "4h"], depth=100, deadline_s=600)
            assert report.errors == [] and report.breaker_waits >= 1 and client.breaker.state == "closed"
            assert_store_equals_source(store, dataset, ex.clock.now_ms(), SYMBOLS, 100)


async def test_budget_waits_for_window_roll_not_sleeps() -> None:
    clock = FakeClock(1_700_000_050.0)  # 10 s before the minute rolls
    budget = WeightBudget(10, margin=0.0, skew_s=0.5, clock=clock, sleep=clock.sleep)
    for i in range(5):
        await budget.acquire(2)
        budget.release(2, 2 * (i + 1))  # the server's X-MBX-USED-WEIGHT-1M
    assert clock.t == 1_700_000_050.0 and budget.used == 10
    await budget.acquire(2)  # needs the next window
    assert clock.t == pytest.approx(1_700_000_060.5)
    budget.release(2, 2)
    budget.pause(30)
    await budget.acquire(1)
    assert clock.t == pytest.approx(1_700_000_090.5)
    with pytest.raises(ConfigError, match="weight_limit too low"):
        await budget.acquire(11)
    limited = RateLimited("x", retry_after_s=1.5, banned=True)
    assert (limited.retry_after_s, limited.banned) == (1.5, True)


def _warm_cmd(url: str, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "warm", "--rest-url", url, "--store", str(store), "--top", "96", "--json", *extra]


async def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)  # polls for an event; no assertion depends on timing


async def test_sigkill_mid_warm_then_second_warm_completes(dataset: ReplayDataset, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(latency_ms=5)) as ex:
        for kill_after in (5, 60):
            proc = await asyncio.create_subprocess_exec(
                *_warm_cmd(ex.rest_url, store_dir, "--concurrency", "4"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
            )
            target = ex.stats.requests["/api/v3/klines"] + kill_after
            await _wait_for(lambda p=proc, n=target: ex.stats.requests["/api/v3/klines"] >= n or p.returncode is not None)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        proc = await asyncio.create_subprocess_exec(
            *_warm_cmd(ex.rest_url, store_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
        )
        _out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        with KlineStore(store_dir) as store:
            assert_store_equals_source(store, dataset, ex.clock.now_ms(), list(dataset.symbols), 1000)


async def test_two_concurrent_warms_one_waits(dataset: ReplayDataset, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(latency_ms=2)) as ex:
        procs = [
            await asyncio.create_subprocess_exec(
                *_warm_cmd(ex.rest_url, store_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
            )
            for _ in range(2)
        ]
        results = [await p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [r[1].decode() for r in results]
        assert ex.stats.requests["/api/v3/klines"] == 192  # the second found everything done
        with KlineStore(store_dir) as store:
            assert_store_equals_source(store, dataset, ex.clock.now_ms(), list(dataset.symbols), 1000)


async def test_lock_timeout_exits_4(dataset: ReplayDataset, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with KlineStore(store_dir) as store, store.writer_lock(1):
        proc = subprocess.run(
            [sys.executable, "-m", "cli.main", "warm", "--store", str(store_dir), "-s", "BTCUSDT", "--lock-timeout", "0",
             "--rest-url", "http://127.0.0.1:9"],
            capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ},
        )
    assert proc.returncode == 4 and f"pid {os.getpid()}" in proc.stderr
