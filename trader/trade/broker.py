"""Brokers: the only part of ``trader trade`` that differs between backtest, paper and live.

- :class:`SimBroker` (backtest): the replay venue's own matching engine
  (:class:`~trader.replay.matching.MatchingEngine`), in process, over the store's klines along the
  same intrabar path, with the venue's spread, impact, volume share and fees (``replay.spread_bps``,
  ``replay.matching``) — bar-level fills by the very rules the replay exchange applies;
- :class:`LocalBroker` (paper without keys): the same in-process venue on the klines the store
  has, its simulated account persisted in the ledger's ``sim_*`` tables;
- :class:`VenueBroker` (paper against the replay exchange, or live on Binance): the signed
  :class:`~trader.exchange.trading.TradingClient` (journal, exactly-once placement).

All take the same :class:`~trader.exchange.trading.OrderIntent` (deterministic client order ids)
and return the same :class:`~trader.models.Order` / :class:`~trader.models.Fill` /
:class:`~trader.models.Balance`, so the engine cannot tell them apart.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol

import numpy as np

from trader.config import MatchingReplayConfig
from trader.errors import OrderRejected
from trader.exchange.trading import OrderIntent, TradingClient, client_order_id, prepare_order
from trader.models import OPEN_TIME, Balance, Fill, Order, SymbolRules, interval_ms
from trader.replay.dataset import decimals_table
from trader.replay.matching import Account, MatchingConfig, MatchingEngine, OrderRequest, Rejected, VenueOrder
from trader.replay.pathmarket import SeriesMarket

__all__ = ["BlockSeries", "Broker", "LocalBroker", "SimBroker", "VenueBroker"]


class Broker(Protocol):
    """What the engine needs from a venue (every method may raise the client's errors).

    Attributes:
        mode: backtest | paper | paper-local | live (recorded on positions).
        venue_name: identifies the venue's history (a venue reset is detected against it).
    """

    mode: str

    async def now_ms(self) -> int: ...
    async def rules(self, symbol: str) -> SymbolRules: ...
    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]: ...
    async def submit(self, intent: OrderIntent) -> Order: ...
    async def submit_oco(self, strategy: str, symbol: str, signal_ms: int, qty: Decimal, take_profit: Decimal, stop: Decimal, leg: str) -> list[Order]: ...
    async def query(self, symbol: str, cid: str) -> Order | None: ...
    async def cancel(self, symbol: str, cid: str) -> Order | None: ...
    async def open_orders(self, symbol: str | None = None) -> list[Order]: ...
    async def balances(self) -> dict[str, Balance]: ...
    async def trades(self, symbol: str, from_id: int | None = None, order_id: int | None = None, limit: int | None = None) -> list[Fill]: ...
    async def settle(self) -> dict[str, str]: ...


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
        self._mid: tuple[float, list[int], list[int]] | None = None
        self._at = -1

    def visible(self, now_ms: int) -> int:
        return bisect.bisect_right(self.data.open_list, now_ms)

    def mid_at_open(self, t_ms: int, spread_bps: float) -> Decimal | None:
        """The book's mid at the very open of a kline (``t_ms`` == its open time), exactly as
        :func:`trader.replay.market.bid_ask` quotes it around the open price; None at any other time.

        Vectorised once per series (bid / ask in ticks for every kline), then a look-up: what makes
        valuing every held asset at every step of a backtest cheap.
        """
        ol = self.data.open_list
        i = self._at + 1  # a backtest moves forward one kline at a time: try the next one first
        if not (0 <= i < len(ol) and ol[i] == t_ms):
            i = bisect.bisect_right(ol, t_ms) - 1
            if i < 0 or ol[i] != t_ms:
                return None
        self._at = i
        if self._mid is None or self._mid[0] != spread_bps:
            o = self.values[1]
            pd = np.asarray(self._dec[0], dtype=np.int64)
            tick = 10.0 ** -pd.astype(np.float64)
            half = o * spread_bps / 20_000.0
            bid = np.floor((o - half) / tick + 1e-9).astype(np.int64)
            ask = np.ceil((o + half) / tick - 1e-9).astype(np.int64)
            ask = np.where(ask <= bid, bid + 1, ask)
            self._mid = (spread_bps, (bid + ask).tolist(), pd.tolist())
        return Decimal(self._mid[1][i]).scaleb(-self._mid[2][i]) / 2

    def decimals(self, upto: int) -> tuple[int, int]:
        i = min(max(int(upto), 0), len(self._dec[0]) - 1)
        return self._dec[0][i], self._dec[1][i]

    def __len__(self) -> int:
        return int(self.values.shape[1])


def _simulated(exc: Rejected) -> OrderRejected:
    return OrderRejected(f"{exc.msg} (code {exc.code}, simulated)", code=exc.code, status=exc.status)


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
        self._interval = interval
        self._spread = spread_bps
        self.market = self._market(blocks)
        cfg = MatchingConfig(maker_fee=Decimal(repr(matching.maker_fee)), taker_fee=Decimal(repr(matching.taker_fee)),
                             fill_on_touch=matching.fill_on_touch, max_volume_share=matching.max_volume_share, impact_bps=matching.impact_bps)
        self.engine = MatchingEngine(self.market, cfg, listening=lambda a: False)
        self.account = self.engine.add_account(Account("backtest-account", dict(balances), secret=b"-"))
        self.t_ms = 0
        self._trades_seen = 0
        self._by_symbol: dict[str, list[dict[str, Any]]] = {}
        self._ids: dict[str, list[int]] = {}
        self._orders: dict[tuple[str, int], tuple[tuple[Any, ...], Order]] = {}
        self._balances: tuple[tuple[Any, ...], dict[str, Balance]] | None = None

    def _market(self, blocks: dict[str, np.ndarray]) -> SeriesMarket:
        series = {s: BlockSeries(s, self._interval, b) for s, b in blocks.items()}
        return SeriesMarket(None, self._spread, series_for=series.__getitem__)

    def set_time(self, t_ms: int) -> None:
        """Move the backtest clock (fills happen along the path up to it)."""
        self.t_ms = t_ms
        self.engine.advance(t_ms)

    async def now_ms(self) -> int:
        return self.t_ms

    async def settle(self) -> dict[str, str]:
        return {}

    async def rules(self, symbol: str) -> SymbolRules:
        return self.market.rules(symbol, self.t_ms)

    def mid(self, symbol: str) -> Decimal:
        """The book's mid now, as :meth:`VenueBroker.prices` reads it from ``bookTicker``."""
        series = self.market.series(symbol)
        fast = series.mid_at_open(self.t_ms, self._spread) if isinstance(series, BlockSeries) else None
        if fast is not None:
            return fast
        bid, ask = self.market.book(symbol, self.market.price(symbol, self.t_ms), self.t_ms)
        mid: Decimal = (bid + ask) / 2
        return mid

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        out = {}
        for s in symbols:
            try:
                out[s] = self.mid(s)
            except KeyError:  # not a market of this venue
                continue
        return out

    def _order(self, o: VenueOrder) -> Order:
        """The venue order as the client sees it (cached until it changes)."""
        key = (o.symbol, o.order_id)
        stamp = (o.status, o.executed_qty, o.update_ms, len(o.fills))
        hit = self._orders.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        doc = o.response("FULL", self.t_ms)
        doc.update(time=o.time_ms, updateTime=o.update_ms, stopPrice=f"{o.stop_price:.8f}")
        order = Order.from_binance(doc)
        self._orders[key] = (stamp, order)
        return order

    async def submit(self, intent: OrderIntent) -> Order:
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
            raise _simulated(exc) from None
        assert o is not None
        return self._order(o)

    async def submit_oco(self, strategy: str, symbol: str, signal_ms: int, qty: Decimal, take_profit: Decimal, stop: Decimal, leg: str) -> list[Order]:
        ids = {k: client_order_id(strategy, symbol, signal_ms, f"{leg}{k}") for k in ("", "a", "b")}
        found = self.engine.find(self.account, symbol, None, ids["a"])
        if found is not None and found.list_ is not None:
            return [self._order(x) for x in found.list_.legs]
        above = OrderRequest(symbol, "SELL", "LIMIT_MAKER", qty, price=take_profit, client_order_id=ids["a"])
        below = OrderRequest(symbol, "SELL", "STOP_LOSS", qty, stop_price=stop, client_order_id=ids["b"])
        try:
            olist = self.engine.place_oco(self.account, symbol, "SELL", qty, above, below, ids[""], self.t_ms)
        except Rejected as exc:
            raise _simulated(exc) from None
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

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [self._order(o) for (s, _), o in self.account.open.items() if symbol is None or s == symbol]

    async def balances(self) -> dict[str, Balance]:
        bal = self.account.balances
        stamp = (self.account.update_ms, len(self.account.trades), len(self.account.orders), sum(len(o.fills) for o in self.account.open.values()))
        if self._balances is not None and self._balances[0] == stamp:
            return self._balances[1]
        out = {a: Balance(a, b[0], b[1]) for a, b in bal.items() if b[0] or b[1]}
        self._balances = (stamp, out)
        return out

    def _index_trades(self) -> None:
        trades = self.account.trades
        for t in trades[self._trades_seen:]:
            self._by_symbol.setdefault(t["symbol"], []).append(t)
            self._ids.setdefault(t["symbol"], []).append(t["id"])
        self._trades_seen = len(trades)

    async def trades(self, symbol: str, from_id: int | None = None, order_id: int | None = None, limit: int | None = None) -> list[Fill]:
        """The account's trades on ``symbol`` (``myTrades``): from ``from_id`` on (inclusive), or of one order."""
        self._index_trades()
        rows = self._by_symbol.get(symbol, [])
        if from_id is not None and rows:
            rows = rows[bisect.bisect_left(self._ids[symbol], from_id):]
        if order_id is not None:
            rows = [t for t in rows if t["orderId"] == order_id]
        if limit is not None:
            rows = rows[:limit]
        return [Fill.from_binance(t) for t in rows]

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

    async def settle(self) -> dict[str, str]:
        """Settle the journal's unresolved intents (a crash's orders in flight) before anything else:
        ``{client order id: status}`` (NOT_PLACED when proven absent)."""
        resolved = await self.client.resolve_journal()
        return {cid: (str(o.status) if o is not None else "NOT_PLACED") for cid, o in resolved.items()}

    async def rules(self, symbol: str) -> SymbolRules:
        return await self.client.rules(symbol)

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        books = await self.client.books(list(symbols))
        return {s: (bid + ask) / 2 for s, (bid, ask) in books.items()}

    async def submit(self, intent: OrderIntent) -> Order:
        return await self.client.submit(intent)

    async def submit_oco(self, strategy: str, symbol: str, signal_ms: int, qty: Decimal, take_profit: Decimal, stop: Decimal, leg: str) -> list[Order]:
        return await self.client.submit_oco(strategy, symbol, signal_ms, "SELL", qty, {"type": "LIMIT_MAKER", "price": take_profit},
                                            {"type": "STOP_LOSS", "stop_price": stop}, leg=leg)

    async def query(self, symbol: str, cid: str) -> Order | None:
        return await self.client.query_order(symbol, client_order_id=cid)

    async def cancel(self, symbol: str, cid: str) -> Order | None:
        return await self.client.cancel_order(symbol, client_order_id=cid)

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        return await self.client.open_orders(symbol)

    async def balances(self) -> dict[str, Balance]:
        return await self.client.account()

    async def trades(self, symbol: str, from_id: int | None = None, order_id: int | None = None, limit: int | None = None) -> list[Fill]:
        """``myTrades`` from ``from_id`` on (inclusive; pages of 1000 unless ``limit``), or of one order."""
        if order_id is not None:
            return await self.client.my_trades(symbol, order_id=order_id)
        if limit is not None:
            return await self.client.my_trades(symbol, from_id=from_id if from_id is not None else 0, limit=limit)
        out: list[Fill] = []
        start = from_id if from_id is not None else 0
        while True:
            page = await self.client.my_trades(symbol, from_id=start, limit=1000)
            out += page
            if len(page) < 1000:
                return out
            start = page[-1].trade_id + 1


class LocalBroker(SimBroker):
    """Paper trading on real-time market data *without keys*: the venue's matching rules run here,
    on the klines the store has (warmed at every decision), with the simulated account persisted in
    the ledger's ``sim_*`` tables so that positions survive restarts.

    Orders placed at a decision fill along the path of the klines that close *after* it (known at
    the next decision), never along prices the market did not trade; a MARKET order fills at once at
    the book around the last close. Use it with ``--profile binance-spot`` and no keys: real prices,
    no account needed.

    Args:
        load: ``load() -> {symbol: (11, n) base-interval block}`` of the universe, read from the store.
        interval: the base interval; balances: the starting account (``--cash``), for a new account;
        state: :meth:`export` rows to resume from (``Ledger.load_sim``), or None for a new account.
    """

    mode = "paper-local"

    def __init__(self, load: Callable[[], dict[str, np.ndarray]], interval: str, balances: dict[str, Decimal], spread_bps: float,
                 matching: MatchingReplayConfig, state: dict[str, Any] | None = None) -> None:
        self._load = load
        super().__init__(load(), interval, balances, spread_bps, matching)
        if state is not None:
            self.engine.import_account(self.account, state)
            self.t_ms = int(state["meta"].get("t_ms", 0))

    def refresh(self, t_ms: int) -> None:
        """Reload the store's klines (after a warm) and run the resting orders along them up to ``t_ms``."""
        self.market = self._market(self._load())
        self.engine.market = self.market
        self.set_time(t_ms)

    def export(self) -> dict[str, Any]:
        """The simulated account and its orders as rows (what :meth:`Ledger.save_sim` stores)."""
        state = self.engine.export_account(self.account)
        state["meta"]["t_ms"] = str(self.t_ms)
        return state
