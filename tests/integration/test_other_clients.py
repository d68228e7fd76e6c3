"""Clients nobody here wrote (ccxt, ccxt.pro, python-binance), pointed at the replay exchange unchanged
but for their base URLs — the snippets of the README's "Pointing other clients at the replay".
Skipped when the package is not installed. The sync clients run in a worker thread while the
in-process exchange serves on the event loop."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from trader.config import ReplayConfig
from trader.models import CLOSE, HIGH, LOW, OPEN, OPEN_TIME, VOLUME
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

HOUR = 3_600_000


def _ccxt_binance(module: object, rest_url: str, ws_url: str | None = None) -> object:
    ex = module.binance({"options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMarkets": {"types": ["spot"]}}})  # type: ignore[attr-defined]
    ex.urls["api"] = {k: f"{rest_url}/api/v3" for k in ("public", "private", "v3", "v1")}
    if ws_url is not None:
        ex.urls["api"]["ws"] = {"spot": f"{ws_url}/ws"}
    return ex


async def test_ccxt_klines_tickers_markets_book(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    ccxt = pytest.importorskip("ccxt")
    ex = _ccxt_binance(ccxt, exchange.rest_url)
    markets = await asyncio.to_thread(ex.load_markets)  # type: ignore[attr-defined]
    btc = markets["BTC/USDT"]
    assert btc["precision"]["price"] == 0.01 and btc["limits"]["cost"]["min"] == 5.0
    ohlcv = await asyncio.to_thread(ex.fetch_ohlcv, "BTC/USDT", "1h", None, 50)  # type: ignore[attr-defined]
    s = dataset.series("BTCUSDT", "1h")
    now = exchange.clock.now_ms()
    closed = [r for r in ohlcv if r[0] + HOUR <= now]
    for r in closed:
        i = int(np.searchsorted(s.open_time_ms, r[0]))
        assert r[1:] == [s.values[c, i] for c in (OPEN, HIGH, LOW, CLOSE, VOLUME)]  # byte-exact values
    daily = await asyncio.to_thread(ex.fetch_ohlcv, "ETH/USDT", "1d", None, 5)  # type: ignore[attr-defined]
    assert len(daily) == 5 and all(r[0] % (24 * HOUR) == 0 for r in daily)  # a derived interval
    ticker = await asyncio.to_thread(ex.fetch_ticker, "BTC/USDT")  # type: ignore[attr-defined]
    assert ticker["bid"] < ticker["last"] < ticker["ask"] and ticker["quoteVolume"] > 0
    book = await asyncio.to_thread(ex.fetch_order_book, "BTC/USDT", 5)  # type: ignore[attr-defined]
    assert len(book["bids"]) == 5 and book["bids"][0][0] < book["asks"][0][0]


async def test_ccxt_counting_back_from_its_own_clock_gets_data_with_clock_wall() -> None:
    ccxt = pytest.importorskip("ccxt")
    cfg = ReplayConfig(port=0, clock="wall")
    async with ReplayExchange.from_config(cfg) as ex:
        client = _ccxt_binance(ccxt, ex.rest_url)
        since = int(time.time() * 1000) - 5 * HOUR  # what every "last N hours" script does
        rows = await asyncio.to_thread(client.fetch_ohlcv, "BTC/USDT", "1h", since, 10)  # type: ignore[attr-defined]
        assert 4 <= len(rows) <= 6 and rows[0][0] >= since - HOUR
        server = await asyncio.to_thread(client.fetch_time)  # type: ignore[attr-defined]
        assert abs(server - time.time() * 1000) < 5_000  # the venue's now is the wall clock
        with pytest.raises(Exception, match="wall clock"):  # the clock cannot be stepped in this mode
            ex.clock.step(1)


async def test_ccxt_pro_watches_klines(exchange: ReplayExchange) -> None:
    ccxt = pytest.importorskip("ccxt")
    pro = pytest.importorskip("ccxt.pro")
    assert ccxt
    ex = _ccxt_binance(pro, exchange.rest_url, exchange.ws_url)
    try:
        await ex.load_markets()  # type: ignore[attr-defined]
        first = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1h"))  # type: ignore[attr-defined]
        for _ in range(200):  # wait for the subscription to reach the venue (no timing asserted)
            if any(exchange.hub.subs.values()):
                break
            await asyncio.sleep(0.01)
        exchange.clock.step(2000)
        candles = await asyncio.wait_for(first, 10)
        assert candles and candles[-1][0] == exchange.clock.now_ms() // HOUR * HOUR
    finally:
        await ex.close()  # type: ignore[attr-defined]


async def test_python_binance_rest_and_kline_socket(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    binance = pytest.importorskip("binance")
    client = binance.Client(ping=False)  # no network in the constructor
    client.API_URL = f"{exchange.rest_url}/api"
    rows = await asyncio.to_thread(client.get_klines, symbol="ETHUSDT", interval="4h", limit=20)
    s = dataset.series("ETHUSDT", "4h")
    i = int(np.searchsorted(s.open_time_ms, rows[0][0]))
    assert rows[0][0] == int(s.values[OPEN_TIME, i]) and float(rows[0][4]) == s.values[CLOSE, i]
    price = await asyncio.to_thread(client.get_symbol_ticker, symbol="ETHUSDT")
    assert float(price["price"]) > 0
    avg = await asyncio.to_thread(client.get_avg_price, symbol="ETHUSDT")
    assert avg["mins"] == 5
    info = await asyncio.to_thread(client.get_symbol_info, "ETHUSDT")
    assert info is not None and {f["filterType"] for f in info["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "NOTIONAL"}

    aclient = binance.AsyncClient()  # its constructor does no I/O (AsyncClient.create would ping)
    aclient.API_URL = f"{exchange.rest_url}/api"
    bm = binance.BinanceSocketManager(aclient)
    bm.STREAM_URL = f"{exchange.ws_url}/"
    try:
        async with bm.kline_socket("ETHUSDT", interval="1h") as stream:
            for _ in range(200):
                if any(exchange.hub.subs.values()):
                    break
                await asyncio.sleep(0.01)
            exchange.clock.step(2000)
            msg = await asyncio.wait_for(stream.recv(), 10)
        assert msg["e"] == "kline" and msg["s"] == "ETHUSDT" and msg["k"]["i"] == "1h"
    finally:
        await aclient.close_connection()
