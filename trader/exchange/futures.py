"""Signed USD-M futures client: orders exactly once, leverage and margin type, positions and account.

:class:`FuturesClient` is :class:`~trader.exchange.trading.TradingClient` on the ``usdm`` rows of the
endpoint table (:mod:`trader.exchange.endpoints`): the same signing, the same journal and the same
exactly-once rules — an intent is written before it is sent, a timeout or 5xx leaves it UNKNOWN and it
is looked up by ``origClientOrderId`` (never resent blindly), a duplicate client id (-4116) is
answered by a look-up. Orders are checked locally against the futures ``exchangeInfo``
(:class:`trader.usdm.ContractRules`: precision, tick, step, MIN_NOTIONAL, PERCENT_PRICE against the
mark price) before anything is sent. Leverage and margin type are set idempotently (read first, only
changed when different) before the first order of a symbol. Money is Decimal USDT.

Sources: Binance USD-M Futures REST API ("New Order (TRADE)", "Query Order", "Change Initial Leverage",
"Change Margin Type", "Position Information V2", "Account Information V3", "Mark Price").
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from trader.errors import ExchangeError, OrderRejected
from trader.exchange.trading import OrderIntent, TradingClient, _fmt
from trader.models import Fill, Order
from trader.usdm import ContractRules

__all__ = ["FuturesAccount", "FuturesClient", "FuturesIntent", "Position", "prepare_futures_order"]


@dataclass(frozen=True)
class FuturesIntent(OrderIntent):
    """An :class:`~trader.exchange.trading.OrderIntent` for USD-M: ``type`` one of LIMIT, MARKET, STOP,
    STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET; ``reduce_only`` never opens or grows a position;
    ``close_position`` (STOP_MARKET / TAKE_PROFIT_MARKET, no quantity) closes whatever is held when it
    triggers; ``working_type`` MARK_PRICE | CONTRACT_PRICE. ``resp_type`` ACK | RESULT."""

    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    resp_type: str = "RESULT"


@dataclass(frozen=True)
class Position:
    """One USD-M position (``positionRisk`` v2), one-way mode.

    Attributes:
        amount: contracts, > 0 long, < 0 short. entry_price, mark_price, liquidation_price: USDT
        (liquidation 0 = none). unrealized_pnl, notional, isolated_wallet: USDT. leverage: x.
        margin_type: "cross" | "isolated". update_ms: epoch ms.
    """

    symbol: str
    amount: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    liquidation_price: Decimal
    leverage: int
    margin_type: str
    isolated_wallet: Decimal
    notional: Decimal
    update_ms: int

    @classmethod
    def from_binance(cls, d: dict[str, Any]) -> Position:
        return cls(symbol=d["symbol"], amount=Decimal(d["positionAmt"]), entry_price=Decimal(d["entryPrice"]),
                   mark_price=Decimal(d["markPrice"]), unrealized_pnl=Decimal(d["unRealizedProfit"]),
                   liquidation_price=Decimal(d["liquidationPrice"]), leverage=int(d.get("leverage", 0)),
                   margin_type=str(d.get("marginType", "cross")), isolated_wallet=Decimal(d.get("isolatedWallet", "0")),
                   notional=Decimal(d.get("notional", "0")), update_ms=int(d.get("updateTime", 0)))


@dataclass(frozen=True)
class FuturesAccount:
    """The USD-M account (``account`` v3), USDT: wallet, unrealised PnL, margin balance (wallet +
    unrealised), available balance, maintenance and initial margin."""

    wallet: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    available: Decimal
    maint_margin: Decimal
    initial_margin: Decimal

    @classmethod
    def from_binance(cls, d: dict[str, Any]) -> FuturesAccount:
        return cls(wallet=Decimal(d["totalWalletBalance"]), unrealized_pnl=Decimal(d["totalUnrealizedProfit"]),
                   margin_balance=Decimal(d["totalMarginBalance"]), available=Decimal(d["availableBalance"]),
                   maint_margin=Decimal(d["totalMaintMargin"]), initial_margin=Decimal(d["totalInitialMargin"]))


def prepare_futures_order(intent: FuturesIntent, rules: ContractRules, mark: Decimal) -> list[tuple[str, str]]:
    """The request parameters of ``intent``: prices to the nearest tick, quantity down to the step,
    then :meth:`ContractRules.check` (the venue's own rules and messages). Pure.

    Raises:
        OrderRejected: ``local=True``, with Binance's code and message for the rule it would break.
    """
    def tick(p: Decimal | None) -> Decimal | None:
        if p is None:
            return None
        return (p / rules.tick).quantize(Decimal(1), ROUND_HALF_EVEN) * rules.tick

    price, stop = tick(intent.price), tick(intent.stop_price)
    qty = None
    if intent.quantity is not None:
        step = rules.market_step if intent.type.endswith("MARKET") else rules.step
        qty = (intent.quantity / step).to_integral_value(ROUND_DOWN) * step
    if not intent.close_position:
        bad = rules.check(qty=qty, price=price if intent.type in ("LIMIT", "STOP", "TAKE_PROFIT") else None, stop=stop,
                          market=intent.type.endswith("MARKET"), mark=mark, reduce_only=intent.reduce_only)
        if bad is not None:
            raise OrderRejected(f"{intent.symbol} {intent.side} {intent.type} qty={qty} price={price} stop={stop}: {bad[1]} "
                                f"({bad[0]}; checked before sending; nothing was sent)", code=bad[0], local=True)
    tif = intent.time_in_force or ("GTC" if intent.type in ("LIMIT", "STOP", "TAKE_PROFIT") else None)
    fields: list[tuple[str, Any]] = [
        ("symbol", intent.symbol), ("side", intent.side), ("type", intent.type), ("timeInForce", tif),
        ("quantity", _fmt(qty)), ("price", _fmt(price)), ("stopPrice", _fmt(stop)),
        ("reduceOnly", "true" if intent.reduce_only else None), ("closePosition", "true" if intent.close_position else None),
        ("workingType", intent.working_type if intent.type not in ("LIMIT", "MARKET") else None),
        ("newClientOrderId", intent.client_order_id), ("newOrderRespType", intent.resp_type),
    ]
    return [(k, str(v)) for k, v in fields if v is not None]


def _order(doc: dict[str, Any]) -> Order:
    """A USD-M order document as :class:`~trader.models.Order` (``cumQuote`` is spot's cummulativeQuoteQty)."""
    return Order.from_binance({**doc, "cummulativeQuoteQty": doc.get("cumQuote", "0")})


class FuturesClient(TradingClient):
    """USD-M orders, positions and account over signed REST (module docstring). ``rest`` must be a
    :class:`~trader.exchange.rest.BinanceClient` on a ``market: usdm`` profile; the ORDERS budget is
    USD-M's 300 per 10 s unless told otherwise."""

    def __init__(self, rest: Any, credentials: Any, journal: Any = None, **kw: Any) -> None:
        kw.setdefault("order_limit_10s", 300)
        super().__init__(rest, credentials, journal, **kw)
        if rest.market != "usdm":
            from trader.errors import ConfigError

            raise ConfigError(f"FuturesClient needs a usdm profile (market: usdm), got market {rest.market!r}")
        self._contracts: dict[str, ContractRules] = {}
        self._settings: dict[str, tuple[int | None, str | None]] = {}

    async def contract(self, symbol: str) -> ContractRules:
        """The contract's rules from ``/fapi/v1/exchangeInfo`` (every symbol cached at once; weight 1)."""
        if symbol not in self._contracts:
            info = orjson.loads(await self.rest.request("exchangeInfo", {}))
            for doc in info.get("symbols", []):
                if doc.get("contractType") == "PERPETUAL" or doc.get("contractType") is None:
                    self._contracts[doc["symbol"]] = ContractRules.from_symbol_info(doc)
        if symbol not in self._contracts:
            raise OrderRejected(f"{symbol}: not a USD-M perpetual of this exchange", code=-1121, local=True)
        return self._contracts[symbol]

    async def mark_price(self, symbol: str) -> Decimal:
        """The mark price from ``premiumIndex`` (weight 1), USDT."""
        doc = orjson.loads(await self.rest.request("premiumIndex", {"symbol": symbol}))
        return Decimal(doc["markPrice"])

    async def ensure_leverage(self, symbol: str, leverage: int) -> None:
        """Set ``leverage`` for ``symbol`` unless it already is (read from ``positionRisk`` v2 first)."""
        if self._settings.get(symbol, (None, None))[0] == leverage:
            return
        doc, _ = await self._signed("positionRiskV2", [("symbol", symbol)])
        current = int(doc[0]["leverage"]) if doc else None
        if current != leverage:
            await self._signed("leverage", [("symbol", symbol), ("leverage", leverage)])
        self._settings[symbol] = (leverage, self._settings.get(symbol, (None, None))[1])

    async def ensure_margin_type(self, symbol: str, margin_type: str) -> None:
        """Set ``margin_type`` (ISOLATED | CROSSED); "no need to change" (-4046) is success."""
        if self._settings.get(symbol, (None, None))[1] == margin_type:
            return
        try:
            await self._signed("marginType", [("symbol", symbol), ("marginType", margin_type)])
        except ExchangeError as exc:
            if exc.code != -4046:
                raise
        self._settings[symbol] = (self._settings.get(symbol, (None, None))[0], margin_type)

    async def submit(self, intent: OrderIntent, ref_price: Decimal | None = None) -> Order:  # type: ignore[override]
        """Place a :class:`FuturesIntent` exactly once (see :meth:`TradingClient.submit`).

        Raises:
            OrderRejected: refused locally (nothing sent) or by the exchange.
            OrderStatusUnknown: its fate could not be established; it is never resent.
        """
        if not isinstance(intent, FuturesIntent):
            raise TypeError("FuturesClient.submit takes a FuturesIntent")
        found = await self._from_journal(intent)
        if found is not None:
            return found
        rules = await self.contract(intent.symbol)
        mark = ref_price if ref_price is not None else await self.mark_price(intent.symbol)
        try:
            params = prepare_futures_order(intent, rules, mark)
        except OrderRejected:
            self.stats.local_rejects += 1
            raise
        return await self._send_new("newOrder", intent.symbol, intent.client_order_id, params, 1)

    def _parse_order(self, doc: dict[str, Any]) -> Order:
        return _order(doc)

    async def query_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None) -> Order | None:
        try:
            doc, _ = await self._signed("queryOrder", [("symbol", symbol), ("orderId", order_id), ("origClientOrderId", client_order_id)])
        except ExchangeError as exc:
            if exc.code == -2013:
                return None
            raise
        return _order(doc)

    async def cancel_open_orders(self, symbol: str) -> list[Order]:
        """Cancel every open order of ``symbol`` (``allOpenOrders``); returns what was open."""
        before = await self.open_orders(symbol)
        await self._signed("cancelAll", [("symbol", symbol)])
        return before

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        doc, _ = await self._signed("openOrders", [("symbol", symbol)])
        return [_order(d) for d in doc]

    async def all_orders(self, symbol: str, *, start_ms: int | None = None, limit: int = 500) -> list[Order]:
        doc, _ = await self._signed("allOrders", [("symbol", symbol), ("startTime", start_ms), ("limit", limit)])
        return [_order(d) for d in doc]

    async def my_trades(self, symbol: str, *, order_id: int | None = None, from_id: int | None = None, limit: int = 500) -> list[Fill]:
        doc, _ = await self._signed("userTrades", [("symbol", symbol), ("orderId", order_id), ("fromId", from_id), ("limit", limit)])
        return [Fill.from_binance({**d, "isBuyer": d.get("buyer"), "isMaker": d.get("maker")}) for d in doc]

    async def positions(self, symbol: str | None = None) -> list[Position]:
        """Open positions (``positionRisk`` v2; amount != 0), typed."""
        doc, _ = await self._signed("positionRiskV2", [("symbol", symbol)])
        return [Position.from_binance(d) for d in doc if Decimal(d["positionAmt"]) != 0]

    async def futures_account(self) -> FuturesAccount:
        """The account's totals (``account`` v3), typed."""
        doc, _ = await self._signed("account", [])
        return FuturesAccount.from_binance(doc)

    async def income(self, symbol: str | None = None, income_type: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """``income`` rows (REALIZED_PNL, COMMISSION, FUNDING_FEE, ...), oldest first (weight 30)."""
        doc, _ = await self._signed("income", [("symbol", symbol), ("incomeType", income_type), ("limit", limit)])
        return list(doc)

    async def close_position(self, symbol: str, strategy: str = "manual", signal_ms: int | None = None) -> Order | None:
        """Close ``symbol``'s position with a reduce-only MARKET order (exactly once per ``signal_ms``);
        None when there is nothing to close."""
        held = await self.positions(symbol)
        if not held:
            return None
        pos = held[0]
        intent = FuturesIntent(strategy, symbol, signal_ms if signal_ms is not None else self.clock.now_ms(), "close",
                               "SELL" if pos.amount > 0 else "BUY", "MARKET", quantity=abs(pos.amount), reduce_only=True)
        return await self.submit(intent, ref_price=pos.mark_price)

    async def new_listen_key(self) -> str:
        """``POST /fapi/v1/listenKey`` (API key only): events on ``/ws/<listenKey>``."""
        body, _ = await self.rest.request_full("newListenKey", {}, headers=self._headers)
        return str(orjson.loads(body)["listenKey"])
