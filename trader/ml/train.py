"""Walk-forward XGBoost training: out-of-sample figures per fold, a permutation test, a final model.

For each fold of :func:`trader.ml.splits.walk_forward` a booster is fitted on the fold's ``fit``
moments, early-stopped on its ``valid`` moments (inside the training fold, never the test), and
predicts the fold's ``test`` moments. The out-of-sample predictions of all folds together are what
``tune train`` reports (:func:`trader.ml.evaluate.evaluate`, with baselines) and what decides
activation. The *final* model is fitted on every labelled moment with the median of the folds'
early-stopped round counts.

The **permutation test** shuffles the labels among the symbols of each moment (keeping each
moment's class balance and the time structure) and runs the same walk-forward: its out-of-sample
rank IC must be ~0 (|t| < 2). If it is not, information leaks from the labels into the features or
the splits.

Labels (``ml.target``): ``excess`` = 1 when the forward return over ``ml.horizon`` beats the
universe median at the moment (the median symbol itself is dropped), ``barrier`` = 1 when the long
triple-barrier trade nets > 0 after fees.

XGBoost runs with an explicit ``nthread`` in this process (never forked after its threads start;
the scan's process pool uses ``forkserver``).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trader.config import MLConfig
from trader.errors import ModelError
from trader.ml.dataset import Dataset, excess_over_median
from trader.ml.evaluate import newey_west_t, nw_lags, rank_ic
from trader.ml.splits import Fold, walk_forward
from trader.models import duration_ms

__all__ = ["TrainResult", "labels", "train"]

Progress = Callable[[int, int, str], None]


def labels(ds: Dataset, target: str, horizon: str) -> np.ndarray:
    """``(n, M)`` labels 1.0 / 0.0, NaN where unknown (see the module doc)."""
    if target == "barrier":
        b = np.where(ds.valid, ds.barrier, np.nan)
        return np.where(np.isfinite(b), (b > 0).astype(float), np.nan)
    ex = excess_over_median(ds.forward[horizon], ds.valid)
    return np.where(np.isfinite(ex) & (ex != 0), (ex > 0).astype(float), np.nan)


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        booster: the final ``xgboost.Booster`` (all labelled moments).
        folds: per fold ``{fold, test_from_ms, test_to_ms, rows_fit, rows_test, best_rounds, auc,
            logloss, rank_ic, rank_ic_t, top_decile_excess}`` (out of sample).
        oos: ``(n, M)`` out-of-sample probabilities (NaN where a moment was never tested).
        rounds: boosting rounds of the final model.
        params: XGBoost parameters used.
        permutation: ``{rank_ic, t, n_moments}`` of the permutation test, or None.
        rows: labelled rows of the final fit.
        seconds: wall time.
    """

    booster: Any
    folds: list[dict[str, Any]]
    oos: np.ndarray
    rounds: int
    params: dict[str, Any]
    permutation: dict[str, Any] | None
    rows: int
    seconds: float
    test_moments: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))


def _params(cfg: MLConfig) -> dict[str, Any]:
    x = cfg.xgboost
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": x.max_depth,
        "eta": x.learning_rate,
        "min_child_weight": x.min_child_weight,
        "subsample": x.subsample,
        "colsample_bytree": x.colsample_bytree,
        "lambda": x.reg_lambda,
        "nthread": cfg.nthread or (os.cpu_count() or 1),
        "seed": cfg.seed,
        "verbosity": 0,
    }


def _rows(ds: Dataset, y: np.ndarray, moments: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Rows (symbol, moment) of ``moments`` with a label: ``X (k, F) float32, y (k,), (sym, mom) indices``."""
    sub = y[:, moments]
    r, c = np.nonzero(np.isfinite(sub))
    m = moments[c]
    return ds.features[r, m], sub[r, c], (r, m)


class _Rounds:
    """XGBoost callback reporting boosting rounds to a progress function."""

    def __init__(self, progress: Progress | None, offset: list[int], total: int, label: str) -> None:
        self.progress, self.offset, self.total, self.label = progress, offset, total, label

    def make(self) -> Any:
        import xgboost as xgb

        outer = self

        class CB(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if outer.progress is not None:
                    outer.progress(min(outer.offset[0] + epoch + 1, outer.total), outer.total, outer.label)
                return False

        return CB()


def _fit(params: dict[str, Any], X: np.ndarray, y: np.ndarray, rounds: int, valid: tuple[np.ndarray, np.ndarray] | None, early: int, callbacks: list[Any]) -> Any:
    import xgboost as xgb

    dfit = xgb.DMatrix(X, label=y, nthread=params["nthread"])
    evals = []
    if valid is not None:
        evals = [(xgb.DMatrix(valid[0], label=valid[1], nthread=params["nthread"]), "valid")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xgb.train(
            params, dfit, num_boost_round=rounds, evals=evals, early_stopping_rounds=early if valid is not None else None,
            verbose_eval=False, callbacks=callbacks,
        )


def _fold_metrics(ds: Dataset, cfg: MLConfig, p: np.ndarray, y: np.ndarray, moments: np.ndarray, oos_p: np.ndarray) -> dict[str, Any]:
    """AUC, log loss, rank IC (Newey-West t) and top-decile excess net of fees on one test fold."""
    from sklearn.metrics import log_loss, roc_auc_score

    both = len(np.unique(y)) == 2
    horizon, fee = cfg.horizon, cfg.fee
    fwd = np.where(ds.valid, ds.forward[horizon], np.nan)[:, moments]
    sig = oos_p[:, moments] - 0.5
    ic = rank_ic(sig, fwd)
    mean, t = newey_west_t(ic, nw_lags(horizon, cfg.grid))
    ex = excess_over_median(ds.forward[horizon], ds.valid)[:, moments]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        top = []
        for j in range(sig.shape[1]):
            ok = np.isfinite(sig[:, j]) & np.isfinite(ex[:, j])
            if ok.sum() >= 10:
                k = max(1, int(ok.sum()) // 10)
                order = np.argsort(-np.where(ok, sig[:, j], -np.inf))[:k]
                top.extend(ex[order, j])
    top_ex = float(np.mean(top)) - 2.0 * fee if top else math.nan
    return {
        "auc": round(float(roc_auc_score(y, p)), 4) if both else None,
        "logloss": round(float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0.0, 1.0])), 5),
        "rank_ic": None if not math.isfinite(mean) else round(mean, 5),
        "rank_ic_t": None if not math.isfinite(t) else round(t, 2),
        "top_decile_excess": None if not math.isfinite(top_ex) else round(top_ex, 5),
    }


def _walk(
    ds: Dataset, y: np.ndarray, folds: list[Fold], params: dict[str, Any], cfg: MLConfig, progress: Progress | None, offset: list[int], total: int, label: str
) -> tuple[np.ndarray, list[dict[str, Any]], list[int]]:
    oos = np.full(y.shape, np.nan)
    metrics: list[dict[str, Any]] = []
    best: list[int] = []
    for f in folds:
        Xf, yf, _ = _rows(ds, y, f.fit)
        Xv, yv, _ = _rows(ds, y, f.valid)
        _, yt, (rt, mt) = _rows(ds, y, f.test)
        if yf.size < 2 or len(np.unique(yf)) < 2:
            raise ModelError(f"fold {f.index + 1}: the training fold has {yf.size} labelled rows of one class only")
        cb = _Rounds(progress, offset, total, f"{label} fold {f.index + 1}/{len(folds)}").make()
        booster = _fit(params, Xf, yf, cfg.xgboost.n_estimators, (Xv, yv) if yv.size else None, cfg.xgboost.early_stopping_rounds, [cb])
        offset[0] += cfg.xgboost.n_estimators
        n_best = int(getattr(booster, "best_iteration", cfg.xgboost.n_estimators - 1)) + 1
        best.append(n_best)
        # predict every valid row of the test moments (labelled or not), as a scan would
        r_all, c_all = np.nonzero(ds.valid[:, f.test])
        m_all = f.test[c_all]
        if r_all.size:
            oos[r_all, m_all] = booster.inplace_predict(ds.features[r_all, m_all], iteration_range=(0, n_best))
        pt = oos[rt, mt]
        m = _fold_metrics(ds, cfg, pt, yt, f.test, oos) if yt.size else {}
        metrics.append({
            "fold": f.index + 1,
            "test_from_ms": int(ds.moments_ms[f.test[0]]),
            "test_to_ms": int(ds.moments_ms[f.test[-1]]),
            "rows_fit": int(yf.size),
            "rows_valid": int(yv.size),
            "rows_test": int(yt.size),
            "best_rounds": n_best,
            **m,
        })
    return oos, metrics, best


def train(ds: Dataset, cfg: MLConfig, *, permutation: bool = False, progress: Progress | None = None) -> TrainResult:
    """Walk-forward training on ``ds`` (see the module doc).

    Args:
        ds: the dataset (its whole window is used).
        cfg: the ``ml`` section (target, horizon, folds, purge/embargo, XGBoost parameters, seed).
        permutation: also run the permutation test (doubles the fold work).
        progress: ``progress(done, total, label)`` in boosting rounds.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ModelError: fewer labelled rows than ``ml.min_training_samples``, or folds that cannot be formed.
    """
    t0 = time.perf_counter()
    y = labels(ds, cfg.target, cfg.horizon)
    n_labelled = int(np.isfinite(y).sum())
    if n_labelled < cfg.min_training_samples:
        raise ModelError(f"only {n_labelled} labelled rows (ml.min_training_samples = {cfg.min_training_samples}); warm a longer history")
    has_label = np.isfinite(y).any(axis=0)
    last = int(np.flatnonzero(has_label)[-1]) + 1 if has_label.any() else 0
    moments = ds.moments_ms[:last]
    folds = walk_forward(
        moments, cfg.folds, min_train_fraction=cfg.min_train_fraction, purge_ms=duration_ms(cfg.horizon),
        embargo_ms=duration_ms(cfg.embargo), valid_fraction=cfg.valid_fraction,
    )
    params = _params(cfg)
    runs = 1 + len(folds) * (2 if permutation else 1)
    total = runs * cfg.xgboost.n_estimators
    offset = [0]
    oos, metrics, best = _walk(ds, y, folds, params, cfg, progress, offset, total, "walk-forward")
    perm = None
    if permutation:
        rng = np.random.default_rng(cfg.seed + 1)
        yp = y.copy()
        for j in range(y.shape[1]):  # shuffle labels among the symbols of each moment
            idx = np.flatnonzero(np.isfinite(y[:, j]))
            yp[idx, j] = y[rng.permutation(idx), j]
        p_oos, _, _ = _walk(ds, yp, folds, params, cfg, progress, offset, total, "permutation")
        tested = np.unique(np.concatenate([f.test for f in folds]))
        fwd = np.where(ds.valid, ds.forward[cfg.horizon], np.nan)[:, tested]
        ic = rank_ic(p_oos[:, tested] - 0.5, fwd)
        mean, t = newey_west_t(ic, nw_lags(cfg.horizon, cfg.grid))
        perm = {"rank_ic": None if not math.isfinite(mean) else round(mean, 5), "t": None if not math.isfinite(t) else round(t, 2), "n_moments": int(np.isfinite(ic).sum())}
    rounds = max(10, int(np.median(best)))
    Xa, ya, _ = _rows(ds, y, np.arange(last))
    cb = _Rounds(progress, offset, total, "final model").make()
    params_final = dict(params)
    booster = _fit(params_final, Xa, ya, rounds, None, cfg.xgboost.early_stopping_rounds, [cb])
    if progress is not None:
        progress(total, total, "done")
    tested = np.unique(np.concatenate([f.test for f in folds]))
    return TrainResult(
        booster=booster, folds=metrics, oos=oos, rounds=rounds, params=params, permutation=perm, rows=int(ya.size),
        seconds=time.perf_counter() - t0, test_moments=tested,
    )
