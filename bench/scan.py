"""Benchmark (not a test): the scan, against what a user would run instead.

Stores like ``trader warm`` leaves them at the replay's default start: 96 symbols (the bundled data)
and 960 (the same files under 10 names each) x (1h, 4h) x 1000 closed klines, in temp dirs.

1. **Core, from memory** (192 series, lookback 300), median of ``--repeat`` runs with min-max:
   - indicators only: trader's last-value kernels vs a serial TA-Lib loop over the same indicators;
   - features + score: trader's vectorized core vs the serial TA-Lib scorer (TA-Lib indicators,
     then the same structure and factor code per symbol: identical scores).
2. **Scanner.scan** (load + features + score) at 96 and 960 symbols.
3. **Whole process**: ``trader scan --format json`` vs ``bench/baselines/pandas_talib_scan.py`` (the
   pandas + TA-Lib loop a user writes, same store, same scores), wall time (median of 5) and peak RSS,
   at 96 and 960 symbols.

The CLI tunes glibc's allocator (``trader/runtime.py``); this script does the same for the
in-process parts, and says so in its output.

    .venv/bin/python bench/scan.py [--repeat 9]

Prints one JSON object; every ratio is computed from figures measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from trader.compare import _talib_indicators, talib_scores  # noqa: E402
from trader.config import ScanConfig  # noqa: E402
from trader.features.indicators import compute_last  # noqa: E402
from trader.models import OHLCVQ  # noqa: E402
from trader.replay.dataset import ReplayDataset  # noqa: E402
from trader.replay.server import default_start_ms  # noqa: E402
from trader.runtime import tune_allocator  # noqa: E402
from trader.scan import Scanner, score_arrays  # noqa: E402
from trader.store.klines import KlineStore  # noqa: E402
from trader.warm import last_closed_open_ms  # noqa: E402

INTERVALS = ("1h", "4h")
LOOKBACK = 300


def build_store(path: Path, ds: ReplayDataset, copies: int = 1) -> int:
    """Fill ``path`` like a warm at the default replay start; returns the replay now (ms)."""
    now = default_start_ms(ds)
    with KlineStore(path) as store:
        for c in range(copies):
            for symbol in ds.symbols:
                name = symbol if c == 0 else f"{symbol[:-4]}X{c}{symbol[-4:]}"
                for interval in INTERVALS:
                    s = ds.series(symbol, interval)
                    hi = int((s.open_time_ms <= last_closed_open_ms(now, interval)).sum())
                    store.append(name, interval, s.values[:, hi - 1000 : hi])
        store.set_clock(now, int(time.time() * 1000))
    return now


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times) * 1e3, 2), "min_ms": round(min(times) * 1e3, 2), "max_ms": round(max(times) * 1e3, 2)}


def _time(fn: object, repeat: int) -> list[float]:
    fn()  # type: ignore[operator]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


def core(ds: ReplayDataset, repeat: int) -> dict[str, object]:
    cfg = ScanConfig()
    p = cfg.indicators
    symbols = list(ds.symbols)
    now = default_start_ms(ds)
    per_symbol = []
    for s in symbols:
        arrays = []
        for iv in INTERVALS:
            ser = ds.series(s, iv)
            hi = int((ser.open_time_ms <= last_closed_open_ms(now, iv)).sum())
            arrays.append(np.ascontiguousarray(ser.values[list(OHLCVQ), hi - LOOKBACK : hi]))
        per_symbol.append(arrays)
    stacked = [np.stack([a[i] for a in per_symbol]) for i in range(len(INTERVALS))]
    rows = np.concatenate(stacked)  # (192, 6, L)
    o, h, lo, c, v, q = (np.ascontiguousarray(rows[:, j]) for j in range(6))

    def talib_indicators() -> None:
        for k in range(c.shape[0]):
            _talib_indicators(o[k], h[k], lo[k], c[k], v[k], q[k], p)

    ind_ours = _time(lambda: compute_last(o, h, lo, c, v, q, p), repeat)
    ind_talib = _time(talib_indicators, repeat)
    core_ours = _time(lambda: score_arrays(stacked, cfg), repeat)
    core_talib = _time(lambda: talib_scores(per_symbol, cfg), repeat)
    ours_scores = score_arrays(stacked, cfg)[0]
    diff = float(np.max(np.abs(ours_scores - talib_scores(per_symbol, cfg))))
    return {
        "series": int(c.shape[0]),
        "indicators_only": {
            "trader_last_value_kernels": _stats(ind_ours),
            "serial_talib_loop": _stats(ind_talib),
            "speedup": round(statistics.median(ind_talib) / statistics.median(ind_ours), 2),
        },
        "features_and_score": {
            "trader_vectorized_core": _stats(core_ours),
            "serial_talib_scorer": _stats(core_talib),
            "speedup": round(statistics.median(core_talib) / statistics.median(core_ours), 2),
            "max_score_difference": diff,
        },
    }


def scanner(path: Path, now: int, repeat: int) -> dict[str, float]:
    with KlineStore(path) as store, Scanner(store, ScanConfig(), INTERVALS) as sc:
        times = _time(lambda: sc.scan(now_ms=now), repeat)
        res = sc.scan(now_ms=now)
    return {**_stats(times), "symbols": res.universe, "scored": len(res.signals)}


_RSS_PROBE = (
    "import resource, subprocess, sys; "
    "p = subprocess.run(sys.argv[1:], capture_output=True); "
    "sys.exit(p.returncode) if p.returncode else print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def whole(cmd: list[str], runs: int = 5) -> dict[str, float]:
    """Median wall seconds of a command and its peak RSS (ru_maxrss of that process), MB."""
    env = {**os.environ, "TRADER_SCAN__GRACE_S": "1e9"}
    walls, rss = [], []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, env=env)
        walls.append(time.perf_counter() - t)
        assert p.returncode == 0, p.stderr.decode()[-500:]
        probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, *cmd], cwd=ROOT, capture_output=True, env=env, text=True)
        rss.append(int(probe.stdout.strip()) / 1024)
    return {"wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
            "wall_s_max": round(max(walls), 3), "peak_rss_mb": round(max(rss), 1)}


def main(repeat: int) -> dict[str, object]:
    tuned = tune_allocator()
    ds = ReplayDataset()
    out: dict[str, object] = {"benchmark": "scan", "repeat": repeat, "cpus": os.cpu_count(), "allocator_tuned": tuned,
                              "lookback": LOOKBACK}
    out["core_192_series"] = core(ds, repeat)
    with tempfile.TemporaryDirectory() as tmp:
        for copies in (1, 10):
            n = 96 * copies
            path = Path(tmp) / f"s{n}"
            now = build_store(path, ds, copies)
            out[f"scanner_scan_{n}_symbols"] = scanner(path, now, max(3, repeat // (2 if copies > 1 else 1)))
            ours = whole([sys.executable, "-m", "cli.main", "scan", "--store", str(path), "--format", "json", "-m", "0"])
            base = whole([sys.executable, str(ROOT / "bench" / "baselines" / "pandas_talib_scan.py"), str(path)], runs=3)
            out[f"whole_process_{n}_symbols"] = {
                "trader_scan": ours,
                "pandas_talib_loop": base,
                "speedup": round(base["wall_s_median"] / ours["wall_s_median"], 2),
            }
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    print(json.dumps(main(ap.parse_args().repeat), indent=2))
