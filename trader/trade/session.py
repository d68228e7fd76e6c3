"""The one trading loop of ``trader trade`` (paper against a venue, paper with local fills, live).

:class:`TradingSession` owns the schedule and everything around the engine's steps, for every
broker alike; ``cli/`` only wires objects and prints:

- **start**: the journal's orders in flight settled (found, or proven absent), then a full
  reconciliation with the venue (:meth:`~trader.trade.engine.TradeEngine.reconcile`);
- **schedule**: a decision at every close of ``trade.decision_interval`` (the venue's clock, at the
  replay's speed); a close missed while the process was down is decided at once on restart;
- **a decision** (:meth:`TradingSession.decide`): warm the store (incremental), let a local broker
  read the new klines, score the moment (:class:`~trader.trade.signals.StoreDecider`), step the
  engine, persist what must survive (the last decision time; the keyless account's ``sim_*`` rows),
  settle virtual positions on the store's klines;
- **between decisions**: fills reported by the user-data stream (or, without one, a poll every
  ``trade.fill_poll_s``) are booked by a light reconciliation; a stream reconnect triggers one too.

Metrics go to the :class:`~trader.trade.observe.Observer` (loop lag, signal to order, equity).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trader.trade.engine import TradeEngine
from trader.trade.types import StepReport

__all__ = ["Clock", "SessionReport", "TradingSession"]


class Clock(Protocol):
    """The venue's clock as the session needs it (:class:`~trader.exchange.trading.ServerClock`)."""

    speed: float

    def now_ms(self) -> int: ...


@dataclass
class SessionReport:
    """What a session did: decisions, and the loop lag / signal-to-order samples (seconds).

    A loop lag is the time from a close to the loop acting on it, for closes the loop was waiting
    for; a close that passed while the previous decision was still running is an *overrun* instead
    (the decision took longer than the interval: at a fast replay speed, or a slow venue)."""

    decisions: int = 0
    overruns: int = 0
    lags_s: list[float] = field(default_factory=list)
    signal_to_order_s: list[float] = field(default_factory=list)
    light_reconciles: int = 0


class TradingSession:
    """Run decisions on schedule with one engine (see the module docstring).

    Args:
        engine: the engine (its broker decides paper / live / local).
        decider: :class:`~trader.trade.signals.StoreDecider` (``warm()`` and ``candidates(t, min_score)``).
        interval_ms: the decision interval, ms.
        clock: the venue's clock; sync: re-syncs it with the venue (awaited before each decision).
        steps: stop after this many decisions (None: until ``stop``).
        poll_s: between decisions, how often to look at working orders without a user-data stream (s).
        refresh: a local broker's hook, called with the decision time after the warm (reads the new klines).
        persist: called after each decision (e.g. the keyless account's rows to the ledger).
        settle_virtual: settles virtual positions up to a time, in a worker thread (None: no virtual book).
        observer: metrics (:class:`~trader.trade.observe.Observer`), or None.
        user_data: a user-data stream with ``run(stop)`` whose callbacks call :meth:`wake`, or None.
        on_step: called with each :class:`~trader.trade.types.StepReport` (the CLI prints a status line).
    """

    def __init__(
        self,
        engine: TradeEngine,
        decider: Any,
        *,
        interval_ms: int,
        clock: Clock,
        sync: Callable[[], Awaitable[int]],
        steps: int | None = None,
        poll_s: float = 1.0,
        refresh: Callable[[int], None] | None = None,
        persist: Callable[[], None] | None = None,
        settle_virtual: Callable[[int], int] | None = None,
        observer: Any = None,
        user_data: Any = None,
        on_step: Callable[[StepReport], None] | None = None,
    ) -> None:
        self.engine = engine
        self.decider = decider
        self.interval_ms = interval_ms
        self.clock = clock
        self._sync = sync
        self.steps = steps
        self.poll_s = poll_s
        self.refresh = refresh
        self.persist = persist
        self.settle_virtual = settle_virtual
        self.observer = observer
        self.user_data = user_data
        self.on_step = on_step
        self.report = SessionReport()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something happened on the account (a fill, a reconnect): look at it now, not at the next poll."""
        self._wake.set()

    async def start(self) -> Any:
        """Settle the journal and reconcile with the venue before anything else; returns the report."""
        await self._sync()
        return await self.engine.reconcile(self.clock.now_ms())

    async def decide(self, t_ms: int) -> StepReport:
        """One decision at ``t_ms`` (a close + 1 ms): warm, score, step, persist."""
        await self.decider.warm()
        if self.refresh is not None:
            self.refresh(t_ms)
        candidates = await asyncio.to_thread(self.decider.candidates, t_ms, self.engine.min_score)
        rep = await self.engine.step(t_ms, candidates)
        if self.persist is not None:
            self.persist()
        self.engine.ledger.set_meta("last_step_ms", str(t_ms))
        if self.settle_virtual is not None and self.engine.ledger.open_virtual():
            await asyncio.to_thread(self.settle_virtual, t_ms)
        return rep

    async def run(self, stop: asyncio.Event) -> SessionReport:
        """Decide at every close until ``stop`` is set or ``steps`` decisions are done."""
        iv = self.interval_ms
        last = int(self.engine.ledger.get_meta("last_step_ms") or 0)
        tasks = [asyncio.create_task(self.user_data.run(stop))] if self.user_data is not None else []
        rep = self.report
        next_poll = time.monotonic() + self.poll_s
        busy_until = 0  # venue time when the last decision ended
        try:
            while not stop.is_set():
                now = self.clock.now_ms()
                t = now // iv * iv
                if t > last:
                    lag_s = (now - t) / 1000.0 / max(self.clock.speed, 1e-9)
                    if t <= busy_until:  # the previous decision was still running at this close
                        rep.overruns += 1
                    elif rep.decisions:  # the first decision catches up with a close from before the start: not a lag
                        rep.lags_s.append(lag_s)
                        if self.observer is not None:
                            self.observer.lag.observe(lag_s)
                    await self._sync()
                    step = await self.decide(t)
                    busy_until = self.clock.now_ms()
                    last = t
                    rep.decisions += 1
                    rep.signal_to_order_s += step.signal_to_order_s
                    if self.observer is not None:
                        for s in step.signal_to_order_s:
                            self.observer.signal_to_order.observe(s)
                        self.observer.equity.set(float(step.equity))
                    if self.on_step is not None:
                        self.on_step(step)
                    if self.steps is not None and rep.decisions >= self.steps:
                        break
                elif self.refresh is None and (self._wake.is_set() or time.monotonic() >= next_poll):
                    # between decisions: book what the venue filled (protective legs) without waiting for the next close
                    self._wake.clear()
                    next_poll = time.monotonic() + self.poll_s
                    if self.engine.ledger.orders(unsettled=True):
                        await self.engine.reconcile(self.clock.now_ms(), full=False)
                        rep.light_reconciles += 1
                # wake at the next close (the venue's clock may run faster than the wall: the replay's speed)
                to_close = ((t + iv) - self.clock.now_ms()) / 1000.0 / max(self.clock.speed, 1e-9)
                wait = max(min(self.poll_s, to_close), 0.0)
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({stopper, waker}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    waker.cancel()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - a stream's last error is not the session's
                    pass
        return rep
