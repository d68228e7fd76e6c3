"""Clients nobody here wrote (ccxt, ccxt.pro, python-binance), pointed at the replay exchange unchanged
but for their base URLs — the snippets of the README's "Pointing other clients at the replay".
Skipped when the package is not installed. The sync clients run in a worker thread while the
in-process exchange serves on the event loop."""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trader.config import ReplayConfig
from trader.models import CLOSE, HIGH, LOW, OPEN, OPEN_TIME, VOLUME
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

HOUR = 3_600_000
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


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


# ---------------------------------------------------------------------- streams, WebSocket API, user data


async def test_ccxt_pro_book_updates_ws_orders_and_fails_fast_on_what_is_not_served() -> None:
    pytest.importorskip("ccxt")
    pro = pytest.importorskip("ccxt.pro")
    venue, key, secret = _trading_venue()
    async with venue:
        ex = _ccxt_binance(pro, venue.rest_url, venue.ws_url)
        ex.urls["api"]["ws"]["ws-api"] = {"spot": f"{venue.ws_url}/ws-api/v3"}  # type: ignore[attr-defined]
        ex.options["fetchMargins"] = False  # type: ignore[attr-defined]
        ex.apiKey, ex.secret = key, secret  # type: ignore[attr-defined]
        try:
            await ex.load_markets()  # type: ignore[attr-defined]
            first = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), 10)  # type: ignore[attr-defined]
            nonce = first["nonce"]
            later = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), 10)  # type: ignore[attr-defined]
            assert later["nonce"] > nonce and later["bids"][0][0] < later["asks"][0][0]  # the diff stream moves it
            for coro in (ex.watch_ohlcv("BTC/USDT", "15m"), ex.watch_ohlcv("ETH/USDT", "1s")):  # type: ignore[attr-defined]
                t0 = time.monotonic()
                with pytest.raises(Exception, match="unsupported stream name"):
                    await asyncio.wait_for(coro, 10)
                assert time.monotonic() - t0 < 5  # raises, never hangs
            trades = await asyncio.wait_for(ex.watch_trades("BTC/USDT"), 10)  # type: ignore[attr-defined]
            assert trades and trades[-1]["price"] > 0  # synthetic prints from the intrabar path
            watching = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))  # type: ignore[attr-defined]
            placed = await asyncio.wait_for(ex.create_order_ws("BTC/USDT", "market", "buy", 0.001), 10)  # type: ignore[attr-defined]
            assert placed["status"] == "closed" and placed["filled"] == 0.001
            seen = await asyncio.wait_for(watching, 10)
            assert seen[-1]["id"] == placed["id"]
        finally:
            await ex.close()  # type: ignore[attr-defined]


async def test_python_binance_ws_api_user_socket_depth_and_threaded_manager() -> None:
    binance = pytest.importorskip("binance")
    from binance.ws.websocket_api import WebsocketAPI

    venue, key, secret = _trading_venue()
    async with venue:
        client = binance.AsyncClient(key, secret)
        client.API_URL = f"{venue.rest_url}/api"
        client.ws_api = WebsocketAPI(url=f"{venue.ws_url}/ws-api/v3")  # the WebSocket API (orders, user data)
        bm = binance.BinanceSocketManager(client)
        bm.STREAM_URL = f"{venue.ws_url}/"
        try:
            placed = await asyncio.wait_for(client.ws_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001"), 10)
            assert placed["status"] == "FILLED"
            async with bm.user_socket() as user:
                await client.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.0009")
                event = await asyncio.wait_for(user.recv(), 10)
                assert event["e"] in ("executionReport", "outboundAccountPosition")
            await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
            px = float((await client.get_symbol_ticker(symbol="BTCUSDT"))["price"])
            oco = await client.create_oco_order(symbol="BTCUSDT", side="SELL", quantity="0.0005", aboveType="LIMIT_MAKER",
                                                abovePrice=f"{px * 1.2:.2f}", belowType="STOP_LOSS", belowStopPrice=f"{px * 0.8:.2f}")
            assert oco["listOrderStatus"] == "EXECUTING" and len(oco["orderReports"]) == 2
            assert [o["orderListId"] for o in await client.get_open_oco_orders()] == [oco["orderListId"]]
            await client._delete("orderList", True, data={"symbol": "BTCUSDT", "orderListId": oco["orderListId"]})
            assert await client.get_open_oco_orders() == []
            async with bm.depth_socket("BTCUSDT", depth=binance.BinanceSocketManager.WEBSOCKET_DEPTH_5) as depth:
                book = await asyncio.wait_for(depth.recv(), 10)
                assert len(book["bids"]) == 5 and book["lastUpdateId"] > 0
        finally:
            await client.close_connection()
        # ThreadedWebsocketManager builds its own clients: point the classes at the venue
        saved = (binance.AsyncClient.API_URL, binance.AsyncClient.WS_API_URL, binance.BinanceSocketManager.STREAM_URL)
        binance.AsyncClient.API_URL = f"{venue.rest_url}/api"
        binance.AsyncClient.WS_API_URL = f"{venue.ws_url}/ws-api/v3"
        binance.BinanceSocketManager.STREAM_URL = f"{venue.ws_url}/"
        got: list[dict[str, Any]] = []

        def threaded() -> None:
            twm = binance.ThreadedWebsocketManager(key, secret)
            twm.start()
            try:
                twm.start_kline_socket(callback=got.append, symbol="BTCUSDT", interval="1h")
                deadline = time.monotonic() + 20
                while len(got) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                twm.stop()
                twm.join(10)
                if not twm._loop.is_closed():  # python-binance leaves its loop (and its self-pipe) open
                    twm._loop.close()
                asyncio.set_event_loop(None)

        try:
            await asyncio.to_thread(threaded)
        finally:
            binance.AsyncClient.API_URL, binance.AsyncClient.WS_API_URL, binance.BinanceSocketManager.STREAM_URL = saved
        assert got and got[0]["e"] == "kline"


@pytest.mark.filterwarnings("ignore:parameter 'timeout' of type 'float' is deprecated:DeprecationWarning")  # binance-common on aiohttp >= 3.12
async def test_binance_sdk_spot_rest_ws_api_and_streams(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("binance_sdk_spot")
    from binance_common.configuration import (
        ConfigurationRestAPI,
        ConfigurationWebSocketAPI,
        ConfigurationWebSocketStreams,
    )
    from binance_sdk_spot.spot import Spot

    venue, key, secret = _trading_venue()
    async with venue:
        spot = Spot(
            config_rest_api=ConfigurationRestAPI(api_key=key, api_secret=secret, base_path=venue.rest_url),
            config_ws_api=ConfigurationWebSocketAPI(api_key=key, api_secret=secret, stream_url=f"{venue.ws_url}/ws-api/v3"),
            config_ws_streams=ConfigurationWebSocketStreams(stream_url=venue.ws_url),
        )
        rows = await asyncio.to_thread(spot.rest_api.klines, symbol="BTCUSDT", interval="1h", limit=3)
        assert len(rows.data()) == 3
        order = await asyncio.to_thread(spot.rest_api.new_order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.001)
        assert order.data().status == "FILLED"
        conn = await spot.websocket_api.create_connection()
        try:
            placed = await asyncio.wait_for(conn.order_place(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.001), 10)
            assert placed.data().status == 200 and placed.data().result.status == "FILLED"
            px = float((await asyncio.to_thread(spot.rest_api.ticker_price, symbol="BTCUSDT")).data().actual_instance.price)
            oco = await asyncio.wait_for(conn.order_list_place_oco(
                symbol="BTCUSDT", side="SELL", quantity=0.0005, above_type="LIMIT_MAKER", above_price=round(px * 1.2, 2),
                below_type="STOP_LOSS", below_stop_price=round(px * 0.8, 2)), 10)
            assert oco.data().result.list_order_status == "EXECUTING"
            account = await asyncio.wait_for(conn.account_status(), 10)
            assert any(b.asset == "BTC" for b in account.data().result.balances)
        finally:
            await conn.close_connection()
        streams = await spot.websocket_streams.create_connection()
        try:
            got: list[Any] = []
            (await streams.kline(symbol="btcusdt", interval="1h")).on("message", got.append)
            (await streams.diff_book_depth(symbol="btcusdt", update_speed="100ms")).on("message", got.append)
            for _ in range(500):
                if len({type(g).__name__ for g in got}) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len({type(g).__name__ for g in got}) == 2
            caplog.clear()
            await streams.kline(symbol="btcusdt", interval="15m")  # not derivable from 1h: refused
            for _ in range(500):
                if "unsupported stream name" in caplog.text:
                    break
                await asyncio.sleep(0.01)
            assert "unsupported stream name" in caplog.text  # the SDK reports it (error event + log) within 5 s
        finally:
            await streams.close_connection()


def _replay_subprocess(*flags: str) -> tuple[subprocess.Popen[str], str, dict[str, str], str | None]:
    """``trader replay --port 0 --clock wall`` in a subprocess: (process, url, key env, cert path)."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "replay", "--port", "0", "--clock", "wall", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None and proc.stderr is not None
    url = proc.stdout.readline().strip()
    keys = dict(kv.split("=", 1) for kv in proc.stdout.readline().split())
    cert = None
    if "--tls" in flags:
        line = proc.stderr.readline()
        while "certificate" not in line:
            line = proc.stderr.readline()
        cert = line.rsplit(" ", 1)[1].strip()
    return proc, url, keys, cert


def _stop(proc: subprocess.Popen[str]) -> None:
    """Terminate the replay and drain/close its pipes (no unclosed-file warnings, no blocked writer)."""
    proc.terminate()
    proc.communicate(timeout=30)


def test_binance_connector_rest_streams_user_data_and_ws_api() -> None:
    """binance-connector installs a top-level ``binance`` package, as python-binance does: it lives in
    its own directory (``make test`` installs it under .venv/clients/connector) and runs there."""
    target = ROOT / ".venv" / "clients" / "connector"
    if not (target / "binance" / "spot").is_dir():
        pytest.skip("binance-connector not installed (make test installs it in .venv/clients/connector)")
    proc, url, keys, _ = _replay_subprocess()
    try:
        p = subprocess.run([sys.executable, str(ROOT / "tests/integration/clients/connector_replay.py"), url, url.replace("http", "ws"),
                            keys["TRADER_API_KEY"], keys["TRADER_API_SECRET"]], capture_output=True, text=True, timeout=90,
                           env={**os.environ, "PYTHONPATH": str(target)})
    finally:
        _stop(proc)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "order FILLED" in p.stdout
    assert "stream kinds ['executionReport', 'kline', 'outboundAccountPosition', 'result']" in p.stdout, p.stdout
    assert "api [(200, ['listenKey']), (200, ['symbol', 'price']), (200, ['symbol', 'orderId', 'orderListId'])]" in p.stdout, p.stdout
    assert "oco EXECUTING 2 open lists 1" in p.stdout, p.stdout


def test_cryptofeed_over_tls_candles_tickers_books_and_trades() -> None:
    pytest.importorskip("cryptofeed")
    proc, url, _, cert = _replay_subprocess("--tls")
    try:
        assert url.startswith("https://") and cert
        env = {**os.environ, "SSL_CERT_FILE": cert, "REQUESTS_CA_BUNDLE": cert}
        p = subprocess.run([sys.executable, str(ROOT / "tests/integration/clients/cryptofeed_replay.py"), url, url.replace("https", "wss"), "60"],
                           capture_output=True, text=True, timeout=90, env=env)
    finally:
        _stop(proc)
    assert p.returncode == 0, p.stderr[-2000:]
    counts = ast.literal_eval(p.stdout.strip().splitlines()[-1])
    assert all(counts[k] > 0 for k in ("candles", "ticker", "l2_book", "trades")), counts


def ccxt_binanceusdm(module: Any, rest_url: str, ws_url: str | None = None) -> Any:
    """ccxt's ``binanceusdm`` pointed at the venue: every ``fapi*`` URL on the venue's host (the README's snippet)."""
    ex = module.binanceusdm({"options": {"fetchCurrencies": False, "fetchMarkets": {"types": ["linear"]}}})
    for name, url in list(ex.urls["api"].items()):
        if isinstance(url, str) and url.startswith("https://fapi.binance.com"):
            ex.urls["api"][name] = url.replace("https://fapi.binance.com", rest_url)
    if ws_url is not None:
        ex.urls["api"]["ws"] = {"future": f"{ws_url}/ws"}
    return ex


async def test_ccxt_binanceusdm_markets_leverage_short_positions_reduce_only_close_income() -> None:
    ccxt = pytest.importorskip("ccxt")
    venue, key, secret = _trading_venue()
    async with venue:
        def session() -> dict[str, Any]:
            ex = ccxt_binanceusdm(ccxt, venue.rest_url)
            ex.apiKey, ex.secret = key, secret
            markets = ex.load_markets()
            out: dict[str, Any] = {"markets": len(markets), "limits": ex.market("BTC/USDT:USDT")["limits"]["cost"]["min"]}
            out["klines"] = ex.fetch_ohlcv("ETH/USDT:USDT", "4h", limit=3)
            out["leverage"] = ex.set_leverage(4, "ETH/USDT:USDT")["leverage"]
            short = ex.create_order("ETH/USDT:USDT", "market", "sell", 0.5)
            out["short"] = (short["status"], short["filled"])
            out["positions"] = [(p["symbol"], p["contracts"], p["side"]) for p in ex.fetch_positions(["ETH/USDT:USDT"])]
            try:
                ex.create_order("ETH/USDT:USDT", "market", "buy", 1.0, params={"reduceOnly": True})
            except ccxt.BaseError as exc:  # a reduce-only order that would flip
                out["flip"] = type(exc).__name__
            close = ex.create_order("ETH/USDT:USDT", "market", "buy", 0.5, params={"reduceOnly": True})
            out["close"] = (close["status"], close["reduceOnly"])
            out["income"] = sorted({r["info"]["incomeType"] for r in ex.fetch_ledger()})
            out["funding"] = ex.fetch_funding_rate("BTC/USDT:USDT")["fundingRate"]
            out["usdt"] = ex.fetch_balance()["USDT"]["total"]
            return out

        got = await asyncio.to_thread(session)
    assert got["markets"] == 96 and got["limits"] == 100.0  # the real MIN_NOTIONAL of BTCUSDT perpetual
    assert len(got["klines"]) == 3 and got["leverage"] == 4
    assert got["short"] == ("closed", 0.5) and got["positions"] == [("ETH/USDT:USDT", 0.5, "short")]
    assert got["flip"] in ("OrderImmediatelyFillable", "InvalidOrder", "BadRequest", "OperationRejected", "ExchangeError")
    assert got["close"] == ("closed", True) and got["income"] == ["COMMISSION", "REALIZED_PNL"]
    assert got["funding"] == 0.0001 and 4990 < got["usdt"] < 5000


async def test_python_binance_futures_methods_and_the_futures_user_socket() -> None:
    binance = pytest.importorskip("binance")
    venue, key, secret = _trading_venue()
    async with venue:
        client = binance.AsyncClient(key, secret)
        client.FUTURES_URL = f"{venue.rest_url}/fapi"  # the README's setting
        bm = binance.BinanceSocketManager(client)
        bm.FSTREAM_URL = f"{venue.ws_url}/"
        try:
            info = await client.futures_exchange_info()
            assert len(info["symbols"]) == 96
            assert len(await client.futures_klines(symbol="BTCUSDT", interval="1h", limit=5)) == 5
            assert (await client.futures_change_leverage(symbol="BTCUSDT", leverage=2))["leverage"] == 2
            async with bm.futures_user_socket() as user:
                short = await client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002",
                                                          newOrderRespType="RESULT")
                assert short["status"] == "FILLED"
                events = [await asyncio.wait_for(user.recv(), 10) for _ in range(3)]
                assert [e["e"] for e in events] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
            [pos] = [p for p in await client.futures_position_information() if float(p["positionAmt"]) != 0]
            assert pos["positionAmt"] == "-0.002"
            with pytest.raises(binance.exceptions.BinanceAPIException) as e:
                await client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.004", reduceOnly="true")
            assert e.value.code == -2022
            await client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", reduceOnly="true")
            assert [p for p in await client.futures_position_information() if float(p["positionAmt"]) != 0] == []
            kinds = {r["incomeType"] for r in await client.futures_income_history()}
            assert kinds == {"COMMISSION", "REALIZED_PNL"}
            acct = await client.futures_account()
            assert float(acct["totalWalletBalance"]) < 5000
        finally:
            await client.close_connection()
