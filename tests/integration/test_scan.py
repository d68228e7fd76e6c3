"""The scanner over a replay-warmed store: strategies agree, stale and short series, error isolation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SCAN_SYMBOLS
from trader.scan import STRATEGIES, Scanner, ScanParams
from trader.store.klines import KlineStore

HOUR = 3_600_000


@pytest.fixture
def store(warmed_store: tuple[Path, int], tmp_path: Path) -> KlineStore:
    path, _ = warmed_store
    shutil.copytree(path, tmp_path / "s")
    return KlineStore(tmp_path / "s")


def test_strategies_give_identical_scores(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    results = {}
    for strategy in STRATEGIES:
        with Scanner(store, ScanParams(), strategy=strategy, workers=2) as scanner:
            results[strategy] = scanner.scan(now_ms=now)
    base = {s.symbol: s for s in results["vectorized"].signals}
    assert sorted(base) == sorted(SCAN_SYMBOLS)
    for strategy, res in results.items():
        assert not res.errors and not res.stale and not res.insufficient, strategy
        for s in res.signals:
            b = base[s.symbol]
            assert s.direction == b.direction
            assert s.score == pytest.approx(b.score, abs=1e-9), (strategy, s.symbol)
            for k, v in s.factors.items():
                assert v == pytest.approx(b.factors[k], abs=1e-9)


def test_result_fields(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    with Scanner(store, ScanParams()) as scanner:
        res = scanner.scan(now_ms=now)
    scores = [s.score for s in res.signals]
    assert scores == sorted(scores, reverse=True) and all(0 <= x <= 100 for x in scores)
    btc = next(s for s in res.signals if s.symbol == "BTCUSDT")
    raw = store.load("BTCUSDT", "1h")
    assert btc.last_close == raw[4, -1] and btc.close_time_ms == int(raw[6, -1])
    assert btc.change_24h_pct == pytest.approx((raw[4, -1] / raw[4, -25] - 1) * 100)
    assert btc.data_age_s == pytest.approx((now - raw[6, -1]) / 1000)
    assert res.passing(101) == [] and len(res.passing(0)) == len(SCAN_SYMBOLS)


def test_stale_series_are_listed_not_scored(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    with Scanner(store, ScanParams(grace_ms=300_000)) as scanner:
        later = scanner.scan(now_ms=now + 2 * HOUR)  # 1h data two hours behind: stale; 4h still fresh
        assert later.signals == [] and {i for _, i, _, _ in later.stale} == {"1h"}
        assert len(later.stale) == len(SCAN_SYMBOLS)
        assert scanner.scan(now_ms=now + HOUR // 2).signals  # within one interval + grace: fine


def test_exchange_clock_from_last_warm(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    clock = store.clock()
    assert clock is not None and clock["server_ms"] == warmed_store[1]
    with Scanner(store, ScanParams()) as scanner:
        assert abs(scanner.exchange_now_ms() - warmed_store[1]) < 600_000  # judged on the replay clock, not 2026


def test_too_little_history_and_error_isolation(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    btc = store.load("BTCUSDT", "1h").T
    store.append("NEWUSDT", "1h", btc[-100:])  # only 100 klines: insufficient
    store.append("NEWUSDT", "4h", store.load("BTCUSDT", "4h").T)
    flat1 = btc[-300:].copy()
    flat1[:, 1:5] = 1.0  # a dead market: every price 1.0, ATR 0 -> non-finite factors
    store.append("FLATUSDT", "1h", flat1)
    flat4 = store.load("BTCUSDT", "4h").T[-300:].copy()
    flat4[:, 1:5] = 1.0
    store.append("FLATUSDT", "4h", flat4)
    for strategy in ("vectorized", "serial"):
        with Scanner(store, ScanParams(), strategy=strategy) as scanner:
            res = scanner.scan(now_ms=now)
        assert ("NEWUSDT", "1h", 100) in res.insufficient
        assert [s for s, _ in res.errors] == ["FLATUSDT"] and "non-finite" in res.errors[0][1]
        assert len(res.signals) == len(SCAN_SYMBOLS)  # everybody else still scored


def test_universe_needs_every_interval(store: KlineStore) -> None:
    store.append("ONLY1HUSDT", "1h", store.load("BTCUSDT", "1h").T)
    with Scanner(store, ScanParams()) as scanner:
        assert "ONLY1HUSDT" not in scanner.universe()
    with Scanner(store, ScanParams(intervals=("1h",))) as scanner:
        assert "ONLY1HUSDT" in scanner.universe()
    with pytest.raises(ValueError, match="unknown strategy"):
        Scanner(store, ScanParams(), strategy="gpu")
    assert np.isfinite(store.load("BTCUSDT", "1h")).all()
