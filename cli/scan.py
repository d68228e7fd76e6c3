"""``trader scan``: score the universe from the store and print what passes ``--min-score``.

Start-up is part of the product (cron runs it every few minutes): this path imports numpy,
diskcache, pydantic, typer and rich only — never pandas, xgboost or sklearn (a test checks).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

from cli.common import (
    ConfigOpt,
    ProfileOpt,
    RestUrlOpt,
    StoreOpt,
    WsUrlOpt,
    client,
    fail,
    handle_errors,
    load,
    run,
    symbols_and_intervals,
)

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
    no_model: Annotated[bool, typer.Option("--no-model", help="Ignore the active model: print the hand-made factor score (no onnxruntime).")] = False,
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
    scan_over: dict[str, Any] = {k: v for k, v in {"min_score": min_score, "strategy": strategy, "workers": workers}.items() if v is not None}
    settings = load(config, profile, rest_url, ws_url, store, {"scan": scan_over} if scan_over else None)
    wanted, ivs = symbols_and_intervals(settings, symbols, intervals)
    path = settings.store_path()

    if live:
        reload = lambda: load(config, profile, rest_url, ws_url, store, {"scan": scan_over} if scan_over else None)  # noqa: E731
        run(lambda stop: _live(settings, wanted, ivs, fmt, top, every, max_scans, stop, no_model, reload, config))
        return
    if refresh:
        run(lambda stop: _refresh(settings, wanted, ivs))
    from trader.errors import NoResultError, StaleDataError, StoreError

    if not path.is_dir():
        raise StoreError(f"no kline store at {path}; run 'trader warm' first (or pass --refresh)")

    from cli.render import print_notes, render_scan
    from trader.ml.predict import ActiveModel
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    model = None if no_model else ActiveModel.from_store(path)
    with KlineStore(path) as kstore, Scanner(kstore, settings.scan, ivs, model=model) as scanner:
        if kstore.lost is not None:
            from trader.errors import StoreLostError

            raise StoreLostError(kstore.lost)
        if wanted:
            stored = {sym for sym, iv in kstore.series() if iv in ivs}
            missing = [w for w in wanted if w not in stored]
            if missing and len(missing) == len(wanted):
                raise StoreError(
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: no {'/'.join(ivs)} klines in the store at {path}; "
                    f"run 'trader warm -s {','.join(missing[:5])}' (or scan --refresh)"
                )
            for m in missing:
                print(f"trader: warning: {m}: no {'/'.join(ivs)} klines in the store; not scanned (run 'trader warm -s {m}')", file=sys.stderr)
            wanted = [w for w in wanted if w in stored]
        universe = wanted or scanner.universe()
        if not universe:
            raise StoreError(f"the store at {path} has no symbol with {', '.join(ivs)} klines; run 'trader warm' first")
        result = scanner.scan(universe)
    stale_model_warning(result, model, settings)
    threshold = settings.scan.min_score
    passing = result.passing(threshold)
    if top is not None:
        passing = passing[:top]
    render_scan(result, passing, fmt, threshold, ivs)
    print_notes(result)
    if not result.signals:
        raise StaleDataError(
            f"nothing could be scored: {len(result.stale)} stale, {len(result.insufficient)} too short, "
            f"{len(result.errors)} failed of {result.universe} symbols; run 'trader warm' (or scan --refresh)"
        )
    if not passing:
        raise NoResultError(f"no symbol scores {threshold:g} or more ({len(result.signals)} scored)")


def stale_model_warning(result: Any, model: Any, settings: Any) -> None:
    """Warn (in ``result.warnings``) when the scanned klines are in-sample for the model, or long after it."""
    from trader.models import duration_ms

    if model is None or not result.signals:
        return
    note = model.data_note(max(s.close_time_ms for s in result.signals), duration_ms(settings.ml.max_age))
    if note:
        result.warnings.append(note)


async def _refresh(settings: Any, wanted: list[str], intervals: list[str]) -> None:
    """Incremental warm of the scan universe (stored symbols, or --symbols) before scoring."""
    import sys

    from trader.store.klines import KlineStore
    from trader.warm import warm

    with KlineStore(settings.store_path()) as store:
        async with store.writer_lock_async(settings.warm.lock_timeout_s):
            symbols = wanted or sorted({s for s, _ in store.series()}) or list(settings.universe.symbols)
            if not symbols:
                raise fail("--refresh: the store is empty and no symbols are configured; run 'trader warm --top N' once", 2)
            async with client(settings) as rest:
                report = await warm(rest, store, symbols, intervals, depth=settings.warm.klines, deadline_s=settings.warm.deadline_s)
    for err in report.errors:
        print(f"trader: warning: refresh {err.symbol} {err.interval}: {err.message}", file=sys.stderr)


async def _status_lines(feed: Any, stop: Any, every_s: float) -> None:
    """``scan --live``'s stderr status line every ``every_s`` (cron and systemd logs see reconnects,
    malformed frames and lag; a terminal sees them too)."""
    from trader.loop import status_of

    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            print(status_of(feed).line().replace("follow:", "scan --live:", 1), file=sys.stderr, flush=True)


async def _live(
    settings: Any, wanted: list[str], intervals: list[str], fmt: str, top: int | None, every: float | None, max_scans: int | None, stop: Any,
    no_model: bool = False, reload: Any = None, config_path: Any = None,
) -> None:
    """``scan --live``: rescan from the live cache on every base-interval close (and/or every N s)."""
    import sys

    from cli.render import print_notes, render_scan
    from cli.warm import _warn_lag
    from trader.live import LiveFeed
    from trader.loop import CloseBarrier, live_scans
    from trader.ml.predict import ActiveModel
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    sc = settings.scan
    model = None if no_model else ActiveModel.from_store(settings.store_path())
    line_fmt = "table" if sys.stdout.isatty() and fmt == "table" else ("ndjson" if fmt == "table" else fmt)
    with KlineStore(settings.store_path()) as store:
        symbols = wanted or sorted({sym for sym, _ in store.series()}) or list(settings.universe.symbols)
        if not symbols:
            raise fail("--live: no symbols: pass --symbols, or warm the store first", 2)
        async with store.writer_lock_async(settings.warm.lock_timeout_s), client(settings) as rest:
            barrier = CloseBarrier((), intervals[0], sc.live_wait_s)
            feed = LiveFeed(
                rest,
                store,
                symbols,
                intervals,
                settings.exchange.ws_url,
                stream_cfg=settings.stream,
                capacity=max(settings.stream.capacity, sc.lookback),
                on_close=barrier.on_close,
                depth=settings.warm.klines,
                deadline_s=settings.warm.deadline_s,
                on_lag=_warn_lag,
            )
            async with feed:
                for err in feed.warm_report.errors:
                    print(f"trader: warning: {err.symbol} {err.interval}: {err.message}", file=sys.stderr)
                barrier.expected = {s for s, i in feed.live if i == intervals[0]}
                status = asyncio.create_task(_status_lines(feed, stop, settings.stream.status_every_s))
                live_cfg = {"scan": sc}
                reloading = None
                try:
                    with Scanner(store, sc, intervals, loader=feed.load, model=model) as scanner:
                        if reload is not None:  # hot reload: weights, factors and thresholds from the next scan
                            from pathlib import Path

                            from trader.reload import ConfigReloader

                            def apply(new: Any, diff: dict[str, Any]) -> None:
                                live_cfg["scan"] = new.scan
                                scanner.params = new.scan.model_copy(update={"lookback": scanner.params.lookback})

                            reloader = ConfigReloader(reload, settings, apply)
                            reloading = asyncio.create_task(reloader.run(Path(config_path) if config_path else None, stop))
                        async for result in live_scans(feed, scanner, barrier, stop, every_s=every, max_scans=max_scans):
                            min_score = live_cfg["scan"].min_score
                            passing = result.passing(min_score)[: top or None]
                            render_scan(result, passing, line_fmt, min_score, intervals)
                            print_notes(result)
                finally:
                    status.cancel()
                    if reloading is not None:
                        reloading.cancel()
