"""Brokers: the only part of ``trader trade`` that differs between backtest, paper and live.

- :class:`SimBroker` (backtest): the replay venue's own matching engine
  (:class:`~trader.replay.matching.MatchingEngine`), in process, over the store's klines along the
  same intrabar path, with the venue's spread, impact, volume share and fees (``replay.spread_bps``,
  ``replay.matching``) — bar-level fills by the very rules the replay exchange applies;
- :class:`VenueBroker` (paper against the replay exchange, or live on Binance): the signed
  :class:`~trader.exchange.trading.TradingClient` (journal, exactly-once placement).

Both take the same :class:`~trader.exchange.trading.OrderIntent` (deterministic client order ids)
and return the same :class:`~trader.models.Order`, so the engine cannot tell them apart.
"""

from __future__ import annotations

import bisect
import itertools
from decimal import Decimal
from typing import Any, Protocol

import numpy as np

from trader.config import MatchingReplayConfig
from trader.exchange.trading import OrderIntent, TradingClient, client_order_id, prepare_order
from trader.models import OPEN_TIME, Balance, Fill, Order, SymbolRules, interval_ms
from trader.replay.dataset import decimals_table
from trader.replay.matching import Account, MatchingConfig, MatchingEngine, OrderRequest, Rejected
from trader.replay.trading import SeriesMarket

__all__ = ["BlockSeries", "Broker", "LocalBroker", "SimBroker", "VenueBroker"]


class Broker(Protocol):
    """What the engine needs from a venue (every method may raise the client's errors)."""

    mode: str

    async def submit(self, intent: OrderIntent) -> Order: ...
    async def submit_oco(self, strategy: str, symbol: str, signal_ms: int, qty: Decimal, take_profit: Decimal, stop: Decimal, leg: str) -> list[Order]: ...
    async def query(self, symbol: str, cid: str) -> Order | None: ...
    async def cancel(self, symbol: str, cid: str) -> Order | None: ...
    async def open_orders(self) -> list[Order]: ...
    async def balances(self, assets: list[str] | None = None) -> dict[str, Balance]: ...
    async def rules(self, symbol: str) -> SymbolRules: ...
    async def price(self, symbol: str) -> Decimal: ...
    async def now_ms(self) -> int: ...
    async def fills(self, symbol: str, order_id: int) -> list[Fill]: ...


class _Data:
    def __init__(self, open_list: list[int]) -> None:
        self.open_list = open_list


class BlockSeries:
    """A store kline block ``(11, n)`` seen as the replay's Series (what :mod:`trader.replay.market` reads)."""

    def __init__(self, symbol: str, interval: str, block: np.ndarray) -> None:
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = interval_ms(interval)
        self.values = np.ascontiguousarray(block)
        self.open_time_ms = self.values[OPEN_TIME].astype(np.int64)
        self.data = _Data(self.open_time_ms.tolist())
        self.trades_cumsum = np.cumsum(self.values[8]).astype(np.int64)
        self.base = None
        self._dec = decimals_table(self.values)

    def visible(self, now_ms: int) -> int:
        return bisect.bisect_right(self.data.open_list, now_ms)

    def decimals(self, upto: int) -> tuple[int, int]:
        i = min(max(int(upto), 0), len(self._dec[0]) - 1)
        return self._dec[0][i], self._dec[1][i]

    def __len__(self) -> int:
        return int(self.values.shape[1])


class SimBroker:
    """Backtest broker: the replay venue's matching engine in process, on the backtest's clock.

    Args:
        blocks: symbol -> base-interval kline block from the store.
        interval: the blocks' interval (the finest stored, e.g. ``"1h"``).
        balances: starting balances (asset -> amount).
        spread_bps, matching: the venue's book and fill rules (``replay.spread_bps``, ``replay.matching``).
    """

    mode = "backtest"

    def __init__(self, blocks: dict[str, np.ndarray], interval: str, balances: dict[str, Decimal], spread_bps: float,
                 matching: MatchingReplayConfig) -> None:
        series = {s: BlockSeries(s, interval, b) for s, b in blocks.items()}
        self.market = SeriesMarket(None, spread_bps, series_for=series.__getitem__)
        cfg = MatchingConfig(maker_fee=Decimal(repr(matching.maker_fee)), taker_fee=Decimal(repr(matching.taker_fee)),
                             fill_on_touch=matching.fill_on_touch, max_volume_share=matching.max_volume_share, impact_bps=matching.impact_bps)
        self.engine = MatchingEngine(self.market, cfg, listening=lambda a: False)
        self.account = self.engine.add_account(Account("backtest-account", dict(balances), secret=b"-"))
        self.t_ms = 0
        self._by_order: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._indexed = 0

    def set_time(self, t_ms: int) -> None:
        """Move the backtest clock (fills happen along the path up to it)."""
        self.t_ms = t_ms
        self.engine.advance(t_ms)

    async def now_ms(self) -> int:
        return self.t_ms

    async def rules(self, symbol: str) -> SymbolRules:
        return self.market.rules(symbol, self.t_ms)

    async def price(self, symbol: str) -> Decimal:
        """The book's mid, as :meth:`VenueBroker.price` reads it from ``bookTicker``."""
        bid, ask = self.market.book(symbol, self.market.price(symbol, self.t_ms), self.t_ms)
        return (bid + ask) / 2

    def _order(self, o: Any) -> Order:
        doc = o.response("FULL", self.t_ms)
        doc.update(time=o.time_ms, updateTime=o.update_ms, stopPrice=f"{o.stop_price:.8f}")
        return Order.from_binance(doc)

    async def submit(self, intent: OrderIntent) -> Order:
        from trader.errors import OrderRejected

        found = self.engine.find(self.account, intent.symbol, None, intent.client_order_id)
        if found is not None:  # the same intent twice: the same order (as the client's journal does)
            return self._order(found)
        rules = self.market.rules(intent.symbol, self.t_ms)
        avg = self.market.avg_price(intent.symbol, self.t_ms)
        params = dict(prepare_order(intent, rules, avg if intent.type == "MARKET" else None, avg))
        req = OrderRequest(
            symbol=intent.symbol, side=intent.side, type=intent.type,
            quantity=Decimal(params["quantity"]) if "quantity" in params else None,
            quote_order_qty=Decimal(params["quoteOrderQty"]) if "quoteOrderQty" in params else None,
            price=Decimal(params["price"]) if "price" in params else None,
            stop_price=Decimal(params["stopPrice"]) if "stopPrice" in params else None,
            time_in_force=params.get("timeInForce"), client_order_id=intent.client_order_id,
        )
        try:
            o = self.engine.place(self.account, req, self.t_ms)
        except Rejected as exc:
            raise OrderRejected(f"{exc.msg} (code {exc.code}, simulated)", code=exc.code, status=exc.status) from None
        assert o is not None
        return self._order(o)

    async def submit_oco(self, strategy: str, symbol: str, signal_ms: int, qty: Decimal, take_profit: Decimal, stop: Decimal, leg: str) -> list[Order]:
        from trader.errors import OrderRejected

        ids = {k: client_order_id(strategy, symbol, signal_ms, f"{leg}{k}") for k in ("", "a", "b")}
        found = self.engine.find(self.account, symbol, None, ids["a"])
        if found is not None and found.list_ is not None:
            return [self._order(x) for x in found.list_.legs]
        above = OrderRequest(symbol, "SELL", "LIMIT_MAKER", qty, price=take_profit, client_order_id=ids["a"])
        below = OrderRequest(symbol, "SELL", "STOP_LOSS", qty, stop_price=stop, client_order_id=ids["b"])
        try:
            olist = self.engine.place_oco(self.account, symbol, "SELL", qty, above, below, ids[""], self.t_ms)
        except Rejected as exc:
            raise OrderRejected(f"{exc.msg} (code {exc.code}, simulated)", code=exc.code, status=exc.status) from None
        return [self._order(x) for x in olist.legs]

    async def query(self, symbol: str, cid: str) -> Order | None:
        o = self.engine.find(self.account, symbol, None, cid)
        return None if o is None else self._order(o)

    async def cancel(self, symbol: str, cid: str) -> Order | None:
        o = self.engine.find(self.account, symbol, None, cid)
        if o is None or not o.is_open:
            return None
        self.engine.cancel(self.account, symbol, o.order_id, None, self.t_ms)
        return self._order(o)

    async def open_orders(self) -> list[Order]:
        return [self._order(o) for o in self.account.open.values()]

    async def balances(self, assets: list[str] | None = None) -> dict[str, Balance]:
        bal = self.account.balances
        names = bal if assets is None else [a for a in assets if a in bal]
        return {a: Balance(a, bal[a][0], bal[a][1]) for a in names if bal[a][0] or bal[a][1]}

    async def fills(self, symbol: str, order_id: int) -> list[Fill]:
        trades = self.account.trades
        for t in trades[self._indexed:]:
            self._by_order.setdefault((t["symbol"], t["orderId"]), []).append(t)
        self._indexed = len(trades)
        return [Fill.from_binance(t) for t in self._by_order.get((symbol, order_id), [])]

    def fees_paid(self) -> dict[str, Decimal]:
        """Commission paid per asset."""
        out: dict[str, Decimal] = {}
        for t in self.account.trades:
            out[t["commissionAsset"]] = out.get(t["commissionAsset"], Decimal(0)) + Decimal(t["commission"])
        return out


class VenueBroker:
    """Paper (the replay exchange) or live (Binance): the signed client, exactly once."""

    def __init__(self, client: TradingClient, mode: str = "paper") -> None:
        self.client = client
        self.mode = mode

    async def now_ms(self) -> int:
        return await self.client.sync_time()

    async def rules(self, symbol: str) -> SymbolRules:
        return await self.client.rules(symbol)

    async def price(self, symbol: str) -> Decimal:
        bid, ask = await self.client.book(symbol)
        return (bid + ask) / 2

    async def submit(self, intent: OrderIntent) -> Order:
        return await self.client.submit(intent)

    async def submit_oco(self, strategy: str, symbol: str, signal_ms: int, qty: Decimal, take_profit: Decimal, stop: Decimal, leg: str) -> list[Order]:
        return await self.client.submit_oco(strategy, symbol, signal_ms, "SELL", qty, {"type": "LIMIT_MAKER", "price": take_profit},
                                            {"type": "STOP_LOSS", "stop_price": stop}, leg=leg)

    async def query(self, symbol: str, cid: str) -> Order | None:
        return await self.client.query_order(symbol, client_order_id=cid)

    async def cancel(self, symbol: str, cid: str) -> Order | None:
        return await self.client.cancel_order(symbol, client_order_id=cid)

    async def open_orders(self) -> list[Order]:
        return await self.client.open_orders()

    async def balances(self, assets: list[str] | None = None) -> dict[str, Balance]:
        return await self.client.account()

    async def fills(self, symbol: str, order_id: int) -> list[Fill]:
        return await self.client.my_trades(symbol, order_id=order_id)


class LocalBroker(SimBroker):
    """Paper trading on real-time market data *without keys*: the venue's matching rules run here,
    on the klines the store has (warmed at every decision), with the simulated account persisted in
    the ledger so that positions survive restarts.

    Orders placed at a decision fill along the path of the klines that close *after* it (known at
    the next decision), never along prices the market did not trade; a MARKET order fills at once at
    the book around the last close. Use it with ``--profile binance-spot`` and no keys: real prices,
    no account needed.

    Args:
        load: ``load(symbol) -> (11, n)`` base-interval block of the store.
        symbols: the universe; interval: the base interval; state: a :meth:`dump` to resume from.
    """

    mode = "paper-local"

    def __init__(self, load: Any, symbols: list[str], interval: str, balances: dict[str, Decimal], spread_bps: float,
                 matching: MatchingReplayConfig, state: bytes | None = None) -> None:
        self._load = load
        self._symbols = symbols
        super().__init__({s: load(s) for s in symbols}, interval, balances, spread_bps, matching)
        self._spread = spread_bps
        self._interval = interval
        if state is not None:
            import pickle

            saved = pickle.loads(state)  # our own ledger's bytes, written by dump()
            eng = saved["engine"]
            for name in ("_order_ids", "_trade_ids"):
                eng[name] = {k: itertools.count(v) for k, v in eng[name].items()}
            for name in ("_list_ids", "_seq"):
                eng[name] = itertools.count(eng[name])
            self.engine.__dict__.update(eng)
            self.account = self.engine.accounts["backtest-account"]
            self.t_ms = saved["t_ms"]

    def refresh(self, t_ms: int) -> None:
        """Reload the store's klines (after a warm) and run the resting orders along them up to ``t_ms``."""
        series = {s: BlockSeries(s, self._interval, self._load(s)) for s in self._symbols}
        self.market = SeriesMarket(None, self._spread, series_for=series.__getitem__)
        self.engine.market = self.market
        self.set_time(t_ms)

    def dump(self) -> bytes:
        """The simulated account and its orders (what :class:`LocalBroker` resumes from)."""
        import pickle

        keep = {k: v for k, v in self.engine.__dict__.items() if k not in ("market", "emit", "listening", "cfg")}
        for name in ("_order_ids", "_trade_ids"):  # counters as their next value (itertools.count does not pickle everywhere)
            keep[name] = {k: _next_of(c) for k, c in keep[name].items()}
        for name in ("_list_ids", "_seq"):
            keep[name] = _next_of(keep[name])
        return pickle.dumps({"engine": keep, "t_ms": self.t_ms})


def _next_of(counter: Any) -> int:
    """The value an ``itertools.count`` would give next (from its repr: ``count(7)``)."""
    return int(repr(counter)[len("count(") : -1])
