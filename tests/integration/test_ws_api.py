"""The replay venue's WebSocket API (/ws-api/v3) and the REST endpoints it shares handlers with:
order lists, cancel-replace, account extras, trading-day ticker, wire decimals everywhere."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
import websockets

from tests.integration.test_orders import _ED, ACCOUNTS, ED_KEY, KEY, SECRET, book, raw
from trader.config import AccountConfig, MatchingReplayConfig
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

D = Decimal
WIRE_DECIMAL = re.compile(r"^-?\d+\.\d{8}$")


@pytest.fixture
async def venue(dataset: ReplayDataset) -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(dataset, port=0, speed=0, accounts=ACCOUNTS, matching=MatchingReplayConfig(order_limit_10s=1000)) as ex:
        yield ex


def signed(params: dict[str, Any], key: str = KEY, secret: str = SECRET) -> dict[str, Any]:
    """WS API HMAC signing: every param but the signature, sorted by name, ``k=v&...``."""
    p = {**params, "apiKey": key}
    payload = "&".join(f"{k}={v}" for k, v in sorted(p.items()))
    return {**p, "signature": hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}


class Api:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.n = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.n += 1
        rid = f"r{self.n}"
        await self.ws.send(orjson.dumps({"id": rid, "method": method, **({"params": params} if params is not None else {})}).decode())
        while True:
            msg = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if "event" in msg:
                self.events.append(msg)
                continue
            assert msg["id"] == rid
            return msg  # type: ignore[no-any-return]


def decimals_in(doc: Any) -> list[str]:
    """Every string in ``doc`` that is a decimal number (has a '.' or an exponent)."""
    out: list[str] = []
    if isinstance(doc, dict):
        for v in doc.values():
            out += decimals_in(v)
    elif isinstance(doc, list):
        for v in doc:
            out += decimals_in(v)
    elif isinstance(doc, str) and re.fullmatch(r"-?[\d.]+(E-?\d+)?", doc) and ("." in doc or "E" in doc):
        out.append(doc)
    return out


async def test_ws_api_trades_like_rest(venue: ReplayExchange) -> None:
    async with websockets.connect(f"{venue.ws_url}/ws-api/v3", max_size=2**24) as ws:
        api = Api(ws)
        now = venue.clock.now_ms()
        assert (await api.call("time"))["result"] == {"serverTime": now}
        kl = await api.call("klines", {"symbol": "BTCUSDT", "interval": "1h", "limit": 3})
        assert kl["status"] == 200 and len(kl["result"]) == 3
        assert kl["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT" and kl["rateLimits"][0]["count"] >= 2
        depth = await api.call("depth", {"symbol": "BTCUSDT", "limit": 5})
        assert len(depth["result"]["bids"]) == 5 and depth["result"]["lastUpdateId"] > 0
        price = await api.call("ticker.price", {"symbol": "BTCUSDT"})
        top = await api.call("ticker.book", {"symbol": "BTCUSDT"})
        assert D(top["result"]["bidPrice"]) < D(price["result"]["price"]) < D(top["result"]["askPrice"])
        assert (await api.call("exchangeInfo", {"symbols": ["BTCUSDT"]}))["result"]["symbols"][0]["otoAllowed"] is False

        sub = await api.call("userDataStream.subscribe.signature", signed({"timestamp": now}))
        assert sub["status"] == 200
        placed = await api.call("order.place", signed({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
                                                        "newClientOrderId": "ws-m1", "timestamp": now}))
        assert placed["status"] == 200 and placed["result"]["status"] == "FILLED", placed
        kinds = {r["rateLimitType"] for r in placed["rateLimits"]}
        assert kinds == {"REQUEST_WEIGHT", "ORDERS"}
        bid, _ = book(venue)
        lim = await api.call("order.place", signed({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                                     "quantity": "0.001", "price": str((bid * D("0.9")).quantize(D("0.01"))),
                                                     "newClientOrderId": "ws-l1", "timestamp": now}))
        assert lim["result"]["status"] == "NEW"
        st = await api.call("order.status", signed({"symbol": "BTCUSDT", "origClientOrderId": "ws-l1", "timestamp": now}))
        assert st["result"]["clientOrderId"] == "ws-l1"
        opened = await api.call("openOrders.status", signed({"symbol": "BTCUSDT", "timestamp": now}))
        assert [o["clientOrderId"] for o in opened["result"]] == ["ws-l1"]
        # cancel-replace: the resting limit becomes a lower one, atomically as one request
        cr = await api.call("order.cancelReplace", signed({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                                            "quantity": "0.001", "price": str((bid * D("0.8")).quantize(D("0.01"))),
                                                            "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrigClientOrderId": "ws-l1",
                                                            "newClientOrderId": "ws-l2", "timestamp": now}))
        assert cr["status"] == 200 and cr["result"]["cancelResult"] == "SUCCESS" and cr["result"]["newOrderResponse"]["clientOrderId"] == "ws-l2"
        bad = await api.call("order.cancelReplace", signed({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                                             "quantity": "0.001", "price": "1000.00", "cancelReplaceMode": "STOP_ON_FAILURE",
                                                             "cancelOrigClientOrderId": "nope", "timestamp": now}))
        assert bad["status"] == 400 and bad["error"]["code"] == -2022
        assert bad["error"]["data"]["cancelResult"] == "FAILURE" and bad["error"]["data"]["newOrderResult"] == "NOT_ATTEMPTED"
        cancelled = await api.call("openOrders.cancelAll", signed({"symbol": "BTCUSDT", "timestamp": now}))
        assert [o["origClientOrderId"] for o in cancelled["result"]] == ["ws-l2"]
        trades = await api.call("myTrades", signed({"symbol": "BTCUSDT", "timestamp": now}))
        acct = await api.call("account.status", signed({"timestamp": now, "omitZeroBalances": True}))
        comm = await api.call("account.commission", signed({"symbol": "BTCUSDT", "timestamp": now}))
        orders = await api.call("account.rateLimits.orders", signed({"timestamp": now}))
        assert comm["result"]["standardCommission"]["taker"] == "0.00100000" and orders["result"][0]["count"] >= 3
        # errors keep REST's codes; a bad signature is -1022; an unknown method names what is served
        forged = signed({"symbol": "BTCUSDT", "timestamp": now}) | {"symbol": "ETHUSDT"}
        assert (await api.call("openOrders.status", forged))["error"]["code"] == -1022
        rej = await api.call("order.place", signed({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
                                                     "trailingDelta": 100, "timestamp": now}))
        assert rej["status"] == 400 and rej["error"]["code"] == -1013 and "allowTrailingStop=false" in rej["error"]["msg"]
        unknown = await api.call("sor.order.place", {})
        assert unknown["status"] == 400 and "order.place" in unknown["error"]["msg"]
        # user data arrived on the same connection, wrapped as Binance does
        assert any(e["event"]["e"] == "executionReport" and e["event"]["c"] == "ws-m1" for e in api.events)
        # every decimal on this wire is fixed 8 decimals (REST, WS API, user data alike)
        docs = [placed, lim, st, opened, cr, cancelled, trades, acct, comm, depth, top, *api.events]
        bad_decimals = [d for doc in docs for d in decimals_in(doc) if not WIRE_DECIMAL.match(d)]
        assert bad_decimals == [], bad_decimals[:10]
    # the REST myTrades agrees with the WS API's
    r = await raw(venue, "GET", "/api/v3/myTrades", [("symbol", "BTCUSDT")])
    assert r.json() == trades["result"]


async def test_the_documented_hmac_example_verifies(dataset: ReplayDataset) -> None:
    """Binance WebSocket API docs, "SIGNED request example (HMAC)": that payload and secret give
    cc15477742bd...ddbd08a; the venue must accept exactly that signature (and reject it altered)."""
    key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    params = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01000000", "price": "52000.00",
              "newOrderRespType": "ACK", "recvWindow": 100, "timestamp": 1645423376532, "apiKey": key}
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    assert hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest() == "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"
    async with ReplayExchange(dataset, port=0, speed=0, accounts=[AccountConfig(api_key=key, api_secret=secret, balances={"BTC": 1.0})]) as ex:
        async with websockets.connect(f"{ex.ws_url}/ws-api/v3") as ws:
            api = Api(ws)
            sig = "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"
            r = await api.call("order.test", {**params, "signature": sig})
            assert r["error"]["code"] == -1021  # the signature verified; the 2022 timestamp is then too old
            r = await api.call("order.test", {**params, "signature": sig.replace("c", "d", 1)})
            assert r["error"]["code"] == -1022


async def test_session_logon_with_ed25519_then_unsigned_requests(venue: ReplayExchange) -> None:
    async with websockets.connect(f"{venue.ws_url}/ws-api/v3") as ws:
        api = Api(ws)
        now = venue.clock.now_ms()
        p = {"apiKey": ED_KEY, "timestamp": now}
        payload = "&".join(f"{k}={v}" for k, v in sorted(p.items()))
        logon = await api.call("session.logon", {**p, "signature": base64.b64encode(_ED.sign(payload.encode())).decode()})
        assert logon["status"] == 200 and logon["result"]["apiKey"] == ED_KEY and logon["result"]["authorizedSince"] == now
        acct = await api.call("account.status", {"timestamp": now})  # no apiKey, no signature: the session's key
        assert acct["status"] == 200 and {b["asset"] for b in acct["result"]["balances"]} >= {"USDT"}
        assert (await api.call("userDataStream.subscribe"))["status"] == 200
        assert (await api.call("session.status"))["result"]["userDataStream"] is True
        assert (await api.call("session.logout"))["result"]["apiKey"] is None
        assert (await api.call("account.status", {"timestamp": now}))["error"]["code"] == -2014
        hmac_logon = await api.call("session.logon", signed({"timestamp": now}))
        assert hmac_logon["error"]["code"] == -4056  # Binance: session logon is for Ed25519 keys only


async def test_order_lists_and_legacy_oco_over_rest(venue: ReplayExchange) -> None:
    bid, ask = book(venue)
    q = lambda x: str(x.quantize(D("0.01")))  # noqa: E731
    r = await raw(venue, "POST", "/api/v3/order/oco", [("symbol", "BTCUSDT"), ("side", "SELL"), ("quantity", "0.01"),
                                                        ("price", q(ask * D("1.05"))), ("stopPrice", q(bid * D("0.95"))),
                                                        ("stopLimitPrice", q(bid * D("0.94"))), ("stopLimitTimeInForce", "GTC"),
                                                        ("listClientOrderId", "legacy1")])
    assert r.status_code == 200, r.text
    lid = r.json()["orderListId"]
    assert {o["type"] for o in r.json()["orderReports"]} == {"LIMIT_MAKER", "STOP_LOSS_LIMIT"}
    got = await raw(venue, "GET", "/api/v3/orderList", [("orderListId", lid)])
    assert got.json()["listClientOrderId"] == "legacy1" and got.json()["listOrderStatus"] == "EXECUTING"
    opened = await raw(venue, "GET", "/api/v3/openOrderList", [])
    assert [x["orderListId"] for x in opened.json()] == [lid]
    cancel = await raw(venue, "DELETE", "/api/v3/orderList", [("symbol", "BTCUSDT"), ("listClientOrderId", "legacy1")])
    assert cancel.status_code == 200 and cancel.json()["listOrderStatus"] == "ALL_DONE"
    assert {o["status"] for o in cancel.json()["orderReports"]} == {"CANCELED"}
    assert (await raw(venue, "GET", "/api/v3/openOrderList", [])).json() == []
    history = await raw(venue, "GET", "/api/v3/allOrderList", [("fromId", 0)])
    assert [x["orderListId"] for x in history.json()] == [lid]
    again = await raw(venue, "DELETE", "/api/v3/orderList", [("symbol", "BTCUSDT"), ("orderListId", lid)])
    assert again.status_code == 400 and again.json()["code"] == -2011
    ice = await raw(venue, "POST", "/api/v3/order", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
                                                      ("quantity", "0.01"), ("price", q(bid * D("0.9"))), ("icebergQty", "0.001")])
    assert ice.status_code == 400 and ice.json()["code"] == -1013 and "icebergAllowed=false" in ice.json()["msg"]


async def test_trading_day_ticker(venue: ReplayExchange) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=venue.rest_url) as http:
        r = await http.get("/api/v3/ticker/tradingDay", params={"symbol": "BTCUSDT"})
        assert r.status_code == 200, r.text
        doc = r.json()
        now = venue.clock.now_ms()
        assert doc["openTime"] == now // 86_400_000 * 86_400_000 and doc["closeTime"] == now
        assert D(doc["lowPrice"]) <= D(doc["lastPrice"]) <= D(doc["highPrice"]) and "bidPrice" not in doc
        shifted = (await http.get("/api/v3/ticker/tradingDay", params={"symbol": "BTCUSDT", "timeZone": "-1"})).json()
        assert shifted["openTime"] % 86_400_000 == 3_600_000  # UTC-1: the trading day starts at 01:00 UTC
        bad = await http.get("/api/v3/ticker/tradingDay", params={"symbol": "BTCUSDT", "timeZone": "15"})
        assert bad.status_code == 400 and bad.json()["code"] == -1130


async def test_a_listen_key_is_a_stream_name_on_market_connections(venue: ReplayExchange) -> None:
    """binance-connector subscribes its listen key over a market-stream connection; Binance allows it."""
    r = await raw(venue, "POST", "/api/v3/userDataStream", [], sign=False, timestamp=False)  # type: ignore[arg-type]
    key = r.json()["listenKey"]
    async with websockets.connect(f"{venue.ws_url}/ws") as ws, websockets.connect(f"{venue.ws_url}/stream?streams={key}/btcusdt@kline_1h") as comb:
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": [key, "ethusdt@kline_1h"], "id": 1}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": None, "id": 1}
        await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}).decode())
        assert set(orjson.loads(await asyncio.wait_for(ws.recv(), 5))["result"]) == {key, "ethusdt@kline_1h"}
        placed = await raw(venue, "POST", "/api/v3/order", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.001")])
        assert placed.status_code == 200
        raw_ev = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert raw_ev["e"] == "executionReport"
        wrapped = orjson.loads(await asyncio.wait_for(comb.recv(), 5))
        assert wrapped["stream"] == key and wrapped["data"]["e"] == "executionReport"


async def test_control_endpoints_are_signed_finite_and_loopback(venue: ReplayExchange) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=venue.rest_url) as http:  # the API key alone moves nothing
        r = await http.post("/replay/balance", params={"asset": "USDT", "delta": "1000"}, headers={"X-MBX-APIKEY": KEY})
        assert r.status_code == 400 and r.json()["code"] == -1102
    for bad in ("NaN", "Infinity", "-Infinity", "1e16", "0.000000001", "abc", "1e100000"):
        r = await raw(venue, "POST", "/replay/balance", [("asset", "USDT"), ("delta", bad)])
        assert r.status_code == 400 and r.json()["code"] == -1100, (bad, r.text)
    r = await raw(venue, "POST", "/replay/balance", [("asset", "USDT"), ("delta", "-1000000")])
    assert r.json()["code"] == -2010  # never below zero
    r = await raw(venue, "POST", "/replay/balance", [("asset", "USDT"), ("delta", "250.5")])
    assert r.status_code == 200 and r.json() == {"asset": "USDT", "free": "10250.50000000"}
    acct = await raw(venue, "GET", "/api/v3/account", [])
    assert acct.status_code == 200  # never wedged


async def test_a_captured_order_expires_on_a_frozen_clock(venue: ReplayExchange) -> None:
    """At --speed 0 the venue's time stands still; a signed order replayed after its recvWindow of
    wall time is -1021, while an immediate retry (what a client does on a dropped connection) works."""
    import httpx

    from trader.exchange.signing import Credentials

    wall = [1000.0]
    venue.trading.wall = lambda: wall[0]
    items = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.001"), ("newClientOrderId", "cap1"),
             ("recvWindow", 5000), ("timestamp", venue.clock.now_ms())]
    query = Credentials.hmac(KEY, SECRET).signed_query(items)
    async with httpx.AsyncClient() as c:
        first = await c.post(f"{venue.rest_url}/api/v3/order?{query}", headers={"X-MBX-APIKEY": KEY})
        assert first.status_code == 200
        wall[0] += 1.0
        again = await c.post(f"{venue.rest_url}/api/v3/order?{query}", headers={"X-MBX-APIKEY": KEY})
        assert again.status_code == 200  # within the window Binance would accept it too
        wall[0] += 10.0
        late = await c.post(f"{venue.rest_url}/api/v3/order?{query}", headers={"X-MBX-APIKEY": KEY})
        assert late.status_code == 400 and late.json()["code"] == -1021
        reads = [("symbol", "BTCUSDT"), ("timestamp", venue.clock.now_ms())]
        q2 = Credentials.hmac(KEY, SECRET).signed_query(reads)
        for _ in range(2):  # reads repeat freely on a frozen clock
            assert (await c.get(f"{venue.rest_url}/api/v3/openOrders?{q2}", headers={"X-MBX-APIKEY": KEY})).status_code == 200
            wall[0] += 10.0


async def test_the_clock_moves_only_for_loopback_peers(dataset: ReplayDataset) -> None:
    from trader.replay.server import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("::ffff:127.0.0.1")
    assert not _loopback("10.1.2.3") and not _loopback(None) and not _loopback("garbage")
