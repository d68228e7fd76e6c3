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


def _trading_venue() -> tuple[ReplayExchange, str, str]:
    """A wall-clock venue (standard clients sign with their own clock) with one HMAC account."""
    from trader.config import AccountConfig

    key, secret = "stdClientKey" + "K" * 52, "stdClientSecret" + "S" * 49
    cfg = ReplayConfig(port=0, clock="wall", accounts=[AccountConfig(api_key=key, api_secret=secret, balances={"USDT": 5000.0})])
    return ReplayExchange.from_config(cfg), key, secret


async def test_python_binance_places_queries_cancels_and_reads_balances_unchanged() -> None:
    binance = pytest.importorskip("binance")
    venue, key, secret = _trading_venue()
    async with venue:
        client = binance.Client(key, secret, ping=False)
        client.API_URL = f"{venue.rest_url}/api"
        bought = await asyncio.to_thread(client.order_market_buy, symbol="BTCUSDT", quantity="0.001")
        assert bought["status"] == "FILLED" and bought["fills"][0]["commissionAsset"] == "BTC"
        book = await asyncio.to_thread(client.get_orderbook_ticker, symbol="BTCUSDT")
        price = f"{float(book['bidPrice']) * 0.9:.2f}"
        placed = await asyncio.to_thread(client.order_limit_buy, symbol="BTCUSDT", quantity="0.001", price=price, newClientOrderId="pb-1")
        got = await asyncio.to_thread(client.get_order, symbol="BTCUSDT", origClientOrderId="pb-1")
        assert got["orderId"] == placed["orderId"] and got["status"] == "NEW"
        opened = await asyncio.to_thread(client.get_open_orders, symbol="BTCUSDT")
        assert [o["clientOrderId"] for o in opened] == ["pb-1"]
        cancelled = await asyncio.to_thread(client.cancel_order, symbol="BTCUSDT", origClientOrderId="pb-1")
        assert cancelled["status"] == "CANCELED"
        account = await asyncio.to_thread(client.get_account)
        balances = {b["asset"]: float(b["free"]) for b in account["balances"]}
        assert balances["BTC"] == pytest.approx(0.000999) and 4900 < balances["USDT"] < 5000
        with pytest.raises(binance.exceptions.BinanceAPIException) as err:
            await asyncio.to_thread(client.get_order, symbol="BTCUSDT", origClientOrderId="nope")
        assert err.value.code == -2013 and err.value.message == "Order does not exist."
        trades = await asyncio.to_thread(client.get_my_trades, symbol="BTCUSDT")
        assert len(trades) == 1 and trades[0]["isBuyer"]


async def test_ccxt_places_fetches_cancels_and_reads_balances_unchanged() -> None:
    ccxt = pytest.importorskip("ccxt")
    venue, key, secret = _trading_venue()
    async with venue:
        ex = _ccxt_binance(ccxt, venue.rest_url)
        ex.options["fetchMargins"] = False  # type: ignore[attr-defined]  # no margin (sapi) endpoints on a spot venue
        await asyncio.to_thread(ex.load_markets)  # type: ignore[attr-defined]
        ex.apiKey, ex.secret = key, secret  # type: ignore[attr-defined]
        bought = await asyncio.to_thread(ex.create_order, "BTC/USDT", "market", "buy", 0.001)  # type: ignore[attr-defined]
        assert bought["status"] == "closed" and bought["filled"] == 0.001
        ticker = await asyncio.to_thread(ex.fetch_ticker, "BTC/USDT")  # type: ignore[attr-defined]
        order = await asyncio.to_thread(ex.create_order, "BTC/USDT", "limit", "buy", 0.001, round(ticker["bid"] * 0.9, 2))  # type: ignore[attr-defined]
        fetched = await asyncio.to_thread(ex.fetch_order, order["id"], "BTC/USDT")  # type: ignore[attr-defined]
        assert fetched["status"] == "open"
        cancelled = await asyncio.to_thread(ex.cancel_order, order["id"], "BTC/USDT")  # type: ignore[attr-defined]
        assert cancelled["status"] == "canceled"
        balance = await asyncio.to_thread(ex.fetch_balance)  # type: ignore[attr-defined]
        assert balance["BTC"]["free"] == pytest.approx(0.000999)
        with pytest.raises(ccxt.InsufficientFunds):  # Binance's -2010 maps to ccxt's error class
            await asyncio.to_thread(ex.create_order, "BTC/USDT", "limit", "buy", 1.0, round(ticker["bid"] * 0.9, 2))  # type: ignore[attr-defined]
        with pytest.raises(ccxt.OrderNotFound):  # -2013
            await asyncio.to_thread(ex.fetch_order, "999999", "BTC/USDT")  # type: ignore[attr-defined]
