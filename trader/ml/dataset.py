"""The ML dataset: features at every moment of a grid, labels strictly after it.

A *moment* ``τ`` (epoch ms) is the close of a base-interval kline on the grid (``ml.grid``, every
4h close by default): ``τ = close_time + 1``, so a kline belongs to the past at ``τ`` exactly when
its ``close_time < τ``. At each moment and for each symbol:

- **features** (:mod:`trader.features.matrix`) come from klines closed by ``τ``: the base kline that
  closed at ``τ`` and, for a higher interval, its latest kline closed by ``τ`` (a 4h feature at 05:00
  is the 00:00-03:59 kline's). They are computed once over each series' whole history (O(T)) and
  sampled at the moments; nothing after ``τ`` is read (test: appending or replacing later klines
  with wild prices changes no feature at ``τ``);
- **labels** come strictly after ``τ``: the forward return ``close(τ + H) / close(τ) - 1`` per
  horizon ``H``, its *excess* over the universe median at ``τ``, and a long triple-barrier trade
  entered at ``close(τ)`` (take profit / stop loss in ATRs, time limit ``ml.horizon``, the stop
  checked first when one kline touches both, fees per side charged twice).

Shapes: ``n`` symbols x ``M`` moments x ``F`` features. A symbol listed later, or with a gap,
simply has ``valid == False`` at the moments it cannot serve.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trader.config import BarrierConfig
from trader.errors import ModelError
from trader.features.matrix import (
    CROSS_FEATURES,
    INTERVAL_FEATURES,
    SCORE_INPUTS,
    FeatureParams,
    cross_interval_features,
    cross_sectional_rank,
    feature_names,
    interval_series,
)
from trader.models import (
    CLOSE,
    CLOSE_TIME,
    HIGH,
    LOW,
    OPEN,
    QUOTE_VOLUME,
    TAKER_BUY_BASE_VOLUME,
    VOLUME,
    duration_ms,
    interval_ms,
)

__all__ = ["Dataset", "barrier_returns", "build_dataset", "excess_over_median"]

_ROWS = (OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME, TAKER_BUY_BASE_VOLUME)
_CHUNK = 32  # symbols per feature pass: bounds memory at ~40 (32, T) arrays per interval


@dataclass
class Dataset:
    """Features and labels of a universe on a grid of moments.

    Attributes:
        symbols: ``(n,)`` symbol names.
        params: the feature parameters.
        moments_ms: ``(M,)`` int64 moments, epoch ms (a base kline's ``close_time + 1``), ascending.
        features: ``(n, M, F)`` float32, columns :attr:`feature_names`: each feature's
            cross-sectional rank in (0, 1] at the moment (:func:`~trader.features.matrix.cross_sectional_rank`);
            NaN where not valid.
        feature_names: ``F`` names.
        score_inputs: per interval, ``{name: (n, M)}`` float64 — the raw inputs of the configurable
            score (:func:`trader.ml.evaluate.score_at_moments` recomputes it for any weights).
        close: ``(n, M)`` base close at each moment (quote asset).
        past_return: ``(n, M)`` simple return over the last 24 h to ``τ`` (the momentum baseline).
        forward: ``{horizon: (n, M)}`` simple forward return from ``τ`` to ``τ + H`` (NaN unknown).
        barrier: ``(n, M)`` net return (fraction, fees included) of the long triple-barrier trade.
        valid: ``(n, M)`` bool: every interval has a fresh kline and the warm-up is over.
        fingerprint: hex digest of the klines used (symbols, intervals, every series' rows and closes).
        label_horizon: ``ml.horizon`` of the barrier label (e.g. ``"24h"``).
    """

    symbols: list[str]
    params: FeatureParams
    moments_ms: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    score_inputs: list[dict[str, np.ndarray]]
    close: np.ndarray
    past_return: np.ndarray
    forward: dict[str, np.ndarray]
    barrier: np.ndarray
    valid: np.ndarray
    fingerprint: str
    label_horizon: str
    fee: float = 0.001
    extra: dict[str, object] = field(default_factory=dict)

    def window(self, start_ms: int | None, end_ms: int | None) -> Dataset:
        """The moments with ``start_ms <= τ < end_ms`` (either bound optional); arrays are views."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.moments_ms, start_ms, side="left"))
        hi = self.moments_ms.size if end_ms is None else int(np.searchsorted(self.moments_ms, end_ms, side="left"))
        sl = slice(lo, hi)
        return Dataset(
            symbols=self.symbols,
            params=self.params,
            moments_ms=self.moments_ms[sl],
            features=self.features[:, sl],
            feature_names=self.feature_names,
            score_inputs=[{k: v[:, sl] for k, v in d.items()} for d in self.score_inputs],
            close=self.close[:, sl],
            past_return=self.past_return[:, sl],
            forward={h: v[:, sl] for h, v in self.forward.items()},
            barrier=self.barrier[:, sl],
            valid=self.valid[:, sl],
            fingerprint=self.fingerprint,
            label_horizon=self.label_horizon,
            fee=self.fee,
            extra=dict(self.extra),
        )

    @property
    def n_moments(self) -> int:
        """``M``."""
        return int(self.moments_ms.size)


def excess_over_median(returns: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(n, M)`` returns minus the median over symbols at each moment (NaNs and invalid ignored)."""
    r = np.where(valid, returns, np.nan) if valid is not None else returns
    with np.errstate(invalid="ignore"), _quiet():
        med = np.nanmedian(r, axis=0)
    out: np.ndarray = r - med[None, :]
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's "All-NaN slice" warnings (an empty moment is NaN, as intended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def barrier_returns(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, atr_pct: np.ndarray, idx: np.ndarray, h: int, cfg: BarrierConfig, fee: float
) -> np.ndarray:
    """Net return of a long triple-barrier trade entered at ``close[:, idx]``; pure.

    Args:
        close, high, low: ``(g, T)`` base klines (quote asset), contiguous in time.
        atr_pct: ``(g, T)`` ATR / close at entry.
        idx: ``(g, M)`` entry kline index per moment (-1 = none).
        h: time limit in klines.
        cfg: take profit / stop loss in ATRs.
        fee: per side, fraction.

    Returns:
        ``(g, M)``: ``+tp - 2 fee`` if the take profit is touched first, ``-sl - 2 fee`` if the stop
        is (the stop wins ties within one kline: we cannot know the order), else the return at the
        time limit minus ``2 fee``; NaN if the window runs past the data or has no entry.
    """
    T = close.shape[1]
    out = np.full(idx.shape, np.nan)
    ok = (idx >= 0) & (idx + h < T)
    if not ok.any() or h < 1:
        return out
    r, m = np.nonzero(ok)
    j = idx[r, m]
    entry = close[r, j]
    tp = cfg.take_profit_atr * atr_pct[r, j]
    sl = cfg.stop_loss_atr * atr_pct[r, j]
    hw = sliding_window_view(high, h, axis=1)[r, j + 1] / entry[:, None] - 1.0  # (E, h) after entry
    lw = sliding_window_view(low, h, axis=1)[r, j + 1] / entry[:, None] - 1.0
    hit_tp = hw >= tp[:, None]
    hit_sl = lw <= -sl[:, None]
    first_tp = np.where(hit_tp.any(axis=1), np.argmax(hit_tp, axis=1), h)
    first_sl = np.where(hit_sl.any(axis=1), np.argmax(hit_sl, axis=1), h)
    final = close[r, j + h] / entry - 1.0
    gross = np.where(first_sl <= first_tp, np.where(first_sl < h, -sl, final), tp)
    gross = np.where((first_sl == h) & (first_tp == h), final, gross)
    out[r, m] = gross - 2.0 * fee
    return out


def _fingerprint(symbols: Sequence[str], intervals: Sequence[str], blocks: dict[tuple[str, str], np.ndarray]) -> str:
    h = hashlib.sha256()
    for s in symbols:
        for iv in intervals:
            b = blocks[(s, iv)]
            h.update(f"{s}/{iv}/{b.shape[1]}".encode())
            h.update(np.ascontiguousarray(b[[CLOSE_TIME, CLOSE]]).tobytes())
    return h.hexdigest()[:16]


def build_dataset(
    load: Callable[[str, str], np.ndarray],
    symbols: Sequence[str],
    params: FeatureParams,
    *,
    horizons: Sequence[str] = ("4h", "24h", "72h"),
    label_horizon: str = "24h",
    grid: str = "4h",
    barrier: BarrierConfig | None = None,
    fee: float = 0.001,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    rank: bool = True,
    features: bool = True,
    labels: bool = True,
) -> Dataset:
    """Build the dataset of ``symbols`` from their stored klines.

    Args:
        load: ``load(symbol, interval) -> (11, n)`` kline block, the whole stored history
            (e.g. ``lambda s, i: store.load(s, i)``).
        symbols: the universe.
        params: feature parameters (``params.intervals``, base first).
        horizons: forward-return horizons (durations, multiples of the base interval).
        label_horizon: time limit of the barrier label.
        grid: moments are base closes at multiples of this duration (UTC).
        barrier: take profit / stop loss (default :class:`~trader.config.BarrierConfig`).
        fee: per side, fraction.
        start_ms, end_ms: keep moments ``start_ms <= τ < end_ms`` (labels may read klines after ``end_ms``).
        progress: ``progress(done, total)`` per (symbol chunk, interval).
        rank: rank the features cross-sectionally (what a model reads); False leaves them raw, for
            callers that only need the score inputs and labels (a backtest without a model).
        features: build the model's feature matrix; False leaves ``features`` ``(n, M, 0)`` (a backtest
            without a model reads only the score inputs).
        labels: compute the triple-barrier label; False leaves ``barrier`` NaN (forward returns are kept).

    Returns:
        A :class:`Dataset`.

    Raises:
        ModelError: no symbol has data for every interval, or a horizon is not a multiple of the
            base interval.
    """
    intervals = params.intervals
    base = intervals[0]
    base_ms = interval_ms(base)
    grid_ms = duration_ms(grid)
    barrier = barrier or BarrierConfig()
    for hz in (*horizons, label_horizon):
        if duration_ms(hz) % base_ms:
            raise ModelError(f"horizon {hz} is not a whole number of {base} klines")
    blocks: dict[tuple[str, str], np.ndarray] = {}
    kept: list[str] = []
    for s in symbols:
        got = {iv: load(s, iv) for iv in intervals}
        if all(b.shape[1] > 0 for b in got.values()):
            kept.append(s)
            for iv, b in got.items():
                blocks[(s, iv)] = b
    if not kept:
        raise ModelError("no symbol has stored klines for every interval " + "/".join(intervals) + "; run 'trader warm' first")
    n = len(kept)
    # the grid: every base close on a multiple of grid_ms, over all symbols
    ends = np.unique(np.concatenate([blocks[(s, base)][CLOSE_TIME].astype(np.int64) + 1 for s in kept]))
    moments = ends[ends % grid_ms == 0]
    if start_ms is not None:
        moments = moments[moments >= start_ms]
    if end_ms is not None:
        moments = moments[moments < end_ms]
    M = moments.size
    names = feature_names(intervals)
    F = len(names) if features else 0
    X = np.full((n, M, F), np.nan, dtype=np.float32)
    valid = np.ones((n, M), dtype=bool)
    score_inputs = [{k: np.full((n, M), np.nan) for k in SCORE_INPUTS} for _ in intervals]
    aligned: list[dict[str, np.ndarray]] = [{} for _ in intervals]
    close_at = np.full((n, M), np.nan)
    past = np.full((n, M), np.nan)
    forward = {hz: np.full((n, M), np.nan) for hz in horizons}
    barrier_ret = np.full((n, M), np.nan)
    h_bar = duration_ms(label_horizon) // base_ms
    day = max(1, 86_400_000 // base_ms)
    warm = params.min_klines
    n_per = len(INTERVAL_FEATURES)
    total = len(intervals) * -(-n // _CHUNK)
    done = 0
    for k_iv, iv in enumerate(intervals):
        step = interval_ms(iv)
        # symbols with identical timelines are stacked into one pass
        groups: dict[bytes, list[int]] = {}
        for i, s in enumerate(kept):
            groups.setdefault(blocks[(s, iv)][CLOSE_TIME].tobytes(), []).append(i)
        for members in groups.values():
            for a in range(0, len(members), _CHUNK):
                rows = members[a : a + _CHUNK]
                stack = np.stack([blocks[(kept[i], iv)][list(_ROWS)] for i in rows])  # (g, 7, T)
                ends_iv = blocks[(kept[rows[0]], iv)][CLOSE_TIME].astype(np.int64) + 1
                o, hi, lo, cl, v, q, tb = (np.ascontiguousarray(stack[:, r]) for r in range(7))
                feats, inputs = interval_series(o, hi, lo, cl, v, q, tb, params)
                # the latest kline of this interval closed by each moment, fresh (closed within one interval)
                j = np.searchsorted(ends_iv, moments, side="right") - 1
                fresh = (j >= warm - 1) & (ends_iv[np.maximum(j, 0)] > moments - step)
                jj = np.maximum(j, 0)
                ridx = np.asarray(rows)
                valid[ridx] &= fresh[None, :]
                if features:
                    for col, name in enumerate(INTERVAL_FEATURES):
                        X[ridx, :, k_iv * n_per + col] = feats[name][:, jj]
                        aligned[k_iv].setdefault(name, np.full((n, M), np.nan))[ridx] = feats[name][:, jj]
                for name in SCORE_INPUTS:
                    score_inputs[k_iv][name][ridx] = inputs[name][:, jj]
                if k_iv == 0:
                    c0 = stack[:, 3]
                    close_at[ridx] = c0[:, jj]
                    exact = ends_iv[jj] == moments  # the base kline closing at τ itself
                    valid[ridx] &= exact[None, :]
                    pj = jj - day
                    past[ridx] = np.where(pj >= 0, c0[:, jj] / c0[:, np.maximum(pj, 0)] - 1.0, np.nan)
                    for hz in horizons:
                        hk = duration_ms(hz) // base_ms
                        fj = jj + hk
                        inside = fj < ends_iv.size
                        fjc = np.minimum(fj, ends_iv.size - 1)
                        contiguous = inside & (ends_iv[fjc] == moments + hk * base_ms)
                        forward[hz][ridx] = np.where(contiguous[None, :], c0[:, fjc] / c0[:, jj] - 1.0, np.nan)
                    if labels:
                        atr_pct = feats["atr_pct"]
                        idx = np.where(exact, jj, -1)
                        fjb = np.minimum(jj + h_bar, ends_iv.size - 1)
                        idx = np.where(ends_iv[fjb] == moments + h_bar * base_ms, idx, -1)
                        barrier_ret[ridx] = barrier_returns(c0, stack[:, 1], stack[:, 2], atr_pct, np.broadcast_to(idx, (len(rows), M)).copy(), h_bar, barrier, fee)
                done += 1
                if progress is not None:
                    progress(done, total)
    if features:
        cross = cross_interval_features(aligned, params.factors.adx_ref)
        for col, name in enumerate(CROSS_FEATURES):
            X[:, :, len(intervals) * n_per + col] = cross[name]
        X[~valid] = np.nan
    if rank and features:
        X = cross_sectional_rank(X, valid)  # what the model sees (trader.features.matrix)
    # moments before any symbol is warm carry nothing: start at the first usable one
    usable = np.flatnonzero(valid.any(axis=0))
    first = int(usable[0]) if usable.size else M
    if first:
        X, valid, close_at, past, barrier_ret = X[:, first:], valid[:, first:], close_at[:, first:], past[:, first:], barrier_ret[:, first:]
        forward = {h: v[:, first:] for h, v in forward.items()}
        score_inputs = [{k: v[:, first:] for k, v in d.items()} for d in score_inputs]
        moments = moments[first:]
    return Dataset(
        symbols=kept,
        params=params,
        moments_ms=moments,
        features=X,
        feature_names=names,
        score_inputs=score_inputs,
        close=close_at,
        past_return=past,
        forward=forward,
        barrier=barrier_ret,
        valid=valid,
        fingerprint=_fingerprint(kept, intervals, blocks),
        label_horizon=label_horizon,
        fee=fee,
    )
