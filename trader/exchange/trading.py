"""Signed trading client: orders that are never duplicated, account, trades, user-data stream.

Works unchanged against the replay venue and Binance spot (only base URLs differ). Built on
:class:`~trader.exchange.rest.BinanceClient` (weight budget, breaker, transport) and
:mod:`trader.exchange.signing` (HMAC-SHA256 / Ed25519, ``X-MBX-APIKEY``).

**Never a blind retry.** Binance: a 5xx or a timeout means *execution status unknown*. So an
order request is sent once; every order carries a deterministic ``newClientOrderId`` derived from
its intent (:func:`client_order_id`: strategy, symbol, signal time, leg), written to the
:class:`~trader.exchange.journal.OrderJournal` before the request leaves. When the answer is lost
(timeout, 5xx, crash), :meth:`TradingClient.submit` looks the order up by ``origClientOrderId``
until its fate is known; it sends again (same id) only once the order is *proven* absent — not
found although the server's clock has passed the request's ``timestamp + recvWindow``, after which
the exchange would refuse it (-1021) even if it were still in flight. Reads keep the REST client's
retries. A restart calls :meth:`~TradingClient.submit` for the same intents and gets the same
orders (tests: 20 "accepted, response lost, killed, restarted" cycles -> one order per intent).

**Before sending**: price to the tick and quantity down to the step, then every filter the
client can check (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL, PERCENT_PRICE_BY_SIDE); a
failure is raised locally (:class:`~trader.errors.OrderRejected` with ``local=True``), never sent.

**Time**: ``timestamp`` = the server's clock as last synced from ``/api/v3/time`` (half the round
trip added) moving at the rate the replay venue reports in its ``X-Replay-Speed`` header (1 on Binance); a ``-1021``
answer re-syncs and sends again, which is safe: the exchange refused that request before processing it.

**Order limits**: at most ``order_limit_10s`` x (1 - margin) new orders in any 10 s (Binance: 100),
paced locally and corrected from ``X-MBX-ORDER-COUNT-10S``; a 429 -1015 pauses like a weight 429.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from trader.errors import (
    ExchangeError,
    ExchangeServerError,
    NetworkError,
    OrderRejected,
    OrderStatusUnknown,
    RateLimited,
)
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import DEFAULT_RECV_WINDOW_MS, MAX_RECV_WINDOW_MS, Credentials
from trader.models import Balance, Fill, Order, SymbolRules

__all__ = ["OrderIntent", "ServerClock", "TradingClient", "TradingStats", "UserDataStream", "client_order_id", "prepare_order"]

_CID_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def client_order_id(strategy: str, symbol: str, signal_ms: int, leg: str) -> str:
    """Deterministic ``newClientOrderId`` of an intent: ``t<22 hex of sha256>-<leg>`` (<= 36
    characters of Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``). Pure: the same intent always gets the
    same id, so a restarted process finds the order it sent before dying."""
    digest = hashlib.sha256(f"{strategy}|{symbol}|{int(signal_ms)}|{leg}".encode()).hexdigest()[:22]
    tag = "".join(c for c in leg if c in _CID_SAFE)[:12] or "x"
    return f"t{digest}-{tag}"


@dataclass(frozen=True)
class OrderIntent:
    """One order to place, as the strategy decided it.

    Attributes:
        strategy, symbol, signal_ms, leg: what identifies the intent (-> :attr:`client_order_id`);
            ``signal_ms`` is the close time of the kline that produced the signal (epoch ms).
        side: BUY | SELL; type: LIMIT, MARKET, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT,
            TAKE_PROFIT_LIMIT, LIMIT_MAKER.
        quantity: base asset; quote_order_qty: quote asset (MARKET only, instead of quantity).
        price, stop_price: quote asset; time_in_force: GTC | IOC | FOK (limit types; default GTC).
        resp_type: ACK | RESULT | FULL.
    """

    strategy: str
    symbol: str
    signal_ms: int
    leg: str
    side: str
    type: str
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    resp_type: str = "FULL"

    @property
    def client_order_id(self) -> str:
        return client_order_id(self.strategy, self.symbol, self.signal_ms, self.leg)


class ServerClock:
    """The exchange's clock as seen from here: ``serverTime`` at the last sync plus the elapsed wall
    time (times ``replaySpeed``, 1 on Binance); half the round trip is added at sync.

    Args:
        mono: monotonic seconds (injectable).
    """

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self._server_ms: float | None = None
        self._at = 0.0
        self.speed = 1.0
        self.syncs = 0

    @property
    def synced(self) -> bool:
        return self._server_ms is not None

    def set(self, server_ms: int, sent_s: float, received_s: float, speed: float = 1.0) -> None:
        """Record a ``/api/v3/time`` answer received between ``sent_s`` and ``received_s`` (monotonic)."""
        self.speed = speed
        self._at = received_s
        self._server_ms = server_ms + (received_s - sent_s) / 2 * 1000 * speed
        self.syncs += 1

    async def sync(self, rest: BinanceClient) -> int:
        """Sync with ``/api/v3/time`` through ``rest`` (reads the replay's ``X-Replay-Speed``); returns the server time, ms."""
        sent = self._mono()
        raw, headers = await rest.request_full("time")
        speed = headers.get("X-Replay-Speed")  # the replay venue's clock rate; absent on Binance (1.0)
        server = int(orjson.loads(raw)["serverTime"])
        self.set(server, sent, self._mono(), float(speed) if speed else 1.0)
        return server

    def now_ms(self) -> int:
        """The exchange's now, epoch ms (the local wall clock until the first sync)."""
        if self._server_ms is None:
            return int(time.time() * 1000)
        return int(self._server_ms + (self._mono() - self._at) * 1000 * self.speed)


@dataclass
class TradingStats:
    """Counters of one trading client.

    Attributes:
        orders_sent: placement requests that left (including sends after a proven absence).
        unknown: placements whose answer was lost (timeout, 5xx) and were looked up.
        resolved_found: of those, found on the exchange (never resent).
        resolved_absent: proven absent, then sent again with the same id.
        time_resyncs: ``/api/v3/time`` syncs after a -1021.
        local_rejects: orders refused by the client's own filter check (never sent).
    """

    orders_sent: int = 0
    unknown: int = 0
    resolved_found: int = 0
    resolved_absent: int = 0
    time_resyncs: int = 0
    local_rejects: int = 0


Sleep = Callable[[float], Awaitable[None]]


class TradingClient:
    """Orders, account and trades over signed REST requests.

    Args:
        rest: an entered :class:`~trader.exchange.rest.BinanceClient` (its budget and breaker are shared).
        credentials: the API key and signer (:func:`~trader.exchange.signing.load_credentials`).
        journal: where intents are written before sending; None = in memory only (no restart safety).
        recv_window_ms: ``recvWindow`` of every signed request (1-60000, default 5000).
        resolve_timeout_s: how long :meth:`submit` keeps looking up an unknown order before raising
            :class:`~trader.errors.OrderStatusUnknown` (it is still never resent).
        poll_s: pause between look-ups, s.
        order_limit_10s: the exchange's ORDERS limit per 10 s; 10 % of it is kept in reserve.
        sleep, mono: injectable for tests.

    Raises (from every method): :class:`~trader.errors.ExchangeError` and subclasses,
    :class:`~trader.errors.NetworkError`, :class:`~trader.errors.ConfigError` (bad recvWindow).
    """

    def __init__(
        self,
        rest: BinanceClient,
        credentials: Credentials,
        journal: OrderJournal | None = None,
        *,
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        resolve_timeout_s: float = 60.0,
        poll_s: float = 0.25,
        order_limit_10s: int = 100,
        sleep: Sleep = asyncio.sleep,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        from trader.errors import ConfigError

        if not 1 <= recv_window_ms <= MAX_RECV_WINDOW_MS:
            raise ConfigError(f"recvWindow must be 1-{MAX_RECV_WINDOW_MS} ms, got {recv_window_ms}")
        self.rest = rest
        self.credentials = credentials
        self.journal = journal or OrderJournal(":memory:")
        self.recv_window_ms = recv_window_ms
        self.resolve_timeout_s = resolve_timeout_s
        self.poll_s = poll_s
        self.clock = ServerClock(mono)
        self.stats = TradingStats()
        self._sleep = sleep
        self._mono = mono
        self._rules: dict[str, SymbolRules] = {}
        self._avg: dict[str, tuple[int, Decimal]] = {}
        self._order_cap = max(int(order_limit_10s * 0.9), 1)
        self._order_times: deque[float] = deque()
        self._headers = [
            (b"User-Agent", b"trader/0.1"),
            (b"Accept", b"application/json"),
            (b"X-MBX-APIKEY", credentials.api_key.encode()),
        ]

    # ------------------------------------------------------------------ plumbing

    async def sync_time(self) -> int:
        """Sync :attr:`clock` with ``/api/v3/time``; returns the server time, epoch ms."""
        return await self.clock.sync(self.rest)

    def _query(self, params: Iterable[tuple[str, Any]]) -> tuple[str, int]:
        ts = self.clock.now_ms()
        items = [(k, v) for k, v in params if v is not None]
        items += [("recvWindow", self.recv_window_ms), ("timestamp", ts)]
        return self.credentials.signed_query(items), ts

    async def _signed(self, name: str, params: Iterable[tuple[str, Any]] = ()) -> tuple[Any, Any]:
        """A signed request (fresh timestamp per attempt; one re-sync on -1021). Returns (JSON, headers)."""
        if not self.clock.synced:
            await self.sync_time()
        items = list(params)
        for attempt in (0, 1):
            try:
                body, headers = await self.rest.request_full(
                    name, dict(items), query=lambda: self._query(items)[0], headers=self._headers
                )
                return orjson.loads(body), headers
            except ExchangeError as exc:
                if exc.code == -1021 and attempt == 0:
                    self.stats.time_resyncs += 1
                    await self.sync_time()
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _order_slot(self, n: int) -> None:
        """Wait until ``n`` more new orders fit the 10-second ORDERS window (with 10 % reserve)."""
        while True:
            now = self._mono()
            q = self._order_times
            while q and now - q[0] >= 10.0:
                q.popleft()
            if len(q) + n <= self._order_cap:
                for _ in range(n):
                    q.append(now)
                return
            await self._sleep(10.0 - (now - q[0]) + 0.001)

    def _note_order_count(self, headers: Any) -> None:
        raw = headers.get("X-MBX-ORDER-COUNT-10S") if headers is not None else None
        if raw and raw.isdigit():
            now = self._mono()
            while len(self._order_times) < min(int(raw), self._order_cap):  # the exchange counts more (another process)
                self._order_times.appendleft(now)

    # ------------------------------------------------------------------ rules

    async def rules(self, symbol: str, refresh: bool = False) -> SymbolRules:
        """The symbol's filters from ``exchangeInfo?symbol=`` (cached; weight 20 on a miss)."""
        if refresh or symbol not in self._rules:
            info = orjson.loads(await self.rest.request("exchangeInfo", {"symbol": symbol}))
            for doc in info.get("symbols", []):
                self._rules[doc["symbol"]] = SymbolRules.from_symbol_info(doc)
        return self._rules[symbol]

    async def load_rules(self, symbols: list[str]) -> None:
        """Fetch and cache the filters of ``symbols`` in one ``exchangeInfo?symbols=`` request (weight 20),
        so that no order waits for it later."""
        if not symbols:
            return
        info = orjson.loads(await self.rest.request("exchangeInfo", {"symbols": orjson.dumps(sorted(symbols)).decode()}))
        for doc in info.get("symbols", []):
            self._rules[doc["symbol"]] = SymbolRules.from_symbol_info(doc)

    async def avg_price(self, symbol: str, max_age_ms: int = 60_000) -> Decimal:
        """``avgPrice`` (Binance's 5-minute mean, PERCENT_PRICE_BY_SIDE's reference; weight 2), cached
        for ``max_age_ms`` of server time: the filter's 0.2x-5x band makes a minute-old mean exact enough."""
        now = self.clock.now_ms()
        hit = self._avg.get(symbol)
        if hit is not None and now - hit[0] <= max_age_ms * max(self.clock.speed, 1.0):  # a wall minute on a fast replay
            return hit[1]
        doc = orjson.loads(await self.rest.request("avgPrice", {"symbol": symbol}))
        value = Decimal(doc["price"])
        self._avg[symbol] = (now, value)
        return value

    async def book(self, symbol: str) -> tuple[Decimal, Decimal]:
        """``(bid, ask)`` from ``ticker/bookTicker`` (weight 2)."""
        doc = orjson.loads(await self.rest.request("bookTicker", {"symbol": symbol}))
        return Decimal(doc["bidPrice"]), Decimal(doc["askPrice"])

    async def books(self, symbols: list[str]) -> dict[str, tuple[Decimal, Decimal]]:
        """``{symbol: (bid, ask)}`` from one ``ticker/bookTicker?symbols=`` request (weight 4; 2 for one symbol)."""
        if not symbols:
            return {}
        if len(symbols) == 1:
            return {symbols[0]: await self.book(symbols[0])}
        docs = orjson.loads(await self.rest.request("bookTicker", {"symbols": orjson.dumps(sorted(set(symbols))).decode()}))
        return {d["symbol"]: (Decimal(d["bidPrice"]), Decimal(d["askPrice"])) for d in docs}

    def prepare(
        self, intent: OrderIntent, rules: SymbolRules, ref_price: Decimal | None = None, avg_price: Decimal | None = None
    ) -> list[tuple[str, str]]:
        """:func:`prepare_order` counting local rejections in :attr:`stats`."""
        try:
            return prepare_order(intent, rules, ref_price, avg_price)
        except OrderRejected:
            self.stats.local_rejects += 1
            raise

    # ------------------------------------------------------------------ orders

    async def submit(self, intent: OrderIntent, ref_price: Decimal | None = None) -> Order:
        """Place ``intent`` exactly once, whatever happened before (a lost answer, a crash).

        Looks at the journal first: a PLACED intent is returned as the exchange reports it now; a
        SENDING / UNKNOWN one is looked up (:meth:`resolve`) and only sent if proven absent.

        Raises:
            OrderRejected: the exchange (or the local filter check) refused it.
            OrderStatusUnknown: its fate could not be established within ``resolve_timeout_s``.
            RateLimited: the exchange refused it for a rate limit (not placed; submit again later).
        """
        cid = intent.client_order_id
        found = await self._from_journal(intent)
        if found is not None:
            return found
        rules = await self.rules(intent.symbol)
        # avgPrice is the reference of PERCENT_PRICE_BY_SIDE (priced orders) and of a MARKET order's NOTIONAL by
        # quantity; a MARKET order by quoteOrderQty states its notional itself: no request for it
        needs_avg = (intent.price is not None and bool(rules.bid_up)) or (
            intent.type == "MARKET" and ref_price is None and intent.quantity is not None)
        avg = await self.avg_price(intent.symbol) if needs_avg else None
        if intent.type == "MARKET" and ref_price is None and intent.quantity is not None:
            ref_price = avg  # NOTIONAL applies to MARKET orders at avgPrice (applyMinToMarket, avgPriceMins)
        params = self.prepare(intent, rules, ref_price, avg)
        return await self._send_new("newOrder", intent.symbol, cid, params, 1)

    async def _from_journal(self, intent: OrderIntent) -> Order | None:
        """What the journal knows of ``intent``: the order when it was placed (or is found placed),
        None when it must be sent (never journaled, or proven absent).

        Raises:
            OrderRejected: it was rejected before. OrderStatusUnknown: placed but the exchange lost it.
        """
        cid = intent.client_order_id
        entry = self.journal.get(cid)
        if entry is None:
            return None
        if entry.status == "PLACED":
            found = await self.query_order(intent.symbol, client_order_id=cid)
            if found is None:  # never resend what was placed: the exchange lost it, a human must look
                raise OrderStatusUnknown(f"{cid}: the journal says placed (order {entry.order_id}) but the exchange "
                                         "does not know it; not resent", client_order_id=cid)
            return found
        if entry.status == "REJECTED":
            raise OrderRejected(f"{cid}: rejected before: {entry.error}", code=None)
        if entry.status in ("SENDING", "UNKNOWN"):
            return await self.resolve(cid, intent.symbol, entry.timestamp_ms, entry.recv_window_ms)
        return None

    def _parse_order(self, doc: dict[str, Any]) -> Order:
        """An order response as :class:`Order` (USD-M's client overrides it)."""
        return Order.from_binance(doc if "orderId" in doc else doc["orderReports"][0])

    async def _send_new(self, name: str, symbol: str, cid: str, params: list[tuple[str, str]], n_orders: int) -> Order:
        if not self.clock.synced:
            await self.sync_time()
        for attempt in (0, 1):
            await self._order_slot(n_orders)
            query, ts = self._query(params)
            self.journal.sending(cid, symbol, dict(params), ts, self.recv_window_ms)  # before it leaves
            self.stats.orders_sent += 1
            try:
                body, headers = await self.rest.request_full(name, dict(params), query=_const(query), headers=self._headers)
            except RateLimited as exc:
                self.journal.update(cid, "NOT_PLACED", error=str(exc))
                raise
            except (ExchangeServerError, NetworkError) as exc:
                self.stats.unknown += 1
                self.journal.update(cid, "UNKNOWN", error=str(exc))
                found = await self.resolve(cid, symbol, ts, self.recv_window_ms)
                if found is not None:
                    return found
                continue  # proven absent: send again (same id)
            except ExchangeError as exc:
                if exc.code == -1021 and attempt == 0:
                    self.journal.update(cid, "NOT_PLACED", error=str(exc))
                    self.stats.time_resyncs += 1
                    await self.sync_time()
                    continue
                if (exc.code == -2010 and "Duplicate order" in str(exc)) or exc.code == -4116:  # ours, from an attempt we lost track of
                    found = await self.query_order(symbol, client_order_id=cid)
                    if found is not None:
                        self.journal.update(cid, "PLACED", order_id=found.order_id)
                        return found
                self.journal.update(cid, "REJECTED", error=str(exc))
                raise OrderRejected(str(exc), status=exc.status, code=exc.code) from None
            self._note_order_count(headers)
            order = self._parse_order(orjson.loads(body))
            self.journal.update(cid, "PLACED", order_id=order.order_id)
            return order
        raise OrderStatusUnknown(f"{cid}: not placed after two attempts", client_order_id=cid)

    async def resolve(self, cid: str, symbol: str, timestamp_ms: int | None, recv_window_ms: int | None) -> Order | None:
        """Settle an order whose answer was lost: the order as the exchange has it, or None when it
        is proven absent (not found after the server's clock passed ``timestamp + recvWindow``).

        Raises:
            OrderStatusUnknown: neither within ``resolve_timeout_s`` (it stays UNKNOWN in the journal).
        """
        deadline = self._mono() + self.resolve_timeout_s
        # on a replay clock faster than the wall the venue counts recvWindow in wall ms (X-Replay-Speed)
        window = ((recv_window_ms or self.recv_window_ms) + 1000) * max(self.clock.speed, 1.0)
        while True:
            try:
                server_now = await self.sync_time()  # before the look-up: see the proof in the docstring
                found = await self.query_order(symbol, client_order_id=cid)
            except (NetworkError, ExchangeServerError):
                found, server_now = None, None
            else:
                if found is not None:
                    self.stats.resolved_found += 1
                    self.journal.update(cid, "PLACED", order_id=found.order_id)
                    return found
                if timestamp_ms is None or (server_now is not None and server_now > timestamp_ms + window):
                    self.stats.resolved_absent += 1
                    self.journal.update(cid, "NOT_PLACED")
                    return None
            if self._mono() >= deadline:
                self.journal.update(cid, "UNKNOWN", error="unresolved")
                raise OrderStatusUnknown(
                    f"order {cid} on {symbol}: status unknown after {self.resolve_timeout_s:.0f} s of look-ups; not resent",
                    client_order_id=cid,
                )
            await self._sleep(self.poll_s)

    async def resolve_journal(self) -> dict[str, Order | None]:
        """Settle every SENDING / UNKNOWN intent of the journal (call once at start-up)."""
        out: dict[str, Order | None] = {}
        for entry in self.journal.unresolved():
            out[entry.client_order_id] = await self.resolve(entry.client_order_id, entry.symbol, entry.timestamp_ms, entry.recv_window_ms)
        return out

    async def submit_oco(
        self, strategy: str, symbol: str, signal_ms: int, side: str, quantity: Decimal,
        above: dict[str, Any], below: dict[str, Any], leg: str = "oco",
    ) -> list[Order]:
        """Place an OCO (``POST /api/v3/orderList/oco``) exactly once; returns its two legs.

        ``above`` / ``below``: ``{"type": ..., "price": Decimal, "stop_price": Decimal, "time_in_force": ...}``.
        The list and its legs get deterministic ids (``<leg>``, ``<leg>a``, ``<leg>b``); the journal
        keys the intent by the *above* leg's id, which is what is looked up after a lost answer.
        """
        rules = await self.rules(symbol)
        avg = await self.avg_price(symbol) if rules.bid_up else None
        qty = rules.round_qty(quantity)
        ids = {k: client_order_id(strategy, symbol, signal_ms, f"{leg}{k}") for k in ("", "a", "b")}
        entry = self.journal.get(ids["a"])
        if entry is not None and entry.status in ("PLACED", "SENDING", "UNKNOWN"):
            found = await self.resolve(ids["a"], symbol, entry.timestamp_ms, entry.recv_window_ms)
            if found is not None:
                other = await self.query_order(symbol, client_order_id=ids["b"])
                return [found] + ([other] if other is not None else [])
        params: list[tuple[str, str]] = [("symbol", symbol), ("side", side), ("quantity", str(qty)), ("listClientOrderId", ids[""])]
        for name, leg_doc, cid in (("above", above, ids["a"]), ("below", below, ids["b"])):
            price = rules.round_price(leg_doc["price"]) if leg_doc.get("price") is not None else None
            stop = rules.round_price(leg_doc["stop_price"]) if leg_doc.get("stop_price") is not None else None
            failed = rules.check(qty, price if price is not None else stop, avg_price=avg if price is not None else None, side=side,
                                 is_market=price is None, market_price=stop)
            if failed:
                self.stats.local_rejects += 1
                raise OrderRejected(f"OCO {name} leg would fail {failed} (nothing was sent)", local=True)
            params += [(f"{name}Type", leg_doc["type"]), (f"{name}ClientOrderId", cid)]
            if price is not None:
                params.append((f"{name}Price", str(price)))
            if stop is not None:
                params.append((f"{name}StopPrice", str(stop)))
            if leg_doc.get("time_in_force") or leg_doc["type"].endswith("_LIMIT"):
                params.append((f"{name}TimeInForce", leg_doc.get("time_in_force") or "GTC"))
        params.append(("newOrderRespType", "FULL"))
        first = await self._send_new("newOco", symbol, ids["a"], params, 2)
        other = await self.query_order(symbol, client_order_id=ids["b"])
        return [first] + ([other] if other is not None else [])

    async def query_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None) -> Order | None:
        """The order (open or not) by client order id or exchange id; None if the exchange has none (-2013)."""
        try:
            doc, _ = await self._signed("queryOrder", [("symbol", symbol), ("orderId", order_id), ("origClientOrderId", client_order_id)])
        except ExchangeError as exc:
            if exc.code == -2013:
                return None
            raise
        return Order.from_binance(doc)

    async def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None) -> Order | None:
        """Cancel one order; None when it is not open (-2011: already filled, cancelled or unknown).

        A cancel is not retried blindly either: after a lost answer the order is queried (a cancel
        that did happen shows as CANCELED; one that did not can simply be sent again).
        """
        params = [("symbol", symbol), ("orderId", order_id), ("origClientOrderId", client_order_id)]
        for _ in range(3):
            try:
                doc, _ = await self._signed("cancelOrder", params)
                return Order.from_binance(doc)
            except ExchangeError as exc:
                if exc.code == -2011:
                    return None
                if not isinstance(exc, ExchangeServerError):
                    raise
            except NetworkError:
                pass
            state = await self.query_order(symbol, client_order_id=client_order_id, order_id=order_id)
            if state is None or not state.is_open:
                return state
        raise OrderStatusUnknown(f"cancel of {client_order_id or order_id} on {symbol}: no answer after 3 attempts", client_order_id=client_order_id or "")

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders of one symbol (weight 6) or all (weight 80)."""
        doc, _ = await self._signed("openOrders", [("symbol", symbol)])
        return [Order.from_binance(d) for d in doc]

    async def cancel_open_orders(self, symbol: str) -> list[Order]:
        """Cancel every open order of ``symbol``; [] when there was none."""
        try:
            doc, _ = await self._signed("cancelOpenOrders", [("symbol", symbol)])
        except ExchangeError as exc:
            if exc.code == -2011:
                return []
            raise
        return [Order.from_binance(d) for d in doc if "orderId" in d]

    async def all_orders(self, symbol: str, *, start_ms: int | None = None, limit: int = 500) -> list[Order]:
        """Orders of ``symbol`` (all statuses), oldest first (weight 20)."""
        doc, _ = await self._signed("allOrders", [("symbol", symbol), ("startTime", start_ms), ("limit", limit)])
        return [Order.from_binance(d) for d in doc]

    async def my_trades(self, symbol: str, *, order_id: int | None = None, from_id: int | None = None, limit: int = 500) -> list[Fill]:
        """Trades of ``symbol`` (weight 20; 5 with ``order_id``)."""
        doc, _ = await self._signed("myTrades", [("symbol", symbol), ("orderId", order_id), ("fromId", from_id), ("limit", limit)])
        return [Fill.from_binance(d) for d in doc]

    async def account(self) -> dict[str, Balance]:
        """Balances by asset (weight 20)."""
        doc, _ = await self._signed("account", [("omitZeroBalances", "true")])
        return {b["asset"]: Balance(b["asset"], Decimal(b["free"]), Decimal(b["locked"])) for b in doc["balances"]}

    async def new_listen_key(self) -> str:
        """``POST /api/v3/userDataStream`` (API key only): a listenKey for ``/ws/<listenKey>``."""
        body, _ = await self.rest.request_full("newListenKey", {}, headers=self._headers)
        return str(orjson.loads(body)["listenKey"])


def prepare_order(
    intent: OrderIntent, rules: SymbolRules, ref_price: Decimal | None = None, avg_price: Decimal | None = None
) -> list[tuple[str, str]]:
    """The request parameters of ``intent``: price/stop to the nearest tick, quantity down to the
    step, then the filters checked. Pure.

    Args:
        ref_price: the current price (a MARKET order's notional).
        avg_price: ``avgPrice`` (PERCENT_PRICE_BY_SIDE's reference; the check is skipped without it).

    Raises:
        OrderRejected: ``local=True``, naming the filter the order would fail.
    """
    def tick(p: Decimal | None) -> Decimal | None:
        if p is None or not rules.tick:
            return p
        return (p / rules.tick).quantize(Decimal(1), ROUND_HALF_EVEN) * rules.tick

    price, stop = tick(intent.price), tick(intent.stop_price)
    qty = rules.round_qty(intent.quantity) if intent.quantity is not None else None
    is_market = intent.type == "MARKET"
    failed = None
    if qty is not None:
        ref = ref_price if is_market else (price if price is not None else stop)
        failed = rules.check(qty, price if price is not None else stop, market_price=ref if (is_market or price is None) else None,
                             avg_price=avg_price, side=intent.side, is_market=is_market or price is None)
        if failed is None and stop is not None:
            failed = rules.check(None, stop)
    elif intent.quote_order_qty is not None and intent.quote_order_qty < rules.min_notional:
        failed = "NOTIONAL"
    if failed is not None:
        raise OrderRejected(
            f"{intent.symbol} {intent.side} {intent.type} qty={qty} price={price} stop={stop}: would fail {failed} "
            "(checked before sending; nothing was sent)",
            local=True,
        )
    tif = intent.time_in_force or ("GTC" if intent.type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") else None)
    fields: list[tuple[str, Any]] = [
        ("symbol", intent.symbol),
        ("side", intent.side),
        ("type", intent.type),
        ("timeInForce", tif),
        ("quantity", _fmt(qty)),
        ("quoteOrderQty", _fmt(intent.quote_order_qty)),
        ("price", _fmt(price)),
        ("stopPrice", _fmt(stop)),
        ("newClientOrderId", intent.client_order_id),
        ("newOrderRespType", intent.resp_type),
    ]
    return [(k, str(v)) for k, v in fields if v is not None]


def _const(text: str) -> Callable[[], str]:
    return lambda: text


def _fmt(x: Decimal | None) -> str | None:
    if x is None:
        return None
    text = format(x.normalize(), "f")
    return text


class UserDataStream:
    """The account's events over Binance's WebSocket API (``userDataStream.subscribe.signature``).

    Reconnects with backoff after a drop and calls ``on_reconnect`` (events may have been missed:
    the caller reconciles with REST). Every ``executionReport`` is kept by client order id in
    :attr:`reports` (the latest one).

    Args:
        url: the WebSocket API endpoint (``wss://ws-api.binance.com:443/ws-api/v3``; the replay: ``ws://HOST:PORT/ws-api/v3``).
        credentials: signer; clock: the server clock for ``timestamp``.
        on_event: called with each event object.
        on_reconnect: awaited after every reconnection (not the first connection).
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        clock: ServerClock,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.clock = clock
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.reports: dict[str, dict[str, Any]] = {}
        self.events = 0
        self.reconnects = 0
        self.connected = asyncio.Event()

    def _subscribe_message(self, request_id: int) -> bytes:
        params: dict[str, Any] = {"apiKey": self.credentials.api_key, "timestamp": self.clock.now_ms()}
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        params["signature"] = self.credentials.sign(payload.encode())
        return orjson.dumps({"id": request_id, "method": "userDataStream.subscribe.signature", "params": params})

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop`` is set."""
        import websockets

        backoff = 0.1
        first = True
        rid = 0
        while not stop.is_set():
            try:
                async with websockets.connect(self.url, max_size=1 << 22, open_timeout=10) as ws:
                    rid += 1
                    await ws.send(self._subscribe_message(rid).decode())
                    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    if reply.get("status") != 200:
                        err = reply.get("error") or {}
                        raise ExchangeError(f"user data subscription refused: {err.get('msg')} (code {err.get('code')})", code=err.get("code"))
                    self.connected.set()
                    backoff = 0.1
                    if not first:
                        self.reconnects += 1
                        if self.on_reconnect is not None:
                            await self.on_reconnect()
                    first = False
                    stopper = asyncio.ensure_future(stop.wait())
                    try:
                        while True:
                            recv = asyncio.ensure_future(ws.recv())
                            # a receive left behind by a stop or a cancel ends with the socket's close: not news
                            recv.add_done_callback(lambda f: f.cancelled() or f.exception())
                            done, _ = await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
                            if stopper in done:
                                recv.cancel()
                                return
                            self._handle(recv.result())
                    finally:
                        stopper.cancel()
            except (TimeoutError, OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _handle(self, raw: str | bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        event = msg.get("event") if isinstance(msg, dict) else None
        if not isinstance(event, dict):
            return
        self.events += 1
        if event.get("e") == "executionReport":
            self.reports[str(event.get("c"))] = event
        if self.on_event is not None:
            self.on_event(event)

