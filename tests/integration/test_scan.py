"""The scanner over a replay-warmed store: strategies agree, stale and short series, error isolation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SCAN_SYMBOLS
from trader.config import ScanConfig
from trader.errors import ConfigError
from trader.models import CLOSE, CLOSE_TIME, HIGH, LOW, OPEN
from trader.scan import STRATEGIES, Scanner
from trader.store.klines import KlineStore

HOUR = 3_600_000
IVS = ("1h", "4h")


def cfg(**kw: object) -> ScanConfig:
    return ScanConfig(**kw)  # type: ignore[arg-type]


@pytest.fixture
def store(warmed_store: tuple[Path, int], tmp_path: Path) -> KlineStore:
    path, _ = warmed_store
    shutil.copytree(path, tmp_path / "s")
    return KlineStore(tmp_path / "s")


def test_strategies_give_identical_scores(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    results = {}
    for strategy in STRATEGIES:
        with Scanner(store, cfg(strategy=strategy, workers=2), IVS) as scanner:
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
    with Scanner(store, cfg(), IVS) as scanner:
        res = scanner.scan(now_ms=now)
    scores = [s.score for s in res.signals]
    assert scores == sorted(scores, reverse=True) and all(0 <= x <= 100 for x in scores)
    btc = next(s for s in res.signals if s.symbol == "BTCUSDT")
    raw = store.load("BTCUSDT", "1h")
    assert btc.last_close == raw[CLOSE, -1] and btc.close_time_ms == int(raw[CLOSE_TIME, -1])
    assert btc.change_24h_pct == pytest.approx((raw[CLOSE, -1] / raw[CLOSE, -25] - 1) * 100)
    assert btc.data_age_s == pytest.approx((now - raw[CLOSE_TIME, -1]) / 1000)
    assert res.passing(101) == [] and len(res.passing(0)) == len(SCAN_SYMBOLS)


def test_stale_series_are_listed_not_scored(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    with Scanner(store, cfg(grace_s=300.0), IVS) as scanner:
        later = scanner.scan(now_ms=now + 2 * HOUR)  # 1h data two hours behind: stale; 4h still fresh
        assert later.signals == [] and {i for _, i, _, _ in later.stale} == {"1h"}
        assert len(later.stale) == len(SCAN_SYMBOLS)
        assert scanner.scan(now_ms=now + HOUR // 2).signals  # within one interval + grace: fine


def test_exchange_clock_from_last_warm(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    clock = store.clock()
    assert clock is not None and clock["server_ms"] == warmed_store[1]
    with Scanner(store, cfg(), IVS) as scanner:
        assert abs(scanner.exchange_now_ms() - warmed_store[1]) < 600_000  # judged on the replay clock, not 2026


def test_too_little_history_and_error_isolation(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    now = warmed_store[1]
    btc = store.load("BTCUSDT", "1h")
    store.append("NEWUSDT", "1h", btc[:, -100:])  # only 100 klines: insufficient
    store.append("NEWUSDT", "4h", store.load("BTCUSDT", "4h"))
    prices = [OPEN, HIGH, LOW, CLOSE]
    flat1 = btc[:, -300:].copy()
    flat1[prices] = 1.0  # a dead market: every price 1.0, ATR 0 -> non-finite factors
    store.append("FLATUSDT", "1h", flat1)
    flat4 = store.load("BTCUSDT", "4h")[:, -300:].copy()
    flat4[prices] = 1.0
    store.append("FLATUSDT", "4h", flat4)
    for strategy in ("vectorized", "serial"):
        with Scanner(store, cfg(strategy=strategy), IVS) as scanner:
            res = scanner.scan(now_ms=now)
        assert ("NEWUSDT", "1h", 100) in res.insufficient
        assert [s for s, _ in res.errors] == ["FLATUSDT"] and "non-finite" in res.errors[0][1]
        assert len(res.signals) == len(SCAN_SYMBOLS)  # everybody else still scored


def test_universe_needs_every_interval(store: KlineStore) -> None:
    store.append("ONLY1HUSDT", "1h", store.load("BTCUSDT", "1h"))
    with Scanner(store, cfg(), IVS) as scanner:
        assert "ONLY1HUSDT" not in scanner.universe()
    with Scanner(store, cfg(), ("1h",)) as scanner:
        assert "ONLY1HUSDT" in scanner.universe()
    with pytest.raises(ConfigError, match="at least one interval"):
        Scanner(store, cfg(), ())
    assert np.isfinite(store.load("BTCUSDT", "1h")).all()


def test_blocks_give_the_same_scores_as_one_pass(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    """Processing the universe in blocks (bounded memory) changes nothing in the result."""
    now = warmed_store[1]
    with Scanner(store, cfg(), IVS) as one, Scanner(store, cfg(block_symbols=3), IVS) as blocks:
        a, b = one.scan(now_ms=now), blocks.scan(now_ms=now)
    assert [(s.symbol, s.score) for s in a.signals] == [(s.symbol, s.score) for s in b.signals]


def test_talib_scorer_agrees_with_the_vectorized_core(store: KlineStore, warmed_store: tuple[Path, int]) -> None:
    """The compare baseline (a serial TA-Lib loop) computes the very same score."""
    pytest.importorskip("talib")
    from trader.compare import talib_scores
    from trader.models import OHLCVQ

    now = warmed_store[1]
    with Scanner(store, cfg(), IVS) as scanner:
        ours = {s.symbol: s.score for s in scanner.scan(now_ms=now).signals}
    per = [[store.load(s, i, limit=300)[list(OHLCVQ)] for i in IVS] for s in SCAN_SYMBOLS]
    ref = talib_scores(per, cfg())
    assert np.allclose(ref, [ours[s] for s in SCAN_SYMBOLS], atol=1e-6)
