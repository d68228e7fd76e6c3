"""The replay venue's accounts and matching engine: Binance spot order semantics on the replay clock.

Pure and deterministic (no I/O, no wall clock): every decision is a function of the recorded
klines, the replay time and the order of requests. Prices and quantities are :class:`~decimal.Decimal`.

**Market model** (the same intrabar path as :mod:`trader.replay.market`): between a kline's open
and close the price moves O -> L -> H -> C (closed up) or O -> H -> L -> C, one third of the
interval per leg; from one kline's close to the next open it jumps. The book around the path price
``p`` is ``bid = floor(p (1 - s/2), tick)``, ``ask = ceil(p (1 + s/2), tick)``, at least one tick
apart (``s = spread_bps / 10 000``), exactly what ``ticker/bookTicker`` serves.

**Fills** (documented in the README, "Orders on the replay exchange"):

- MARKET (and a triggered STOP_LOSS / TAKE_PROFIT) fills at once at the ask (BUY) or bid (SELL)
  moved by a size impact ``impact_bps x notional / (1 % of the kline's quote volume)``, rounded
  against the taker to the tick; taker fee.
- A LIMIT order that is marketable on arrival (BUY price >= ask, SELL price <= bid) takes at the
  ask / bid (never worse than its price); the rest rests. A resting LIMIT fills at its own price
  only when the path trades *through* it (strictly below a BUY, above a SELL; ``fill_on_touch``
  accepts equality); maker fee. A gap through the price fills at the price.
- STOP_LOSS(_LIMIT) triggers when the path reaches the stop (SELL: price <= stop; BUY: >= stop),
  TAKE_PROFIT(_LIMIT) the other way; a ``_LIMIT`` order then becomes a LIMIT at its price (taker
  if marketable then, else resting). Across a gap a stop triggers at the gap's far side and a
  market stop fills there (gap slippage, as on a real exchange).
- No order fills more than ``max_volume_share`` of one kline's recorded volume: the rest waits for
  the next kline (LIMIT) or expires (MARKET, IOC; FOK expires whole) — partial fills.
- OCO: when one leg triggers or trades, the other expires (``listStatus`` ALL_DONE).
- Commission: ``maker_fee`` / ``taker_fee`` (0.1 %) of what the order *receives*, in that asset
  (base asset for a BUY, quote asset for a SELL), as Binance charges without BNB.

Filters are Binance's ("Filters" documentation) with the values :func:`trader.replay.market.symbol_info`
publishes: PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL, PERCENT_PRICE_BY_SIDE, MAX_NUM_ORDERS.
Errors are Binance's codes and messages ("Error codes for Binance": -1013, -2010, -2011, -2013).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from trader.models import OPEN_STATUSES, SymbolRules
from trader.wire import e8

__all__ = [
    "Account",
    "MarketView",
    "MatchingConfig",
    "MatchingEngine",
    "OrderList",
    "OrderRequest",
    "Rejected",
    "VenueOrder",
]

D0 = Decimal(0)
_E8 = Decimal("0.00000001")
_BUY, _SELL = "BUY", "SELL"
_LIMIT_TYPES = {"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"}
_STOP_TYPES = {"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"}
ORDER_TYPES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")


class Rejected(Exception):
    """An order request the venue refuses: Binance's HTTP status, code and message."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}
        self.data = data  # Binance's "data" member of some errors (cancelReplace)

    def body(self) -> dict[str, Any]:
        """The error object: ``{"code", "msg"}`` (+ ``"data"``)."""
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            out["data"] = self.data
        return out


_e8 = e8  # 8-decimal text as Binance writes it (``"0.00100000"``): trader.wire, the one formatting function


class MarketView(Protocol):
    """What the engine reads about the market (implemented over recorded klines by
    :class:`trader.replay.trading.SeriesMarket`; by hand-written paths in unit tests)."""

    def rules(self, symbol: str, t_ms: int) -> SymbolRules:
        """The symbol's filters at ``t_ms``."""

    def price(self, symbol: str, t_ms: int) -> float:
        """Path price at ``t_ms``."""

    def book(self, symbol: str, price: float, t_ms: int) -> tuple[Decimal, Decimal]:
        """``(bid, ask)`` around path price ``price`` at ``t_ms``."""

    def avg_price(self, symbol: str, t_ms: int) -> Decimal:
        """Binance's ``avgPrice`` (5-minute mean) at ``t_ms``."""

    def kline(self, symbol: str, t_ms: int) -> tuple[int, float, float]:
        """``(kline id, base volume, quote volume)`` of the kline containing ``t_ms``."""

    def segments(self, symbol: str, t0_ms: int, t1_ms: int) -> Iterator[tuple[int, float, int, float, bool]]:
        """Linear pieces ``(ta_ms, pa, tb_ms, pb, is_gap)`` of the path over ``(t0, t1]``, in order."""


@dataclass
class MatchingConfig:
    """Matching rules (the ``replay.trading`` config section).

    Attributes:
        maker_fee, taker_fee: commission rates, fractions (0.001 = 0.1 %).
        fill_on_touch: a resting limit fills when the path merely reaches its price.
        max_volume_share: largest share (fraction) of one kline's recorded volume one order fills.
        impact_bps: market-order price impact, basis points per 1 % of the kline's quote volume.
    """

    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    fill_on_touch: bool = False
    max_volume_share: float = 0.1
    impact_bps: float = 5.0


@dataclass
class OrderRequest:
    """A parsed ``POST /api/v3/order`` (or one OCO leg). Strings are Binance's enum values."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    client_order_id: str | None = None
    resp_type: str | None = None


@dataclass
class VenueOrder:
    """One order as the venue keeps it."""

    account: Account
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str | None
    price: Decimal
    orig_qty: Decimal
    stop_price: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    order_list_id: int = -1
    status: str = "NEW"
    executed_qty: Decimal = D0
    cum_quote: Decimal = D0
    update_ms: int = 0
    working_ms: int = -1
    triggered: bool = False
    lock_asset: str = ""
    locked: Decimal = D0
    kline_id: int = -1
    kline_filled: Decimal = D0
    fills: list[dict[str, Any]] = field(default_factory=list)
    orig_client_order_id: str | None = None  # set by a cancel
    list_: OrderList | None = None
    skip_kline: int | None = None  # the kline in which nothing more can happen to it (volume cap)
    static: tuple[str, ...] | None = None  # formatted fields that never change (q, p, P, Q, f)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def working(self) -> bool:
        """Resting on the book (limits) as opposed to waiting for its stop."""
        return self.type in ("LIMIT", "LIMIT_MAKER") or self.triggered

    def doc(self) -> dict[str, Any]:
        """The order as ``GET /api/v3/order`` answers (Binance spot REST API, "Query order")."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "price": _e8(self.price),
            "origQty": _e8(self.orig_qty),
            "executedQty": _e8(self.executed_qty),
            "cummulativeQuoteQty": _e8(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force or "GTC",
            "type": self.type,
            "side": self.side,
            "stopPrice": _e8(self.stop_price),
            "icebergQty": "0.00000000",
            "time": self.time_ms,
            "updateTime": self.update_ms,
            "isWorking": self.working,
            "workingTime": self.working_ms,
            "origQuoteOrderQty": _e8(self.orig_quote_qty),
            "selfTradePreventionMode": "NONE",
        }

    def response(self, resp_type: str, transact_ms: int) -> dict[str, Any]:
        """The ``POST /api/v3/order`` answer: ACK, RESULT or FULL (with ``fills``)."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "transactTime": transact_ms,
        }
        if resp_type == "ACK":
            return out
        out.update(
            price=_e8(self.price),
            origQty=_e8(self.orig_qty),
            executedQty=_e8(self.executed_qty),
            origQuoteOrderQty=_e8(self.orig_quote_qty),
            cummulativeQuoteQty=_e8(self.cum_quote),
            status=self.status,
            timeInForce=self.time_in_force or "GTC",
            type=self.type,
            side=self.side,
            workingTime=self.working_ms,
            selfTradePreventionMode="NONE",
        )
        if self.type in _STOP_TYPES:
            out["stopPrice"] = _e8(self.stop_price)
        if resp_type == "FULL":
            out["fills"] = [
                {k: f[k] for k in ("price", "qty", "commission", "commissionAsset")} | {"tradeId": f["id"]} for f in self.fills
            ]
        return out

    def cancel_doc(self, cancel_client_id: str) -> dict[str, Any]:
        """The ``DELETE /api/v3/order`` answer (Binance spot REST API, "Cancel order")."""
        d = self.doc()
        out: dict[str, Any] = {"symbol": self.symbol, "origClientOrderId": self.client_order_id, "orderId": self.order_id,
                               "orderListId": self.order_list_id, "clientOrderId": cancel_client_id, "transactTime": self.update_ms}
        out.update((k, d[k]) for k in ("price", "origQty", "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type",
                                       "side", "selfTradePreventionMode"))
        return out


@dataclass
class OrderList:
    """An OCO: two legs, one cancels the other."""

    order_list_id: int
    list_client_order_id: str
    symbol: str
    legs: list[VenueOrder]
    time_ms: int
    status: str = "EXECUTING"  # listOrderStatus: EXECUTING | ALL_DONE
    status_type: str = "EXEC_STARTED"  # listStatusType: EXEC_STARTED | ALL_DONE

    def doc(self, with_reports: bool = False, resp_type: str = "FULL") -> dict[str, Any]:
        """Binance's order-list object (``POST /api/v3/orderList/oco`` when ``with_reports``)."""
        out: dict[str, Any] = {
            "orderListId": self.order_list_id,
            "contingencyType": "OCO",
            "listStatusType": self.status_type,
            "listOrderStatus": self.status,
            "listClientOrderId": self.list_client_order_id,
            "transactionTime": self.time_ms,
            "symbol": self.symbol,
            "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id} for o in self.legs],
        }
        if with_reports:
            out["orderReports"] = [o.response(resp_type, self.time_ms) for o in self.legs]
        return out


class Account:
    """One venue account: balances (free, locked) and its orders and trades.

    Args:
        api_key: the key clients send in ``X-MBX-APIKEY``.
        balances: asset -> free amount at start.
        secret: HMAC-SHA256 secret (bytes), or None for an Ed25519 account.
        ed25519_public_key: the account's Ed25519 public key object, or None.
    """

    def __init__(self, api_key: str, balances: dict[str, Decimal], secret: bytes | None = None, ed25519_public_key: Any = None) -> None:
        self.api_key = api_key
        self.secret = secret
        self.ed25519_public_key = ed25519_public_key
        self.balances: dict[str, list[Decimal]] = {a: [Decimal(v), D0] for a, v in balances.items()}
        self.orders: dict[tuple[str, int], VenueOrder] = {}
        self.by_client: dict[tuple[str, str], VenueOrder] = {}  # the latest order with this client id
        self.open: dict[tuple[str, int], VenueOrder] = {}
        self.open_count: dict[str, int] = {}  # symbol -> open orders (MAX_NUM_ORDERS)
        self.lists: dict[int, OrderList] = {}
        self.trades: list[dict[str, Any]] = []
        self.update_ms = 0

    def free(self, asset: str) -> Decimal:
        return self.balances.get(asset, [D0, D0])[0]

    def _bal(self, asset: str) -> list[Decimal]:
        return self.balances.setdefault(asset, [D0, D0])

    def balance_docs(self, assets: list[str] | None = None) -> list[dict[str, str]]:
        """``[{"asset", "free", "locked"}]`` (Binance's account ``balances``)."""
        names = assets if assets is not None else sorted(self.balances)
        return [{"asset": a, "free": _e8(self._bal(a)[0]), "locked": _e8(self._bal(a)[1])} for a in names]


Emit = Callable[[Account, dict[str, Any]], None]


def _q(x: Decimal, unit: Decimal, rounding: str) -> Decimal:
    return (x / unit).to_integral_value(rounding) * unit


def _dec(x: float) -> Decimal:
    return Decimal(repr(x))


class MatchingEngine:
    """Accounts, order books and fills of the replay venue.

    Args:
        market: the market data the engine trades against.
        cfg: fees, touch rule, volume share, impact.
        emit: called with ``(account, event)`` for every user-data event (executionReport,
            outboundAccountPosition, listStatus), in order.
        listening: whether anyone listens to an account's events (None: always); events nobody
            receives are not built.
    """

    def __init__(
        self, market: MarketView, cfg: MatchingConfig | None = None, emit: Emit | None = None,
        listening: Callable[[Account], bool] | None = None,
    ) -> None:
        self.market = market
        self.cfg = cfg or MatchingConfig()
        self.emit = emit or (lambda account, event: None)
        self.listening = listening or (lambda account: True)
        self.accounts: dict[str, Account] = {}
        self._order_ids: dict[str, int] = {}  # symbol -> last order id issued
        self._trade_ids: dict[str, int] = {}  # symbol -> last trade id issued
        self._list_ids = 0
        self._watch: dict[str, dict[tuple[str, int, str], VenueOrder]] = {}  # symbol -> open orders of every account
        self._last_ms: dict[str, int] = {}
        self._seq = 0
        self.events = 0  #: order events processed (placements, fills, cancels, expiries, triggers)

    def add_account(self, account: Account) -> Account:
        """Register ``account`` (keyed by its API key)."""
        self.accounts[account.api_key] = account
        return account

    # ------------------------------------------------------------------ placement

    def validate(self, acct: Account, req: OrderRequest, now_ms: int, *, oco_leg: bool = False) -> tuple[SymbolRules, float]:
        """Filters, balance-independent checks, and the current path price; raise :class:`Rejected`."""
        m = self.market
        rules = m.rules(req.symbol, now_ms)
        price_now = m.price(req.symbol, now_ms)
        for value in (req.price, req.stop_price):
            if value is not None and (value < rules.min_price or value > rules.max_price or value % rules.tick != 0):
                raise Rejected(-1013, "Filter failure: PRICE_FILTER")
        qty = req.quantity
        if qty is not None:
            if qty < rules.min_qty or qty > rules.max_qty or qty % rules.step != 0:
                raise Rejected(-1013, "Filter failure: LOT_SIZE")
            if req.type == "MARKET" and rules.market_max_qty and qty > rules.market_max_qty:
                raise Rejected(-1013, "Filter failure: MARKET_LOT_SIZE")
        avg = m.avg_price(req.symbol, now_ms)
        if req.type == "MARKET" or (req.type in ("STOP_LOSS", "TAKE_PROFIT")):
            ref = (req.stop_price or D0) if req.type != "MARKET" else avg
            notional = (qty * ref) if qty is not None else (req.quote_order_qty or D0)
            if notional < rules.min_notional:
                raise Rejected(-1013, "Filter failure: NOTIONAL")
        else:
            assert req.price is not None and qty is not None
            notional = req.price * qty
            if notional < rules.min_notional or notional > rules.max_notional:
                raise Rejected(-1013, "Filter failure: NOTIONAL")
            up, down = (rules.bid_up, rules.bid_down) if req.side == _BUY else (rules.ask_up, rules.ask_down)
            if req.price > avg * up or req.price < avg * down:
                raise Rejected(-1013, "Filter failure: PERCENT_PRICE_BY_SIDE")
        n_open = acct.open_count.get(req.symbol, 0)
        if n_open + (2 if oco_leg else 1) > rules.max_num_orders:
            raise Rejected(-1013, "Filter failure: MAX_NUM_ORDERS")
        if req.client_order_id is not None:
            prior = acct.by_client.get((req.symbol, req.client_order_id))
            if prior is not None and prior.is_open:
                raise Rejected(-2010, "Duplicate order sent.")
        bid, ask = m.book(req.symbol, price_now, now_ms)
        if req.type == "LIMIT_MAKER":
            assert req.price is not None
            if (req.side == _BUY and req.price >= ask) or (req.side == _SELL and req.price <= bid):
                raise Rejected(-2010, "Order would immediately match and take.")
        if req.type in _STOP_TYPES:
            assert req.stop_price is not None
            if self._triggered(req.type, req.side, price_now, req.stop_price):
                raise Rejected(-2010, "Order would trigger immediately.")
        return rules, price_now

    @staticmethod
    def _triggered(kind: str, side: str, price: float, stop: Decimal) -> bool:
        s = float(stop)
        sell_down = (kind.startswith("STOP_LOSS") and side == _SELL) or (kind.startswith("TAKE_PROFIT") and side == _BUY)
        return price <= s if sell_down else price >= s

    def _new_order(self, acct: Account, req: OrderRequest, now_ms: int, client_id: str) -> VenueOrder:
        oid = self._order_ids[req.symbol] = self._order_ids.get(req.symbol, 0) + 1
        is_stop = req.type in _STOP_TYPES
        return VenueOrder(
            account=acct,
            symbol=req.symbol,
            order_id=oid,
            client_order_id=client_id,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force if req.type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") else "GTC",
            price=req.price or D0,
            orig_qty=req.quantity or D0,
            stop_price=req.stop_price or D0,
            orig_quote_qty=req.quote_order_qty or D0,
            time_ms=now_ms,
            update_ms=now_ms,
            working_ms=-1 if is_stop else now_ms,
        )

    def _lock_amount(self, req: OrderRequest, rules: SymbolRules, price_now: float, ask: Decimal) -> tuple[str, Decimal]:
        if req.side == _SELL:
            if req.quantity is None:  # MARKET SELL by quoteOrderQty: estimate the quantity at the bid
                assert req.quote_order_qty is not None
                return rules.base, _q(req.quote_order_qty / max(ask - rules.tick, rules.tick), rules.step, ROUND_CEILING)
            return rules.base, req.quantity
        if req.type == "MARKET":
            if req.quantity is None:
                assert req.quote_order_qty is not None
                return rules.quote, req.quote_order_qty
            return rules.quote, req.quantity * ask * (1 + self._impact(req.symbol, req.quantity * ask, price_now))
        ref = req.price if req.type in _LIMIT_TYPES else req.stop_price
        assert ref is not None and req.quantity is not None
        if req.type in ("STOP_LOSS", "TAKE_PROFIT"):  # a market BUY later: keep room for spread and impact
            ref = ref * Decimal("1.01")
        return rules.quote, ref * req.quantity

    def _impact(self, symbol: str, notional: Decimal, t_ms: int | float) -> Decimal:
        _, _, quote_volume = self.market.kline(symbol, int(t_ms))
        if quote_volume <= 0:
            return D0
        return _dec(self.cfg.impact_bps / 10_000.0 * float(notional) / (quote_volume * 0.01))

    def place(self, acct: Account, req: OrderRequest, now_ms: int, *, test: bool = False) -> VenueOrder | None:
        """Accept (and, where marketable, fill) one order; with ``test`` only validate.

        Raises:
            Rejected: a filter, balance, duplicate-id or trigger rule refused it (Binance codes).
        """
        self.advance(now_ms)
        rules, price_now = self.validate(acct, req, now_ms)
        _, ask = self.market.book(req.symbol, price_now, now_ms)
        asset, amount = self._lock_amount(req, rules, price_now, ask)
        if acct.free(asset) < amount:
            raise Rejected(-2010, "Account has insufficient balance for requested action.")
        if test:
            return None
        order = self._new_order(acct, req, now_ms, req.client_order_id or self._client_id())
        self._accept(order, asset, amount, now_ms)
        self._on_arrival(order, price_now, now_ms)
        return order

    def _client_id(self) -> str:
        return f"replay{self._next_seq():016d}"

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _accept(self, order: VenueOrder, asset: str, amount: Decimal, now_ms: int) -> None:
        acct = order.account
        bal = acct._bal(asset)
        bal[0] -= amount
        bal[1] += amount
        order.lock_asset, order.locked = asset, amount
        key = (order.symbol, order.order_id)
        acct.orders[key] = order
        acct.by_client[(order.symbol, order.client_order_id)] = order
        acct.open[key] = order
        acct.open_count[order.symbol] = acct.open_count.get(order.symbol, 0) + 1
        self._watch.setdefault(order.symbol, {})[(acct.api_key, order.order_id, order.symbol)] = order
        self._last_ms.setdefault(order.symbol, now_ms)
        self.events += 1
        self._report(order, "NEW", now_ms)
        if amount:
            self._position(acct, [asset], now_ms)

    def _on_arrival(self, order: VenueOrder, price_now: float, now_ms: int) -> None:
        if order.type == "MARKET":
            self._take(order, price_now, now_ms, limit=None)
            if order.is_open:
                self._close(order, "EXPIRED", now_ms)
        elif order.type == "LIMIT":
            self._take_if_marketable(order, price_now, now_ms)

    def _take_if_marketable(self, order: VenueOrder, price: float, t_ms: int) -> None:
        bid, ask = self.market.book(order.symbol, price, t_ms)
        marketable = order.price >= ask if order.side == _BUY else order.price <= bid
        tif = order.time_in_force or "GTC"
        if marketable:
            if tif == "FOK" and self._cap_left(order, t_ms) < order.remaining:
                self._close(order, "EXPIRED", t_ms)
                return
            self._take(order, price, t_ms, limit=order.price)
        if order.is_open and tif in ("IOC", "FOK"):
            self._close(order, "EXPIRED", t_ms)

    def place_oco(
        self, acct: Account, symbol: str, side: str, quantity: Decimal, above: OrderRequest, below: OrderRequest,
        list_client_id: str | None, now_ms: int,
    ) -> OrderList:
        """``POST /api/v3/orderList/oco``: two legs around the price, one lock for both.

        SELL: ``above`` is LIMIT_MAKER / TAKE_PROFIT(_LIMIT), ``below`` STOP_LOSS(_LIMIT); BUY the
        reverse. Raises :class:`Rejected` as Binance does (filters, trigger, price relationship).
        """
        self.advance(now_ms)
        legs_ok = (
            {"LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"} if side == _SELL else {"STOP_LOSS", "STOP_LOSS_LIMIT"},
            {"STOP_LOSS", "STOP_LOSS_LIMIT"} if side == _SELL else {"LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"},
        )
        if above.type not in legs_ok[0] or below.type not in legs_ok[1]:
            raise Rejected(-2010, "OCO orders are not supported for this combination of order types.")
        price_now = self.market.price(symbol, now_ms)
        lv = [(r.price if r.type == "LIMIT_MAKER" else r.stop_price) for r in (above, below)]
        assert lv[0] is not None and lv[1] is not None
        if not float(lv[0]) > price_now > float(lv[1]):
            raise Rejected(-2010, "The relationship of the prices for the orders is not correct.")
        rules = None
        for leg in (above, below):
            leg.quantity = quantity
            rules, _ = self.validate(acct, leg, now_ms, oco_leg=True)
        assert rules is not None
        if side == _SELL:
            asset, amount = rules.base, quantity
        else:
            refs = [r.price if r.type in _LIMIT_TYPES else (r.stop_price or D0) * Decimal("1.01") for r in (above, below)]
            asset, amount = rules.quote, max(x for x in refs if x is not None) * quantity
        if acct.free(asset) < amount:
            raise Rejected(-2010, "Account has insufficient balance for requested action.")
        self._list_ids += 1
        lid = self._list_ids
        olist = OrderList(lid, list_client_id or self._client_id(), symbol, [], now_ms)
        for i, leg in enumerate((above, below)):
            order = self._new_order(acct, leg, now_ms, leg.client_order_id or self._client_id())
            order.order_list_id, order.list_ = lid, olist
            olist.legs.append(order)
            self._accept(order, asset, amount if i == 0 else D0, now_ms)
        acct.lists[lid] = olist
        self._list_status(olist, now_ms)
        return olist

    # ------------------------------------------------------------------ cancel / query

    def find(self, acct: Account, symbol: str, order_id: int | None, client_id: str | None) -> VenueOrder | None:
        """The order by ``orderId`` (preferred) or client order id, or None."""
        if order_id is not None:
            return acct.orders.get((symbol, order_id))
        if client_id is not None:
            return acct.by_client.get((symbol, client_id))
        return None

    def cancel(self, acct: Account, symbol: str, order_id: int | None, client_id: str | None, now_ms: int) -> VenueOrder:
        """Cancel an open order (an OCO leg cancels its whole list).

        Raises:
            Rejected: -2011 "Unknown order sent." when there is no such open order.
        """
        self.advance(now_ms)
        order = self.find(acct, symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise Rejected(-2011, "Unknown order sent.")
        if order.list_ is not None:
            for leg in order.list_.legs:
                if leg.is_open:
                    self._close(leg, "CANCELED", now_ms)
            self._finish_list(order.list_, now_ms)
        else:
            self._close(order, "CANCELED", now_ms)
        return order

    def cancel_all(self, acct: Account, symbol: str, now_ms: int) -> list[VenueOrder]:
        """Cancel every open order of ``symbol`` (``DELETE /api/v3/openOrders``); -2011 if none."""
        self.advance(now_ms)
        orders = sorted((o for (s, _), o in acct.open.items() if s == symbol), key=lambda o: o.order_id)
        if not orders:
            raise Rejected(-2011, "Unknown order sent.")
        done = []
        for o in orders:
            if o.is_open:
                done.append(self.cancel(acct, symbol, o.order_id, None, now_ms))
        return done

    # ------------------------------------------------------------------ fills

    def _cap_left(self, order: VenueOrder, t_ms: int) -> Decimal:
        kid, volume, _ = self.market.kline(order.symbol, t_ms)
        if order.kline_id != kid:
            order.kline_id, order.kline_filled = kid, D0
        step = self.market.rules(order.symbol, t_ms).step
        cap = _q(_dec(volume * self.cfg.max_volume_share), step, ROUND_FLOOR)
        return max(cap - order.kline_filled, D0)

    def _take(self, order: VenueOrder, price: float, t_ms: int, limit: Decimal | None) -> None:
        """Fill as taker at the book around ``price`` (market, marketable limit, triggered stop)."""
        rules = self.market.rules(order.symbol, t_ms)
        bid, ask = self.market.book(order.symbol, price, t_ms)
        touch = ask if order.side == _BUY else bid
        if order.orig_qty == 0:  # quoteOrderQty: spend (BUY) or receive (SELL) this much quote
            est_qty = _q(order.orig_quote_qty / touch, rules.step, ROUND_DOWN)
        else:
            est_qty = order.remaining
        qty = min(est_qty, self._cap_left(order, t_ms))
        if qty <= 0:
            return
        impact = self._impact(order.symbol, qty * touch, t_ms)
        if order.side == _BUY:
            fill_price = _q(touch * (1 + impact), rules.tick, ROUND_CEILING)
            if limit is not None:
                fill_price = min(fill_price, limit)
        else:
            fill_price = max(_q(touch * (1 - impact), rules.tick, ROUND_FLOOR), rules.tick)
            if limit is not None:
                fill_price = max(fill_price, limit)
        if order.orig_qty == 0:
            qty = min(qty, _q(order.orig_quote_qty / fill_price, rules.step, ROUND_DOWN))
            if qty <= 0:
                return
            order.orig_qty = qty
        if order.side == _BUY and order.type == "MARKET":
            # no lock for a market BUY by quantity beyond the estimate: never spend more than held
            held = order.locked + order.account.free(rules.quote)
            if qty * fill_price > held:
                qty = _q(held / fill_price, rules.step, ROUND_DOWN)
                if qty <= 0:
                    return
        self._fill(order, qty, fill_price, t_ms, maker=False, rules=rules)

    def _fill(self, order: VenueOrder, qty: Decimal, price: Decimal, t_ms: int, *, maker: bool, rules: SymbolRules) -> None:
        acct = order.account
        if order.list_ is not None:
            self._expire_siblings(order, t_ms)
        fee = self.cfg.maker_fee if maker else self.cfg.taker_fee
        quote = qty * price
        base_b, quote_b = acct._bal(rules.base), acct._bal(rules.quote)
        if order.side == _BUY:
            spend = quote
            from_lock = min(order.locked, spend if order.type == "MARKET" or order.orig_quote_qty else self._lock_share(order, qty))
            quote_b[1] -= from_lock
            order.locked -= from_lock
            quote_b[0] -= spend - from_lock
            commission = (qty * fee).quantize(_E8, ROUND_HALF_EVEN)
            base_b[0] += qty - commission
            asset = rules.base
        else:
            used = min(order.locked, qty)
            base_b[1] -= used
            order.locked -= used
            base_b[0] -= qty - used
            commission = (quote * fee).quantize(_E8, ROUND_HALF_EVEN)
            quote_b[0] += quote - commission
            asset = rules.quote
        order.executed_qty += qty
        order.cum_quote += quote
        order.kline_filled += qty
        order.update_ms = t_ms
        tid = self._trade_ids[order.symbol] = self._trade_ids.get(order.symbol, 0) + 1
        trade = {
            "symbol": order.symbol,
            "id": tid,
            "orderId": order.order_id,
            "orderListId": order.order_list_id,
            "price": _e8(price),
            "qty": _e8(qty),
            "quoteQty": _e8(quote),
            "commission": _e8(commission),
            "commissionAsset": asset,
            "time": t_ms,
            "isBuyer": order.side == _BUY,
            "isMaker": maker,
            "isBestMatch": True,
        }
        acct.trades.append(trade)
        order.fills.append(trade)
        done = order.executed_qty >= order.orig_qty
        order.status = "FILLED" if done else "PARTIALLY_FILLED"
        self.events += 1
        if done:
            self._release(order)
            self._unwatch(order)
        self._report(order, "TRADE", t_ms, trade)
        self._position(acct, [rules.base, rules.quote], t_ms)
        if done and order.list_ is not None:
            self._finish_list(order.list_, t_ms)

    @staticmethod
    def _lock_share(order: VenueOrder, qty: Decimal) -> Decimal:
        """The part of a BUY's lock that ``qty`` more filled releases (pro rata to the remaining)."""
        remaining = order.remaining
        return order.locked if qty >= remaining else order.locked * qty / remaining

    def _release(self, order: VenueOrder) -> None:
        if order.locked:
            bal = order.account._bal(order.lock_asset)
            bal[1] -= order.locked
            bal[0] += order.locked
            order.locked = D0

    def _unwatch(self, order: VenueOrder) -> None:
        if order.account.open.pop((order.symbol, order.order_id), None) is not None:
            order.account.open_count[order.symbol] -= 1
        self._watch.get(order.symbol, {}).pop((order.account.api_key, order.order_id, order.symbol), None)

    def _close(self, order: VenueOrder, status: str, t_ms: int) -> None:
        order.status = status
        order.update_ms = t_ms
        had = order.locked
        self._release(order)
        self._unwatch(order)
        self.events += 1
        self._report(order, status, t_ms)
        if had:
            self._position(order.account, [order.lock_asset], t_ms)

    def _expire_siblings(self, order: VenueOrder, t_ms: int) -> None:
        olist = order.list_
        assert olist is not None
        for leg in olist.legs:
            if leg is not order and leg.is_open:
                if leg.locked and not order.locked:  # the shared lock moves to the leg that executes
                    order.locked, order.lock_asset, leg.locked = leg.locked, leg.lock_asset, D0
                self._close(leg, "EXPIRED", t_ms)

    def _finish_list(self, olist: OrderList, t_ms: int) -> None:
        if olist.status != "ALL_DONE" and not any(leg.is_open for leg in olist.legs):
            olist.status = olist.status_type = "ALL_DONE"
            olist.time_ms = t_ms
            self._list_status(olist, t_ms)

    # ------------------------------------------------------------------ time

    def advance(self, now_ms: int) -> None:
        """Run every open order of every symbol along the recorded path up to ``now_ms``.

        Deterministic: fills depend on the path, not on how often this is called (except that an
        order waiting on its kline's volume cap resumes on the next kline, whichever call reaches it).
        """
        for symbol in list(self._watch):
            watch = self._watch[symbol]
            t0 = self._last_ms.get(symbol, now_ms)
            if not watch:
                self._watch.pop(symbol, None)
                self._last_ms.pop(symbol, None)
                continue
            if now_ms <= t0:
                continue
            self._advance_symbol(symbol, watch, t0, now_ms)
            self._last_ms[symbol] = now_ms

    def _advance_symbol(self, symbol: str, watch: dict[Any, VenueOrder], t0: int, t1: int) -> None:
        touch = self.cfg.fill_on_touch
        for ta, pa, tb, pb, gap in self.market.segments(symbol, t0, t1):
            kid = self.market.kline(symbol, int(ta))[0]
            while watch:
                best: tuple[float, int, str, VenueOrder] | None = None
                for order in watch.values():
                    if order.skip_kline is not None:
                        if order.skip_kline == kid:
                            continue
                        order.skip_kline = None
                    u = self._hit(order, pa, pb, touch)
                    if u is not None:
                        rank = (u, order.order_id, order.account.api_key)
                        if best is None or rank < best[:3]:
                            best = (*rank, order)
                if best is None:
                    break
                u, _, _, order = best
                t = int(tb) if gap else round(ta + u * (tb - ta))
                p = pb if gap else pa + u * (pb - pa)
                before = (order.status, order.executed_qty, order.triggered)
                self._act(order, p, t, gap)
                if (order.status, order.executed_qty, order.triggered) == before:
                    order.skip_kline = kid
                if not gap:
                    ta, pa = t, p

    def _hit(self, order: VenueOrder, pa: float, pb: float, touch: bool) -> float | None:
        """Fraction of the segment ``pa -> pb`` where ``order`` first acts, or None."""
        if order.type in _STOP_TYPES and not order.triggered:
            s = float(order.stop_price)
            down = (order.type.startswith("STOP_LOSS") and order.side == _SELL) or (order.type.startswith("TAKE_PROFIT") and order.side == _BUY)
            if (pa <= s) if down else (pa >= s):
                return 0.0
            if (pb <= s) if down else (pb >= s):
                return (pa - s) / (pa - pb)
            return None
        p = float(order.price)
        if order.side == _BUY:
            if pa < p or (touch and pa <= p):
                return 0.0
            if pb < p or (touch and pb <= p):
                return (pa - p) / (pa - pb)
            return None
        if pa > p or (touch and pa >= p):
            return 0.0
        if pb > p or (touch and pb >= p):
            return (p - pa) / (pb - pa)
        return None

    def _act(self, order: VenueOrder, price: float, t_ms: int, gap: bool) -> None:
        if order.type in _STOP_TYPES and not order.triggered:
            if order.list_ is not None:
                self._expire_siblings(order, t_ms)
            order.triggered = True
            order.working_ms = t_ms
            order.update_ms = t_ms
            self.events += 1
            if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
                self._take(order, price, t_ms, limit=None)
                if order.is_open:
                    self._close(order, "EXPIRED", t_ms)
            else:
                self._take_if_marketable(order, price, t_ms)
            return
        cap = self._cap_left(order, t_ms)
        qty = min(order.remaining, cap)
        if qty > 0:
            self._fill(order, qty, order.price, t_ms, maker=True, rules=self.market.rules(order.symbol, t_ms))

    # ------------------------------------------------------------------ events

    def _report(self, order: VenueOrder, exec_type: str, t_ms: int, trade: dict[str, Any] | None = None) -> None:
        """An ``executionReport`` (Binance "User Data Streams", "Order Update")."""
        if not self.listening(order.account):
            return
        x = "TRADE" if trade else ("NEW" if exec_type == "NEW" else exec_type)
        st = order.static
        if st is None or (order.orig_quote_qty and st[0] != _e8(order.orig_qty)):  # quoteOrderQty: q is set at the fill
            st = order.static = (_e8(order.orig_qty), _e8(order.price), _e8(order.stop_price), _e8(order.orig_quote_qty),
                                 order.time_in_force or "GTC")
        self.emit(
            order.account,
            {
                "e": "executionReport",
                "E": t_ms,
                "s": order.symbol,
                "c": order.client_order_id,
                "S": order.side,
                "o": order.type,
                "f": st[4],
                "q": st[0],
                "p": st[1],
                "P": st[2],
                "F": "0.00000000",
                "g": order.order_list_id,
                "C": order.orig_client_order_id or "",
                "x": x,
                "X": order.status,
                "r": "NONE",
                "i": order.order_id,
                "l": trade["qty"] if trade else "0.00000000",
                "z": _e8(order.executed_qty),
                "L": trade["price"] if trade else "0.00000000",
                "n": trade["commission"] if trade else "0",
                "N": trade["commissionAsset"] if trade else None,
                "T": t_ms,
                "t": trade["id"] if trade else -1,
                "I": self._next_seq(),
                "w": order.is_open and order.working,
                "m": bool(trade and trade["isMaker"]),
                "M": False,
                "O": order.time_ms,
                "Z": _e8(order.cum_quote),
                "Y": trade["quoteQty"] if trade else "0.00000000",
                "Q": st[3],
                "W": order.working_ms,
                "V": "NONE",
            },
        )

    def _position(self, acct: Account, assets: list[str], t_ms: int) -> None:
        """An ``outboundAccountPosition`` with the assets that changed."""
        acct.update_ms = t_ms
        if not self.listening(acct):
            return
        bals = acct.balances
        rows = [{"a": a, "f": _e8(bals[a][0]), "l": _e8(bals[a][1])} for a in assets if a in bals]
        self.emit(acct, {"e": "outboundAccountPosition", "E": t_ms, "u": t_ms, "B": rows})

    def _list_status(self, olist: OrderList, t_ms: int) -> None:
        acct = olist.legs[0].account
        if not self.listening(acct):
            return
        self.emit(
            acct,
            {
                "e": "listStatus",
                "E": t_ms,
                "s": olist.symbol,
                "g": olist.order_list_id,
                "c": "OCO",
                "l": olist.status_type,
                "L": olist.status,
                "r": "NONE",
                "C": olist.list_client_order_id,
                "T": t_ms,
                "O": [{"s": o.symbol, "i": o.order_id, "c": o.client_order_id} for o in olist.legs],
            },
        )

    # ------------------------------------------------------------------ persistence (keyless paper trading)

    _ORDER_FIELDS = ("symbol", "order_id", "client_order_id", "side", "type", "time_in_force", "price", "orig_qty", "stop_price",
                     "orig_quote_qty", "time_ms", "order_list_id", "status", "executed_qty", "cum_quote", "update_ms", "working_ms",
                     "triggered", "lock_asset", "locked", "kline_id", "kline_filled")
    _DECIMAL_FIELDS = frozenset({"price", "orig_qty", "stop_price", "orig_quote_qty", "executed_qty", "cum_quote", "locked", "kline_filled"})

    def export_account(self, acct: Account) -> dict[str, Any]:
        """Everything needed to resume ``acct`` in a new process, as plain rows (the ledger's ``sim_*``
        tables): balances ``(asset, free, locked)``, orders (:attr:`_ORDER_FIELDS`), order lists,
        trades ``(symbol, id, JSON of the myTrades row)`` and the engine's counters and clocks."""
        orders = []
        for o in acct.orders.values():
            row = []
            for f in self._ORDER_FIELDS:
                v = getattr(o, f)
                row.append(str(v) if f in self._DECIMAL_FIELDS else (int(v) if f == "triggered" else v))
            orders.append(tuple(row))
        lists = [(ol.order_list_id, ol.list_client_order_id, ol.symbol, ol.time_ms, ol.status, ol.status_type,
                  json.dumps([[o.symbol, o.order_id] for o in ol.legs])) for ol in acct.lists.values()]
        return {
            "balances": [(a, str(b[0]), str(b[1])) for a, b in sorted(acct.balances.items())],
            "orders": orders,
            "lists": lists,
            "trades": [(t["symbol"], t["id"], json.dumps(t)) for t in acct.trades],
            "meta": {"order_ids": json.dumps(self._order_ids), "trade_ids": json.dumps(self._trade_ids), "list_ids": str(self._list_ids),
                     "seq": str(self._seq), "last_ms": json.dumps(self._last_ms), "update_ms": str(acct.update_ms)},
        }

    def import_account(self, acct: Account, state: dict[str, Any]) -> None:
        """Restore ``acct`` (already added) and the engine's counters from :meth:`export_account`'s rows."""
        acct.balances = {a: [Decimal(f), Decimal(lk)] for a, f, lk in state["balances"]}
        acct.trades = [json.loads(doc) for _, _, doc in state["trades"]]
        by_order: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for t in acct.trades:
            by_order.setdefault((t["symbol"], t["orderId"]), []).append(t)
        for row in state["orders"]:
            kw: dict[str, Any] = {f: (Decimal(v) if f in self._DECIMAL_FIELDS else (bool(v) if f == "triggered" else v))
                                  for f, v in zip(self._ORDER_FIELDS, row, strict=True)}
            o = VenueOrder(account=acct, **kw)
            o.fills = by_order.get((o.symbol, o.order_id), [])
            key = (o.symbol, o.order_id)
            acct.orders[key] = o
            acct.by_client[(o.symbol, o.client_order_id)] = o
            if o.is_open:
                acct.open[key] = o
                acct.open_count[o.symbol] = acct.open_count.get(o.symbol, 0) + 1
                self._watch.setdefault(o.symbol, {})[(acct.api_key, o.order_id, o.symbol)] = o
        for lid, lcid, symbol, t_ms, status, status_type, legs in state["lists"]:
            ol = OrderList(int(lid), lcid, symbol, [acct.orders[(s, int(i))] for s, i in json.loads(legs)], int(t_ms), status, status_type)
            for leg in ol.legs:
                leg.list_ = ol
            acct.lists[ol.order_list_id] = ol
        m = state["meta"]
        self._order_ids = {k: int(v) for k, v in json.loads(m["order_ids"]).items()}
        self._trade_ids = {k: int(v) for k, v in json.loads(m["trade_ids"]).items()}
        self._list_ids = int(m["list_ids"])
        self._seq = int(m["seq"])
        self._last_ms = {k: int(v) for k, v in json.loads(m["last_ms"]).items() if k in self._watch}
        acct.update_ms = int(m["update_ms"])

    def deposit(self, acct: Account, asset: str, delta: Decimal, t_ms: int) -> None:
        """Credit (or debit) ``asset``; emits ``balanceUpdate`` then ``outboundAccountPosition``."""
        bal = acct._bal(asset)
        if bal[0] + delta < 0:
            raise Rejected(-2010, "Account has insufficient balance for requested action.")
        bal[0] += delta
        self.emit(acct, {"e": "balanceUpdate", "E": t_ms, "a": asset, "d": _e8(delta), "T": t_ms})
        self._position(acct, [asset], t_ms)


