"""Technical indicators for every symbol at once, on ``(n_symbols, n_klines)`` float64 arrays.

Every batch function takes 2-D arrays (one row per series, oldest kline first) and returns arrays
of the same shape, NaN during the warm-up, with TA-Lib's exact definitions and seeding (TA-Lib
0.6 C sources, ``ta_func/ta_*.c``), so values match ``talib`` to 1e-9 relative (tests):

==================  ======================================================  ================
function            definition                                              first value at
==================  ======================================================  ================
ema(x, n)           SMA(x[0:n]) seed, then y += 2/(n+1) * (x - y)           n - 1
rsi(c, n)           Wilder averages of gains/losses; 100 g / (g + l)        n
atr(h, l, c, n)     SMA of true range seed, then Wilder (n-1)/n             n
macd(c, f, s, g)    EMA_f seeded at s-1 on c[s-f:s], EMA_s, signal EMA_g    s + g - 2
bbands_width(c, n)  (upper - lower) / middle = 2 k σ / SMA, σ population    n - 1
adx(h, l, c, n)     Wilder-summed ±DM and TR -> DI, DX; ADX Wilder average  2 n - 1
obv(c, v)           running ± volume by close direction, obv[0] = v[0]      0
==================  ======================================================  ================

plus three that TA-Lib composes or lacks: ``volume_zscore`` = (v - SMA(v, n)) / STDDEV(v, n),
``obv_slope`` = LINEARREG_SLOPE(OBV, n) / SMA(v, n) (OBV change per kline, in average volumes),
``vwap_distance`` = close / (Σ quote_volume / Σ volume over n klines) - 1 (a fraction).

Speed: the recursive indicators (EMA, Wilder averages and sums) are all ``y[t] = a y[t-1] + b x[t]``.
:func:`linear_recurrence` runs any number of them — different indicators, periods and seeds, every
symbol — as the columns of one ``(n_klines, m)`` matrix, so one Python loop over time does
``O(n_klines)`` numpy calls on ``m``-vectors instead of ``O(n_symbols x n_indicators)`` C calls.

:class:`IndicatorState` keeps the same quantities up to date in O(1) per closed kline (per series,
vectorised over series) for the live cache; batch and incremental agree to 1e-9.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trader.config import IndicatorConfig

__all__ = [
    "IndicatorState",
    "adx",
    "atr",
    "bbands_width",
    "compute_all",
    "compute_last",
    "ema",
    "linear_recurrence",
    "macd",
    "obv",
    "obv_slope",
    "rsi",
    "true_range",
    "volume_zscore",
    "vwap_distance",
]

_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO threshold
_DEFAULT = IndicatorConfig()


@dataclass(frozen=True)
class Recurrence:
    """One recursive series ``y[t] = a * y[t-1] + b * x[t]`` for ``t > start``; ``y[start] = seed``.

    Attributes:
        x: ``(n, T)`` inputs.
        a, b: coefficients (scalars), or ``(n, T)`` arrays for time-varying ones.
        start: index of the seed (same for every row).
        seed: ``(n,)`` value at ``start``.
    """

    x: np.ndarray
    a: float | np.ndarray
    b: float | np.ndarray
    start: int
    seed: np.ndarray


def linear_recurrence(specs: list[Recurrence]) -> list[np.ndarray]:
    """Run several linear recurrences in one pass over time.

    Columns whose coefficients are constant use an ``(m,)`` coefficient vector (2 numpy calls per
    kline for all columns); a time-varying ``a`` (ADX skipping a zero-DX kline, as TA-Lib does)
    switches that pass to an ``(T, m)`` matrix.

    Args:
        specs: recurrences with ``(n_i, T)`` inputs (same ``T`` for all).

    Returns:
        One ``(n_i, T)`` array per spec, NaN before its ``start``.
    """
    if not specs:
        return []
    T = specs[0].x.shape[1]
    widths = [s.x.shape[0] for s in specs]
    m = sum(widths)
    varying = any(not np.isscalar(s.a) for s in specs)
    A = np.zeros((T, m)) if varying else np.zeros(m)
    BX = np.zeros((T, m))
    col = 0
    t0 = T
    for s, w in zip(specs, widths, strict=True):
        sl = slice(col, col + w)
        if s.start < T:
            if varying:
                A[s.start + 1 :, sl] = s.a if np.isscalar(s.a) else np.asarray(s.a).T[s.start + 1 :]
            else:
                A[sl] = s.a
            b = s.b if np.isscalar(s.b) else np.asarray(s.b).T[s.start + 1 :]
            np.multiply(s.x.T[s.start + 1 :], b, out=BX[s.start + 1 :, sl])
            BX[s.start, sl] = s.seed
        t0 = min(t0, s.start)
        col += w
    out = BX  # computed in place: row t becomes y[t] = a * y[t-1] + b x[t] (rows before a start stay 0)
    tmp = np.empty(m)
    for t in range(t0 + 1, T):
        np.multiply(A[t] if varying else A, out[t - 1], out=tmp)
        np.add(out[t], tmp, out=out[t])
    results = []
    col = 0
    for s, w in zip(specs, widths, strict=True):
        out[: min(s.start, T), col : col + w] = np.nan
        results.append(out[:, col : col + w].T)  # a view: no (T, m) copy; callers slice what they keep
        col += w
    return results


# ---------------------------------------------------------------- building blocks (pure)


def _sma_at(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """Mean of ``x[:, start-n+1 : start+1]`` — a seed value per row."""
    seed: np.ndarray = x[:, start - n + 1 : start + 1].mean(axis=1)
    return seed


def _rolling(x: np.ndarray, n: int) -> np.ndarray:
    """``(rows, T - n + 1, n)`` windows view."""
    return sliding_window_view(x, n, axis=1)


def _pad(values: np.ndarray, T: int) -> np.ndarray:
    out = np.full((values.shape[0], T), np.nan)
    out[:, T - values.shape[1] :] = values
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """TA-Lib TRANGE: max(h - l, |h - c[t-1]|, |l - c[t-1]|); NaN at t = 0. Shapes ``(n, T)``."""
    prev = close[:, :-1]
    h, lo = high[:, 1:], low[:, 1:]
    tr = np.maximum(h - lo, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
    return np.concatenate([np.full((high.shape[0], 1), np.nan), tr], axis=1)


def _ema_spec(x: np.ndarray, n: int, start: int | None = None) -> Recurrence:
    start = n - 1 if start is None else start
    k = 2.0 / (n + 1)
    return Recurrence(x, 1.0 - k, k, start, _sma_at(x, start, n))


def _rsi_specs(close: np.ndarray, n: int) -> tuple[Recurrence, Recurrence]:
    diff = np.diff(close, axis=1, prepend=np.nan)
    gain = np.where(diff > 0, diff, 0.0)
    loss = np.where(diff < 0, -diff, 0.0)
    return (
        Recurrence(gain, (n - 1) / n, 1.0 / n, n, gain[:, 1 : n + 1].mean(axis=1)),
        Recurrence(loss, (n - 1) / n, 1.0 / n, n, loss[:, 1 : n + 1].mean(axis=1)),
    )


def _rsi_from(g: np.ndarray, lo: np.ndarray) -> np.ndarray:
    s = g + lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(s) < _ZERO, np.where(np.isnan(s), np.nan, 0.0), 100.0 * g / s)


def _atr_spec(tr: np.ndarray, n: int) -> Recurrence:
    return Recurrence(tr, (n - 1) / n, 1.0 / n, n, tr[:, 1 : n + 1].mean(axis=1))


def _dm(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dp = np.diff(high, axis=1, prepend=np.nan)
    dm = -np.diff(low, axis=1, prepend=np.nan)
    plus = np.where((dp > 0) & (dp > dm), dp, 0.0)
    minus = np.where((dm > 0) & (dp < dm), dm, 0.0)
    plus[:, 0] = minus[:, 0] = np.nan
    return plus, minus


def _adx_sum_specs(high: np.ndarray, low: np.ndarray, tr: np.ndarray, n: int) -> list[Recurrence]:
    plus, minus = _dm(high, low)
    a = 1.0 - 1.0 / n
    return [Recurrence(v, a, 1.0, n - 1, v[:, 1:n].sum(axis=1)) for v in (plus, minus, tr)]


def _dx(sp: np.ndarray, sm: np.ndarray, st: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DX and a mask of where TA-Lib computes it (TR and DI sums not ~0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        pdi = 100.0 * sp / st
        mdi = 100.0 * sm / st
        s = pdi + mdi
        ok = (np.abs(st) >= _ZERO) & (np.abs(s) >= _ZERO)
        dx = np.where(ok, 100.0 * np.abs(mdi - pdi) / s, 0.0)
    return dx, ok


def _adx_spec(dx: np.ndarray, ok: np.ndarray, n: int) -> Recurrence:
    start = 2 * n - 1
    seed = dx[:, n : start + 1].sum(axis=1) / n  # TA-Lib: sumDX / period, zero-DX steps add nothing
    a = np.where(ok, (n - 1) / n, 1.0)
    b = np.where(ok, 1.0 / n, 0.0)
    return Recurrence(dx, a, b, start, seed)


# ---------------------------------------------------------------- public batch functions


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """TA-Lib EMA. ``x``: ``(n_series, T)``; returns the same shape, NaN before index ``n - 1``."""
    return linear_recurrence([_ema_spec(x, n)])[0]


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """TA-Lib RSI (Wilder, 0-100). NaN before index ``n``."""
    g, lo = linear_recurrence(list(_rsi_specs(close, n)))
    return _rsi_from(g, lo)


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """TA-Lib ATR, in price units. NaN before index ``n``."""
    return linear_recurrence([_atr_spec(true_range(high, low, close), n)])[0]


def macd(close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TA-Lib MACD: ``(macd, signal, hist)``, each NaN before index ``slow + signal - 2``."""
    start = slow - 1
    f, s = linear_recurrence([_ema_spec(close, fast, start), _ema_spec(close, slow, start)])
    line = f - s
    sig = linear_recurrence([_ema_spec(line[:, start:], signal)])[0]
    sig = _pad(sig, close.shape[1])
    line = line.copy()
    line[:, : start + signal - 1] = np.nan
    return line, sig, line - sig


def bbands_width(close: np.ndarray, n: int = 20, k: float = 2.0) -> np.ndarray:
    """Bollinger band width as a fraction of the middle band: ``2 k σ / SMA`` (TA-Lib BBANDS, SMA, σ population)."""
    w = _rolling(close, n)
    mid = w.mean(axis=-1)
    sd = w.std(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _pad(2.0 * k * sd / mid, close.shape[1])


def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """TA-Lib ADX (0-100). NaN before index ``2 n - 1``."""
    sp, sm, st = linear_recurrence(_adx_sum_specs(high, low, true_range(high, low, close), n))
    dx, ok = _dx(sp, sm, st)
    return linear_recurrence([_adx_spec(dx, ok, n)])[0]


def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """TA-Lib OBV: ``obv[0] = v[0]``, then ± v by the sign of the close change (base-asset units)."""
    sign = np.sign(np.diff(close, axis=1))
    steps = np.concatenate([volume[:, :1], sign * volume[:, 1:]], axis=1)
    return np.cumsum(steps, axis=1)


def volume_zscore(volume: np.ndarray, n: int = 20) -> np.ndarray:
    """``(v - SMA(v, n)) / STDDEV(v, n)`` (population σ); 0 where σ is 0. NaN before ``n - 1``."""
    w = _rolling(volume, n)
    mean = w.mean(axis=-1)
    sd = w.std(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sd > 0, (volume[:, n - 1 :] - mean) / sd, 0.0)
    return _pad(z, volume.shape[1])


def _slope(y: np.ndarray, n: int) -> np.ndarray:
    """TA-Lib LINEARREG_SLOPE over windows of ``n`` (x = 0..n-1); NaN before ``n - 1``."""
    x = np.arange(n, dtype=np.float64)
    sx, sxx = x.sum(), (x * x).sum()
    w = _rolling(y, n)
    sy = w.sum(axis=-1)
    sxy = (w * x).sum(axis=-1)
    return _pad((n * sxy - sx * sy) / (n * sxx - sx * sx), y.shape[1])


def obv_slope(close: np.ndarray, volume: np.ndarray, n: int = 20) -> np.ndarray:
    """LINEARREG_SLOPE(OBV, n) / SMA(volume, n): OBV change per kline in average volumes. NaN before ``n - 1``."""
    mean_v = _pad(_rolling(volume, n).mean(axis=-1), volume.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = _slope(obv(close, volume), n) / mean_v
    return out


def vwap_distance(close: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray, n: int = 24) -> np.ndarray:
    """``close / VWAP_n - 1`` with ``VWAP_n = Σ quote_volume / Σ volume`` over the last ``n`` klines (fraction)."""
    qv = _rolling(quote_volume, n).sum(axis=-1)
    v = _rolling(volume, n).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = qv / v
        return _pad(close[:, n - 1 :] / vwap - 1.0, close.shape[1])


# ---------------------------------------------------------------- everything at once


def compute_all(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    quote_volume: np.ndarray,
    p: IndicatorConfig = _DEFAULT,
    last: int | None = None,
) -> dict[str, np.ndarray]:
    """Every indicator's full series for every series (the reference path; scans use :func:`compute_last`).

    Args:
        open_, high, low, close, volume, quote_volume: ``(n_series, T)`` float64, oldest first.
        p: periods.
        last: keep only the last ``last`` klines of each output (None = all ``T``).

    Returns:
        ``{name: (n_series, T or last)}`` for ``rsi, ema_fast, ema_slow, macd, macd_signal,
        macd_hist, atr, bb_width, adx, plus_di, minus_di, volume_z, obv_slope, vwap_dist``, and the
        Wilder/EMA states under ``state_*`` (final values, ``(n_series,)``) for :class:`IndicatorState`.
    """
    T = close.shape[1]
    tr = true_range(high, low, close)
    ms = p.macd_slow - 1
    g_spec, l_spec = _rsi_specs(close, p.rsi)
    specs = [
        _ema_spec(close, p.ema_fast),
        _ema_spec(close, p.ema_slow),
        _ema_spec(close, p.macd_fast, ms),
        _ema_spec(close, p.macd_slow, ms),
        g_spec,
        l_spec,
        _atr_spec(tr, p.atr),
        *_adx_sum_specs(high, low, tr, p.adx),
    ]
    ef, es, mf, msl, g, lo, at, sp, sm, st = linear_recurrence(specs)
    line = mf - msl
    dx, ok = _dx(sp, sm, st)
    sig = _pad(linear_recurrence([_ema_spec(line[:, ms:], p.macd_signal)])[0], T)
    ax = linear_recurrence([_adx_spec(dx, ok, p.adx)])[0]
    line = line.copy()
    line[:, : ms + p.macd_signal - 1] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        pdi = 100.0 * sp / st
        mdi = 100.0 * sm / st
    k = T if last is None else min(last, T)

    def tail(x: np.ndarray, n: int) -> np.ndarray:
        """The columns a window of ``n`` needs to produce the last ``k`` values."""
        return x[:, max(T - (k + n - 1), 0) :]

    out = {
        "rsi": _rsi_from(g, lo),
        "ema_fast": ef,
        "ema_slow": es,
        "macd": line,
        "macd_signal": sig,
        "macd_hist": line - sig,
        "atr": at,
        "adx": ax,
        "plus_di": pdi,
        "minus_di": mdi,
    }
    out = {name: v[:, T - k :] for name, v in out.items()}
    out["bb_width"] = bbands_width(tail(close, p.bb), p.bb, p.bb_k)[:, -k:]
    out["volume_z"] = volume_zscore(tail(volume, p.volume), p.volume)[:, -k:]
    out["obv_slope"] = obv_slope(tail(close, p.obv), tail(volume, p.obv), p.obv)[:, -k:]
    out["vwap_dist"] = vwap_distance(tail(close, p.vwap), tail(volume, p.vwap), tail(quote_volume, p.vwap), p.vwap)[:, -k:]
    out.update(
        state_ema_fast=ef[:, -1], state_ema_slow=es[:, -1], state_macd_fast=mf[:, -1], state_macd_slow=msl[:, -1],
        state_macd_signal=sig[:, -1], state_gain=g[:, -1], state_loss=lo[:, -1], state_atr=at[:, -1],
        state_plus_dm=sp[:, -1], state_minus_dm=sm[:, -1], state_tr=st[:, -1], state_adx=ax[:, -1],
    )
    return out


# ---------------------------------------------------------------- the scan's fast path: last values only
#
# A scan scores the newest kline, so it needs each indicator's *last* value (and a short window of
# Bollinger widths), not its whole series. Every EMA and Wilder average is linear in its input after
# the SMA seed, so its last value is one dot product with a weight vector that depends only on the
# series length and the period — computed once and cached: ``y[T-1] = x @ w``. MACD's signal line is
# an EMA of a difference of EMAs, hence linear in the closes too. Only ADX needs a whole series (its
# DX is a ratio of Wilder sums); the three sums are one scaled cumulative sum,
# ``y[t] = a**t (seed + sum_s x[s] a**-s)``, whose rounding stays relative to the newest terms. The
# results equal TA-Lib's (and :func:`compute_all`'s) to 1e-9 (tests), at a fraction of the cost.


@lru_cache(maxsize=256)
def _ema_matrix(T: int, n: int, start: int) -> np.ndarray:
    """``(T, T)`` M with ``EMA_n(x)[t] = x @ M[:, t]`` for ``t >= start`` (TA-Lib seeding: SMA at ``start``)."""
    k = 2.0 / (n + 1)
    M = np.zeros((T, T))
    if start < T:
        M[start - n + 1 : start + 1, start] = 1.0 / n
        for t in range(start + 1, T):
            M[:, t] = (1.0 - k) * M[:, t - 1]
            M[t, t] += k
    M.flags.writeable = False
    return M


@lru_cache(maxsize=128)
def _close_weights(T: int, p: IndicatorConfig) -> np.ndarray:
    """``(T, 5)`` weights: closes @ W = last EMA fast, EMA slow, MACD fast EMA, MACD slow EMA, MACD signal."""
    ms = p.macd_slow - 1
    W = np.zeros((T, 5))
    W[:, 0] = _ema_matrix(T, p.ema_fast, p.ema_fast - 1)[:, T - 1]
    W[:, 1] = _ema_matrix(T, p.ema_slow, p.ema_slow - 1)[:, T - 1]
    line = _ema_matrix(T, p.macd_fast, ms) - _ema_matrix(T, p.macd_slow, ms)  # line[t] = c @ line[:, t]
    W[:, 2] = _ema_matrix(T, p.macd_fast, ms)[:, T - 1]
    W[:, 3] = _ema_matrix(T, p.macd_slow, ms)[:, T - 1]
    sig = _ema_matrix(T - ms, p.macd_signal, p.macd_signal - 1)[:, T - ms - 1]  # EMA over line[ms:]
    W[:, 4] = line[:, ms:] @ sig
    W.flags.writeable = False
    return W


@lru_cache(maxsize=128)
def _wilder_weights(T: int, n: int) -> np.ndarray:
    """``(T,)`` w with ``wilder_n(x)[T-1] = x @ w``: seed mean(x[1:n+1]) at ``n``, then ``y += (x - y) / n``."""
    a = (n - 1) / n
    w = np.zeros(T)
    w[1 : n + 1] = a ** (T - 1 - n) / n
    t = np.arange(n + 1, T)
    w[n + 1 :] = a ** (T - 1 - t) / n
    w.flags.writeable = False
    return w


@lru_cache(maxsize=128)
def _decay(n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a**1 .. a**length, their inverses)`` for ``a = 1 - 1/n``; read-only, cached."""
    a = 1.0 - 1.0 / n
    p = a ** np.arange(1, length + 1)
    inv = 1.0 / p
    p.flags.writeable = False
    inv.flags.writeable = False
    return p, inv


def _wilder_sums(x: np.ndarray, n: int, start: int, seed: np.ndarray) -> np.ndarray:
    """Full series of ``y[t] = (1 - 1/n) y[t-1] + x[t]``, ``y[start] = seed``; NaN before ``start``.

    ``y[t] = a**(t-start) (seed + sum_{start<s<=t} x[s] a**-(s-start))``: one scaled cumulative sum.
    The rounding error of the sum is relative to its largest (newest) terms, which also dominate
    ``y[t]``, so the result keeps full relative precision; ``a**-T`` stays far from overflow for
    the periods and lookbacks the config allows (14/13 ** 5000 ~ 1e160).
    """
    m, T = x.shape
    y = np.empty((m, T))
    y[:, :start] = np.nan
    y[:, start] = seed
    if start + 1 < T:
        p, inv = _decay(n, T - start - 1)
        out = y[:, start + 1 :]
        np.multiply(x[:, start + 1 :], inv, out=out)
        out[:, 0] += seed
        np.cumsum(out, axis=1, out=out)
        out *= p
    return y


@lru_cache(maxsize=128)
def _adx_weights(n: int, length: int) -> np.ndarray:
    """``(length,)`` Wilder weights ``a**(length-1-i) / n`` of the DX terms after the ADX seed."""
    a = (n - 1) / n
    w = a ** np.arange(length - 1, -1, -1) / n
    w.flags.writeable = False
    return w


def _bb_width_tail(close: np.ndarray, n: int, k_sd: float, window: int) -> np.ndarray:
    """The last ``window`` Bollinger widths ``2 k σ / SMA`` (σ population), from centred running sums."""
    rows, T = close.shape
    k = min(window, T - n + 1)
    out = np.full((rows, window), np.nan)
    if k <= 0:
        return out
    x = close[:, T - (k + n - 1) :]
    centre = x[:, -1:]
    xc = x - centre  # centring keeps E[x^2] - E[x]^2 free of cancellation at price level
    cs = np.zeros((rows, x.shape[1] + 1))
    cs2 = np.zeros((rows, x.shape[1] + 1))
    np.cumsum(xc, axis=1, out=cs[:, 1:])
    np.cumsum(xc * xc, axis=1, out=cs2[:, 1:])
    mean_c = (cs[:, n:] - cs[:, :-n]) / n
    var = (cs2[:, n:] - cs2[:, :-n]) / n - mean_c * mean_c
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, window - k :] = 2.0 * k_sd * np.sqrt(np.maximum(var, 0.0)) / (mean_c + centre)
    return out


def compute_last(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    quote_volume: np.ndarray,
    p: IndicatorConfig = _DEFAULT,
    window: int = 50,
) -> dict[str, np.ndarray]:
    """The indicators a scan scores, at the last kline only, for every series at once.

    Args:
        open_, high, low, close, volume, quote_volume: ``(n_series, T)`` float64, oldest first,
            ``T`` > ``p.warmup``.
        p: periods.
        window: Bollinger widths kept (the volatility factor compares the last with their mean).

    Returns:
        ``{name: (n_series,)}`` for ``rsi, ema_fast, ema_slow, macd, macd_signal, macd_hist, atr,
        adx, plus_di, minus_di, volume_z, obv_slope, vwap_dist``; ``bb_width`` ``(n_series, window)``
        (NaN-padded if ``T`` is short); and the ``state_*`` values :class:`IndicatorState` resumes
        from. Equal to the last column of :func:`compute_all` (to 1e-9; tests).
    """
    T = close.shape[1]
    n_adx = p.adx
    # linear in the closes: EMAs, MACD lines and signal
    lin = close @ _close_weights(T, p)
    ef, es, mf, msl, sig = (lin[:, j] for j in range(5))
    line = mf - msl
    # Wilder averages of gains / losses (RSI) and of the true range (ATR)
    diff = np.diff(close, axis=1, prepend=close[:, :1])
    gain = np.maximum(diff, 0.0)
    loss = np.maximum(-diff, 0.0)
    g = gain @ _wilder_weights(T, p.rsi)
    lo = loss @ _wilder_weights(T, p.rsi)
    prev = close[:, :-1]
    tr = np.empty_like(close)
    tr[:, 0] = 0.0
    np.maximum(high[:, 1:] - low[:, 1:], np.maximum(np.abs(high[:, 1:] - prev), np.abs(low[:, 1:] - prev)), out=tr[:, 1:])
    at = tr @ _wilder_weights(T, p.atr)
    # ADX: Wilder sums of +DM, -DM, TR over the whole series, DX, then its Wilder average's last value
    dp = np.diff(high, axis=1, prepend=high[:, :1])
    dm = -np.diff(low, axis=1, prepend=low[:, :1])
    plus = np.where((dp > 0) & (dp > dm), dp, 0.0)
    minus = np.where((dm > 0) & (dp < dm), dm, 0.0)
    rows = close.shape[0]
    xs = np.concatenate([plus, minus, tr])
    seeds = xs[:, 1:n_adx].sum(axis=1)
    sums = _wilder_sums(xs, n_adx, n_adx - 1, seeds)
    sp, sm, st = sums[:rows], sums[rows : 2 * rows], sums[2 * rows :]
    dx, ok = _dx(sp, sm, st)
    start = 2 * n_adx - 1
    adx_seed = dx[:, n_adx : start + 1].sum(axis=1) / n_adx
    q = (n_adx - 1) / n_adx
    tail = T - start - 1
    if tail <= 0:
        ax = adx_seed
    elif ok[:, start + 1 :].all():  # the usual case: one dot product with cached weights
        ax = adx_seed * q**tail + dx[:, start + 1 :] @ _adx_weights(n_adx, tail)
    else:  # TA-Lib skips a zero DX (flat prices): that step leaves the average unchanged
        okf = ok[:, start + 1 :]
        after = np.cumsum(okf[:, ::-1], axis=1)[:, ::-1] - okf
        ax = adx_seed * q ** okf.sum(axis=1) + (np.where(okf, dx[:, start + 1 :], 0.0) * q**after).sum(axis=1) / n_adx
    with np.errstate(invalid="ignore", divide="ignore"):
        pdi = 100.0 * sp[:, -1] / st[:, -1]
        mdi = 100.0 * sm[:, -1] / st[:, -1]
        # windowed indicators: only the last window of each
        v_w = volume[:, -p.volume :]
        sd = v_w.std(axis=1)
        vz = np.where(sd > 0, (volume[:, -1] - v_w.mean(axis=1)) / sd, 0.0)
        sign = np.sign(diff[:, -p.obv + 1 :])
        steps = np.concatenate([np.zeros((rows, 1)), sign * volume[:, -p.obv + 1 :]], axis=1)
        x = np.arange(p.obv, dtype=np.float64) - (p.obv - 1) / 2.0
        slope = (np.cumsum(steps, axis=1) @ x) / (x @ x)  # LINEARREG_SLOPE is translation invariant
        obs = slope / volume[:, -p.obv :].mean(axis=1)
        vwap = quote_volume[:, -p.vwap :].sum(axis=1) / volume[:, -p.vwap :].sum(axis=1)
        vd = close[:, -1] / vwap - 1.0
    bbw = _bb_width_tail(close, p.bb, p.bb_k, window)
    # TA-Lib's warm-up NaNs where the series is too short
    def nan_before(v: np.ndarray, first: int) -> np.ndarray:
        return v if T > first else np.full_like(v, np.nan)

    line_last = nan_before(line, p.macd_slow + p.macd_signal - 2)
    sig = nan_before(sig, p.macd_slow + p.macd_signal - 2)
    return {
        "rsi": nan_before(_rsi_from(g[:, None], lo[:, None])[:, 0], p.rsi),
        "ema_fast": nan_before(ef, p.ema_fast - 1),
        "ema_slow": nan_before(es, p.ema_slow - 1),
        "macd": line_last,
        "macd_signal": sig,
        "macd_hist": line_last - sig,
        "atr": nan_before(at, p.atr),
        "adx": nan_before(ax, start),
        "plus_di": pdi,
        "minus_di": mdi,
        "volume_z": vz,
        "obv_slope": obs,
        "vwap_dist": vd,
        "bb_width": bbw,
        "state_ema_fast": ef,
        "state_ema_slow": es,
        "state_macd_fast": mf,
        "state_macd_slow": msl,
        "state_macd_signal": sig,
        "state_gain": g,
        "state_loss": lo,
        "state_atr": at,
        "state_plus_dm": sp[:, -1],
        "state_minus_dm": sm[:, -1],
        "state_tr": st[:, -1],
        "state_adx": ax,
    }


class IndicatorState:
    """O(1)-per-kline updater of :func:`compute_all` for ``n`` series at once (the live cache uses it).

    Build it from a batch run over the history (:meth:`from_history`), then call :meth:`update` with
    each newly *closed* kline (arrays of shape ``(n,)``). Recursive indicators update in O(1);
    windowed ones (Bollinger, volume z-score, OBV slope, VWAP) keep ring buffers of their window and
    cost O(window), independent of history length. Batch and incremental agree to 1e-9 (tests).
    """

    def __init__(self, p: IndicatorConfig, n: int) -> None:
        self.p = p
        self.n = n
        self.win = max(p.bb, p.volume, p.obv, p.vwap)
        self._close = np.zeros((n, self.win))
        self._volume = np.zeros((n, self.win))
        self._qv = np.zeros((n, self.win))
        self._obv = np.zeros((n, self.win))
        self.values: dict[str, np.ndarray] = {}
        self.s: dict[str, np.ndarray] = {}
        self.prev_high = np.zeros(n)
        self.prev_low = np.zeros(n)
        self.prev_close = np.zeros(n)

    @classmethod
    def from_history(
        cls,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        quote_volume: np.ndarray,
        p: IndicatorConfig = _DEFAULT,
    ) -> IndicatorState:
        """Initialise from ``(n, T)`` history (``T`` > warm-up) with one batch pass."""
        self = cls(p, close.shape[0])
        res = compute_last(open_, high, low, close, volume, quote_volume, p, window=1)
        self.s = {k[6:]: np.array(v, copy=True) for k, v in res.items() if k.startswith("state_")}
        self.values = {k: np.array(v[:, -1] if v.ndim == 2 else v, copy=True) for k, v in res.items() if not k.startswith("state_")}
        w = self.win
        self._close[:] = close[:, -w:]
        self._volume[:] = volume[:, -w:]
        self._qv[:] = quote_volume[:, -w:]
        self._obv[:] = obv(close, volume)[:, -w:]
        self.prev_high, self.prev_low, self.prev_close = high[:, -1].copy(), low[:, -1].copy(), close[:, -1].copy()
        return self

    def update(self, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray) -> dict[str, np.ndarray]:
        """Feed one closed kline per series (each ``(n,)``); returns the new indicator values ``{name: (n,)}``."""
        p, s = self.p, self.s

        def ema_step(key: str, period: int, x: np.ndarray) -> np.ndarray:
            k = 2.0 / (period + 1)
            s[key] = (1.0 - k) * s[key] + k * x
            return s[key]

        pc = self.prev_close
        tr = np.maximum(high - low, np.maximum(np.abs(high - pc), np.abs(low - pc)))
        diff = close - pc
        n = p.rsi
        s["gain"] = ((n - 1) * s["gain"] + np.where(diff > 0, diff, 0.0)) / n
        s["loss"] = ((n - 1) * s["loss"] + np.where(diff < 0, -diff, 0.0)) / n
        s["atr"] = ((p.atr - 1) * s["atr"] + tr) / p.atr
        ef = ema_step("ema_fast", p.ema_fast, close)
        es = ema_step("ema_slow", p.ema_slow, close)
        line = ema_step("macd_fast", p.macd_fast, close) - ema_step("macd_slow", p.macd_slow, close)
        sig = ema_step("macd_signal", p.macd_signal, line)
        dp, dm = high - self.prev_high, self.prev_low - low
        plus = np.where((dp > 0) & (dp > dm), dp, 0.0)
        minus = np.where((dm > 0) & (dp < dm), dm, 0.0)
        a = 1.0 - 1.0 / p.adx
        s["plus_dm"] = a * s["plus_dm"] + plus
        s["minus_dm"] = a * s["minus_dm"] + minus
        s["tr"] = a * s["tr"] + tr
        dx, ok = _dx(s["plus_dm"][:, None], s["minus_dm"][:, None], s["tr"][:, None])
        s["adx"] = np.where(ok[:, 0], ((p.adx - 1) * s["adx"] + dx[:, 0]) / p.adx, s["adx"])
        sign = np.sign(diff)
        new_obv = self._obv[:, -1] + sign * volume
        for buf, val in ((self._close, close), (self._volume, volume), (self._qv, quote_volume), (self._obv, new_obv)):
            buf[:, :-1] = buf[:, 1:]
            buf[:, -1] = val
        self.prev_high, self.prev_low, self.prev_close = high, low, close
        c2, v2, q2, o2 = self._close[:, None, :], self._volume[:, None, :], self._qv[:, None, :], self._obv[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = {
                "rsi": _rsi_from(s["gain"], s["loss"]),
                "ema_fast": ef,
                "ema_slow": es,
                "macd": line,
                "macd_signal": sig,
                "macd_hist": line - sig,
                "atr": s["atr"].copy(),
                "bb_width": bbands_width(c2[:, 0, -p.bb :], p.bb, p.bb_k)[:, -1],
                "adx": s["adx"].copy(),
                "plus_di": 100.0 * s["plus_dm"] / s["tr"],
                "minus_di": 100.0 * s["minus_dm"] / s["tr"],
                "volume_z": volume_zscore(v2[:, 0, -p.volume :], p.volume)[:, -1],
                "obv_slope": (_slope(o2[:, 0, -p.obv :], p.obv) / v2[:, 0, -p.obv :].mean(axis=-1)[:, None])[:, -1],
                "vwap_dist": close / (q2[:, 0, -p.vwap :].sum(axis=-1) / v2[:, 0, -p.vwap :].sum(axis=-1)) - 1.0,
            }
        self.values = values
        return values
