"""Faults from the replay's fault flags, against the real client and store: no ban at 2-5 % forced
429s (10 seeds each), completion with exact data at a 50 % 5xx rate and under long latency, and the
same through the CLI. Virtual time (a shared fake clock for the venue's windows and the client's
waits) keeps the in-process runs fast; the CLI run is real time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FakeClock
from tests.integration.test_warm import ROOT, assert_store_equals_source, client_for
from trader.config import FaultConfig
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.warm import warm

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "FILUSDT", "BCHUSDT", "PEOPLEUSDT"]


@pytest.mark.parametrize("rate", [0.02, 0.05])
async def test_forced_429s_never_earn_a_ban(dataset: ReplayDataset, tmp_path: Path, rate: float) -> None:
    symbols = list(dataset.symbols)
    for seed in range(10):
        clock = FakeClock()
        faults = FaultConfig(rate_429=rate, seed=seed)
        async with ReplayExchange(dataset, port=0, speed=0, faults=faults, weight_clock=clock) as ex:
            with KlineStore(tmp_path / f"{rate}-{seed}") as store:
                async with client_for(ex, clock) as client:
                    report = await warm(client, store, symbols, ["1h", "4h"], depth=300, deadline_s=900)
                assert ex.stats.statuses[418] == 0, (rate, seed)
                assert ex.stats.statuses[429] >= 1 and report.errors == [], (rate, seed, report.errors[:2])
                assert client.inflight.lowest < client.inflight.maximum  # concurrency adapted down
        if seed == 0:
            with KlineStore(tmp_path / f"{rate}-0") as store:
                assert_store_equals_source(store, dataset, ex.clock.now_ms(), symbols, 300)


async def test_half_the_requests_failing_still_completes_exactly(dataset: ReplayDataset, tmp_path: Path) -> None:
    clock = FakeClock()
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(error_rate=0.5, seed=7), weight_clock=clock) as ex:
        with KlineStore(tmp_path) as store:
            symbols = list(dataset.symbols)  # the audit's case: 101 of these 192 series used to fail
            async with client_for(ex, clock, breaker_cooldown_s=30) as client:
                report = await warm(client, store, symbols, ["1h", "4h"], depth=300, deadline_s=3600)
            assert report.errors == [] and ex.stats.statuses[500] > 100 and report.retries > 100
            assert_store_equals_source(store, dataset, ex.clock.now_ms(), symbols, 300)


async def test_long_latency_and_jitter_complete(dataset: ReplayDataset, tmp_path: Path) -> None:
    """Responses slower than the client's timeout for a third of the requests: retried, waited, complete."""
    faults = FaultConfig(latency_ms=100, jitter_ms=600, seed=3)
    async with ReplayExchange(dataset, port=0, speed=0, faults=faults) as ex:
        with KlineStore(tmp_path) as store:
            async with client_for(ex, timeout_s=0.5, breaker_cooldown_s=0.5, backoff_base_s=0.01) as client:
                report = await warm(client, store, SYMBOLS[:4], ["1h", "4h"], depth=300, deadline_s=120)
            assert report.errors == [] and report.retries + report.series_retries > 0
            assert_store_equals_source(store, dataset, ex.clock.now_ms(), SYMBOLS[:4], 300)


async def test_cli_warm_at_2_percent_429_is_not_banned(dataset: ReplayDataset, tmp_path: Path) -> None:
    """The audit's case through the CLI: `trader replay --rate-429 0.02`, `trader warm --top 96`."""
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(rate_429=0.02, seed=1)) as ex:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "warm", "--rest-url", ex.rest_url, "--store", str(tmp_path / "s"),
            "--top", "96", "--klines", "300", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-400:]
        report = json.loads(out)
        assert report["errors"] == [] and report["rate_limited"] >= 1
        assert ex.stats.statuses[418] == 0


def test_replay_refuses_bad_speed_and_clock_combinations() -> None:
    for args in (["--speed", "inf"], ["--speed", "1e9"], ["--clock", "wall", "--speed", "60"], ["--clock", "lunar"]):
        p = subprocess.run([sys.executable, "-m", "cli.main", "replay", "--port", "0", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert p.returncode == 2 and p.stderr.startswith("trader: error:") and "Traceback" not in p.stderr, (args, p.stderr)


async def test_deadline_ends_a_warm_on_a_too_slow_exchange_with_a_summary(dataset: ReplayDataset, tmp_path: Path) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(latency_ms=1500)) as ex:
        p = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli.main", "warm", "--rest-url", ex.rest_url, "--store", str(tmp_path / "s"),
             "-s", ",".join(SYMBOLS), "--concurrency", "2", "--deadline", "2", "--json"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
    assert p.returncode == 3, p.stderr[-300:]
    report = json.loads(p.stdout)  # the summary of what was stored is still printed
    assert report["errors"] and all("deadline" in e["message"] for e in report["errors"])
    assert report["seconds"] < 6 and report["candles_added"] == 1000 * (len(SYMBOLS) * 2 - len(report["errors"]))
