"""Benchmark-sized test (not in the suite): the whole crash matrix of ``trader trade``.

The scripted paper session of ``tests/integration/crash_session.py`` (entries, OCO ladders, a take
profit, a stop, a time stop, a partial exit retried, a UTC day rollover, a flatten) is run once
clean to count its venue requests ``n``; then once per kill point ``k = 1 .. n``: SIGKILLed right
after the venue handled its k-th request (20 % of order answers lost besides), restarted, and checked
after every step (no client order id sent twice, ledger positions == venue balances, every venue
trade booked exactly once, no HALT the snapshots do not justify, flatten leaves no open order).
CI runs a dense sample (``tests/integration/test_crash_matrix.py``).

    .venv/bin/python bench/crash_matrix.py [--first 1] [--last N] [--parallel 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def main(first: int, last: int | None, parallel: int) -> dict[str, object]:
    from tests.integration.crash_session import session
    from trader.replay.dataset import ReplayDataset

    ds = ReplayDataset()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clean = await session(ds, tmp, None, fault_rate=0.0)
        n = clean["requests"]
        points = list(range(first, (last or n) + 1))
        results = []
        for a in range(0, len(points), parallel):
            batch = await asyncio.gather(*(session(ds, tmp, k, fault_rate=0.2, seed=k) for k in points[a : a + parallel]))
            for r in batch:
                r.pop("ledger", None)
                if r["violations"]:
                    print(json.dumps(r, default=str), file=sys.stderr, flush=True)
            results += batch
            print(f"crash matrix: {a + len(batch)}/{len(points)} kill points, {sum(bool(r['violations']) for r in results)} with violations, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    killed = [r for r in results if r["killed_after"] is not None]
    where: dict[str, int] = {}
    for r in killed:
        key = " ".join(r["killed_after"])
        where[key] = where.get(key, 0) + 1
    return {
        "benchmark": "crash_matrix",
        "session_requests_clean": n,
        "kill_points_run": len(points),
        "killed": len(killed),
        "killed_after": dict(sorted(where.items(), key=lambda kv: -kv[1])),
        "answers_lost": sum(r["answers_lost"] for r in results),
        "kill_points_with_violations": [r["kill_at"] for r in results if r["violations"]],
        "violations": sum(len(r["violations"]) for r in results),
        "seconds": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--last", type=int)
    ap.add_argument("--parallel", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.first, a.last, a.parallel)), indent=2))
