"""The printed signal: what ``trader scan`` prints when a model is active — one definition for the
scan, ``tune evaluate``, ``tune train``'s report and the trade engine. Pure.

**Direction and score come from the model alone.** The model predicts, for every symbol of the
universe, the probability ``p`` that its return over ``ml.horizon`` beats the universe median. At
each moment (a scan, or a moment of the dataset) ``p`` is ranked across the universe:
``q`` = its cross-sectional percentile in (0, 1] (ties averaged). Then

- **direction** = long when ``q >= 0.5`` (the upper half of the model's ranking), short below;
- **conviction** ``u = |2 q - 1|`` in [0, 1] (0 at the median, 1 at either extreme);
- **score** = 50 + 25 x ``u`` / 0.8 up to ``u`` = 0.8, then 75 + 25 x (``u`` - 0.8) / 0.2 — a
  piecewise-linear map through :data:`SCORE_KNOTS`, so that **75 marks the model's top and bottom
  deciles** (``u >= 0.8``), 87.5 its top and bottom 5 %, 100 the very extremes; a directional signal
  always scores >= 50.

Ranking first makes the score's meaning stable across regimes and model versions: at every
moment about 10 % of the universe scores >= 75 on each side, whatever the model's absolute level
of confidence (a calibration on absolute probabilities, tried, drifted between walk-forward folds:
40 % of the last folds' signals scored >= 75 on an earlier fold's calibration).

**What a signal is worth** (:class:`SignalTable`, fitted on the model's walk-forward test folds and
kept in its ``meta.json``): the expected excess return over the universe median at the horizon as a
function of ``q`` (an isotonic — monotone — fit, sampled on :data:`Q_KNOTS`), printed for the
signal's side and **net of a round trip of taker fees**; and the out-of-sample hit rate of the
signal's score bucket (:data:`BUCKETS`: the share of the folds' signals in that bucket whose side,
net of the round trip, beat the median).

**Blend** (``scan.blend`` = ``b``, default 0): the printed signed score is
``(1 - b) x model + b x factors`` where each is ``direction x (score - 50)``; ``tune evaluate``
measures the blend like any scorer (scorer ``blend``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["BUCKETS", "Q_KNOTS", "SCORE_KNOTS", "SignalTable", "blend_signals", "fit_signal_table", "score_from_percentile"]

#: ``(conviction u, score)`` knots of the piecewise-linear score map
SCORE_KNOTS: tuple[tuple[float, float], ...] = ((0.0, 50.0), (0.8, 75.0), (1.0, 100.0))
#: score buckets whose out-of-sample hit rate is reported: [lo, hi)
BUCKETS: tuple[float, ...] = (50.0, 60.0, 70.0, 75.0, 80.0, 90.0, 100.0)
#: percentiles at which the expected excess is tabulated
Q_KNOTS: tuple[float, ...] = tuple(round(k / 20, 2) for k in range(21))


def score_from_percentile(q: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(score, direction)`` from the model's cross-sectional percentile ``q`` (any shape; NaN -> NaN, 0).

    Direction is +1.0 (``q >= 0.5``) or -1.0; score in [50, 100] (see the module docstring).
    """
    qa = np.asarray(q, dtype=np.float64)
    u = np.abs(2.0 * qa - 1.0)
    xs, ys = zip(*SCORE_KNOTS, strict=True)
    score = np.where(np.isfinite(qa), np.interp(np.clip(u, 0.0, 1.0), xs, ys), np.nan)
    direction = np.where(np.isfinite(qa), np.where(qa >= 0.5, 1.0, -1.0), 0.0)
    return score, direction


def blend_signals(model_score: np.ndarray, model_dir: np.ndarray, factor_score: np.ndarray, factor_dir: np.ndarray,
                  weight: float) -> tuple[np.ndarray, np.ndarray]:
    """``(score, direction)`` of ``(1 - weight) x model + weight x factors`` in signed score space
    (``direction x (score - 50)``); ``weight`` 0 returns the model's signal unchanged."""
    if weight <= 0:
        return model_score, model_dir
    signed = (1.0 - weight) * model_dir * (model_score - 50.0) + weight * factor_dir * (factor_score - 50.0)
    return 50.0 + np.abs(signed), np.where(signed >= 0, 1.0, -1.0)


@dataclass(frozen=True)
class SignalTable:
    """What a model's signals were worth in its walk-forward test folds.

    Attributes:
        horizon: the label horizon (``"24h"``); fee_round_trip: fraction charged per round trip (2 x taker).
        q_knots: :data:`Q_KNOTS`; excess: mean excess return over the universe median at each knot
            (fraction, gross, monotone in ``q``).
        buckets: ``[{"lo", "hi", "n", "hit_rate"}]`` per score bucket (hit: ``direction x excess -
            fee_round_trip > 0``).
        rows: test-fold signals the table was fitted on.
    """

    horizon: str
    fee_round_trip: float
    q_knots: tuple[float, ...]
    excess: tuple[float, ...]
    buckets: tuple[dict[str, Any], ...]
    rows: int

    def expected_net_excess(self, q: float, direction: float) -> float:
        """Expected excess over the median of acting on a signal at percentile ``q`` on its side, net of a
        round trip of fees (fraction; NaN for a NaN ``q``)."""
        if not math.isfinite(q):
            return math.nan
        return float(direction * np.interp(q, self.q_knots, self.excess) - self.fee_round_trip)

    def hit_rate(self, score: float) -> float | None:
        """The out-of-sample hit rate of ``score``'s bucket, or None (no signal of the folds fell in it)."""
        for b in self.buckets:
            if b["lo"] <= score < b["hi"] or (score >= 100.0 and b["hi"] >= 100.0):
                return b["hit_rate"]  # type: ignore[no-any-return]
        return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["q_knots"], d["excess"], d["buckets"] = list(self.q_knots), list(self.excess), list(self.buckets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SignalTable:
        return cls(str(d["horizon"]), float(d["fee_round_trip"]), tuple(d["q_knots"]), tuple(d["excess"]),
                   tuple(d["buckets"]), int(d["rows"]))


def fit_signal_table(q: np.ndarray, excess: np.ndarray, horizon: str, fee_round_trip: float) -> SignalTable:
    """Fit :class:`SignalTable` on test-fold signals.

    Args:
        q: ``(k,)`` cross-sectional percentiles of the model's test-fold predictions.
        excess: ``(k,)`` their realised excess return over the universe median at the horizon (gross, fraction).
        horizon: the label horizon; fee_round_trip: fraction (2 x the taker fee).

    Raises:
        ValueError: no finite row.
    """
    from sklearn.isotonic import IsotonicRegression

    ok = np.isfinite(q) & np.isfinite(excess)
    if not ok.any():
        raise ValueError("no test-fold signal with a known outcome to fit the signal table on")
    qq, ee = q[ok], excess[ok]
    iso = IsotonicRegression(out_of_bounds="clip").fit(qq, ee)
    knots = np.asarray(Q_KNOTS)
    table = iso.predict(np.clip(knots, qq.min(), qq.max()))
    score, direction = score_from_percentile(qq)
    win = direction * ee - fee_round_trip > 0
    buckets = []
    for lo, hi in itertools.pairwise(BUCKETS):
        m = (score >= lo) & ((score < hi) if hi < 100.0 else (score <= hi))
        n = int(m.sum())
        buckets.append({"lo": lo, "hi": hi, "n": n, "hit_rate": round(float(win[m].mean()), 4) if n else None})
    return SignalTable(horizon, fee_round_trip, tuple(float(k) for k in knots), tuple(round(float(x), 6) for x in table),
                       tuple(buckets), int(ok.sum()))


def percentiles(p: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Cross-sectional percentile of ``p`` along axis 0 (symbols) at each moment: ``(n,)`` or ``(n, M)``
    -> same shape, NaN where invalid or where the cross-section is too small
    (:func:`trader.features.matrix.cross_sectional_rank`)."""
    from trader.features.matrix import cross_sectional_rank

    ok = np.isfinite(p) if valid is None else (valid & np.isfinite(p))
    return cross_sectional_rank(p[..., None], ok)[..., 0].astype(np.float64)


def bucket_label(score: float, buckets: Sequence[float] = BUCKETS) -> str:
    """``"75-80"``: the bucket of a score, for tables."""
    for lo, hi in itertools.pairwise(buckets):
        if lo <= score < hi:
            return f"{lo:g}-{hi:g}"
    return f"{buckets[-2]:g}-{buckets[-1]:g}"
