"""LiveFeed: a REST-initialised, WebSocket-fed kline cache that never misses a closed kline.

Start: an incremental REST warm brings the store up to date, the :class:`LiveCache` is seeded
from it, then one :class:`KlineStream` subscribes every series. From then on:

- a closed kline (``x: true``) is appended to its ring in O(1) and to the per-series indicator
  state (O(1), :class:`~trader.features.indicators.IndicatorState`); a forming one only replaces
  the ring's ``forming`` row — it never reaches the store;
- a closed kline that would leave a hole (events missed while a socket was down or a frame was
  lost) is held back while the missing klines are fetched over REST, then everything is applied
  in open-time order — the same happens for every series of a connection after a reconnect;
- every ``snapshot_s`` (and at stop) the closed klines not yet persisted are appended to the
  :class:`KlineStore` (one transaction per series).

The scanner reads the cache through :meth:`LiveFeed.load`, the :meth:`KlineStore.load` signature,
with zero REST calls per scan. Use it as ``async with LiveFeed(...) as feed`` (started on entry,
stopped and persisted on exit); the loops that drive it live in :mod:`trader.loop`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trader.config import IndicatorConfig, StreamConfig
from trader.errors import NetworkError, TraderError
from trader.exchange.rest import BinanceClient
from trader.exchange.stream import KlineStream
from trader.features.indicators import IndicatorState
from trader.models import (
    CLOSE,
    CLOSE_TIME,
    HIGH,
    LOW,
    OHLCVQ,
    OPEN_TIME,
    QUOTE_VOLUME,
    VOLUME,
    check_klines,
    interval_ms,
)
from trader.store.klines import KlineStore
from trader.store.live import APPENDED, GAP, LiveCache
from trader.warm import WarmReport, last_closed_open_ms, warm

__all__ = ["FeedStats", "LiveFeed"]

CloseCallback = Callable[[str, str, int], None]
LagCallback = Callable[[list[tuple[str, str, float]]], None]


@dataclass
class FeedStats:
    """Counters of a feed: closed klines applied, backfills (and klines they fetched), snapshots."""

    closed_applied: int = 0
    forming_updates: int = 0
    backfills: int = 0
    backfilled_klines: int = 0
    snapshots: int = 0
    persisted_klines: int = 0
    lag_events: int = 0  #: watchdog checks that found lagging series
    lagging: int = 0  #: series lagging at the last check


class LiveFeed:
    """Keep a live cache (and the store) current from the stream, with REST backfill.

    Args:
        client: an entered REST client (warm and backfill).
        store: the kline store (the caller holds its writer lock when persisting).
        symbols, intervals: the series to follow.
        ws_url: WebSocket base URL (the profile's ``ws_url``).
        stream_cfg: the ``stream`` config section (connections, cache capacity, persist period).
        capacity: klines kept per series in memory (default ``stream_cfg.capacity``; a live scan
            passes at least its lookback).
        indicators: keep O(1) indicator state per series (None = do not).
        on_close: called as ``on_close(symbol, interval, open_time_ms)`` after each closed kline is applied.
        depth: klines of history the initial warm ensures.
        deadline_s: deadline of the initial warm, s.
        on_lag: called with ``[(symbol, interval, seconds late), ...]`` when the watchdog finds
            series whose newest closed kline is overdue (they are then backfilled over REST).

    Attributes:
        warm_report: what the initial warm did (after entry).
        live: the series subscribed (those whose warm succeeded).
    """

    def __init__(
        self,
        client: BinanceClient,
        store: KlineStore,
        symbols: Sequence[str],
        intervals: Sequence[str],
        ws_url: str = "",
        *,
        stream_cfg: StreamConfig | None = None,
        capacity: int | None = None,
        indicators: IndicatorConfig | None = None,
        on_close: CloseCallback | None = None,
        depth: int = 1000,
        deadline_s: float | None = None,
        on_lag: LagCallback | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.symbols = list(symbols)
        self.intervals = list(intervals)
        self.ws_url = ws_url
        self.stream_cfg = stream_cfg or StreamConfig()
        self.cache = LiveCache(capacity or self.stream_cfg.capacity)
        self.snapshot_s = self.stream_cfg.snapshot_s
        self.params = indicators
        self.on_close = on_close
        self.depth = depth
        self.deadline_s = deadline_s
        self.warm_report = WarmReport()
        self.live: list[tuple[str, str]] = []
        self.on_lag = on_lag
        self._watch_task: asyncio.Task[None] | None = None
        self.stats = FeedStats()
        self.states: dict[tuple[str, str], IndicatorState] = {}
        self.stream: KlineStream | None = None
        self._held: dict[tuple[str, str], list[np.ndarray]] = {}
        self._backfilling: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._persisted: dict[tuple[str, str], int] = {}
        self._snap_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LiveFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, ws_url: str | None = None) -> None:
        """Warm over REST, seed the cache, subscribe; returns once every connection is subscribed."""
        report = await warm(self.client, self.store, self.symbols, self.intervals, depth=self.depth, deadline_s=self.deadline_s)
        self.warm_report = report
        failed = {(e.symbol, e.interval) for e in report.errors}
        series = [(s, i) for s in self.symbols for i in self.intervals if (s, i) not in failed]
        self.live = series
        for key in series:
            cols = self.store.load(*key, limit=self.cache.capacity)
            self.cache.seed(*key, cols)
            if cols.shape[1]:
                self._persisted[key] = int(cols[OPEN_TIME, -1])
            self._reset_state(key)
        url = ws_url or self.ws_url
        self.stream = KlineStream(url, series, self._on_kline, self._on_reconnect, self.stream_cfg)
        await self.stream.start()
        deadline = self.stream_cfg.connect_deadline_s
        try:
            async with asyncio.timeout(deadline):
                await self.stream.ready.wait()
        except TimeoutError:
            why = self.stream.last_error or "no answer"
            await self.stream.stop()
            raise NetworkError(f"cannot open the WebSocket stream at {url} within {deadline:g} s ({why})") from None
        if self.stream.fatal is not None:
            await self.stream.stop()
            raise NetworkError(f"cannot open the WebSocket stream: {self.stream.fatal}")
        # klines that closed between the warm and the subscription
        await asyncio.gather(*(self.backfill(*key) for key in series))
        if self.snapshot_s > 0:
            self._snap_task = asyncio.create_task(self._snapshot_loop())
        self._watch_task = asyncio.create_task(self._watchdog())

    async def add_symbols(self, symbols: Sequence[str]) -> list[tuple[str, str]]:
        """Follow more symbols while running (a config reload's universe additions): warm them over
        REST, seed their cache, stream them, backfill what closed meanwhile. Returns the series added."""
        new_syms = [s for s in symbols if s not in self.symbols]
        if not new_syms or self.stream is None:
            return []
        report = await warm(self.client, self.store, new_syms, self.intervals, depth=self.depth, deadline_s=self.deadline_s)
        failed = {(e.symbol, e.interval) for e in report.errors}
        series = [(s, i) for s in new_syms for i in self.intervals if (s, i) not in failed]
        self.symbols.extend(new_syms)
        for key in series:
            cols = self.store.load(*key, limit=self.cache.capacity)
            self.cache.seed(*key, cols)
            if cols.shape[1]:
                self._persisted[key] = int(cols[OPEN_TIME, -1])
            self._reset_state(key)
        self.live.extend(series)
        await self.stream.add(series)
        await asyncio.gather(*(self.backfill(*key) for key in series))
        return series

    async def stop(self) -> None:
        """Unsubscribe, finish backfills, persist what is left."""
        for task in (self._snap_task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.stream is not None:
            await self.stream.stop()
        for task in list(self._backfilling.values()):
            with contextlib.suppress(Exception):
                await task
        self.snapshot()

    # ------------------------------------------------------------------ reads

    def load(self, symbol: str, interval: str, limit: int | None = None) -> np.ndarray:
        """Newest closed klines ``(11, n)`` from memory (the :meth:`KlineStore.load` layout)."""
        return self.cache.load(symbol, interval, limit)

    # ------------------------------------------------------------------ events

    def _reset_state(self, key: tuple[str, str]) -> None:
        if self.params is None:
            return
        v = self.cache.load(*key)
        if v.shape[1] > self.params.warmup + 1:
            o, h, lo, c, vol, q = (v[r][None] for r in OHLCVQ)
            self.states[key] = IndicatorState.from_history(o, h, lo, c, vol, q, self.params)
        else:
            self.states.pop(key, None)

    def _apply_closed(self, key: tuple[str, str], row: np.ndarray) -> str:
        ring = self.cache.ring(*key)
        status = ring.append(row)
        if status == APPENDED:
            self.stats.closed_applied += 1
            state = self.states.get(key)
            if state is not None:
                state.update(*(row[r : r + 1] for r in (HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME)))
            if self.on_close is not None:
                self.on_close(key[0], key[1], int(row[OPEN_TIME]))
        return status

    def _on_kline(self, symbol: str, interval: str, row: np.ndarray, closed: bool, event_ms: int) -> None:
        key = (symbol, interval)
        if not closed:
            self.cache.ring(*key).set_forming(row)
            self.stats.forming_updates += 1
            return
        if key in self._backfilling:
            self._held.setdefault(key, []).append(row)
            return
        if self._apply_closed(key, row) == GAP:
            self._held.setdefault(key, []).append(row)
            self._backfilling[key] = asyncio.create_task(self._backfill_task(key))

    async def _on_reconnect(self, series: list[tuple[str, str]]) -> None:
        await asyncio.gather(*(self.backfill(s, i) for s, i in series))

    async def _backfill_task(self, key: tuple[str, str]) -> None:
        try:
            await self.backfill(*key)
        finally:
            self._backfilling.pop(key, None)

    async def backfill(self, symbol: str, interval: str) -> int:
        """Fetch over REST the closed klines the ring misses up to the exchange's now, apply them and
        any held stream events in open-time order. Returns klines fetched."""
        key = (symbol, interval)
        ring = self.cache.ring(*key)
        last = ring.last_open_ms
        now = await self.client.fetch_server_time()
        newest = last_closed_open_ms(now, interval)
        fetched = 0
        if last is not None and last < newest:
            block = await self.client.fetch_klines(symbol, interval, last + interval_ms(interval), newest)
            block = block[:, block[CLOSE_TIME] < now]
            check_klines(block, interval, f"{symbol} {interval}")
            fetched = int(block.shape[1])
            for j in range(fetched):
                self._apply_closed(key, block[:, j])
            self.stats.backfills += 1
            self.stats.backfilled_klines += fetched
        held = sorted(self._held.pop(key, []), key=lambda r: r[OPEN_TIME])
        gap_left = False
        for r in held:
            if self._apply_closed(key, r) == GAP:
                gap_left = True
        if gap_left:  # the exchange itself lacks klines there: rebuild indicator state, go on from the newest
            self._reset_state(key)
        return fetched

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> int:
        """Append every closed kline not yet persisted to the store; returns how many."""
        total = 0
        for key, ring in self.cache.rings.items():
            v = ring.view()
            if v.shape[1] == 0:
                continue
            done = self._persisted.get(key, -1)
            new = v[:, v[OPEN_TIME] > done]
            if new.shape[1]:
                self.store.append(key[0], key[1], new)
                self._persisted[key] = int(new[OPEN_TIME, -1])
                total += int(new.shape[1])
        self.stats.snapshots += 1
        self.stats.persisted_klines += total
        return total

    def overdue(self, now_ms: int) -> list[tuple[str, str, float]]:
        """Live series whose newest closed kline is more than ``lag_grace_s`` overdue at exchange time
        ``now_ms``: ``[(symbol, interval, seconds late)]``. Pure."""
        grace_ms = self.stream_cfg.lag_grace_s * 1000
        out = []
        for symbol, interval in self.live:
            last = self.cache.ring(symbol, interval).last_open_ms
            due = last_closed_open_ms(now_ms, interval)
            if last is not None and last < due:
                late_ms = now_ms - (due + interval_ms(interval))  # how long ago the missing kline closed
                if late_ms > grace_ms:
                    out.append((symbol, interval, late_ms / 1000.0))
        return out

    async def _watchdog(self) -> None:
        """Every ``watchdog_s``: compare the cache with the exchange's clock; report and backfill lagging series."""
        while True:
            await asyncio.sleep(self.stream_cfg.watchdog_s)  # the check period, not request pacing
            try:
                now = await self.client.fetch_server_time()
            except TraderError:
                continue  # the REST side is unwell: the next check will tell
            lagging = [key for key in self.overdue(now) if (key[0], key[1]) not in self._backfilling]
            self.stats.lagging = len(lagging)
            if not lagging:
                continue
            self.stats.lag_events += 1
            if self.on_lag is not None:
                self.on_lag(lagging)
            for symbol, interval, _ in lagging:
                key = (symbol, interval)
                self._backfilling[key] = asyncio.create_task(self._backfill_task(key))

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot_s)  # the persist period, not request pacing
            self.snapshot()
