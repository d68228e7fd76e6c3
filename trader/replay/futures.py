"""The replay venue's USD-M perpetual futures: margin accounts, positions, orders, funding, liquidation.

Pure and deterministic like :mod:`trader.replay.matching` (no I/O, no wall clock): every outcome is a
function of the recorded klines, the replay time and the order of requests. Money is
:class:`~decimal.Decimal` USDT.

**Prices.** There are no recorded perpetual prices: the contract trades on the *spot* recording's
intrabar path (:class:`~trader.replay.matching.MarketView`), rounded to the contract's tick. Mark
price = index price = last price (the basis is modelled as zero; real USD-M basis is usually a few
basis points). The book is the spot model's (``spread_bps`` around the path, outward to the tick).

**Fills** follow the spot engine: MARKET and marketable LIMIT orders take at the ask / bid moved by a
size impact (``impact_bps`` per 1 % of the kline's quote volume); a resting LIMIT fills at its price
when the path trades through it; no order fills more than ``max_volume_share`` of one kline's volume
(partial fills). STOP / TAKE_PROFIT (limit) and STOP_MARKET / TAKE_PROFIT_MARKET trigger on the path
(``workingType`` MARK_PRICE and CONTRACT_PRICE are the same price here); TRAILING_STOP_MARKET follows
the path's extreme since activation (``activationPrice``) and triggers on a retrace of
``callbackRate`` percent. GTX (post-only) is refused when marketable (-5022); GTD expires at
``goodTillDate``; IOC / FOK as on spot. ``reduceOnly`` orders never increase a position (refused
-2022 when they would, trimmed to the position when they fill); ``closePosition`` stops close
whatever the position holds when they trigger. Fees: ``maker_fee`` / ``taker_fee`` of the notional
(Binance USD-M regular tier: 0.02 % / 0.05 %), from the wallet.

**Margin** (formulas in :mod:`trader.usdm`): one-way mode; per symbol leverage (1 ... the first
bracket's ``initialLeverage``, default 20 as Binance's) and margin type (CROSSED default, ISOLATED).
A new order must leave ``availableBalance`` = cross wallet + cross unrealised PnL - cross position
initial margin - open-order initial margin >= 0 (-2019). An isolated position's initial margin moves
into its isolated wallet when it opens and back pro rata when it reduces.

**Funding** every 8 h (00:00, 08:00, 16:00 UTC): ``-amount x mark x rate`` (longs pay a positive
rate) to each open position, from the isolated wallet or the cross wallet; the rate is a constant
(Binance's baseline 0.01 %) or the per-symbol series of ``--funding DIR`` files.

**Liquidation**: when the mark price reaches the position's liquidation price (:func:`trader.usdm.liquidation_price`;
for cross positions the other positions are taken at their marks when it is computed) the position
is closed by a ``LIQUIDATION`` order (client id ``autoclose-<ms>``) at the liquidation price; the
margin left at that price — the maintenance margin — is charged as the liquidation clearance fee
(``INSURANCE_CLEAR`` income) up to ``notional x liquidationFee``. With the bundled tiers the fee
always exceeds what is left, so the account ends exactly where a fill at the bankruptcy price would
leave it (isolated: the isolated wallet is lost).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from trader.replay.matching import MarketView, Rejected
from trader.usdm import Bracket, ContractRules, bracket_for, liquidation_price
from trader.wire import e8

__all__ = ["FUNDING_INTERVAL_MS", "FAccount", "FOrder", "FPosition", "FuturesConfig", "FuturesEngine", "FuturesRequest"]

D0 = Decimal(0)
FUNDING_INTERVAL_MS = 8 * 3_600_000
_E8 = Decimal("0.00000001")
ORDER_TYPES = ("LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_CONDITIONAL = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
_MARKETISH = {"MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
_OPEN = ("NEW", "PARTIALLY_FILLED")
#: margin ratio (maintenance margin / margin balance) at which MARGIN_CALL is sent (liquidation: 1.0).
#: Binance documents the event ("position risk ratio too high") but not the threshold: 0.8 is ours.
MARGIN_CALL_RATIO = Decimal("0.8")


@dataclass
class FuturesConfig:
    """USD-M rules of the venue (``replay.futures`` config section).

    Attributes:
        maker_fee, taker_fee: fractions of the notional (0.0002 = 0.02 %).
        funding_rate: the constant rate per 8 h when a symbol has no funding file (0.0001 = 0.01 %).
        funding: per symbol, ``[(fundingTime ms, rate)]`` from ``--funding DIR`` (sorted).
        default_leverage: a symbol's leverage before ``POST /fapi/v1/leverage`` (Binance: 20).
        max_volume_share, impact_bps: as the spot engine's.
    """

    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0005")
    funding_rate: Decimal = Decimal("0.0001")
    funding: dict[str, list[tuple[int, Decimal]]] = field(default_factory=dict)
    default_leverage: int = 20
    max_volume_share: float = 0.1
    impact_bps: float = 5.0

    def rate_at(self, symbol: str, t_ms: int) -> Decimal:
        """The funding rate settled at ``t_ms`` (the file's row for that time, else the constant)."""
        rows = self.funding.get(symbol)
        if rows:
            for ft, rate in rows:
                if abs(ft - t_ms) < 60_000:
                    return rate
        return self.funding_rate


@dataclass
class FPosition:
    """One symbol's one-way position. ``amt`` > 0 long, < 0 short (contracts); ``entry`` USDT."""

    symbol: str
    amt: Decimal = D0
    entry: Decimal = D0
    isolated_wallet: Decimal = D0
    update_ms: int = 0
    liq: Decimal | None = None  # cached liquidation price (None: recompute)
    call: Decimal | None = None  # cached margin-call price (margin ratio MARGIN_CALL_RATIO)
    called: bool = False  # MARGIN_CALL sent since the position last changed

    @property
    def side(self) -> int:
        return 1 if self.amt > 0 else -1 if self.amt < 0 else 0


@dataclass
class FuturesRequest:
    """A parsed ``POST /fapi/v1/order`` (Binance USD-M "New Order (TRADE)")."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    activation_price: Decimal | None = None
    callback_rate: Decimal | None = None
    good_till_ms: int = 0
    client_order_id: str | None = None
    resp_type: str = "ACK"


@dataclass
class FOrder:
    """One futures order as the venue keeps it."""

    account: FAccount
    req: FuturesRequest
    order_id: int
    client_order_id: str
    time_ms: int
    orig_qty: Decimal
    status: str = "NEW"
    type: str = ""  # current type (a triggered STOP_MARKET executes as MARKET)
    executed: Decimal = D0
    cum_quote: Decimal = D0
    realized: Decimal = D0
    update_ms: int = 0
    triggered: bool = False
    activated: bool = False
    extreme: float = 0.0
    kline_id: int = -1
    kline_filled: Decimal = D0
    skip_kline: int | None = None
    liquidation: bool = False

    @property
    def symbol(self) -> str:
        return self.req.symbol

    @property
    def side(self) -> str:
        return self.req.side

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed if self.executed else D0

    def doc(self, rules: ContractRules, *, query: bool = False) -> dict[str, Any]:
        """The order as Binance USD-M answers ``POST/GET/DELETE /fapi/v1/order``."""
        r = self.req
        pp, qp = rules.price_precision, rules.quantity_precision
        out: dict[str, Any] = {
            "orderId": self.order_id,
            "symbol": r.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": _fmt(r.price or D0, pp),
            "avgPrice": _fmt(self.avg_price(), max(pp, 2) + 3),
            "origQty": _fmt(self.orig_qty, qp),
            "executedQty": _fmt(self.executed, qp),
            "cumQty": _fmt(self.executed, qp),
            "cumQuote": _fmt(self.cum_quote, 8),
            "timeInForce": r.time_in_force or "GTC",
            "type": "LIQUIDATION" if self.liquidation else self.type,
            "reduceOnly": r.reduce_only,
            "closePosition": r.close_position,
            "side": r.side,
            "positionSide": "BOTH",
            "stopPrice": _fmt(r.stop_price or D0, pp),
            "workingType": r.working_type,
            "priceProtect": r.price_protect,
            "origType": "LIQUIDATION" if self.liquidation else r.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": r.good_till_ms,
            "updateTime": self.update_ms,
        }
        if r.type == "TRAILING_STOP_MARKET":
            out["activatePrice"] = _fmt(r.activation_price or D0, pp)
            out["priceRate"] = _fmt(r.callback_rate or D0, 1)
        if query:
            out["time"] = self.time_ms
        return out


class _OimCache(dict[str, tuple[int, Decimal]]):
    """Per-symbol open-order margin cache whose ``version`` moves with every change (the account total's key).

    Setting a symbol's value at the time of a valid total keeps the total exact (adjusted by the change)."""

    version = 0
    total: tuple[int, int, Decimal] | None = None  # (replay ms, version, sum over symbols)

    def __setitem__(self, key: str, value: tuple[int, Decimal]) -> None:
        old = self.get(key)
        tot = self.total
        self.version += 1
        super().__setitem__(key, value)
        if tot is not None and tot[1] == self.version - 1 and tot[0] == value[0] and old is not None and old[0] == value[0]:
            self.total = (tot[0], self.version, tot[2] + value[1] - old[1])

    def pop(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.version += 1
        return super().pop(key, default)


class FAccount:
    """A USD-M account: one USDT wallet, positions, per-symbol leverage and margin type."""

    def __init__(self, api_key: str, wallet: Decimal) -> None:
        self.api_key = api_key
        self.wallet = wallet  # total wallet balance (cross + isolated wallets), USDT
        self.positions: dict[str, FPosition] = {}
        self.leverage: dict[str, int] = {}
        self.isolated: set[str] = set()
        self.orders: dict[tuple[str, int], FOrder] = {}
        self.by_client: dict[tuple[str, str], FOrder] = {}
        self.open: dict[tuple[str, int], FOrder] = {}
        self.open_by_symbol: dict[str, dict[int, FOrder]] = {}  # the same open orders, per symbol
        self.trades: list[dict[str, Any]] = []
        self.income: list[dict[str, Any]] = []
        self.update_ms = 0
        self.countdown: dict[str, tuple[int, int]] = {}  # symbol -> (countdown ms, deadline replay ms)
        self.oim = _OimCache()  # symbol -> (replay ms, open-order initial margin), with a version for the total

    def add_open(self, order: FOrder, counted: bool = False) -> None:
        """``counted``: the order's margin is already in the per-symbol cache (and the total), as
        :meth:`FuturesEngine.place` does; otherwise the total must be recomputed."""
        self.open[(order.symbol, order.order_id)] = order
        self.open_by_symbol.setdefault(order.symbol, {})[order.order_id] = order
        if not counted:
            self.oim.version += 1

    def remove_open(self, order: FOrder) -> None:
        self.open.pop((order.symbol, order.order_id), None)
        self.open_by_symbol.get(order.symbol, {}).pop(order.order_id, None)
        self.oim.version += 1

    def open_of(self, symbol: str) -> list[FOrder]:
        """Open orders of ``symbol`` (a copy: safe to close them while iterating)."""
        return list(self.open_by_symbol.get(symbol, {}).values())

    def position(self, symbol: str) -> FPosition:
        p = self.positions.get(symbol)
        if p is None:
            p = self.positions[symbol] = FPosition(symbol)
        return p

    @property
    def cross_wallet(self) -> Decimal:
        return self.wallet - sum((p.isolated_wallet for s, p in self.positions.items() if s in self.isolated), D0)


_QUANTA = [Decimal(1).scaleb(-i) for i in range(8)]


def _fmt(x: Decimal, places: int) -> str:
    """Fixed ``places`` decimals (never exponent form), as Binance USD-M prints prices and quantities."""
    if places >= 8:
        return e8(x)
    if not x:
        return "0" if places == 0 else "0." + "0" * places
    s = f"{x.quantize(_QUANTA[places], ROUND_HALF_EVEN):f}"
    return s[1:] if s.startswith("-") and not s.strip("-0.") else s


def _q(x: Decimal, unit: Decimal, rounding: str) -> Decimal:
    return (x / unit).to_integral_value(rounding) * unit


class FuturesEngine:
    """Accounts, orders, positions, funding and liquidation of the replay's USD-M venue (module docstring).

    Args:
        market: the path (:class:`~trader.replay.trading.SeriesMarket`, or a hand-written one in tests).
        rules: contract rules per symbol (from the futures ``exchangeInfo``).
        brackets: leverage tiers per symbol.
        cfg: fees, funding, fill rules.
        emit: ``(account, event dict)`` for the user-data stream (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, MARGIN_CALL).
        spread_bps: the book's spread.
    """

    def __init__(self, market: MarketView, rules: dict[str, ContractRules], brackets: dict[str, tuple[Bracket, ...]],
                 cfg: FuturesConfig | None = None, emit: Callable[[FAccount, dict[str, Any]], None] | None = None,
                 spread_bps: float = 2.0) -> None:
        self.market = market
        self.rules = rules
        self.brackets = brackets
        self.cfg = cfg or FuturesConfig()
        self.emit = emit or (lambda a, e: None)
        self._events_on = emit is not None  # no listener (a backtest): user-data events are not built
        self.spread = Decimal(repr(spread_bps)) / Decimal(10_000)
        self.accounts: dict[str, FAccount] = {}
        self._ids = itertools.count(1)
        self._next_id = 1  # the next order id (default client order ids follow it)
        self._trade_ids: dict[str, int] = {}
        self._tran_ids = itertools.count(1)
        self._last_ms: int | None = None
        self._marks: dict[tuple[str, int], Decimal] = {}
        self.events = 0  # order events processed (placements, fills, cancels, expiries, triggers, funding, liquidations)

    # ------------------------------------------------------------------ accounts and prices

    def add_account(self, api_key: str, wallet: Decimal) -> FAccount:
        acct = self.accounts[api_key] = FAccount(api_key, wallet)
        return acct

    def rules_for(self, symbol: str) -> ContractRules:
        r = self.rules.get(symbol)
        if r is None:
            raise Rejected(-1121, "Invalid symbol.")
        return r

    def mark(self, symbol: str, t_ms: int) -> Decimal:
        """Mark price (= the path price on the contract's tick), USDT."""
        key = (symbol, t_ms)
        hit = self._marks.get(key)
        if hit is None:
            if len(self._marks) > 50_000:
                self._marks.clear()
            tick = self.rules_for(symbol).tick
            hit = self._marks[key] = _q(Decimal(repr(self.market.price(symbol, t_ms))), tick, ROUND_HALF_EVEN)
        return hit

    def book(self, symbol: str, price: float) -> tuple[Decimal, Decimal]:
        """``(bid, ask)`` around path price ``price`` on the contract's tick, at least one tick apart."""
        tick = self.rules_for(symbol).tick
        p = Decimal(repr(price))
        bid = _q(p * (1 - self.spread / 2), tick, ROUND_FLOOR)
        ask = _q(p * (1 + self.spread / 2), tick, ROUND_CEILING)
        if ask <= bid:
            ask = bid + tick
        return max(bid, tick), ask

    def leverage(self, acct: FAccount, symbol: str) -> int:
        return acct.leverage.get(symbol, min(self.cfg.default_leverage, self.brackets[symbol][0].initial_leverage))

    def bracket(self, symbol: str, notional: Decimal) -> Bracket:
        return bracket_for(self.brackets[symbol], abs(notional))

    def upnl(self, pos: FPosition, mark: Decimal) -> Decimal:
        return pos.amt * (mark - pos.entry)

    def maint(self, pos: FPosition, mark: Decimal) -> Decimal:
        n = abs(pos.amt) * mark
        b = self.bracket(pos.symbol, n)
        return max(n * b.mmr - b.cum, D0)

    def position_im(self, acct: FAccount, pos: FPosition, mark: Decimal) -> Decimal:
        return abs(pos.amt) * mark / self.leverage(acct, pos.symbol)

    def order_im(self, acct: FAccount, order: FOrder, mark: Decimal) -> Decimal:
        """Initial margin an open order reserves: the part of it that would increase the position."""
        if order.req.reduce_only or order.req.close_position:
            return D0
        pos = acct.positions.get(order.symbol)
        signed = order.remaining if order.side == "BUY" else -order.remaining
        amt = pos.amt if pos else D0
        increase = max(abs(amt + signed) - abs(amt), D0) if amt * signed < 0 else order.remaining
        price = order.req.price if order.req.price else mark
        return increase * price / self.leverage(acct, order.symbol)

    def symbol_order_im(self, acct: FAccount, symbol: str, t_ms: int) -> Decimal:
        """Initial margin the open orders of ``symbol`` reserve (cached per replay ms; kept exact
        incrementally when an order is added, recomputed after a fill, a cancel or a new time)."""
        hit = acct.oim.get(symbol)
        if hit is not None and hit[0] == t_ms:
            return hit[1]
        mark = self.mark(symbol, t_ms)
        total = sum((self.order_im(acct, o, mark) for o in acct.open_by_symbol.get(symbol, {}).values()), D0)
        acct.oim[symbol] = (t_ms, total)
        return total

    def available(self, acct: FAccount, t_ms: int) -> Decimal:
        """``availableBalance``: cross wallet + cross unrealised PnL - cross position initial margin -
        open-order initial margin (what :meth:`totals` reports, without the isolated positions' work)."""
        iso = D0
        cross_upnl = cross_im = D0
        for s, p in acct.positions.items():
            if p.amt == 0 and not p.isolated_wallet:
                continue
            if s in acct.isolated:
                iso += p.isolated_wallet
            elif p.amt != 0:
                m = self.mark(s, t_ms)
                cross_upnl += self.upnl(p, m)
                cross_im += self.position_im(acct, p, m)
        return acct.wallet - iso + cross_upnl - cross_im - self.open_order_im(acct, t_ms)

    def open_order_im(self, acct: FAccount, t_ms: int) -> Decimal:
        """Initial margin of every open order of the account (cached until an order or position changes)."""
        hit = acct.oim.total
        if hit is not None and hit[0] == t_ms and hit[1] == acct.oim.version:
            return hit[2]
        total = sum((self.symbol_order_im(acct, s, t_ms) for s, orders in acct.open_by_symbol.items() if orders), D0)
        acct.oim.total = (t_ms, acct.oim.version, total)
        return total

    def equity(self, acct: FAccount, t_ms: int) -> Decimal:
        """Margin balance: wallet + every position's unrealised PnL at the mark, USDT."""
        return acct.wallet + sum((self.upnl(p, self.mark(s, t_ms)) for s, p in acct.positions.items() if p.amt != 0), D0)

    def totals(self, acct: FAccount, t_ms: int) -> dict[str, Decimal]:
        """Account figures (USDT): wallet, cross wallet, unrealised PnL (all / cross), position and
        open-order initial margin (cross, as Binance's ``totalPositionInitialMargin`` counts all),
        maintenance margin, margin balance, available balance."""
        upnl = cross_upnl = pim = cross_pim = oim = mm = D0
        for s, p in acct.positions.items():
            if p.amt == 0:
                continue
            m = self.mark(s, t_ms)
            u = self.upnl(p, m)
            im = self.position_im(acct, p, m)
            upnl += u
            pim += im
            mm += self.maint(p, m)
            if s not in acct.isolated:
                cross_upnl += u
                cross_pim += im
        for s in [s for s, orders in acct.open_by_symbol.items() if orders]:
            oim += self.symbol_order_im(acct, s, t_ms)
        cross = acct.cross_wallet
        return {"wallet": acct.wallet, "cross_wallet": cross, "upnl": upnl, "cross_upnl": cross_upnl, "position_im": pim,
                "open_order_im": oim, "maint": mm, "margin_balance": acct.wallet + upnl,
                "available": cross + cross_upnl - cross_pim - oim}

    def liq_price(self, acct: FAccount, pos: FPosition, t_ms: int, ratio: Decimal = Decimal(1)) -> Decimal:
        """The position's liquidation price now (0 when none), :func:`trader.usdm.liquidation_price`;
        with ``ratio`` < 1 the price at which the margin ratio reaches it (the margin-call price)."""
        if pos.amt == 0:
            return D0
        q = abs(pos.amt)
        mark = self.mark(pos.symbol, t_ms)
        b = self.bracket(pos.symbol, q * mark)
        if pos.symbol in acct.isolated:
            return liquidation_price(pos.side, q, pos.entry, pos.isolated_wallet, b.mmr / ratio, b.cum / ratio)
        other_mm = other_upnl = D0
        for s, p in acct.positions.items():
            if s != pos.symbol and p.amt != 0 and s not in acct.isolated:
                m = self.mark(s, t_ms)
                other_mm += self.maint(p, m)
                other_upnl += self.upnl(p, m)
        return liquidation_price(pos.side, q, pos.entry, acct.cross_wallet, b.mmr / ratio, b.cum / ratio, other_mm / ratio, other_upnl)

    # ------------------------------------------------------------------ settings

    def set_leverage(self, acct: FAccount, symbol: str, lev: int, t_ms: int) -> dict[str, Any]:
        """``POST /fapi/v1/leverage``: 1 ... the first tier's leverage (-4028); an open position's
        notional must fit the tier the new leverage allows (-2027)."""
        tiers = self.brackets[symbol]
        if not 1 <= lev <= tiers[0].initial_leverage:
            raise Rejected(-4028, f"Leverage {lev} is not valid")
        allowed = [b for b in tiers if b.initial_leverage >= lev]
        cap = allowed[-1].cap
        pos = acct.positions.get(symbol)
        if pos is not None and pos.amt != 0 and abs(pos.amt) * self.mark(symbol, t_ms) > cap:
            raise Rejected(-2027, "Exceeded the maximum allowable position at current leverage.")
        if pos is not None and pos.amt != 0 and symbol in acct.isolated and lev < self.leverage(acct, symbol):
            need = abs(pos.amt) * pos.entry / lev - pos.isolated_wallet
            if need > 0:
                if need > self.available(acct, t_ms):
                    raise Rejected(-2019, "Margin is insufficient.")
                pos.isolated_wallet += need
        acct.leverage[symbol] = lev
        acct.oim.pop(symbol, None)
        if pos is not None:
            pos.liq = pos.call = None
        return {"leverage": lev, "maxNotionalValue": f"{cap:f}", "symbol": symbol}

    def set_margin_type(self, acct: FAccount, symbol: str, kind: str) -> None:
        """``POST /fapi/v1/marginType`` ISOLATED | CROSSED (-4046 unchanged, -4047 open orders, -4048 a position)."""
        if kind not in ("ISOLATED", "CROSSED"):
            raise Rejected(-4044, "The margin type is invalid.") if kind else Rejected(-1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.")
        iso = kind == "ISOLATED"
        if iso == (symbol in acct.isolated):
            raise Rejected(-4046, "No need to change margin type.")
        if acct.open_by_symbol.get(symbol):
            raise Rejected(-4047, "Margin type cannot be changed if there exists open orders.")
        pos = acct.positions.get(symbol)
        if pos is not None and pos.amt != 0:
            raise Rejected(-4048, "Margin type cannot be changed if there exists position.")
        (acct.isolated.add if iso else acct.isolated.discard)(symbol)

    # ------------------------------------------------------------------ orders

    def place(self, acct: FAccount, req: FuturesRequest, now_ms: int, *, test: bool = False) -> FOrder | None:
        """Validate and accept ``req`` (Binance USD-M order rules and errors); run it at once if it
        can trade. Returns the order (None for ``test``).

        Raises:
            Rejected: -1111 precision, -4xxx filters, -4164 notional, -2019 margin, -2021 would
                trigger, -2022 reduce-only, -5022 post-only would take, -4116 duplicate client id.
        """
        rules = self.rules_for(req.symbol)
        if req.type not in rules.order_types:
            raise Rejected(-1116, "Invalid orderType.")
        if req.type == "LIMIT" and not req.time_in_force:
            raise Rejected(-1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
        if req.time_in_force and req.time_in_force not in rules.time_in_force:
            raise Rejected(-1115, "Invalid timeInForce.")
        if req.type in ("LIMIT", "STOP", "TAKE_PROFIT") and not req.price:
            raise Rejected(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        if req.type in ("STOP", "TAKE_PROFIT", "STOP_MARKET", "TAKE_PROFIT_MARKET") and not req.stop_price:
            raise Rejected(-1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed.")
        if req.close_position:
            if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise Rejected(-4136, f"Target strategy invalid for orderType {req.type},closePosition true")
            if req.quantity is not None:
                raise Rejected(-4136, "Target strategy invalid for orderType with closePosition true and quantity.")
            if req.reduce_only:
                raise Rejected(-1106, "Parameter 'reduceonly' sent when not required.")
        elif req.quantity is None:
            raise Rejected(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if req.type == "TRAILING_STOP_MARKET":
            cb = req.callback_rate
            if cb is None or not Decimal("0.1") <= cb <= Decimal(10):
                raise Rejected(-2007, "Invalid callBack rate.") if cb is not None else Rejected(
                    -1102, "Mandatory parameter 'callbackRate' was not sent, was empty/null, or malformed.")
        if req.time_in_force == "GTD":
            if req.good_till_ms <= now_ms + 600_000:
                raise Rejected(-4320, "goodTillDate must be greater than current time plus 600 seconds.")
        mark = self.mark(req.symbol, now_ms)
        bad = rules.check(qty=req.quantity, price=req.price if req.type in ("LIMIT", "STOP", "TAKE_PROFIT") else None,
                          stop=req.stop_price, market=req.type in _MARKETISH, mark=mark,
                          reduce_only=req.reduce_only or req.close_position)
        if bad is not None:
            raise Rejected(*bad)
        cid = req.client_order_id or f"x-replay{self._next_id:012d}"
        if req.client_order_id and (req.symbol, cid) in acct.by_client and acct.by_client[(req.symbol, cid)].is_open:
            raise Rejected(-4116, "ClientOrderId is duplicated.")
        if req.type in _CONDITIONAL and req.type != "TRAILING_STOP_MARKET" and self._trigger_now(req, float(mark)):
            raise Rejected(-2021, "Order would immediately trigger.")
        if req.type == "TRAILING_STOP_MARKET" and req.activation_price is not None:
            a = req.activation_price
            if (req.side == "SELL" and a <= mark) or (req.side == "BUY" and a >= mark):
                raise Rejected(-2021, "Order would immediately trigger.")
        pos = acct.position(req.symbol)
        signed = (req.quantity or D0) * (1 if req.side == "BUY" else -1)
        if req.reduce_only and (pos.amt == 0 or pos.amt * signed > 0 or abs(signed) > abs(pos.amt)):
            raise Rejected(-2022, "ReduceOnly Order is rejected.")  # it would open, increase or flip the position
        bid, ask = self.book(req.symbol, self.market.price(req.symbol, now_ms))
        if req.type == "LIMIT" and req.time_in_force == "GTX":
            price = req.price or D0
            if (req.side == "BUY" and price >= ask) or (req.side == "SELL" and price <= bid):
                raise Rejected(-5022, "Due to the order could not be executed as maker, the Post Only order will be rejected. "
                                      "The order will not be recorded in the order history")
        mine = acct.open_by_symbol.get(req.symbol, {})
        n_open = len(mine)
        if n_open >= rules.max_orders:
            raise Rejected(-2025, "Reach max open order limit.")
        if req.type in _CONDITIONAL and sum(1 for o in mine.values() if o.req.type in _CONDITIONAL and not o.triggered) >= rules.max_algo_orders:
            raise Rejected(-4045, "Reach max stop order limit.")
        order = FOrder(acct, req, next(self._ids), cid, now_ms, req.quantity or D0, type=req.type, update_ms=now_ms)
        self._next_id = order.order_id + 1
        if not req.reduce_only and not req.close_position:
            need = self.order_im(acct, order, ask if req.side == "BUY" else bid)
            fee_room = (req.quantity or D0) * (req.price or mark) * self.cfg.taker_fee
            if need > 0 and need + fee_room > self.available(acct, now_ms):
                raise Rejected(-2019, "Margin is insufficient.")
        if test:
            return None
        acct.orders[(req.symbol, order.order_id)] = order
        acct.by_client[(req.symbol, cid)] = order
        hit = acct.oim.get(req.symbol)
        counted = hit is not None and hit[0] == now_ms
        if hit is not None and counted:  # the position is unchanged: the sums stay exact
            acct.oim[req.symbol] = (now_ms, hit[1] + self.order_im(acct, order, mark))
        acct.add_open(order, counted=counted)
        self.events += 1
        self._report(order, "NEW", now_ms)
        if req.type == "TRAILING_STOP_MARKET" and req.activation_price is None:
            order.activated, order.extreme = True, float(mark)
        if req.type in ("MARKET", "LIMIT"):
            price_now = self.market.price(req.symbol, now_ms)
            self._take_if_marketable(order, price_now, now_ms)
        return order

    @staticmethod
    def _trigger_now(req: FuturesRequest, price: float) -> bool:
        s = float(req.stop_price or 0)
        up = (req.type.startswith("STOP") and req.side == "BUY") or (req.type.startswith("TAKE_PROFIT") and req.side == "SELL")
        return price >= s if up else price <= s

    def _take_if_marketable(self, order: FOrder, price: float, t_ms: int) -> None:
        req = order.req
        bid, ask = self.book(req.symbol, price)
        if order.type == "MARKET":
            self._take(order, price, t_ms, None)
            if order.is_open:
                self._close(order, "EXPIRED", t_ms)
            return
        limit = req.price or D0
        marketable = (req.side == "BUY" and limit >= ask) or (req.side == "SELL" and limit <= bid)
        if req.time_in_force == "FOK":
            cap = self._cap_left(order, t_ms)
            if not marketable or cap < order.remaining:
                self._close(order, "EXPIRED", t_ms)
                return
        if marketable:
            self._take(order, price, t_ms, limit)
        if order.is_open and req.time_in_force in ("IOC", "FOK"):
            self._close(order, "EXPIRED", t_ms)

    def _cap_left(self, order: FOrder, t_ms: int) -> Decimal:
        kid, volume, _ = self.market.kline(order.symbol, t_ms)
        if order.kline_id != kid:
            order.kline_id, order.kline_filled = kid, D0
        step = self.rules_for(order.symbol).step
        cap = _q(Decimal(repr(volume * self.cfg.max_volume_share)), step, ROUND_FLOOR)
        return max(cap - order.kline_filled, D0)

    def _impact(self, symbol: str, notional: Decimal, t_ms: int) -> Decimal:
        _, _, qvol = self.market.kline(symbol, t_ms)
        if qvol <= 0:
            return D0
        return Decimal(repr(self.cfg.impact_bps)) / Decimal(10_000) * notional / (Decimal(repr(qvol)) * Decimal("0.01"))

    def _reduce_cap(self, order: FOrder) -> Decimal | None:
        """For reduce-only / closePosition orders: how much may fill now (the position's size on the
        closing side), else None (no cap)."""
        if not (order.req.reduce_only or order.req.close_position or order.liquidation):
            return None
        pos = order.account.positions.get(order.symbol)
        amt = pos.amt if pos else D0
        if (order.side == "SELL" and amt > 0) or (order.side == "BUY" and amt < 0):
            return abs(amt)
        return D0

    def _take(self, order: FOrder, price: float, t_ms: int, limit: Decimal | None) -> None:
        """Fill as taker at the book around ``price`` (market, marketable limit, triggered stop)."""
        rules = self.rules_for(order.symbol)
        if order.req.close_position and order.orig_qty == 0:
            cap0 = self._reduce_cap(order) or D0
            order.orig_qty = cap0
        qty = min(order.remaining, self._cap_left(order, t_ms))
        rc = self._reduce_cap(order)
        if rc is not None:
            qty = min(qty, rc)
        if qty <= 0:
            return
        bid, ask = self.book(order.symbol, price)
        touch = ask if order.side == "BUY" else bid
        impact = self._impact(order.symbol, qty * touch, t_ms)
        if order.side == "BUY":
            fill = _q(touch * (1 + impact), rules.tick, ROUND_CEILING)
            if limit is not None:
                fill = min(fill, limit)
        else:
            fill = max(_q(touch * (1 - impact), rules.tick, ROUND_FLOOR), rules.tick)
            if limit is not None:
                fill = max(fill, limit)
        self._fill(order, qty, fill, t_ms, maker=False)

    def _fill(self, order: FOrder, qty: Decimal, price: Decimal, t_ms: int, *, maker: bool, fee_rate: Decimal | None = None) -> None:
        acct = order.account
        pos = acct.position(order.symbol)
        signed = qty if order.side == "BUY" else -qty
        iso = order.symbol in acct.isolated
        lev = self.leverage(acct, order.symbol)
        realized = D0
        old = pos.amt
        if old == 0 or old * signed > 0:  # open or increase
            new = old + signed
            pos.entry = (abs(old) * pos.entry + qty * price) / abs(new)
            pos.amt = new
            if iso:
                pos.isolated_wallet += qty * price / lev
        else:
            closing = min(qty, abs(old))
            realized = closing * (price - pos.entry) * (1 if old > 0 else -1)
            if iso and old != 0:
                release = pos.isolated_wallet * closing / abs(old)
                pos.isolated_wallet -= release
            rest = qty - closing
            pos.amt = old + (closing if old < 0 else -closing)
            if pos.amt == 0:
                pos.entry = D0
                if iso:
                    pos.isolated_wallet = D0
            if rest > 0:  # flip
                pos.amt = rest if signed > 0 else -rest
                pos.entry = price
                if iso:
                    pos.isolated_wallet = rest * price / lev
        rate = fee_rate if fee_rate is not None else (self.cfg.maker_fee if maker else self.cfg.taker_fee)
        commission = (qty * price * rate).quantize(_E8, ROUND_HALF_EVEN)
        acct.wallet += realized - commission
        pos.update_ms = t_ms
        pos.liq = pos.call = None
        pos.called = False
        acct.oim.pop(order.symbol, None)
        order.executed += qty
        order.cum_quote += qty * price
        order.realized += realized
        order.kline_filled += qty
        order.update_ms = t_ms
        tid = self._trade_ids[order.symbol] = self._trade_ids.get(order.symbol, 0) + 1
        trade = {
            "buyer": order.side == "BUY", "commission": e8(commission), "commissionAsset": "USDT", "id": tid, "maker": maker,
            "orderId": order.order_id, "price": _fmt(price, self.rules_for(order.symbol).price_precision),
            "qty": _fmt(qty, self.rules_for(order.symbol).quantity_precision), "quoteQty": e8(qty * price),
            "realizedPnl": e8(realized), "side": order.side, "positionSide": "BOTH", "symbol": order.symbol, "time": t_ms,
        }
        acct.trades.append(trade)
        if realized != 0:
            self._income(acct, order.symbol, "REALIZED_PNL", realized, t_ms, str(tid))
        if commission != 0:
            self._income(acct, order.symbol, "COMMISSION", -commission, t_ms, str(tid))
        done = order.executed >= order.orig_qty
        order.status = "FILLED" if done else "PARTIALLY_FILLED"
        self.events += 1
        if done:
            acct.remove_open(order)
        self._report(order, "TRADE", t_ms, trade=trade, last_qty=qty, last_price=price, commission=commission, maker=maker, realized=realized)
        self._account_update(acct, "ORDER", t_ms, [order.symbol])
        if pos.amt == 0:
            self._expire_close_position_orders(acct, order.symbol, t_ms)

    def _expire_close_position_orders(self, acct: FAccount, symbol: str, t_ms: int) -> None:
        """Binance cancels a symbol's closePosition / reduce-only conditional orders when the position closes."""
        for o in acct.open_of(symbol):
            if (o.req.close_position or o.req.reduce_only) and not o.triggered and o.req.type in _CONDITIONAL:
                self._close(o, "EXPIRED", t_ms)

    def _income(self, acct: FAccount, symbol: str, kind: str, amount: Decimal, t_ms: int, trade_id: str = "") -> None:
        acct.income.append({"symbol": symbol, "incomeType": kind, "income": e8(amount), "asset": "USDT", "info": kind,
                            "time": t_ms, "tranId": next(self._tran_ids), "tradeId": trade_id})

    def _close(self, order: FOrder, status: str, t_ms: int) -> None:
        order.status = status
        order.update_ms = t_ms
        order.account.remove_open(order)
        order.account.oim.pop(order.symbol, None)
        self.events += 1
        self._report(order, status if status != "CANCELED" else "CANCELED", t_ms)

    def find(self, acct: FAccount, symbol: str, order_id: int | None, client_id: str | None) -> FOrder | None:
        if order_id is not None:
            return acct.orders.get((symbol, order_id))
        if client_id is not None:
            return acct.by_client.get((symbol, client_id))
        return None

    def cancel(self, acct: FAccount, symbol: str, order_id: int | None, client_id: str | None, now_ms: int) -> FOrder:
        """``DELETE /fapi/v1/order`` (-2011 unknown or not open)."""
        order = self.find(acct, symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise Rejected(-2011, "Unknown order sent.")
        self._close(order, "CANCELED", now_ms)
        return order

    def cancel_all(self, acct: FAccount, symbol: str, now_ms: int) -> list[FOrder]:
        out = acct.open_of(symbol)
        for o in out:
            self._close(o, "CANCELED", now_ms)
        return out

    # ------------------------------------------------------------------ time

    def advance(self, now_ms: int) -> None:
        """Run orders, liquidations and funding along the path up to ``now_ms`` (replay ms)."""
        last = self._last_ms
        self._last_ms = now_ms
        if last is None or now_ms <= last:
            return
        t = last
        while t < now_ms:
            nxt = (t // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
            stop = min(nxt, now_ms)
            self._advance_span(t, stop)
            if stop == nxt:
                self._funding(nxt)
            t = stop

    def _watched(self) -> dict[str, list[tuple[FAccount, Any]]]:
        out: dict[str, list[tuple[FAccount, Any]]] = {}
        for acct in self.accounts.values():
            for o in acct.open.values():
                out.setdefault(o.symbol, []).append((acct, o))
            for s, p in acct.positions.items():
                if p.amt != 0:
                    out.setdefault(s, []).append((acct, p))
        return out

    def _advance_span(self, t0: int, t1: int) -> None:
        for acct in self.accounts.values():  # countdownCancelAll deadlines and GTD expiries in the span
            for symbol, (_, deadline) in list(acct.countdown.items()):
                if deadline <= t1:
                    self.cancel_all(acct, symbol, max(deadline, t0))
                    del acct.countdown[symbol]
            for o in list(acct.open.values()):
                if o.req.time_in_force == "GTD" and o.req.good_till_ms <= t1:
                    self._close(o, "EXPIRED", max(o.req.good_till_ms, t0))
        for symbol in self._watched():
            self._advance_symbol(symbol, t0, t1)

    def _levels(self, symbol: str, t_ms: int) -> list[float] | None:
        """Every price at which something can happen on ``symbol`` (limits, stops, liquidation and
        margin-call prices), sorted; None when a trailing stop needs every segment."""
        out: list[float] = []
        now: float | None = None
        for acct in self.accounts.values():
            pos = acct.positions.get(symbol)
            if pos is not None and pos.amt != 0:
                if pos.liq is None:
                    pos.liq = self.liq_price(acct, pos, t_ms)
                if pos.call is None:
                    pos.call = self.liq_price(acct, pos, t_ms, MARGIN_CALL_RATIO)
                if now is None:
                    now = self.market.price(symbol, t_ms)
                for level in (float(pos.liq), float(pos.call)):
                    if level > 0 and ((pos.amt > 0 and now <= level) or (pos.amt < 0 and now >= level)):
                        return None  # already through (funding moved it): it acts at once
                out += [float(pos.liq), float(pos.call)]
            for o in acct.open_by_symbol.get(symbol, {}).values():
                if o.req.type == "TRAILING_STOP_MARKET" and not o.triggered:
                    return None
                if o.req.type in _CONDITIONAL and not o.triggered:
                    out.append(float(o.req.stop_price or 0))
                elif o.type == "LIMIT" and o.skip_kline is None and o.executed == 0:
                    out.append(float(o.req.price or 0))
                else:  # a limit waiting on the next kline's volume may already be through its price: no filter
                    return None
        out.sort()
        return out

    def _advance_symbol(self, symbol: str, t0: int, t1: int) -> None:
        levels: list[float] | None = self._levels(symbol, t0)
        quick = getattr(self.market, "price_range", None)
        if levels is not None and quick is not None:  # nothing can happen if the span's range reaches no level
            lo, hi = quick(symbol, t0, t1)
            i = bisect.bisect_left(levels, lo)
            if i >= len(levels) or levels[i] > hi:
                return
        first = True
        for ta, pa, tb, pb, gap in self.market.segments(symbol, t0, t1):
            if not first:  # continuous path: only a segment whose range reaches a level can act
                if levels is None:
                    levels = self._levels(symbol, int(ta))
                if levels is not None:
                    lo, hi = (pa, pb) if pa <= pb else (pb, pa)
                    i = bisect.bisect_left(levels, lo)
                    if i >= len(levels) or levels[i] > hi:
                        continue
            first = False
            acted = False
            kid = self.market.kline(symbol, int(ta))[0]
            while True:
                best: tuple[float, int, int, Any, FAccount] | None = None
                for acct in self.accounts.values():
                    pos = acct.positions.get(symbol)
                    if pos is not None and pos.amt != 0:
                        if pos.liq is None:
                            pos.liq = self.liq_price(acct, pos, int(ta))
                        u = self._hit_liq(pos, pa, pb)
                        if u is not None and (best is None or (u, 0, 0) < best[:3]):
                            best = (u, 0, 0, pos, acct)
                        if not pos.called:
                            if pos.call is None:
                                pos.call = self.liq_price(acct, pos, int(ta), MARGIN_CALL_RATIO)
                            u = self._cross(pa, pb, float(pos.call), down=pos.amt > 0) if pos.call > 0 else None
                            if u is not None and (best is None or (u, 0, 1) < best[:3]):
                                best = (u, 0, 1, pos, acct)
                    for o in acct.open_by_symbol.get(symbol, {}).values():
                        if o.skip_kline is not None:
                            if o.skip_kline == kid:
                                continue
                            o.skip_kline = None
                        u = self._hit(o, pa, pb)
                        if u is not None and (best is None or (u, 1, o.order_id) < best[:3]):
                            best = (u, 1, o.order_id, o, acct)
                if best is None:
                    break
                u, kind, sub, obj, acct = best
                t = int(tb) if gap else round(ta + u * (tb - ta))
                p = pb if gap else pa + u * (pb - pa)
                acted = True
                if kind == 0 and sub == 1:
                    obj.called = True
                    self._margin_call(acct, obj, t)
                elif kind == 0:
                    self._liquidate(acct, obj, t)
                else:
                    before = (obj.status, obj.executed, obj.triggered, obj.activated)
                    self._act(obj, p, t, gap)
                    if (obj.status, obj.executed, obj.triggered, obj.activated) == before:
                        obj.skip_kline = kid
                if not gap:
                    ta, pa = t, p
            if acted:
                levels = None  # positions or orders changed: recompute before the next segment
            for acct in self.accounts.values():  # trailing extremes move with the path
                for o in acct.open_by_symbol.get(symbol, {}).values():
                    if o.req.type == "TRAILING_STOP_MARKET" and o.activated and not o.triggered:
                        o.extreme = max(o.extreme, pb) if o.side == "SELL" else min(o.extreme, pb)

    @staticmethod
    def _cross(pa: float, pb: float, level: float, down: bool) -> float | None:
        """Fraction of ``pa -> pb`` where the price first reaches ``level`` going down (or up)."""
        if (pa <= level) if down else (pa >= level):
            return 0.0
        if (pb <= level) if down else (pb >= level):
            return (pa - level) / (pa - pb)
        return None

    def _hit_liq(self, pos: FPosition, pa: float, pb: float) -> float | None:
        liq = float(pos.liq or 0)
        if liq <= 0:
            return None
        return self._cross(pa, pb, liq, down=pos.amt > 0)

    def _hit(self, o: FOrder, pa: float, pb: float) -> float | None:
        r = o.req
        if r.type == "TRAILING_STOP_MARKET" and not o.triggered:
            if not o.activated:
                return self._cross(pa, pb, float(r.activation_price or 0), down=o.side == "BUY")
            cb = float(r.callback_rate or 0) / 100.0
            if o.side == "SELL":
                ext = max(o.extreme, pa)
                return self._cross(pa, pb, ext * (1 - cb), down=True) if pb < pa or pa <= ext * (1 - cb) else None
            ext = min(o.extreme, pa)
            return self._cross(pa, pb, ext * (1 + cb), down=False) if pb > pa or pa >= ext * (1 + cb) else None
        if r.type in _CONDITIONAL and not o.triggered:
            up = (r.type.startswith("STOP") and o.side == "BUY") or (r.type.startswith("TAKE_PROFIT") and o.side == "SELL")
            return self._cross(pa, pb, float(r.stop_price or 0), down=not up)
        if o.type != "LIMIT":
            return None
        p = float(r.price or 0)
        if o.side == "BUY":  # a resting limit fills when the path trades through it
            if pa < p:
                return 0.0
            return (pa - p) / (pa - pb) if pb < p else None
        if pa > p:
            return 0.0
        return (p - pa) / (pb - pa) if pb > p else None

    def _act(self, o: FOrder, price: float, t_ms: int, gap: bool) -> None:
        r = o.req
        if r.type == "TRAILING_STOP_MARKET" and not o.activated:
            o.activated, o.extreme = True, price
            self.events += 1
            return
        if r.type in _CONDITIONAL and not o.triggered:
            o.triggered = True
            o.update_ms = t_ms
            self.events += 1
            if r.type in _MARKETISH:
                o.type = "MARKET"
                self._take(o, price, t_ms, None)
                if o.is_open:
                    self._close(o, "EXPIRED", t_ms)
            else:
                o.type = "LIMIT"
                self._take_if_marketable(o, price, t_ms)
            return
        qty = min(o.remaining, self._cap_left(o, t_ms))
        rc = self._reduce_cap(o)
        if rc is not None:
            qty = min(qty, rc)
            if rc == 0:
                self._close(o, "EXPIRED", t_ms)
                return
        if qty > 0:
            self._fill(o, qty, r.price or D0, t_ms, maker=True)

    def _liquidate(self, acct: FAccount, pos: FPosition, t_ms: int) -> None:
        """Close ``pos`` at its liquidation price (module docstring): LIQUIDATION order, realised
        PnL, then the clearance fee out of what margin is left."""
        rules = self.rules_for(pos.symbol)
        # on the tick, rounded against the position (a short's up, a long's down)
        price = _q(pos.liq or D0, rules.tick, ROUND_CEILING if pos.amt < 0 else ROUND_FLOOR) or rules.tick
        for o in acct.open_of(pos.symbol):  # Binance cancels the symbol's open orders first
            self._close(o, "CANCELED", t_ms)
        q = abs(pos.amt)
        req = FuturesRequest(pos.symbol, "SELL" if pos.amt > 0 else "BUY", "MARKET", quantity=q, time_in_force="IOC")
        order = FOrder(acct, req, next(self._ids), f"autoclose-{t_ms}", t_ms, q, type="LIMIT", update_ms=t_ms, liquidation=True)
        self._next_id = order.order_id + 1
        req.price = price
        acct.orders[(pos.symbol, order.order_id)] = order
        acct.add_open(order)
        b = self.bracket(pos.symbol, q * price)
        left = q * price * b.mmr - b.cum  # the margin left at the liquidation price: its maintenance margin
        self._fill(order, q, price, t_ms, maker=False, fee_rate=D0)
        fee = max(min(left, q * price * rules.liquidation_fee), D0)
        if fee > 0:
            acct.wallet -= fee
            self._income(acct, pos.symbol, "INSURANCE_CLEAR", -fee, t_ms)
            self._account_update(acct, "ORDER", t_ms, [pos.symbol])
        self.events += 1

    def _margin_call(self, acct: FAccount, pos: FPosition, t_ms: int) -> None:
        """``MARGIN_CALL`` (Binance USD-M "Event: Margin Call") when the margin ratio reaches
        :data:`MARGIN_CALL_RATIO`; once until the position changes."""
        self.events += 1
        if not self._events_on:
            return
        mark = self.mark(pos.symbol, t_ms)
        self.emit(acct, {"e": "MARGIN_CALL", "E": t_ms, "cw": e8(acct.cross_wallet), "p": [{
            "s": pos.symbol, "ps": "BOTH", "pa": _fmt(pos.amt, self.rules_for(pos.symbol).quantity_precision),
            "mt": "ISOLATED" if pos.symbol in acct.isolated else "CROSSED", "iw": e8(pos.isolated_wallet), "mp": e8(mark),
            "up": e8(self.upnl(pos, mark)), "mm": e8(self.maint(pos, mark))}]})

    def _funding(self, t_ms: int) -> None:
        """Settle funding at ``t_ms`` (a multiple of 8 h) for every open position."""
        for acct in self.accounts.values():
            touched = []
            for s, p in acct.positions.items():
                if p.amt == 0:
                    continue
                rate = self.cfg.rate_at(s, t_ms)
                fee = (-p.amt * self.mark(s, t_ms) * rate).quantize(_E8, ROUND_HALF_EVEN)
                if fee == 0:
                    continue
                acct.wallet += fee
                if s in acct.isolated:
                    p.isolated_wallet += fee
                p.liq = p.call = None
                self._income(acct, s, "FUNDING_FEE", fee, t_ms)
                touched.append(s)
                self.events += 1
            if touched:
                self._account_update(acct, "FUNDING_FEE", t_ms, touched)

    # ------------------------------------------------------------------ user data

    def _report(self, order: FOrder, exec_type: str, t_ms: int, *, trade: dict[str, Any] | None = None, last_qty: Decimal = D0,
                last_price: Decimal = D0, commission: Decimal = D0, maker: bool = False, realized: Decimal = D0) -> None:
        """``ORDER_TRADE_UPDATE`` (Binance USD-M "User Data Streams", "Event: Order Update")."""
        if not self._events_on:
            return
        rules = self.rules_for(order.symbol)
        pp, qp = rules.price_precision, rules.quantity_precision
        r = order.req
        o = {
            "s": order.symbol, "c": order.client_order_id, "S": order.side, "o": "LIQUIDATION" if order.liquidation else order.type,
            "f": r.time_in_force or "GTC", "q": _fmt(order.orig_qty, qp), "p": _fmt(r.price or D0, pp),
            "ap": _fmt(order.avg_price(), max(pp, 2) + 3), "sp": _fmt(r.stop_price or D0, pp),
            "x": "TRADE" if exec_type == "TRADE" else exec_type, "X": order.status, "i": order.order_id,
            "l": _fmt(last_qty, qp), "z": _fmt(order.executed, qp), "L": _fmt(last_price, pp), "N": "USDT", "n": e8(commission),
            "T": t_ms, "t": trade["id"] if trade else 0, "b": "0", "a": "0", "m": maker, "R": r.reduce_only,
            "wt": r.working_type, "ot": "LIQUIDATION" if order.liquidation else r.type, "ps": "BOTH", "cp": r.close_position,
            "rp": e8(realized), "pP": r.price_protect, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": r.good_till_ms,
        }
        if r.type == "TRAILING_STOP_MARKET":
            o["AP"] = _fmt(r.activation_price or D0, pp)
            o["cr"] = _fmt(r.callback_rate or D0, 1)
        self.emit(order.account, {"e": "ORDER_TRADE_UPDATE", "E": t_ms, "T": t_ms, "o": o})

    def position_update(self, acct: FAccount, symbol: str, t_ms: int) -> dict[str, Any]:
        """One ``ACCOUNT_UPDATE`` position entry."""
        p = acct.position(symbol)
        m = self.mark(symbol, t_ms)
        return {"s": symbol, "pa": _fmt(p.amt, self.rules_for(symbol).quantity_precision), "ep": e8(p.entry), "bep": e8(p.entry),
                "cr": "0", "up": e8(self.upnl(p, m)), "mt": "isolated" if symbol in acct.isolated else "cross",
                "iw": e8(p.isolated_wallet), "ps": "BOTH"}

    def _account_update(self, acct: FAccount, reason: str, t_ms: int, symbols: list[str]) -> None:
        """``ACCOUNT_UPDATE`` (reason ORDER, FUNDING_FEE, ...): the USDT balance and the positions touched."""
        acct.update_ms = t_ms
        if not self._events_on:
            return
        self.emit(acct, {"e": "ACCOUNT_UPDATE", "E": t_ms, "T": t_ms, "a": {
            "m": reason, "B": [{"a": "USDT", "wb": e8(acct.wallet), "cw": e8(acct.cross_wallet), "bc": "0.00000000"}],
            "P": [self.position_update(acct, s, t_ms) for s in symbols]}})

    def deposit(self, acct: FAccount, amount: Decimal, t_ms: int) -> None:
        """Credit (or debit) the wallet (``/replay/balance`` with ``market=usdm``); never below zero."""
        if acct.wallet + amount < 0:
            raise Rejected(-2010, "Account has insufficient balance for requested action.")
        acct.wallet += amount
        self._income(acct, "", "TRANSFER", amount, t_ms)
        self._account_update(acct, "DEPOSIT" if amount > 0 else "WITHDRAW", t_ms, [])
