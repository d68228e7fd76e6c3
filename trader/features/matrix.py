"""The model's feature matrix: every feature of every kline, from the scanner's own kernels.

One implementation serves two callers:

- the ML dataset (:mod:`trader.ml.dataset`) computes every feature for *every* closed kline of a
  symbol's whole history in one vectorised pass per interval (:func:`interval_series`, O(T) numpy
  work, no loop over moments) and samples it at the moments it trains on;
- the scan's ``ml`` factor computes the same series on the klines a scan loads and takes the last
  column (:func:`last_features`).

Both use :func:`trader.features.indicators.compute_all` (TA-Lib's definitions, equal to the scan's
:func:`~trader.features.indicators.compute_last` to 1e-9), :func:`trader.features.structure.structure_series`
and :func:`trader.features.factors.interval_biases`. Every feature at kline ``t`` is computed from
klines ``<= t`` only (tests append wild klines and check that nothing earlier moves).

Per interval (prefix ``<interval>_``, e.g. ``1h_rsi``), with ATR = Wilder ATR in price units and
``atr_pct = ATR / close``:

===============================  ==============================================================
``rsi``, ``adx``, ``bb_width``    the indicators (0-100, 0-100, fraction of the middle band)
``volume_z``, ``obv_slope``       volume z-score, OBV slope in average volumes per kline
``ema_spread``                    (EMA fast - EMA slow) / ATR
``close_ema``                     (close - EMA slow) / ATR
``macd_hist``                     MACD histogram / ATR
``atr_pct``                       ATR / close (fraction)
``bb_ratio``                      ln(Bollinger width / its mean over the last 50 klines)
``di_spread``                     +DI - -DI (points)
``vwap_dist``                     (close / VWAP - 1) / atr_pct: distance from the rolling VWAP in ATRs
``ret_<k>``                       ln(close / close k klines ago) / atr_pct, k in :data:`RETURN_LAGS`
``bias_<factor>``                 the factor biases of :func:`~trader.features.factors.interval_biases`
                                  (trend, momentum, volume, structure) with the default coefficients;
                                  ``volatility`` as (score - 50) / 50
===============================  ==============================================================

and the seed configuration's twelve structure features (ten per interval, two across intervals),
defined in :data:`SEED_FEATURES`. Feature names and order are :func:`feature_names`; a model
records them and the parameters (:class:`FeatureParams`) and is refused if they differ.

**What the model sees** is each feature's *cross-sectional rank* at the moment
(:func:`cross_sectional_rank`: percentile in (0, 1] among the symbols valid at that moment, ties
averaged). Ranks are scale-free and stable across regimes (a 2 % ATR is large in a calm month and
small in a wild one); measured on the bundled data's walk-forward folds they raised the
out-of-sample rank IC in 4 of 5 folds over the raw values (README, "What the signals are worth").
The cross-section is the universe: the dataset's symbols at a moment, the store's fresh symbols in
a scan (at least :data:`MIN_CROSS_SECTION`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trader.config import FactorConfig, IndicatorConfig, ScanConfig
from trader.features.factors import interval_biases
from trader.features.indicators import compute_all
from trader.features.structure import structure_series

__all__ = [
    "FEATURE_SET",
    "RETURN_LAGS",
    "SEED_FEATURES",
    "FeatureParams",
    "cross_interval_features",
    "cross_sectional_rank",
    "feature_names",
    "interval_series",
    "last_features",
    "rolling_mean",
]

#: Version of the feature definitions; a model trained on another version is refused.
FEATURE_SET = "trader.features/2"
#: Fewest symbols a moment's cross-section may have (fewer: the model's features are NaN).
MIN_CROSS_SECTION = 10
#: Return lags, in klines of each interval.
RETURN_LAGS = (1, 6, 24, 72)
#: Bollinger widths averaged for ``bb_ratio`` (as in the volatility factor).
BB_MEAN_WINDOW = 50

#: The seed configuration's structure features and their definitions (per interval unless noted).
SEED_FEATURES: dict[str, str] = {
    "market_structure": "direction of the latest break of structure within the structure window: +1, -1, 0 (none)",
    "order_blocks_count": "unmitigated bullish minus bearish order blocks formed within the structure window",
    "institutional_candle": "signed body (close - open) / ATR of the kline if its volume is >= 2x the "
    "volume SMA (indicators.volume klines), else 0",
    "liquidity_grab": "latest liquidity sweep within 3 klines: +1 sell-side swept and reclaimed, -1 buy-side, 0",
    "order_flow": "taker-buy imbalance sum(2 taker_buy_base - volume) / sum(volume) over indicators.volume klines, [-1, 1]",
    "fvg_count": "unfilled bullish minus bearish fair value gaps formed within the structure window",
    "swing_high_distance": "(latest known swing high - close) / ATR: room to resistance in ATRs",
    "structure_integrity": "state x (bullish - bearish BOS) / (bullish + bearish BOS) within the window, [-1, 1] (0 if none)",
    "institutional_participation": "ln(mean quote volume of the last indicators.volume klines / mean of the last 7x as many)",
    "liquidity_context": "(close - latest swing low) / (latest swing high - swing low), clipped to [-0.5, 1.5]; 0.5 if unknown",
    "trend_alignment_enhanced": "(across intervals) mean of sign(EMA fast - EMA slow) x clip(ADX / 25, 0, 1)",
    "timeframe_convergence": "(across intervals) mean of market_structure: +1 every interval bullish, -1 bearish",
}
_PER_INTERVAL_SEED = tuple(k for k in SEED_FEATURES if k not in ("trend_alignment_enhanced", "timeframe_convergence"))
_INDICATOR_FEATURES = (
    "rsi", "adx", "bb_width", "volume_z", "obv_slope", "ema_spread", "close_ema", "macd_hist", "atr_pct", "bb_ratio",
    "di_spread", "vwap_dist",
)
_BIAS_FEATURES = ("bias_trend", "bias_momentum", "bias_volume", "bias_structure", "bias_volatility")
#: Per-interval feature names (without the interval prefix), in matrix order.
INTERVAL_FEATURES: tuple[str, ...] = (
    *_INDICATOR_FEATURES,
    *(f"ret_{k}" for k in RETURN_LAGS),
    *_BIAS_FEATURES,
    *_PER_INTERVAL_SEED,
)
#: Cross-interval feature names, after the per-interval ones.
CROSS_FEATURES: tuple[str, ...] = ("trend_alignment_enhanced", "timeframe_convergence", "mtf_agreement")
#: What the configurable score needs per interval (kept by the dataset so that tune search can
#: recompute the score for any weights and coefficients without recomputing indicators).
SCORE_INPUTS: tuple[str, ...] = (
    "ema_fast", "ema_slow", "atr", "adx", "rsi", "macd_hist", "vwap_dist", "obv_slope", "volume_z", "bb_ratio_raw",
    "state", "ob_bull", "ob_bear", "fvg_bull", "fvg_bear", "sweep", "open", "close",
)


@dataclass(frozen=True)
class FeatureParams:
    """What the features depend on; a model stores it and the scan recomputes features with it.

    Attributes:
        intervals: base (fastest) interval first, e.g. ``("1h", "4h")``.
        indicators: indicator periods.
        swing_length, structure_window: structure settings (klines).
        factors: coefficients of the ``bias_*`` features (the defaults, whatever the scan uses, so
            that changing ``scan.factors`` never changes what a trained model sees).
    """

    intervals: tuple[str, ...]
    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    swing_length: int = 5
    structure_window: int = 120
    factors: FactorConfig = field(default_factory=FactorConfig)

    @classmethod
    def from_scan(cls, cfg: ScanConfig, intervals: Sequence[str]) -> FeatureParams:
        """The scan's indicator and structure settings, default factor coefficients."""
        return cls(tuple(intervals), cfg.indicators, cfg.swing_length, cfg.structure_window)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (stored in a model's ``meta.json``)."""
        d = asdict(self)
        d["indicators"] = self.indicators.model_dump()
        d["factors"] = self.factors.model_dump()
        d["intervals"] = list(self.intervals)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureParams:
        """Inverse of :meth:`as_dict`."""
        return cls(
            tuple(d["intervals"]),
            IndicatorConfig.model_validate(d["indicators"]),
            int(d["swing_length"]),
            int(d["structure_window"]),
            FactorConfig.model_validate(d["factors"]),
        )

    @property
    def min_klines(self) -> int:
        """Klines per interval before every feature has a value."""
        p = self.indicators
        return max(p.warmup + BB_MEAN_WINDOW, max(RETURN_LAGS) + p.atr + 1, self.structure_window, 7 * p.volume)


def feature_names(intervals: Sequence[str]) -> list[str]:
    """Column names of the feature matrix, in order: per interval, then across intervals."""
    return [f"{iv}_{name}" for iv in intervals for name in INTERVAL_FEATURES] + list(CROSS_FEATURES)


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last ``n`` non-NaN values at every column (NaN until ``n`` values exist): ``(r, T) -> (r, T)``."""
    ok = np.isfinite(x)
    cs = np.cumsum(np.where(ok, x, 0.0), axis=1)
    cn = np.cumsum(ok, axis=1, dtype=np.float64)
    s = cs.copy()
    c = cn.copy()
    s[:, n:] -= cs[:, :-n]
    c[:, n:] -= cn[:, :-n]
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(c >= n, s / np.where(c > 0, c, 1.0), np.nan)
    return out


def _rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    cs = np.cumsum(x, axis=1)
    out = cs.copy()
    out[:, n:] -= cs[:, :-n]
    out[:, : n - 1] = np.nan
    return out


def interval_series(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    quote_volume: np.ndarray,
    taker_buy_volume: np.ndarray,
    params: FeatureParams,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every per-interval feature at every kline of ``n`` series of one interval.

    Args:
        open_ ... taker_buy_volume: ``(n, T)`` float64, oldest first (prices in the quote asset,
            volumes in the base asset except ``quote_volume``).
        params: indicator, structure and bias settings.

    Returns:
        ``(features, score_inputs)``: ``{name: (n, T)}`` for :data:`INTERVAL_FEATURES` (NaN during
        the warm-up), and the raw inputs of the configurable score (:data:`SCORE_INPUTS`).
    """
    p = params.indicators
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ind = compute_all(open_, high, low, close, volume, quote_volume, p)
        st = structure_series(open_, high, low, close, params.swing_length, params.structure_window)
        bb_ratio_raw = ind["bb_width"] / rolling_mean(ind["bb_width"], BB_MEAN_WINDOW)
        with np.errstate(invalid="ignore", divide="ignore"):
            atr = np.where(ind["atr"] > 0, ind["atr"], np.nan)
            atr_pct = atr / close
            logc = np.log(close)
            out: dict[str, np.ndarray] = {
                "rsi": ind["rsi"],
                "adx": ind["adx"],
                "bb_width": ind["bb_width"],
                "volume_z": ind["volume_z"],
                "obv_slope": ind["obv_slope"],
                "ema_spread": (ind["ema_fast"] - ind["ema_slow"]) / atr,
                "close_ema": (close - ind["ema_slow"]) / atr,
                "macd_hist": ind["macd_hist"] / atr,
                "atr_pct": atr_pct,
                "bb_ratio": np.log(bb_ratio_raw),
                "di_spread": ind["plus_di"] - ind["minus_di"],
                "vwap_dist": ind["vwap_dist"] / atr_pct,
            }
            for k in RETURN_LAGS:
                r = np.full_like(close, np.nan)
                r[:, k:] = logc[:, k:] - logc[:, :-k]
                out[f"ret_{k}"] = r / atr_pct
            inputs = {**ind, "bb_ratio": bb_ratio_raw}
            b = interval_biases(inputs, st, open_, close, params.factors)
            for name in ("trend", "momentum", "volume", "structure"):
                out[f"bias_{name}"] = b[name]
            out["bias_volatility"] = (b["volatility"] - 50.0) / 50.0
            # the seed structure features
            n_v = p.volume
            vol_sma = rolling_mean(volume, n_v)
            big = volume >= 2.0 * vol_sma
            out["market_structure"] = st["state"]
            out["order_blocks_count"] = st["ob_bull"] - st["ob_bear"]
            out["institutional_candle"] = np.where(big, (close - open_) / atr, np.where(np.isfinite(vol_sma), 0.0, np.nan))
            out["liquidity_grab"] = st["sweep"]
            out["order_flow"] = _rolling_sum(2.0 * taker_buy_volume - volume, n_v) / _rolling_sum(volume, n_v)
            out["fvg_count"] = st["fvg_bull"] - st["fvg_bear"]
            out["swing_high_distance"] = (st["swing_high"] - close) / atr
            nb = st["bos_bull"] + st["bos_bear"]
            out["structure_integrity"] = np.where(nb > 0, st["state"] * (st["bos_bull"] - st["bos_bear"]) / np.where(nb > 0, nb, 1.0), 0.0)
            out["institutional_participation"] = np.log(rolling_mean(quote_volume, n_v) / rolling_mean(quote_volume, 7 * n_v))
            rng = st["swing_high"] - st["swing_low"]
            ctx = np.clip((close - st["swing_low"]) / np.where(rng > 0, rng, np.nan), -0.5, 1.5)
            out["liquidity_context"] = np.where(np.isfinite(ctx), ctx, 0.5)
    score_inputs = {
        "ema_fast": ind["ema_fast"], "ema_slow": ind["ema_slow"], "atr": ind["atr"], "adx": ind["adx"], "rsi": ind["rsi"],
        "macd_hist": ind["macd_hist"], "vwap_dist": ind["vwap_dist"], "obv_slope": ind["obv_slope"],
        "volume_z": ind["volume_z"], "bb_ratio_raw": bb_ratio_raw, "state": st["state"], "ob_bull": st["ob_bull"],
        "ob_bear": st["ob_bear"], "fvg_bull": st["fvg_bull"], "fvg_bear": st["fvg_bear"], "sweep": st["sweep"],
        "open": open_, "close": close,
    }
    return out, score_inputs


def cross_interval_features(per_interval: Sequence[Mapping[str, np.ndarray]], adx_ref: float = 25.0) -> dict[str, np.ndarray]:
    """The features that combine intervals, from aligned per-interval features (any common shape).

    ``mtf_agreement`` is the mean over intervals of ``tanh(bias_trend + bias_momentum)`` (the
    direction-free core of the ``mtf`` factor).
    """
    with np.errstate(invalid="ignore"):
        align = np.mean([np.sign(f["ema_spread"]) * np.clip(f["adx"] / adx_ref, 0.0, 1.0) for f in per_interval], axis=0)
        conv = np.mean([f["market_structure"] for f in per_interval], axis=0)
        mtf = np.mean([np.tanh(f["bias_trend"] + f["bias_momentum"]) for f in per_interval], axis=0)
    return {"trend_alignment_enhanced": align, "timeframe_convergence": conv, "mtf_agreement": mtf}


def last_features(data: Sequence[np.ndarray], params: FeatureParams) -> np.ndarray:
    """The feature matrix at the newest kline of each symbol: what the scan's ``ml`` factor feeds a model.

    Args:
        data: one array per interval of ``params.intervals`` (base first), each ``(n, 7, L)``: rows
            open, high, low, close, volume, quote_volume, taker_buy_base_volume of the last ``L``
            closed klines (``L`` >= :attr:`FeatureParams.min_klines` for finite features).
        params: the model's feature parameters.

    Returns:
        ``(n, n_features)`` float32 in :func:`feature_names` order (NaN where history is too short).
    """
    per = []
    for arr in data:
        o, h, lo, c, v, q, tb = (np.ascontiguousarray(arr[:, j, :]) for j in range(7))
        feats, _ = interval_series(o, h, lo, c, v, q, tb, params)
        per.append({k: v[:, -1] for k, v in feats.items()})
    cols = [f[name] for f in per for name in INTERVAL_FEATURES]
    cross = cross_interval_features(per, params.factors.adx_ref)
    cols += [cross[name] for name in CROSS_FEATURES]
    return np.stack(cols, axis=1).astype(np.float32)


def _average_ranks(X: np.ndarray) -> np.ndarray:
    """1-based ranks along axis 0 with ties averaged (as ``scipy.stats.rankdata``); ``X`` finite or +inf.

    Sorted along the last, contiguous axis (a transposed copy): sorting many short strided
    columns in place is ~10x slower."""
    T = np.ascontiguousarray(np.moveaxis(X, 0, -1))
    n = T.shape[-1]
    order = np.argsort(T, axis=-1)
    xs = np.take_along_axis(T, order, axis=-1)
    pos = np.arange(1, n + 1, dtype=np.float32)
    starts = np.ones(xs.shape, dtype=bool)
    starts[..., 1:] = xs[..., 1:] != xs[..., :-1]
    ends = np.ones(xs.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, pos, np.float32(0)), axis=-1)
    last = np.minimum.accumulate(np.where(ends, pos, np.float32(n + 1))[..., ::-1], axis=-1)[..., ::-1]
    out = np.empty(xs.shape, dtype=np.float32)
    np.put_along_axis(out, order, (first + last) * np.float32(0.5), axis=-1)
    return np.moveaxis(out, -1, 0)


def cross_sectional_rank(X: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Rank percentile of every feature across symbols (axis 0), in (0, 1], ties averaged.

    Args:
        X: ``(n, ..., F)`` features (e.g. ``(n, M, F)`` for a dataset, ``(n, F)`` for one scan).
        valid: ``(n, ...)`` rows that belong to the cross-section (default: all).

    Returns:
        float32 of ``X``'s shape; NaN where the row is not valid, the value is not finite, or fewer
        than :data:`MIN_CROSS_SECTION` values are. Equal to ``scipy.stats.rankdata(...,
        nan_policy="omit") / count`` (test), 3-4x faster: one sort of small columns.
    """
    ok = np.isfinite(X)
    if valid is not None:
        ok &= valid[..., None]
    r = _average_ranks(np.where(ok, X, np.inf).astype(np.float32))  # excluded values sort last, out of the ranks
    cnt = ok.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok & (cnt >= MIN_CROSS_SECTION), r / np.maximum(cnt, 1).astype(np.float32), np.float32(np.nan))
    return out.astype(np.float32, copy=False)
