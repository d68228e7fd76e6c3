"""Indicator parity with TA-Lib (batch reference), incremental == batch, and the recurrence kernel."""

from __future__ import annotations

import numpy as np
import pytest

from trader.config import IndicatorConfig
from trader.features import indicators as ind
from trader.models import OHLCVQ
from trader.replay.dataset import ReplayDataset

talib = pytest.importorskip("talib")

SYMBOLS = ["BTCUSDT", "ETHUSDT", "DOGEUSDT", "HOTUSDT", "DENTUSDT", "SOLUSDT", "YFIUSDT"]


def _stack(ds: ReplayDataset, interval: str, n: int = 400) -> tuple[np.ndarray, ...]:
    return tuple(np.stack([ds.series(s, interval).values[r, -n:] for s in SYMBOLS]) for r in OHLCVQ)


def _talib(fn, *arrays, **kw):  # type: ignore[no-untyped-def]
    outs = [fn(*(a[i] for a in arrays), **kw) for i in range(arrays[0].shape[0])]
    if isinstance(outs[0], tuple):
        return tuple(np.stack(z) for z in zip(*outs, strict=True))
    return np.stack(outs)


def _same(ours: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), "warm-up lengths differ from TA-Lib"
    m = ~np.isnan(ref)
    denom = np.abs(ref) if scale is None else np.broadcast_to(scale, ref.shape)
    rel = np.abs(ours[m] - ref[m]) / np.maximum(denom[m], 1e-300)
    assert rel.max() <= 1e-9, rel.max()


@pytest.fixture(scope="module", params=["1h", "4h"])
def bars(request: pytest.FixtureRequest, dataset: ReplayDataset) -> tuple[np.ndarray, ...]:
    return _stack(dataset, request.param)


def test_ema_rsi_atr(bars: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, _, _ = bars
    for n in (9, 20, 50):
        _same(ind.ema(c, n), _talib(talib.EMA, c, timeperiod=n))
    _same(ind.rsi(c, 14), _talib(talib.RSI, c, timeperiod=14))
    _same(ind.atr(h, lo, c, 14), _talib(talib.ATR, h, lo, c, timeperiod=14))


def test_macd(bars: tuple[np.ndarray, ...]) -> None:
    c = bars[3]
    ours = ind.macd(c, 12, 26, 9)
    ref = _talib(talib.MACD, c, fastperiod=12, slowperiod=26, signalperiod=9)
    scale = c.mean(axis=1, keepdims=True)  # MACD lines cross zero: judge relative to the price level
    for o, r in zip(ours, ref, strict=True):
        _same(o, r, scale)


def test_bbands_adx_obv(bars: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, v, _ = bars
    upper, middle, lower = _talib(talib.BBANDS, c, timeperiod=20, nbdevup=2, nbdevdn=2)
    _same(ind.bbands_width(c, 20, 2.0), (upper - lower) / middle)
    _same(ind.adx(h, lo, c, 14), _talib(talib.ADX, h, lo, c, timeperiod=14))
    _same(ind.obv(c, v), _talib(talib.OBV, c, v))


def test_volume_and_obv_slope_compositions(bars: tuple[np.ndarray, ...]) -> None:
    _, _, _, c, v, _ = bars
    ref = (v - _talib(talib.SMA, v, timeperiod=20)) / _talib(talib.STDDEV, v, timeperiod=20)
    _same(ind.volume_zscore(v, 20), ref)
    slope = _talib(talib.LINEARREG_SLOPE, _talib(talib.OBV, c, v), timeperiod=20) / _talib(talib.SMA, v, timeperiod=20)
    _same(ind.obv_slope(c, v, 20), slope, np.nanmax(np.abs(slope), axis=1, keepdims=True))


def test_vwap_distance_by_definition(bars: tuple[np.ndarray, ...]) -> None:
    _, _, _, c, v, q = bars
    d = ind.vwap_distance(c, v, q, 24)
    t = 300
    expected = c[:, t] / (q[:, t - 23 : t + 1].sum(axis=1) / v[:, t - 23 : t + 1].sum(axis=1)) - 1
    assert np.allclose(d[:, t], expected, rtol=1e-12)


def test_compute_all_equals_individual_functions(bars: tuple[np.ndarray, ...]) -> None:
    o, h, lo, c, v, q = bars
    allv = ind.compute_all(o, h, lo, c, v, q)
    _same(allv["rsi"], ind.rsi(c, 14))
    _same(allv["adx"], ind.adx(h, lo, c, 14))
    _same(allv["macd_hist"], ind.macd(c)[2], c.mean(axis=1, keepdims=True))
    last5 = ind.compute_all(o, h, lo, c, v, q, last=5)
    for k, val in last5.items():
        if not k.startswith("state_"):
            assert np.allclose(val, allv[k][:, -5:], rtol=1e-9, atol=0, equal_nan=True), k


@pytest.mark.parametrize("length", [400, 120, 60])
def test_compute_last_equals_compute_all_and_talib(bars: tuple[np.ndarray, ...], length: int) -> None:
    """The scan's fast path (last values from cached weights) is the batch reference's last column."""
    arrays = tuple(np.ascontiguousarray(a[:, -length:]) for a in bars)
    _, h, lo, c, _, _ = arrays
    ref = ind.compute_all(*arrays, last=50)
    got = ind.compute_last(*arrays)
    for k, val in got.items():
        r = ref[k] if (k.startswith("state_") or k == "bb_width") else ref[k][:, -1]
        assert np.array_equal(np.isnan(val), np.isnan(r)), k
        scale = np.maximum(np.abs(r), 1e-9 * np.abs(c[:, -1:] if r.ndim == 2 else c[:, -1]))
        m = ~np.isnan(r)
        assert np.all(np.abs(val - r)[m] <= 1e-9 * scale[m]), (k, float(np.nanmax(np.abs(val - r) / scale)))
    adx = _talib(talib.ADX, h, lo, c, timeperiod=14)[:, -1]
    assert np.allclose(got["adx"], adx, rtol=1e-9, atol=0)
    sig = _talib(talib.MACD, c, fastperiod=12, slowperiod=26, signalperiod=9)[1][:, -1]
    assert np.allclose(got["macd_signal"], sig, rtol=0, atol=1e-9 * float(c.mean()))


def test_compute_last_handles_flat_prices_like_talib() -> None:
    """A flat stretch makes DX undefined; TA-Lib then leaves ADX unchanged for that step (as we do)."""
    rng = np.random.default_rng(3)
    c = 100 + np.cumsum(rng.normal(0, 1, (3, 200)), axis=1)
    c[:, 100:130] = c[:, 99:100]
    h, lo = c + 0.5, c - 0.5
    h[:, 100:130] = lo[:, 100:130] = c[:, 100:130]
    o, v = c.copy(), np.full_like(c, 10.0)
    got = ind.compute_last(o, h, lo, c, v, v * c)
    assert np.allclose(got["adx"], _talib(talib.ADX, h, lo, c, timeperiod=14)[:, -1], rtol=1e-9)


def test_incremental_equals_batch(bars: tuple[np.ndarray, ...]) -> None:
    o, h, lo, c, v, q = bars
    split = 250
    state = ind.IndicatorState.from_history(o[:, :split], h[:, :split], lo[:, :split], c[:, :split], v[:, :split], q[:, :split])
    batch = ind.compute_all(o, h, lo, c, v, q)
    for t in range(split, c.shape[1]):
        values = state.update(h[:, t], lo[:, t], c[:, t], v[:, t], q[:, t])
        for k, val in values.items():
            ref = batch[k][:, t]
            scale = np.maximum(np.abs(ref), 1e-9 * np.abs(c[:, t]))
            assert np.all(np.abs(val - ref) <= 1e-9 * scale), (k, t)


def test_linear_recurrence_seed_and_nan_prefix() -> None:
    x = np.arange(10, dtype=float)[None, :]
    (y,) = ind.linear_recurrence([ind.Recurrence(x, 0.5, 1.0, 3, np.array([100.0]))])
    assert np.isnan(y[0, :3]).all() and y[0, 3] == 100.0 and y[0, 4] == 0.5 * 100 + 4
    assert IndicatorConfig().warmup >= 50
