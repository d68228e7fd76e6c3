"""Benchmark (not a test): USD-M futures order round trips against the replay venue, and the futures engine.

Round trip = one MARKET order on ``/fapi/v1/order`` (RESULT response) placed -> its answer received,
sequential, on loopback, the venue in its own process (``trader replay --clock wall``, ORDERS limits
lifted as in ``bench/orders.py``: Binance's 300 / 10 s would pace a client to 30 orders/s; this
measures latency). Contenders, in one run:

- ``trader raw``: one signed request through :class:`trader.exchange.rest.BinanceClient` (the floor of our stack);
- ``trader submit``: :meth:`FuturesClient.submit` — intent id, local contract checks, journal written
  and synced before the request (SQLite WAL, ``synchronous=FULL``) on a file;
- ``python-binance`` ``futures_create_order`` and ccxt ``binanceusdm`` ``create_order`` (what a user
  would run instead; both sync over ``requests``), same venue, same order.

Engine: order events per second in process (placements, fills, cancels, triggers, funding,
liquidations — :attr:`FuturesEngine.events`) on the bundled BTCUSDT path with margin checks on every
order (target >= 30 000 / s).

    .venv/bin/python bench/futures.py [--n 400]
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
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._venue import KEY, SECRET, pct  # noqa: E402 - after the sys.path line
from bench._venue import venue as _venue  # noqa: E402


@contextlib.contextmanager
def venue(tmp: Path) -> Iterator[str]:
    with _venue(tmp, "--clock", "wall", balances='{USDT: 100000000}') as (url, _):
        yield url


async def ours(url: str, n: int, tmp: Path) -> dict[str, object]:
    from trader.config import ProfileConfig
    from trader.exchange.futures import FuturesClient, FuturesIntent
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import Credentials

    out: dict[str, object] = {}
    creds = Credentials.hmac(KEY, SECRET)
    async with BinanceClient(ProfileConfig(rest_url=url, ws_url=url.replace("http", "ws"), market="usdm")) as rest:
        fc = FuturesClient(rest, creds, OrderJournal(tmp / "journal.sqlite"), order_limit_10s=10**9)
        await fc.sync_time()
        lat = []
        for i in range(n):
            params = [("symbol", "BTCUSDT"), ("side", "BUY" if i % 2 else "SELL"), ("type", "MARKET"), ("quantity", "0.002"),
                      ("newOrderRespType", "RESULT")]
            t = time.perf_counter()
            body, _ = await rest.request_full("newOrder", dict(params), query=lambda p=params: fc._query(p)[0], headers=fc._headers)
            lat.append(time.perf_counter() - t)
            assert b'"FILLED"' in body
        out["trader_raw"] = pct(lat[n // 10:])
        mark = await fc.mark_price("BTCUSDT")
        await fc.submit(FuturesIntent("bench", "BTCUSDT", -1, "warm", "BUY", "MARKET", quantity=Decimal("0.002")), ref_price=mark)
        lat = []
        for i in range(n):
            intent = FuturesIntent("bench", "BTCUSDT", i, "submit", "SELL" if i % 2 else "BUY", "MARKET", quantity=Decimal("0.002"))
            t = time.perf_counter()
            o = await fc.submit(intent, ref_price=mark)  # the mark price is passed: one request per order, as trader raw
            lat.append(time.perf_counter() - t)
            assert o.status == "FILLED"
        out["trader_submit_file_journal"] = pct(lat[n // 10:])
        fc.journal.close()
    return out


def python_binance(url: str, n: int) -> dict[str, object]:
    try:
        import binance
    except ImportError:
        return {"skipped": "python-binance not installed"}
    client = binance.Client(KEY, SECRET, ping=False)
    client.FUTURES_URL = f"{url}/fapi"
    lat = []
    for i in range(n):
        t = time.perf_counter()
        r = client.futures_create_order(symbol="BTCUSDT", side="BUY" if i % 2 else "SELL", type="MARKET", quantity="0.002",
                                        newOrderRespType="RESULT")
        lat.append(time.perf_counter() - t)
        assert r["status"] == "FILLED"
    return pct(lat[n // 10:])


def ccxt_client(url: str, n: int) -> dict[str, object]:
    try:
        import ccxt
    except ImportError:
        return {"skipped": "ccxt not installed"}
    ex = ccxt.binanceusdm({"options": {"fetchCurrencies": False, "fetchMarkets": {"types": ["linear"]}}})
    for name, u in list(ex.urls["api"].items()):
        if isinstance(u, str) and u.startswith("https://fapi.binance.com"):
            ex.urls["api"][name] = u.replace("https://fapi.binance.com", url)
    ex.apiKey, ex.secret = KEY, SECRET
    ex.load_markets()
    lat = []
    for i in range(n):
        t = time.perf_counter()
        r = ex.create_order("BTC/USDT:USDT", "market", "buy" if i % 2 else "sell", 0.002)
        lat.append(time.perf_counter() - t)
        assert r["filled"]
    return pct(lat[n // 10:])


def engine_throughput(seconds: float = 3.0) -> dict[str, object]:
    from trader.replay.dataset import ReplayDataset
    from trader.replay.futures import FuturesConfig, FuturesEngine, FuturesRequest
    from trader.replay.matching import Rejected
    from trader.replay.pathmarket import SeriesMarket
    from trader.replay.server import default_start_ms
    from trader.usdm import ContractRules, bundled_brackets, bundled_exchange_info

    ds = ReplayDataset()
    market = SeriesMarket(ds, 2.0)
    info = {s["symbol"]: s for s in bundled_exchange_info()["symbols"]}
    rules = {"BTCUSDT": ContractRules.from_symbol_info(info["BTCUSDT"])}
    events: list[object] = []
    engine = FuturesEngine(market, rules, bundled_brackets(), FuturesConfig(),
                           emit=lambda a, e: events.append(e) if len(events) < 1000 else events.clear())
    t_ms = default_start_ms(ds)
    engine.advance(t_ms)
    acct = engine.add_account("k" * 16, Decimal(10) ** 9)
    engine.set_leverage(acct, "BTCUSDT", 5, t_ms)
    D = Decimal
    t0 = time.perf_counter()
    rounds = rejected = 0
    while time.perf_counter() - t0 < seconds:
        p = D(str(round(market.price("BTCUSDT", t_ms), 1)))
        batch = []
        for k in range(1, 21):  # resting limits on both sides, 0.1 % apart, and stops (MAX_NUM_ALGO_ORDERS: 10)
            off = D(1) + D(k) / 1000
            reqs = [FuturesRequest("BTCUSDT", "BUY", "LIMIT", D("0.002"), price=(p / off).quantize(D("0.1")), time_in_force="GTC"),
                    FuturesRequest("BTCUSDT", "SELL", "LIMIT", D("0.002"), price=(p * off).quantize(D("0.1")), time_in_force="GTC")]
            if k % 2:
                reqs.append(FuturesRequest("BTCUSDT", "SELL", "STOP_MARKET", D("0.002"), stop_price=(p / off / off).quantize(D("0.1"))))
            for req in reqs:
                try:
                    batch.append(engine.place(acct, req, t_ms))
                except Rejected:
                    rejected += 1
        for i in range(10):
            engine.place(acct, FuturesRequest("BTCUSDT", "BUY" if i % 2 else "SELL", "MARKET", D("0.002")), t_ms)
        t_ms += 600_000  # ten minutes of the recorded path (a funding time every 48 rounds)
        engine.advance(t_ms)
        for o in batch:
            if o is not None and o.is_open:
                engine.cancel(acct, "BTCUSDT", o.order_id, None, t_ms)
        rounds += 1
    wall = time.perf_counter() - t0
    return {"events": engine.events, "seconds": round(wall, 2), "events_per_s": round(engine.events / wall),
            "trades": len(acct.trades), "rounds": rounds, "rejected": rejected}


def main(n: int) -> dict[str, object]:
    out: dict[str, object] = {"benchmark": "futures", "cpus": os.cpu_count(), "n": n}
    with tempfile.TemporaryDirectory(dir=ROOT) as d, venue(Path(d)) as url:
        out.update(asyncio.run(ours(url, n, Path(d))))
        out["python_binance"] = python_binance(url, n)
        out["ccxt_binanceusdm"] = ccxt_client(url, n)
    out["engine"] = engine_throughput()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400)
    print(json.dumps(main(ap.parse_args().n), indent=1))
