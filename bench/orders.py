"""Benchmark (not a test): order round trips against the replay venue, and the matching engine.

Round trip = one MARKET order placed -> its FULL response (fills, commission) received, sequential,
on loopback, the venue in its own process (``trader replay --speed 1``: a clock the others can sync to, one account with a large
balance and the ORDERS limit lifted: Binance's 100 orders / 10 s would pace any client to 10 orders/s;
this measures latency, not the exchange's limit). Contenders, in one run:

- ``trader raw``: one signed request through :class:`trader.exchange.rest.BinanceClient` (the floor
  of our stack: signing, httpx-aiohttp transport, venue, parsing);
- ``trader submit``: :meth:`TradingClient.submit` — intent id, filter checks, journal written and
  synced *before* the request and updated after (SQLite WAL, ``synchronous=FULL``), on a file, and
  with an in-memory journal to show what the fsyncs cost;
- ``python-binance`` ``order_market_buy`` and ``ccxt`` ``create_order`` (what a user would run
  instead; both sync over ``requests``), same venue, same order.

Matching engine: order events per second processed in process (placements, fills, cancels,
expiries, triggers — :attr:`MatchingEngine.events`) on the bundled BTCUSDT path: resting limits
and stops placed around the price, market orders, cancels, and the clock moved so resting orders
fill (target >= 50 000 / s).

    .venv/bin/python bench/orders.py [--n 400]
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
    with _venue(tmp, "--speed", "1") as (url, _):
        yield url


async def ours(url: str, n: int, tmp: Path) -> dict[str, object]:
    from trader.config import ProfileConfig
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import Credentials
    from trader.exchange.trading import OrderIntent, TradingClient

    out: dict[str, object] = {}
    creds = Credentials.hmac(KEY, SECRET)
    async with BinanceClient(ProfileConfig(rest_url=url, ws_url=url.replace("http", "ws"))) as rest:
        tc = TradingClient(rest, creds)
        await tc.sync_time()
        params = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.0001"), ("newOrderRespType", "FULL")]

        async def raw_round() -> dict[str, float]:
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                body, _ = await rest.request_full("newOrder", dict(params), query=lambda: tc._query(params)[0], headers=tc._headers)
                lat.append(time.perf_counter() - t)
                assert b'"fills"' in body
            return pct(lat[n // 10 :])

        out["trader_raw"] = await raw_round()
        for name, journal in (("trader_submit_memory_journal", OrderJournal(":memory:")), ("trader_submit_file_journal", OrderJournal(tmp / "journal.sqlite"))):
            tc = TradingClient(rest, creds, journal, order_limit_10s=10**9)  # the venue limit is lifted too (see above)
            await tc.submit(OrderIntent("bench", "BTCUSDT", -1, name, "BUY", "MARKET", quantity=Decimal("0.0001")))  # rules + avgPrice cached
            lat = []
            for i in range(n):
                intent = OrderIntent("bench", "BTCUSDT", i, name, "BUY", "MARKET", quantity=Decimal("0.0001"))
                t = time.perf_counter()
                o = await tc.submit(intent)
                lat.append(time.perf_counter() - t)
                assert o.status == "FILLED" and o.fills
            out[name] = pct(lat[n // 10 :])
        out["trader_raw_again"] = await raw_round()  # drift check: the same contender last
    return out


def python_binance(url: str, n: int) -> dict[str, object]:
    try:
        import binance
    except ImportError:
        return {"skipped": "python-binance not installed"}
    client = binance.Client(KEY, SECRET, ping=False)
    client.API_URL = f"{url}/api"
    client.timestamp_offset = client.get_server_time()["serverTime"] - int(time.time() * 1000)  # the replay's clock is not the wall's
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.order_market_buy(symbol="BTCUSDT", quantity="0.0001")
        lat.append(time.perf_counter() - t)
        assert r["fills"]
    return pct(lat[n // 10 :])


def ccxt_client(url: str, n: int) -> dict[str, object]:
    try:
        import ccxt
    except ImportError:
        return {"skipped": "ccxt not installed"}
    ex = ccxt.binance({"options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False, "fetchMarkets": {"types": ["spot"]},
                                   "adjustForTimeDifference": True}})
    ex.urls["api"] = {k: f"{url}/api/v3" for k in ("public", "private", "v3", "v1")}
    ex.load_markets()
    ex.apiKey, ex.secret = KEY, SECRET
    ex.load_time_difference()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        r = ex.create_order("BTC/USDT", "market", "buy", 0.0001)
        lat.append(time.perf_counter() - t)
        assert r["filled"]
    return pct(lat[n // 10 :])


def engine_throughput(seconds: float = 3.0, listening: bool = True) -> dict[str, object]:
    from trader.replay.dataset import ReplayDataset
    from trader.replay.matching import Account, MatchingEngine, OrderRequest, Rejected
    from trader.replay.pathmarket import SeriesMarket
    from trader.replay.server import default_start_ms

    ds = ReplayDataset()
    market = SeriesMarket(ds, 2.0)
    events: list[object] = []
    # listening: every executionReport / outboundAccountPosition is built (and kept), as for a connected user-data stream
    engine = MatchingEngine(market, emit=lambda a, e: events.append(e) if len(events) < 1000 else events.clear(),
                            listening=lambda a: listening)
    acct = engine.add_account(Account("k" * 16, {"USDT": Decimal(10) ** 12, "BTC": Decimal(10) ** 6}, secret=b"s"))
    t_ms = default_start_ms(ds)
    D = Decimal
    t0 = time.perf_counter()
    rounds = 0
    rejected = 0
    while time.perf_counter() - t0 < seconds:
        p = D(str(round(market.price("BTCUSDT", t_ms), 2)))
        batch = []
        for k in range(1, 21):  # resting limits and stops on both sides, 0.1 % apart
            off = D(1) + D(k) / 1000
            for req in (
                OrderRequest("BTCUSDT", "BUY", "LIMIT", D("0.001"), price=(p / off).quantize(D("0.01")), time_in_force="GTC"),
                OrderRequest("BTCUSDT", "SELL", "LIMIT", D("0.001"), price=(p * off).quantize(D("0.01")), time_in_force="GTC"),
                OrderRequest("BTCUSDT", "SELL", "STOP_LOSS", D("0.001"), stop_price=(p / off / off).quantize(D("0.01"))),
            ):
                try:
                    batch.append(engine.place(acct, req, t_ms))
                except Rejected:
                    rejected += 1
        for _ in range(10):
            engine.place(acct, OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.001")), t_ms)
        t_ms += 600_000  # ten minutes of the recorded path: some rest orders fill, some stops trigger
        engine.advance(t_ms)
        for o in batch[::2]:
            if o is not None and o.is_open:
                engine.cancel(acct, "BTCUSDT", o.order_id, None, t_ms)
        for o in batch[1::2]:
            if o is not None and o.is_open:
                engine.cancel(acct, "BTCUSDT", o.order_id, None, t_ms)
        rounds += 1
    wall = time.perf_counter() - t0
    return {"events": engine.events, "seconds": round(wall, 2), "events_per_s": round(engine.events / wall),
            "trades": len(acct.trades), "rounds": rounds, "rejected": rejected}


def main(n: int) -> dict[str, object]:
    out: dict[str, object] = {"benchmark": "orders", "cpus": os.cpu_count(), "n": n}
    with tempfile.TemporaryDirectory(dir=ROOT) as d, venue(Path(d)) as url:
        out.update(asyncio.run(ours(url, n, Path(d))))
        out["python_binance"] = python_binance(url, n)
        out["ccxt"] = ccxt_client(url, n)
    out["matching_engine_user_data_listening"] = engine_throughput(listening=True)
    out["matching_engine_no_listener"] = engine_throughput(listening=False)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    print(json.dumps(main(ap.parse_args().n), indent=2))
