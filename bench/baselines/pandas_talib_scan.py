"""Baseline (not part of trader): the scan a user writes with pandas and TA-Lib, one symbol at a time.

Reads the same KlineStore, builds a pandas DataFrame per (symbol, interval) as freqtrade-style code
does, computes the same indicators with TA-Lib on the DataFrame's columns, then the same structure
features and score (trader's pure functions, per symbol), and prints the scores as JSON — the same
numbers ``trader scan`` prints. ``bench/scan.py`` times this whole process against ``trader scan``.

    python bench/baselines/pandas_talib_scan.py STORE_DIR [--lookback 300]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import talib

from trader.compare import _talib_indicators
from trader.config import ScanConfig
from trader.features.factors import interval_biases, score_universe
from trader.features.structure import structure_features
from trader.models import KLINE_COLUMNS
from trader.store.klines import KlineStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--lookback", type=int, default=300)
    args = ap.parse_args()
    cfg = ScanConfig()
    weights = cfg.weights.model_dump()
    scores = {}
    with KlineStore(args.store) as store:
        symbols = sorted({s for s, _ in store.series()})
        for symbol in symbols:
            biases = []
            for interval in ("1h", "4h"):
                df = pd.DataFrame(store.load(symbol, interval, limit=args.lookback).T, columns=list(KLINE_COLUMNS))
                o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
                v, q = df["volume"].to_numpy(), df["quote_volume"].to_numpy()
                ind = _talib_indicators(o, h, lo, c, v, q, cfg.indicators)
                last = {k: (x[None, -50:] if k == "bb_width" else x[-1:]) for k, x in ind.items()}
                st = structure_features(o[None], h[None], lo[None], c[None], cfg.swing_length, window=cfg.structure_window)
                biases.append(interval_biases(last, st, o[-1:], c[-1:], cfg.factors))
            scores[symbol] = float(score_universe(biases, weights, sharpness=cfg.factors.sharpness).score[0])
    assert talib and np
    print(json.dumps({"scored": len(scores), "best": max(scores.values())}))


if __name__ == "__main__":
    main()
