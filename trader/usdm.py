"""Binance USD-M perpetual futures: contract rules, leverage brackets and the margin formulas.

Pure (no I/O beyond reading the shipped reference files): shared by the replay venue, which enforces
them, and the client, which checks orders and shows liquidation prices with them. Money is
:class:`~decimal.Decimal` in USDT; quantities in contracts of the base asset (1 contract = 1 BTC).

Formulas (Binance "USDⓈ-M Futures" FAQ: "Leverage and Margin of USDⓈ-M Futures", "How to Calculate
Liquidation Price of USDⓈ-M Contracts"), one-way mode, ``side`` = +1 long / -1 short, ``q`` = |position
amount|, ``ep`` = entry price, ``mmr`` / ``cum`` = the maintenance margin rate and amount of the
bracket the position's notional falls in:

- initial margin = notional / leverage;
- maintenance margin = notional x mmr - cum;
- unrealised PnL = side x q x (mark - ep);
- liquidation price (isolated: ``wb`` = the isolated wallet; cross: ``wb`` = the cross wallet balance,
  ``other_mm`` and ``other_upnl`` = the other cross positions' maintenance margin and unrealised PnL)::

      LP = (wb - other_mm + other_upnl + cum - side x q x ep) / (q x mmr - side x q)

- bankruptcy price (margin balance 0): ``ep - side x wb / q``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import cache
from pathlib import Path
from typing import Any

from trader.errors import ConfigError

__all__ = [
    "Bracket",
    "ContractRules",
    "bankruptcy_price",
    "bracket_for",
    "brackets_from_doc",
    "bundled_brackets",
    "bundled_exchange_info",
    "liquidation_price",
    "maintenance_margin",
]

DATA_DIR = Path(__file__).resolve().parent / "data" / "usdm"
EXCHANGE_INFO_FILE = DATA_DIR / "exchangeInfo_2025-03-06.json"
BRACKETS_FILE = DATA_DIR / "leverageBracket.json"


@dataclass(frozen=True)
class Bracket:
    """One leverage / margin tier (``GET /fapi/v1/leverageBracket`` ``brackets[]``).

    Attributes:
        bracket: tier number (1 = the smallest notionals).
        initial_leverage: the highest leverage allowed in this tier.
        floor, cap: notional bounds, USDT (``floor < notional <= cap``).
        mmr: maintenance margin rate, fraction (0.004 = 0.40 %).
        cum: maintenance amount, USDT.
    """

    bracket: int
    initial_leverage: int
    floor: Decimal
    cap: Decimal
    mmr: Decimal
    cum: Decimal

    def doc(self) -> dict[str, Any]:
        """Binance's JSON object for the tier (numbers, not strings, as Binance sends them)."""
        return {"bracket": self.bracket, "initialLeverage": self.initial_leverage, "notionalCap": int(self.cap),
                "notionalFloor": int(self.floor), "maintMarginRatio": float(self.mmr), "cum": float(self.cum)}


def brackets_from_doc(doc: Any) -> dict[str, tuple[Bracket, ...]]:
    """Parse a ``leverageBracket`` response (a list of ``{"symbol", "brackets": [...]}``).

    Raises:
        ConfigError: not that shape, or a tier's numbers are missing or inconsistent.
    """
    if not isinstance(doc, list):
        raise ConfigError("leverage brackets: expected a list of {symbol, brackets} objects (GET /fapi/v1/leverageBracket)")
    out: dict[str, tuple[Bracket, ...]] = {}
    for item in doc:
        try:
            tiers = tuple(sorted((Bracket(int(b["bracket"]), int(b["initialLeverage"]), Decimal(str(b["notionalFloor"])),
                                          Decimal(str(b["notionalCap"])), Decimal(str(b["maintMarginRatio"])), Decimal(str(b["cum"])))
                                  for b in item["brackets"]), key=lambda b: b.floor))
            symbol = str(item["symbol"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ConfigError(f"leverage brackets: malformed entry {str(item)[:80]}: {exc}") from None
        if not tiers or any(b.cap <= b.floor or not 0 < b.mmr < 1 or b.initial_leverage < 1 for b in tiers):
            raise ConfigError(f"leverage brackets: {symbol}: tiers must have floor < cap, 0 < maintMarginRatio < 1, leverage >= 1")
        out[symbol] = tiers
    return out


@cache
def bundled_brackets() -> dict[str, tuple[Bracket, ...]]:
    """The shipped tiers (``trader/data/usdm/leverageBracket.json``; sources in its README)."""
    return brackets_from_doc(json.loads(BRACKETS_FILE.read_text()))


@cache
def bundled_exchange_info() -> dict[str, Any]:
    """The shipped real ``/fapi/v1/exchangeInfo`` (Binance mainnet, 2025-03-06), parsed."""
    doc: dict[str, Any] = json.loads(EXCHANGE_INFO_FILE.read_text())
    return doc


def bracket_for(tiers: tuple[Bracket, ...], notional: Decimal) -> Bracket:
    """The tier ``notional`` (USDT, >= 0) falls in; the last tier beyond the table."""
    for b in tiers:
        if notional <= b.cap:
            return b
    return tiers[-1]


def maintenance_margin(tiers: tuple[Bracket, ...], notional: Decimal) -> Decimal:
    """``notional x mmr - cum`` of the tier ``notional`` falls in, USDT."""
    b = bracket_for(tiers, notional)
    return notional * b.mmr - b.cum


def liquidation_price(side: int, q: Decimal, ep: Decimal, wb: Decimal, mmr: Decimal, cum: Decimal,
                      other_mm: Decimal = Decimal(0), other_upnl: Decimal = Decimal(0)) -> Decimal:
    """Binance's liquidation price of a one-way position (module docstring); 0 when it cannot be
    liquidated (a long whose margin covers its whole notional) — as ``positionRisk`` reports.

    Args:
        side: +1 long, -1 short. q: |amount| (> 0). ep: entry price. wb: wallet balance backing it
        (isolated wallet, or cross wallet). mmr, cum: its bracket. other_mm, other_upnl: the other
        cross positions (0 when isolated).
    """
    s = Decimal(side)
    lp = (wb - other_mm + other_upnl + cum - s * q * ep) / (q * mmr - s * q)
    return lp if lp > 0 else Decimal(0)


def bankruptcy_price(side: int, q: Decimal, ep: Decimal, wb: Decimal) -> Decimal:
    """The price at which the position's margin balance is 0: ``ep - side x wb / q`` (>= 0)."""
    bp = ep - Decimal(side) * wb / q
    return bp if bp > 0 else Decimal(0)


@dataclass(frozen=True)
class ContractRules:
    """One contract's trading rules from the futures ``exchangeInfo`` (Binance USD-M "Exchange
    Information": PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MAX_NUM_ORDERS, MAX_NUM_ALGO_ORDERS,
    MIN_NOTIONAL, PERCENT_PRICE; ``pricePrecision``, ``quantityPrecision``, ``liquidationFee``).

    Attributes:
        tick, min_price, max_price: PRICE_FILTER (USDT).
        step, min_qty, max_qty: LOT_SIZE (contracts); market_step, market_max_qty: MARKET_LOT_SIZE.
        min_notional: MIN_NOTIONAL ``notional`` (USDT; reduce-only orders are exempt).
        mult_up, mult_down: PERCENT_PRICE multipliers of the mark price.
        price_precision, quantity_precision: the most decimals a price / quantity may have (-1111).
        liquidation_fee: fraction of the notional charged on liquidation (insurance clearance).
        max_orders, max_algo_orders: open orders per symbol (all / conditional).
        order_types, time_in_force: what the contract accepts.
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
    market_step: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    mult_up: Decimal
    mult_down: Decimal
    price_precision: int
    quantity_precision: int
    liquidation_fee: Decimal
    max_orders: int
    max_algo_orders: int
    order_types: tuple[str, ...]
    time_in_force: tuple[str, ...]

    @classmethod
    def from_symbol_info(cls, doc: dict[str, Any]) -> ContractRules:
        """Build from one futures ``exchangeInfo`` ``symbols[]`` object.

        Raises:
            ConfigError: a filter is missing or not a decimal.
        """
        f = {x["filterType"]: x for x in doc.get("filters", [])}
        try:
            return cls(
                symbol=doc["symbol"], base=doc["baseAsset"], quote=doc["quoteAsset"],
                tick=Decimal(f["PRICE_FILTER"]["tickSize"]), min_price=Decimal(f["PRICE_FILTER"]["minPrice"]),
                max_price=Decimal(f["PRICE_FILTER"]["maxPrice"]),
                step=Decimal(f["LOT_SIZE"]["stepSize"]), min_qty=Decimal(f["LOT_SIZE"]["minQty"]), max_qty=Decimal(f["LOT_SIZE"]["maxQty"]),
                market_step=Decimal(f["MARKET_LOT_SIZE"]["stepSize"]), market_max_qty=Decimal(f["MARKET_LOT_SIZE"]["maxQty"]),
                min_notional=Decimal(f["MIN_NOTIONAL"]["notional"]),
                mult_up=Decimal(f["PERCENT_PRICE"]["multiplierUp"]), mult_down=Decimal(f["PERCENT_PRICE"]["multiplierDown"]),
                price_precision=int(doc["pricePrecision"]), quantity_precision=int(doc["quantityPrecision"]),
                liquidation_fee=Decimal(doc.get("liquidationFee", "0")),
                max_orders=int(f.get("MAX_NUM_ORDERS", {}).get("limit", 200)),
                max_algo_orders=int(f.get("MAX_NUM_ALGO_ORDERS", {}).get("limit", 10)),
                order_types=tuple(doc.get("orderTypes", ())), time_in_force=tuple(doc.get("timeInForce", ())),
            )
        except (KeyError, ArithmeticError, ValueError) as exc:
            raise ConfigError(f"futures exchangeInfo: {doc.get('symbol', '?')}: bad or missing filter: {exc}") from None

    def round_price(self, p: Decimal, up: bool) -> Decimal:
        """``p`` on the tick grid, rounded up or down."""
        return (p / self.tick).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR) * self.tick

    def check(self, *, qty: Decimal | None, price: Decimal | None, stop: Decimal | None, market: bool,
              mark: Decimal, reduce_only: bool) -> tuple[int, str] | None:
        """The first rule an order breaks, as Binance's ``(code, msg)``; None when it passes.

        ``mark`` is the mark price (USDT) the notional and PERCENT_PRICE are checked against for
        market orders; limit orders use their price.
        """
        for _name, v, prec in (("price", price, self.price_precision), ("stopPrice", stop, self.price_precision),
                              ("quantity", qty, self.quantity_precision)):
            if v is not None and v != 0 and -v.normalize().as_tuple().exponent > prec:  # type: ignore[operator]
                return -1111, "Precision is over the maximum defined for this asset."
        for v in (price, stop):
            if v is not None and v != 0:
                if v < self.min_price or v > self.max_price:
                    return -4013 if v < self.min_price else -4016, f"Price {'less than min' if v < self.min_price else 'greater than max'} price."
                if (v - self.min_price) % self.tick:
                    return -4014, "Price not increased by tick size."
        if qty is not None:
            step, top = (self.market_step, self.market_max_qty) if market else (self.step, self.max_qty)
            if qty < self.min_qty:
                return -4003, "Quantity less than or equal to zero." if qty <= 0 else "Quantity less than min qty."
            if qty > top:
                return -4005, "Quantity greater than max quantity."
            if (qty - self.min_qty) % step:
                return -4023, "Quantity not increased by step size."
            ref = mark if market or price is None or price == 0 else price
            if not reduce_only and qty * ref < self.min_notional:
                return -4164, f"Order's notional must be no smaller than {self.min_notional.normalize():f} (unless you choose reduce only)."
        if price is not None and price != 0 and not market:
            if price > mark * self.mult_up:
                return -4024, f"Limit price can't be higher than {self.round_price(mark * self.mult_up, False).normalize():f}."
            if price < mark * self.mult_down:
                return -4025, f"Limit price can't be lower than {self.round_price(mark * self.mult_down, True).normalize():f}."
        return None
