"""``trader tune search``: Bayesian optimisation (Optuna TPE) of the score and the model, judged out of sample.

What is searched (``space``):

- ``score``: the blend's weights (``scan.weights``) and every coefficient of the factor formulas
  (``scan.factors``: term weights in [-1, 1], so a term can turn around, scales, ADX damping,
  sharpness);
- ``model``: XGBoost's main hyper-parameters and the ``ml`` factor's weight;
- ``all``: both together (the score then includes the fold model's out-of-sample probability).

The objective of a trial is the mean over the *inner* walk-forward folds (every fold but the last)
of the out-of-sample figure ``objective`` at ``ml.horizon``: ``ic`` = mean rank IC of
``direction x (score - 50)`` with the forward return, ``excess`` = top-decile excess over the
universe median net of a round trip of fees. Each fold's value is reported to Optuna so that the
median pruner stops hopeless trials early. The **last fold is never seen by the search**: the best
parameters are measured on it afterwards, beside the default score and the baselines on the same
moments, and those figures — not the objective — are what the overlay's comments report.

Storage: a SQLite file by default; ``storage`` takes any SQLAlchemy URL (e.g.
``postgresql://user@host/db``), so several machines can run one study (give each its own
``worker`` number: it offsets the sampler's seed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from trader.config import FactorConfig, MLConfig, Settings, WeightsConfig
from trader.errors import ConfigError, ModelError
from trader.ml.dataset import Dataset, excess_over_median
from trader.ml.evaluate import evaluate, newey_west_t, nw_lags, probability_scorer, rank_ic, score_at_moments
from trader.ml.splits import walk_forward
from trader.models import duration_ms

__all__ = ["SPACES", "overlay_yaml", "run_search"]

SPACES = ("score", "model", "all")
_WEIGHTS = ("trend", "momentum", "volume", "volatility", "structure", "mtf")
#: factor coefficients searched in [-1, 1] (a term's weight; negative turns it around)
_TERMS = (
    "trend_spread", "trend_distance", "momentum_rsi", "momentum_macd", "momentum_vwap", "volume_obv", "volume_z",
    "structure_state", "structure_ob", "structure_fvg", "structure_sweep",
)
#: factor scales and shapes: (low, high, log)
_SCALES: dict[str, tuple[float, float, bool]] = {
    "trend_spread_scale": (0.5, 8.0, True), "trend_distance_scale": (0.5, 8.0, True), "adx_ref": (10.0, 50.0, False),
    "adx_floor": (0.0, 1.0, False), "rsi_scale": (5.0, 40.0, True), "macd_gain": (0.5, 10.0, True), "vwap_scale": (0.5, 8.0, True),
    "obv_gain": (0.5, 8.0, True), "volume_z_scale": (0.5, 8.0, True), "fvg_scale": (1.0, 8.0, True), "sharpness": (1.0, 6.0, False),
}


def _suggest(trial: Any, space: str) -> tuple[WeightsConfig, FactorConfig, dict[str, Any], float]:
    """A trial's hand-made score weights and coefficients, XGBoost parameters, and ``scan.blend``
    (the hand-made score's share in the printed signal; 0 in the ``model`` space)."""
    w: dict[str, float] = {}
    f: dict[str, float] = {}
    xgb: dict[str, Any] = {}
    blend = 0.0
    if space in ("score", "all"):
        for k in _WEIGHTS:
            w[k] = trial.suggest_float(f"w_{k}", 0.0, 1.0)
        if all(v < 1e-3 for v in w.values()):
            w["trend"] = 1e-3  # the config needs one positive weight
        for k in _TERMS:
            f[k] = trial.suggest_float(f"f_{k}", -1.0, 1.0)
        for k, (lo, hi, log) in _SCALES.items():
            f[k] = trial.suggest_float(f"f_{k}", lo, hi, log=log)
    if space in ("model", "all"):
        blend = trial.suggest_float("blend", 0.0, 1.0) if space == "all" else 0.0
        xgb = {
            "max_depth": trial.suggest_int("x_max_depth", 2, 6),
            "learning_rate": trial.suggest_float("x_learning_rate", 0.01, 0.3, log=True),
            "min_child_weight": trial.suggest_float("x_min_child_weight", 5.0, 1000.0, log=True),
            "subsample": trial.suggest_float("x_subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("x_colsample_bytree", 0.3, 1.0),
            "reg_lambda": trial.suggest_float("x_reg_lambda", 0.1, 20.0, log=True),
        }
    return w_cfg(w, space), FactorConfig(**f), xgb, blend


def w_cfg(w: dict[str, float], space: str) -> WeightsConfig:
    """Weights of a trial's hand-made score (the defaults in the ``model`` space, where they play no part)."""
    if space == "model":
        return WeightsConfig()
    return WeightsConfig(**{k: w.get(k, 0.0) for k in _WEIGHTS})


def _scored(ds: Dataset, weights: WeightsConfig, factors: FactorConfig, p: np.ndarray | None, blend: float) -> Any:
    """The printed score of a trial: the model's signal (blended) with a model, else the hand-made score."""
    from trader.ml.evaluate import signal_scorer

    hand, _, _ = score_at_moments(ds, weights, factors)
    return hand if p is None else signal_scorer(p, ds.valid, hand, blend)


def _objective_value(ds: Dataset, signal: np.ndarray, moments: np.ndarray, cfg: MLConfig, objective: str) -> float:
    fwd = np.where(ds.valid, ds.forward[cfg.horizon], np.nan)[:, moments]
    sig = signal[:, moments]
    if objective == "ic":
        ic = rank_ic(sig, fwd)
        return float(np.nanmean(ic)) if np.isfinite(ic).any() else math.nan
    ex = excess_over_median(ds.forward[cfg.horizon], ds.valid)[:, moments]
    vals = []
    for j in range(sig.shape[1]):
        ok = np.isfinite(sig[:, j]) & np.isfinite(ex[:, j])
        if ok.sum() >= 10:
            k = max(1, int(ok.sum()) // 10)
            top = np.argsort(-np.where(ok, sig[:, j], -np.inf))[:k]
            vals.extend(ex[top, j])
    return float(np.mean(vals)) - 2.0 * cfg.fee if vals else math.nan


def _fold_model_probability(ds: Dataset, cfg: MLConfig, fold: Any, y: np.ndarray) -> np.ndarray:
    from trader.ml.train import _fit, _params, _rows

    params = _params(cfg)
    Xf, yf, _ = _rows(ds, y, fold.fit)
    Xv, yv, _ = _rows(ds, y, fold.valid)
    if len(np.unique(yf)) < 2:
        raise ModelError("a training fold has labels of one class only")
    booster = _fit(params, Xf, yf, cfg.xgboost.n_estimators, (Xv, yv) if yv.size else None, cfg.xgboost.early_stopping_rounds, [])
    n_best = int(getattr(booster, "best_iteration", cfg.xgboost.n_estimators - 1)) + 1
    p = np.full(ds.valid.shape, np.nan)
    r, c = np.nonzero(ds.valid[:, fold.test])
    m = fold.test[c]
    if r.size:
        p[r, m] = booster.inplace_predict(ds.features[r, m], iteration_range=(0, n_best))
    return p


def run_search(
    ds: Dataset,
    settings: Settings,
    *,
    trials: int,
    study_name: str,
    storage: Any,
    objective: str,
    space: str,
    worker: int = 0,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a study and measure its best parameters on the held-out last fold.

    Args:
        ds: the dataset (its whole window; the last walk-forward fold is held out).
        settings: the configuration (``ml`` folds/purge/embargo/horizon/fee; defaults of what is not searched).
        trials: trials to run in this process (added to the study's earlier ones).
        study_name: Optuna study name (resumed if it exists in ``storage``).
        storage: SQLAlchemy URL or an opened Optuna storage (:func:`trader.ml.storage.open_storage`).
        objective: ``ic`` or ``excess``.
        space: ``score``, ``model`` or ``all``.
        worker: offsets the sampler seed (one number per process sharing a study).
        progress: ``progress(done, total, best_value)`` after each trial.

    Returns:
        ``{"study", "trials", "best": {"number", "value", "params"}, "weights", "factors", "xgboost",
        "held_out": report of the last fold, "fitted_until"}``.

    Raises:
        ConfigError: unknown space or objective; ModelError: folds impossible.
    """
    import optuna

    from trader.ml.train import labels

    if space not in SPACES:
        raise ConfigError(f"unknown --space {space!r}; expected one of {', '.join(SPACES)}")
    if objective not in ("ic", "excess"):
        raise ConfigError(f"unknown --objective {objective!r}; expected ic or excess")
    cfg = settings.ml
    h_ms = duration_ms(cfg.horizon)
    y = labels(ds, cfg.target, cfg.horizon)
    labelled = np.isfinite(y).any(axis=0)
    last = int(np.flatnonzero(labelled)[-1]) + 1 if labelled.any() else 0
    folds = walk_forward(ds.moments_ms[:last], cfg.folds, min_train_fraction=cfg.min_train_fraction, purge_ms=h_ms,
                         embargo_ms=duration_ms(cfg.embargo), valid_fraction=cfg.valid_fraction)
    inner, held = folds[:-1], folds[-1]
    if not inner:
        raise ModelError("tune search needs at least 2 walk-forward folds (ml.folds)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.tune.seed + 1000 * worker)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True)
    from trader.ml.storage import check_fingerprint

    check_fingerprint(study, {"symbols": list(ds.symbols), "intervals": list(ds.params.intervals),
                              "from_ms": int(ds.moments_ms[0]) if ds.n_moments else None,
                              "to_ms": int(ds.moments_ms[-1]) if ds.n_moments else None, "klines": ds.fingerprint})
    study.set_user_attr("objective", objective)
    study.set_user_attr("space", space)
    study.set_user_attr("horizon", cfg.horizon)
    done = [0]

    def run_trial(trial: Any) -> float:
        weights, factors, xgb, blend = _suggest(trial, space)
        trial_cfg = cfg.model_copy(update={"xgboost": cfg.xgboost.model_copy(update=xgb)}) if xgb else cfg
        values = []
        for step, fold in enumerate(inner):
            p = _fold_model_probability(ds, trial_cfg, fold, y) if space in ("model", "all") else None
            sc = _scored(ds, weights, factors, p, blend)
            v = _objective_value(ds, sc.signal, fold.test, cfg, objective)
            values.append(v if math.isfinite(v) else -1.0)
            trial.report(float(np.mean(values)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(values))

    def callback(study: Any, trial: Any) -> None:
        done[0] += 1
        if progress is not None:
            try:
                best = study.best_value
            except ValueError:
                best = None
            progress(done[0], trials, best)

    t0 = time.perf_counter()
    optimize_through_outages(study, run_trial, trials, [callback])
    try:
        best = study.best_trial
    except ValueError:
        raise ModelError(f"study {study_name!r} has no completed trial (all pruned or failed)") from None
    # the best parameters, measured on the held-out fold only, beside the default score and baselines
    best_w, best_f, best_x, best_blend = _rebuild(best.params, space)
    best_cfg = cfg.model_copy(update={"xgboost": cfg.xgboost.model_copy(update=best_x)}) if best_x else cfg
    p_held = _fold_model_probability(ds, best_cfg, held, y) if space in ("model", "all") else None
    # the inner folds' labels reach one horizon into the held-out fold: measure it after that
    start = int(ds.moments_ms[held.test[0]]) + h_ms
    held_ds = ds.window(start, None)
    lo = int(np.searchsorted(ds.moments_ms, start))
    if held_ds.n_moments == 0:
        raise ModelError("the held-out fold is shorter than the horizon; use a longer history or fewer ml.folds")
    tuned = _scored(held_ds, best_w, best_f, None if p_held is None else p_held[:, lo:], best_blend)
    from trader.ml.evaluate import baseline_scorer

    default, _, _ = score_at_moments(held_ds, settings.scan.weights, settings.scan.factors)
    scorers = {"tuned": tuned, "default score": default}
    if p_held is not None:
        scorers["ml (fold model)"] = probability_scorer(p_held[:, lo:], held_ds.valid)
    for b in ("reversal_24h", "momentum_24h", "random"):
        scorers[b] = baseline_scorer(b, held_ds, settings.tune.seed)
    # a --min-score that keeps the tuned score as selective as the default one is (share >= threshold
    # on the moments the search saw), so that 'scan --min-score' still means "rare"
    seen = ds.window(None, start)
    p_seen = None
    if space in ("model", "all"):
        p_seen = np.full(seen.valid.shape, np.nan)
        for f in inner:
            p_seen[:, f.test] = _fold_model_probability(ds, best_cfg, f, y)[:, f.test]
    default_seen, _, _ = score_at_moments(seen, settings.scan.weights, settings.scan.factors)
    share = float(np.nanmean(default_seen.score >= settings.scan.min_score))
    if p_seen is None:  # a tuned hand-made score: a --min-score as selective as the default score's
        tuned_seen = _scored(seen, best_w, best_f, None, 0.0)
        tuned_vals = tuned_seen.score[np.isfinite(tuned_seen.score)]
        min_score = float(np.round(np.quantile(tuned_vals, 1.0 - share), 1)) if tuned_vals.size and 0 < share < 1 else settings.scan.min_score
    else:  # the model's signal: its score means the same whatever the model (75 = top and bottom deciles)
        min_score = settings.scan.min_score
    thresholds = sorted({*settings.tune.thresholds, min_score})
    report = evaluate(held_ds, scorers, horizons=[cfg.horizon], thresholds=thresholds, grid=cfg.grid, fee=cfg.fee,
                      bootstrap=settings.tune.bootstrap, seed=settings.tune.seed)
    ic = rank_ic(tuned.signal, np.where(held_ds.valid, held_ds.forward[cfg.horizon], np.nan))
    mean, t = newey_west_t(ic, nw_lags(cfg.horizon, cfg.grid))
    from datetime import UTC, datetime

    return {
        "study": study_name,
        "storage": storage,
        "objective": objective,
        "space": space,
        "trials": len(study.trials),
        "trials_this_run": trials,
        "pruned": sum(1 for t_ in study.trials if t_.state == optuna.trial.TrialState.PRUNED),
        "seconds": round(time.perf_counter() - t0, 1),
        "best": {"number": best.number, "value": best.value, "params": best.params},
        "weights": best_w.model_dump(),
        "factors": best_f.model_dump(),
        "xgboost": best_x,
        "blend": best_blend if space == "all" else None,
        "held_out": report,
        "held_out_ic": {"mean": mean, "t": t},
        "fitted_until": datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "min_score": min_score,
        "min_score_share": share,
        "inner_folds": len(inner),
    }


def optimize_through_outages(study: Any, objective: Any, trials: int, callbacks: list[Any], patience_s: float = 60.0) -> None:
    """``study.optimize`` for ``trials`` trials that rides out a short storage outage: on a database
    error it waits and goes on with the trials still to run (for up to ``patience_s`` without progress);
    a trial left RUNNING by the outage is failed by the heartbeat and re-run (RetryHeartbeatStaleTrialCallback).

    Raises:
        NetworkError: the storage stayed unreachable for ``patience_s``.
    """
    import sqlalchemy

    from trader.errors import NetworkError

    left = trials
    waited = 0.0
    while left > 0:
        before = len(study.trials) if waited == 0 else None
        try:
            study.optimize(objective, n_trials=left, callbacks=callbacks, gc_after_trial=False)
            return
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            if waited >= patience_s:
                raise NetworkError(f"the study's database stayed unreachable for {patience_s:.0f} s: {' '.join(str(exc).split())[:160]}") from None
            time.sleep(2.0)  # a retry pause, not a timing assumption
            waited += 2.0
            try:
                done_now = len(study.trials)
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError):
                continue
            if before is not None:
                left = max(left - max(done_now - before, 0), 1)


def _rebuild(params: dict[str, Any], space: str) -> tuple[WeightsConfig, FactorConfig, dict[str, Any], float]:
    """The configs of a finished trial from its stored parameters."""

    class Fixed:
        def suggest_float(self, name: str, *a: Any, **k: Any) -> float:
            return float(params[name])

        def suggest_int(self, name: str, *a: Any, **k: Any) -> int:
            return int(params[name])

    return _suggest(Fixed(), space)


def overlay_yaml(result: dict[str, Any]) -> str:
    """The config overlay (``--config`` accepts it) with the held-out figures in comments."""
    import yaml

    rep = result["held_out"]
    hz = next(iter(next(iter(rep["scorers"].values())).keys()))
    lines = [
        f"# trader tune search: study {result['study']!r}, {result['trials']} trials (best #{result['best']['number']}), "
        f"space {result['space']}, objective {result['objective']} at {hz}",
        f"# objective on the inner walk-forward folds (in sample for the search): {result['best']['value']:.5f}",
        f"# held-out last fold ({rep['window']['from']} -> {rep['window']['to']}, {rep['window']['moments']} moments; never seen by the search):",
    ]
    for name, by in rep["scorers"].items():
        r = by[hz]
        td = r["top_decile"]
        rnd = td.get("random") or {}

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x * 100:+.2f}%"

        lines.append(
            f"#   {name:16s} rank IC {r['rank_ic']['mean']:+.4f} (t {r['rank_ic']['t']}), top decile net {pct(td['excess_mean'])} "
            f"[{pct(td['excess_ci'][0])}, {pct(td['excess_ci'][1])}], vs random {pct(rnd.get('diff_mean'))}"
        )
    ms = result["min_score"]
    row = rep["scorers"]["tuned"][hz]["thresholds"].get(f"{ms:g}") or {}
    lines.append(
        f"# scan.min_score {ms:g}: as selective as the default score at {result.get('min_score_share', 0) * 100:.2f} % of symbol-moments "
        f"(on the held-out fold: {row.get('n', 0)} picks, excess net {row.get('excess_mean')})"
    )
    lines.append("# scan.fitted_until makes 'trader tune evaluate' report only moments after the data the search saw.")
    doc: dict[str, Any] = {
        "scan": {"min_score": ms, "weights": result["weights"], "factors": result["factors"], "fitted_until": result["fitted_until"]}
    }
    if result.get("blend") is not None:
        doc["scan"]["blend"] = round(float(result["blend"]), 4)
    if result["xgboost"]:
        doc["ml"] = {"xgboost": result["xgboost"]}
    return "\n".join(lines) + "\n" + yaml.safe_dump(doc, sort_keys=False)
