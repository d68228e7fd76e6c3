"""Benchmark (not a test): ``scan`` from a warm store.

- A store holding 96 symbols x (1h, 4h) x 1000 closed klines — the bundled data as ``trader warm``
  leaves it at the replay exchange's default start — built in a temp dir.
- Core time (load + features + scores, ``Scanner.scan``) per strategy, median of ``--repeat`` runs,
  with the default lookback (300) and with lookback 1000 (every stored kline).
- Whole-process wall time and peak RSS of ``trader scan --format json`` (median of 5 runs).
- Scaling: 500 and 1000 symbols (the 96 real series replicated under new names), vectorised core.

    .venv/bin/python bench/scan.py [--repeat 7]

Prints one JSON object; ratios are computed from figures measured in this run.
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

from trader.replay.dataset import ReplayDataset
from trader.replay.server import default_start_ms
from trader.scan import STRATEGIES, Scanner, ScanParams
from trader.store.klines import KlineStore
from trader.warm import last_closed_open_ms

ROOT = Path(__file__).resolve().parents[1]


def build_store(path: Path, ds: ReplayDataset, copies: int = 1, limit: int | None = None) -> tuple[int, int]:
    """Fill ``path`` like a warm at the default replay start; returns (symbols, now_ms)."""
    now = default_start_ms(ds)
    n = 0
    with KlineStore(path) as store:
        for c in range(copies):
            for symbol in ds.symbols:
                if limit is not None and n >= limit:
                    break
                name = symbol if c == 0 else f"{symbol[:-4]}{c:02d}{symbol[-4:]}"
                for interval in ("1h", "4h"):
                    s = ds.series(symbol, interval)
                    last = last_closed_open_ms(now, interval)
                    hi = int((s.open_time_ms <= last).sum())
                    store.append(name, interval, s.values[hi - 1000 : hi])
                n += 1
        store.set_clock(now, int(time.time() * 1000))
    return n, now


def core(path: Path, strategy: str, repeat: int, now: int, lookback: int = 300) -> float:
    with KlineStore(path) as store, Scanner(store, ScanParams(lookback=lookback, min_history=min(200, lookback)), strategy, workers=2) as sc:
        sc.scan(now_ms=now)  # warm-up: pools started, caches touched
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            sc.scan(now_ms=now)
            times.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(times), 2)


_RSS_PROBE = (
    "import resource, subprocess, sys; "
    "p = subprocess.run(sys.argv[1:], capture_output=True); "
    "sys.exit(p.returncode) if p.returncode else print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def whole_process(path: Path, runs: int = 5) -> tuple[float, float]:
    """Median wall seconds of ``trader scan --format json`` and its peak RSS in MB (ru_maxrss of that process only)."""
    walls = []
    rss = []
    env = {**os.environ, "TRADER_SCAN__GRACE_S": "1e9"}
    cmd = [sys.executable, "-m", "cli.main", "scan", "--store", str(path), "--format", "json", "-m", "0"]
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, env=env)
        walls.append(time.perf_counter() - t)
        assert p.returncode == 0, p.stderr.decode()
        probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, *cmd], cwd=ROOT, capture_output=True, env=env, text=True)
        rss.append(int(probe.stdout.strip()) / 1024)
    return round(statistics.median(walls), 3), round(max(rss), 1)


def main(repeat: int) -> dict[str, object]:
    ds = ReplayDataset()
    out: dict[str, object] = {"benchmark": "scan", "repeat": repeat, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        p96 = Path(tmp) / "s96"
        _, now = build_store(p96, ds)
        strat = {s: core(p96, s, repeat if s in ("vectorized",) else max(2, repeat // 3), now) for s in STRATEGIES}
        out["core_ms_96x2_lookback300"] = strat
        out["speedup_vs_serial"] = {s: round(strat["serial"] / v, 2) for s, v in strat.items()}
        out["core_ms_96x2_lookback1000_vectorized"] = core(p96, "vectorized", repeat, now, lookback=1000)
        wall, rss = whole_process(p96)
        out["trader_scan_process_wall_s"] = wall
        out["trader_scan_peak_rss_mb"] = rss
        scaling = {"96": strat["vectorized"]}
        for n in (500, 1000):
            pn = Path(tmp) / f"s{n}"
            build_store(pn, ds, copies=-(-n // 96), limit=n)
            scaling[str(n)] = core(pn, "vectorized", max(3, repeat // 2), now)
        out["core_ms_vectorized_by_symbols"] = scaling
        out["ms_per_symbol"] = {k: round(v / int(k), 3) for k, v in scaling.items()}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    print(json.dumps(main(ap.parse_args().repeat), indent=2))
