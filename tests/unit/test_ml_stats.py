"""Pure parts of trader.ml: statistics, walk-forward splits, labels, the triple barrier."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from trader.config import BarrierConfig
from trader.errors import ModelError
from trader.ml.dataset import barrier_returns, excess_over_median
from trader.ml.evaluate import block_bootstrap_ci, newey_west_t, nw_lags, rank_ic
from trader.ml.splits import walk_forward

H = 3_600_000


def test_rank_ic_is_spearman_per_moment_with_nans_and_ties() -> None:
    rng = np.random.default_rng(0)
    sig = rng.normal(size=(30, 50))
    sig[:, 7] = np.round(sig[:, 7])  # ties
    fwd = 0.3 * sig + rng.normal(size=sig.shape)
    sig[3, 10] = np.nan
    fwd[5, 11] = np.nan
    ic = rank_ic(sig, fwd)
    for j in (0, 7, 10, 11, 49):
        ok = np.isfinite(sig[:, j]) & np.isfinite(fwd[:, j])
        assert ic[j] == pytest.approx(spearmanr(sig[ok, j], fwd[ok, j]).statistic, abs=1e-12)
    assert np.isnan(rank_ic(sig[:5], fwd[:5])).all()  # too few symbols


def test_newey_west_equals_the_naive_t_without_lags_and_shrinks_with_overlap() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.1, 1.0, 2000)
    m, t0 = newey_west_t(x, 0)
    naive = x.mean() / (x.std() / math.sqrt(x.size))
    assert m == pytest.approx(x.mean()) and t0 == pytest.approx(naive, rel=1e-9)
    overlapped = np.convolve(x, np.ones(6) / 6, "valid")  # 6-step overlapping means: autocorrelated
    _, t_naive = newey_west_t(overlapped, 0)
    _, t_nw = newey_west_t(overlapped, 6)
    assert abs(t_nw) < abs(t_naive) / 1.8


def test_newey_west_t_of_overlapping_noise_is_rarely_significant() -> None:
    """24 h labels every 4 h overlap 6 moments; with nw_lags (12) pure noise is 'significant' ~7 % of the time."""
    rng = np.random.default_rng(2)
    lags = nw_lags("24h", "4h")
    assert lags == 12
    ts = [newey_west_t(np.convolve(rng.normal(size=1000), np.ones(6), "valid"), lags)[1] for _ in range(400)]
    assert np.mean(np.abs(ts) > 1.96) < 0.10


def test_block_bootstrap_interval_covers_the_mean_and_widens_with_block_correlation() -> None:
    rng = np.random.default_rng(3)
    weeks = np.repeat(np.arange(40), 50)
    iid = rng.normal(size=weeks.size)
    lo, hi = block_bootstrap_ci(iid, weeks, 1000, rng)
    assert lo < iid.mean() < hi
    shocked = iid + np.repeat(rng.normal(size=40), 50)  # one common shock per week
    lo2, hi2 = block_bootstrap_ci(shocked, weeks, 1000, rng)
    assert (hi2 - lo2) > 3 * (hi - lo)
    assert all(math.isnan(v) for v in block_bootstrap_ci(iid[:50], weeks[:50], 100, rng))  # one block


def test_walk_forward_purges_and_embargoes() -> None:
    moments = np.arange(0, 600) * 4 * H
    folds = walk_forward(moments, 4, min_train_fraction=0.4, purge_ms=24 * H, embargo_ms=24 * H, valid_fraction=0.15)
    assert len(folds) == 4
    tested = np.concatenate([f.test for f in folds])
    assert np.array_equal(tested, np.arange(240, 600))  # every moment after the first 40 % tested once
    for f in folds:
        t_start = moments[f.test[0]]
        assert moments[f.valid[-1]] + 48 * H <= t_start  # purge + embargo before the test
        assert moments[f.fit[-1]] + 24 * H <= moments[f.valid[0]]  # purge between fit and validation
        assert f.fit[0] == 0 and f.valid.size >= 1
    with pytest.raises(ModelError):
        walk_forward(moments[:10], 8, min_train_fraction=0.4, purge_ms=24 * H, embargo_ms=0, valid_fraction=0.15)


def test_excess_is_relative_to_the_median_of_the_moment() -> None:
    r = np.array([[0.01, 0.05], [0.02, np.nan], [0.06, -0.01]])
    ex = excess_over_median(r)
    assert ex[:, 0].tolist() == pytest.approx([-0.01, 0.0, 0.04])
    assert ex[0, 1] == pytest.approx(0.03) and np.isnan(ex[1, 1])


def test_triple_barrier_stop_first_take_profit_and_time_limit() -> None:
    T = 8
    close = np.full((4, T), 100.0)
    high = np.full((4, T), 100.5)
    low = np.full((4, T), 99.5)
    atr = np.full((4, T), 0.01)  # 1 % ATR: tp 2 %, sl 1 %
    high[0, 2] = 102.5  # row 0: take profit at kline 2
    low[1, 2], high[1, 2] = 98.5, 103.0  # row 1: both in one kline -> the stop wins
    close[2, 4] = 100.4  # row 2: neither barrier: the return at the time limit (3 klines)
    low[3, 1] = 98.9  # row 3: stop at kline 1
    idx = np.array([[0], [0], [1], [0]])
    out = barrier_returns(close, high, low, atr, idx, 3, BarrierConfig(take_profit_atr=2, stop_loss_atr=1), fee=0.001)
    assert out[:, 0].tolist() == pytest.approx([0.02 - 0.002, -0.01 - 0.002, 0.004 - 0.002, -0.01 - 0.002])
    assert np.isnan(barrier_returns(close, high, low, atr, np.array([[6]]), 3, BarrierConfig(), 0.0)).all()  # runs past the data


def test_cross_sectional_rank_equals_scipy_with_ties_nans_and_a_minimum_cross_section() -> None:
    from scipy.stats import rankdata

    from trader.features.matrix import MIN_CROSS_SECTION, cross_sectional_rank

    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 30, 6)).astype(np.float32)
    X[:, :, 2] = np.round(X[:, :, 2])  # a discrete feature: many ties
    X[rng.random(X.shape) < 0.05] = np.nan
    valid = rng.random((40, 30)) > 0.1
    valid[MIN_CROSS_SECTION - 1 :, 0] = False  # moment 0: too few symbols
    got = cross_sectional_rank(X, valid)
    ok = np.isfinite(X) & valid[..., None]
    ref = np.where(ok, rankdata(np.where(ok, X, np.nan), axis=0, nan_policy="omit") / ok.sum(axis=0, keepdims=True), np.nan)
    ref[:, 0] = np.nan
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got.dtype == np.float32 and np.nanmax(got) <= 1.0 and np.nanmin(got) > 0.0
