"""``trader scan``: score the universe from the store and print what passes ``--min-score``.

Start-up is part of the product (cron runs it every few minutes): this path imports numpy,
diskcache, pydantic, typer and rich only — never pandas, xgboost or sklearn (a test checks).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import ConfigOpt, ProfileOpt, RestUrlOpt, StoreOpt, WsUrlOpt, fail, handle_errors, load
from cli.warm import split_list

FORMATS = ("table", "json", "csv", "ndjson")


@handle_errors
def scan(
    min_score: Annotated[float | None, typer.Option("--min-score", "-m", help="Print symbols scoring at or above this (0-100, default 75).", min=0, max=100, show_default=False)] = None,
    top: Annotated[int | None, typer.Option("--top", help="Print at most N signals.", min=1, show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | ndjson.")] = "table",
    symbols: Annotated[str | None, typer.Option("--symbols", "-s", help="Comma-separated symbols (default: every stored symbol).", show_default=False)] = None,
    intervals: Annotated[str | None, typer.Option("--intervals", "-i", help="Comma-separated intervals, base first (default 1h,4h).", show_default=False)] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="vectorized | serial | threads | processes.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Pool size for threads/processes.", min=1, show_default=False)] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Run an incremental warm first (one cron line does both).")] = False,
    live: Annotated[bool, typer.Option("--live", help="Warm once, subscribe over WebSocket, rescan on every base-interval close; zero REST per scan.")] = False,
    every: Annotated[float | None, typer.Option("--every", help="With --live: also rescan every this many seconds.", min=0.1, show_default=False)] = None,
    max_scans: Annotated[int | None, typer.Option("--max-scans", help="With --live: stop after N scans.", min=1, show_default=False)] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    rest_url: RestUrlOpt = None,
    ws_url: WsUrlOpt = None,
    store: StoreOpt = None,
) -> None:
    """Score every stored symbol (no network unless --refresh) and print those at or above --min-score.

    Exit 0 when at least one symbol passes, 1 when none does, 2-5 on errors (README, "Exit codes").
    """
    if fmt not in FORMATS:
        raise fail(f"invalid --format {fmt!r}; expected one of {', '.join(FORMATS)}", 2)
    from trader.models import parse_interval, validate_symbol

    scan_over: dict[str, Any] = {k: v for k, v in {"min_score": min_score, "strategy": strategy, "workers": workers}.items() if v is not None}
    settings = load(config, profile, rest_url, ws_url, store, {"scan": scan_over} if scan_over else None)
    wanted = [validate_symbol(s) for s in split_list(symbols)] or None
    ivs = [parse_interval(i) for i in split_list(intervals)] or list(settings.universe.intervals)
    path = settings.store_path()

    if live:
        import asyncio

        asyncio.run(_live(settings, wanted, ivs, fmt, top, every, max_scans))
        return
    if refresh:
        import asyncio

        asyncio.run(_refresh(settings, wanted, ivs))
    from trader.errors import StoreError

    if not path.is_dir():
        raise StoreError(f"no kline store at {path}; run 'trader warm' first (or pass --refresh)")

    from cli.render import render_scan
    from trader.scan import Scanner, ScanParams
    from trader.store.klines import KlineStore

    params = ScanParams.from_settings(settings, ivs)
    with KlineStore(path) as kstore, Scanner(kstore, params, settings.scan.strategy, settings.scan.workers) as scanner:
        universe = wanted if wanted is not None else scanner.universe()
        if not universe:
            raise StoreError(f"the store at {path} has no symbol with {', '.join(ivs)} klines; run 'trader warm' first")
        result = scanner.scan(universe)
    threshold = settings.scan.min_score
    passing = result.passing(threshold)
    if top is not None:
        passing = passing[:top]
    render_scan(result, passing, fmt, threshold, ivs)
    if not passing:
        raise typer.Exit(1)


async def _refresh(settings: Any, wanted: list[str] | None, intervals: list[str]) -> None:
    """Incremental warm of the scan universe (stored symbols, or --symbols) before scoring."""
    import sys

    from trader.exchange.rest import BinanceClient
    from trader.store.klines import KlineStore
    from trader.warm import warm

    with KlineStore(settings.store_path()) as store, store.writer_lock(settings.warm.lock_timeout_s):
        symbols = wanted or sorted({s for s, _ in store.series()}) or list(settings.universe.symbols)
        if not symbols:
            raise fail("--refresh: the store is empty and no symbols are configured; run 'trader warm --top N' once", 2)
        async with BinanceClient(settings.exchange, settings.client) as client:
            report = await warm(client, store, symbols, intervals, depth=settings.warm.klines)
    for err in report.errors:
        print(f"trader: warning: refresh {err.symbol} {err.interval}: {err.message}", file=sys.stderr)


async def _live(settings: Any, wanted: list[str] | None, intervals: list[str], fmt: str, top: int | None, every: float | None, max_scans: int | None) -> None:
    """``scan --live``: rescan from the live cache on every base-interval close (and/or every N s)."""
    import asyncio
    import sys

    from cli.live import live_feed, stop_on_signals
    from cli.render import render_scan
    from trader.scan import Scanner, ScanParams
    from trader.store.klines import KlineStore

    stop = stop_on_signals()
    if wanted is None:
        with KlineStore(settings.store_path()) as s:
            wanted = sorted({sym for sym, _ in s.series()}) or list(settings.universe.symbols)
    if not wanted:
        raise fail("--live: no symbols: pass --symbols, or warm the store first", 2)
    trigger = asyncio.Event()
    base = intervals[0]
    closed_at: dict[int, int] = {}

    def on_close(symbol: str, interval: str, open_ms: int) -> None:
        if interval == base:
            closed_at[open_ms] = closed_at.get(open_ms, 0) + 1
            if closed_at[open_ms] == len(wanted):  # every symbol's kline closed: one scan per close
                trigger.set()

    params = ScanParams.from_settings(settings, intervals)
    line_fmt = "table" if sys.stdout.isatty() and fmt == "table" else ("ndjson" if fmt == "table" else fmt)
    scans = 0
    async with live_feed(settings, wanted, intervals, on_close=on_close) as feed:
        with Scanner(feed.store, params, settings.scan.strategy, settings.scan.workers, loader=feed.load) as scanner:
            trigger.set()  # a first scan right away
            while not stop.is_set():
                waiters = [asyncio.ensure_future(trigger.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=every, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if stop.is_set():
                    break
                trigger.clear()
                result = scanner.scan(wanted)
                passing = result.passing(settings.scan.min_score)[: top or None]
                render_scan(result, passing, line_fmt, settings.scan.min_score, intervals)
                scans += 1
                if max_scans is not None and scans >= max_scans:
                    break
