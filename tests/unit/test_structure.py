"""Structure features on hand-built candle sequences."""

from __future__ import annotations

import numpy as np

from trader.features.structure import STRUCTURE_KEYS, structure_features, structure_series, swing_points


def candles(closes: list[float], wick: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c = np.array([closes], dtype=float)
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1)  # open = previous close
    h = np.maximum(o, c) + wick
    lo = np.minimum(o, c) - wick
    return o, h, lo, c


def test_swing_points_need_k_bars_each_side() -> None:
    _, h, lo, _ = candles([1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3])
    sh, sl = swing_points(h, lo, 2)
    assert np.flatnonzero(sh[0]).tolist() == [4]
    assert np.flatnonzero(sl[0]).tolist() == [8]
    assert not swing_points(h[:, :4], lo[:, :4], 2)[0].any()


def test_bullish_break_of_structure_and_order_block() -> None:
    # rally to a swing high at 10, pull back with down candles, then close above 10: bullish BOS
    closes = [5, 6, 7, 8, 10, 9, 8, 7, 6.5, 7, 8, 9, 10.2, 11, 11.5]
    o, h, lo, c = candles(closes, wick=0.1)
    f = structure_features(o, h, lo, c, swing_length=2)
    assert f["state"][0] == 1.0
    assert f["bars_since_bos"][0] == 2  # the close of 10.2 at index 12 broke the 10.1 swing high
    assert f["ob_bull"][0] == 1.0  # the last down candle before the break, never closed below
    assert f["ob_bear"][0] == 0.0


def test_order_block_is_mitigated_by_a_close_below_it() -> None:
    closes = [5, 6, 7, 8, 10, 9, 8, 7, 6.5, 7, 8, 9, 10.2, 11, 8, 6.0]
    o, h, lo, c = candles(closes, wick=0.1)
    f = structure_features(o, h, lo, c, swing_length=2)
    assert f["ob_bull"][0] == 0.0


def test_change_of_character() -> None:
    # up-break first, then a break of the swing low: bearish CHoCH
    closes = [5, 6, 7, 8, 10, 9, 8, 7, 6.5, 7, 8, 9, 10.2, 11, 10.5, 10, 9, 8, 7, 6, 5.5]
    o, h, lo, c = candles(closes, wick=0.1)
    f = structure_features(o, h, lo, c, swing_length=2)
    assert f["state"][0] == -1.0 and f["choch"][0] == 1.0


def test_fair_value_gaps_filled_and_unfilled() -> None:
    o = np.array([[10, 10.5, 13, 14, 14.5]])
    c = np.array([[10.5, 13, 14, 14.5, 15]])
    h = np.array([[10.6, 13.1, 14.2, 14.8, 15.2]])
    lo = np.array([[9.9, 10.4, 12.9, 13.9, 14.4]])  # candle 2's low 12.9 > candle 0's high 10.6: bullish FVG
    f = structure_features(o, h, lo, c, swing_length=1)
    assert f["fvg_bull"][0] >= 1.0 and f["fvg_bear"][0] == 0.0
    lo2 = np.concatenate([lo, [[10.0]]], axis=1)  # a later low back to 10.0 fills it
    f2 = structure_features(
        np.concatenate([o, [[15]]], axis=1), np.concatenate([h, [[15.1]]], axis=1), lo2, np.concatenate([c, [[10.2]]], axis=1), swing_length=1
    )
    assert f2["fvg_bull"][0] < f["fvg_bull"][0]


def test_liquidity_sweep_of_a_swing_high() -> None:
    closes = [5, 6, 7, 8, 10, 9, 8, 7, 8, 9, 9.5]
    o, h, lo, c = candles(closes, wick=0.1)
    h[0, -1] = 10.6  # wick above the 10.1 swing high ...
    c[0, -1] = 9.5  # ... but close back below it
    f = structure_features(o, h, lo, c, swing_length=2, sweep_bars=2)
    assert f["sweep"][0] == -1.0 and f["state"][0] == 0.0


def test_vectorised_over_symbols_equals_one_by_one() -> None:
    rng = np.random.default_rng(1)
    c = 100 + np.cumsum(rng.normal(0, 1, (6, 150)), axis=1)
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1)
    h = np.maximum(o, c) + rng.uniform(0, 0.5, c.shape)
    lo = np.minimum(o, c) - rng.uniform(0, 0.5, c.shape)
    together = structure_features(o, h, lo, c)
    for i in range(6):
        alone = structure_features(o[i : i + 1], h[i : i + 1], lo[i : i + 1], c[i : i + 1])
        for k in together:
            assert together[k][i] == alone[k][0], k


def _random_candles(n: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = 100 + np.cumsum(rng.normal(0, 1, (n, T)), axis=1)
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1) + rng.normal(0, 0.3, (n, T))
    h = np.maximum(o, c) + rng.uniform(0, 0.8, c.shape)
    lo = np.minimum(o, c) - rng.uniform(0, 0.8, c.shape)
    return o, h, lo, c


def test_series_is_causal_and_equals_the_last_kline_features_at_every_t() -> None:
    """The value at t is what a scan of klines <= t would see: prefixes give the same numbers."""
    o, h, lo, c = _random_candles(4, 260, 3)
    series = structure_series(o, h, lo, c, swing_length=3, window=60)
    for t in (20, 59, 60, 61, 150, 259):
        last = structure_features(o[:, : t + 1], h[:, : t + 1], lo[:, : t + 1], c[:, : t + 1], swing_length=3, window=60)
        for k in STRUCTURE_KEYS:
            np.testing.assert_array_equal(series[k][:, t], last[k], err_msg=f"{k} at {t}")


def test_wild_later_klines_change_nothing_before_them() -> None:
    o, h, lo, c = _random_candles(3, 300, 4)
    base = structure_series(o, h, lo, c)
    o2, h2, lo2, c2 = (x.copy() for x in (o, h, lo, c))
    rng = np.random.default_rng(9)
    wild = rng.uniform(1, 1000, (3, 100))
    o2[:, 200:], c2[:, 200:] = wild, wild[:, ::-1]
    h2[:, 200:] = np.maximum(o2[:, 200:], c2[:, 200:]) + 50
    lo2[:, 200:] = np.minimum(o2[:, 200:], c2[:, 200:]) - 50
    changed = structure_series(o2, h2, lo2, c2)
    for k in STRUCTURE_KEYS:
        np.testing.assert_array_equal(base[k][:, :200], changed[k][:, :200], err_msg=k)


def test_events_leave_the_window() -> None:
    closes = [5, 6, 7, 8, 10, 9, 8, 7, 6.5, 7, 8, 9, 10.2, 11, 11.5] + [11.5 + 0.01 * i for i in range(40)]
    o, h, lo, c = candles(closes, wick=0.1)
    s = structure_series(o, h, lo, c, swing_length=2, window=20)
    assert s["ob_bull"][0, 12] == 1.0 and s["state"][0, 12] == 1.0
    assert s["ob_bull"][0, 12 + 19] == 1.0 and s["ob_bull"][0, 12 + 20] == 0.0  # formed 20 klines ago: gone
    assert s["bos_bull"][0, 12 + 19] >= 1.0
