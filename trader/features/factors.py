"""Factor scores (0-100), multi-timeframe agreement, direction and the blended score. Pure numpy.

Per interval, each directional factor first becomes a *bias* in [-1, 1] (+1 = strongly bullish):

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
an ML probability can join as factor ``ml`` (0-100 = probability x 100) when a model is present.

Calibration (``bench/calibrate.py``, bundled data): see the README for the share of symbol-hours
at or above 75 with the default weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FACTORS", "FactorResult", "interval_biases", "score_universe"]

#: Factor names in display order.
FACTORS = ("trend", "momentum", "volume", "volatility", "structure", "mtf")


def _clip(x: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    out: np.ndarray = np.clip(x, lo, hi)
    return out


def interval_biases(ind: Mapping[str, np.ndarray], st: Mapping[str, np.ndarray], last_open: np.ndarray, last_close: np.ndarray) -> dict[str, np.ndarray]:
    """Directional biases in [-1, 1] and the volatility score for one interval.

    Args:
        ind: indicator values; each ``(n,)`` at the last kline, except ``bb_width`` ``(n, w)`` (recent window).
        st: structure features ``(n,)`` (see :func:`trader.features.structure.structure_features`).
        last_open, last_close: ``(n,)`` of the last closed kline, quote-asset prices.

    Returns:
        ``{"trend", "momentum", "volume", "structure": bias (n,), "volatility": score 0-100 (n,)}``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        atr = np.where(ind["atr"] > 0, ind["atr"], np.nan)
        trend = (0.6 * np.tanh((ind["ema_fast"] - ind["ema_slow"]) / atr / 2.0) + 0.4 * np.tanh((last_close - ind["ema_slow"]) / atr / 3.0))
        trend *= _clip(ind["adx"] / 25.0, 0.3, 1.0)
        atr_frac = atr / last_close
        momentum = (
            0.4 * _clip((ind["rsi"] - 50.0) / 20.0)
            + 0.4 * np.tanh(4.0 * ind["macd_hist"] / atr)
            + 0.2 * np.tanh(ind["vwap_dist"] / atr_frac / 2.0)
        )
        volume = 0.6 * np.tanh(2.0 * ind["obv_slope"]) + 0.4 * np.tanh(ind["volume_z"] / 2.0) * np.sign(last_close - last_open)
        structure = (
            0.5 * st["state"]
            + 0.2 * np.tanh(st["ob_bull"] - st["ob_bear"])
            + 0.15 * np.tanh((st["fvg_bull"] - st["fvg_bear"]) / 3.0)
            + 0.15 * st["sweep"]
        )
        bbw = ind["bb_width"]
        ratio = bbw[:, -1] / np.nanmean(bbw, axis=1)
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


#: Exponent that compresses moderate biases: a factor scores ``50 + 50 x sign(a) |a|^SHARPNESS``
#: where ``a = direction x bias``. Calibrated on the bundled data (bench/calibrate.py) so that a
#: blended score of 75+ is rare but not empty; see the README for the measured share.
SHARPNESS = 3.5


def _agree(direction: np.ndarray, bias: np.ndarray, gamma: float) -> np.ndarray:
    a = direction * bias
    out: np.ndarray = 50.0 + 50.0 * np.sign(a) * np.abs(a) ** gamma
    return out


def score_universe(
    per_interval: Sequence[dict[str, np.ndarray]],
    weights: Mapping[str, float],
    ml_probability: np.ndarray | None = None,
    sharpness: float = SHARPNESS,
) -> FactorResult:
    """Blend per-interval biases into factor scores, direction and score.

    Args:
        per_interval: :func:`interval_biases` outputs, base (fastest) interval first, all ``(n,)``.
        weights: factor -> weight (>= 0); factors missing or 0 are ignored; ``ml`` used only with a model.
        ml_probability: ``(n,)`` probability (0-1) that a long signal is right, or None.

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
    if ml_probability is not None:
        factors["ml"] = 100.0 * np.where(direction > 0, ml_probability, 1.0 - ml_probability)
    used = {k: w for k, w in weights.items() if w > 0 and k in factors}
    total = sum(used.values()) or 1.0
    score = sum(w * factors[k] for k, w in used.items()) / total
    stacked = np.stack([*factors.values(), score])
    valid = np.isfinite(stacked).all(axis=0)
    score = np.where(valid, np.clip(score, 0.0, 100.0), np.nan)
    return FactorResult(score=score, direction=direction, factors=factors, valid=valid)
