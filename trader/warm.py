"""``warm``: bring the KlineStore up to date over REST, fetching only what is missing.

Plan per (symbol, interval), from the store's meta and the exchange's clock (pure,
:func:`plan_series`):

- the newest *closed* kline is the one before the kline containing the server's now; a series whose
  newest stored kline is already that one costs **no request at all**;
- otherwise fetch from the last stored open time + 1 interval up to it (paging by open time), and,
  if the store holds less history than ``depth`` klines, the missing older part too (unless the
  exchange is known to have nothing older);
- holes inside the stored range are refetched once; holes the exchange still lacks afterwards are
  recorded as exchange gaps (maintenance windows) and reported, never refetched again.

Series run concurrently under the client's bound; one failing series (an invalid symbol) is
reported and the others still complete. An exchange that turns unhealthy opens the client's
circuit breaker; the remaining series then *wait* for its half-open trial instead of failing, and
a series whose request failed for a reason that may pass (network, 5xx, 429) is tried again in a
later round — all up to the warm's overall ``deadline_s``, after which what is left is reported. Each append is one store transaction, so a warm killed at any
moment leaves a consistent store that the next warm completes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trader.errors import ConfigError, NetworkError, TraderError
from trader.exchange.rest import BinanceClient
from trader.models import CLOSE_TIME, OPEN_TIME, interval_ms, kline_open_ms
from trader.store.klines import KlineStore, missing_ranges

__all__ = [
    "SeriesError",
    "WarmReport",
    "last_closed_open_ms",
    "plan_series",
    "resolve_symbols",
    "select_top",
    "warm",
]

Progress = Callable[[int, int, str, str], None]
_MAX_ROUNDS = 50  # series-level retry rounds of one warm (each after a growing pause), within the deadline


def last_closed_open_ms(now_ms: int, interval: str) -> int:
    """Open time of the newest kline that has closed at ``now_ms`` (the one before the forming one). Pure."""
    return kline_open_ms(now_ms, interval) - interval_ms(interval)


def plan_series(
    first_open_ms: int | None,
    last_open_ms: int | None,
    history_start_ms: int | None,
    now_ms: int,
    interval: str,
    depth: int,
) -> list[tuple[int, int]]:
    """Open-time ranges to fetch for one series. Pure.

    Args:
        first_open_ms: oldest stored open time, or None if nothing is stored.
        last_open_ms: newest stored open time, or None.
        history_start_ms: oldest open time the exchange has (recorded earlier), or None if unknown.
        now_ms: the exchange's current time, epoch ms.
        interval: e.g. ``"1h"``.
        depth: klines of history wanted up to the newest closed one.

    Returns:
        ``[(start_open_ms, end_open_ms), ...]`` inclusive; empty when nothing can be new.
    """
    step = interval_ms(interval)
    newest = last_closed_open_ms(now_ms, interval)
    wanted_first = newest - (depth - 1) * step
    if history_start_ms is not None:
        wanted_first = max(wanted_first, history_start_ms)
    if first_open_ms is None or last_open_ms is None:
        return [(wanted_first, newest)] if wanted_first <= newest else []
    ranges = []
    if first_open_ms > wanted_first:
        ranges.append((wanted_first, first_open_ms - step))
    if last_open_ms < newest:
        ranges.append((last_open_ms + step, newest))
    return ranges


def select_top(tickers: Sequence[dict[str, Any]], exchange_info: dict[str, Any], n: int, quote_asset: str) -> list[str]:
    """The ``n`` symbols with the largest 24h quote volume that are TRADING in ``quote_asset``. Pure."""
    tradable = {
        s["symbol"]
        for s in exchange_info.get("symbols", [])
        if s.get("status") == "TRADING" and s.get("quoteAsset") == quote_asset
    }
    ranked = sorted(
        (t for t in tickers if t.get("symbol") in tradable),
        key=lambda t: float(t.get("quoteVolume") or 0.0),
        reverse=True,
    )
    return [t["symbol"] for t in ranked[:n]]


async def resolve_symbols(
    client: BinanceClient,
    *,
    symbols: Sequence[str] = (),
    top: int | None = None,
    configured: Sequence[str] = (),
    quote_asset: str = "USDT",
) -> list[str]:
    """The symbols a command works on, by one rule: ``--symbols`` > ``--top N`` > ``universe.symbols``.

    ``top`` asks the exchange (24h tickers + exchangeInfo: weight 100) for the ``top`` TRADING
    symbols in ``quote_asset`` by 24h quote volume; while the exchange is down (retryable errors,
    an open breaker) it asks again after growing pauses until the client's deadline.

    Raises:
        ConfigError: nothing to work on (no symbols, no ``top``, nothing configured).
    """
    if symbols:
        return list(symbols)
    if top is not None:
        rounds = 0
        while True:  # like a kline request: an exchange that is down is waited out, up to the deadline
            try:
                tickers, info = await asyncio.gather(client.fetch_ticker_24hr(), client.fetch_exchange_info())
                return select_top(tickers, info, top, quote_asset)
            except TraderError as exc:
                left = None if client.deadline is None else client.deadline - client.breaker.now()
                rounds += 1
                if not exc.retryable or left is None or left <= 0 or rounds > _MAX_ROUNDS:
                    raise
                await client.sleep(min(2.0**rounds, 30.0, left))
    if configured:
        return list(configured)
    raise ConfigError("no symbols: pass --symbols A,B or --top N, or set universe.symbols in the config")


@dataclass(frozen=True)
class SeriesError:
    """A series that could not be warmed, with the one-line reason."""

    symbol: str
    interval: str
    message: str
    exit_code: int


@dataclass
class WarmReport:
    """What a warm did.

    Attributes:
        symbols, series: how many were asked for.
        up_to_date: series that needed no request.
        candles_fetched: closed klines received and stored.
        candles_added: klines that were new to the store.
        requests, kline_requests, retries, rate_limited: client counters.
        weight_used: highest X-MBX-USED-WEIGHT-1M seen.
        gaps_repaired: holes refilled; exchange_gaps: holes recorded as the exchange's own.
        server_time_ms: exchange time the plan was made at.
        seconds: wall time of the warm.
        breaker_waits: requests that waited for an open circuit breaker to recover.
        series_retries: series tried again in a later round after a retryable failure.
        empty: series for which the exchange returned no kline at all and nothing is stored.
        repaired: series whose damaged store entries were quarantined (and are being refetched).
        errors: series that failed for good (a non-retryable error, or the deadline).
    """

    symbols: int = 0
    series: int = 0
    up_to_date: int = 0
    candles_fetched: int = 0
    candles_added: int = 0
    requests: int = 0
    kline_requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    weight_used: int = 0
    gaps_repaired: int = 0
    exchange_gaps: int = 0
    server_time_ms: int = 0
    seconds: float = 0.0
    breaker_waits: int = 0
    series_retries: int = 0
    empty: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[tuple[str, str]] = field(default_factory=list)
    errors: list[SeriesError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``errors`` as a list of dicts)."""
        out = dict(self.__dict__)
        out["errors"] = [e.__dict__ for e in self.errors]
        out["empty"] = [list(k) for k in self.empty]
        out["repaired"] = [list(k) for k in self.repaired]
        out["seconds"] = round(self.seconds, 4)
        return out


async def _warm_series(
    client: BinanceClient,
    store: KlineStore,
    symbol: str,
    interval: str,
    now_ms: int,
    depth: int,
    report: WarmReport,
) -> None:
    step = interval_ms(interval)
    if store.check(symbol, interval):  # damaged or misplaced entries: quarantine them, then plan the refetch
        store.repair(symbol, interval)
        report.repaired.append((symbol, interval))
    meta = store.meta(symbol, interval)
    gap_ranges = store.gaps(symbol, interval) if meta else []
    ranges = plan_series(
        meta["first_open_ms"] if meta else None,
        meta["last_open_ms"] if meta else None,
        meta.get("history_start_ms") if meta else None,
        now_ms,
        interval,
        depth,
    )
    if not ranges and not gap_ranges:
        report.up_to_date += 1
        return
    stored_first = meta["first_open_ms"] if meta else None
    for start, end in ranges:
        block = await client.fetch_klines(symbol, interval, start, end)
        block = block[:, block[CLOSE_TIME] < now_ms]  # closed klines only (store.append validates the block)
        n = int(block.shape[1])
        report.candles_fetched += n
        older = stored_first is None or end < stored_first  # a cold fetch or an older-history backfill
        if n == 0:
            if older and stored_first is not None:  # the exchange has nothing before what we hold
                store.record_history_start(symbol, interval, int(stored_first))
            continue
        report.candles_added += store.append(symbol, interval, block)
        if older and int(block[OPEN_TIME, 0]) > start:  # history starts later (listing date): not a gap
            store.record_history_start(symbol, interval, int(block[OPEN_TIME, 0]))
        holes = missing_ranges(block[OPEN_TIME], step)
        store.record_exchange_gaps(symbol, interval, holes)
        report.exchange_gaps += len(holes)
    if store.last_open_time(symbol, interval) is None:
        report.empty.append((symbol, interval))
    for start, end in gap_ranges:
        block = await client.fetch_klines(symbol, interval, start, end)
        block = block[:, block[CLOSE_TIME] < now_ms]
        report.candles_fetched += int(block.shape[1])
        if block.shape[1]:
            report.candles_added += store.append(symbol, interval, block)
        still = [g for g in store.gaps(symbol, interval) if g[0] <= end and g[1] >= start]
        store.record_exchange_gaps(symbol, interval, still)
        report.exchange_gaps += len(still)
        report.gaps_repaired += 0 if still else 1


async def warm(
    client: BinanceClient,
    store: KlineStore,
    symbols: Sequence[str],
    intervals: Sequence[str],
    *,
    depth: int = 1000,
    deadline_s: float | None = None,
    progress: Progress | None = None,
) -> WarmReport:
    """Bring ``store`` up to date for every (symbol, interval).

    Args:
        client: an entered :class:`BinanceClient`.
        store: the kline store (the caller holds its writer lock).
        symbols: e.g. ``["BTCUSDT", "ETHUSDT"]``.
        intervals: e.g. ``["1h", "4h"]``.
        depth: klines of history per series (``--klines``).
        deadline_s: overall deadline, s: requests waiting for an open circuit breaker give up then
            (None = the client's own deadline, if any).
        progress: called as ``progress(done, total, symbol, interval)`` after each series.

    Returns:
        A :class:`WarmReport`; failed series are in ``report.errors`` (the others are warmed).

    Raises:
        TraderError: only if the exchange's clock cannot be read at all (nothing can be planned).
    """
    t0 = time.perf_counter()
    if deadline_s is not None:
        client.set_deadline(deadline_s)
    end = None if deadline_s is None else asyncio.get_running_loop().time() + deadline_s  # one deadline for all of it
    report = WarmReport(symbols=len(symbols), series=len(symbols) * len(intervals))
    local_before = time.time()
    try:
        async with asyncio.timeout_at(end):
            now_ms = await client.fetch_server_time()
    except TimeoutError:
        raise NetworkError(f"deadline of {deadline_s:g} s reached before the exchange told its time") from None
    local_ms = int((local_before + time.time()) / 2 * 1000)
    store.set_clock(now_ms, local_ms)
    report.server_time_ms = now_ms
    sem = asyncio.Semaphore(client.cfg.concurrency)
    total = report.series
    done = 0
    retry: list[tuple[str, str, TraderError]] = []

    def time_left() -> float | None:
        return None if client.deadline is None else client.deadline - client.breaker.now()

    finished: set[tuple[str, str]] = set()

    async def one(symbol: str, interval: str) -> None:
        nonlocal done
        async with sem:
            try:
                await _warm_series(client, store, symbol, interval, now_ms, depth, report)
            except TraderError as exc:
                left = time_left()
                if exc.retryable and (left is None or left > 0):
                    retry.append((symbol, interval, exc))  # a slow minute: try this series again later
                    return
                report.errors.append(SeriesError(symbol, interval, str(exc), exc.exit_code))
        finished.add((symbol, interval))
        done += 1
        if progress is not None:
            progress(done, total, symbol, interval)

    async def rounds_until_done() -> None:
        nonlocal retry
        pending = [(s, i) for s in symbols for i in intervals]
        rounds = 0
        while pending:
            await asyncio.gather(*(one(s, i) for s, i in pending))
            if not retry:
                return
            rounds += 1
            left = time_left()
            if (left is not None and left <= 0) or rounds > _MAX_ROUNDS:
                for symbol, interval, exc in retry:
                    why = "deadline reached" if left is not None and left <= 0 else f"gave up after {rounds} rounds"
                    report.errors.append(SeriesError(symbol, interval, f"{exc} ({why})", exc.exit_code))
                    finished.add((symbol, interval))
                return
            report.series_retries += len(retry)
            pause = min(2.0**rounds, 30.0, left if left is not None else 30.0)
            await client.sleep(max(pause, 0.0))  # let the exchange recover; a Retry-After is honoured by the budget
            pending, retry = [(s, i) for s, i, _ in retry], []

    try:
        # the overall deadline also bounds requests that are merely slow; appends are synchronous, so a
        # cancellation lands between requests and every series is stored as before or after an append
        async with asyncio.timeout_at(end):
            await rounds_until_done()
    except TimeoutError:
        reported = {(e.symbol, e.interval) for e in report.errors}
        for s, i in ((s, i) for s in symbols for i in intervals):
            if (s, i) not in finished and (s, i) not in reported:
                report.errors.append(SeriesError(s, i, f"deadline of {deadline_s:g} s reached before this series was warmed", 3))
    st = client.stats
    report.requests = st.requests
    report.kline_requests = st.kline_requests
    report.retries = st.retries
    report.rate_limited = st.rate_limited
    report.weight_used = st.weight_used
    report.breaker_waits = st.breaker_waits
    report.seconds = time.perf_counter() - t0
    report.errors.sort(key=lambda e: (e.symbol, e.interval))
    return report
