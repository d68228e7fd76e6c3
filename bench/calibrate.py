"""Calibration (not a test): distribution of scan scores over the bundled data.

Replays the scorer at many past moments: every ``--step-hours`` hours from the first moment with
``lookback`` closed 4h klines to the end of the data, all 96 symbols, exactly as ``trader scan``
would have scored them then (only klines closed at that moment). Prints the share of
symbol-moments at or above each threshold, and per direction.

    .venv/bin/python bench/calibrate.py [--step-hours 6]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trader.config import ScanConfig
from trader.models import OHLCVQ
from trader.replay.dataset import ReplayDataset
from trader.scan import score_arrays

HOUR = 3_600_000


def main(step_hours: int) -> dict[str, object]:
    ds = ReplayDataset()
    params = ScanConfig()
    L = params.lookback
    symbols = list(ds.symbols)
    h1 = np.stack([ds.series(s, "1h").values[list(OHLCVQ)] for s in symbols])  # (n, 6, T1)
    h4 = np.stack([ds.series(s, "4h").values[list(OHLCVQ)] for s in symbols])
    t1 = ds.series(symbols[0], "1h").open_time_ms
    t4 = ds.series(symbols[0], "4h").open_time_ms
    scores, dirs = [], []
    first = int(np.searchsorted(t1, t4[L] + 4 * HOUR))  # enough closed 4h klines behind
    for i in range(first, t1.shape[0], step_hours):
        now = int(t1[i])  # the moment kline i opens: klines < i are closed
        j = int(np.searchsorted(t4 + 4 * HOUR, now, side="right"))  # closed 4h klines
        score, direction, _, valid = score_arrays([h1[:, :, i - L : i], h4[:, :, j - L : j]], params)
        scores.append(np.where(valid, score, np.nan))
        dirs.append(direction)
    s = np.concatenate(scores)
    d = np.concatenate(dirs)
    s_ok = s[~np.isnan(s)]
    out: dict[str, object] = {
        "moments": len(scores),
        "symbol_moments": int(s_ok.size),
        "step_hours": step_hours,
        "percentiles": {str(q): round(float(np.percentile(s_ok, q)), 2) for q in (50, 90, 95, 99, 99.9)},
        "share_at_or_above": {str(t): round(float((s_ok >= t).mean()), 5) for t in (60, 65, 70, 75, 80, 85)},
        "share_75_long": round(float(((s >= 75) & (d > 0)).sum() / s_ok.size), 5),
        "share_75_short": round(float(((s >= 75) & (d < 0)).sum() / s_ok.size), 5),
        "moments_with_any_75": round(float(np.mean([np.nanmax(x) >= 75 for x in scores])), 3),
    }
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-hours", type=int, default=6)
    print(json.dumps(main(ap.parse_args().step_hours), indent=2))
