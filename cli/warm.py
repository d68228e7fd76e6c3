"""``trader warm``: fetch missing klines over REST into the store (``--follow``: then keep it live)."""

from __future__ import annotations

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
    handle_errors,
    load,
    run,
    symbols_and_intervals,
)


@handle_errors
def warm(
    symbols: Annotated[str | None, typer.Option("--symbols", "-s", help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.", show_default=False)] = None,
    top: Annotated[int | None, typer.Option("--top", help="The N symbols with the largest 24h quote volume (TRADING, quote asset from config).", min=1, show_default=False)] = None,
    intervals: Annotated[str | None, typer.Option("--intervals", "-i", help="Comma-separated intervals (default from config: 1h,4h).", show_default=False)] = None,
    klines: Annotated[int | None, typer.Option("--klines", "-n", help="History depth per series, klines (default 1000, at most 5 000 000).", min=1, max=5_000_000, show_default=False)] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="REST requests in flight (default 20).", min=1, max=256, show_default=False)] = None,
    lock_timeout: Annotated[float | None, typer.Option("--lock-timeout", help="Seconds to wait for another warm on the same store (default 60).", min=0, show_default=False)] = None,
    deadline: Annotated[float | None, typer.Option("--deadline", help="Overall deadline of the warm, s (default 900); waits for a recovering exchange count.", min=1, show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Then keep the store live over WebSocket until SIGINT/SIGTERM.")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    rest_url: RestUrlOpt = None,
    ws_url: WsUrlOpt = None,
    store: StoreOpt = None,
) -> None:
    """Fetch only the missing closed klines into the store, within the exchange's weight limits.

    Symbols: --symbols, else --top N, else universe.symbols. Another warm on the same store makes
    this one wait (up to --lock-timeout, then exit 4).
    """
    overrides: dict[str, Any] = {}
    if concurrency is not None:
        overrides["client"] = {"concurrency": concurrency}
    warm_over = {k: v for k, v in {"klines": klines, "lock_timeout_s": lock_timeout, "deadline_s": deadline}.items() if v is not None}
    if warm_over:
        overrides["warm"] = warm_over
    settings = load(config, profile, rest_url, ws_url, store, overrides)
    wanted, ivs = symbols_and_intervals(settings, symbols, intervals)
    if follow:
        reload = (lambda: load(config, profile, rest_url, ws_url, store, overrides), config)  # the same file and flags, read again
        run(lambda stop: _follow(settings, wanted, top, ivs, as_json, stop, reload))
        return
    report = run(lambda stop: _run(settings, wanted, top, ivs, as_json))
    _render(report, as_json)
    for symbol, interval in report.repaired:
        print(f"trader: warning: {symbol} {interval}: damaged store entries quarantined and refetched", file=sys.stderr)
    for symbol, interval in report.empty:
        print(f"trader: warning: {symbol} {interval}: the exchange returned no klines (nothing stored)", file=sys.stderr)
    if report.errors:
        for err in report.errors:
            print(f"trader: error: {err.symbol} {err.interval}: {err.message}", file=sys.stderr)
        raise typer.Exit(max(e.exit_code for e in report.errors))
    if report.series and len(report.empty) == report.series:
        from trader.errors import NoResultError

        raise NoResultError("nothing warmed: the exchange returned no klines for any series")


async def _run(settings: Any, wanted: list[str], top: int | None, intervals: list[str], quiet: bool) -> Any:
    import asyncio
    import time

    from trader.errors import NetworkError
    from trader.store.klines import KlineStore
    from trader.warm import resolve_symbols, warm

    w = settings.warm
    end = time.monotonic() + w.deadline_s  # --deadline bounds the whole command: selection, lock wait and warm
    with KlineStore(settings.store_path()) as store:
        if store.lost is not None:
            print(f"trader: warning: {store.lost.split('; ')[0]}; fetching everything again", file=sys.stderr)
        async with store.writer_lock_async(min(w.lock_timeout_s, w.deadline_s)), client(settings) as rest:
            rest.set_deadline(max(end - time.monotonic(), 0.0))
            try:
                async with asyncio.timeout(max(end - time.monotonic(), 0.0)):
                    symbols = await resolve_symbols(
                        rest, symbols=wanted, top=top, configured=settings.universe.symbols, quote_asset=settings.universe.quote_asset
                    )
            except TimeoutError:
                raise NetworkError(f"deadline of {w.deadline_s:g} s reached while selecting the --top symbols") from None
            with _progress(len(symbols) * len(intervals), quiet) as progress:
                left = max(end - time.monotonic(), 0.001)
                report = await warm(rest, store, symbols, intervals, depth=w.klines, deadline_s=left, progress=progress)
        store.note_series()
        return report


def _warn_lag(lagging: list[tuple[str, str, float]]) -> None:
    worst = max(lagging, key=lambda x: x[2])
    print(
        f"trader: warning: stream lagging: {len(lagging)} series behind (worst {worst[0]} {worst[1]}, "
        f"{worst[2]:.0f} s late); backfilling over REST",
        file=sys.stderr,
        flush=True,
    )


async def _follow(settings: Any, wanted: list[str], top: int | None, intervals: list[str], as_json: bool, stop: Any,
                  reload: Any = None) -> None:
    """``--follow``: warm, then stream closed klines into the store until SIGINT/SIGTERM."""
    from trader.live import LiveFeed
    from trader.loop import follow
    from trader.store.klines import KlineStore
    from trader.warm import resolve_symbols

    w = settings.warm
    with KlineStore(settings.store_path()) as store:
        async with store.writer_lock_async(w.lock_timeout_s), client(settings) as rest:
            symbols = await resolve_symbols(
                rest, symbols=wanted, top=top, configured=settings.universe.symbols, quote_asset=settings.universe.quote_asset
            )
            feed = LiveFeed(rest, store, symbols, intervals, settings.exchange.ws_url, stream_cfg=settings.stream, depth=w.klines,
                            deadline_s=w.deadline_s, on_lag=_warn_lag)
            async with feed:
                _render(feed.warm_report, as_json)
                for err in feed.warm_report.errors:
                    print(f"trader: warning: {err.symbol} {err.interval}: {err.message}", file=sys.stderr)
                print(f"follow: {len(feed.live)} streams live; SIGINT/SIGTERM stops", file=sys.stderr, flush=True)
                reloading = None
                if reload is not None:  # hot reload: universe.symbols additions are followed (SIGHUP / --config change)
                    import asyncio
                    from pathlib import Path

                    from trader.reload import ConfigReloader

                    pending: set[asyncio.Task[Any]] = set()

                    def apply(new: Any, diff: dict[str, Any]) -> None:
                        added = [s for s in new.universe.symbols if s not in feed.symbols]
                        if added:
                            async def add() -> None:
                                await feed.add_symbols(added)
                                print(f"follow: now following {', '.join(added)} ({len(feed.live)} streams live)", file=sys.stderr, flush=True)

                            task = asyncio.create_task(add())
                            pending.add(task)
                            task.add_done_callback(pending.discard)

                    reloader = ConfigReloader(reload[0], settings, apply)
                    reloading = asyncio.create_task(reloader.run(Path(reload[1]) if reload[1] else None, stop))
                try:
                    await follow(feed, stop, lambda st: print(st.line(), file=sys.stderr, flush=True), every_s=settings.stream.status_every_s)
                finally:
                    if reloading is not None:
                        reloading.cancel()
    print(f"follow: stopped; persisted {feed.stats.persisted_klines} closed klines", file=sys.stderr, flush=True)


class _progress:
    """Rich progress bar on a TTY; a plain line every 10 % otherwise (cron logs); nothing with --json."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self._bar: Any = None
        self._task: Any = None
        self._next_pct = 10

    def __enter__(self) -> Any:
        if not self.quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("warm"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def __call__(self, done: int, total: int, symbol: str, interval: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=f"{symbol} {interval}")
        elif not self.quiet and total and done * 100 >= self._next_pct * total:
            print(f"warm: {done}/{total} series ({done * 100 // total}%)", file=sys.stderr, flush=True)
            while self._next_pct <= done * 100 // total:
                self._next_pct += 10

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _render(report: Any, as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="warm summary", show_header=False, box=None, pad_edge=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("symbols", report.symbols),
        ("series", report.series),
        ("series already up to date", report.up_to_date),
        ("candles fetched", report.candles_fetched),
        ("candles new to the store", report.candles_added),
        ("requests (klines)", f"{report.requests} ({report.kline_requests})"),
        ("retries / rate limited", f"{report.retries} / {report.rate_limited}"),
        ("waits for a recovering exchange", report.breaker_waits),
        ("series retried in a later round", report.series_retries),
        ("request weight used (1m)", report.weight_used),
        ("gaps repaired / exchange gaps", f"{report.gaps_repaired} / {report.exchange_gaps}"),
        ("errors", len(report.errors)),
        ("seconds", f"{report.seconds:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    Console().print(table)
