"""Paper and live trading of the ``portfolio`` plan on a USD-M venue (the replay's ``/fapi`` or Binance).

**The venue is the truth.** Nothing about positions is kept locally: at every decision the trader
reads the account (equity, positions) from the venue, computes the sleeves' target weights
(:class:`~trader.trade.portfolio.SleeveBook`, the backtest's rules) and trades the differences.
What survives a crash is small and written atomically after each decision (``<state>.json``: the
sleeves' picks, symbols sitting out after a stop, post-only orders waiting, the day's starting
equity, the last decision time) plus the order journal. Every order has a deterministic client id
(``pf``, symbol, decision time, leg): a decision re-run after a crash places nothing twice — the
journal and a look-up by ``origClientOrderId`` settle what was in flight (:class:`~trader.exchange.futures.FuturesClient`).

A decision (:meth:`PortfolioTrader.decide`) at time ``t`` (a close of ``trade.decision_interval``):
warm the store (incremental), score the moment with the scanner and the model
(:class:`~trader.trade.signals.StoreDecider`), rank by the model's probability, rebalance sleeve
``t / interval mod S``, cancel our resting orders, send each symbol's difference post-only at the
touch (GTX) — or MARKET when it has waited ``maker_wait`` decisions —, and keep one reduce-only
``closePosition`` STOP_MARKET ``stop_loss`` from each position's entry. A stop that fired (its symbol
flat with the stop FILLED) keeps the symbol out for one horizon. Daily loss limits: REDUCING (no
position grows), HALTED (flat, until the next UTC day); the kill-switch file flattens and halts.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from trader.config import Settings
from trader.errors import ExchangeError, OrderRejected
from trader.models import duration_ms
from trader.trade.portfolio import SleeveBook, choose_leverage

__all__ = ["PortfolioState", "PortfolioTrader"]

D0 = Decimal(0)
STRATEGY = "pf"


@dataclass
class PortfolioState:
    """What a portfolio trader keeps between decisions (JSON, replaced atomically)."""

    last_t: int = 0
    longs: list[list[str]] = field(default_factory=list)
    shorts: list[list[str]] = field(default_factory=list)
    blocked_until: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    stops: dict[str, str] = field(default_factory=dict)  # symbol -> client id of its stop
    day: int = -1
    day_start: float = 0.0
    halted_day: int = -1

    @classmethod
    def load(cls, path: Path) -> PortfolioState:
        if not path.exists():
            return cls()
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            from trader.errors import StoreError

            raise StoreError(f"{path}: not a portfolio state file ({exc}); move it aside to start afresh") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self.__dict__, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class PortfolioTrader:
    """The portfolio plan against a USD-M venue (module docstring).

    Args:
        settings: the configuration (``risk``, ``risk.portfolio``, ``trade``).
        fc: an entered :class:`~trader.exchange.futures.FuturesClient` (its journal on disk).
        decider: a :class:`~trader.trade.signals.StoreDecider` (warm + score).
        symbols: the universe; state_path: the state file.
    """

    def __init__(self, settings: Settings, fc: Any, decider: Any, symbols: list[str], state_path: Path) -> None:
        self.settings = settings
        self.cfg = settings.risk.portfolio
        if self.cfg.market != "usdm":
            from trader.errors import ConfigError

            raise ConfigError("paper/live --plan portfolio trades USD-M (risk.portfolio.market: usdm); spot is backtest-only")
        self.fc = fc
        self.decider = decider
        self.symbols = symbols
        self.state_path = state_path
        self.state = PortfolioState.load(state_path)
        self.decision_ms = duration_ms(settings.trade.decision_interval)
        self.n_sleeves = max(1, duration_ms(self.cfg.horizon) // self.decision_ms)
        self.book = SleeveBook(self.cfg, self.n_sleeves)
        if len(self.state.longs) == self.n_sleeves:
            self.book.longs, self.book.shorts = self.state.longs, self.state.shorts
        self.leverage: int | None = None
        self.log: list[str] = []

    def _say(self, msg: str) -> None:
        self.log.append(msg)

    async def decide(self, t: int) -> dict[str, Any]:
        """One decision at close time ``t`` (epoch ms); returns what it did."""
        fc, cfg, risk = self.fc, self.cfg, self.settings.risk
        await fc.resolve_journal()
        if self.leverage is None:
            from trader.usdm import bundled_brackets

            tiers = {s: b for s, b in bundled_brackets().items() if s in self.symbols}
            self.leverage = choose_leverage(cfg, risk, tiers)
        await self.decider.warm()
        cands = self.decider.candidates(t, 0.0)
        probs = {c.symbol: c.probability for c in cands if c.probability is not None}
        tradable = []
        for s in sorted(probs):
            try:
                await fc.contract(s)
                tradable.append(s)
            except OrderRejected:
                continue
        ranked = sorted(tradable, key=lambda s: (-probs[s], s))
        acct = await fc.futures_account()
        equity = float(acct.margin_balance)
        held = {p.symbol: p for p in await fc.positions()}
        st = self.state
        # stops that fired: the symbol sits out one horizon
        for s, cid in list(st.stops.items()):
            if s not in held:
                o = await fc.query_order(s, client_order_id=cid)
                if o is not None and o.status == "FILLED":
                    st.blocked_until[s] = t + duration_ms(cfg.horizon)
                st.stops.pop(s, None)
        day = t // 86_400_000
        if day != st.day:
            st.day, st.day_start = day, equity
        loss = 1 - equity / st.day_start if st.day_start > 0 else 0.0
        kill = risk.kill_switch_file is not None and Path(risk.kill_switch_file).exists()
        halted = kill or loss >= risk.daily_loss_limit or st.halted_day == day
        if halted:
            st.halted_day = day
        reducing = loss >= risk.reduce_at
        blocked = {s for s, until in st.blocked_until.items() if until > t}
        if not halted:
            self.book.rebalance(t // self.decision_ms, ranked, blocked)
            target = self.book.weights()
        else:
            target = {}
        # our resting (non-stop) orders of earlier decisions are re-priced: cancel them first (not this
        # decision's own: a decision re-run after a crash finds them by client id and leaves them working)
        for o in await fc.open_orders():
            if o.client_order_id.startswith("t") and o.type == "LIMIT" and o.time_ms < t:
                await fc.cancel_order(o.symbol, order_id=o.order_id)
        from trader.exchange.futures import FuturesIntent

        sent = []
        for s in sorted(set(target) | set(held)):
            rules = await fc.contract(s)
            mark = await fc.mark_price(s)
            pos_amt = held[s].amount if s in held else D0
            want = (Decimal(repr(target.get(s, 0.0) * equity)) / mark / rules.step).to_integral_value(ROUND_DOWN) * rules.step
            delta = want - pos_amt
            if reducing and abs(want) > abs(pos_amt) and want * pos_amt >= 0:
                delta = D0
            if delta == 0 or abs(delta) < rules.min_qty or (want != 0 and abs(delta) < abs(want) * Decimal(repr(cfg.min_trade))):
                st.pending.pop(s, None)
                continue
            reduce = want * pos_amt >= 0 and abs(want) < abs(pos_amt)
            if not reduce and abs(delta) * mark < rules.min_notional:
                st.pending.pop(s, None)
                continue
            if s not in held:
                await fc.ensure_margin_type(s, "ISOLATED")
                await fc.ensure_leverage(s, self.leverage)
            side = "BUY" if delta > 0 else "SELL"
            waited = st.pending.get(s, 0)
            try:
                if waited >= cfg.maker_wait:
                    intent = FuturesIntent(STRATEGY, s, t, "tk", side, "MARKET", quantity=abs(delta), reduce_only=reduce)
                    o = await fc.submit(intent, ref_price=mark)
                    st.pending.pop(s, None)
                else:
                    bid, ask = await fc.book(s)
                    intent = FuturesIntent(STRATEGY, s, t, "mk", side, "LIMIT", quantity=abs(delta), price=bid if side == "BUY" else ask,
                                           time_in_force="GTX", reduce_only=reduce)
                    o = await fc.submit(intent, ref_price=mark)
                    st.pending[s] = waited + 1
                sent.append((s, side, str(abs(delta)), o.type, o.status))
            except OrderRejected as exc:
                self._say(f"{s}: {exc}")
                st.pending.pop(s, None)
        await self._stops(t)
        st.last_t = t
        st.longs, st.shorts = self.book.longs, self.book.shorts
        st.save(self.state_path)
        return {"t": t, "equity": equity, "halted": halted, "reducing": reducing, "targets": len(target), "orders": sent,
                "ranked": len(ranked)}

    async def _stops(self, t: int) -> None:
        """One reduce-only closePosition STOP_MARKET per position, ``stop_loss`` from its entry."""
        from trader.exchange.futures import FuturesIntent

        fc, st = self.fc, self.state
        stop = Decimal(repr(self.settings.risk.stop_loss))
        for p in await fc.positions():
            rules = await fc.contract(p.symbol)
            px = p.entry_price * (1 - stop) if p.amount > 0 else p.entry_price * (1 + stop)
            px = rules.round_price(px, up=p.amount < 0)
            # one stop per state of the position (its last change), so a re-opened position gets a new one
            intent = FuturesIntent(STRATEGY, p.symbol, p.update_ms, "stopL" if p.amount > 0 else "stopS", "SELL" if p.amount > 0 else "BUY",
                                   "STOP_MARKET", stop_price=px, close_position=True, working_type="MARK_PRICE")
            cid = intent.client_order_id
            if st.stops.get(p.symbol) == cid:
                continue
            old = st.stops.get(p.symbol)
            if old is not None:
                await fc.cancel_order(p.symbol, client_order_id=old)
            try:
                await fc.submit(intent, ref_price=p.mark_price)
                st.stops[p.symbol] = cid
            except (OrderRejected, ExchangeError) as exc:  # already through the stop: the next decision trades it
                self._say(f"{p.symbol}: stop not placed: {exc}")

    async def run(self, steps: int | None, stop_event: asyncio.Event) -> list[dict[str, Any]]:
        """Decide at every close of the decision interval on the venue's clock (a missed close at
        once), until ``steps`` decisions or ``stop_event``."""
        out: list[dict[str, Any]] = []
        await self.fc.sync_time()
        while steps is None or len(out) < steps:
            now = self.fc.clock.now_ms()
            last_close = now // self.decision_ms * self.decision_ms
            if last_close > self.state.last_t:
                out.append(await self.decide(last_close))
                continue
            wait_ms = last_close + self.decision_ms - now
            speed = max(self.fc.clock.speed, 1e-9)
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=wait_ms / speed / 1000 + 0.05)
                break
            except TimeoutError:
                continue
        return out
