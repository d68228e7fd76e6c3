"""Benchmark (not a test): the REST client and ``trader warm`` against the replay exchange.

The replay exchange runs in its own process (``trader replay``), so its CPU is not billed to the
client; every figure below is measured in this run on this machine.

1. **Client CPU per request** (HTTP only, no parsing) at 20 and 50 connections, 1-row and 1000-row
   pages, both transports; and **client CPU per kline** (``time.process_time`` of this process / klines received) for the 96
   bundled symbols x (1h, 4h) x 1000 klines (one page each), 20 in flight, 0 ms injected latency:
   fetch + parse only, with the aiohttp transport (default) and httpx's own; a full cold warm into a
   fresh store (fetch + parse + check + store); and ccxt's async binance client fetching the same
   klines (``fetch_ohlcv``, its rate limiter on) — the baseline a user would otherwise run.
2. **Parse only**: one 1000-row page into a kline block (``parse_klines``), median of 200.
3. **Store append**: one 1000-kline append into a store that already holds 0 and 2 000 series.
4. **960 symbols**: a data directory of the bundled files under 10 names each, ``trader replay``
   started (no preload) in the same second as ``trader warm --top 960`` (2 x 1000 klines each):
   seconds until the replay prints its URL, its peak RSS, the warm's wall time and exit code.
5. **Incremental**: the same warm again with nothing new (requests made, wall time).

    .venv/bin/python bench/warm.py [--skip-960]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trader.compare import replay_process  # noqa: E402
from trader.config import ClientConfig, ProfileConfig  # noqa: E402
from trader.exchange.rest import BinanceClient, parse_klines  # noqa: E402
from trader.replay.dataset import ReplayDataset  # noqa: E402
from trader.runtime import tune_allocator  # noqa: E402
from trader.store.klines import KlineStore  # noqa: E402
from trader.warm import warm  # noqa: E402

INTERVALS = ("1h", "4h")


def _client(url: str, transport: str = "aiohttp", concurrency: int = 20) -> BinanceClient:
    return BinanceClient(
        ProfileConfig(rest_url=url, ws_url=url.replace("http", "ws", 1)),
        ClientConfig(concurrency=concurrency, transport=transport),  # type: ignore[arg-type]
    )


async def _fetch_only(url: str, symbols: list[str], transport: str) -> dict[str, float]:
    async with _client(url, transport) as client:
        await client.fetch_server_time()
        sem = asyncio.Semaphore(20)

        async def one(s: str, i: str) -> int:
            async with sem:
                return int((await client.fetch_klines_page(s, i, limit=1000)).shape[1])

        await asyncio.gather(*(one(s, i) for s in symbols[:10] for i in INTERVALS))  # connections open
        c0, w0 = time.process_time(), time.perf_counter()
        n = sum(await asyncio.gather(*(one(s, i) for s in symbols for i in INTERVALS)))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"klines": n, "client_cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "client_cpu_us_per_kline": round(cpu / n * 1e6, 2)}


async def _cold_warm(url: str, symbols: list[str], store_dir: Path) -> dict[str, float]:
    async with _client(url) as client:
        await client.fetch_server_time()
        with KlineStore(store_dir) as store:
            c0, w0 = time.process_time(), time.perf_counter()
            report = await warm(client, store, symbols, INTERVALS, depth=1000)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n = report.candles_fetched
    return {
        "klines": n,
        "requests": report.requests,
        "client_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "client_cpu_us_per_kline": round(cpu / n * 1e6, 2),
        "errors": len(report.errors),
    }


async def _incremental(url: str, symbols: list[str], store_dir: Path) -> dict[str, float]:
    async with _client(url) as client:
        with KlineStore(store_dir) as store:
            w0 = time.perf_counter()
            report = await warm(client, store, symbols, INTERVALS, depth=1000)
    return {"wall_s": round(time.perf_counter() - w0, 3), "requests": report.requests, "kline_requests": report.kline_requests}


async def _ccxt(url: str, symbols: list[str]) -> dict[str, float] | None:
    try:
        import ccxt.async_support as ccxt_async
    except ImportError:
        return None
    ex = ccxt_async.binance({"enableRateLimit": True, "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"] = {k: f"{url}/api/v3" for k in ("public", "private", "v3", "v1")}
    try:
        await ex.load_markets()
        ids = {m["id"]: m["symbol"] for m in ex.markets.values()}
        sem = asyncio.Semaphore(20)

        async def one(s: str, i: str) -> int:
            async with sem:
                return len(await ex.fetch_ohlcv(ids[s], i, limit=1000))

        await asyncio.gather(*(one(s, i) for s in symbols[:10] for i in INTERVALS))
        c0, w0 = time.process_time(), time.perf_counter()
        n = sum(await asyncio.gather(*(one(s, i) for s in symbols for i in INTERVALS)))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        await ex.close()
    return {"klines": n, "client_cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "client_cpu_us_per_kline": round(cpu / n * 1e6, 2)}


async def _per_request(url: str, symbols: list[str], transport: str, concurrency: int, limit: int, n: int = 600) -> float:
    """Client CPU per request (ms) of ``BinanceClient.request`` — HTTP only, no parsing — at ``concurrency``."""
    async with _client(url, transport, concurrency) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(k: int) -> None:
            async with sem:
                await client.request("klines", {"symbol": symbols[k % len(symbols)], "interval": "1h", "limit": limit})

        await asyncio.gather(*(one(k) for k in range(100)))
        c0 = time.process_time()
        await asyncio.gather(*(one(k) for k in range(n)))
        return round((time.process_time() - c0) / n * 1e3, 3)


def _parse_only(ds: ReplayDataset) -> dict[str, float]:
    s = ds.series("BTCUSDT", "1h")
    raw = b"[" + s.rows_json(0, 1000) + b"]"
    parse_klines(raw)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        parse_klines(raw)
        times.append(time.perf_counter() - t)
    return {"ms_per_1000_rows_median": round(statistics.median(times) * 1e3, 3)}


def _append_cost(ds: ReplayDataset) -> dict[str, float]:
    block = ds.series("ETHUSDT", "1h").values[:, :1000].copy()
    out = {}
    for stored in (0, 2000):
        with tempfile.TemporaryDirectory() as tmp, KlineStore(tmp) as store:
            small = block[:, :2]
            for k in range(stored):
                store.append(f"S{k:04d}USDT", "1h", small)
            times = []
            for k in range(20):
                t = time.perf_counter()
                store.append(f"NEW{k:02d}USDT", "1h", block)
                times.append(time.perf_counter() - t)
            out[f"ms_per_1000_kline_append_with_{stored}_series_stored"] = round(statistics.median(times) * 1e3, 3)
    return out


def _rss_mb(pid: int) -> float:
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return float("nan")


def _cpu_s(pid: int) -> float:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return round(t.user + t.system, 2)
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return float("nan")


def _warm_960(tmp: Path) -> dict[str, object]:
    """960 symbols (10 names per bundled file), replay and warm started the same second."""
    data = tmp / "data960"
    data.mkdir()
    src = ReplayDataset().data_dir
    for path in sorted(src.glob("*.csv.gz")):
        symbol, rest = path.name.split("-", 1)
        for c in range(10):
            name = symbol if c == 0 else f"{symbol[:-4]}X{c}{symbol[-4:]}"
            (data / f"{name}-{rest}").symlink_to(path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    replay = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "0", "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
    )
    peak = 0.0
    try:
        assert replay.stdout is not None
        url = replay.stdout.readline().strip()
        serving_s = time.perf_counter() - t0
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "warm", "--rest-url", url, "--store", str(tmp / "store960"), "--top", "960",
             "--json", "--concurrency", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        while w.poll() is None:
            peak = max(peak, _rss_mb(replay.pid))
            time.sleep(0.2)  # sampling the replay's RSS while the warm runs; nothing is timed by this sleep
        out, err = w.communicate()
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        warm_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        replay_cpu = _cpu_s(replay.pid)
        report = json.loads(out) if w.returncode == 0 else {}
    finally:
        replay.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            replay.wait(timeout=20)
    return {
        "symbols": 960,
        "series": 1920,
        "replay_serving_after_s": round(serving_s, 2),
        "warm_exit_code": w.returncode,
        "wall_s_from_replay_start": round(wall, 2),
        "klines": report.get("candles_fetched"),
        "requests": report.get("requests"),
        "errors": len(report.get("errors", [])) if report else err.strip().splitlines()[-1:],
        "replay_peak_rss_mb": peak,
        "warm_process_cpu_s": round(warm_cpu, 2),
        "replay_process_cpu_s": replay_cpu,
    }


async def _main(skip_960: bool) -> dict[str, object]:
    ds = ReplayDataset()
    symbols = list(ds.symbols)
    out: dict[str, object] = {"benchmark": "warm", "cpus": os.cpu_count(), "series": len(symbols) * 2, "klines_per_series": 1000}
    with replay_process("--speed", "0") as url, tempfile.TemporaryDirectory() as tmp:
        out["fetch_parse_aiohttp_transport"] = await _fetch_only(url, symbols, "aiohttp")
        out["fetch_parse_httpx_transport"] = await _fetch_only(url, symbols, "httpx")
        out["cold_warm_into_fresh_store"] = await _cold_warm(url, symbols, Path(tmp) / "store")
        out["incremental_nothing_new"] = await _incremental(url, symbols, Path(tmp) / "store")
        out["client_cpu_ms_per_request_http_only"] = {
            f"{transport}_{conc}_connections_limit_{limit}": await _per_request(url, symbols, transport, conc, limit)
            for transport in ("aiohttp", "httpx")
            for conc in (20, 50)
            for limit in (1, 1000)
        }
        ccxt = await _ccxt(url, symbols)
        out["ccxt_fetch_ohlcv_baseline"] = ccxt if ccxt is not None else "ccxt not installed"
    if isinstance(ccxt, dict):
        ours = out["cold_warm_into_fresh_store"]["client_cpu_us_per_kline"]  # type: ignore[index]
        out["ccxt_cpu_per_kline_over_ours_full_warm"] = round(ccxt["client_cpu_us_per_kline"] / ours, 2)
    out["parse_klines"] = _parse_only(ds)
    out["store_append"] = _append_cost(ds)
    if not skip_960:
        with tempfile.TemporaryDirectory() as tmp:
            out["warm_960_symbols"] = _warm_960(Path(tmp))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-960", action="store_true", help="skip the 960-symbol run")
    args = ap.parse_args()
    tune_allocator()
    print(json.dumps(asyncio.run(_main(args.skip_960)), indent=2))
