"""trader.ml on real data: no look-ahead, one implementation for scan and dataset, honest training, ONNX.

Real components only: the bundled klines, a real diskcache store warmed through the replay
exchange (``history_store``), real XGBoost, onnxmltools and onnxruntime sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TUNE_SYMBOLS
from trader.config import MLConfig, ScanConfig, Settings, XGBoostConfig
from trader.errors import ModelError
from trader.features.matrix import FeatureParams, cross_sectional_rank, feature_names, last_features
from trader.ml.dataset import build_dataset
from trader.ml.evaluate import baseline_scorer, evaluate, score_at_moments
from trader.models import CLOSE, CLOSE_TIME, HIGH, LOW, OPEN, QUOTE_VOLUME, TAKER_BUY_BASE_VOLUME, VOLUME
from trader.replay.dataset import ReplayDataset

PARAMS = FeatureParams(("1h", "4h"))
FAST = MLConfig(folds=3, xgboost=XGBoostConfig(n_estimators=60, early_stopping_rounds=15, learning_rate=0.1), nthread=2)


def _blocks(dataset: ReplayDataset, symbols: list[str]) -> dict[tuple[str, str], np.ndarray]:
    return {(s, iv): dataset.series(s, iv).values for s in symbols for iv in ("1h", "4h")}


@pytest.fixture(scope="module")
def full_ds(dataset: ReplayDataset):  # type: ignore[no-untyped-def]
    blocks = _blocks(dataset, TUNE_SYMBOLS)
    return build_dataset(lambda s, iv: blocks[(s, iv)], TUNE_SYMBOLS, PARAMS)


def test_no_look_ahead_later_klines_cut_or_replaced_change_no_feature(dataset: ReplayDataset, full_ds) -> None:  # type: ignore[no-untyped-def]
    """Features at τ use only klines closed by τ: cutting everything after τ, or replacing it with wild
    prices, leaves every feature (and the score inputs) at moments <= τ bit-for-bit unchanged."""
    symbols = TUNE_SYMBOLS[:12]
    blocks = _blocks(dataset, symbols)
    base = build_dataset(lambda s, iv: blocks[(s, iv)], symbols, PARAMS)
    cut_ms = int(base.moments_ms[len(base.moments_ms) // 2])
    rng = np.random.default_rng(0)

    def cut(b: np.ndarray) -> np.ndarray:
        return b[:, b[CLOSE_TIME] < cut_ms]

    def wild(b: np.ndarray) -> np.ndarray:
        out = b.copy()
        later = out[CLOSE_TIME] >= cut_ms
        k = int(later.sum())
        price = rng.uniform(0.001, 1e6, k)
        out[1, later], out[4, later] = price, price[::-1]
        out[2, later] = np.maximum(out[1, later], out[4, later]) * 3
        out[3, later] = np.minimum(out[1, later], out[4, later]) / 3
        out[5, later] *= rng.uniform(0, 100, k)
        return out

    for variant in (cut, wild):
        changed = build_dataset(lambda s, iv, v=variant: v(blocks[(s, iv)]), symbols, PARAMS)  # type: ignore[misc]
        upto = int(np.searchsorted(base.moments_ms, cut_ms, side="right"))
        assert np.array_equal(changed.moments_ms[:upto], base.moments_ms[:upto])
        np.testing.assert_array_equal(changed.features[:, :upto], base.features[:, :upto], err_msg=variant.__name__)
        np.testing.assert_array_equal(changed.valid[:, :upto], base.valid[:, :upto])
        for a, b in zip(changed.score_inputs, base.score_inputs, strict=True):
            for k in a:
                np.testing.assert_array_equal(a[k][:, :upto], b[k][:, :upto], err_msg=k)


def test_labels_come_strictly_after_the_moment(dataset: ReplayDataset, full_ds) -> None:  # type: ignore[no-untyped-def]
    ds = full_ds
    s = dataset.series("BTCUSDT", "1h")
    i = ds.symbols.index("BTCUSDT")
    j = ds.n_moments // 3
    tau = int(ds.moments_ms[j])
    k = int(np.searchsorted(s.open_time_ms, tau))  # the kline opening at τ is the first one after it
    close = s.values[4]
    assert ds.close[i, j] == close[k - 1]
    assert ds.forward["24h"][i, j] == pytest.approx(close[k - 1 + 24] / close[k - 1] - 1.0, rel=1e-12)
    assert ds.past_return[i, j] == pytest.approx(close[k - 1] / close[k - 1 - 24] - 1.0, rel=1e-12)
    assert np.isnan(ds.forward["72h"][:, -1]).all()  # nothing after the data
    assert ds.valid[:, j].all() and np.isfinite(ds.features[:, j]).all()
    assert (ds.moments_ms % (4 * 3_600_000) == 0).all()


def test_the_scan_and_the_dataset_share_one_implementation(dataset: ReplayDataset, full_ds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A scan of a store holding only klines closed by τ gives the dataset's score at τ, and the
    model features a scan computes from its 300 klines are the dataset's (seeded from the whole history)."""
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    ds = full_ds
    j = ds.n_moments - 200
    tau = int(ds.moments_ms[j])
    with KlineStore(tmp_path / "s") as store:
        for s in ds.symbols:
            for iv in ("1h", "4h"):
                b = dataset.series(s, iv).values
                store.append(s, iv, np.ascontiguousarray(b[:, b[CLOSE_TIME] < tau]))
        cfg = ScanConfig()
        with Scanner(store, cfg, ["1h", "4h"]) as scanner:
            res = scanner.scan(ds.symbols, now_ms=tau)
        scored = {sig.symbol: sig.score for sig in res.signals}
        dset, _, _ = score_at_moments(ds, cfg.weights, cfg.factors)
        diff = np.array([abs(scored[s] - dset.score[i, j]) for i, s in enumerate(ds.symbols)])
        assert np.median(diff) < 0.05 and diff.max() < 1.0, diff  # EMA/ADX seeds: 300 klines vs the whole history
        rows = [OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME, TAKER_BUY_BASE_VOLUME]  # what the scan hands a model
        data = [np.stack([store.load(s, iv, limit=cfg.lookback)[rows] for s in ds.symbols]) for iv in ("1h", "4h")]
    X = cross_sectional_rank(last_features(data, PARAMS))  # what the scan feeds the model
    ref = ds.features[:, j]
    n = len(ds.symbols)
    same = np.abs(X - ref) <= 1.01 / n  # a near-tie may swap two neighbours' ranks
    assert same.mean() > 0.99, [feature_names(PARAMS.intervals)[c] for c in np.flatnonzero(~same.all(axis=0))]


def test_evaluate_report_shape_and_baselines(full_ds) -> None:  # type: ignore[no-untyped-def]
    ds = full_ds
    cfg = ScanConfig()
    score, _, _ = score_at_moments(ds, cfg.weights, cfg.factors)
    scorers = {"score": score, "random": baseline_scorer("random", ds), "reversal_24h": baseline_scorer("reversal_24h", ds)}
    rep = evaluate(ds, scorers, horizons=["24h"], thresholds=[60, 75], grid="4h", fee=0.001, bootstrap=200)
    r = rep["scorers"]["random"]["24h"]
    assert set(r["rank_ic"]) >= {"mean", "t", "n_moments"} and abs(r["rank_ic"]["t"]) < 3
    th = rep["scorers"]["score"]["24h"]["thresholds"]["75"]
    assert set(th) >= {"n", "excess_mean", "excess_ci", "hit_rate", "random"} and th["n"] > 0
    lo, hi = th["excess_ci"]
    assert lo <= th["excess_mean"] <= hi
    assert len(rep["scorers"]["score"]["24h"]["deciles"]) == 10
    # the matched random baseline of the random scorer is itself: no selection skill
    assert abs(rep["scorers"]["random"]["24h"]["top_decile"]["random"]["diff_mean"]) < 0.002


def test_walk_forward_training_permutation_and_onnx_parity(full_ds) -> None:  # type: ignore[no-untyped-def]
    from trader.ml.export import PARITY_TOLERANCE, check_parity, to_onnx
    from trader.ml.train import train

    res = train(full_ds, FAST, permutation=True)
    assert len(res.folds) == 3 and all(f["rows_test"] > 0 for f in res.folds)
    assert res.permutation is not None and abs(res.permutation["t"]) < 2.0, res.permutation  # shuffled labels: no signal
    tested = np.isfinite(res.oos).any(axis=0)
    assert np.flatnonzero(tested)[0] >= 0.39 * full_ds.n_moments  # the first 40 % (of labelled moments) only ever trains
    onnx = to_onnx(res.booster, full_ds.features.shape[2])
    rows = full_ds.features[full_ds.valid][:500]
    assert check_parity(res.booster, onnx, rows) <= PARITY_TOLERANCE
    with pytest.raises(ModelError):
        check_parity(res.booster, to_onnx(train(full_ds.window(None, int(full_ds.moments_ms[900])), FAST).booster, rows.shape[1]), rows)


def test_registry_is_atomic_and_rolls_back(tmp_path: Path) -> None:
    from trader.ml.registry import Registry, shipped_model

    reg = Registry(tmp_path)
    shipped = shipped_model()
    assert (reg.active() is None) == (shipped is None)  # a store that never chose: the shipped model
    a = reg.register("20260101T000000Z-aaaa", {"model.onnx": b"x"}, {"id": "a"})
    b = reg.register("20260102T000000Z-bbbb", {"model.onnx": b"y"}, {"id": "b"})
    with pytest.raises(ModelError):
        reg.register(a.id, {}, {})
    reg.use(a.id)
    reg.use("20260102")  # a unique prefix
    assert reg.active_id() == b.id and reg.previous_id() == a.id
    assert reg.rollback().id == a.id and reg.active_id() == a.id
    (tmp_path / "models" / ".tmp-crashed").mkdir()  # a process killed mid-register
    assert [m.id for m in reg.models()] == [a.id, b.id]
    with pytest.raises(ModelError):
        reg.use("2026")  # ambiguous
    assert reg.use("none") is None and reg.active() is None and reg.active_id() is None
    if shipped is not None:
        assert reg.use("default").id == shipped.id and reg.active_id() == shipped.id  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def trained(history_store: Path) -> Any:
    """A model trained (not activated) on the history store: ``(ModelInfo)``."""
    from trader.ml.jobs import train_job
    from trader.ml.registry import Registry

    summary = train_job(Settings(ml=FAST), history_store, [], ["1h", "4h"], None, None, activate=False, permutation=False)
    return Registry(history_store).get(summary["id"])


def test_scan_with_an_active_model_prints_the_models_signal(history_store: Path, trained: Any) -> None:
    """With a model the printed score and direction are the model's (its probability's percentile across
    the universe), every directional signal scores >= 50, the same with every strategy; the hand-made
    factors stay as columns; a blend mixes them in; without a model the scan is the hand-made score."""
    from trader.ml.predict import ActiveModel
    from trader.ml.signal import score_from_percentile
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    model = ActiveModel(trained.path, trained.meta)
    assert model.table is not None and model.window and model.window["to"]
    cfg = ScanConfig()
    with KlineStore(history_store) as store:
        now = int(store.load("BTCUSDT", "1h", limit=1)[CLOSE_TIME, -1]) + 1
        plain = Scanner(store, ScanConfig(), ["1h", "4h"]).scan(now_ms=now)
        results = {}
        for strategy in ("vectorized", "serial", "processes"):
            c = cfg.model_copy(update={"strategy": strategy})
            with Scanner(store, c, ["1h", "4h"], model=model) as sc:
                results[strategy] = {s.symbol: s for s in sc.scan(now_ms=now).signals}
        # the cross-section is the store's universe, whatever --symbols asks for
        with Scanner(store, cfg, ["1h", "4h"], model=model) as sc:
            one = sc.scan(["BTCUSDT"], now_ms=now)
        with Scanner(store, cfg.model_copy(update={"blend": 0.5}), ["1h", "4h"], model=model) as sc:
            blended = {s.symbol: s for s in sc.scan(now_ms=now).signals}
    v = results["vectorized"]
    assert one.signals[0].ml_probability == pytest.approx(v["BTCUSDT"].ml_probability, abs=1e-9) and one.model == model.id
    assert len(v) == len(TUNE_SYMBOLS) and all(0 < s.ml_probability < 1 for s in v.values())  # type: ignore[operator]
    for s in v.values():
        score, direction = score_from_percentile(s.percentile)
        assert s.score == pytest.approx(float(score)) and s.score >= 50.0
        assert s.direction == ("long" if direction > 0 else "short") and ((s.percentile or 0) >= 0.5) == (s.direction == "long")
        assert s.expected_excess_pct is not None and s.hit_rate is not None and "factor_score" in s.factors
    assert sum(s.score >= 75 for s in v.values()) in range(3, 7)  # the top and bottom deciles of 24 symbols
    for strategy in ("serial", "processes"):
        for sym, s in results[strategy].items():
            assert s.score == pytest.approx(v[sym].score, abs=1e-6) and s.ml_probability == pytest.approx(v[sym].ml_probability, abs=1e-6)
    assert all(s.ml_probability is None and "factor_score" not in s.factors for s in plain.signals)
    assert {s.symbol: s.score for s in plain.signals} != {k: s.score for k, s in v.items()}  # the model's score, not the factors'
    assert {k: s.score for k, s in blended.items()} != {k: s.score for k, s in v.items()}


def test_a_cross_section_too_small_for_the_model_scans_without_it(history_store: Path, trained: Any, tmp_path: Path) -> None:
    from trader.ml.predict import ActiveModel
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    model = ActiveModel(trained.path, trained.meta)
    with KlineStore(history_store) as big, KlineStore(tmp_path / "small") as small:
        for s in TUNE_SYMBOLS[:5]:
            for iv in ("1h", "4h"):
                small.append(s, iv, np.ascontiguousarray(big.load(s, iv, limit=400)))
        now = int(small.load("BTCUSDT", "1h", limit=1)[CLOSE_TIME, -1]) + 1
        with Scanner(small, ScanConfig(), ["1h", "4h"], model=model) as sc:
            res = sc.scan(now_ms=now)
    assert len(res.signals) == 5 and res.model is None
    assert all(s.ml_probability is None for s in res.signals)
    assert res.warnings and "fewer than 10 fresh symbols" in res.warnings[0]


def test_training_is_reproducible_with_a_fixed_seed_and_thread_count(history_store: Path) -> None:
    """What `make model` relies on (config/model.yaml): the same data, seed and nthread give the same model."""
    from trader.ml.jobs import load_dataset
    from trader.ml.train import train

    cfg = FAST.model_copy(update={"seed": 0, "nthread": 2})
    ds = load_dataset(Settings(ml=cfg), history_store, [], ["1h", "4h"])
    a, b = train(ds, cfg), train(ds, cfg)
    assert a.rounds == b.rounds
    np.testing.assert_allclose(a.oos, b.oos, atol=1e-6, equal_nan=True)
    rows = ds.features[ds.valid][:500]
    np.testing.assert_allclose(a.booster.inplace_predict(rows), b.booster.inplace_predict(rows), atol=1e-6)


def test_a_model_trained_long_before_the_store_is_due_and_an_in_sample_scan_warns(history_store: Path, trained: Any, tmp_path: Path) -> None:
    """The shipped model on a store that kept warming: the scan warns with the age and --if-due retrains;
    a scan of klines the model trained on warns that its scores are in-sample."""
    import json
    import shutil

    from trader.ml.jobs import due
    from trader.ml.predict import ActiveModel
    from trader.ml.registry import Registry
    from trader.store.klines import KlineStore

    store = tmp_path / "store"
    with KlineStore(history_store) as big, KlineStore(store) as small:
        for s in TUNE_SYMBOLS[:12]:
            for iv in ("1h", "4h"):
                small.append(s, iv, np.ascontiguousarray(big.load(s, iv)))
        newest = int(small.load("BTCUSDT", "1h", limit=1)[CLOSE_TIME, -1])
    old = dict(trained.meta)
    old["train_window"] = {**old["train_window"], "to_ms": newest - 30 * 86_400_000, "to": "30 days before"}
    shutil.copytree(trained.path, store / "models" / trained.id)
    (store / "models" / trained.id / "meta.json").write_text(json.dumps(old))
    Registry(store).use(trained.id)
    go, why = due(Settings(ml=FAST), store, [], ["1h", "4h"])
    assert go and "30 days before the store's newest" in why, why
    model = ActiveModel(store / "models" / trained.id, old)
    stale = model.data_note(newest, 7 * 86_400_000)
    assert stale is not None and "30 days before" in stale
    inside = ActiveModel(trained.path, trained.meta).data_note(int(trained.meta["train_window"]["to_ms"]) - 1, 7 * 86_400_000)
    assert inside is not None and "in-sample" in inside
