"""Binance REST endpoints as data: path, method, request weight, security, idempotency, counters.

Declared once and used by both sides: the client's weight budget and retry policy
(:mod:`trader.exchange.rest`) and the replay venue's accounting (:mod:`trader.replay.server`).
A weight is a function of the request's parameters (``{"symbols": '["A","B"]'}`` -> 2), because
Binance prices some endpoints by how many symbols or rows they return.

Sources: Binance spot REST API, "General endpoints" and "Market Data endpoints" (weights per
endpoint; https://developers.binance.com/docs/binance-spot-api-docs/rest-api); USD-M futures
"Market Data" (klines weight by ``limit``). ``idempotent`` says whether repeating the request can
change state: every market-data read is; an order is not (a timeout or 5xx leaves its status
unknown, so it must be looked up, never resent — Binance spot REST API, "HTTP Return Codes").
``counters`` name the rate limiters a request moves (``REQUEST_WEIGHT`` for every request,
``ORDERS`` too for order placement).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

__all__ = ["MARKETS", "Endpoint", "by_path", "endpoint", "symbols_count"]

Weigher = Callable[[Mapping[str, str]], int]


def symbols_count(params: Mapping[str, str]) -> int | None:
    """Number of symbols a request asks for: 1 for ``symbol``, the array length for ``symbols``,
    None when neither is given (all symbols)."""
    if params.get("symbol"):
        return 1
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 1
    return len(items) if isinstance(items, list) else 1


def _fixed(weight: int) -> Weigher:
    return lambda params: weight


def _ticker_24hr(params: Mapping[str, str]) -> int:
    n = symbols_count(params)
    if n is None:
        return 80
    return 2 if n <= 20 else 40 if n <= 100 else 80


def _one_or_all(one: int, many: int) -> Weigher:
    """``symbol`` -> ``one``; ``symbols`` or none -> ``many`` (ticker/price, ticker/bookTicker)."""
    return lambda params: one if params.get("symbol") else many


def _rolling_ticker(params: Mapping[str, str]) -> int:
    n = symbols_count(params) or 1
    return min(4 * n, 200)


def _depth(params: Mapping[str, str]) -> int:
    try:
        limit = int(params.get("limit") or 100)
    except ValueError:
        limit = 100
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _usdm_klines(params: Mapping[str, str]) -> int:
    try:
        limit = int(params.get("limit") or 500)
    except ValueError:
        limit = 500
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


_ORDERS = ("REQUEST_WEIGHT", "ORDERS")


def _test_order(params: Mapping[str, str]) -> int:
    return 20 if params.get("computeCommissionRates") == "true" else 1


def _my_trades(params: Mapping[str, str]) -> int:
    return 5 if params.get("orderId") else 20


def _usdm_ticker(params: Mapping[str, str]) -> int:
    return 1 if params.get("symbol") else 40


def _usdm_depth(params: Mapping[str, str]) -> int:
    try:
        limit = int(params.get("limit") or 500)
    except ValueError:
        limit = 500
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def _usdm_batch(params: Mapping[str, str]) -> int:
    return 5


@dataclass(frozen=True)
class Endpoint:
    """One REST endpoint.

    Attributes:
        name: short name used by the client (``"klines"``).
        method: HTTP method.
        path: URL path (``"/api/v3/klines"``).
        weight: request weight as a function of the query parameters.
        signed: needs ``timestamp`` + ``signature`` (TRADE / USER_DATA security).
        idempotent: safe to repeat after a timeout or 5xx (reads); never true for orders.
        counters: rate limiters the request moves (``REQUEST_WEIGHT``, ``ORDERS``).
        orders: new orders one request places (the ``ORDERS`` count: 1, 2 for an OCO).
        api_key: needs ``X-MBX-APIKEY`` (every signed endpoint, and the listenKey endpoints).
    """

    name: str
    method: str
    path: str
    weight: Weigher
    signed: bool = False
    idempotent: bool = True
    counters: tuple[str, ...] = ("REQUEST_WEIGHT",)
    orders: int = 0
    api_key: bool = False


def _spot() -> dict[str, Endpoint]:
    v3 = "/api/v3"
    eps = [
        Endpoint("ping", "GET", f"{v3}/ping", _fixed(1)),
        Endpoint("time", "GET", f"{v3}/time", _fixed(1)),
        Endpoint("exchangeInfo", "GET", f"{v3}/exchangeInfo", _fixed(20)),
        Endpoint("depth", "GET", f"{v3}/depth", _depth),
        Endpoint("klines", "GET", f"{v3}/klines", _fixed(2)),
        Endpoint("uiKlines", "GET", f"{v3}/uiKlines", _fixed(2)),
        Endpoint("avgPrice", "GET", f"{v3}/avgPrice", _fixed(2)),
        Endpoint("ticker24hr", "GET", f"{v3}/ticker/24hr", _ticker_24hr),
        Endpoint("tickerPrice", "GET", f"{v3}/ticker/price", _one_or_all(2, 4)),
        Endpoint("bookTicker", "GET", f"{v3}/ticker/bookTicker", _one_or_all(2, 4)),
        Endpoint("ticker", "GET", f"{v3}/ticker", _rolling_ticker),
        Endpoint("tickerTradingDay", "GET", f"{v3}/ticker/tradingDay", _rolling_ticker),
        # Trading / account / user data (Binance spot REST API, "Trading endpoints", "Account endpoints")
        Endpoint("newOrder", "POST", f"{v3}/order", _fixed(1), signed=True, idempotent=False, counters=_ORDERS, orders=1, api_key=True),
        Endpoint("testOrder", "POST", f"{v3}/order/test", _test_order, signed=True, idempotent=False, api_key=True),
        Endpoint("queryOrder", "GET", f"{v3}/order", _fixed(4), signed=True, api_key=True),
        Endpoint("cancelOrder", "DELETE", f"{v3}/order", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("openOrders", "GET", f"{v3}/openOrders", _one_or_all(6, 80), signed=True, api_key=True),
        Endpoint("cancelOpenOrders", "DELETE", f"{v3}/openOrders", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("allOrders", "GET", f"{v3}/allOrders", _fixed(20), signed=True, api_key=True),
        Endpoint("myTrades", "GET", f"{v3}/myTrades", _my_trades, signed=True, api_key=True),
        Endpoint("account", "GET", f"{v3}/account", _fixed(20), signed=True, api_key=True),
        Endpoint("newOco", "POST", f"{v3}/orderList/oco", _fixed(1), signed=True, idempotent=False, counters=_ORDERS, orders=2, api_key=True),
        Endpoint("newOcoLegacy", "POST", f"{v3}/order/oco", _fixed(1), signed=True, idempotent=False, counters=_ORDERS, orders=2, api_key=True),
        Endpoint("cancelReplace", "POST", f"{v3}/order/cancelReplace", _fixed(1), signed=True, idempotent=False, counters=_ORDERS, orders=1,
                 api_key=True),
        Endpoint("queryOrderList", "GET", f"{v3}/orderList", _fixed(4), signed=True, api_key=True),
        Endpoint("cancelOrderList", "DELETE", f"{v3}/orderList", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("openOrderLists", "GET", f"{v3}/openOrderList", _fixed(6), signed=True, api_key=True),
        Endpoint("allOrderLists", "GET", f"{v3}/allOrderList", _fixed(20), signed=True, api_key=True),
        Endpoint("orderRateLimit", "GET", f"{v3}/rateLimit/order", _fixed(40), signed=True, api_key=True),
        Endpoint("commission", "GET", f"{v3}/account/commission", _fixed(20), signed=True, api_key=True),
        Endpoint("newListenKey", "POST", f"{v3}/userDataStream", _fixed(2), idempotent=False, api_key=True),
        Endpoint("keepaliveListenKey", "PUT", f"{v3}/userDataStream", _fixed(2), api_key=True),
        Endpoint("closeListenKey", "DELETE", f"{v3}/userDataStream", _fixed(2), api_key=True),
    ]
    return {e.name: e for e in eps}


def _usdm() -> dict[str, Endpoint]:
    v1 = "/fapi/v1"
    eps = [
        Endpoint("ping", "GET", f"{v1}/ping", _fixed(1)),
        Endpoint("time", "GET", f"{v1}/time", _fixed(1)),
        Endpoint("exchangeInfo", "GET", f"{v1}/exchangeInfo", _fixed(1)),
        Endpoint("klines", "GET", f"{v1}/klines", _usdm_klines),
        Endpoint("continuousKlines", "GET", f"{v1}/continuousKlines", _usdm_klines),
        Endpoint("markPriceKlines", "GET", f"{v1}/markPriceKlines", _usdm_klines),
        Endpoint("indexPriceKlines", "GET", f"{v1}/indexPriceKlines", _usdm_klines),
        Endpoint("ticker24hr", "GET", f"{v1}/ticker/24hr", _usdm_ticker),
        Endpoint("tickerPrice", "GET", f"{v1}/ticker/price", _one_or_all(1, 2)),
        Endpoint("tickerPriceV2", "GET", "/fapi/v2/ticker/price", _one_or_all(1, 2)),
        Endpoint("bookTicker", "GET", f"{v1}/ticker/bookTicker", _one_or_all(2, 5)),
        Endpoint("depth", "GET", f"{v1}/depth", _usdm_depth),
        Endpoint("premiumIndex", "GET", f"{v1}/premiumIndex", _one_or_all(1, 10)),
        Endpoint("fundingRate", "GET", f"{v1}/fundingRate", _fixed(1)),
        Endpoint("fundingInfo", "GET", f"{v1}/fundingInfo", _fixed(1)),
        Endpoint("openInterest", "GET", f"{v1}/openInterest", _fixed(1)),
        # Trading / account / user data (Binance USD-M REST API, "Trade", "Account", "User Data Streams").
        # A new order costs 0 IP weight and 1 on each ORDERS window; a batch 5 and 5.
        Endpoint("newOrder", "POST", f"{v1}/order", _fixed(0), signed=True, idempotent=False, counters=_ORDERS, orders=1, api_key=True),
        Endpoint("batchOrders", "POST", f"{v1}/batchOrders", _usdm_batch, signed=True, idempotent=False, counters=_ORDERS, orders=5,
                 api_key=True),
        Endpoint("queryOrder", "GET", f"{v1}/order", _fixed(1), signed=True, api_key=True),
        Endpoint("cancelOrder", "DELETE", f"{v1}/order", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("cancelBatch", "DELETE", f"{v1}/batchOrders", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("openOrder", "GET", f"{v1}/openOrder", _fixed(1), signed=True, api_key=True),
        Endpoint("openOrders", "GET", f"{v1}/openOrders", _one_or_all(1, 40), signed=True, api_key=True),
        Endpoint("allOrders", "GET", f"{v1}/allOrders", _fixed(5), signed=True, api_key=True),
        Endpoint("cancelAll", "DELETE", f"{v1}/allOpenOrders", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("countdownCancelAll", "POST", f"{v1}/countdownCancelAll", _fixed(10), signed=True, idempotent=False, api_key=True),
        Endpoint("leverage", "POST", f"{v1}/leverage", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("marginType", "POST", f"{v1}/marginType", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("leverageBracket", "GET", f"{v1}/leverageBracket", _fixed(1), signed=True, api_key=True),
        Endpoint("positionSideGet", "GET", f"{v1}/positionSide/dual", _fixed(30), signed=True, api_key=True),
        Endpoint("positionSidePost", "POST", f"{v1}/positionSide/dual", _fixed(1), signed=True, idempotent=False, api_key=True),
        Endpoint("multiAssetsMargin", "GET", f"{v1}/multiAssetsMargin", _fixed(30), signed=True, api_key=True),
        Endpoint("positionRiskV2", "GET", "/fapi/v2/positionRisk", _fixed(5), signed=True, api_key=True),
        Endpoint("positionRisk", "GET", "/fapi/v3/positionRisk", _fixed(5), signed=True, api_key=True),
        Endpoint("accountV2", "GET", "/fapi/v2/account", _fixed(5), signed=True, api_key=True),
        Endpoint("account", "GET", "/fapi/v3/account", _fixed(5), signed=True, api_key=True),
        Endpoint("balanceV2", "GET", "/fapi/v2/balance", _fixed(5), signed=True, api_key=True),
        Endpoint("balance", "GET", "/fapi/v3/balance", _fixed(5), signed=True, api_key=True),
        Endpoint("userTrades", "GET", f"{v1}/userTrades", _fixed(5), signed=True, api_key=True),
        Endpoint("income", "GET", f"{v1}/income", _fixed(30), signed=True, api_key=True),
        Endpoint("commissionRate", "GET", f"{v1}/commissionRate", _fixed(20), signed=True, api_key=True),
        Endpoint("newListenKey", "POST", f"{v1}/listenKey", _fixed(1), idempotent=False, api_key=True),
        Endpoint("keepaliveListenKey", "PUT", f"{v1}/listenKey", _fixed(1), api_key=True),
        Endpoint("closeListenKey", "DELETE", f"{v1}/listenKey", _fixed(1), api_key=True),
    ]
    return {e.name: e for e in eps}


#: market ("spot" / "usdm") -> endpoint name -> :class:`Endpoint`.
MARKETS: dict[str, dict[str, Endpoint]] = {"spot": _spot(), "usdm": _usdm()}
_BY_PATH: dict[str, dict[tuple[str, str], Endpoint]] = {
    market: {(e.method, e.path): e for e in eps.values()} for market, eps in MARKETS.items()
}


def endpoint(market: str, name: str) -> Endpoint:
    """The endpoint ``name`` of ``market`` (``endpoint("spot", "klines").path == "/api/v3/klines"``).

    Raises:
        KeyError: unknown market or name (a programming error, not user input).
    """
    return MARKETS[market][name]


def by_path(market: str, method: str, path: str) -> Endpoint | None:
    """The endpoint served at ``method path``, or None (the venue answers unknown paths with an error)."""
    return _BY_PATH[market].get((method, path))
