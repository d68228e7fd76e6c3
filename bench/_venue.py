"""What the order benchmarks share: one funded account with the ORDERS limits lifted, a venue in its
own process (``trader replay``), and latency percentiles. Binance's ORDERS limits would pace any
client to a few orders per second: these benchmarks measure latency, not the exchange's limits."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "benchKey" + "K" * 56, "benchSecret" + "S" * 53
LIFTED = ("  matching:\n    order_limit_10s: 100000000\n    order_limit_1d: 100000000\n"
          "  futures:\n    order_limit_10s: 100000000\n    order_limit_1m: 100000000\n")


@contextlib.contextmanager
def venue(tmp: Path, *flags: str, balances: str = "{USDT: 100000000, BTC: 1000}") -> Iterator[tuple[str, int]]:
    """``(base URL, pid)`` of ``trader replay --port 0 --weight-limit 10**9 --preload *flags`` with the bench
    account (``KEY``/``SECRET``, ``balances``) and the ORDERS limits lifted; stopped on exit."""
    cfg = tmp / "venue.yaml"
    cfg.write_text(f"replay:\n  accounts:\n    - api_key: {KEY}\n      api_secret: {SECRET}\n      balances: {balances}\n" + LIFTED)
    cmd = [sys.executable, "-m", "cli.main", "replay", "--port", "0", "--weight-limit", "1000000000", "--preload", "--config", str(cfg), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        proc.stdout.readline()
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def pct(xs: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 in ms of durations in seconds, and the count."""
    xs = sorted(xs)
    return {"p50_ms": round(statistics.median(xs) * 1000, 3), "p90_ms": round(xs[int(len(xs) * 0.9)] * 1000, 3),
            "p99_ms": round(xs[int(len(xs) * 0.99)] * 1000, 3), "n": len(xs)}
