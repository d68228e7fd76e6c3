"""The replay venue's trading endpoints, request security and user-data streams (aiohttp).

Endpoints (Binance spot REST API, "Trading endpoints", "Account endpoints", "User data stream
endpoints"; weights and counters in :mod:`trader.exchange.endpoints`):

====================================  ==============================================================
POST   /api/v3/order                  LIMIT, MARKET (quantity | quoteOrderQty), STOP_LOSS(_LIMIT),
                                      TAKE_PROFIT(_LIMIT), LIMIT_MAKER; newOrderRespType ACK/RESULT/FULL
POST   /api/v3/order/test             the same checks, nothing placed (computeCommissionRates)
GET    /api/v3/order                  orderId | origClientOrderId (any order, open or closed)
DELETE /api/v3/order                  orderId | origClientOrderId (an OCO leg cancels the list)
GET    /api/v3/openOrders             symbol optional
DELETE /api/v3/openOrders             symbol
GET    /api/v3/allOrders              symbol; orderId, startTime, endTime, limit (500, max 1000)
GET    /api/v3/myTrades               symbol; orderId, startTime, endTime, fromId, limit
GET    /api/v3/account                omitZeroBalances
POST   /api/v3/orderList/oco          above*/below* legs (the current OCO endpoint)
POST/PUT/DELETE /api/v3/userDataStream  listenKey (API key only); events on ``/ws/<listenKey>``
WS     /ws-api/v3                     ``userDataStream.subscribe.signature``, ``.unsubscribe``, ping, time
====================================  ==============================================================

**Security** ("Request security"): ``X-MBX-APIKEY`` names the account (missing/malformed ->
-2014, unknown -> -2015, HTTP 401); the signature covers the raw, percent-encoded query string
concatenated with the raw body, minus the ``signature`` parameter itself: HMAC-SHA256 hex, or Ed25519
base64 (percent-encoded in transit) for accounts registered with a public key (-1022 if it does not
verify). ``timestamp`` must satisfy ``timestamp < serverTime + 1000`` and ``serverTime - timestamp <=
recvWindow`` (default 5000, at most 60000: -1131) on the replay clock (-1021 otherwise; on a clock faster than the wall, both windows are wall
milliseconds, i.e. times ``speed`` on the replay clock, so a request keeps Binance's network slack). ``/api/v3/time``
also sends an ``X-Replay-Speed`` header (an extension; the body is Binance's) so that :mod:`trader.exchange.trading` keeps
a timestamp on a replay clock that runs faster than the wall; standard clients run against
``--clock wall`` (or a speed-1 clock with their time-difference adjustment).

**Order limits**: 100 new orders per 10 s and 200 000 per day per account (wall clock), reported in
``X-MBX-ORDER-COUNT-10S`` / ``X-MBX-ORDER-COUNT-1D``; beyond, HTTP 429 -1015.

**Faults** (``replay.faults``): ``order_reject_rate`` refuses an order before the engine
(HTTP 400 -2010); ``order_5xx_rate`` *accepts* the order and then answers 500 (-1001), 503 (-1007,
"execution status unknown") or holds the response ``order_hang_s`` so the client times out;
``order_latency_ms`` delays order endpoints; ``user_data_drop_every_events`` aborts user-data
connections. Orders are matched by :mod:`trader.replay.matching` on the replay clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import random
import secrets
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import WSMsgType, web

from trader.config import AccountConfig, FaultConfig, MatchingReplayConfig
from trader.errors import ConfigError
from trader.exchange.endpoints import by_path
from trader.replay.matching import (
    ORDER_TYPES,
    Account,
    MatchingConfig,
    MatchingEngine,
    OrderList,
    OrderRequest,
    Rejected,
    VenueOrder,
)
from trader.replay.pathmarket import SeriesMarket
from trader.wire import e8

if TYPE_CHECKING:
    from trader.replay.clock import ReplayClock
    from trader.replay.dataset import ReplayDataset

__all__ = ["SeriesMarket", "TradingVenue", "generate_account"]

_KEY_CHARS = string.ascii_letters + string.digits
_DEC_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
_CLIENT_ID_OK = set(string.ascii_letters + string.digits + "._:/-")
_TIFS = {"GTC", "IOC", "FOK"}
_RESP_TYPES = {"ACK", "RESULT", "FULL"}
_SECURITY = {"timestamp", "recvWindow", "signature"}
_ORDER_PARAMS = {
    "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price", "newClientOrderId", "stopPrice",
    "newOrderRespType", "selfTradePreventionMode", "strategyId", "strategyType", "computeCommissionRates",
    "trailingDelta", "icebergQty",  # read, then refused: exchangeInfo says allowTrailingStop / icebergAllowed false
}
#: what the venue does not implement, with the exchangeInfo flag that says so (clients check it first)
_UNSUPPORTED_PARAMS = {
    "TrailingDelta": "trailing stops are not supported by the replay venue (exchangeInfo: allowTrailingStop=false)",
    "IcebergQty": "iceberg orders are not supported by the replay venue (exchangeInfo: icebergAllowed=false)",
}
_LISTEN_KEY_TTL_S = 3600.0
_MAX_DEPOSIT = Decimal(10) ** 15


def generate_account(balances: dict[str, float] | None = None) -> AccountConfig:
    """A fresh HMAC account (64-character key and secret, as Binance issues) with 10 000 USDT by default."""
    key = "".join(secrets.choice(_KEY_CHARS) for _ in range(64))
    secret = "".join(secrets.choice(_KEY_CHARS) for _ in range(64))
    return AccountConfig(api_key=key, api_secret=secret, balances=balances or {"USDT": 10_000.0})


class _OrderCounter:
    """New orders per account in the last 10 s and this UTC day (wall clock)."""

    def __init__(self, limit_10s: int, limit_1d: int, clock: Callable[[], float]) -> None:
        self.limit_10s, self.limit_1d = limit_10s, limit_1d
        self.clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._day: dict[str, tuple[int, int]] = {}

    def counts(self, key: str) -> tuple[int, int]:
        now = self.clock()
        q = self._recent.setdefault(key, deque())
        while q and now - q[0] >= 10.0:
            q.popleft()
        day, n = self._day.get(key, (int(now // 86400), 0))
        if day != int(now // 86400):
            n = 0
        return len(q), n

    def admit(self, key: str, n: int) -> tuple[int, int]:
        """Count ``n`` new orders; raise -1015 (HTTP 429) if a limit would be passed."""
        c10, c1d = self.counts(key)
        if c10 + n > self.limit_10s or c1d + n > self.limit_1d:
            over10 = c10 + n > self.limit_10s
            limit, unit = (self.limit_10s, "10 SECOND") if over10 else (self.limit_1d, "1 DAY")
            retry = 10 if over10 else 86400 - int(self.clock() % 86400)
            raise Rejected(-1015, f"Too many new orders; current limit is {limit} orders per {unit}.", 429,
                           {"Retry-After": str(retry), **self.headers(c10, c1d)})
        now = self.clock()
        for _ in range(n):
            self._recent[key].append(now)
        self._day[key] = (int(now // 86400), c1d + n)
        return c10 + n, c1d + n

    @staticmethod
    def headers(c10: int, c1d: int) -> dict[str, str]:
        return {"X-MBX-ORDER-COUNT-10S": str(c10), "X-MBX-ORDER-COUNT-1D": str(c1d)}


class _Sink(Protocol):
    def put_nowait(self, item: bytes) -> None: ...


class _Push:
    """A sink that hands each event to a market-stream connection (a listen key SUBSCRIBEd there)."""

    def __init__(self, push: Callable[[bytes], None]) -> None:
        self.push = push

    def put_nowait(self, item: bytes) -> None:
        self.push(item)


@dataclass(eq=False)
class _Subscriber:
    queue: _Sink
    ws: web.WebSocketResponse
    request: web.Request
    subscription_id: int | None = None  # WS API: events wrapped as {"subscriptionId", "event"}
    sent: int = 0


@dataclass
class _ListenKey:
    account: Account
    expires: float
    sockets: set[_Subscriber] = field(default_factory=set)
    market: str = "spot"  # "usdm": a /fapi/v1/listenKey (futures events)


def _dec(params: dict[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    body = raw.split(".")
    if not (1 <= len(body) <= 2 and all(p.isdigit() and p.isascii() and len(p) <= 20 for p in body)):
        raise Rejected(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{_DEC_RANGE}'.")
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - digits only
        raise Rejected(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{_DEC_RANGE}'.") from None


def _mandatory(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise Rejected(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not raw.isascii() or len(raw) > 20:
        raise Rejected(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def _refuse_unsupported(params: dict[str, str], names: tuple[str, ...]) -> None:
    """-1013 for a parameter of a feature ``exchangeInfo`` declares off (trailing stops, icebergs)."""
    for name in names:
        if params.get(name):
            key = name[0].upper() + name[1:]
            why = next(v for k, v in _UNSUPPORTED_PARAMS.items() if key.endswith(k))
            raise Rejected(-1013, f"Parameter '{name}': {why}.")


def _strip_signature(raw: str) -> str:
    return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))


class TradingVenue:
    """Accounts, matching, security, order limits and user data of one replay exchange.

    Args:
        dataset, clock, spread_bps: the venue's market.
        accounts: account configs; empty = one :func:`generate_account`.
        matching: fill rules and order limits.
        faults: the ``replay.faults`` section (order faults are read here).
        weight_clock: epoch-seconds wall clock of the order-count windows.
        symbol_check: the exchange's symbol validator (-1100 / -1121).
    """

    def __init__(
        self,
        dataset: ReplayDataset,
        clock: ReplayClock,
        spread_bps: float,
        accounts: list[AccountConfig],
        matching: MatchingReplayConfig,
        faults: FaultConfig,
        weight_clock: Callable[[], float] = time.time,
        symbol_check: Callable[[str], str] | None = None,
    ) -> None:
        self.dataset = dataset
        self.clock = clock
        self.faults = faults
        self.market = SeriesMarket(dataset, spread_bps)
        cfg = MatchingConfig(
            maker_fee=Decimal(repr(matching.maker_fee)),
            taker_fee=Decimal(repr(matching.taker_fee)),
            fill_on_touch=matching.fill_on_touch,
            max_volume_share=matching.max_volume_share,
            impact_bps=matching.impact_bps,
        )
        self.engine = MatchingEngine(self.market, cfg, self._emit, self._listening)
        self.account_configs = list(accounts) or [generate_account()]
        for ac in self.account_configs:
            self.engine.add_account(_account(ac))
        self.counter = _OrderCounter(matching.order_limit_10s, matching.order_limit_1d, weight_clock)
        self._symbol_check = symbol_check or (lambda s: s)
        self._rng = random.Random(faults.seed + 1)
        self._listen_keys: dict[str, _ListenKey] = {}
        self._ws_api: dict[str, set[_Subscriber]] = {}
        self.wall: Callable[[], float] = time.monotonic  # wall seconds of the replay guard (injectable for tests)
        self._seen_signatures: dict[str, float] = {}  # state-changing signatures on a frozen clock -> first arrival (monotonic s)
        #: (HTTP method, path) -> REST handler, set by the exchange: the WebSocket API runs them
        self.rest_handlers: dict[tuple[str, str], Callable[[Any], Awaitable[web.StreamResponse]]] = {}
        #: charges request weight to an IP (the exchange's limiter): (ip, weight, connection, what) -> Admission
        self.charge: Callable[[str, int, object, str], Any] | None = None
        self.weight_limit = 6000
        self._sub_ids = itertools.count(0)
        self.user_data_dropped = 0
        self.unknown_status_orders: list[str] = []  #: client order ids answered 5xx / held after acceptance
        self._closing = asyncio.Event()
        self.advance_hooks: list[Callable[[], None]] = []  #: also run every 50 ms (the USD-M engine)
        clock.listeners.append(self._on_clock)

    # ------------------------------------------------------------------ wiring

    def routes(self, app: web.Application) -> None:
        """Add the trading routes to the exchange's application (before its catch-all)."""
        r = app.router
        r.add_post("/api/v3/order", self._place)
        r.add_post("/api/v3/order/test", self._test)
        r.add_get("/api/v3/order", self._query)
        r.add_delete("/api/v3/order", self._cancel)
        r.add_get("/api/v3/openOrders", self._open_orders)
        r.add_delete("/api/v3/openOrders", self._cancel_all)
        r.add_get("/api/v3/allOrders", self._all_orders)
        r.add_get("/api/v3/myTrades", self._my_trades)
        r.add_get("/api/v3/account", self._account)
        r.add_post("/api/v3/orderList/oco", self._oco)
        r.add_post("/api/v3/order/oco", self._legacy_oco)
        r.add_get("/api/v3/orderList", self._order_list)
        r.add_delete("/api/v3/orderList", self._cancel_list)
        r.add_get("/api/v3/openOrderList", self._open_lists)
        r.add_get("/api/v3/allOrderList", self._all_lists)
        r.add_post("/api/v3/order/cancelReplace", self._cancel_replace)
        r.add_get("/api/v3/rateLimit/order", self._rate_limit_orders)
        r.add_get("/api/v3/account/commission", self._commission)
        r.add_post("/api/v3/userDataStream", self._listen_new)
        r.add_put("/api/v3/userDataStream", self._listen_keepalive)
        r.add_delete("/api/v3/userDataStream", self._listen_close)
        r.add_get("/ws-api/v3", self._ws_api_handler)
        r.add_post("/replay/balance", self._deposit)

    @property
    def default_account(self) -> AccountConfig:
        """The first account (the one ``trader replay`` prints)."""
        return self.account_configs[0]

    def _on_clock(self) -> None:
        self.engine.advance(self.clock.now_ms())

    async def run(self) -> None:
        """Advance the engine with the clock (every 50 ms of wall time) so fills and user-data events
        happen without requests; cancelled by the exchange's stop."""
        while True:
            await asyncio.sleep(0.05)
            if self.clock.speed:
                self.engine.advance(self.clock.now_ms())
                for hook in self.advance_hooks:
                    hook()
            self._expire_listen_keys()

    def close(self) -> None:
        """Release held ("hang") responses so the server can stop at once."""
        self._closing.set()

    def is_listen_key(self, token: str) -> bool:
        """True when ``/ws/<token>`` is a user-data stream."""
        return token in self._listen_keys

    def attach(self, key: str, push: Callable[[bytes], None], ws: web.WebSocketResponse, request: web.Request) -> Callable[[], None]:
        """Send the user data of listen key ``key`` to a market-stream connection (Binance accepts a
        listen key as a stream name in the URL or in ``SUBSCRIBE``); returns the detach function."""
        sub = _Subscriber(_Push(push), ws, request)
        self._listen_keys[key].sockets.add(sub)

        def detach() -> None:
            lk = self._listen_keys.get(key)
            if lk is not None:
                lk.sockets.discard(sub)

        return detach

    # ------------------------------------------------------------------ security

    async def _params(self, request: web.Request) -> tuple[dict[str, str], str, str]:
        raw_query = request.raw_path.partition("?")[2]
        raw_body = (await request.read()).decode("utf-8", "replace") if request.can_read_body else ""
        params: dict[str, str] = {}
        for k, v in itertools.chain(parse_qsl(raw_query, keep_blank_values=True), parse_qsl(raw_body, keep_blank_values=True)):
            if k in params:
                raise Rejected(-1101, "Duplicate values for a parameter detected.")
            params[k] = v
        return params, raw_query, raw_body

    def _account_for(self, api_key: str | None) -> Account:
        if not api_key or len(api_key) > 128 or not api_key.isascii() or not api_key.replace("-", "").replace("_", "").isalnum():
            raise Rejected(-2014, "API-key format invalid.", 401)
        acct = self.engine.accounts.get(api_key)
        if acct is None:
            raise Rejected(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return acct

    def verify(self, acct: Account, payload: bytes, signature: str) -> bool:
        """Whether ``signature`` (hex HMAC, or base64 Ed25519 already percent-decoded) signs ``payload``."""
        if acct.secret is not None:
            expected = hmac.new(acct.secret, payload, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, signature.lower())
        from cryptography.exceptions import InvalidSignature

        try:
            acct.ed25519_public_key.verify(base64.b64decode(signature, validate=True), payload)
        except (InvalidSignature, ValueError):
            return False
        return True

    def _check_time(self, params: dict[str, str]) -> None:
        ts = _int(params, "timestamp")
        if ts is None:
            raise Rejected(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        raw_rw = params.get("recvWindow")
        recv = 5000
        if raw_rw:
            try:
                recv_d = Decimal(raw_rw)
            except InvalidOperation:
                raise Rejected(-1100, "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}(\\.[0-9]{1,3})?$'.") from None
            if recv_d > 60_000 or recv_d <= 0:
                raise Rejected(-1131, "recvWindow must be less than 60000")
            recv = float(recv_d)  # type: ignore[assignment]
        server = self.clock.now_ms()
        scale = max(self.clock.speed, 1.0)  # a replay faster than the wall counts the windows in wall ms
        if ts >= server + 1000 * scale:
            raise Rejected(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - ts > recv * scale:
            raise Rejected(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _replay_guard(self, method: str, path: str, signature: str, params: dict[str, str]) -> None:
        """On a clock slower than the wall (``--speed 0`` above all) a timestamp never leaves its
        recvWindow, so a captured signed request would stay valid for ever: there, a state-changing
        request is valid for recvWindow of *wall* time from its first arrival, then answered -1021
        like an expired one. Reads are not limited (a client polling a frozen clock repeats them)."""
        if self.clock.speed >= 1.0:
            return
        ep = by_path("usdm" if path.startswith("/fapi/") else "spot", method, path)
        if ep is not None and ep.idempotent:
            return
        now = self.wall()
        seen = self._seen_signatures
        while seen and next(iter(seen.values())) < now - 60.0:
            seen.pop(next(iter(seen)))
        first = seen.setdefault(signature, now)
        try:
            window_s = float(params.get("recvWindow") or 5000) / 1000.0
        except ValueError:
            window_s = 5.0
        if now - first > window_s:
            raise Rejected(-1021, "Timestamp for this request is outside of the recvWindow.")

    async def _signed(self, request: web.Request, allowed: set[str]) -> tuple[Account, dict[str, str]]:
        """Authenticate a SIGNED request; its parameters without the security ones. A WebSocket API
        request arrives authenticated (``ws_account``): only its timestamp is checked here."""
        pre: Account | None = getattr(request, "ws_account", None)
        if pre is not None:
            acct = pre
            params, _, _ = await self._params(request)
        else:
            acct = self._account_for(request.headers.get("X-MBX-APIKEY"))
            params, raw_query, raw_body = await self._params(request)
            signature = params.get("signature")
            if not signature:
                raise Rejected(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
            payload = (_strip_signature(raw_query) + _strip_signature(raw_body)).encode()
            if not self.verify(acct, payload, signature):
                raise Rejected(-1022, "Signature for this request is not valid.")
            self._replay_guard(request.method, request.path, signature, params)
        self._check_time(params)
        rest = {k: v for k, v in params.items() if k not in _SECURITY}
        unknown = [k for k in rest if k not in allowed]
        if unknown:
            raise Rejected(-1104, f"Not all sent parameters were read; read '{len(rest) - len(unknown)}' parameter(s) but was sent '{len(rest)}'.")
        return acct, rest

    def _sym(self, params: dict[str, str]) -> str:
        return self._symbol_check(_mandatory(params, "symbol"))

    async def _load(self, symbol: str) -> None:
        await self.dataset.aseries(symbol, self.dataset.finest(symbol))

    # ------------------------------------------------------------------ orders

    def _order_request(self, params: dict[str, str], symbol: str) -> OrderRequest:
        _refuse_unsupported(params, ("trailingDelta", "icebergQty"))
        side = _mandatory(params, "side")
        if side not in ("BUY", "SELL"):
            raise Rejected(-1117, "Invalid side.")
        kind = _mandatory(params, "type")
        if kind not in ORDER_TYPES:
            raise Rejected(-1116, "Invalid orderType.")
        req = OrderRequest(
            symbol=symbol,
            side=side,
            type=kind,
            quantity=_dec(params, "quantity"),
            quote_order_qty=_dec(params, "quoteOrderQty"),
            price=_dec(params, "price"),
            stop_price=_dec(params, "stopPrice"),
            time_in_force=params.get("timeInForce") or None,
            client_order_id=params.get("newClientOrderId") or None,
            resp_type=params.get("newOrderRespType") or None,
        )
        _check_order_shape(req)
        return req

    async def _fault_latency(self) -> None:
        if self.faults.order_latency_ms:
            await asyncio.sleep(self.faults.order_latency_ms / 1000.0)

    def _maybe_reject(self) -> None:
        if self.faults.order_reject_rate and self._rng.random() < self.faults.order_reject_rate:
            raise Rejected(-2010, "Order was not accepted by the replay exchange (fault injection: order_reject_rate).")

    async def _unknown_status_fault(self, client_ids: list[str]) -> None:
        """After acceptance: answer 500/503 or hold the response (the client times out)."""
        if not (self.faults.order_5xx_rate and self._rng.random() < self.faults.order_5xx_rate):
            return
        self.unknown_status_orders.extend(client_ids)
        mode = self.faults.order_5xx_mode
        if mode == "mixed":
            mode = self._rng.choice(("500", "503", "hang"))
        if mode == "500":
            raise Rejected(-1001, "Internal error; unable to process your request. Please try again.", 500)
        if mode == "503":
            raise Rejected(-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown.", 503)
        with contextlib.suppress(asyncio.TimeoutError):  # held until the hang ends or the venue stops
            await asyncio.wait_for(self._closing.wait(), self.faults.order_hang_s)
        raise Rejected(-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown.", 503)

    async def _place(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, _ORDER_PARAMS)
        symbol = self._sym(params)
        await self._load(symbol)
        req = self._order_request(params, symbol)
        await self._fault_latency()
        c10, c1d = self.counter.admit(acct.api_key, 1)
        headers = _OrderCounter.headers(c10, c1d)
        try:
            self._maybe_reject()
            now = self.clock.now_ms()
            order = self.engine.place(acct, req, now)
            assert order is not None
            await self._unknown_status_fault([order.client_order_id])
        except Rejected as exc:
            exc.headers.update(headers)
            raise
        resp_type = req.resp_type or ("FULL" if req.type in ("MARKET", "LIMIT") else "ACK")
        return _json(order.response(resp_type, now), headers)

    async def _test(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, _ORDER_PARAMS)
        symbol = self._sym(params)
        await self._load(symbol)
        req = self._order_request(params, symbol)
        self.engine.place(acct, req, self.clock.now_ms(), test=True)
        if params.get("computeCommissionRates") == "true":
            m, t = (e8(x) for x in (self.engine.cfg.maker_fee, self.engine.cfg.taker_fee))
            zero = "0.00000000"
            return _json({
                "standardCommissionForOrder": {"maker": m, "taker": t},
                "specialCommissionForOrder": {"maker": zero, "taker": zero},
                "taxCommissionForOrder": {"maker": zero, "taker": zero},
                "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "BNB", "discount": zero},
            })
        return _json({})

    def _lookup(self, acct: Account, params: dict[str, str], symbol: str) -> VenueOrder | None:
        oid = _int(params, "orderId")
        cid = params.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise Rejected(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        order = self.engine.find(acct, symbol, oid, cid)
        if order is not None and oid is not None and cid is not None and order.client_order_id != cid:
            return None
        return order

    async def _query(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "origClientOrderId"})
        symbol = self._sym(params)
        await self._load(symbol)
        self.engine.advance(self.clock.now_ms())
        order = self._lookup(acct, params, symbol)
        if order is None:
            raise Rejected(-2013, "Order does not exist.")
        return _json(order.doc())

    async def _cancel(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(
            request, {"symbol", "orderId", "origClientOrderId", "newClientOrderId", "cancelRestrictions"}
        )
        symbol = self._sym(params)
        await self._load(symbol)
        await self._fault_latency()
        order = self._lookup(acct, params, symbol)
        if order is None:
            raise Rejected(-2011, "Unknown order sent.")
        self.engine.cancel(acct, symbol, order.order_id, None, self.clock.now_ms())
        return _json(order.cancel_doc(params.get("newClientOrderId") or self.engine._client_id()))

    async def _open_orders(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol"})
        symbol = self._sym(params) if params.get("symbol") else None
        if symbol:
            await self._load(symbol)
        self.engine.advance(self.clock.now_ms())
        orders = sorted((o for o in acct.open.values() if symbol is None or o.symbol == symbol), key=lambda o: (o.symbol, o.order_id))
        return _json([o.doc() for o in orders])

    async def _cancel_all(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol"})
        symbol = self._sym(params)
        await self._load(symbol)
        done = self.engine.cancel_all(acct, symbol, self.clock.now_ms())
        return _json([o.cancel_doc(self.engine._client_id()) for o in done])

    @staticmethod
    def _window(params: dict[str, str], rows: list[Any], time_of: Callable[[Any], int]) -> list[Any]:
        start, end = _int(params, "startTime"), _int(params, "endTime")
        limit = _int(params, "limit") or 500
        if limit > 1000:
            raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and end - start > 24 * 3_600_000:
            raise Rejected(-1127, "More than 24 hours between startTime and endTime.")
        rows = [r for r in rows if (start is None or time_of(r) >= start) and (end is None or time_of(r) <= end)]
        return rows[:limit] if start is not None else rows[-limit:]

    async def _all_orders(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "startTime", "endTime", "limit"})
        symbol = self._sym(params)
        await self._load(symbol)
        self.engine.advance(self.clock.now_ms())
        oid = _int(params, "orderId")
        orders = sorted((o for (s, i), o in acct.orders.items() if s == symbol and (oid is None or i >= oid)), key=lambda o: o.order_id)
        if oid is not None:
            orders = orders[: _int(params, "limit") or 500]
        else:
            orders = self._window(params, orders, lambda o: o.time_ms)
        return _json([o.doc() for o in orders])

    async def _my_trades(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "startTime", "endTime", "fromId", "limit"})
        symbol = self._sym(params)
        await self._load(symbol)
        self.engine.advance(self.clock.now_ms())
        trades = [t for t in acct.trades if t["symbol"] == symbol]
        oid, from_id = _int(params, "orderId"), _int(params, "fromId")
        if oid is not None:
            trades = [t for t in trades if t["orderId"] == oid]
        if from_id is not None:
            trades = [t for t in trades if t["id"] >= from_id][: _int(params, "limit") or 500]
        else:
            trades = self._window(params, trades, lambda t: int(t["time"]))
        return _json(trades)

    async def _account(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"omitZeroBalances"})
        self.engine.advance(self.clock.now_ms())
        balances = acct.balance_docs()
        if params.get("omitZeroBalances") == "true":
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        m, t = self.engine.cfg.maker_fee, self.engine.cfg.taker_fee
        return _json({
            "makerCommission": int(m * 10_000),
            "takerCommission": int(t * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": e8(m), "taker": e8(t), "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": acct.update_ms,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": abs(hash(acct.api_key)) % 10**9,
        })

    async def _oco(self, request: web.Request) -> web.Response:
        legs = ("Type", "ClientOrderId", "Price", "StopPrice", "TimeInForce", "TrailingDelta", "IcebergQty", "StrategyId", "StrategyType", "PegPriceType", "PegOffsetType", "PegOffsetValue")
        allowed = {"symbol", "listClientOrderId", "side", "quantity", "newOrderRespType", "selfTradePreventionMode"}
        allowed |= {f"{side}{name}" for side in ("above", "below") for name in legs}
        acct, params = await self._signed(request, allowed)
        _refuse_unsupported(params, tuple(f"{side}{name}" for side in ("above", "below") for name in ("TrailingDelta", "IcebergQty")))
        symbol = self._sym(params)
        await self._load(symbol)
        side = _mandatory(params, "side")
        if side not in ("BUY", "SELL"):
            raise Rejected(-1117, "Invalid side.")
        quantity = _dec(params, "quantity")
        if quantity is None:
            raise Rejected(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        reqs = []
        for leg in ("above", "below"):
            kind = _mandatory(params, f"{leg}Type")
            if kind not in ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER"):
                raise Rejected(-1116, "Invalid orderType.")
            req = OrderRequest(
                symbol=symbol, side=side, type=kind, quantity=quantity, price=_dec(params, f"{leg}Price"),
                stop_price=_dec(params, f"{leg}StopPrice"), time_in_force=params.get(f"{leg}TimeInForce") or None,
                client_order_id=params.get(f"{leg}ClientOrderId") or None,
            )
            _check_order_shape(req, prefix=leg)
            reqs.append(req)
        return await self._place_list(acct, symbol, side, quantity, reqs[0], reqs[1], params)

    async def _deposit(self, request: web.Request) -> web.Response:
        """``POST /replay/balance?asset=&delta=`` (control endpoint, not Binance's): credit or debit
        the calling account; emits ``balanceUpdate``. A SIGNED request like any account change
        (the API key alone moves nothing); ``delta`` is a finite decimal, |delta| <= 1e15, and a
        debit below zero is refused (-2010), so no account can be wedged."""
        acct, params = await self._signed(request, {"asset", "delta"})
        asset = _mandatory(params, "asset")
        if not asset.isalnum() or not asset.isupper() or len(asset) > 20:
            raise Rejected(-1100, "Illegal characters found in parameter 'asset'.")
        raw = _mandatory(params, "delta")
        try:
            delta = Decimal(raw)
        except InvalidOperation:
            raise Rejected(-1100, "Illegal characters found in parameter 'delta'; a finite decimal is expected.") from None
        if not delta.is_finite() or abs(delta) > _MAX_DEPOSIT or delta != delta.quantize(Decimal("0.00000001")):
            raise Rejected(-1100, "Illegal characters found in parameter 'delta'; a finite decimal of at most 8 decimals, |delta| <= 1e15, is expected.")
        self.engine.deposit(acct, asset, delta, self.clock.now_ms())
        return _json({"asset": asset, "free": e8(acct.free(asset))})

    # ------------------------------------------------------------------ order lists, cancel-replace, account extras

    def _find_list(self, acct: Account, params: dict[str, str], client_key: str) -> OrderList:
        lid = _int(params, "orderListId")
        cid = params.get(client_key) or None
        if lid is None and cid is None:
            raise Rejected(-1102, f"Param '{client_key}' or 'orderListId' must be sent, but both were empty/null!")
        olist = acct.lists.get(lid) if lid is not None else next((x for x in acct.lists.values() if x.list_client_order_id == cid), None)
        if olist is None or (cid is not None and olist.list_client_order_id != cid):
            raise Rejected(-2011 if client_key == "listClientOrderId" else -2013, "Order list does not exist.")
        return olist

    async def _order_list(self, request: web.Request) -> web.Response:
        """``GET /api/v3/orderList``: one order list by ``orderListId`` or ``origClientOrderId``."""
        acct, params = await self._signed(request, {"orderListId", "origClientOrderId"})
        self.engine.advance(self.clock.now_ms())
        return _json(self._find_list(acct, params, "origClientOrderId").doc())

    async def _cancel_list(self, request: web.Request) -> web.Response:
        """``DELETE /api/v3/orderList``: cancel both legs; the list object with the legs' cancel reports."""
        acct, params = await self._signed(request, {"symbol", "orderListId", "listClientOrderId", "newClientOrderId"})
        symbol = self._sym(params)
        await self._load(symbol)
        await self._fault_latency()
        self.engine.advance(self.clock.now_ms())
        olist = self._find_list(acct, params, "listClientOrderId")
        if olist.symbol != symbol or olist.status == "ALL_DONE":
            raise Rejected(-2011, "Unknown order sent.")
        open_leg = next(o for o in olist.legs if o.is_open)
        self.engine.cancel(acct, symbol, open_leg.order_id, None, self.clock.now_ms())
        doc = olist.doc()
        doc["orderReports"] = [o.cancel_doc(o.client_order_id) for o in olist.legs]
        if params.get("newClientOrderId"):
            doc["listClientOrderId"] = params["newClientOrderId"]
        return _json(doc)

    async def _open_lists(self, request: web.Request) -> web.Response:
        """``GET /api/v3/openOrderList``: every order list still executing."""
        acct, _ = await self._signed(request, set())
        self.engine.advance(self.clock.now_ms())
        return _json([x.doc() for _, x in sorted(acct.lists.items()) if x.status != "ALL_DONE"])

    async def _all_lists(self, request: web.Request) -> web.Response:
        """``GET /api/v3/allOrderList``: order lists by ``fromId`` or a ≤ 24 h time window."""
        acct, params = await self._signed(request, {"fromId", "startTime", "endTime", "limit"})
        self.engine.advance(self.clock.now_ms())
        rows = [x for _, x in sorted(acct.lists.items())]
        from_id = _int(params, "fromId")
        if from_id is not None:
            if params.get("startTime") or params.get("endTime"):
                raise Rejected(-1128, "Combination of optional parameters invalid.")
            rows = [x for x in rows if x.order_list_id >= from_id][: _int(params, "limit") or 500]
        else:
            rows = self._window(params, rows, lambda x: x.time_ms)
        return _json([x.doc() for x in rows])

    async def _legacy_oco(self, request: web.Request) -> web.Response:
        """``POST /api/v3/order/oco`` (deprecated by Binance, still served): a LIMIT_MAKER leg at
        ``price`` and a STOP_LOSS(_LIMIT) leg at ``stopPrice`` (``stopLimitPrice`` makes it a limit)."""
        allowed = {"symbol", "listClientOrderId", "side", "quantity", "limitClientOrderId", "limitStrategyId", "limitStrategyType",
                   "price", "limitIcebergQty", "trailingDelta", "stopClientOrderId", "stopPrice", "stopStrategyId", "stopStrategyType",
                   "stopLimitPrice", "stopIcebergQty", "stopLimitTimeInForce", "newOrderRespType", "selfTradePreventionMode"}
        acct, params = await self._signed(request, allowed)
        _refuse_unsupported(params, ("limitIcebergQty", "stopIcebergQty", "trailingDelta"))
        symbol = self._sym(params)
        await self._load(symbol)
        side = _mandatory(params, "side")
        if side not in ("BUY", "SELL"):
            raise Rejected(-1117, "Invalid side.")
        quantity = _dec(params, "quantity")
        if quantity is None:
            raise Rejected(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        price = _dec(params, "price")
        if price is None:
            raise Rejected(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        stop = _dec(params, "stopPrice")
        if stop is None:
            raise Rejected(-1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed.")
        stop_limit = _dec(params, "stopLimitPrice")
        tif = params.get("stopLimitTimeInForce") or None
        if stop_limit is not None and tif is None:
            raise Rejected(-1102, "Mandatory parameter 'stopLimitTimeInForce' was not sent, was empty/null, or malformed.")
        limit_leg = OrderRequest(symbol=symbol, side=side, type="LIMIT_MAKER", quantity=quantity, price=price,
                                 client_order_id=params.get("limitClientOrderId") or None)
        stop_leg = OrderRequest(symbol=symbol, side=side, type="STOP_LOSS_LIMIT" if stop_limit is not None else "STOP_LOSS",
                                quantity=quantity, price=stop_limit, stop_price=stop, time_in_force=tif,
                                client_order_id=params.get("stopClientOrderId") or None)
        for leg in (limit_leg, stop_leg):
            _check_order_shape(leg)
        above, below = (limit_leg, stop_leg) if side == "SELL" else (stop_leg, limit_leg)
        if side == "BUY":
            above.type = "STOP_LOSS_LIMIT" if stop_limit is not None else "STOP_LOSS"
        return await self._place_list(acct, symbol, side, quantity, above, below, params)

    async def _place_list(self, acct: Account, symbol: str, side: str, quantity: Decimal, above: OrderRequest, below: OrderRequest,
                          params: dict[str, str]) -> web.Response:
        await self._fault_latency()
        c10, c1d = self.counter.admit(acct.api_key, 2)
        headers = _OrderCounter.headers(c10, c1d)
        try:
            self._maybe_reject()
            now = self.clock.now_ms()
            olist = self.engine.place_oco(acct, symbol, side, quantity, above, below, params.get("listClientOrderId") or None, now)
            await self._unknown_status_fault([o.client_order_id for o in olist.legs])
        except Rejected as exc:
            exc.headers.update(headers)
            raise
        return _json(olist.doc(with_reports=True, resp_type=params.get("newOrderRespType") or "FULL"), headers)

    async def _cancel_replace(self, request: web.Request) -> web.Response:
        """``POST /api/v3/order/cancelReplace``: cancel an order, then place a new one.

        ``cancelReplaceMode`` STOP_ON_FAILURE (a failed cancel places nothing: HTTP 400 -2022) or
        ALLOW_FAILURE (the new order is tried anyway: HTTP 409 -2021 when one half failed). Failures
        carry ``data`` with ``cancelResult``/``newOrderResult`` and each half's answer, as Binance does.
        """
        allowed = _ORDER_PARAMS | {"cancelReplaceMode", "cancelNewClientOrderId", "cancelOrigClientOrderId", "cancelOrderId",
                                   "cancelRestrictions", "orderRateLimitExceededMode", "trailingDelta", "icebergQty"}
        acct, params = await self._signed(request, allowed)
        _refuse_unsupported(params, ("icebergQty", "trailingDelta"))
        symbol = self._sym(params)
        await self._load(symbol)
        mode = _mandatory(params, "cancelReplaceMode")
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise Rejected(-1130, "Data sent for parameter 'cancelReplaceMode' is not valid.")
        req = self._order_request({k: v for k, v in params.items() if k in _ORDER_PARAMS}, symbol)
        lookup = {"orderId": params.get("cancelOrderId", ""), "origClientOrderId": params.get("cancelOrigClientOrderId", "")}
        await self._fault_latency()
        c10, c1d = self.counter.admit(acct.api_key, 1)
        headers = _OrderCounter.headers(c10, c1d)
        now = self.clock.now_ms()
        cancel_doc: dict[str, Any]
        try:
            order = self._lookup(acct, {k: v for k, v in lookup.items() if v}, symbol)
            if order is None:
                raise Rejected(-2011, "Unknown order sent.")
            self.engine.cancel(acct, symbol, order.order_id, None, now)
            cancel_doc = order.cancel_doc(params.get("cancelNewClientOrderId") or self.engine._client_id())
            cancel_ok = True
        except Rejected as exc:
            if exc.code == -1102:
                raise
            cancel_doc, cancel_ok = {"code": exc.code, "msg": exc.msg}, False
        new_doc: dict[str, Any] | None = None
        new_ok = False
        if cancel_ok or mode == "ALLOW_FAILURE":
            try:
                self._maybe_reject()
                placed = self.engine.place(acct, req, now)
                assert placed is not None
                resp_type = req.resp_type or ("FULL" if req.type in ("MARKET", "LIMIT") else "ACK")
                new_doc, new_ok = placed.response(resp_type, now), True
            except Rejected as exc:
                new_doc = {"code": exc.code, "msg": exc.msg}
        results = {"cancelResult": "SUCCESS" if cancel_ok else "FAILURE",
                   "newOrderResult": "SUCCESS" if new_ok else ("FAILURE" if new_doc is not None else "NOT_ATTEMPTED"),
                   "cancelResponse": cancel_doc, "newOrderResponse": new_doc}
        if cancel_ok and new_ok:
            return _json(results, headers)
        if cancel_ok or new_ok:
            raise Rejected(-2021, "Order cancel-replace partially failed.", 409, headers, data=results)
        raise Rejected(-2022, "Order cancel-replace failed.", 400, headers, data=results)

    async def _rate_limit_orders(self, request: web.Request) -> web.Response:
        """``GET /api/v3/rateLimit/order``: the account's unfilled order counts (10 s and 1 day)."""
        acct, _ = await self._signed(request, set())
        c10, c1d = self.counter.counts(acct.api_key)
        return _json([
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.counter.limit_10s, "count": c10},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": self.counter.limit_1d, "count": c1d},
        ])

    async def _commission(self, request: web.Request) -> web.Response:
        """``GET /api/v3/account/commission``: the account's rates for ``symbol`` (one cost model: ``costs``)."""
        _, params = await self._signed(request, {"symbol"})
        symbol = self._sym(params)
        m, t = e8(self.engine.cfg.maker_fee), e8(self.engine.cfg.taker_fee)
        zero = "0.00000000"
        return _json({
            "symbol": symbol,
            "standardCommission": {"maker": m, "taker": t, "buyer": zero, "seller": zero},
            "specialCommission": {"maker": zero, "taker": zero, "buyer": zero, "seller": zero},
            "taxCommission": {"maker": zero, "taker": zero, "buyer": zero, "seller": zero},
            "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "BNB", "discount": zero},
        })

    # ------------------------------------------------------------------ user data

    def _listening(self, acct: Account) -> bool:
        return bool(self._ws_api.get(acct.api_key)) or any(lk.account is acct and lk.market == "spot" and lk.sockets for lk in self._listen_keys.values())

    def _emit(self, acct: Account, event: dict[str, Any]) -> None:
        raw = orjson.dumps(event)
        for lk in self._listen_keys.values():
            if lk.account is acct and lk.market == "spot":
                for sub in lk.sockets:
                    sub.queue.put_nowait(raw)
        for sub in self._ws_api.get(acct.api_key, ()):
            sub.queue.put_nowait(b'{"subscriptionId":%d,"event":%s}' % (sub.subscription_id or 0, raw))

    def _expire_listen_keys(self) -> None:
        now = time.monotonic()
        for key, lk in list(self._listen_keys.items()):
            if lk.expires < now:
                self._listen_keys.pop(key, None)
                for sub in lk.sockets:
                    sub.queue.put_nowait(orjson.dumps({"e": "listenKeyExpired", "E": self.clock.now_ms(), "listenKey": key}))

    async def _listen_params(self, request: web.Request, need_key: bool) -> tuple[Account, dict[str, str]]:
        acct = self._account_for(request.headers.get("X-MBX-APIKEY"))
        params, _, _ = await self._params(request)
        if need_key:
            key = _mandatory(params, "listenKey")
            lk = self._listen_keys.get(key)
            if lk is None or lk.account is not acct or lk.market != "spot":
                raise Rejected(-1125, "This listenKey does not exist.")
        return acct, params

    async def _listen_new(self, request: web.Request) -> web.Response:
        acct, _ = await self._listen_params(request, need_key=False)
        for key, lk in self._listen_keys.items():  # Binance returns the account's live key
            if lk.account is acct and lk.market == "spot":
                lk.expires = time.monotonic() + _LISTEN_KEY_TTL_S
                return _json({"listenKey": key})
        key = "".join(secrets.choice(_KEY_CHARS) for _ in range(60))
        self._listen_keys[key] = _ListenKey(acct, time.monotonic() + _LISTEN_KEY_TTL_S)
        return _json({"listenKey": key})

    async def _listen_keepalive(self, request: web.Request) -> web.Response:
        _, params = await self._listen_params(request, need_key=True)
        self._listen_keys[params["listenKey"]].expires = time.monotonic() + _LISTEN_KEY_TTL_S
        return _json({})

    async def _listen_close(self, request: web.Request) -> web.Response:
        _, params = await self._listen_params(request, need_key=True)
        lk = self._listen_keys.pop(params["listenKey"])
        for sub in lk.sockets:
            if isinstance(sub.queue, _Push):  # a market-stream connection: only its user data ends
                continue
            with contextlib.suppress(Exception):
                await sub.ws.close()
        return _json({})

    async def listen_key_socket(self, request: web.Request, key: str) -> web.StreamResponse:
        """``/ws/<listenKey>``: the account's events as they happen (raw event objects)."""
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, compress=False)
        await ws.prepare(request)
        sub = _Subscriber(asyncio.Queue(), ws, request)
        self._listen_keys[key].sockets.add(sub)
        writer = asyncio.create_task(self._writer(sub))
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            writer.cancel()
            lk = self._listen_keys.get(key)
            if lk is not None:
                lk.sockets.discard(sub)
        return ws

    async def _writer(self, sub: _Subscriber) -> None:
        drop = self.faults.user_data_drop_every_events
        queue = sub.queue
        assert isinstance(queue, asyncio.Queue)
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            while True:
                raw = await queue.get()
                await sub.ws.send_str(raw.decode())
                sub.sent += 1
                if drop and sub.sent >= drop:
                    self.user_data_dropped += 1
                    transport = sub.request.transport
                    if transport is not None:
                        transport.abort()
                    return

    async def _ws_api_handler(self, request: web.Request) -> web.StreamResponse:
        """Binance's WebSocket API (``/ws-api/v3``): requests ``{"id", "method", "params"}`` answered
        ``{"id", "status", "result" | "error", "rateLimits"}``; see :data:`WS_API_METHODS`."""
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        sub = _Subscriber(asyncio.Queue(), ws, request)
        writer = asyncio.create_task(self._writer(sub))
        session = _WsSession(connected_ms=self.clock.now_ms(), rate_limits=request.query.get("returnRateLimits") != "false")
        if self.charge is not None:  # connecting costs 2 weight (Binance WebSocket API, "IP limits")
            self.charge(request.remote or "unknown", 2, ws, "/ws-api/v3")
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
                    continue
                sub.queue.put_nowait(await self._ws_api_call(msg.data, sub, session))
        finally:
            writer.cancel()
            for api_key, s in session.subscribed:
                self._ws_api.get(api_key, set()).discard(s)
        return ws

    async def _ws_api_call(self, text: str, sub: _Subscriber, session: _WsSession) -> bytes:
        """One WebSocket API request -> its response frame (bytes)."""
        try:
            req = json.loads(text, parse_float=str)  # decimals keep the digits the client wrote
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            return _ws_reply(None, 400, error={"code": -1000, "msg": "Malformed request: not a JSON object."})
        rid = req.get("id")
        if rid is not None and not (isinstance(rid, int) and not isinstance(rid, bool)) and not (isinstance(rid, str) and len(rid) <= 36):
            return _ws_reply(None, 400, error={"code": -1000, "msg": "Malformed request: 'id' must be an integer, a string of at most 36 characters, or null."})
        method = req.get("method")
        params = req.get("params") or {}
        if not isinstance(method, str):
            return _ws_reply(rid, 400, error={"code": -1000, "msg": "Malformed request: missing field 'method'."})
        method = method.removeprefix("v3/")
        if not isinstance(params, dict):
            return _ws_reply(rid, 400, error={"code": -1000, "msg": "Malformed request: 'params' must be an object."})
        show = params.get("returnRateLimits", session.rate_limits)
        flat = {k: _ws_text(v) for k, v in params.items()}  # signed as sent, returnRateLimits included
        ip = sub.request.remote or "unknown"
        limits: list[dict[str, Any]] = []
        try:
            if method in _WS_SESSION_METHODS:
                weight = 2 if method in ("session.logon", "userDataStream.subscribe.signature", "userDataStream.subscribe") else 1
                limits = self._ws_weight(ip, weight, sub.ws, method)
                result: Any = self._ws_session_call(method, flat, sub, session)
                return _ws_reply(rid, 200, result=result, limits=limits if show is not False else None)
            route = WS_API_METHODS.get(method)
            if route is None:
                raise Rejected(-1000, f"Unknown method {method!r}: the replay venue's WebSocket API serves {', '.join(sorted(WS_API_METHODS) + sorted(_WS_SESSION_METHODS))}.")
            http_method, path, security = route
            ep = by_path("spot", http_method, path)
            limits = self._ws_weight(ip, ep.weight(flat) if ep is not None else 1, sub.ws, method)
            account = None
            api_key = flat.get("apiKey") or (session.account.api_key if session.account is not None else None)
            if security == "SIGNED":
                account = self._ws_authorize(flat, session)
            elif security == "USER_STREAM" and not api_key:
                raise Rejected(-2014, "API-key format invalid.", 401)
            query = {k: v for k, v in flat.items() if k not in ("apiKey", "signature", "returnRateLimits")}
            handler = self.rest_handlers.get((http_method, path))
            if handler is None:  # pragma: no cover - every WS_API_METHODS route is registered
                raise Rejected(-1000, f"{method} is not served.")
            response = await handler(_Internal(http_method, path, query, api_key, sub.request, account))
            limits += _order_limits(response.headers, self.counter)
            raw = response.body if isinstance(response, web.Response) else None
            body = raw if isinstance(raw, bytes) else b"{}"
            return _ws_reply(rid, 200, raw_result=body, limits=limits if show is not False else None)
        except Rejected as exc:
            limits += _order_limits(exc.headers, self.counter)
            return _ws_reply(rid, exc.status, error=exc.body(), limits=limits if show is not False else None)

    def _ws_weight(self, ip: str, weight: int, conn: object, method: str) -> list[dict[str, Any]]:
        """Charge a WebSocket API request to the IP's REST weight budget (one budget, as Binance has)."""
        if self.charge is None:
            return []
        adm = self.charge(ip, weight, conn, f"/ws-api/v3:{method}")
        limit = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit, "count": adm.used_weight}]
        if adm.status == 418:
            until = self.clock.now_ms() + adm.retry_after_s * 1000
            raise Rejected(-1003, f"Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans.",
                           418, data={"serverTime": self.clock.now_ms(), "retryAfter": until})
        if adm.status == 429:
            raise Rejected(-1003, f"Too much request weight used; current limit is {self.weight_limit} request weight per 1 MINUTE. "
                           "Please use WebSocket Streams for live updates to avoid polling the API.", 429,
                           data={"serverTime": self.clock.now_ms(), "retryAfter": self.clock.now_ms() + adm.retry_after_s * 1000})
        return limit

    def _ws_verify(self, flat: dict[str, str]) -> Account:
        """An ad hoc signed WebSocket API request: ``apiKey`` + ``signature`` over the other
        params sorted by name (``k=v&...``; Binance WebSocket API, "SIGNED request security")."""
        acct = self._account_for(flat.get("apiKey"))
        signature = flat.get("signature", "")
        if not signature:
            raise Rejected(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        payload = "&".join(f"{k}={flat[k]}" for k in sorted(flat) if k != "signature").encode()
        if not self.verify(acct, payload, signature):
            raise Rejected(-1022, "Signature for this request is not valid.")
        return acct

    def _ws_authorize(self, flat: dict[str, str], session: _WsSession) -> Account:
        """The account of a SIGNED request: its own signature, else the session's logged-on key."""
        if flat.get("signature") or session.account is None:
            return self._ws_verify(flat)
        if flat.get("apiKey") and flat["apiKey"] != session.account.api_key:
            raise Rejected(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        return session.account

    def _session_doc(self, session: _WsSession) -> dict[str, Any]:
        return {
            "apiKey": session.account.api_key if session.account is not None else None,
            "authorizedSince": session.authorized_ms,
            "connectedSince": session.connected_ms,
            "returnRateLimits": session.rate_limits,
            "serverTime": self.clock.now_ms(),
            "userDataStream": bool(session.subscribed),
        }

    def _ws_session_call(self, method: str, flat: dict[str, str], sub: _Subscriber, session: _WsSession) -> Any:
        if method == "session.logon":
            acct = self._ws_verify(flat)
            if acct.ed25519_public_key is None:
                raise Rejected(-4056, "HMAC_SHA256 API key is not supported.")
            self._check_time(flat)
            session.account, session.authorized_ms = acct, self.clock.now_ms()
            return self._session_doc(session)
        if method == "session.status":
            return self._session_doc(session)
        if method == "session.logout":
            session.account, session.authorized_ms = None, None
            return self._session_doc(session)
        if method == "userDataStream.subscribe.signature":
            acct = self._ws_verify(flat)
            self._check_time(flat)
        elif method == "userDataStream.subscribe":
            if session.account is None:
                raise Rejected(-2015, "Invalid API-key, IP, or permissions for action.", 401)
            acct = session.account
        else:  # userDataStream.unsubscribe
            wanted = flat.get("subscriptionId")
            for api_key, s in list(session.subscribed):
                if wanted is None or str(s.subscription_id) == wanted:
                    self._ws_api.get(api_key, set()).discard(s)
                    session.subscribed.remove((api_key, s))
            return {}
        sid = next(self._sub_ids)
        s = _Subscriber(sub.queue, sub.ws, sub.request, sid)
        self._ws_api.setdefault(acct.api_key, set()).add(s)
        session.subscribed.append((acct.api_key, s))
        return {"subscriptionId": sid}


#: WebSocket API method -> (HTTP method, REST path, security): served by the REST handler of that
#: path, so parameters, errors, weights and order counts are the REST endpoint's (Binance WebSocket
#: API: "Market data requests", "Trading requests", "Account requests", "User Data Stream requests")
WS_API_METHODS: dict[str, tuple[str, str, str]] = {
    "ping": ("GET", "/api/v3/ping", "NONE"),
    "time": ("GET", "/api/v3/time", "NONE"),
    "exchangeInfo": ("GET", "/api/v3/exchangeInfo", "NONE"),
    "depth": ("GET", "/api/v3/depth", "NONE"),
    "klines": ("GET", "/api/v3/klines", "NONE"),
    "uiKlines": ("GET", "/api/v3/uiKlines", "NONE"),
    "avgPrice": ("GET", "/api/v3/avgPrice", "NONE"),
    "ticker.24hr": ("GET", "/api/v3/ticker/24hr", "NONE"),
    "ticker.tradingDay": ("GET", "/api/v3/ticker/tradingDay", "NONE"),
    "ticker": ("GET", "/api/v3/ticker", "NONE"),
    "ticker.price": ("GET", "/api/v3/ticker/price", "NONE"),
    "ticker.book": ("GET", "/api/v3/ticker/bookTicker", "NONE"),
    "order.place": ("POST", "/api/v3/order", "SIGNED"),
    "order.test": ("POST", "/api/v3/order/test", "SIGNED"),
    "order.status": ("GET", "/api/v3/order", "SIGNED"),
    "order.cancel": ("DELETE", "/api/v3/order", "SIGNED"),
    "order.cancelReplace": ("POST", "/api/v3/order/cancelReplace", "SIGNED"),
    "openOrders.status": ("GET", "/api/v3/openOrders", "SIGNED"),
    "openOrders.cancelAll": ("DELETE", "/api/v3/openOrders", "SIGNED"),
    "orderList.place": ("POST", "/api/v3/order/oco", "SIGNED"),
    "orderList.place.oco": ("POST", "/api/v3/orderList/oco", "SIGNED"),
    "orderList.status": ("GET", "/api/v3/orderList", "SIGNED"),
    "orderList.cancel": ("DELETE", "/api/v3/orderList", "SIGNED"),
    "openOrderLists.status": ("GET", "/api/v3/openOrderList", "SIGNED"),
    "allOrderLists": ("GET", "/api/v3/allOrderList", "SIGNED"),
    "allOrders": ("GET", "/api/v3/allOrders", "SIGNED"),
    "myTrades": ("GET", "/api/v3/myTrades", "SIGNED"),
    "account.status": ("GET", "/api/v3/account", "SIGNED"),
    "account.rateLimits.orders": ("GET", "/api/v3/rateLimit/order", "SIGNED"),
    "account.commission": ("GET", "/api/v3/account/commission", "SIGNED"),
    "userDataStream.start": ("POST", "/api/v3/userDataStream", "USER_STREAM"),
    "userDataStream.ping": ("PUT", "/api/v3/userDataStream", "USER_STREAM"),
    "userDataStream.stop": ("DELETE", "/api/v3/userDataStream", "USER_STREAM"),
}
_WS_SESSION_METHODS = {"session.logon", "session.status", "session.logout", "userDataStream.subscribe",
                       "userDataStream.subscribe.signature", "userDataStream.unsubscribe"}


@dataclass(eq=False)
class _WsSession:
    """One WebSocket API connection: its logged-on account (``session.logon``) and subscriptions."""

    connected_ms: int
    rate_limits: bool = True
    account: Account | None = None
    authorized_ms: int | None = None
    subscribed: list[tuple[str, _Subscriber]] = field(default_factory=list)


class _Internal:
    """What a REST handler reads of a request, built by the WebSocket API from a method's params
    (already authenticated: ``ws_account``); the handler runs unchanged."""

    can_read_body = False

    def __init__(self, method: str, path: str, params: dict[str, str], api_key: str | None, origin: web.Request,
                 account: Account | None) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

        self.method, self.path = method, path
        self.query = MultiDictProxy(MultiDict(params))
        self.raw_path = f"{path}?{urlencode(params)}" if params else path
        self.headers = CIMultiDictProxy(CIMultiDict({"X-MBX-APIKEY": api_key} if api_key else {}))
        self.remote, self.transport = origin.remote, origin.transport
        self.ws_account = account

    async def read(self) -> bytes:
        return b""


def _ws_text(v: Any) -> str:
    """A WebSocket API parameter as the REST handler reads it (JSON true -> ``"true"``, arrays as JSON)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return orjson.dumps(v).decode()
    return "" if v is None else str(v)


def _ws_reply(rid: Any, status: int, *, result: Any = None, raw_result: bytes | None = None, error: dict[str, Any] | None = None,
              limits: list[dict[str, Any]] | None = None) -> bytes:
    head = b'{"id":' + orjson.dumps(rid) + b',"status":' + str(status).encode()
    if error is not None:
        head += b',"error":' + orjson.dumps(error)
    else:
        head += b',"result":' + (raw_result if raw_result is not None else orjson.dumps(result))
    if limits:
        head += b',"rateLimits":' + orjson.dumps(limits)
    return head + b"}"


def _order_limits(headers: Any, counter: _OrderCounter) -> list[dict[str, Any]]:
    """The ORDERS rate limits of an order request, from its REST response headers."""
    c10, c1d = headers.get("X-MBX-ORDER-COUNT-10S"), headers.get("X-MBX-ORDER-COUNT-1D")
    if c10 is None or c1d is None:
        return []
    return [
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": counter.limit_10s, "count": int(c10)},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": counter.limit_1d, "count": int(c1d)},
    ]


def _check_order_shape(req: OrderRequest, prefix: str = "") -> None:
    """Type-specific mandatory and forbidden parameters (Binance "New order": "Other info")."""
    def name(p: str) -> str:
        return f"{prefix}{p[0].upper()}{p[1:]}" if prefix else p

    need: dict[str, tuple[str, ...]] = {
        "LIMIT": ("timeInForce", "quantity", "price"),
        "MARKET": (),
        "STOP_LOSS": ("quantity", "stopPrice"),
        "TAKE_PROFIT": ("quantity", "stopPrice"),
        "STOP_LOSS_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
        "TAKE_PROFIT_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
        "LIMIT_MAKER": ("quantity", "price"),
    }
    values = {"timeInForce": req.time_in_force, "quantity": req.quantity, "price": req.price, "stopPrice": req.stop_price}
    for p in need[req.type]:
        if values[p] is None:
            raise Rejected(-1102, f"Mandatory parameter '{name(p)}' was not sent, was empty/null, or malformed.")
    if req.type == "MARKET":
        if (req.quantity is None) == (req.quote_order_qty is None):
            if req.quantity is None:
                raise Rejected(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
            raise Rejected(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        if req.price is not None:
            raise Rejected(-1106, "Parameter 'price' sent when not required.")
    elif req.quote_order_qty is not None:
        raise Rejected(-1106, "Parameter 'quoteOrderQty' sent when not required.")
    if req.time_in_force is not None and req.type not in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
        raise Rejected(-1106, f"Parameter '{name('timeInForce')}' sent when not required.")
    if req.time_in_force is not None and req.time_in_force not in _TIFS:
        raise Rejected(-1115, "Invalid timeInForce.")
    if req.stop_price is not None and req.type not in ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"):
        raise Rejected(-1106, f"Parameter '{name('stopPrice')}' sent when not required.")
    if req.price is not None and req.type in ("STOP_LOSS", "TAKE_PROFIT"):
        raise Rejected(-1106, f"Parameter '{name('price')}' sent when not required.")
    if req.resp_type is not None and req.resp_type not in _RESP_TYPES:
        raise Rejected(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
    cid = req.client_order_id
    if cid is not None and (len(cid) > 36 or not set(cid) <= _CLIENT_ID_OK):
        raise Rejected(-1100, f"Illegal characters found in parameter '{name('newClientOrderId')}'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{{1,36}}$'.")


def _account(cfg: AccountConfig) -> Account:
    balances = {a: Decimal(repr(v)) for a, v in cfg.balances.items()}
    if cfg.api_secret is not None:
        return Account(cfg.api_key, balances, secret=cfg.api_secret.encode())
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    assert cfg.ed25519_public_key is not None
    try:
        key = load_pem_public_key(cfg.ed25519_public_key.encode())
    except ValueError:
        raise ConfigError(f"replay.accounts: {cfg.api_key[:4]}…: ed25519_public_key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"replay.accounts: {cfg.api_key[:4]}…: the public key is not Ed25519")
    return Account(cfg.api_key, balances, ed25519_public_key=key)


def _json(payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json", charset="UTF-8", headers=headers)
