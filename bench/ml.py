"""Benchmark (not a test): the ML path — dataset, walk-forward training, ONNX inference, scan with a model.

One run on this machine, on the bundled data warmed through the replay exchange exactly as a user
would (``trader replay --start end`` + ``trader warm --top 96 --klines 8000``):

- dataset: 96 symbols x (1h, 4h) x the whole history from the store (target <= 10 s);
- training: ``tune train``'s walk-forward (5 folds, purge + embargo, early stopping) + final model,
  with and without the permutation test (target <= 60 s on 2 cores);
- ONNX inference: 200 rows per call, median of 2000 calls (target <= 1 ms), beside XGBoost's own
  ``inplace_predict`` on the same rows;
- ``trader scan`` with the model active vs ``--no-model``: whole process wall time (median of 5) and
  peak RSS (targets <= 0.8 s, <= 150 MB).

    .venv/bin/python bench/ml.py [--store DIR]   # a whole-history store is built when not given
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scan import whole  # noqa: E402
from trader.compare import replay_process  # noqa: E402
from trader.config import Settings  # noqa: E402
from trader.runtime import tune_allocator  # noqa: E402


def build(store: Path) -> float:
    """Warm the whole bundled history through a replay started at the end of the recording: seconds."""
    with replay_process("--speed", "0", "--start", "end") as url:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "cli.main", "warm", "--rest-url", url, "--store", str(store), "--top", "96", "--klines", "8000"],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-800:]
        return time.perf_counter() - t


def main(store: Path | None) -> dict[str, object]:
    tune_allocator()
    out: dict[str, object] = {"benchmark": "ml", "cpus": os.cpu_count()}
    tmp = tempfile.TemporaryDirectory()
    if store is None:
        store = Path(tmp.name) / "store"
        out["warm_whole_history_s"] = round(build(store), 2)
    from trader.ml.jobs import load_dataset

    settings = Settings()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        ds = load_dataset(settings, store, [], ["1h", "4h"])
        times.append(time.perf_counter() - t)
    out["dataset"] = {"symbols": len(ds.symbols), "moments": ds.n_moments, "features": len(ds.feature_names),
                      "seconds_median": round(float(np.median(times)), 2), "seconds_min": round(min(times), 2)}
    from trader.ml.export import to_onnx
    from trader.ml.predict import OnnxModel
    from trader.ml.train import train

    t = time.perf_counter()
    res = train(ds, settings.ml, permutation=False)
    out["train_walk_forward_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    res_p = train(ds, settings.ml, permutation=True)
    out["train_with_permutation_s"] = round(time.perf_counter() - t, 2)
    out["folds"] = [{k: f[k] for k in ("fold", "rows_fit", "best_rounds", "auc", "rank_ic", "rank_ic_t")} for f in res.folds]
    out["permutation"] = res_p.permutation
    onnx = OnnxModel.from_bytes(to_onnx(res.booster, ds.features.shape[2]))
    rows = ds.features[ds.valid][:200].astype(np.float32)

    def per_call(fn: object, n: int = 2000) -> float:
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n // 5):
                fn(rows)  # type: ignore[operator]
            samples.append((time.perf_counter() - t) / (n // 5))
        return float(np.median(samples)) * 1e3

    out["inference_200_rows_ms"] = {"onnxruntime": round(per_call(onnx.predict), 4), "xgboost_inplace_predict": round(per_call(res.booster.inplace_predict), 4)}
    # scan with the model active (registered through tune train's own path)
    from trader.ml.jobs import train_job

    summary = train_job(settings, store, [], ["1h", "4h"], None, None, activate=False, permutation=False)
    from trader.ml.registry import Registry

    Registry(store).use(summary["id"])
    base = [sys.executable, "-m", "cli.main", "scan", "--store", str(store), "-m", "0", "-f", "json"]
    out["scan_with_model"] = whole(base)
    out["scan_without_model"] = whole([*base, "--no-model"])
    tmp.cleanup()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=None)
    print(json.dumps(main(ap.parse_args().store), indent=2))
