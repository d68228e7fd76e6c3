"""Benchmark (not a test): the portfolio plan's backtest over the whole bundled window, 96 symbols, hourly decisions.

The shipped model's out-of-sample predictions exist every 4 h over part of the window, so this bench
ranks by the 24 h past return (a ranking available at every hourly close of the whole window) to
time the machinery the plan runs — sleeves, band, maker-first orders, stops, the venue's USD-M engine
with fees, funding and margin — at the target's scale. It says nothing about returns.

    .venv/bin/python bench/portfolio.py [--store .store/model]   # a store with the whole history (make model)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(store: Path) -> dict[str, object]:
    from trader.config import load_settings
    from trader.trade.portfolio import metrics
    from trader.trade.portfolio_backtest import PortfolioData

    settings = load_settings()
    t0 = time.perf_counter()
    data = PortfolioData(settings, store, None, None, None)
    # every hourly moment of the window, ranked by the 24 h past return
    from trader.trade.signals import decision_dataset

    ds = decision_dataset(settings, store, [], None, None, use_model=False)
    keep = [i for i, s in enumerate(ds.symbols) if s in data.blocks]
    data.prob = np.full((len(ds.symbols), ds.n_moments), np.nan)
    data.prob[keep] = ds.past_return[keep]
    data.valid = ds.valid
    data.col = {s: i for i, s in enumerate(ds.symbols)}
    data.oos = np.flatnonzero(np.isfinite(data.prob).any(axis=0))
    data.moments = ds.moments_ms[data.oos]
    data.decision_ms = 3_600_000
    t_data = time.perf_counter() - t0
    t1 = time.perf_counter()
    run = data.run(settings, 0, len(data.moments), 10_000.0)
    t_run = time.perf_counter() - t1
    m = metrics(run, 10_000.0)
    return {"benchmark": "portfolio", "decisions": len(data.moments), "symbols": len(data.blocks), "sleeves": 24,
            "seconds_plan": round(t_run, 2), "seconds_data": round(t_data, 2), "target_seconds": 15,
            "turnover_per_day": m["turnover_per_day"], "stops": m["stops"]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=ROOT / ".store" / "model")
    print(json.dumps(main(ap.parse_args().store), indent=1))
