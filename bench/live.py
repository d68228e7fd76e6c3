"""Benchmark (not a test): the live kline cache.

1. **Ingest**: real Binance kline events (combined-stream frames built from the bundled data,
   29 forming updates per closed kline, 100 symbols x 2 intervals) pushed through the stream
   client's frame parser into the LiveFeed's handler and ring buffers, on one core, no network:
   events per second, with and without O(1) indicator updates on closes.
2. **Event-to-cache latency** on loopback, the replay exchange in its own process: from the step of
   its clock (which makes it emit) to each event in the live cache, p50 / p99, for 1 stream and
   for a burst of 96 streams at once (every event of the burst counted, queueing included).
3. **Memory** of the cache for 100 symbols x 2 intervals x 300 klines.

    .venv/bin/python bench/live.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trader.config import IndicatorConfig, StreamConfig
from trader.exchange.stream import KlineStream
from trader.live import LiveFeed
from trader.replay.dataset import ReplayDataset
from trader.replay.streams import kline_event
from trader.runtime import tune_allocator
from trader.store.live import LiveCache

INTERVALS = ("1h", "4h")


def _frames(ds: ReplayDataset, symbols: list[str], closes: int) -> tuple[list[bytes], dict[tuple[str, str], np.ndarray]]:
    """Combined-stream frames: per series ``closes`` closed klines, each preceded by 29 forming updates."""
    frames: list[bytes] = []
    seeds = {}
    for c in range(closes):
        for s in symbols:
            for iv in INTERVALS:
                series = ds.series(s, iv)
                i = 400 + c
                seeds[(s, iv)] = series.values[:, 100:400]
                name = f"{s.lower()}@kline_{iv}".encode()
                open_ms = int(series.open_time_ms[i])
                for k in range(29):
                    ev = kline_event(series, i, open_ms + (k + 1) * 2000, closed=False)
                    frames.append(b'{"stream":"' + name + b'","data":' + ev + b"}")
                ev = kline_event(series, i, open_ms + series.interval_ms, closed=True)
                frames.append(b'{"stream":"' + name + b'","data":' + ev + b"}")
    return frames, seeds


def ingest(ds: ReplayDataset, symbols: list[str], indicators: bool) -> dict[str, float]:
    frames, seeds = _frames(ds, symbols, closes=5)
    feed = LiveFeed(None, None, symbols, INTERVALS, indicators=IndicatorConfig() if indicators else None)  # type: ignore[arg-type]
    for key, cols in seeds.items():
        feed.cache.seed(*key, cols)
        feed._reset_state(key)
    stream = KlineStream("ws://unused", [], feed._on_kline)
    t = time.perf_counter()
    for raw in frames:
        stream._dispatch(raw)
    wall = time.perf_counter() - t
    assert stream.stats.malformed == 0 and feed.stats.closed_applied == len(frames) // 30
    return {"events": len(frames), "seconds": round(wall, 3), "events_per_s": round(len(frames) / wall)}


async def latency(n_streams: int, ticks: int) -> dict[str, float]:
    """Replay exchange in its own process (as a real exchange is elsewhere); the client here.

    Each tick steps the replay clock by 2 s with ``POST /replay/clock`` (sent with aiohttp, the
    cheapest client here) so the exchange emits one forming update per stream. Latency is measured
    on this machine's monotonic clock from just before the step request to each event being in the
    live cache: the HTTP round trip of the step, the exchange building and sending the events,
    loopback, frame parse and ring write.
    """
    import os
    import subprocess
    import sys

    import aiohttp

    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "0", "--preload"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        ds_symbols = list(ReplayDataset().symbols)[:n_streams]
        series = [(s, "1h") for s in ds_symbols]
        arrivals: list[int] = []
        feed = LiveFeed(None, None, ds_symbols, ["1h"])  # type: ignore[arg-type]
        handler = feed._on_kline

        def on_kline(symbol: str, interval: str, row: np.ndarray, closed: bool, event_ms: int) -> None:
            handler(symbol, interval, row, closed, event_ms)
            arrivals.append(time.perf_counter_ns())

        stream = KlineStream(url.replace("http", "ws"), series, on_kline, cfg=StreamConfig())
        await stream.start()
        await stream.ready.wait()
        first: list[float] = []
        every: list[float] = []
        async with aiohttp.ClientSession(url) as http:  # the control request itself: as cheap as possible
            for _ in range(3):  # warm-up: connections, caches
                arrivals.clear()
                async with http.post("/replay/clock", params={"stepMs": 2000}) as r:
                    await r.read()
                while len(arrivals) < len(series):
                    await asyncio.sleep(0.0002)
            for _ in range(ticks):
                arrivals.clear()
                t0 = time.perf_counter_ns()
                async with http.post("/replay/clock", params={"stepMs": 2000}) as r:
                    await r.read()
                while len(arrivals) < len(series):
                    await asyncio.sleep(0.0002)
                first.append((arrivals[0] - t0) / 1e6)
                every += [(a - t0) / 1e6 for a in arrivals]
        await stream.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    f, e = np.array(first), np.array(every)
    return {
        "streams": n_streams,
        "ticks": ticks,
        "first_event_p50_ms": round(float(np.percentile(f, 50)), 3),
        "first_event_p99_ms": round(float(np.percentile(f, 99)), 3),
        "all_events_p50_ms": round(float(np.percentile(e, 50)), 3),
        "all_events_p99_ms": round(float(np.percentile(e, 99)), 3),
    }


def main() -> dict[str, object]:
    tune_allocator()
    ds = ReplayDataset()
    symbols = list(ds.symbols)[:96]
    cache = LiveCache(300)
    for i in range(100):
        for iv in INTERVALS:
            cache.ring(f"S{i}USDT", iv)
    return {
        "benchmark": "live",
        "ingest_no_indicators": ingest(ds, symbols, indicators=False),
        "ingest_with_o1_indicators_on_close": ingest(ds, symbols, indicators=True),
        "event_to_cache_latency_1_stream": asyncio.run(latency(1, ticks=300)),
        "event_to_cache_latency_96_streams": asyncio.run(latency(96, ticks=200)),
        "cache_bytes_100x2x300": cache.nbytes(),
        "cache_mb_100x2x300": round(cache.nbytes() / 2**20, 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
