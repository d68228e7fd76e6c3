"""The trading engine: one code path for backtest, paper and live — only the broker differs.

**The venue is the truth.** The ledger records intent and history; what the account holds is what
the venue says. At every step (and at start) :meth:`TradeEngine.reconcile`:

1. settles every order of ours the ledger does not know the end of (a ``PENDING`` intent whose
   answer a crash lost, a resting OCO leg) from the venue's open orders and look-ups by client
   order id;
2. books the venue's trades since the last booked trade id of every symbol where something of ours
   may have traded (``myTrades?fromId=``), each exactly once, with its commission — whatever the
   journal or the ledger believed;
3. corrects a position the venue does not hold down to what it holds (a ``reconcile`` decision with
   both figures), closes positions whose quantity is gone (or only unsellable dust is left), and
   reports (or adopts, ``trade.orphans``) venue orders and holdings the ledger does not know;
4. values the account at the venue's prices: quote + every held asset at its book mid (remainders
   and dust included), holdings found at the ledger's first start excluded (they are the user's).

Then :meth:`TradeEngine.step` takes the day's starting equity (once per UTC day, persisted with its
date), derives the trading state (:func:`trader.trade.risk.trading_state`) and snapshots the
figures it was decided on; HALTED flattens; otherwise exits asked for and not complete are retried
(**partial fills are normal**: a market exit that fills partly leaves the position open with the
remainder, reported as ``partial_exit``), missing protection is placed, time stops close, and new
entries are sized from the venue-valued equity and the venue's free quote.

Every order is an :class:`~trader.exchange.trading.OrderIntent` whose id derives from (strategy,
symbol, time, leg); its ledger row (role, rung, reason, position) is written **before** it leaves,
so a restarted engine finds it and never sends it twice. Sells are sized from the venue's free
balance, never from the ledger's belief.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trader.config import RiskConfig
from trader.errors import OrderRejected
from trader.exchange.trading import OrderIntent, client_order_id
from trader.models import Balance, Order, OrderStatus, OrderType, Side, SymbolRules
from trader.trade import risk
from trader.trade.broker import Broker
from trader.trade.events import EventBus, FillEvent, KlineClosed, OrderUpdate, PositionChanged, RiskBreach, SignalEvent
from trader.trade.ledger import Ledger, PositionRow
from trader.trade.types import (
    Action,
    Dust,
    ExitReason,
    FlattenReport,
    PositionStatus,
    ReconcileReport,
    Role,
    StepReport,
    TradingState,
    exit_label,
)

__all__ = ["StepReport", "TradeEngine"]

D0 = Decimal(0)
_SELL_ROLES = (Role.TAKE_PROFIT, Role.STOP_LOSS, Role.EXIT)


def utc_date(t_ms: int) -> str:
    """``YYYY-MM-DD`` of an epoch-ms time, UTC."""
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%d")


class TradeEngine:
    """Decisions, orders and the ledger of one account.

    Args:
        broker: the venue (:mod:`trader.trade.broker`).
        ledger: the account's ledger.
        cfg: the risk plan (``risk`` config section).
        min_score: score needed to enter.
        strategy: name in client order ids; quote: the quote asset (USDT).
        model_active: whether ``min_confidence`` applies; market: spot (long only) or usdm.
        bus: event bus (metrics); virtual: a :class:`~trader.trade.virtual.VirtualBook` or None.
        orphans: ``cancel`` (unknown venue orders cancelled, unknown holdings reported), ``adopt``
            (both recorded: orders in the ledger, holdings as positions), ``report`` (only reported).
        universe: the symbols the session trades (the markets whose holdings it values).
        flatten_rounds: market-sell rounds :meth:`flatten` runs before reporting "not flat".
        orphan_scan_every: full reconciliations between two looks at every open order of the account
            (``openOrders`` without a symbol, weight 80; the first reconciliation always looks); in
            between only the symbols with orders of ours are looked at (weight 6 each).
    """

    def __init__(self, broker: Broker, ledger: Ledger, cfg: RiskConfig, min_score: float, *, strategy: str = "scan",
                 quote: str = "USDT", model_active: bool = False, market: str = "spot", bus: EventBus | None = None,
                 virtual: Any = None, orphans: str = "cancel", universe: Sequence[str] = (), flatten_rounds: int = 10,
                 orphan_scan_every: int = 24) -> None:
        self.broker = broker
        self.ledger = ledger
        self.cfg = cfg
        self.min_score = min_score
        self.strategy = strategy
        self.quote = quote
        self.model_active = model_active
        self.market = market
        self.bus = bus or EventBus()
        self.virtual = virtual
        self.orphans = orphans
        self.universe = list(universe)
        self.flatten_rounds = flatten_rounds
        self.orphan_scan_every = max(orphan_scan_every, 1)
        last = ledger.last_state()
        self.state = TradingState(last) if last is not None and last in TradingState.__members__ else TradingState.ACTIVE
        self.exit_reasons: Counter[str] = Counter()
        self.last_step_ms: int | None = None
        self.last_step_wall: float | None = None
        self._reported_orphans: set[tuple[str, str]] = set()
        # caches of what only this engine writes (one engine per ledger at a time)
        self._known: set[str] = set(self.universe) | set(ledger.traded_symbols())
        self._cids: set[str] | None = None
        self._belief: dict[str, Decimal] | None = None
        self._bases: dict[str, tuple[str, str]] = {}
        self._symbol_of: dict[str, str] = {}  # base asset -> its symbol against the quote
        self._reserved_cache: dict[str, Decimal] | None = None
        self._protected: set[int] = set()
        self._history_checked = False
        self._full_scans = 0  # positions whose whole ladder is known to be placed
        self._day: tuple[str, Decimal] | None = None

    # ------------------------------------------------------------------ helpers

    def _kill_switch(self) -> bool:
        f = self.cfg.kill_switch_file
        return f is not None and os.path.exists(f)

    def _reserved(self) -> dict[str, Decimal]:
        if self._reserved_cache is None:
            raw = self.ledger.get_json("reserved")
            if raw is None:
                return {}
            self._reserved_cache = {a: Decimal(q) for a, q in raw.items()}
        return self._reserved_cache

    async def _base(self, symbol: str) -> tuple[SymbolRules, str]:
        rules = await self.broker.rules(symbol)
        return rules, rules.base or symbol.removesuffix(self.quote)

    async def _assets(self, symbol: str) -> tuple[str, str]:
        """``(base, quote)`` of a symbol (from its rules; they never change)."""
        hit = self._bases.get(symbol)
        if hit is None:
            rules = await self.broker.rules(symbol)
            hit = self._bases[symbol] = (rules.base or symbol.removesuffix(self.quote), rules.quote or self.quote)
            self._symbol_of[hit[0]] = symbol
        return hit

    async def _held(self, balances: dict[str, Balance], reserved: dict[str, Decimal]) -> dict[str, Decimal]:
        """``{symbol: base held beyond the reserved holdings}`` of every known symbol the venue holds something of."""
        for s in self._known:
            if s not in self._bases:
                await self._assets(s)
        out = {}
        for asset, b in balances.items():
            symbol = self._symbol_of.get(asset)
            if symbol is not None:
                avail = b.total - reserved.get(asset, D0)
                if avail > 0:
                    out[symbol] = avail
        return out

    def _known_symbols(self) -> list[str]:
        return sorted(self._known)

    def _record(self, cid: str, **kw: Any) -> None:
        """Write an order intent to the ledger (before it leaves) and remember it."""
        self.ledger.record_intent(cid, **kw)
        self._known.add(kw["symbol"])
        if self._cids is not None:
            self._cids.add(cid)

    def _our_cids(self) -> set[str]:
        if self._cids is None:
            self._cids = {r.cid for r in self.ledger.orders()} | self._journal_cids()
        return self._cids

    def _beliefs(self) -> dict[str, Decimal]:
        """What the ledger believes is held, per symbol: its positions' quantities (open, and closed dust).
        Loaded once; :meth:`_touch` refreshes a symbol whenever its positions change."""
        if self._belief is None:
            b: dict[str, Decimal] = {}
            for p in self.ledger.positions():
                b[p.symbol] = b.get(p.symbol, D0) + p.left_qty
            self._belief = b
        return self._belief

    def _believed(self, symbol: str) -> Decimal:
        return self._beliefs().get(symbol, D0)

    def _touch(self, symbol: str) -> None:
        """A position of ``symbol`` changed: refresh the ledger's belief about it."""
        if self._belief is not None:
            self._belief[symbol] = sum((p.left_qty for p in self.ledger.positions(symbol=symbol)), D0)

    def _note(self, o: Order, t_ms: int, latency: float | None = None) -> None:
        self.ledger.update_order(o, t_ms)
        self.bus.publish(OrderUpdate(t_ms, o.client_order_id, o.symbol, o.side, str(o.status), latency))

    @staticmethod
    def sellable(qty: Decimal, price: Decimal, rules: SymbolRules) -> bool:
        """Whether a market SELL of ``qty`` (already on the step) passes LOT_SIZE and NOTIONAL at ``price``."""
        return qty > 0 and qty >= rules.min_qty and qty * price >= rules.min_notional

    async def _price(self, symbol: str) -> Decimal:
        return (await self.broker.prices([symbol]))[symbol]

    # ------------------------------------------------------------------ booking

    async def _book_order(self, o: Order, t_ms: int) -> int:
        """Book the fills of one of our orders (each once, by trade id): those a FULL answer carried,
        else — an answer that was lost and replaced by a look-up — the venue's trades of the order."""
        if o.executed_qty <= 0:
            return 0
        fills = list(o.fills)
        if sum((f.qty for f in fills), D0) < o.executed_qty:
            fills = await self.broker.trades(o.symbol, order_id=o.order_id)
        row = self.ledger.order(o.client_order_id)
        base, quote = await self._assets(o.symbol)
        n = 0
        for f in fills:
            pid = self.ledger.book_fill(f, row, base, quote, t_ms, self.broker.mode)
            if pid is not None:
                n += 1
                self.bus.publish(FillEvent(t_ms, o.client_order_id, o.symbol, o.side, str(f.price), str(f.qty)))
        if n:
            self._touch(o.symbol)
        return n

    async def _book_symbol(self, symbol: str, t_ms: int, rep: ReconcileReport) -> None:
        """Book the venue's trades on ``symbol`` since the last booked id (``myTrades?fromId=``)."""
        L = self.ledger
        epoch = L.epoch
        nxt = L.cursor(symbol)
        if nxt is None:
            # the symbol's first look in this venue history: start at our first order's first trade
            # (earlier trades on the account are not ours and are not fetched)
            first = next((r for r in L.orders(symbol=symbol) if r.order_id is not None and (r.epoch or 0) == epoch
                          and r.status != OrderStatus.LOST and (r.executed > 0 or not r.settled)), None)
            if first is None:
                return
            mine = await self.broker.trades(symbol, order_id=first.order_id)
            if not mine:
                return
            nxt = min(f.trade_id for f in mine)
            trades = await self.broker.trades(symbol, from_id=nxt)
        else:
            last = L.booked(symbol, nxt - 1)
            trades = await self.broker.trades(symbol, from_id=nxt - 1 if last is not None else nxt)
            if last is not None:
                head = trades[0] if trades else None
                if head is None or head.trade_id != nxt - 1 or head.order_id != last["order_id"] or head.qty != last["qty"]:
                    # the venue does not hold the trade we booked last: its history was reset (a restarted replay)
                    L.new_epoch()
                    L.decision(t_ms, symbol, Action.VENUE_RESET, f"venue has no trade {nxt - 1} of {symbol} (booked in epoch {epoch}); "
                               "history restarted, positions follow the venue's balances")
                    rep.venue_reset = True
                    await self._book_symbol(symbol, t_ms, rep)
                    return
                trades = trades[1:]
        base, quote = await self._assets(symbol)
        for f in trades:
            row = L.order_by_venue_id(symbol, f.order_id)
            if row is not None and row.status == OrderStatus.LOST:
                row = None
            if L.book_fill(f, row, base, quote, t_ms, self.broker.mode) is not None:
                rep.fills_booked += 1
                self.bus.publish(FillEvent(t_ms, row.cid if row else "", symbol, Side.BUY if f.is_buyer else Side.SELL, str(f.price), str(f.qty)))
        if trades:
            self._touch(symbol)
            L.set_cursor(symbol, trades[-1].trade_id + 1)
        elif L.cursor(symbol) is None:
            L.set_cursor(symbol, nxt)

    # ------------------------------------------------------------------ reconciliation

    async def _settle_orders(self, t_ms: int, rep: ReconcileReport, symbol: str | None = None,
                             open_now: dict[str, Order] | None = None) -> tuple[set[str], dict[str, Order]]:
        """Bring every unsettled order row of ours up to the venue's view. Returns the symbols where one
        traded, and the venue's open orders looked at (``open_now``, else those of the symbols concerned)."""
        traded: set[str] = set()
        rows = self.ledger.orders(unsettled=True, symbol=symbol)
        seen: dict[str, Order] = dict(open_now) if open_now is not None else {}
        if open_now is None and len(rows) > 1:  # one openOrders per symbol (weight 6) instead of a look-up per order (4 each)
            for sym in sorted({r.symbol for r in rows}):
                seen.update((o.client_order_id, o) for o in await self.broker.open_orders(sym))
        for row in rows:
            o = seen.get(row.cid) if seen or open_now is not None else None
            if o is None:
                o = await self.broker.query(row.symbol, row.cid)
            if o is None:
                # never reached the venue (journal settled first: proven absent), or a venue that forgot it
                self.ledger.set_order_status(row.cid, OrderStatus.ABSENT if row.status == OrderStatus.PENDING else OrderStatus.LOST, t_ms)
                rep.orders_settled += 1
                continue
            if o.status != row.status or o.executed_qty != row.executed or row.order_id is None:
                self._note(o, t_ms)
                rep.orders_settled += 1
                if o.executed_qty != row.executed:
                    traded.add(row.symbol)
        return traded, seen

    async def reconcile(self, t_ms: int, *, full: bool = True, dust: bool = False) -> ReconcileReport:
        """Bring the ledger to what the venue holds (see the module docstring). ``full=False`` (between
        decisions) only settles our orders and books their trades; ``dust`` lists the unsellable holdings."""
        rep = ReconcileReport(t_ms)
        L, B = self.ledger, self.broker
        if full:
            await B.settle()  # a crash's orders in flight: found, or proven absent, before anything is looked at
            if not self._history_checked:  # at start; later, each symbol's cursor check catches a reset
                await self._check_venue_history(t_ms, rep)
                self._history_checked = True
        if full and self._reserved_cache is None and L.get_meta("reserved") is None:
            # the ledger's first look at the account: what it holds now is the user's, never ours to sell
            before = await B.balances()
            first = not L.orders() and not L.positions()
            L.set_json("reserved", {a: str(b.total) for a, b in before.items() if a != self.quote and b.total > 0} if first else {})
            self._reserved_cache = None
        # every open order of the account (weight 80) at start and every ``orphan_scan_every`` decisions;
        # in between, those of the symbols we have orders on (weight 6 each)
        open_now = None
        if full:
            self._full_scans += 1
            if self._full_scans % self.orphan_scan_every == 1 or self.orphan_scan_every == 1:
                open_now = {o.client_order_id: o for o in await B.open_orders()}
        symbols, open_seen = await self._settle_orders(t_ms, rep, open_now=open_now)
        balances = await B.balances() if full else {}
        reserved = self._reserved()
        differ: set[str] = set()
        held: dict[str, Decimal] = {}
        if full:  # a holding that differs from the ledger's belief: something traded there
            held = await self._held(balances, reserved)
            beliefs = self._beliefs()
            differ = {s for s in set(held) | {s for s, v in beliefs.items() if v > 0} if held.get(s, D0) != beliefs.get(s, D0)}
            symbols |= differ
        for s in sorted(symbols):
            await self._book_symbol(s, t_ms, rep)
        if rep.fills_booked and full:
            balances = await B.balances()
            held = await self._held(balances, reserved)
        if full:
            await self._check_positions(t_ms, held, symbols, open_seen, rep)
            await self._value(balances, held, rep, dust)
        else:
            await self._close_finished(t_ms, rep)
        return rep

    async def _check_venue_history(self, t_ms: int, rep: ReconcileReport) -> None:
        """The venue still holds the last trade we booked, or its history was reset (a restarted replay
        exchange): then a new epoch starts, so that its new trade and order ids are never taken for ours."""
        last = self.ledger.last_fill()
        if last is None:
            return
        got = await self.broker.trades(last["symbol"], from_id=last["trade_id"], limit=1)
        head = got[0] if got else None
        if head is not None and head.trade_id == last["trade_id"] and head.order_id == last["order_id"] and head.qty == last["qty"]:
            return
        epoch = self.ledger.new_epoch()
        self.ledger.decision(t_ms, last["symbol"], Action.VENUE_RESET, f"the venue no longer has trade {last['trade_id']} of {last['symbol']}: "
                             f"its history restarted (epoch {epoch}); positions follow its balances")
        rep.venue_reset = True

    async def _close_finished(self, t_ms: int, rep: ReconcileReport, prices: dict[str, Decimal] | None = None) -> None:
        """Close open positions whose quantity is gone or unsellable, with no order of ours still working on them."""
        open_ps = self.ledger.positions(PositionStatus.OPEN)
        if not open_ps:
            return
        working = {r.position_id for r in self.ledger.orders(unsettled=True) if r.role != Role.ENTRY}
        for p in open_ps:
            if p.id in working:
                continue
            rules, _ = await self._base(p.symbol)
            qty = rules.round_qty(p.left_qty)
            if qty > 0 and self.sellable(qty, prices[p.symbol] if prices and p.symbol in prices else await self._price(p.symbol), rules):
                continue
            self._close(p, t_ms, rep.exits)

    def _close(self, p: PositionRow, t_ms: int, exits: list[tuple[str, str]]) -> None:
        cid = self.ledger.last_sell_cid(p.id)
        last = self.ledger.order(cid) if cid else None
        reason: str
        if p.closing:
            reason = str(p.closing)
        elif last is None:
            reason = ExitReason.DUST
        elif last.role == Role.STOP_LOSS:
            reason = ExitReason.STOP_LOSS
        else:
            reason = exit_label(last.reason or last.role, last.rung)
        self.ledger.close_position(p.id, t_ms, str(reason))
        self.exit_reasons[str(reason)] += 1
        exits.append((p.symbol, str(reason)))
        self.bus.publish(PositionChanged(t_ms, p.symbol, str(p.left_qty), str(reason), len(self.ledger.positions(PositionStatus.OPEN))))

    async def _check_positions(self, t_ms: int, held: dict[str, Decimal], candidates: set[str],
                               open_now: dict[str, Order], rep: ReconcileReport) -> None:
        """Positions against the venue's holdings on ``candidates`` (the symbols where either side changed)."""
        L = self.ledger
        open_ps = L.positions(PositionStatus.OPEN)
        prices = await self.broker.prices(sorted({p.symbol for p in open_ps}))
        for symbol in sorted(candidates):
            base, _ = await self._assets(symbol)
            avail = held.get(symbol, D0)
            believed = self._believed(symbol)
            if believed == avail:
                continue
            if believed > avail:
                # the venue holds less than the ledger believes: correct, open positions first, then old dust
                over = believed - avail
                rules, _ = await self._base(symbol)
                ps = [p for p in L.positions(symbol=symbol) if p.left_qty > 0]
                for p in sorted(ps, key=lambda p: p.status != PositionStatus.OPEN):
                    cut = min(over, p.left_qty)
                    if cut <= 0:
                        continue
                    L.correct_position(p.id, p.left_qty - cut)
                    over -= cut
                    if p.status == PositionStatus.OPEN:
                        L.decision(t_ms, symbol, Action.RECONCILE, f"position {p.id}: ledger {p.left_qty} > venue {avail} {base}; "
                                   f"corrected to {p.left_qty - cut}")
                        rep.corrected.append((symbol, p.left_qty, p.left_qty - cut))
                        price = prices[symbol] if symbol in prices else await self._price(symbol)
                        if not p.closing and not self.sellable(rules.round_qty(p.left_qty - cut), price, rules):
                            L.set_closing(p.id, ExitReason.RECONCILE)
                self._touch(symbol)
                continue
            # the venue holds more than the ledger knows of: an orphan holding (when it can be sold at all)
            extra = avail - believed
            rules, _ = await self._base(symbol)
            price = prices[symbol] if symbol in prices else await self._price(symbol)
            if not self.sellable(rules.round_qty(extra), price, rules):
                continue
            rep.orphan_holdings.append({"symbol": symbol, "qty": str(extra), "value": f"{extra * price:.2f}"})
            if self.orphans == "adopt":
                pid = L.adopt_position(symbol, extra, price, t_ms, self.broker.mode)
                self._known.add(symbol)
                self._touch(symbol)
                self._orphan_decision(t_ms, symbol, f"holding {extra} {base} adopted as position {pid}")
            else:
                self._orphan_decision(t_ms, symbol, f"holding {extra} {base} the ledger does not know (trade.orphans={self.orphans}: reported)")
        await self._close_finished(t_ms, rep, prices)
        # venue orders the ledger does not know
        known = self._our_cids()
        for cid, o in open_now.items():
            if cid in known:
                continue
            rep.orphan_orders.append({"symbol": o.symbol, "clientOrderId": cid, "side": str(o.side), "type": str(o.type)})
            if self.orphans == "cancel":
                await self.broker.cancel(o.symbol, cid)
            elif self.orphans == "adopt":
                self._record(cid, role=Role.EXIT if o.side == Side.SELL else Role.ENTRY, symbol=o.symbol, side=str(o.side),
                             kind=str(o.type), t_ms=t_ms, signal_ms=t_ms, reason="adopted")
                self._note(o, t_ms)
            self._orphan_decision(t_ms, o.symbol, f"order {cid} ({o.side} {o.type}): {self.orphans}")

    def _orphan_decision(self, t_ms: int, symbol: str, text: str) -> None:
        key = (symbol, text)
        if key not in self._reported_orphans:
            self._reported_orphans.add(key)
            self.ledger.decision(t_ms, symbol, Action.ORPHAN, text)

    def _journal_cids(self) -> set[str]:
        client = getattr(self.broker, "client", None)
        return {e.client_order_id for e in client.journal.all()} if client is not None else set()

    async def _value(self, balances: dict[str, Balance], held: dict[str, Decimal], rep: ReconcileReport, dust: bool = False) -> None:
        """Equity at the venue's prices: quote + every held asset of a known market (reserved holdings
        excluded); assets without one are listed as unpriced; with ``dust``, the holdings too small to sell."""
        q = balances.get(self.quote)
        rep.free_quote = q.free if q else D0
        total = q.total if q else D0
        reserved = self._reserved()
        rep.unpriced = sorted(a for a, b in balances.items() if a != self.quote and a not in self._symbol_of and b.total > reserved.get(a, D0))
        prices = await self.broker.prices(sorted(held))
        for symbol, qty in held.items():
            price = prices.get(symbol)
            if price is None:
                rep.unpriced.append(symbol)
                continue
            total += qty * price
            if dust:
                rules, base = await self._base(symbol)
                if not self.sellable(rules.round_qty(qty), price, rules):
                    rep.dust.append(Dust(base, qty, qty * price))
        rep.equity = total

    # ------------------------------------------------------------------ exits

    async def _free(self, base: str) -> Decimal:
        """The venue's free balance of ``base`` beyond the reserved holdings."""
        b = (await self.broker.balances()).get(base)
        return max((b.free if b else D0) - self._reserved().get(base, D0), D0)

    async def _cancel_working(self, p: PositionRow, t_ms: int) -> None:
        """Cancel the position's working protective orders, then book whatever traded before the cancels landed."""
        rows = [r for r in self.ledger.orders(position_id=p.id, unsettled=True) if r.role != Role.ENTRY]
        for r in rows:
            o = await self.broker.cancel(r.symbol, r.cid)
            if o is not None:
                self._note(o, t_ms)
        rep = ReconcileReport(t_ms)
        if rows:
            await self._settle_orders(t_ms, rep, symbol=p.symbol)
        await self._book_symbol(p.symbol, t_ms, rep)

    async def _sell(self, p: PositionRow, qty: Decimal, t_ms: int, reason: str, leg: str, *, signal_ms: int | None = None,
                    rung: int | None = None) -> Order | None:
        """A market SELL of ``qty`` for position ``p`` (intent in the ledger first, id from
        ``(strategy, symbol, signal_ms or t_ms, leg)``); its fills booked."""
        intent = OrderIntent(self.strategy, p.symbol, t_ms if signal_ms is None else signal_ms, leg, Side.SELL, OrderType.MARKET, quantity=qty)
        self._record(intent.client_order_id, role=Role.EXIT, symbol=p.symbol, side=Side.SELL, kind=OrderType.MARKET, t_ms=t_ms,
                     signal_ms=intent.signal_ms, position_id=p.id, reason=reason, rung=rung)
        try:
            o = await self.broker.submit(intent)
        except OrderRejected as exc:
            self.ledger.set_order_status(intent.client_order_id, OrderStatus.REJECTED, t_ms)
            self.ledger.decision(t_ms, p.symbol, Action.EXIT, f"{reason}: market sell rejected: {exc}"[:200])
            return None
        self._note(o, t_ms)
        await self._book_order(o, t_ms)
        return o

    async def close_position(self, p: PositionRow, t_ms: int, reason: str, report: StepReport | None = None) -> bool:
        """Exit ``p`` at market: cancel its protection, book what traded meanwhile, sell what the venue
        holds for it (never more than its free balance). Returns True when the position is closed; a
        partial fill leaves it open with ``closing`` set (retried at the next step, ``partial_exit``)."""
        L = self.ledger
        L.set_closing(p.id, reason)
        await self._cancel_working(p, t_ms)
        found = L.position(p.id)
        if found is None or found.status != PositionStatus.OPEN:
            return True
        fresh = found
        rules, base = await self._base(p.symbol)
        avail = await self._free(base)
        if fresh.left_qty > avail:
            L.decision(t_ms, p.symbol, Action.RECONCILE, f"position {p.id}: ledger {fresh.left_qty} > venue free {avail} {base}; "
                       f"selling {avail}")
            L.correct_position(p.id, avail)
            self._touch(p.symbol)
            fresh = L.position(p.id) or fresh
        qty = rules.round_qty(min(fresh.left_qty, avail))
        price = await self._price(p.symbol)
        if self.sellable(qty, price, rules):
            await self._sell(fresh, qty, t_ms, reason, f"x{p.id}-{reason}")
        after = L.position(p.id)
        assert after is not None
        left = rules.round_qty(after.left_qty)
        if self.sellable(left, price, rules):
            L.decision(t_ms, p.symbol, Action.PARTIAL_EXIT, f"{reason}: sold {fresh.left_qty - after.left_qty} of {fresh.left_qty}; "
                       f"{after.left_qty} left, retried at the next step")
            if report is not None:
                report.partial_exits.append(p.symbol)
            return False
        exits: list[tuple[str, str]] = []
        self._close(after, t_ms, exits)
        if report is not None:
            report.exits += exits
        return True

    async def flatten(self, t_ms: int, reason: str = ExitReason.FLATTEN, *, reconciled: bool = False) -> FlattenReport:
        """Reach flat: cancel every open order of ours (and every open order on the symbols we trade),
        book what traded, then sell at market what the ledger's positions own — sized from the venue's
        free balance, rounded down to the step — round after round until nothing sellable is left.

        Works after any crash: phantom ledger rows are corrected to the venue first, holdings the
        ledger does not own (the user's, orphans) are not sold.
        """
        rep = FlattenReport(flat=False)
        if not reconciled:
            await self.reconcile(t_ms)
        traded = set(self.ledger.traded_symbols())
        mine = {r.cid for r in self.ledger.orders()}
        for o in await self.broker.open_orders():
            if o.client_order_id in mine or o.symbol in traded:
                c = await self.broker.cancel(o.symbol, o.client_order_id)
                rep.cancelled += 1
                if c is not None and o.client_order_id in mine:
                    self._note(c, t_ms)
        for p in self.ledger.positions(PositionStatus.OPEN):
            self.ledger.set_closing(p.id, p.closing or reason)
        rec = await self.reconcile(t_ms)
        rep.exits += rec.exits
        for rnd in range(self.flatten_rounds):
            sold = False
            rep.rounds = rnd + 1
            for p in self.ledger.positions(PositionStatus.OPEN):
                rules, base = await self._base(p.symbol)
                qty = rules.round_qty(min(p.left_qty, await self._free(base)))
                if not self.sellable(qty, await self._price(p.symbol), rules):
                    continue
                sale = await self._sell(p, qty, t_ms, p.closing or reason, f"f{p.id}-{rnd}-{reason}")
                if sale is not None and sale.executed_qty > 0:
                    rep.sold.append((p.symbol, sale.executed_qty))
                    sold = True
            rec = await self.reconcile(t_ms)
            rep.exits += rec.exits
            if not sold:
                break
        rep.closed = len(rep.exits)
        open_left = self.ledger.positions(PositionStatus.OPEN)
        working = [o for o in await self.broker.open_orders() if o.client_order_id in mine or o.symbol in traded]
        rep.dust = rec.dust
        rep.flat = not open_left and not working
        if not rep.flat:
            rep.reason = (f"{len(open_left)} position(s) still hold sellable quantities after {rep.rounds} round(s) "
                          f"({', '.join(p.symbol for p in open_left[:5])}); {len(working)} open order(s) left")
        return rep

    # ------------------------------------------------------------------ entries

    async def _enter(self, c: risk.Candidate, equity: Decimal, free: Decimal, report: StepReport) -> Decimal:
        rules = await self.broker.rules(c.symbol)
        quote = risk.size_entry(equity, free, self.cfg, rules)
        if quote <= 0:
            self.ledger.decision(c.t_ms, c.symbol, Action.SKIP, "size_below_min_notional", c.score, c.probability)
            return D0
        intent = OrderIntent(self.strategy, c.symbol, c.t_ms, "entry", Side.BUY, OrderType.MARKET, quote_order_qty=quote)
        # the intent is in the ledger before its order leaves: a crash after the venue took it is found at the next reconcile
        self._record(intent.client_order_id, role=Role.ENTRY, symbol=c.symbol, side=Side.BUY, kind=OrderType.MARKET,
                     t_ms=c.t_ms, signal_ms=c.t_ms)
        t0 = time.perf_counter()
        try:
            o = await self.broker.submit(intent)
        except OrderRejected as exc:
            self.ledger.set_order_status(intent.client_order_id, OrderStatus.REJECTED, c.t_ms)
            self.ledger.decision(c.t_ms, c.symbol, Action.SKIP, f"entry_rejected: {exc}"[:200], c.score, c.probability)
            return D0
        latency = time.perf_counter() - t0
        report.signal_to_order_s.append(latency)
        self._note(o, c.t_ms, latency)
        self.ledger.decision(c.t_ms, c.symbol, Action.ENTER, "ok" if o.status == OrderStatus.FILLED else f"ok ({o.status}: filled "
                             f"{o.executed_qty} for {o.cum_quote} of {quote} {self.quote})", c.score, c.probability)
        await self._book_order(o, c.t_ms)
        row = self.ledger.order(intent.client_order_id)
        if row is not None and row.position_id is not None:
            p = self.ledger.position(row.position_id)
            if p is not None:
                report.entered.append(c.symbol)
                self.bus.publish(PositionChanged(c.t_ms, c.symbol, str(p.left_qty), "entry", len(self.ledger.positions(PositionStatus.OPEN))))
                await self._protect(p, c.t_ms)
        return o.cum_quote

    async def _protect(self, p: PositionRow, t_ms: int) -> None:
        """Place every rung of the exit ladder not placed yet (each an OCO; intents in the ledger first,
        so a repeat is a look-up). Rungs are sized on what the position holds (its filled quantity),
        capped at the venue's free balance; a refused OCO is sold at market at once (``stop_failed``)."""
        rules, base = await self._base(p.symbol)
        have = {(r.role, r.rung) for r in self.ledger.orders(position_id=p.id)}
        free = await self._free(base)
        for leg in risk.exit_ladder(p.entry_price, p.left_qty, self.cfg, rules):
            if (Role.TAKE_PROFIT, leg.rung) in have or (Role.EXIT, leg.rung) in have:
                continue
            qty = rules.round_qty(min(leg.qty, free))
            if qty <= 0:
                continue
            ids = {k: client_order_id(self.strategy, p.symbol, p.entry_ms, f"{leg.name}{k}") for k in ("a", "b")}
            self._record(ids["a"], role=Role.TAKE_PROFIT, symbol=p.symbol, side=Side.SELL, kind=OrderType.LIMIT_MAKER, t_ms=t_ms,
                         signal_ms=p.entry_ms, position_id=p.id, rung=leg.rung)
            self._record(ids["b"], role=Role.STOP_LOSS, symbol=p.symbol, side=Side.SELL, kind=OrderType.STOP_LOSS, t_ms=t_ms,
                         signal_ms=p.entry_ms, position_id=p.id, rung=leg.rung)
            try:
                legs = await self.broker.submit_oco(self.strategy, p.symbol, p.entry_ms, qty, leg.take_profit, leg.stop, leg.name)
            except OrderRejected as exc:  # e.g. "Order would trigger immediately": never leave it unprotected
                for cid in ids.values():
                    self.ledger.set_order_status(cid, OrderStatus.REJECTED, t_ms)
                self.ledger.decision(t_ms, p.symbol, Action.EXIT, f"stop_failed: {exc}"[:200])
                fresh = self.ledger.position(p.id)
                if fresh is not None and fresh.status == PositionStatus.OPEN:
                    sq = rules.round_qty(min(qty, await self._free(base)))
                    if self.sellable(sq, await self._price(p.symbol), rules):
                        await self._sell(fresh, sq, t_ms, ExitReason.STOP_FAILED, f"exit-stop_failed-{leg.name}", signal_ms=p.entry_ms,
                                         rung=leg.rung)
                free = await self._free(base)
                continue
            for o in legs:
                self._note(o, t_ms)
                await self._book_order(o, t_ms)
            free -= qty
        await self._close_finished(t_ms, ReconcileReport(t_ms))

    async def _recover_protection(self, t_ms: int) -> list[str]:
        """Open positions whose ladder is incomplete (a crash between the entry and its last OCO): place the rest."""
        touched = []
        for p in self.ledger.positions(PositionStatus.OPEN):
            if p.closing or p.id in self._protected:
                continue
            rows = self.ledger.orders(position_id=p.id)
            rules, _ = await self._base(p.symbol)
            rungs = {leg.rung for leg in risk.exit_ladder(p.entry_price, p.qty, self.cfg, rules)}
            have = {r.rung for r in rows if r.role in (Role.TAKE_PROFIT, Role.EXIT) and r.rung is not None}
            if not rungs <= have:
                await self._protect(p, t_ms)
                touched.append(p.symbol)
            else:
                self._protected.add(p.id)
        return touched

    # ------------------------------------------------------------------ the step

    def _day_start(self, t_ms: int, equity: Decimal) -> tuple[Decimal, bool]:
        """``(the day's starting equity, whether it starts now)``: taken once per UTC day, from the
        venue-valued equity of its first step, persisted with its date (with that step's snapshot)."""
        date = utc_date(t_ms)
        if self._day is not None and self._day[0] == date:
            return self._day[1], False
        ds = self.ledger.get_json("day_start")
        if ds is not None and ds.get("date") == date:
            self._day = (date, Decimal(ds["equity"]))
            return self._day[1], False
        return equity, True

    async def step(self, t_ms: int, candidates: list[risk.Candidate]) -> StepReport:
        """One decision at ``t_ms`` (see the module docstring)."""
        self.bus.publish(KlineClosed(t_ms))
        rec = await self.reconcile(t_ms)
        report = StepReport(t_ms, self.state, reconcile=rec)
        report.exits += rec.exits
        equity, free = rec.equity, rec.free_quote
        day_start, new_day = self._day_start(t_ms, equity)
        state, why = risk.trading_state(float(equity), float(day_start), self.cfg, self._kill_switch())
        # the snapshot and a new day's start are written together: every HALT is explained by its own row
        self.ledger.snapshot(t_ms, equity, free, state, day_start,
                             day={"date": utc_date(t_ms), "equity": str(equity), "t_ms": t_ms} if new_day else None)
        if new_day:
            self._day = (utc_date(t_ms), equity)
        report.equity, report.day_start_equity = equity, day_start
        if state != self.state:
            self.bus.publish(RiskBreach(t_ms, state, why))
            self.ledger.decision(t_ms, "*", Action.STATE, f"{state}: {why} (equity {equity:.4f}, day start {day_start:.4f})")
            self.state = state
        report.state = state
        open_now = self.ledger.positions(PositionStatus.OPEN)
        if state == TradingState.HALTED:
            if open_now or self.ledger.orders(unsettled=True):
                reason = ExitReason.KILL_SWITCH if why == "kill_switch" else ExitReason.DAILY_LOSS
                fr = await self.flatten(t_ms, reason, reconciled=True)
                report.exits += fr.exits
                if not fr.flat:
                    report.partial_exits += [p.symbol for p in self.ledger.positions(PositionStatus.OPEN)]
        else:
            for p in open_now:
                if p.closing:  # an exit asked for before (a partial fill, a crash): retry it first
                    await self.close_position(p, t_ms, p.closing, report)
            await self._recover_protection(t_ms)
            for p in self.ledger.positions(PositionStatus.OPEN):
                if risk.time_stop_due(p.entry_ms, t_ms, self.cfg):
                    await self.close_position(p, t_ms, ExitReason.TIME_STOP, report)
        open_symbols = {p.symbol for p in self.ledger.positions(PositionStatus.OPEN)}
        take, skipped = risk.select_entries(candidates, open_symbols, self.cfg, self.min_score, state,
                                            market=self.market, model_active=self.model_active)
        for c in take:
            self.bus.publish(SignalEvent(t_ms, c.symbol, c.score, c.probability, Action.ENTER, "ok"))
            free -= await self._enter(c, equity, free, report)
        for c, why_not in skipped:
            self.bus.publish(SignalEvent(t_ms, c.symbol, c.score, c.probability, Action.SKIP, why_not))
            self.ledger.decision(t_ms, c.symbol, Action.SKIP, why_not, c.score, c.probability)
            report.skipped.append((c.symbol, why_not))
            if self.virtual is not None:
                self.virtual.add(c, why_not)
        self.last_step_ms = t_ms
        self.last_step_wall = time.time()
        return report

    def summary(self) -> dict[str, Any]:
        """Closed-trade statistics from the ledger (net of fees): ``{trades, wins, pnl_quote, exit_reasons, open_positions}``."""
        closed = self.ledger.positions(PositionStatus.CLOSED)
        pnl = [float(p.pnl) for p in closed]
        reasons = Counter(p.exit_reason or "?" for p in closed)
        return {"trades": len(closed), "wins": sum(1 for x in pnl if x > 0), "pnl_quote": round(sum(pnl), 4),
                "exit_reasons": dict(sorted(reasons.items())), "open_positions": len(self.ledger.positions(PositionStatus.OPEN))}
