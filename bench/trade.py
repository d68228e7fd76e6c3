"""Benchmark (not a test): `trader trade` — a whole-window backtest, and a paper run's latencies.

- backtest: the bundled window (96 symbols x 1h/4h, hourly decisions, ~6 700 of them) from a
  whole-history store, the seed plan on the hand-made score (no model), with and without the random
  baseline (target <= 10 s for the plan alone); then the same plan on the shipped model's signal;
- paper: ``trader trade --steps N`` as its own process against ``trader replay --speed 600`` (one
  replayed hour every 6 s) in another, 96 symbols, ``risk.min_score`` 55 so that it enters at all; its exit line reports the loop lag (a close to
  the loop acting on it, wall time) and signal-to-order (entry decision to the venue's FULL answer)
  percentiles (targets: lag p99 <= 50 ms, signal-to-order p99 <= 5 ms); virtual positions and the
  /metrics server run meanwhile. At 600x an hour's request weight (a 96-symbol warm and a
  reconciliation per decision) lands in 6 s of wall time, ten times Binance's per-minute budget at
  real time: the venue's and the client's weight limits are lifted so that the loop, not the rate
  limit, is measured.

    .venv/bin/python bench/trade.py [--store DIR] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ml import build  # noqa: E402


def paper(steps: int, tmp: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rp = subprocess.Popen([sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "600", "--preload", "--start", "2024-11-01T00:00:00",
                           "--weight-limit", "100000"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    try:
        assert rp.stdout is not None
        url = rp.stdout.readline().strip()
        creds = dict(x.split("=", 1) for x in rp.stdout.readline().split())
        env = {**env, **creds, "TRADER_REST_URL": url, "TRADER_WS_URL": url.replace("http", "ws"), "TRADER_STORE": str(tmp / "paper-store"), "TRADER_RISK__MIN_SCORE": "55",
               "TRADER_CLIENT__WEIGHT_LIMIT": "100000"}
        w = subprocess.run([sys.executable, "-m", "cli.main", "warm", "--top", "96", "--klines", "1000"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert w.returncode == 0, w.stderr[-500:]
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "cli.main", "trade", "--steps", str(steps), "--ledger", str(tmp / "paper.sqlite")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-1500:]
        line = [x for x in p.stderr.splitlines() if "loop lag" in x][-1]
        nums = dict(re.findall(r"(p50|p99) ([0-9.]+) ms", line)[:2])
        so = re.findall(r"signal to order \((\d+)\) p50 ([0-9.]+) ms p99 ([0-9.]+) ms", line)
        return {"decisions": steps, "wall_s": round(time.perf_counter() - t, 1), "loop_lag_ms": nums,
                "signal_to_order_ms": {"n": int(so[0][0]), "p50": float(so[0][1]), "p99": float(so[0][2])} if so else None,
                "line": line}
    finally:
        rp.terminate()
        rp.wait(timeout=20)


def main(store: Path | None, steps: int, paper_only: bool = False) -> dict[str, object]:
    from trader.config import Settings
    from trader.trade.backtest import backtest

    out: dict[str, object] = {"benchmark": "trade", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if store is None:
            store = tmp / "store"
            out["warm_whole_history_s"] = round(build(store), 2)
        if paper_only:
            out["paper"] = paper(steps, tmp)
            return out
        runs = []
        for _ in range(3):
            r = backtest(Settings(), store, None, None, baseline_seeds=0, use_model=False).as_dict()
            runs.append(r["seconds"]["total"])
        out["backtest_plan_s"] = {"runs": runs, "median": sorted(runs)[1]}
        full = backtest(Settings(), store, None, None, baseline_seeds=3, use_model=False).as_dict()
        out["backtest_with_baseline"] = {k: full[k] for k in ("trades", "net_return", "max_drawdown", "exposure", "fees_paid_quote", "exit_reasons",
                                                             "baseline", "beats_baseline", "seconds", "window", "accounting")}
        out["backtest_with_baseline"]["virtual"] = full.get("virtual")
        # the same plan deciding on the shipped model's signal: only its out-of-sample predictions (walk-forward test folds,
        # every 4 h from 2024-09-13) can be traded, so the window is shorter
        m = backtest(Settings(), store, None, None, baseline_seeds=3).as_dict()
        out["backtest_shipped_model"] = {k: m[k] for k in ("trades", "net_return", "max_drawdown", "exposure", "fees_paid_quote", "exit_reasons",
                                                           "baseline", "beats_baseline", "seconds", "window", "model_active")}
        out["paper"] = paper(steps, tmp)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--paper-only", action="store_true")
    a = ap.parse_args()
    print(json.dumps(main(a.store, a.steps, a.paper_only), indent=2, default=str))
