"""Factor scores (0-100), multi-timeframe agreement, direction and the blended score. Pure numpy.

Per interval, each directional factor first becomes a *bias* in about [-1, 1] (+1 = strongly
bullish). With the default coefficients (``scan.factors``, :class:`trader.config.FactorConfig`;
``trader tune search`` fits them, and a negative weight turns a term around):

- **trend** = (0.6 tanh(EMA spread / ATR / 2) + 0.4 tanh((close - EMA slow) / ATR / 3)) x
  clip(ADX / 25, 0.3, 1): EMA alignment and distance, damped when ADX says there is no trend.
- **momentum** = 0.4 clip((RSI - 50) / 20, ±1) + 0.4 tanh(4 MACD hist / ATR)
  + 0.2 tanh(VWAP distance / (ATR / close) / 2).
- **volume** = 0.6 tanh(2 OBV slope) + 0.4 tanh(volume z / 2) x sign(last close - last open):
  accumulation, and unusual volume behind the last kline's move.
- **structure** = 0.5 state + 0.2 tanh(bullish - bearish unmitigated OBs)
  + 0.15 tanh((bullish - bearish unfilled FVGs) / 3) + 0.15 sweep.

**Direction** is the sign of the weighted blend of the base (first) interval's biases plus the
higher intervals' trend; a factor's score is ``50 + 50 x direction x bias`` (above 50 = it agrees).
**volatility** is non-directional: ``50 + 50 tanh(ln(BB width / its mean over the last 50 klines))``
(expanding ranges score high). **mtf** is the mean over all intervals of
``(1 + direction x tanh(2 (trend + momentum) / 2)) / 2``, x 100: how far every timeframe agrees.
The **score** is the weighted mean of the factor scores with the config weights (``scan.weights``);
a model can join as factor ``ml`` when one is active: the cross-sectional percentile of its
probability, x 100 in the signal's direction (see :func:`score_universe`).

Calibration (``bench/calibrate.py``, bundled data): see the README for the share of symbol-hours
at or above 75 with the default weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trader.config import FactorConfig

__all__ = ["FACTORS", "FactorResult", "bb_ratio", "interval_biases", "score_universe"]

#: Factor names in display order.
FACTORS = ("trend", "momentum", "volume", "volatility", "structure", "mtf")


def _clip(x: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    out: np.ndarray = np.clip(x, lo, hi)
    return out


_DEFAULT = FactorConfig()


def bb_ratio(bb_width: np.ndarray) -> np.ndarray:
    """Last Bollinger width over the mean of a recent window: ``(n, w) -> (n,)`` (NaNs ignored)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, reported as invalid
        out: np.ndarray = bb_width[:, -1] / np.nanmean(bb_width, axis=1)
    return out


def interval_biases(
    ind: Mapping[str, np.ndarray],
    st: Mapping[str, np.ndarray],
    last_open: np.ndarray,
    last_close: np.ndarray,
    coef: FactorConfig = _DEFAULT,
) -> dict[str, np.ndarray]:
    """Directional biases and the volatility score for one interval; elementwise, any shape.

    Args:
        ind: indicator values, each of the common shape (e.g. ``(n,)`` at the last kline, or
            ``(n, T)`` at every kline), plus either ``bb_ratio`` (last Bollinger width over its
            recent mean) or ``bb_width`` ``(n, w)`` (a recent window, from which it is computed).
        st: structure features of the same shape (:func:`trader.features.structure.structure_series`).
        last_open, last_close: of the kline scored, quote-asset prices, same shape.
        coef: the formulas' coefficients (``scan.factors``).

    Returns:
        ``{"trend", "momentum", "volume", "structure": bias, "volatility": score 0-100}``.
    """
    c = coef
    ratio = ind["bb_ratio"] if "bb_ratio" in ind else bb_ratio(ind["bb_width"])
    with np.errstate(invalid="ignore", divide="ignore"):
        atr = np.where(ind["atr"] > 0, ind["atr"], np.nan)
        trend = c.trend_spread * np.tanh((ind["ema_fast"] - ind["ema_slow"]) / atr / c.trend_spread_scale) + c.trend_distance * np.tanh(
            (last_close - ind["ema_slow"]) / atr / c.trend_distance_scale
        )
        trend *= _clip(ind["adx"] / c.adx_ref, c.adx_floor, 1.0)
        atr_frac = atr / last_close
        momentum = (
            c.momentum_rsi * _clip((ind["rsi"] - 50.0) / c.rsi_scale)
            + c.momentum_macd * np.tanh(c.macd_gain * ind["macd_hist"] / atr)
            + c.momentum_vwap * np.tanh(ind["vwap_dist"] / atr_frac / c.vwap_scale)
        )
        volume = c.volume_obv * np.tanh(c.obv_gain * ind["obv_slope"]) + c.volume_z * np.tanh(ind["volume_z"] / c.volume_z_scale) * np.sign(
            last_close - last_open
        )
        structure = (
            c.structure_state * st["state"]
            + c.structure_ob * np.tanh(st["ob_bull"] - st["ob_bear"])
            + c.structure_fvg * np.tanh((st["fvg_bull"] - st["fvg_bear"]) / c.fvg_scale)
            + c.structure_sweep * st["sweep"]
        )
        volatility = 50.0 + 50.0 * np.tanh(np.log(ratio))
    return {"trend": trend, "momentum": momentum, "volume": volume, "structure": structure, "volatility": volatility}


@dataclass(frozen=True)
class FactorResult:
    """Scores of a universe.

    Attributes:
        score: ``(n,)`` blended score 0-100.
        direction: ``(n,)`` +1 long, -1 short.
        factors: ``{name: (n,)}`` factor scores 0-100 (see :data:`FACTORS`, plus ``ml`` if given).
        valid: ``(n,)`` False where an input was NaN/inf (the symbol is reported as an error).
    """

    score: np.ndarray
    direction: np.ndarray
    factors: dict[str, np.ndarray]
    valid: np.ndarray


#: Default exponent that compresses moderate biases (``scan.factors.sharpness``): a factor scores
#: ``50 + 50 x sign(a) |a|^SHARPNESS`` where ``a = direction x bias``. Calibrated on the bundled data
#: (bench/calibrate.py) so that a blended score of 75+ is rare but not empty (README).
SHARPNESS = _DEFAULT.sharpness


def _agree(direction: np.ndarray, bias: np.ndarray, gamma: float) -> np.ndarray:
    a = np.clip(direction * bias, -1.0, 1.0)  # fitted coefficients may sum beyond 1
    out: np.ndarray = 50.0 + 50.0 * np.sign(a) * np.abs(a) ** gamma
    return out


def score_universe(
    per_interval: Sequence[dict[str, np.ndarray]],
    weights: Mapping[str, float],
    sharpness: float = SHARPNESS,
) -> FactorResult:
    """Blend per-interval biases into the hand-made factor scores, direction and score.

    With a model active, the printed score is the model's (:mod:`trader.ml.signal`); this blend is
    then a column (``factor_score``) and, with ``scan.blend`` > 0, part of the printed score.

    Args:
        per_interval: :func:`interval_biases` outputs, base (fastest) interval first, all of one shape
            (``(n,)`` for a scan; any shape works elementwise, e.g. ``(n, T)`` for every kline).
        weights: factor -> weight (>= 0); factors missing or 0 are ignored.

    Returns:
        A :class:`FactorResult`.
    """
    base = per_interval[0]
    higher_trend = [b["trend"] for b in per_interval[1:]]
    composite = (
        weights.get("trend", 0.0) * base["trend"]
        + weights.get("momentum", 0.0) * base["momentum"]
        + weights.get("volume", 0.0) * base["volume"]
        + weights.get("structure", 0.0) * base["structure"]
        + weights.get("mtf", 0.0) * (np.mean(higher_trend, axis=0) if higher_trend else 0.0)
    )
    direction = np.where(composite >= 0, 1.0, -1.0)
    factors = {name: _agree(direction, base[name], sharpness) for name in ("trend", "momentum", "volume", "structure")}
    factors["volatility"] = _agree(np.ones_like(direction), (base["volatility"] - 50.0) / 50.0, sharpness)
    agreement = [direction * np.tanh(b["trend"] + b["momentum"]) for b in per_interval]
    factors["mtf"] = _agree(np.ones_like(direction), np.mean(agreement, axis=0), sharpness)
    used = {k: w for k, w in weights.items() if w > 0 and k in factors}
    total = sum(used.values()) or 1.0
    score = sum(w * factors[k] for k, w in used.items()) / total
    stacked = np.stack([*factors.values(), score])
    valid = np.isfinite(stacked).all(axis=0)
    score = np.where(valid, np.clip(score, 0.0, 100.0), np.nan)
    return FactorResult(score=score, direction=direction, factors=factors, valid=valid)
