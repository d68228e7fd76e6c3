"""What a signal is worth, measured out of sample: rank IC, excess returns, baselines, uncertainty.

A *scorer* gives, at every moment ``τ`` of a :class:`~trader.ml.dataset.Dataset` and for every
symbol, a signed signal ``v`` (higher = more bullish), a conviction score 0-100 and a direction
(+1 long, -1 short). :func:`evaluate` reports for each scorer and horizon ``H``:

- **rank IC**: the Spearman correlation, across the symbols valid at ``τ``, between ``v`` and the
  forward return to ``τ + H``; its mean over moments, a Newey-West t-statistic with
  ``2 ceil(H / grid)`` lags (consecutive moments' labels overlap, so the naive t overstates
  significance; Newey & West 1987, Bartlett kernel; :func:`nw_lags`), a 95 % block-bootstrap interval with UTC
  weeks as blocks, and the share of moments with IC > 0;
- **thresholds**: every pick with score >= threshold, its *excess* return
  ``direction x (r - median_τ(r)) - 2 x fee`` (relative to the universe median at the same moment,
  a round trip of fees charged), mean and 95 % week-block-bootstrap interval, hit rate (share > 0),
  the same for the long and the short picks apart (``sides``), and the **random baseline**: what as many random picks at the same moments with the same
  directions earn in expectation (``direction x mean_τ(r - median)``, exact), and the difference
  — the selection skill — with its own week-block interval. Returns are right-skewed, so the mean
  of ``r - median`` is positive for random longs: the random baseline, not zero, is the bar;
- **deciles** of ``v`` at each moment: mean gross excess ``r - median`` per decile (10 = most
  bullish) with intervals, and the **top decile** as a long-only strategy net of fees.

Baselines are scorers too: ``momentum_24h`` (v = the last 24 h return), ``reversal_24h`` (its
negative) and ``random`` (v uniform); ``momentum`` alone is the score's momentum factor. Their conviction score is the cross-sectional rank, ``50 + 50 |2 pct - 1|``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trader.config import FactorConfig, WeightsConfig
from trader.features.factors import FACTORS, interval_biases, score_universe
from trader.ml.dataset import Dataset
from trader.models import duration_ms

__all__ = [
    "BASELINES",
    "Scored",
    "block_bootstrap_ci",
    "evaluate",
    "factor_scorer",
    "newey_west_t",
    "nw_lags",
    "probability_scorer",
    "rank_ic",
    "rank_scorer",
    "score_at_moments",
    "signal_scorer",
]

BASELINES = ("momentum_24h", "reversal_24h", "random")
_WEEK_MS = 7 * 86_400_000
_MIN_SYMBOLS = 10  # moments with fewer valid symbols give no IC
_MIN_WEEKS = 10  # fewer week blocks make bootstrap intervals too narrow


@dataclass(frozen=True)
class Scored:
    """One scorer's output on a dataset; every array ``(n, M)``.

    Attributes:
        signal: signed signal, higher = more bullish (NaN = no opinion).
        score: conviction 0-100 (what ``--min-score`` compares).
        direction: +1 long, -1 short.
    """

    signal: np.ndarray
    score: np.ndarray
    direction: np.ndarray


# ---------------------------------------------------------------- scorers


def score_at_moments(ds: Dataset, weights: WeightsConfig, factors: FactorConfig) -> tuple[Scored, dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """The hand-made factor score at every moment, from the dataset's stored inputs.

    Same functions as the scan (:func:`~trader.features.factors.interval_biases`,
    :func:`~trader.features.factors.score_universe`), applied elementwise to ``(n, M)`` arrays.

    Returns:
        ``(scored, factor scores {name: (n, M)}, biases per interval)``; ``signal = direction x (score - 50)``.
    """
    per = []
    for inp in ds.score_inputs:
        ind = {k: inp[k] for k in ("ema_fast", "ema_slow", "atr", "adx", "rsi", "macd_hist", "vwap_dist", "obv_slope", "volume_z")}
        ind["bb_ratio"] = inp["bb_ratio_raw"]
        st = {k: inp[k] for k in ("state", "ob_bull", "ob_bear", "fvg_bull", "fvg_bear", "sweep")}
        per.append(interval_biases(ind, st, inp["open"], inp["close"], factors))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = score_universe(per, weights.model_dump(), sharpness=factors.sharpness)
    ok = res.valid & ds.valid
    score = np.where(ok, res.score, np.nan)
    return Scored(res.direction * (score - 50.0), score, res.direction), res.factors, per


def factor_scorer(name: str, factor_scores: Mapping[str, np.ndarray], biases: Sequence[Mapping[str, np.ndarray]], factors: FactorConfig, valid: np.ndarray) -> Scored:
    """One factor alone: its base-interval bias as the signal (``volatility``: the score - 50;
    ``mtf``: the mean over intervals of tanh(trend + momentum)); conviction ``50 + 50 |v|^sharpness``."""
    if name not in FACTORS:
        raise KeyError(name)
    with np.errstate(invalid="ignore"):
        if name == "volatility":
            v = (biases[0]["volatility"] - 50.0) / 50.0
        elif name == "mtf":
            v = np.mean([np.tanh(b["trend"] + b["momentum"]) for b in biases], axis=0)
        else:
            v = biases[0][name]
        v = np.where(valid, np.clip(v, -1.0, 1.0), np.nan)
        score = 50.0 + 50.0 * np.abs(v) ** factors.sharpness
    return Scored(v, score, np.where(v >= 0, 1.0, -1.0))


def rank_scorer(signal: np.ndarray, valid: np.ndarray) -> Scored:
    """A baseline from a raw signal: conviction = cross-sectional rank, ``50 + 50 |2 pct - 1|``."""
    v = np.where(valid & np.isfinite(signal), signal, np.nan)
    pct = _pct_rank(v)
    return Scored(v, 50.0 + 50.0 * np.abs(2.0 * pct - 1.0), np.where(pct >= 0.5, 1.0, -1.0))


def signal_scorer(p: np.ndarray, valid: np.ndarray, factors: Scored | None = None, blend: float = 0.0) -> Scored:
    """The printed signal (:mod:`trader.ml.signal`) at every moment: the model's probability ``p``
    ``(n, M)`` ranked across the symbols valid at each moment, mapped to a score and a direction;
    blended with the hand-made factor score ``factors`` when ``blend`` > 0."""
    from trader.ml.signal import blend_signals, percentiles, score_from_percentile

    q = percentiles(p, valid)
    score, direction = score_from_percentile(q)
    if factors is not None and blend > 0:
        score, direction = blend_signals(score, direction, factors.score, factors.direction, blend)
        score = np.where(np.isfinite(q), score, np.nan)
    return Scored(np.where(np.isfinite(score), direction * (score - 50.0), np.nan), score, direction)


def probability_scorer(p: np.ndarray, valid: np.ndarray) -> Scored:
    """A model's probability of outperforming: ``v = p - 0.5``, conviction ``100 max(p, 1 - p)``."""
    p = np.where(valid, p, np.nan)
    return Scored(p - 0.5, 100.0 * np.maximum(p, 1.0 - p), np.where(p >= 0.5, 1.0, -1.0))


def baseline_scorer(name: str, ds: Dataset, seed: int = 0) -> Scored:
    """``momentum_24h`` (last 24 h return), ``reversal_24h`` (its negative) or ``random`` (seeded)."""
    if name == "momentum_24h":
        return rank_scorer(ds.past_return, ds.valid)
    if name == "reversal_24h":
        return rank_scorer(-ds.past_return, ds.valid)
    if name == "random":
        rng = np.random.default_rng(seed + 7919)
        return rank_scorer(rng.uniform(-1.0, 1.0, ds.valid.shape), ds.valid)
    raise KeyError(name)


# ---------------------------------------------------------------- statistics


def _pct_rank(x: np.ndarray) -> np.ndarray:
    """Per-column rank percentile in (0, 1] of the finite values (ties averaged); NaN elsewhere."""
    from scipy.stats import rankdata

    r = rankdata(x, axis=0, nan_policy="omit")
    n = np.isfinite(x).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = r / np.where(n > 0, n, 1)
    return out


def rank_ic(signal: np.ndarray, forward: np.ndarray, min_symbols: int = _MIN_SYMBOLS) -> np.ndarray:
    """Spearman correlation across symbols at each moment: ``(n, M), (n, M) -> (M,)`` (NaN if too few)."""
    from scipy.stats import rankdata

    ok = np.isfinite(signal) & np.isfinite(forward)
    a = rankdata(np.where(ok, signal, np.nan), axis=0, nan_policy="omit")
    b = rankdata(np.where(ok, forward, np.nan), axis=0, nan_policy="omit")
    cnt = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        am = a - np.nanmean(a, axis=0)
        bm = b - np.nanmean(b, axis=0)
        num = np.nansum(am * bm, axis=0)
        den = np.sqrt(np.nansum(am * am, axis=0) * np.nansum(bm * bm, axis=0))
        ic = num / den
    out: np.ndarray = np.where((cnt >= min_symbols) & (den > 0), ic, np.nan)
    return out


def nw_lags(horizon: str, grid: str) -> int:
    """Newey-West lags for labels over ``horizon`` sampled every ``grid``: twice the overlap.

    Consecutive labels overlap for ``ceil(H / grid)`` moments; with that many lags the Bartlett
    kernel under-corrects (simulated overlapping noise: 10 % of |t| > 1.96 at a 5 % level), with
    twice as many 7 % (tests/unit/test_ml_stats.py).
    """
    return 2 * max(1, -(-duration_ms(horizon) // duration_ms(grid)))


def newey_west_t(x: np.ndarray, lags: int) -> tuple[float, float]:
    """Mean of ``x`` (NaNs dropped) and its t-statistic with a Newey-West (Bartlett) variance.

    ``var = g0 + 2 sum_{l=1..L} (1 - l / (L + 1)) g_l``; ``t = mean / sqrt(var / n)``.
    Source: Newey, W. K. & West, K. D. (1987), Econometrica 55(3), 703-708.
    """
    v = x[np.isfinite(x)]
    n = v.size
    if n < 3:
        return (float(v.mean()) if n else math.nan), math.nan
    m = float(v.mean())
    d = v - m
    var = float(d @ d) / n
    for lag in range(1, min(lags, n - 1) + 1):
        var += 2.0 * (1.0 - lag / (lags + 1.0)) * float(d[lag:] @ d[:-lag]) / n
    return m, (m / math.sqrt(var / n) if var > 0 else math.nan)


def block_bootstrap_ci(values: np.ndarray, blocks: np.ndarray, resamples: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of ``values`` resampling whole blocks (e.g. UTC weeks) with replacement.

    Returns ``(lo, hi)``, NaN when fewer than 2 blocks have values.
    """
    ok = np.isfinite(values)
    if ok.sum() == 0:
        return math.nan, math.nan
    ids, inv = np.unique(blocks[ok], return_inverse=True)
    if ids.size < 2:
        return math.nan, math.nan
    sums = np.bincount(inv, weights=values[ok])
    cnts = np.bincount(inv).astype(np.float64)
    draw = rng.integers(0, ids.size, (resamples, ids.size))
    means = sums[draw].sum(axis=1) / np.maximum(cnts[draw].sum(axis=1), 1.0)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def _iso(ms: int) -> str:
    from trader.timeutil import iso

    return str(iso(ms))


def _r(x: float, nd: int = 5) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


# ---------------------------------------------------------------- the report


def evaluate(
    ds: Dataset,
    scorers: Mapping[str, Scored],
    *,
    horizons: Sequence[str],
    thresholds: Sequence[float],
    grid: str,
    fee: float,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The signal-quality report (schema ``trader.evaluate/1``; README "tune evaluate" documents it).

    Args:
        ds: the dataset (its window is the evaluation window).
        scorers: name -> :class:`Scored` on ``ds``.
        horizons: forward-return horizons (keys of ``ds.forward``).
        thresholds: conviction thresholds (0-100).
        grid: the moments' spacing (for the Newey-West lags).
        fee: per side, fraction.
        bootstrap: block-bootstrap resamples.
        seed: seeds every resample.

    Returns:
        JSON-ready dict: ``{"schema", "window", "scorers": {name: {horizon: {"rank_ic",
        "thresholds", "deciles", "top_decile", "bottom_decile"}}}}``.
    """
    rng = np.random.default_rng(seed)
    weeks = np.broadcast_to((ds.moments_ms // _WEEK_MS)[None, :], ds.valid.shape)
    out: dict[str, Any] = {
        "schema": "trader.evaluate/1",
        "window": {
            "from_ms": int(ds.moments_ms[0]) if ds.n_moments else None,
            "to_ms": int(ds.moments_ms[-1]) if ds.n_moments else None,
            "from": _iso(int(ds.moments_ms[0])) if ds.n_moments else None,
            "to": _iso(int(ds.moments_ms[-1])) if ds.n_moments else None,
            "moments": ds.n_moments,
            "symbols": len(ds.symbols),
            "grid": grid,
            "fee_per_side": fee,
        },
        "scorers": {name: {} for name in scorers},
        "warnings": [],
    }
    n_weeks = int(np.unique(ds.moments_ms // _WEEK_MS).size)
    if n_weeks < _MIN_WEEKS:
        out["warnings"].append(
            f"only {n_weeks} weeks of moments: the week-block intervals are unreliable below {_MIN_WEEKS} (random picks can look significant)"
        )
    for hz in horizons:
        fwd = np.where(ds.valid, ds.forward[hz], np.nan)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(fwd, axis=0)
        excess = fwd - med[None, :]  # gross, vs the universe median at τ
        pool = np.isfinite(excess)  # what a random pick may draw from at τ
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pool_mean = np.nanmean(excess, axis=0)  # (M,) what a random pick earns on average at τ
        lags = nw_lags(hz, grid)
        for name, sc in scorers.items():
            ic = rank_ic(sc.signal, fwd)
            mean, t = newey_west_t(ic, lags)
            ic_ok = np.isfinite(ic)
            ci = block_bootstrap_ci(ic, weeks[0], bootstrap, rng)
            report: dict[str, Any] = {
                "rank_ic": {
                    "mean": _r(mean), "t": _r(t, 2), "n_moments": int(ic_ok.sum()), "ci": [_r(ci[0]), _r(ci[1])],
                    "hit_rate": _r(float((ic[ic_ok] > 0).mean()) if ic_ok.any() else math.nan, 3), "nw_lags": lags,
                },
                "thresholds": {},
            }
            usable = pool & np.isfinite(sc.score)
            for thr in thresholds:
                picks = usable & (sc.score >= thr)
                signed = np.where(picks, sc.direction * excess - 2.0 * fee, np.nan)
                vals = signed[picks]
                n_p = int(picks.sum())
                row: dict[str, Any] = {"n": n_p, "n_long": int((picks & (sc.direction > 0)).sum())}
                if n_p:
                    lo, hi = block_bootstrap_ci(signed.ravel(), weeks.ravel(), bootstrap, rng)
                    row.update(excess_mean=_r(float(vals.mean())), excess_ci=[_r(lo), _r(hi)], hit_rate=_r(float((vals > 0).mean()), 3))
                    row["random"] = _versus_random(picks, sc.direction, excess, pool_mean, weeks, fee, bootstrap, rng)
                    by_side: dict[str, Any] = {}
                    for side_name, side_sign in (("long", 1.0), ("short", -1.0)):
                        m = picks & (sc.direction == side_sign)
                        if m.any():
                            got = np.where(m, signed, np.nan)
                            s_lo, s_hi = block_bootstrap_ci(got.ravel(), weeks.ravel(), bootstrap, rng)
                            by_side[side_name] = {"n": int(m.sum()), "excess_mean": _r(float(np.nanmean(got))), "excess_ci": [_r(s_lo), _r(s_hi)],
                                                  "random": _versus_random(m, sc.direction, excess, pool_mean, weeks, fee, bootstrap, rng)}
                    row["sides"] = by_side
                else:
                    row.update(excess_mean=None, excess_ci=[None, None], hit_rate=None, random=None)
                report["thresholds"][f"{thr:g}"] = row
            deciles, sides = _deciles(sc.signal, excess, usable, weeks, fee, bootstrap, rng)
            report.update(deciles)
            for key, (mask, sign) in sides.items():
                report[key]["random"] = (
                    _versus_random(mask, np.full(mask.shape, sign), excess, pool_mean, weeks, fee, bootstrap, rng) if mask.any() else None
                )
            out["scorers"][name][hz] = report
    return out


def _versus_random(
    picks: np.ndarray, direction: np.ndarray, excess: np.ndarray, pool_mean: np.ndarray, weeks: np.ndarray, fee: float, bootstrap: int, rng: np.random.Generator
) -> dict[str, Any]:
    """The random baseline of a pick set, exactly: random symbols at the same moments with the same
    directions earn, in expectation, ``direction x mean_τ(excess)`` each. Reported with the
    difference ``direction x (excess - mean_τ)`` — the picks' selection skill — and its week-block
    bootstrap interval (which, unlike a p-value from independent random draws, keeps the overlap
    of consecutive picks of one symbol)."""
    d = np.where(picks, direction, 0.0)
    expected = (d * pool_mean[None, :])[picks] - 2.0 * fee
    diff = np.where(picks, d * (excess - pool_mean[None, :]), np.nan)
    lo, hi = block_bootstrap_ci(diff.ravel(), weeks.ravel(), bootstrap, rng)
    return {"excess_mean": _r(float(expected.mean())), "diff_mean": _r(float(np.nanmean(diff[picks]))), "diff_ci": [_r(lo), _r(hi)]}


def _deciles(
    signal: np.ndarray, excess: np.ndarray, usable: np.ndarray, weeks: np.ndarray, fee: float, bootstrap: int, rng: np.random.Generator
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, float]]]:
    """Deciles of the signal per moment, and the top (long) / bottom (short) decile net of fees.

    Returns the report part and ``{"top_decile": (mask, +1.0), "bottom_decile": (mask, -1.0)}``
    (mask and direction) for the random baseline."""
    v = np.where(usable & np.isfinite(signal), signal, np.nan)
    pct = _pct_rank(v)
    dec = np.where(np.isfinite(pct), np.clip(np.ceil(pct * 10.0), 1, 10), 0).astype(int)
    rows = []
    for q in range(1, 11):
        m = dec == q
        vals = np.where(m, excess, np.nan)
        lo, hi = block_bootstrap_ci(vals.ravel(), weeks.ravel(), bootstrap, rng)
        rows.append({"decile": q, "n": int(m.sum()), "excess_mean": _r(float(np.nanmean(vals)) if m.any() else math.nan), "excess_ci": [_r(lo), _r(hi)]})

    def side(q: int, sign: float) -> dict[str, Any]:
        m = dec == q
        vals = np.where(m, sign * excess - 2.0 * fee, np.nan)
        lo, hi = block_bootstrap_ci(vals.ravel(), weeks.ravel(), bootstrap, rng)
        got = vals[m]
        return {
            "n": int(m.sum()), "excess_mean": _r(float(got.mean()) if got.size else math.nan), "excess_ci": [_r(lo), _r(hi)],
            "hit_rate": _r(float((got > 0).mean()) if got.size else math.nan, 3),
        }

    report = {"deciles": rows, "top_decile": side(10, 1.0), "bottom_decile": side(1, -1.0)}
    return report, {"top_decile": (dec == 10, 1.0), "bottom_decile": (dec == 1, -1.0)}
