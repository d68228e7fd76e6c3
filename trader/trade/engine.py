"""The trading engine: one code path for backtest, paper and live — only the broker differs.

At every decision time ``t`` (a ``trade.decision_interval`` close + 1 ms) :meth:`TradeEngine.step`:

1. books what the venue filled since the last step (each protective leg is looked up by its
   client order id; a sale is booked once, with its commission, from the venue's trades);
2. values the account (quote + every base asset at the venue's price), sets the day's starting
   equity at the first step of each UTC day, and derives the trading state
   (:func:`trader.trade.risk.trading_state`); HALTED flattens everything;
3. applies time stops (a market exit after ``risk.time_stop``);
4. enters the candidates :func:`~trader.trade.risk.select_entries` accepts, best first: a MARKET
   BUY for :func:`~trader.trade.risk.size_entry` USDT, then the exit ladder as OCOs (take profit
   LIMIT_MAKER + STOP_LOSS each); if an OCO is refused (``Order would trigger immediately``, a gap)
   that part is sold at market at once (``stop_failed``);
5. logs every decision with its reason and snapshots equity.

Every order is an :class:`~trader.exchange.trading.OrderIntent` whose id is derived from
(strategy, symbol, the entry's decision time, leg), and the ledger row is written before the next
order depends on it: a restarted engine re-runs the same step and gets the same orders back
(the client's journal, or the simulated venue's client-id lookup) — never a second one.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trader.config import RiskConfig
from trader.errors import OrderRejected
from trader.exchange.trading import OrderIntent
from trader.models import Order
from trader.trade import risk
from trader.trade.broker import Broker
from trader.trade.events import EventBus, KlineClosed, OrderUpdate, PositionChanged, RiskBreach, SignalEvent
from trader.trade.ledger import Ledger, PositionRow

__all__ = ["StepReport", "TradeEngine"]

_DAY_MS = 86_400_000
_OPEN = ("NEW", "PARTIALLY_FILLED")


@dataclass
class StepReport:
    """What one step did (for the CLI, tests and metrics)."""

    t_ms: int
    state: str
    entered: list[str] = field(default_factory=list)
    exits: list[tuple[str, str]] = field(default_factory=list)  # (symbol, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    equity: Decimal = Decimal(0)
    signal_to_order_s: list[float] = field(default_factory=list)


class TradeEngine:
    """Strategy + risk + ledger over a :class:`~trader.trade.broker.Broker`.

    Args:
        broker: where orders go (the only mode-specific part).
        ledger: the account's ledger.
        cfg: the ``risk`` section.
        min_score: the score needed (``risk.min_score`` or ``scan.min_score``).
        strategy: name in client order ids.
        quote: the quote asset (USDT).
        model_active: whether candidates carry a model probability (then ``min_confidence`` applies).
        market: ``spot`` (long only, leverage 1) or ``usdm``.
        bus: event bus (metrics and observers subscribe to it).
        virtual: where signals that pass but are not traded go (:class:`~trader.trade.virtual.VirtualBook`).
    """

    def __init__(self, broker: Broker, ledger: Ledger, cfg: RiskConfig, min_score: float, *, strategy: str = "scan",
                 quote: str = "USDT", model_active: bool = False, market: str = "spot", bus: EventBus | None = None,
                 virtual: Any = None) -> None:
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
        self.state = risk.ACTIVE
        self.exit_reasons: Counter[str] = Counter()
        self.last_step_ms: int | None = None
        self.last_step_wall: float | None = None

    # ------------------------------------------------------------------ helpers

    def _kill_switch(self) -> bool:
        f = self.cfg.kill_switch_file
        return f is not None and os.path.exists(f)

    def _record(self, o: Order, position_id: int | None, role: str, t_ms: int, latency: float | None = None) -> None:
        self.ledger.record_order(o.client_order_id, position_id, role, o.symbol, o.side, o.type, o.status, o.order_id, o.executed_qty, o.cum_quote, t_ms)
        self.bus.publish(OrderUpdate(t_ms, o.client_order_id, o.symbol, o.side, o.status, latency))

    async def equity(self) -> tuple[Decimal, Decimal]:
        """``(equity, free quote)``: the quote balance plus every open position's quantity at the
        venue's price (quote units). Dust left by rounding to the step is not valued (under one step
        per symbol), and neither are assets the engine did not buy: the plan sizes what it trades."""
        balances = await self.broker.balances([self.quote])
        q = balances.get(self.quote)
        total = q.total if q is not None else Decimal(0)
        for p in self.ledger.positions("OPEN"):
            total += p.left_qty * await self.broker.price(p.symbol)
        return total, (q.free if q is not None else Decimal(0))

    async def _sell_market(self, p: PositionRow, qty: Decimal, t_ms: int, leg: str) -> Order | None:
        rules = await self.broker.rules(p.symbol)
        qty = rules.round_qty(qty)
        price = await self.broker.price(p.symbol)
        if qty <= 0 or qty * price < rules.min_notional:
            return None
        intent = OrderIntent(self.strategy, p.symbol, p.entry_ms, leg, "SELL", "MARKET", quantity=qty)
        o = await self.broker.submit(intent)
        self._record(o, p.id, leg, t_ms)
        return o

    async def _book_sale(self, p: PositionRow, o: Order, booked: Decimal, reason: str, t_ms: int) -> PositionRow:
        """Book the part of sale ``o`` not booked yet (quote proceeds net of the commission)."""
        new = o.executed_qty - booked
        if new <= 0:
            return p
        fills = await self.broker.fills(p.symbol, o.order_id)
        total_q = sum((f.qty for f in fills), Decimal(0)) or o.executed_qty
        share = new / total_q
        quote = sum((f.price * f.qty for f in fills), Decimal(0)) or o.cum_quote
        fee = sum((f.commission for f in fills if f.commission_asset == self.quote), Decimal(0))
        p2 = self.ledger.reduce_position(p.id, new, (quote - fee) * share, fee * share, t_ms, reason)
        self.bus.publish(PositionChanged(t_ms, p.symbol, str(p2.left_qty), reason, len(self.ledger.positions("OPEN"))))
        if p2.status == "CLOSED":
            self.exit_reasons[reason] += 1
        return p2

    # ------------------------------------------------------------------ steps

    async def sync(self, t_ms: int) -> list[tuple[str, str]]:
        """Book every fill of our protective / exit orders since the last look; returns (symbol, reason) of exits."""
        out = []
        for p in self.ledger.positions("OPEN"):
            for row in self.ledger.orders(p.id):
                if row["role"] == "entry" or row["status"] not in _OPEN:
                    continue
                o = await self.broker.query(p.symbol, row["cid"])
                if o is None:
                    continue
                if o.status != row["status"] or o.executed_qty != Decimal(row["executed"]):
                    reason = _reason(row["role"])
                    p = await self._book_sale(p, o, Decimal(row["executed"]), reason, t_ms)
                    self._record(o, p.id, row["role"], t_ms)
                    if o.executed_qty > 0:
                        out.append((p.symbol, reason))
            if p.status == "OPEN" and p.left_qty > 0:
                rules = await self.broker.rules(p.symbol)
                if p.left_qty < rules.min_qty or (not [r for r in self.ledger.orders(p.id) if r["status"] in _OPEN and r["role"] != "entry"] and \
                        p.left_qty * await self.broker.price(p.symbol) < rules.min_notional):
                    self.ledger.close_dust(p.id, t_ms, "dust")
        return out

    async def close_position(self, p: PositionRow, t_ms: int, reason: str) -> None:
        """Cancel the position's protective orders and sell what is left at market (reason logged)."""
        for row in self.ledger.orders(p.id):
            if row["role"] != "entry" and row["status"] in _OPEN:
                await self.broker.cancel(p.symbol, row["cid"])
                o = await self.broker.query(p.symbol, row["cid"])
                if o is not None:
                    if o.executed_qty > Decimal(row["executed"]):  # it traded before the cancel landed
                        p = await self._book_sale(p, o, Decimal(row["executed"]), _reason(row["role"]), t_ms)
                    self._record(o, p.id, row["role"], t_ms)
        fresh = next((x for x in self.ledger.positions("OPEN") if x.id == p.id), None)
        if fresh is None:
            return
        leg = f"exit-{reason}"
        o = await self._sell_market(fresh, fresh.left_qty, t_ms, leg)
        if o is None:
            self.ledger.close_dust(fresh.id, t_ms, reason)
            self.exit_reasons[reason] += 1
            return
        await self._book_sale(fresh, o, Decimal(0), reason, t_ms)

    async def flatten(self, t_ms: int, reason: str = "flatten") -> int:
        """Close every open position; returns how many."""
        ps = self.ledger.positions("OPEN")
        for p in ps:
            await self.close_position(p, t_ms, reason)
        return len(ps)

    async def _enter(self, c: risk.Candidate, equity: Decimal, free: Decimal, report: StepReport) -> Decimal:
        rules = await self.broker.rules(c.symbol)
        quote = risk.size_entry(equity, free, self.cfg, rules)
        if quote <= 0:
            self.ledger.decision(c.t_ms, c.symbol, "skip", "size_below_min_notional", c.score, c.probability)
            return Decimal(0)
        intent = OrderIntent(self.strategy, c.symbol, c.t_ms, "entry", "BUY", "MARKET", quote_order_qty=quote)
        # the intent is in the ledger before its order leaves: a crash after the venue took it is recovered
        # at the next step (recover), whatever that step decides
        self.ledger.record_order(intent.client_order_id, None, "entry", c.symbol, "BUY", "MARKET", "PENDING", None, Decimal(0), Decimal(0), c.t_ms)
        t0 = time.perf_counter()
        try:
            o = await self.broker.submit(intent)
        except OrderRejected as exc:
            self.ledger.record_order(intent.client_order_id, None, "entry", c.symbol, "BUY", "MARKET", "REJECTED", None, Decimal(0), Decimal(0), c.t_ms)
            self.ledger.decision(c.t_ms, c.symbol, "skip", f"entry_rejected: {exc}"[:200], c.score, c.probability)
            return Decimal(0)
        report.signal_to_order_s.append(time.perf_counter() - t0)
        self.ledger.decision(c.t_ms, c.symbol, "enter", "ok", c.score, c.probability)
        if await self._after_entry(c.symbol, c.t_ms, o):
            report.entered.append(c.symbol)
        return o.cum_quote

    async def _after_entry(self, symbol: str, t_ms: int, o: Order) -> bool:
        """Book a filled entry as a position and place its protective ladder (idempotent: a recovered
        entry and a re-run decision give the same position and the same OCOs)."""
        if o.executed_qty <= 0:
            self._record(o, None, "entry", t_ms)
            return False
        rules = await self.broker.rules(symbol)
        fills = o.fills or tuple(await self.broker.fills(symbol, o.order_id))
        fee_base = sum((f.commission for f in fills if f.commission_asset != self.quote), Decimal(0))
        qty = rules.round_qty(o.executed_qty - fee_base)
        avg = o.cum_quote / o.executed_qty
        pid = self.ledger.open_position(symbol, qty, avg, t_ms, o.cum_quote, fee_base * avg, o.client_order_id, self.broker.mode)
        self._record(o, pid, "entry", t_ms)
        self.bus.publish(PositionChanged(t_ms, symbol, str(qty), "entry", len(self.ledger.positions("OPEN"))))
        await self._protect(pid, symbol, t_ms, avg, qty, rules)
        return True

    async def _protect(self, pid: int, symbol: str, t_ms: int, avg: Decimal, qty: Decimal, rules: Any) -> None:
        """Place every rung of the exit ladder not placed yet (each an OCO; the journal makes a repeat a lookup)."""
        have = {r["role"] for r in self.ledger.orders(pid)}
        for leg in risk.exit_ladder(avg, qty, self.cfg, rules):
            if leg.name in have or f"exit-stop_failed-{leg.name}" in have:
                continue
            try:
                legs = await self.broker.submit_oco(self.strategy, symbol, t_ms, leg.qty, leg.take_profit, leg.stop, leg.name)
            except OrderRejected as exc:  # e.g. "Order would trigger immediately": never leave it unprotected
                self.ledger.decision(t_ms, symbol, "exit", f"stop_failed: {exc}"[:200], None, None)
                p = next((x for x in self.ledger.positions("OPEN") if x.id == pid), None)
                if p is not None:
                    so = await self._sell_market(p, leg.qty, t_ms, f"exit-stop_failed-{leg.name}")
                    if so is not None:
                        await self._book_sale(p, so, Decimal(0), "stop_failed", t_ms)
                continue
            tp, sl = legs[0], legs[1] if len(legs) > 1 else None
            self._record(tp, pid, leg.name, t_ms)
            if sl is not None:
                self._record(sl, pid, f"stop_loss_{leg.name[-1]}", t_ms)

    async def recover(self) -> list[str]:
        """Settle what a crash left half done, before anything else: entries the ledger sent (PENDING)
        but never booked, and open positions whose ladder is incomplete. Returns the symbols touched."""
        touched = []
        for row in self.ledger.unbooked_entries():
            o = await self.broker.query(row["symbol"], row["cid"])
            if o is None:  # never reached the venue (or refused): nothing to book; a re-run decision may send it
                self.ledger.record_order(row["cid"], None, "entry", row["symbol"], "BUY", "MARKET", "ABSENT", None, Decimal(0), Decimal(0), row["updated_ms"])
                continue
            if await self._after_entry(row["symbol"], int(row["updated_ms"]), o):
                touched.append(row["symbol"])
        for p in self.ledger.positions("OPEN"):
            roles = {r["role"] for r in self.ledger.orders(p.id)}
            if any(r.startswith("exit-") for r in roles):
                continue  # being closed: no new protection
            rules = await self.broker.rules(p.symbol)
            rungs = {leg.name for leg in risk.exit_ladder(p.entry_price, p.qty, self.cfg, rules)}
            if not rungs <= roles:  # a crash between the entry and its last OCO
                await self._protect(p.id, p.symbol, p.entry_ms, p.entry_price, p.qty, rules)
                touched.append(p.symbol)
        return touched

    async def step(self, t_ms: int, candidates: list[risk.Candidate]) -> StepReport:
        """One decision at ``t_ms`` (see the module docstring)."""
        self.bus.publish(KlineClosed(t_ms))
        report = StepReport(t_ms, self.state)
        await self.recover()
        report.exits += await self.sync(t_ms)
        equity, free = await self.equity()
        day = str(t_ms // _DAY_MS)
        if self.ledger.get_meta("day") != day:
            self.ledger.set_meta("day", day)
            self.ledger.set_meta("day_start_equity", str(equity))
        day_start = Decimal(self.ledger.get_meta("day_start_equity") or equity)
        state, why = risk.trading_state(float(equity), float(day_start), self.cfg, self._kill_switch())
        if state != self.state:
            self.bus.publish(RiskBreach(t_ms, state, why))
            self.ledger.decision(t_ms, "*", "state", f"{state}: {why}", None, None)
            self.state = state
        report.state = state
        if state == risk.HALTED:
            reason = "kill_switch" if why == "kill_switch" else "daily_loss"
            for p in self.ledger.positions("OPEN"):
                await self.close_position(p, t_ms, reason)
                report.exits.append((p.symbol, reason))
        for p in self.ledger.positions("OPEN"):
            if risk.time_stop_due(p.entry_ms, t_ms, self.cfg):
                await self.close_position(p, t_ms, "time_stop")
                report.exits.append((p.symbol, "time_stop"))
        open_symbols = {p.symbol for p in self.ledger.positions("OPEN")}
        take, skipped = risk.select_entries(candidates, open_symbols, self.cfg, self.min_score, state,
                                            market=self.market, model_active=self.model_active)
        for c in take:
            self.bus.publish(SignalEvent(t_ms, c.symbol, c.score, c.probability, "enter", "ok"))
            spent = await self._enter(c, equity, free, report)
            free -= spent
        for c, reason in skipped:
            self.bus.publish(SignalEvent(t_ms, c.symbol, c.score, c.probability, "skip", reason))
            self.ledger.decision(t_ms, c.symbol, "skip", reason, c.score, c.probability)
            report.skipped.append((c.symbol, reason))
            if self.virtual is not None:
                self.virtual.add(c, reason)
        equity, _ = await self.equity()
        report.equity = equity
        self.ledger.snapshot(t_ms, equity, free, state)
        self.last_step_ms = t_ms
        self.last_step_wall = time.time()
        return report

    def summary(self) -> dict[str, Any]:
        """Closed-trade statistics from the ledger (net of fees)."""
        closed = self.ledger.positions("CLOSED")
        pnl = [float(p.pnl) for p in closed]
        reasons = Counter(p.exit_reason or "?" for p in closed)
        return {"trades": len(closed), "wins": sum(1 for x in pnl if x > 0), "pnl_quote": round(sum(pnl), 4),
                "exit_reasons": dict(sorted(reasons.items())), "open_positions": len(self.ledger.positions("OPEN"))}


def _reason(role: str) -> str:
    """The exit reason of an order role: take_profit_k, stop_loss_k -> stop_loss, exit-<reason> -> <reason>."""
    if role.startswith("exit-"):
        return role.removeprefix("exit-").split("-")[0]
    return "stop_loss" if role.startswith("stop_loss") else role

