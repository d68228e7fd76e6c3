"""The replay venue's USD-M REST API and user data over HTTP and WebSocket, shapes field by field as
Binance's USD-M documentation lists them (New Order, Position Information V2/V3, Account V3, Futures
Account Balance, Account Trade List, Income History, Mark Price, User Data Streams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import websockets

from tests.integration.test_orders import ACCOUNTS, KEY, raw
from trader.config import FuturesReplayConfig
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

ORDER_KEYS = {"clientOrderId", "cumQty", "cumQuote", "executedQty", "orderId", "avgPrice", "origQty", "price", "reduceOnly", "side",
              "positionSide", "status", "stopPrice", "closePosition", "symbol", "timeInForce", "type", "origType", "updateTime",
              "workingType", "priceProtect", "priceMatch", "selfTradePreventionMode", "goodTillDate"}
POSITION_V3_KEYS = {"symbol", "positionSide", "positionAmt", "entryPrice", "breakEvenPrice", "markPrice", "unRealizedProfit",
                    "liquidationPrice", "isolatedMargin", "notional", "marginAsset", "isolatedWallet", "initialMargin", "maintMargin",
                    "positionInitialMargin", "openOrderInitialMargin", "adl", "bidNotional", "askNotional", "updateTime"}
POSITION_V2_KEYS = {"entryPrice", "breakEvenPrice", "marginType", "isAutoAddMargin", "isolatedMargin", "leverage", "liquidationPrice",
                    "markPrice", "maxNotionalValue", "positionAmt", "notional", "isolatedWallet", "symbol", "unRealizedProfit",
                    "positionSide", "updateTime"}
ACCOUNT_V3_KEYS = {"totalInitialMargin", "totalMaintMargin", "totalWalletBalance", "totalUnrealizedProfit", "totalMarginBalance",
                   "totalPositionInitialMargin", "totalOpenOrderInitialMargin", "totalCrossWalletBalance", "totalCrossUnPnl",
                   "availableBalance", "maxWithdrawAmount", "assets", "positions"}
ASSET_V3_KEYS = {"asset", "walletBalance", "unrealizedProfit", "marginBalance", "maintMargin", "initialMargin", "positionInitialMargin",
                 "openOrderInitialMargin", "crossWalletBalance", "crossUnPnl", "availableBalance", "maxWithdrawAmount", "updateTime"}
BALANCE_KEYS = {"accountAlias", "asset", "balance", "crossWalletBalance", "crossUnPnl", "availableBalance", "maxWithdrawAmount",
                "marginAvailable", "updateTime"}
TRADE_KEYS = {"buyer", "commission", "commissionAsset", "id", "maker", "orderId", "price", "qty", "quoteQty", "realizedPnl", "side",
              "positionSide", "symbol", "time"}
INCOME_KEYS = {"symbol", "incomeType", "income", "asset", "info", "time", "tranId", "tradeId"}
OTU_KEYS = {"s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "l", "z", "L", "N", "n", "T", "t", "b", "a", "m", "R", "wt",
            "ot", "ps", "cp", "rp", "pP", "si", "ss", "V", "pm", "gtd"}


@pytest.fixture
async def venue(dataset: ReplayDataset) -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(dataset, port=0, speed=0, accounts=ACCOUNTS, futures=FuturesReplayConfig(order_limit_10s=20)) as ex:
        yield ex


async def fapi(venue: ReplayExchange, method: str, path: str, **params: Any) -> Any:
    r = await raw(venue, method, path, list(params.items()))
    assert r.status_code == 200, r.text
    return r.json()


async def test_market_data_shapes_and_the_perpetual_is_the_spot_recording(venue: ReplayExchange) -> None:
    async with httpx.AsyncClient(base_url=venue.rest_url) as c:
        info = (await c.get("/fapi/v1/exchangeInfo")).json()
        assert len(info["symbols"]) == 96 and {s["contractType"] for s in info["symbols"]} == {"PERPETUAL"}
        btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
        assert btc["pricePrecision"] == 2 and {f["filterType"] for f in btc["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "MIN_NOTIONAL"}
        spot = (await c.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1h", "limit": 50})).json()
        perp = (await c.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1h", "limit": 50})).json()
        assert perp == spot  # basis zero: the perpetual trades the spot recording
        cont = (await c.get("/fapi/v1/continuousKlines", params={"pair": "BTCUSDT", "contractType": "PERPETUAL", "interval": "4h", "limit": 3})).json()
        assert len(cont) == 3
        mark = (await c.get("/fapi/v1/markPriceKlines", params={"symbol": "BTCUSDT", "interval": "1h", "limit": 2})).json()
        assert [r[:5] for r in mark] == [r[:5] for r in spot[-2:]] and mark[0][5] == "0"
        prem = (await c.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"})).json()
        assert set(prem) == {"symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate", "interestRate",
                             "nextFundingTime", "time"}
        assert prem["nextFundingTime"] % (8 * 3_600_000) == 0 and prem["lastFundingRate"] == "0.00010000"
        funding = (await c.get("/fapi/v1/fundingRate", params={"symbol": "BTCUSDT", "limit": 3})).json()
        assert [set(f) for f in funding] == [{"symbol", "fundingTime", "fundingRate", "markPrice"}] * 3
        assert funding[1]["fundingTime"] - funding[0]["fundingTime"] == 8 * 3_600_000
        r = await c.get("/fapi/v1/openInterest", params={"symbol": "BTCUSDT"})
        assert r.status_code == 400 and "not modelled" in r.json()["msg"]
        used_spot = (await c.get("/api/v3/ping")).headers["X-MBX-USED-WEIGHT-1M"]
        used_fapi = (await c.get("/fapi/v1/ping")).headers["X-MBX-USED-WEIGHT-1M"]
        assert used_spot == "3"  # spot klines (2) + ping (1): the /fapi requests are counted in a budget of their own
        assert int(used_fapi) > 1


async def test_a_short_then_a_reduce_only_close_field_by_field(venue: ReplayExchange) -> None:
    lev = await fapi(venue, "POST", "/fapi/v1/leverage", symbol="ETHUSDT", leverage=5)
    assert lev == {"leverage": 5, "maxNotionalValue": "50000", "symbol": "ETHUSDT"}  # the 4x-5x tiers of the shipped table
    assert await fapi(venue, "POST", "/fapi/v1/marginType", symbol="ETHUSDT", marginType="ISOLATED") == {"code": 200, "msg": "success"}
    r = await raw(venue, "POST", "/fapi/v1/order", [("symbol", "ETHUSDT"), ("side", "SELL"), ("type", "MARKET"), ("quantity", "1.000"),
                                                    ("newClientOrderId", "short-1"), ("newOrderRespType", "RESULT")])
    assert r.status_code == 200, r.text
    assert r.headers["X-MBX-ORDER-COUNT-10S"] == "1" and r.headers["X-MBX-ORDER-COUNT-1M"] == "1"
    order = r.json()
    assert set(order) == ORDER_KEYS and order["status"] == "FILLED" and order["origQty"] == "1.000"
    q = await fapi(venue, "GET", "/fapi/v1/order", symbol="ETHUSDT", origClientOrderId="short-1")
    assert set(q) == ORDER_KEYS | {"time"} and q["orderId"] == order["orderId"]
    v3 = await fapi(venue, "GET", "/fapi/v3/positionRisk")
    assert len(v3) == 1 and set(v3[0]) == POSITION_V3_KEYS and v3[0]["positionAmt"] == "-1.000"
    v2 = await fapi(venue, "GET", "/fapi/v2/positionRisk", symbol="ETHUSDT")
    assert set(v2[0]) == POSITION_V2_KEYS and v2[0]["marginType"] == "isolated" and v2[0]["leverage"] == "5"
    ep, wallet = Decimal(v2[0]["entryPrice"]), Decimal(v2[0]["isolatedWallet"])
    assert wallet == ep / 5
    acct = await fapi(venue, "GET", "/fapi/v3/account")
    assert set(acct) == ACCOUNT_V3_KEYS and set(acct["assets"][0]) == ASSET_V3_KEYS
    bal = await fapi(venue, "GET", "/fapi/v2/balance")
    assert set(bal[0]) == BALANCE_KEYS
    bad = await raw(venue, "POST", "/fapi/v1/order", [("symbol", "ETHUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "2.000"),
                                                      ("reduceOnly", "true")])
    assert bad.status_code == 400 and bad.json() == {"code": -2022, "msg": "ReduceOnly Order is rejected."}
    close = await fapi(venue, "POST", "/fapi/v1/order", symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1.000", reduceOnly="true")
    assert close["reduceOnly"] is True
    assert (await fapi(venue, "GET", "/fapi/v3/positionRisk")) == []
    trades = await fapi(venue, "GET", "/fapi/v1/userTrades", symbol="ETHUSDT")
    assert [set(t) for t in trades] == [TRADE_KEYS] * 2 and trades[1]["realizedPnl"] != "0.00000000"
    income = await fapi(venue, "GET", "/fapi/v1/income")
    assert {r["incomeType"] for r in income} == {"COMMISSION", "REALIZED_PNL"} and all(set(r) == INCOME_KEYS for r in income)
    rate = await fapi(venue, "GET", "/fapi/v1/commissionRate", symbol="ETHUSDT")
    assert rate == {"symbol": "ETHUSDT", "makerCommissionRate": "0.0002", "takerCommissionRate": "0.0005"}


async def test_orders_limit_per_10s_and_batch_orders(venue: ReplayExchange) -> None:
    items = [{"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002", "price": "50000.00"}] * 4
    items.append({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTX", "quantity": "0.002", "price": "70000.00"})
    out = await fapi(venue, "POST", "/fapi/v1/batchOrders", batchOrders=orjson.dumps(items).decode())
    assert [o.get("status", o.get("code")) for o in out] == ["NEW"] * 4 + [-5022]
    for _ in range(15):
        await fapi(venue, "POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                   quantity="0.002", price="50000.00")
    r = await raw(venue, "POST", "/fapi/v1/order", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.002")])
    assert r.status_code == 429 and r.json()["code"] == -1015 and "20 orders per 10 SECOND" in r.json()["msg"]
    done = await fapi(venue, "DELETE", "/fapi/v1/allOpenOrders", symbol="BTCUSDT")
    assert done["code"] == 200 and await fapi(venue, "GET", "/fapi/v1/openOrders", symbol="BTCUSDT") == []


async def test_user_data_stream_order_and_account_updates(venue: ReplayExchange) -> None:
    async with httpx.AsyncClient(base_url=venue.rest_url) as c:
        key = (await c.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})).json()["listenKey"]
        spot_key = (await c.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": KEY})).json()["listenKey"]
        assert key != spot_key
    async with websockets.connect(f"{venue.ws_url}/ws/{key}") as ws, websockets.connect(f"{venue.ws_url}/ws/{spot_key}") as spot_ws:
        for _ in range(100):  # wait for the venue to register both sockets (no timing asserted)
            if all(lk.sockets for lk in venue.trading._listen_keys.values()):
                break
            await asyncio.sleep(0.01)
        await fapi(venue, "POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
        got = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
        assert [g["e"] for g in got] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
        assert set(got[1]["o"]) == OTU_KEYS and got[1]["o"]["x"] == "TRADE" and got[1]["o"]["X"] == "FILLED"
        acct = got[2]["a"]
        assert acct["m"] == "ORDER" and acct["B"][0]["a"] == "USDT" and acct["P"][0]["pa"] == "0.010"
        with pytest.raises(TimeoutError):  # futures events never reach the spot listen key
            await asyncio.wait_for(spot_ws.recv(), 0.3)
        venue.clock.step(9 * 3_600_000)  # across a funding time
        funding = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert funding["e"] == "ACCOUNT_UPDATE" and funding["a"]["m"] == "FUNDING_FEE"
        assert Decimal(funding["a"]["B"][0]["wb"]) < Decimal(acct["B"][0]["wb"])  # a long pays the positive baseline rate


async def test_mark_price_stream(venue: ReplayExchange) -> None:
    async with websockets.connect(f"{venue.ws_url}/ws/btcusdt@markPrice@1s") as ws:
        for _ in range(100):  # wait for the venue to register the stream (no timing asserted)
            if venue.hub.subs.get("btcusdt@markPrice@1s"):
                break
            await asyncio.sleep(0.01)
        venue.clock.step(1000)
        ev = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert set(ev) == {"e", "E", "s", "p", "i", "P", "r", "T"} and ev["e"] == "markPriceUpdate" and ev["s"] == "BTCUSDT"
    async with httpx.AsyncClient(base_url=venue.rest_url) as c:
        prem = (await c.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"})).json()
    assert (ev["p"], ev["r"], ev["T"]) == (prem["markPrice"], prem["lastFundingRate"], prem["nextFundingTime"])
