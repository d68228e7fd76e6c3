"""Benchmark (not a test): the venue's depth streams and its WebSocket API, measured from outside.

The venue runs in its own process (``trader replay --clock wall --preload``: python-binance and ccxt sign with their own clock; the ORDERS limit lifted as in
``bench/orders.py``: Binance's 100 orders / 10 s would pace any client to 10 orders/s). In one run:

1. **Depth streams, CPU**: the venue process's CPU time (user + system, ``psutil``) per wall second
   while one client holds ``<symbol>@depth@100ms`` for all 96 bundled symbols on one combined
   connection and reads every event; beside it the same process idle (no subscription) and with the
   96 ``@kline_1h`` streams a scan --live uses. Target: depth for 96 symbols at 100 ms <= 10 % of one
   core. The client's own CPU is not counted (it runs here).
2. **WS API order round trip**: ``order.place`` (MARKET, FULL response) sent -> its response read,
   sequential, on loopback, HMAC-signed as Binance documents (sorted params). Contenders: a raw
   ``websockets`` client (the floor), python-binance ``ws_create_order`` and ccxt.pro
   ``create_order_ws`` when installed (the same order over REST: ``bench/orders.py``).
   Target: p50 <= 1.5 ms.

    .venv/bin/python bench/venue.py [--n 400] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._venue import KEY, SECRET, pct  # noqa: E402 - after the sys.path line
from bench._venue import venue as _venue  # noqa: E402


@contextlib.contextmanager
def venue(tmp: Path) -> Iterator[tuple[str, int]]:
    """``(base url, pid)``: the venue on the wall clock (python-binance and ccxt sign with their own)."""
    with _venue(tmp, "--clock", "wall") as out:
        yield out


async def cpu_while(pid: int, ws_url: str, streams: list[str], seconds: float) -> dict[str, Any]:
    """Venue CPU (fraction of one core) and events received while ``streams`` are held for ``seconds``."""
    import psutil
    import websockets

    proc = psutil.Process(pid)
    events = 0
    frames_bytes = 0
    conn = None
    try:
        if streams:
            conn = await websockets.connect(f"{ws_url}/stream", max_size=2**26)
            for i in range(0, len(streams), 200):
                await conn.send(json.dumps({"method": "SUBSCRIBE", "params": streams[i:i + 200], "id": i}))
                await asyncio.sleep(0.25)  # Binance: at most 5 incoming messages per second
        warm_end = time.monotonic() + 1.0  # let the subscription settle before measuring
        while time.monotonic() < warm_end:
            if conn is None:
                await asyncio.sleep(0.1)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.recv(), 0.1)
        c0, t0 = proc.cpu_times(), time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            if conn is None:
                await asyncio.sleep(0.1)
                continue
            try:
                frame = await asyncio.wait_for(conn.recv(), 0.2)
            except TimeoutError:
                continue
            events += 1
            frames_bytes += len(frame)
        c1, t1 = proc.cpu_times(), time.monotonic()
    finally:
        if conn is not None:
            await conn.close()
    cpu = (c1.user - c0.user + c1.system - c0.system) / (t1 - t0)
    return {"streams": len(streams), "venue_cpu_of_one_core": round(cpu, 4), "events_per_s": round(events / (t1 - t0), 1),
            "MB_per_s": round(frames_bytes / (t1 - t0) / 1e6, 3)}


def _signed(params: dict[str, Any]) -> dict[str, Any]:
    from trader.exchange.signing import hmac_sha256_hex

    p = {**params, "apiKey": KEY}
    payload = "&".join(f"{k}={p[k]}" for k in sorted(p))
    return {**p, "signature": hmac_sha256_hex(SECRET.encode(), payload.encode())}


async def ws_api_raw(ws_url: str, n: int) -> dict[str, Any]:
    """Sequential ``order.place`` round trips over one WS API connection (raw ``websockets``)."""
    import websockets

    times = []
    async with websockets.connect(f"{ws_url}/ws-api/v3") as ws:
        for i in range(n + 20):
            side = "BUY" if i % 2 == 0 else "SELL"
            req = {"id": i, "method": "order.place", "params": _signed({
                "symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": "0.00100000",
                "newOrderRespType": "FULL", "timestamp": int(time.time() * 1000)})}
            text = json.dumps(req)
            t0 = time.perf_counter()
            await ws.send(text)
            reply = json.loads(await ws.recv())
            dt = time.perf_counter() - t0
            if reply.get("status") != 200:
                raise SystemExit(f"order.place failed: {reply}")
            if i >= 20:  # the first 20 warm the connection and the venue's caches
                times.append(dt)
    return pct(times)


async def python_binance_ws(url: str, ws_url: str, n: int) -> dict[str, Any] | str:
    """python-binance ``AsyncClient.ws_create_order`` against the venue's WS API."""
    try:
        import binance
        from binance.ws.websocket_api import WebsocketAPI
    except ImportError:
        return "not installed"
    client = binance.AsyncClient(KEY, SECRET)
    client.API_URL = f"{url}/api"
    client.ws_api = WebsocketAPI(url=f"{ws_url}/ws-api/v3")
    times = []
    try:
        for i in range(n + 20):
            t0 = time.perf_counter()
            await client.ws_create_order(symbol="BTCUSDT", side="BUY" if i % 2 == 0 else "SELL", type="MARKET",
                                         quantity="0.001", newOrderRespType="FULL")
            dt = time.perf_counter() - t0
            if i >= 20:
                times.append(dt)
    finally:
        await client.close_connection()
    return pct(times)


async def ccxt_pro_ws(url: str, ws_url: str, n: int) -> dict[str, Any] | str:
    """ccxt.pro ``create_order_ws`` against the venue's WS API."""
    try:
        import ccxt.pro as pro
    except ImportError:
        return "not installed"
    ex = pro.binance({"options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMarkets": {"types": ["spot"]},
                                  "fetchMargins": False}})
    ex.urls["api"] = {k: f"{url}/api/v3" for k in ("public", "private", "v3", "v1")}
    ex.urls["api"]["ws"] = {"spot": f"{ws_url}/ws", "ws-api": {"spot": f"{ws_url}/ws-api/v3"}}
    ex.apiKey, ex.secret = KEY, SECRET
    times = []
    try:
        await ex.load_markets()
        for i in range(n + 20):
            t0 = time.perf_counter()
            await ex.create_order_ws("BTC/USDT", "market", "buy" if i % 2 == 0 else "sell", 0.001)
            dt = time.perf_counter() - t0
            if i >= 20:
                times.append(dt)
    finally:
        await ex.close()
    return pct(times)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400, help="orders per contender")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per CPU measurement")
    args = ap.parse_args()
    from trader.replay.dataset import ReplayDataset

    symbols = list(ReplayDataset().symbols)
    report: dict[str, Any] = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, venue(Path(tmp)) as (url, pid):
        ws_url = url.replace("http", "ws")
        report["idle"] = await cpu_while(pid, ws_url, [], args.seconds)
        report["kline_1h_96"] = await cpu_while(pid, ws_url, [f"{s.lower()}@kline_1h" for s in symbols], args.seconds)
        report["depth_100ms_96"] = await cpu_while(pid, ws_url, [f"{s.lower()}@depth@100ms" for s in symbols], args.seconds)
        report["depth_1000ms_96"] = await cpu_while(pid, ws_url, [f"{s.lower()}@depth" for s in symbols], args.seconds)
        report["depth20_100ms_96"] = await cpu_while(pid, ws_url, [f"{s.lower()}@depth20@100ms" for s in symbols], args.seconds)
        print(json.dumps({k: v for k, v in report.items()}, indent=1), flush=True)
        orders: dict[str, Any] = {}
        orders["ws_api_raw"] = await ws_api_raw(ws_url, args.n)
        orders["python_binance_ws_create_order"] = await python_binance_ws(url, ws_url, args.n)
        orders["ccxt_pro_create_order_ws"] = await ccxt_pro_ws(url, ws_url, args.n)
        report["order_round_trip"] = orders
    print(json.dumps(report["order_round_trip"], indent=1))
    target_cpu = report["depth_100ms_96"]["venue_cpu_of_one_core"] - report["idle"]["venue_cpu_of_one_core"]
    print(f"depth@100ms x {len(symbols)}: venue CPU {report['depth_100ms_96']['venue_cpu_of_one_core']:.1%} of one core "
          f"({target_cpu:.1%} above idle); target <= 10%")
    print(f"WS API order round trip p50 {report['order_round_trip']['ws_api_raw']['p50_ms']} ms; target <= 1.5 ms")


if __name__ == "__main__":
    asyncio.run(main())
