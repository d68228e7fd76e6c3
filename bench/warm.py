"""Benchmark (not a test): cold and incremental ``warm`` against the replay exchange.

96 symbols x (1h, 4h) x 1000 klines, 50 ms injected latency per request (default), replay server
in this process (its data parsed before timing: a real exchange does not parse CSV per request),
a fresh store in a temp dir. Then an incremental warm with nothing new, then a concurrency-50
warm against a 6000/min limit to check that the budget is never exceeded (zero 429s).

    .venv/bin/python bench/warm.py [--latency-ms 50] [--concurrency 20]

Prints one JSON object: wall seconds, requests, weight used, candles/s for each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from trader.config import ClientConfig, FaultConfig, ProfileConfig
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.exchange.rest import BinanceClient
from trader.store.klines import KlineStore
from trader.warm import warm


async def _phase(ex: ReplayExchange, store: KlineStore, symbols: list[str], concurrency: int) -> dict[str, object]:
    ex.stats.reset()
    profile = ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url)
    t0 = time.perf_counter()
    async with BinanceClient(profile, ClientConfig(concurrency=concurrency)) as client:
        report = await warm(client, store, symbols, ["1h", "4h"], depth=1000)
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 3),
        "requests": report.requests,
        "kline_requests": report.kline_requests,
        "weight_used": report.weight_used,
        "candles": report.candles_fetched,
        "candles_per_s": round(report.candles_fetched / wall) if wall else None,
        "http_429": ex.stats.statuses.get(429, 0),
        "http_418": ex.stats.statuses.get(418, 0),
        "errors": len(report.errors),
    }


async def main(latency_ms: float, concurrency: int) -> dict[str, object]:
    dataset = ReplayDataset()
    t0 = time.perf_counter()
    dataset.preload()
    preload_s = time.perf_counter() - t0
    out: dict[str, object] = {"benchmark": "warm", "latency_ms": latency_ms, "concurrency": concurrency, "server_preload_s": round(preload_s, 2)}
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(latency_ms=latency_ms)) as ex:
        symbols = list(dataset.symbols)
        with tempfile.TemporaryDirectory() as tmp, KlineStore(tmp) as store:
            out["cold"] = await _phase(ex, store, symbols, concurrency)
            out["incremental_nothing_new"] = await _phase(ex, store, symbols, concurrency)
            ex.clock.step(4 * 3_600_000)
            out["incremental_4h_later"] = await _phase(ex, store, symbols, concurrency)
            t1 = time.perf_counter()
            n = 0
            for _ in range(20):
                for s in symbols:
                    n += store.load(s, "1h", limit=1000).shape[1] > 0
            out["load_1000_klines_us"] = round((time.perf_counter() - t1) / (20 * len(symbols)) * 1e6, 1)
        with tempfile.TemporaryDirectory() as tmp, KlineStore(tmp) as store:
            out["cold_concurrency_50"] = await _phase(ex, store, symbols, 50)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.latency_ms, args.concurrency)), indent=2))
