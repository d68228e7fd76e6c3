"""Core value types shared by every layer: the kline block layout, intervals, symbols.

**One kline shape.** Everywhere in `trader` (REST parsing, the store, live rings, features,
benchmarks, the replay venue) a run of klines is a *kline block*: a C-contiguous ``(11, n)``
float64 array whose rows are the fields below, in Binance's ``/api/v3/klines`` array order (Binance
spot REST API, "Market Data endpoints" — "Kline/Candlestick data"; the 12th field, "ignore", is
dropped), oldest kline first. One kline on its own is the ``(11,)`` column of a block. Rows are
addressed by the named constants of this module, never by bare numbers::

    close = block[CLOSE]            # (n,) quote-asset prices
    ohlcvq = block[list(OHLCVQ)]    # (6, n): what the features read

Times are integer epoch milliseconds (UTC), named ``*_ms``; they are exact in float64 (below 2**53).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any, Final

import numpy as np

from trader.errors import ConfigError, InvalidKlinesError

__all__ = [
    "BINANCE_INTERVALS",
    "CLOSE",
    "CLOSE_TIME",
    "HIGH",
    "KLINE_COLUMNS",
    "KLINE_FIELDS",
    "LOW",
    "N_FIELDS",
    "OHLCVQ",
    "OPEN",
    "OPEN_STATUSES",
    "OPEN_TIME",
    "QUOTE_VOLUME",
    "TAKER_BUY_BASE_VOLUME",
    "TAKER_BUY_QUOTE_VOLUME",
    "TRADES",
    "VOLUME",
    "Balance",
    "Fill",
    "Order",
    "OrderStatus",
    "OrderType",
    "Side",
    "SymbolRules",
    "check_klines",
    "duration_ms",
    "empty_klines",
    "interval_ms",
    "kline_open_ms",
    "parse_interval",
    "validate_symbol",
]

#: Row order of a kline block and of Binance's kline array (the 12th, "ignore", dropped).
KLINE_COLUMNS: Final[tuple[str, ...]] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
#: Field name -> row index of a kline block.
KLINE_FIELDS: Final[dict[str, int]] = {name: i for i, name in enumerate(KLINE_COLUMNS)}
#: Number of rows of a kline block.
N_FIELDS: Final[int] = len(KLINE_COLUMNS)

OPEN_TIME: Final[int] = 0  #: open time, epoch ms
OPEN: Final[int] = 1  #: open price, quote asset
HIGH: Final[int] = 2  #: high price, quote asset
LOW: Final[int] = 3  #: low price, quote asset
CLOSE: Final[int] = 4  #: close price, quote asset
VOLUME: Final[int] = 5  #: base-asset volume
CLOSE_TIME: Final[int] = 6  #: close time, epoch ms (= open_time + interval - 1)
QUOTE_VOLUME: Final[int] = 7  #: quote-asset volume
TRADES: Final[int] = 8  #: number of trades
TAKER_BUY_BASE_VOLUME: Final[int] = 9  #: taker-buy base-asset volume
TAKER_BUY_QUOTE_VOLUME: Final[int] = 10  #: taker-buy quote-asset volume

#: The rows the features read, in this order: open, high, low, close, volume, quote_volume.
OHLCVQ: Final[tuple[int, ...]] = (OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME)

_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
#: Binance weekly klines open on Monday 00:00 UTC; 1970-01-01 was a Thursday, so weeks start 4 days in.
WEEK_OFFSET_MS: Final[int] = 4 * _DAY

#: Every kline interval Binance spot accepts, with its length in ms. "1M" (calendar month)
#: has no fixed length and is accepted by the exchange but not by the store.
#: Source: Binance spot REST API, "ENUM definitions" — "Kline/Candlestick chart intervals".
BINANCE_INTERVALS: Final[dict[str, int | None]] = {
    "1s": 1_000,
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": _HOUR,
    "2h": 2 * _HOUR,
    "4h": 4 * _HOUR,
    "6h": 6 * _HOUR,
    "8h": 8 * _HOUR,
    "12h": 12 * _HOUR,
    "1d": _DAY,
    "3d": 3 * _DAY,
    "1w": 7 * _DAY,
    "1M": None,
}

_SYMBOL_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")


def empty_klines() -> np.ndarray:
    """An empty kline block, ``(11, 0)`` float64."""
    return np.empty((N_FIELDS, 0), dtype=np.float64)


def parse_interval(value: str) -> str:
    """Validate a kline interval string such as ``"1h"``.

    Args:
        value: interval as Binance spells it (case-sensitive: ``"1m"`` is a minute, ``"1M"`` a month).

    Returns:
        The same string.

    Raises:
        ConfigError: if Binance does not know the interval, or it has no fixed length ("1M").
    """
    if value not in BINANCE_INTERVALS:
        raise ConfigError(f"invalid interval {value!r}; expected one of {', '.join(BINANCE_INTERVALS)}")
    if BINANCE_INTERVALS[value] is None:
        raise ConfigError(f"interval {value!r} has no fixed length and cannot be stored")
    return value


def interval_ms(interval: str) -> int:
    """Length of one kline of ``interval`` in milliseconds (``"1h"`` -> 3_600_000).

    Raises:
        ConfigError: for an unknown or variable-length interval.
    """
    ms = BINANCE_INTERVALS.get(parse_interval(interval))
    assert ms is not None
    return ms


_DURATION_UNITS: Final[dict[str, int]] = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration_ms(text: str) -> int:
    """A duration such as ``"4h"``, ``"24h"``, ``"7d"``, ``"90m"``, ``"2w"`` in milliseconds. Pure.

    Raises:
        ConfigError: not a positive integer followed by one of m, h, d, w.
    """
    t = str(text).strip()
    unit = _DURATION_UNITS.get(t[-1:])
    if unit is None or not t[:-1].isdigit() or int(t[:-1]) <= 0:
        raise ConfigError(f"invalid duration {text!r}; expected e.g. 4h, 24h, 7d, 90m, 2w")
    return int(t[:-1]) * unit


def kline_open_ms(t_ms: int, interval: str) -> int:
    """Open time of the ``interval`` kline that contains ``t_ms`` (epoch ms). Pure.

    Boundaries are UTC multiples of the interval since the epoch, except ``1w``, which opens on
    Monday 00:00 UTC (Binance's weekly klines). ``3d`` is taken as epoch-aligned too.
    """
    step = interval_ms(interval)
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    return ((int(t_ms) - offset) // step) * step + offset


def check_klines(block: np.ndarray, interval: str, where: str = "") -> None:
    """Raise unless ``block`` is a well-formed kline block of ``interval``. Pure.

    Checks: shape ``(11, n)`` float64; open times strictly increasing and on ``interval``
    boundaries; ``close_time = open_time + interval - 1`` (Binance's definition); every value finite.

    Raises:
        InvalidKlinesError: naming ``where`` (e.g. ``"BTCUSDT 1h"``) and the first violation.
    """
    prefix = f"{where}: " if where else ""
    if block.ndim != 2 or block.shape[0] != N_FIELDS or block.dtype != np.float64:
        raise InvalidKlinesError(f"{prefix}expected a ({N_FIELDS}, n) float64 kline block, got {block.dtype} {block.shape}")
    if block.shape[1] == 0:
        return
    step = interval_ms(interval)
    if not np.isfinite(block).all():
        raise InvalidKlinesError(f"{prefix}klines contain non-finite values")
    ot = block[OPEN_TIME]
    if not np.array_equal(block[CLOSE_TIME] - ot, np.full(ot.shape[0], step - 1.0)):
        raise InvalidKlinesError(f"{prefix}close_time must equal open_time + {step - 1} ms")
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    if ((ot - offset) % step).any():
        raise InvalidKlinesError(f"{prefix}open_time is not on a {interval} boundary")
    if ot.shape[0] > 1 and not bool(np.all(ot[1:] > ot[:-1])):
        raise InvalidKlinesError(f"{prefix}open times are not strictly increasing")


def validate_symbol(value: str) -> str:
    """Normalise and validate a symbol: upper-case, 1-20 of ``A-Z 0-9 - _ .``.

    The pattern is the one Binance reports in its -1100 error for the ``symbol`` parameter.

    Args:
        value: symbol in any case, e.g. ``"btcusdt"``.

    Returns:
        The upper-case symbol, e.g. ``"BTCUSDT"``.

    Raises:
        ConfigError: if the symbol contains other characters or is empty/too long.
    """
    symbol = value.strip().upper()
    if not _SYMBOL_RE.match(symbol):
        raise ConfigError(f"invalid symbol {value!r}: expected 1-20 characters of A-Z, 0-9, '-', '_', '.'")
    return symbol


# ---------------------------------------------------------------------------------------------- orders
#
# What is sent to or read from an exchange about orders is exact decimal: prices and quantities
# are ``Decimal`` (never binary floats), rounded to the symbol's tick and step before sending.


class Side(StrEnum):
    """Order side (Binance spot REST API, "Enum definitions": ``side``)."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """Spot order types (Binance "Enum definitions": ``type``)."""

    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"


class OrderStatus(StrEnum):
    """Order status: Binance's values ("Enum definitions": order status), plus three that only the
    client writes and no exchange ever sends: ``PENDING`` (intent recorded, request not answered
    yet), ``ABSENT`` (looked up after a crash: the exchange never received it) and ``LOST`` (the
    ledger knew it, the exchange no longer does: a venue reset)."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    PENDING_CANCEL = "PENDING_CANCEL"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"
    PENDING = "PENDING"
    ABSENT = "ABSENT"
    LOST = "LOST"


#: the statuses in which an order can still trade (the venue's matching engine and the client's engine share this)
OPEN_STATUSES: Final[frozenset[str]] = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})


@dataclass(frozen=True)
class SymbolRules:
    """The trading filters of one symbol, as ``exchangeInfo`` publishes them (Decimals).

    Source: Binance spot "Filters" documentation (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE,
    NOTIONAL, PERCENT_PRICE_BY_SIDE, MAX_NUM_ORDERS). Shared by the replay venue, which enforces
    them, and the client, which checks an order against them before sending it.

    Attributes:
        symbol, base, quote: the symbol and its assets.
        tick: PRICE_FILTER tickSize (prices are multiples of it); min_price / max_price its bounds.
        step: LOT_SIZE stepSize; min_qty / max_qty its bounds (base asset).
        market_max_qty: MARKET_LOT_SIZE maxQty (0 = no limit).
        min_notional, max_notional: NOTIONAL bounds, quote asset (``price x qty``).
        bid_up, bid_down, ask_up, ask_down: PERCENT_PRICE_BY_SIDE multipliers of the 5-minute avgPrice.
        max_num_orders: MAX_NUM_ORDERS, open orders per symbol.
    """

    symbol: str
    base: str
    quote: str
    tick: Decimal
    min_price: Decimal
    max_price: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    max_notional: Decimal
    bid_up: Decimal = Decimal(5)
    bid_down: Decimal = Decimal("0.2")
    ask_up: Decimal = Decimal(5)
    ask_down: Decimal = Decimal("0.2")
    max_num_orders: int = 200

    @classmethod
    def from_symbol_info(cls, doc: dict[str, Any]) -> SymbolRules:
        """Build from one ``exchangeInfo`` ``symbols[]`` object (missing filters: no limit).

        Raises:
            ConfigError: a filter value is not a decimal number.
        """
        f = {x.get("filterType"): x for x in doc.get("filters", [])}

        def d(kind: str, key: str, default: str) -> Decimal:
            raw = f.get(kind, {}).get(key, default)
            try:
                return Decimal(str(raw))
            except ArithmeticError:
                raise ConfigError(f"{doc.get('symbol')}: {kind}.{key} is not a number: {raw!r}") from None

        return cls(
            symbol=str(doc["symbol"]),
            base=str(doc.get("baseAsset", "")),
            quote=str(doc.get("quoteAsset", "")),
            tick=d("PRICE_FILTER", "tickSize", "0"),
            min_price=d("PRICE_FILTER", "minPrice", "0"),
            max_price=d("PRICE_FILTER", "maxPrice", "0"),
            step=d("LOT_SIZE", "stepSize", "0"),
            min_qty=d("LOT_SIZE", "minQty", "0"),
            max_qty=d("LOT_SIZE", "maxQty", "0"),
            market_max_qty=d("MARKET_LOT_SIZE", "maxQty", "0"),
            min_notional=d("NOTIONAL", "minNotional", str(d("MIN_NOTIONAL", "minNotional", "0"))),
            max_notional=d("NOTIONAL", "maxNotional", "0"),
            bid_up=d("PERCENT_PRICE_BY_SIDE", "bidMultiplierUp", "0"),
            bid_down=d("PERCENT_PRICE_BY_SIDE", "bidMultiplierDown", "0"),
            ask_up=d("PERCENT_PRICE_BY_SIDE", "askMultiplierUp", "0"),
            ask_down=d("PERCENT_PRICE_BY_SIDE", "askMultiplierDown", "0"),
            max_num_orders=int(f.get("MAX_NUM_ORDERS", {}).get("maxNumOrders", 0)),
        )

    def round_price(self, price: Decimal | str | float, up: bool = False) -> Decimal:
        """``price`` rounded to the tick (down, or up with ``up``); floats go through ``repr``."""
        p = Decimal(repr(price)) if isinstance(price, float) else Decimal(price)
        if not self.tick:
            return p
        return (p / self.tick).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR) * self.tick

    def round_qty(self, qty: Decimal | str | float) -> Decimal:
        """``qty`` rounded *down* to the step (never more than asked)."""
        q = Decimal(repr(qty)) if isinstance(qty, float) else Decimal(qty)
        if not self.step:
            return q
        return (q / self.step).to_integral_value(ROUND_FLOOR) * self.step

    def check(self, qty: Decimal | None, price: Decimal | None, *, market_price: Decimal | None = None,
              avg_price: Decimal | None = None, side: str = "BUY", is_market: bool = False) -> str | None:
        """The first filter a (quantity, price) would fail, as Binance names it, or None. Pure.

        ``market_price`` stands in for the price of a MARKET order's notional; ``avg_price`` (the
        5-minute average) enables the PERCENT_PRICE_BY_SIDE check.
        """
        if price is not None and self.tick and (price < self.min_price or (self.max_price and price > self.max_price) or price % self.tick):
            return "PRICE_FILTER"
        if qty is not None and self.step:
            if qty < self.min_qty or (self.max_qty and qty > self.max_qty) or (qty - self.min_qty) % self.step:
                return "LOT_SIZE"
            if is_market and self.market_max_qty and qty > self.market_max_qty:
                return "MARKET_LOT_SIZE"
        ref = market_price if is_market else price
        if qty is not None and ref is not None:
            notional = qty * ref
            if notional < self.min_notional or (not is_market and self.max_notional and notional > self.max_notional):
                return "NOTIONAL"
        if price is not None and avg_price is not None and not is_market and self.bid_up:
            up, down = (self.bid_up, self.bid_down) if side == "BUY" else (self.ask_up, self.ask_down)
            if price > avg_price * up or price < avg_price * down:
                return "PERCENT_PRICE_BY_SIDE"
        return None


@dataclass(frozen=True)
class Fill:
    """One trade of an order (Binance ``fills[]`` of a FULL order response, or a ``myTrades`` row).

    Attributes:
        trade_id: the venue's trade id (per symbol, increasing).
        price: quote per base; qty: base asset; commission: in ``commission_asset``.
        time_ms: epoch ms (0 when the response omits it).
        order_id: the venue's order id (-1 when the row does not say: a ``fills[]`` element).
        symbol: "" when the row does not say; is_buyer: None when it does not say.
        quote_qty: ``price x qty`` in the quote asset (``quoteQty``; computed when absent).
    """

    trade_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int = 0
    is_maker: bool = False
    order_id: int = -1
    symbol: str = ""
    is_buyer: bool | None = None
    quote_qty: Decimal | None = None

    @property
    def quote(self) -> Decimal:
        """Quote amount traded (``quoteQty``, else ``price x qty``)."""
        return self.quote_qty if self.quote_qty is not None else self.price * self.qty

    @classmethod
    def from_binance(cls, doc: dict[str, Any], *, order_id: int = -1, symbol: str = "", is_buyer: bool | None = None) -> Fill:
        """From a ``fills[]`` element (pass its order's id, symbol and side) or a ``myTrades`` row."""
        buyer = doc.get("isBuyer")
        return cls(
            trade_id=int(doc.get("tradeId", doc.get("id", -1))),
            price=Decimal(doc["price"]),
            qty=Decimal(doc["qty"]),
            commission=Decimal(doc.get("commission", "0")),
            commission_asset=str(doc.get("commissionAsset", "")),
            time_ms=int(doc.get("time", 0)),
            is_maker=bool(doc.get("isMaker", False)),
            order_id=int(doc.get("orderId", order_id)),
            symbol=str(doc.get("symbol", symbol)),
            is_buyer=bool(buyer) if buyer is not None else is_buyer,
            quote_qty=Decimal(doc["quoteQty"]) if "quoteQty" in doc else None,
        )


@dataclass(frozen=True)
class Order:
    """An order as the exchange reports it (``POST``/``GET``/``DELETE /api/v3/order``).

    Attributes:
        symbol, side (BUY | SELL), type (LIMIT, MARKET, ...), status (NEW, PARTIALLY_FILLED,
        FILLED, CANCELED, EXPIRED, REJECTED; ``UNKNOWN`` only client-side, never from the exchange).
        order_id: exchange id (-1 if not known); client_order_id: our id.
        price, stop_price: quote asset (0 when not applicable); orig_qty, executed_qty: base asset;
        cum_quote: quote asset spent/received so far.
        time_ms, update_ms: epoch ms; order_list_id: OCO id or -1; fills: from a FULL response.
    """

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    status: str
    price: Decimal = Decimal(0)
    stop_price: Decimal = Decimal(0)
    orig_qty: Decimal = Decimal(0)
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    time_in_force: str = ""
    time_ms: int = 0
    update_ms: int = 0
    order_list_id: int = -1
    fills: tuple[Fill, ...] = field(default_factory=tuple)

    @property
    def is_open(self) -> bool:
        """NEW or PARTIALLY_FILLED (:data:`OPEN_STATUSES`)."""
        return self.status in OPEN_STATUSES

    @property
    def avg_price(self) -> Decimal:
        """Average fill price (quote per base), 0 before any fill."""
        return self.cum_quote / self.executed_qty if self.executed_qty else Decimal(0)

    @classmethod
    def from_binance(cls, doc: dict[str, Any], side: str = "", type_: str = "") -> Order:
        """From an order response (ACK/RESULT/FULL), a query or a cancel answer."""
        symbol, order_id, sd = str(doc["symbol"]), int(doc.get("orderId", -1)), str(doc.get("side", side))
        return cls(
            symbol=symbol,
            order_id=order_id,
            client_order_id=str(doc.get("origClientOrderId") or doc.get("clientOrderId", "")),
            side=sd,
            type=str(doc.get("type", type_)),
            status=str(doc.get("status", "NEW")),
            price=Decimal(doc.get("price", "0")),
            stop_price=Decimal(doc.get("stopPrice", "0")),
            orig_qty=Decimal(doc.get("origQty", "0")),
            executed_qty=Decimal(doc.get("executedQty", "0")),
            cum_quote=Decimal(doc.get("cummulativeQuoteQty", "0")),
            time_in_force=str(doc.get("timeInForce", "")),
            time_ms=int(doc.get("time", doc.get("transactTime", 0))),
            update_ms=int(doc.get("updateTime", doc.get("transactTime", 0))),
            order_list_id=int(doc.get("orderListId", -1)),
            fills=tuple(Fill.from_binance(f, order_id=order_id, symbol=symbol, is_buyer=sd == "BUY" if sd else None)
                        for f in doc.get("fills", ())),
        )


@dataclass(frozen=True)
class Balance:
    """One asset of an account: ``free`` and ``locked`` (in open orders), in that asset."""

    asset: str
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked
