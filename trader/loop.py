"""The on-close loops shared by ``warm --follow``, ``scan --live`` and (later) the trade engine.

- :class:`CloseBarrier` turns per-series close events into one "the base interval closed" event:
  it fires when every *live* symbol (those whose warm succeeded and that are subscribed) has closed
  the same kline, or ``wait_s`` after the first of them did — a symbol whose stream lags or died
  never stops the rescans — and it forgets every close it has fired for, so it never grows.
- :func:`live_scans` yields a scan right away, then one per barrier event (and/or every
  ``every_s``), from the feed's in-memory cache: zero REST calls per scan.
- :func:`follow` keeps a feed running until ``stop`` is set, reporting a status line periodically.

No I/O of its own, no rendering: callers pass callbacks (the CLI prints; the engine trades).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from trader.live import LiveFeed
from trader.scan import Scanner, ScanResult

__all__ = ["CloseBarrier", "FollowStatus", "follow", "live_scans", "status_of"]


class CloseBarrier:
    """One event per close of the base interval across a set of symbols.

    Args:
        symbols: the symbols expected to close (the live ones).
        interval: the base interval; closes of other intervals are ignored.
        wait_s: after the first close of a kline, fire anyway after this many seconds.

    Attributes:
        ready: set when a close is complete (or timed out); the consumer clears it.
        fired_ms: open time of the newest kline fired for (-1 before any).
    """

    def __init__(self, symbols: Iterable[str], interval: str, wait_s: float = 5.0) -> None:
        self.expected = set(symbols)
        self.interval = interval
        self.wait_s = wait_s
        self.ready = asyncio.Event()
        self.fired_ms = -1
        self._pending: dict[int, set[str]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def on_close(self, symbol: str, interval: str, open_ms: int) -> None:
        """Feed one closed kline (the :class:`~trader.live.LiveFeed` ``on_close`` callback)."""
        if interval != self.interval or symbol not in self.expected or open_ms <= self.fired_ms:
            return
        seen = self._pending.setdefault(open_ms, set())
        seen.add(symbol)
        if seen >= self.expected:
            self._fire(open_ms)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        if self._pending:
            self._fire(max(self._pending))

    def _fire(self, open_ms: int) -> None:
        self.fired_ms = max(self.fired_ms, open_ms)
        self._pending = {k: v for k, v in self._pending.items() if k > self.fired_ms}
        if self._timer is not None and not self._pending:
            self._timer.cancel()
            self._timer = None
        self.ready.set()

    def pending(self) -> int:
        """Klines seen but not yet fired for (bounded: fired ones are dropped)."""
        return len(self._pending)


async def _first(*waits: asyncio.Event, timeout: float | None) -> None:
    tasks = [asyncio.ensure_future(e.wait()) for e in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def live_scans(
    feed: LiveFeed,
    scanner: Scanner,
    barrier: CloseBarrier,
    stop: asyncio.Event,
    *,
    every_s: float | None = None,
    max_scans: int | None = None,
) -> AsyncIterator[ScanResult]:
    """Scans of the live symbols: one at once, then one per complete close (and every ``every_s``).

    Args:
        feed: a started feed whose ``on_close`` feeds ``barrier``.
        scanner: a scanner reading ``feed.load``.
        barrier: the close barrier over the live symbols.
        stop: set to end the loop (SIGINT/SIGTERM).
        every_s: also rescan this often, s (None = only on closes).
        max_scans: stop after this many scans.
    """
    symbols = sorted({s for s, _ in feed.live})
    scans = 0
    first = True
    while not stop.is_set():
        if not first:
            await _first(barrier.ready, stop, timeout=every_s)
            if stop.is_set():
                return
        first = False
        barrier.ready.clear()
        yield scanner.scan(symbols)
        scans += 1
        if max_scans is not None and scans >= max_scans:
            return


@dataclass(frozen=True)
class FollowStatus:
    """A status line's numbers: closed klines applied, backfilled, persisted; reconnects; malformed
    frames; series lagging at the last watchdog check and checks that found any."""

    closed: int
    backfilled: int
    persisted: int
    reconnects: int
    malformed: int
    lagging: int = 0
    lag_events: int = 0

    def line(self) -> str:
        """``follow: closed klines 12, backfilled 0, persisted 10, reconnects 0, malformed 0, lagging 0 (0)``."""
        return (
            f"follow: closed klines {self.closed}, backfilled {self.backfilled}, persisted {self.persisted}, "
            f"reconnects {self.reconnects}, malformed {self.malformed}, lagging {self.lagging} ({self.lag_events} times)"
        )


def status_of(feed: LiveFeed) -> FollowStatus:
    """The feed's counters now."""
    fs = feed.stats
    st = feed.stream.stats if feed.stream is not None else None
    return FollowStatus(
        fs.closed_applied, fs.backfilled_klines, fs.persisted_klines, st.reconnects if st else 0, st.malformed if st else 0,
        fs.lagging, fs.lag_events,
    )


async def follow(feed: LiveFeed, stop: asyncio.Event, report: Callable[[FollowStatus], None], every_s: float = 60.0) -> FollowStatus:
    """Keep ``feed`` running until ``stop`` is set, calling ``report`` every ``every_s`` seconds.

    Returns:
        The final counters.
    """
    while not stop.is_set():
        await _first(stop, timeout=every_s)
        if not stop.is_set():
            report(status_of(feed))
    return status_of(feed)
