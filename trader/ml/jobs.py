"""What the ``trader tune`` commands do, as library functions (the CLI only parses and prints).

- :func:`load_dataset`: the dataset of a store's universe (:mod:`trader.ml.dataset`).
- :func:`evaluate_job`: the signal-quality report of any scorers (:mod:`trader.ml.evaluate`).
- :func:`train_job`: walk-forward training, ONNX export with parity check, registration, and
  activation when the out-of-sample checks pass (:mod:`trader.ml.train`, :mod:`trader.ml.registry`).
- :func:`due`: whether ``tune train --if-due`` should retrain.

Honesty rules enforced here: the ``ml`` scorer only ever scores moments the model did not train
on (its walk-forward predictions inside its training window, the exported model after it); a
score whose weights were fitted (``scan.fitted_until``) is evaluated only after that date; when
such a restriction applies, every scorer of the report is restricted the same way so that
baselines are measured on the same moments.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from trader.config import Settings
from trader.errors import ConfigError, ModelError, StoreError
from trader.features.factors import FACTORS
from trader.features.matrix import FEATURE_SET, FeatureParams, feature_names
from trader.ml.dataset import Dataset, build_dataset
from trader.ml.evaluate import (
    BASELINES,
    Scored,
    baseline_scorer,
    evaluate,
    factor_scorer,
    probability_scorer,
    score_at_moments,
    signal_scorer,
)
from trader.ml.registry import ModelInfo, Registry
from trader.models import duration_ms
from trader.timeutil import iso, parse_date

__all__ = ["SCORERS", "due", "evaluate_job", "load_dataset", "model_predictions", "train_job"]

#: Every scorer name ``--scorer`` accepts: ``signal`` is what ``trader scan`` prints with a model
#: (:mod:`trader.ml.signal`, ``scan.blend`` applied), ``blend`` the model's signal mixed with the
#: hand-made factors (``scan.blend``, or half and half when it is 0: the option measured), ``score``
#: the hand-made factor score (what a scan prints without a model), ``ml`` the model's raw probability.
SCORERS = ("signal", "blend", "score", *FACTORS, "ml", *BASELINES)


def _store_symbols(store: Any, intervals: Sequence[str], wanted: Sequence[str]) -> list[str]:
    have: dict[str, set[str]] = {}
    for s, iv in store.series():
        have.setdefault(s, set()).add(iv)
    if wanted:
        missing = [s for s in wanted if not set(intervals) <= have.get(s, set())]
        if missing:
            raise StoreError(f"no stored {'/'.join(intervals)} klines for {', '.join(missing[:8])}; run 'trader warm' first")
        return list(wanted)
    out = sorted(s for s, ivs in have.items() if set(intervals) <= ivs)
    if not out:
        raise StoreError(f"the store has no symbol with {', '.join(intervals)} klines; run 'trader warm' first")
    return out


def load_dataset(
    settings: Settings,
    store_path: Path,
    symbols: Sequence[str],
    intervals: Sequence[str],
    *,
    horizons: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    params: FeatureParams | None = None,
    progress: Callable[[int, int], None] | None = None,
    rank: bool = True,
    features: bool = True,
    labels: bool = True,
) -> Dataset:
    """The dataset of the store's universe (every stored kline; moments within ``[start_ms, end_ms)``).

    Raises:
        StoreError: no store, or no symbol with every interval.
        ModelError: a horizon that is not a whole number of base klines.
    """
    from trader.store.klines import KlineStore

    if not Path(store_path).is_dir():
        raise StoreError(f"no kline store at {store_path}; run 'trader warm' first")
    params = params or FeatureParams.from_scan(settings.scan, intervals)
    hz = list(dict.fromkeys([*(horizons or settings.tune.horizons), settings.ml.horizon]))
    with KlineStore(store_path) as store:
        universe = _store_symbols(store, intervals, symbols)
        return build_dataset(
            lambda s, iv: store.load(s, iv), universe, params, horizons=hz, label_horizon=settings.ml.horizon,
            grid=settings.ml.grid, barrier=settings.ml.barrier, fee=settings.ml.fee, start_ms=start_ms, end_ms=end_ms,
            progress=progress, rank=rank, features=features, labels=labels,
        )


# ---------------------------------------------------------------- the ml scorer


def model_predictions(info: ModelInfo, ds: Dataset, settings: Settings, store_path: Path) -> tuple[np.ndarray, int]:
    """Out-of-sample probabilities of a registered model on ``ds``: ``((n, M), first out-of-sample moment)``.

    Inside the model's training window: its walk-forward test-fold predictions (``oos.npz``).
    After its last training label (``label_end_ms``): the exported model itself (onnxruntime).
    Everything else — moments it trained on — is NaN.

    Raises:
        ModelError: the model's feature set differs from this version's.
    """
    from trader.ml.predict import OnnxModel

    meta = info.meta
    if meta.get("feature_set") != FEATURE_SET:
        raise ModelError(f"model {info.id} uses feature set {meta.get('feature_set')!r}, this version computes {FEATURE_SET!r}; retrain it")
    params = FeatureParams.from_dict(meta["feature_params"])
    if list(params.intervals) != list(ds.params.intervals):
        raise ModelError(f"model {info.id} was trained on {'/'.join(params.intervals)} klines; evaluate with --intervals {','.join(params.intervals)}")
    p = np.full(ds.valid.shape, np.nan)
    sym_index = {s: i for i, s in enumerate(ds.symbols)}
    oos_path = info.path / "oos.npz"
    if oos_path.is_file():
        z = np.load(oos_path, allow_pickle=False)
        m_idx = {int(m): j for j, m in enumerate(z["moments_ms"])}
        cols = [(j, m_idx[int(m)]) for j, m in enumerate(ds.moments_ms) if int(m) in m_idx]
        for k, s in enumerate(z["symbols"]):
            i = sym_index.get(str(s))
            if i is not None and cols:
                dst, src = zip(*cols, strict=True)
                p[i, list(dst)] = z["probability"][k, list(src)]
    after = ds.moments_ms > int(meta["label_end_ms"])
    if after.any():
        feat_ds = ds
        if params != ds.params or ds.features.shape[-1] == 0:  # its own feature settings, or a dataset built without features
            feat_ds = load_dataset(settings, store_path, ds.symbols, params.intervals, params=params,
                                   start_ms=int(ds.moments_ms[after][0]), end_ms=int(ds.moments_ms[-1]) + 1)
        if feat_ds.feature_names != meta["features"]:
            raise ModelError(f"model {info.id}: feature names differ from this version's; retrain it")
        model = OnnxModel.load(info.path, meta)
        fi = {s: i for i, s in enumerate(feat_ds.symbols)}
        rows = [(i, fi[s]) for i, s in enumerate(ds.symbols) if s in fi]
        at = {int(m): k for k, m in enumerate(feat_ds.moments_ms)}
        pairs = [(c, at[int(ds.moments_ms[c])]) for c in np.flatnonzero(after) if int(ds.moments_ms[c]) in at]
        if pairs:
            cols_after = np.array([c for c, _ in pairs])
            cols_feat = np.array([k for _, k in pairs])
            for i, j in rows:
                X = feat_ds.features[j][cols_feat]
                ok = feat_ds.valid[j][cols_feat] & np.isfinite(X).all(axis=1)
                if ok.any():
                    p[i, cols_after[ok]] = model.predict(X[ok])
    first = np.flatnonzero(np.isfinite(p).any(axis=0))
    return p, (int(ds.moments_ms[first[0]]) if first.size else -1)


def build_scorers(names: Sequence[str], ds: Dataset, settings: Settings, ml_probability: np.ndarray | None) -> dict[str, Scored]:
    """The named scorers on ``ds`` (see :data:`SCORERS`)."""
    scan = settings.scan
    out: dict[str, Scored] = {}
    score, factor_scores, biases = score_at_moments(ds, scan.weights, scan.factors)
    for name in names:
        if name == "score":
            out[name] = score
        elif name in ("signal", "blend"):
            if ml_probability is None:
                raise ModelError(f"no active model: 'trader tune use default' or train one (or drop --scorer {name})")
            weight = scan.blend if name == "signal" else (scan.blend or 0.5)
            out[name] = signal_scorer(ml_probability, ds.valid, score, weight)
        elif name in FACTORS:
            out[name] = factor_scorer(name, factor_scores, biases, scan.factors, ds.valid)
        elif name in BASELINES:
            out[name] = baseline_scorer(name, ds, settings.tune.seed)
        elif name == "ml":
            if ml_probability is None:
                raise ModelError("no active model: train one with 'trader tune train' (or drop --scorer ml)")
            out[name] = probability_scorer(ml_probability, ds.valid)
        else:
            raise ConfigError(f"unknown scorer {name!r}; expected one of {', '.join(SCORERS)}")
    return out


def evaluate_job(
    settings: Settings,
    store_path: Path,
    symbols: Sequence[str],
    intervals: Sequence[str],
    scorers: Sequence[str] | None,
    horizons: Sequence[str] | None,
    start_ms: int | None,
    end_ms: int | None,
    *,
    keep_series: bool = False,
    use_model: bool = True,
) -> tuple[dict[str, Any], list[str], dict[Any, Any]]:
    """The report of ``tune evaluate``: ``(report, notes, series)``.

    By default the first scorer is what ``trader scan`` prints — ``signal`` with the active (or
    shipped) model, ``score`` without one (``use_model=False``: ``--no-model``) — reported at the
    thresholds ``tune.thresholds`` and ``scan.min_score`` beside random picks at the same moments
    with the same directions, then its alternatives and the baselines.

    ``series`` (when ``keep_series``) holds per scorer and horizon the per-moment rank IC, for
    ``--plot``. ``notes`` say which restrictions applied (out-of-sample windows).

    Raises:
        ConfigError: unknown scorer or horizon; ModelError: a model scorer asked without an active model.
    """
    hz = list(horizons or settings.tune.horizons)
    for h in hz:
        duration_ms(h)
    registry = Registry(store_path)
    active = registry.active() if use_model else None
    if scorers:
        names = list(scorers)
    elif active is not None:
        names = ["signal", "score", "blend", "ml", *FACTORS, *BASELINES]
    else:
        names = ["score", *FACTORS, *BASELINES]
    for n in names:
        if n not in SCORERS:
            raise ConfigError(f"unknown scorer {n!r}; expected one of {', '.join(SCORERS)}")
    notes: list[str] = []
    fitted = parse_date(settings.scan.fitted_until, "scan.fitted_until") if settings.scan.fitted_until else None
    if fitted is not None and any(n == "score" or n in FACTORS for n in names) and (start_ms is None or start_ms < fitted):
        notes.append(f"scan weights/factors were fitted up to {settings.scan.fitted_until}: evaluating only later moments")
        start_ms = fitted
    ds = load_dataset(settings, store_path, symbols, intervals, horizons=hz, start_ms=start_ms, end_ms=end_ms)
    if ds.n_moments == 0:
        raise ModelError("no moments in the window (check --from/--to and what the store holds)")
    ml_p = None
    if {"ml", "signal", "blend"} & set(names):
        if active is None:
            raise ModelError("no active model: 'trader tune use default' or train one (or drop the model scorers)")
        ml_p, first = model_predictions(active, ds, settings, store_path)
        has = np.isfinite(ml_p).any(axis=0)
        if not has.any():
            raise ModelError(f"model {active.id} has no out-of-sample prediction in this window (it trained on all of it)")
        if not has.all():
            notes.append(
                f"model {active.id}: out-of-sample predictions exist from {iso(first)} (walk-forward test folds, then "
                "moments after its training labels); every scorer is evaluated on those moments only"
            )
            lo = int(np.searchsorted(ds.moments_ms, first))
            ds = ds.window(first, None)
            ml_p = ml_p[:, lo:]
            keep = np.isfinite(ml_p).any(axis=0)
            ds.valid = ds.valid & keep[None, :]
    built = build_scorers(names, ds, settings, ml_p)
    thresholds = sorted({*settings.tune.thresholds, settings.scan.min_score})
    report = evaluate(
        ds, built, horizons=hz, thresholds=thresholds, grid=settings.ml.grid, fee=settings.ml.fee,
        bootstrap=settings.tune.bootstrap, seed=settings.tune.seed,
    )
    report["printed"] = names[0] if not scorers else None
    report["notes"] = notes
    if active is not None:
        report["model"] = active.id
    series: dict[Any, Any] = {}
    if keep_series:
        from trader.ml.evaluate import rank_ic

        for name, sc in built.items():
            for h in hz:
                series[(name, h)] = rank_ic(sc.signal, np.where(ds.valid, ds.forward[h], np.nan))
        series["moments_ms"] = ds.moments_ms
    return report, notes, series


# ---------------------------------------------------------------- training


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("trader", "numpy", "xgboost-cpu", "xgboost", "onnxruntime", "onnxmltools", "onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def train_job(
    settings: Settings,
    store_path: Path,
    symbols: Sequence[str],
    intervals: Sequence[str],
    start_ms: int | None,
    end_ms: int | None,
    *,
    activate: bool = True,
    permutation: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    dataset_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train, export, register and (if the checks pass) activate a model. Returns a JSON-ready summary.

    Checks for activation (all must hold; the summary says which failed): out-of-sample rank IC
    mean > 0 with Newey-West t >= ``ml.activate_min_t`` over the walk-forward test folds; the
    permutation test's |t| < 2 (when run). The ONNX parity check is not a check but a condition
    of registration (:func:`trader.ml.export.check_parity`).

    Raises:
        ModelError: too few samples, folds impossible, export or parity failure.
    """
    from trader.ml.export import check_parity, to_onnx
    from trader.ml.train import train

    cfg = settings.ml
    t0 = time.perf_counter()
    ds = load_dataset(settings, store_path, symbols, intervals, start_ms=start_ms, end_ms=end_ms, progress=dataset_progress)
    t_ds = time.perf_counter() - t0
    result = train(ds, cfg, permutation=permutation, progress=progress)
    # the walk-forward predictions, evaluated like any scorer, beside the baselines
    tested = result.test_moments
    first_test = int(ds.moments_ms[tested[0]])
    oos_ds = ds.window(first_test, None)
    oos_p = result.oos[:, tested[0] :]
    keep = np.isfinite(oos_p).any(axis=0)
    oos_ds.valid = oos_ds.valid & keep[None, :]
    built = build_scorers(["signal", "ml", "blend", "score", "reversal_24h", "momentum_24h", "random"], oos_ds, settings, oos_p)
    report = evaluate(
        oos_ds, built, horizons=list(dict.fromkeys([cfg.horizon, *settings.tune.horizons])),
        thresholds=sorted({*settings.tune.thresholds, settings.scan.min_score}),
        grid=cfg.grid, fee=cfg.fee, bootstrap=settings.tune.bootstrap, seed=settings.tune.seed,
    )
    # what its signals were worth in the test folds: printed beside every signal of a scan
    from trader.ml.dataset import excess_over_median
    from trader.ml.signal import fit_signal_table, percentiles

    q_oos = percentiles(oos_p, oos_ds.valid)
    ex_oos = excess_over_median(oos_ds.forward[cfg.horizon], oos_ds.valid)
    table = fit_signal_table(q_oos.ravel(), ex_oos.ravel(), cfg.horizon, 2.0 * cfg.fee)
    ml_h = report["scorers"]["ml"][cfg.horizon]
    ic, t = ml_h["rank_ic"]["mean"], ml_h["rank_ic"]["t"]
    reasons = []
    if not (ic is not None and ic > 0 and t is not None and t >= cfg.activate_min_t):
        reasons.append(f"out-of-sample rank IC {ic} (t {t}) is not > 0 with t >= {cfg.activate_min_t:g}")
    if result.permutation is not None and result.permutation["t"] is not None and abs(result.permutation["t"]) >= 2:
        reasons.append(f"permutation test |t| = {abs(result.permutation['t'])} >= 2: information leaks")
    # export + parity on held-out rows (the last test fold's)
    names = feature_names(ds.params.intervals)
    onnx_bytes = to_onnx(result.booster, len(names))
    last_fold = result.folds[-1]
    lf = (ds.moments_ms >= last_fold["test_from_ms"]) & (ds.moments_ms <= last_fold["test_to_ms"])
    held = ds.features[:, lf][ds.valid[:, lf]]
    rng = np.random.default_rng(cfg.seed)
    sample = held[rng.choice(held.shape[0], size=min(2000, held.shape[0]), replace=False)] if held.shape[0] else held
    parity = check_parity(result.booster, onnx_bytes, sample)
    labelled = np.isfinite(ds.forward[cfg.horizon]).any(axis=0) if cfg.target == "excess" else np.isfinite(ds.barrier).any(axis=0)
    last_train = int(ds.moments_ms[np.flatnonzero(labelled)[-1]])
    now = datetime.now(UTC)
    digest = hashlib.sha256(f"{ds.fingerprint}{sorted(result.params.items())}{cfg.target}{cfg.horizon}".encode()).hexdigest()[:8]
    model_id = f"{now:%Y%m%dT%H%M%SZ}-{digest}"
    summary_ml = {h: {"rank_ic": r["rank_ic"], "top_decile": r["top_decile"], "bottom_decile": r["bottom_decile"],
                      "printed": {"rank_ic": report["scorers"]["signal"][h]["rank_ic"], "thresholds": report["scorers"]["signal"][h]["thresholds"]}}
                  for h, r in report["scorers"]["ml"].items()}
    meta: dict[str, Any] = {
        "schema": "trader.model/1",
        "id": model_id,
        "created_ms": int(now.timestamp() * 1000),
        "feature_set": FEATURE_SET,
        "features": names,
        "feature_params": ds.params.as_dict(),
        "target": cfg.target,
        "horizon": cfg.horizon,
        "grid": cfg.grid,
        "fee": cfg.fee,
        "barrier": cfg.barrier.model_dump(),
        "train_window": {"from_ms": int(ds.moments_ms[0]), "to_ms": last_train, "from": iso(int(ds.moments_ms[0])), "to": iso(last_train)},
        "label_end_ms": last_train + duration_ms(cfg.horizon),
        "symbols": ds.symbols,
        "fingerprint": ds.fingerprint,
        "rows": result.rows,
        "params": result.params,
        "rounds": result.rounds,
        "folds": result.folds,
        "oos": summary_ml,
        "signal": table.as_dict(),
        "permutation": result.permutation,
        "checks": {"passed": not reasons, "reasons": reasons, "parity_max_abs": parity, "activate_min_t": cfg.activate_min_t},
        "versions": _versions(),
        "git_commit": _git_commit(),
        "seconds": {"dataset": round(t_ds, 2), "train": round(result.seconds, 2)},
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, symbols=np.asarray(ds.symbols), moments_ms=ds.moments_ms, probability=result.oos.astype(np.float32))
    import orjson

    files = {"model.onnx": onnx_bytes, "model.ubj": bytes(result.booster.save_raw("ubj")), "oos.npz": buf.getvalue(),
             "report.json": orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY)}
    registry = Registry(store_path)
    info = registry.register(model_id, files, meta)
    activated = False
    if activate and not reasons:
        registry.use(info.id)
        activated = True
    return {
        "id": info.id,
        "path": str(info.path),
        "activated": activated,
        "checks": meta["checks"],
        "folds": result.folds,
        "oos": report,
        "permutation": result.permutation,
        "rows": result.rows,
        "rounds": result.rounds,
        "dataset": {"symbols": len(ds.symbols), "moments": ds.n_moments, "features": len(names), "seconds": round(t_ds, 2)},
        "seconds": round(result.seconds, 2),
    }


# ---------------------------------------------------------------- retraining for cron


def _newest_close(store_path: Path, symbols: Sequence[str], intervals: Sequence[str]) -> int | None:
    """The newest stored close time of the base interval over ``symbols`` (all stored ones when empty), epoch ms."""
    from trader.models import CLOSE_TIME
    from trader.store.klines import KlineStore

    if not Path(store_path).is_dir():
        return None
    with KlineStore(store_path) as store:
        names = list(symbols) or sorted({s for s, iv in store.series() if iv == intervals[0]})
        newest = [int(b[CLOSE_TIME, -1]) for b in (store.load(s, intervals[0], limit=1) for s in names) if b.shape[1]]
    return max(newest) if newest else None


def due(settings: Settings, store_path: Path, symbols: Sequence[str], intervals: Sequence[str]) -> tuple[bool, str]:
    """Whether ``tune train --if-due`` should retrain now: ``(due, why)``.

    Due when there is no active model, when it is older than ``ml.max_age`` (wall clock), when its
    training data ends more than ``ml.max_age`` before the store's newest kline (the shipped model on
    a store that has kept warming), or when
    at least ``ml.retrain_interval`` new *labelled signals* exist: symbol-moments after the model's
    last training label whose label is now known and whose score reached ``scan.min_score`` (the
    kind of sample the trade engine acts on).
    """
    registry = Registry(store_path)
    active = registry.active()
    if active is None:
        return True, "no active model"
    age_ms = int(time.time() * 1000) - int(active.meta.get("created_ms", 0))
    if age_ms > duration_ms(settings.ml.max_age):
        return True, f"the active model is {age_ms / 86_400_000:.1f} days old (ml.max_age {settings.ml.max_age})"
    trained_to = int((active.meta.get("train_window") or {}).get("to_ms", 0))
    newest = _newest_close(store_path, symbols, intervals)
    if newest is not None and trained_to and newest - trained_to > duration_ms(settings.ml.max_age):
        return True, (f"the active model{' (shipped)' if active.meta.get('shipped') else ''} was trained on klines up to "
                      f"{iso(trained_to)}, {(newest - trained_to) / 86_400_000:.0f} days before the store's newest (ml.max_age {settings.ml.max_age})")
    start = int(active.meta["label_end_ms"])
    try:
        ds = load_dataset(settings, store_path, symbols, intervals, start_ms=start)
    except ModelError:
        return False, "no new moments since the active model's last label"
    if ds.n_moments == 0:
        return False, "no new moments since the active model's last label"
    scored, _, _ = score_at_moments(ds, settings.scan.weights, settings.scan.factors)
    known = np.isfinite(ds.forward[settings.ml.horizon]) & ds.valid
    n_new = int((known & (scored.score >= settings.scan.min_score)).sum())
    if n_new >= settings.ml.retrain_interval:
        return True, f"{n_new} new labelled signals (ml.retrain_interval {settings.ml.retrain_interval})"
    return False, f"{n_new} new labelled signals of {settings.ml.retrain_interval} needed; model age {age_ms / 86_400_000:.1f} days"
