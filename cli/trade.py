"""``trader trade``: backtest, paper (default) or live — one engine, one risk plan, one ledger.

``trader trade --backtest --from DATE --to DATE [--json]`` replays the plan over the store;
``trader trade`` / ``--paper`` trades against the profile's venue (the replay exchange by default)
with the keys in the environment; ``--live`` requires keys, a non-replay profile and a typed
confirmation unless ``--yes``. ``trader trade status|positions|history|flatten`` read the ledger.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import ConfigOpt, ProfileOpt, RestUrlOpt, StoreOpt, WsUrlOpt, fail, handle_errors, load, split_list

trade_app = typer.Typer(help="Trade scan signals under the risk plan: backtest, paper (default) or live.", add_completion=False,
                        invoke_without_command=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
LedgerOpt = Annotated[Path | None, typer.Option("--ledger", help="Ledger file (default: one per profile and key in trade.ledger_dir).", show_default=False)]


def _ledger_path(settings: Any, api_key: str | None, ledger: Path | None) -> Path:
    if ledger is not None:
        return ledger
    import platformdirs

    root = settings.trade.ledger_dir or Path(platformdirs.user_data_dir("trader", appauthor=False))
    key_id = hashlib.sha256((api_key or "paper").encode()).hexdigest()[:10]
    return Path(root) / f"ledger-{settings.profile}-{key_id}.sqlite"


def _date(text: str | None, flag: str) -> int | None:
    from trader.ml.jobs import parse_date

    return parse_date(text, flag)


@trade_app.callback()
@handle_errors
def trade(
    ctx: typer.Context,
    backtest: Annotated[bool, typer.Option("--backtest", help="Replay the plan over the store (no orders sent).")] = False,
    paper: Annotated[bool, typer.Option("--paper", help="Trade on the profile's venue (default: the replay exchange).")] = False,
    live: Annotated[bool, typer.Option("--live", help="Trade real money (keys required; asks for confirmation).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Skip the --live confirmation.")] = False,
    frm: Annotated[str | None, typer.Option("--from", help="Backtest: first decision, UTC date or ISO time.", show_default=False)] = None,
    to: Annotated[str | None, typer.Option("--to", help="Backtest: end (exclusive), UTC date or ISO time.", show_default=False)] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", "-s", help="Comma-separated symbols (default: every stored symbol).", show_default=False)] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Backtest: random-entry baseline runs.", min=0, max=50)] = 3,
    cash: Annotated[float, typer.Option("--cash", help="Backtest: starting quote balance (USDT).", min=10)] = 10_000.0,
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT of /health and /metrics (port 0 = free, printed).", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Paper/live: stop after this many decisions.", min=1, show_default=False)] = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None, ws_url: WsUrlOpt = None, store: StoreOpt = None,
) -> None:
    """Backtest (``--backtest``), paper-trade (default) or trade live (``--live``)."""
    if ctx.invoked_subcommand is not None:
        ctx.ensure_object(dict)
        ctx.obj.update(config=config, profile=profile, rest_url=rest_url, ws_url=ws_url, store=store, ledger=ledger, as_json=as_json)
        return
    if sum((backtest, paper, live)) > 1:
        raise fail("choose one of --backtest, --paper, --live", 2)
    settings = load(config, profile, rest_url, ws_url, store)
    wanted = [s.upper() for s in split_list(symbols)]
    if backtest:
        _backtest(settings, wanted, _date(frm, "--from"), _date(to, "--to"), seeds, cash, ledger, as_json)
        return
    mode = "live" if live else "paper"
    if live:
        if settings.profile == "replay":
            raise fail("--live trades on a real exchange: choose --profile binance-spot or binance-testnet", 2)
        if not yes:
            typed = typer.prompt(f"Trade REAL money on {settings.profile} ({settings.exchange.rest_url})? Type LIVE to go on", default="")
            if typed != "LIVE":
                raise fail("not confirmed; nothing was done", 2)
    _trade(settings, wanted, mode, listen or settings.trade.listen, steps, ledger)


def _backtest(settings: Any, wanted: list[str], start: int | None, end: int | None, seeds: int, cash: float, ledger: Path | None, as_json: bool) -> None:
    import orjson

    from trader.trade.run import backtest

    out = backtest(settings, settings.store_path(), start, end, symbols=wanted or None, cash=cash, baseline_seeds=seeds,
                   ledger_path=ledger, progress=lambda m: print(f"trader trade: {m}", file=sys.stderr, flush=True))
    if as_json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from rich.console import Console

    b = out["baseline"]
    w = out["window"]
    c = Console()
    c.print(f"backtest {w['decisions']} decisions x {w['symbols']} symbols, min score {out['min_score']}, model {'on' if out['model_active'] else 'off'}")
    c.print(f"  trades {out['trades']} (wins {out['wins']}), net return {out['net_return']:+.2%}, max drawdown {out['max_drawdown']:.2%}, "
            f"exposure {out['exposure']:.1%}, fees {out['fees_paid_quote']:.2f} USDT")
    c.print(f"  exits {out['exit_reasons']}")
    if b["seeds"]:
        c.print(f"  random-entry baseline ({b['seeds']} seeds): mean {b['net_return_mean']:+.2%}, range {b['net_return_min']:+.2%} .. {b['net_return_max']:+.2%}"
                f" -> the plan {'beats' if out['beats_baseline'] else 'does NOT beat'} every random run")
    c.print(f"  {out['seconds']['total']:.1f} s")


def _trade(settings: Any, wanted: list[str], mode: str, listen: str, steps: int | None, ledger: Path | None) -> None:
    from cli.common import run

    run(lambda stop: _trade_loop(settings, wanted, mode, listen, steps, ledger, stop))


async def _trade_loop(settings: Any, wanted: list[str], mode: str, listen: str, steps: int | None, ledger_file: Path | None, stop: Any) -> None:
    import asyncio

    from trader.errors import ConfigError
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import load_credentials
    from trader.exchange.trading import TradingClient
    from trader.models import interval_ms
    from trader.store.klines import KlineStore
    from trader.trade.broker import VenueBroker
    from trader.trade.engine import TradeEngine
    from trader.trade.ledger import Ledger
    from trader.trade.observe import Observer
    from trader.trade.run import paper_step, reconcile

    creds = load_credentials()
    if creds is None:
        if mode == "live":
            raise ConfigError("--live needs keys: export TRADER_API_KEY and TRADER_API_SECRET (or TRADER_ED25519_KEY_FILE)")
        await _local_loop(settings, wanted, listen, steps, ledger_file, stop)
        return
    path = _ledger_path(settings, creds.api_key, ledger_file)
    lg = Ledger(path)
    host, _, port = listen.rpartition(":")
    try:
        async with BinanceClient(settings.exchange, settings.client) as rest:
            tc = TradingClient(rest, creds, OrderJournal(path))
            broker = VenueBroker(tc, mode)
            min_score = settings.risk.min_score if settings.risk.min_score is not None else settings.scan.min_score
            engine = TradeEngine(broker, lg, settings.risk, min_score, strategy=settings.trade.strategy, quote=settings.universe.quote_asset)
            iv = interval_ms(settings.trade.decision_interval)
            observer = Observer(engine.bus, mode, max_silence_s=max(2 * iv / 1000.0, 60.0), weight=lambda: rest.stats.weight_used)
            runner, bound = await observer.serve(host or "127.0.0.1", int(port or 0))
            print(f"trader trade: {mode}; ledger {path}; /health and /metrics on http://{host or '127.0.0.1'}:{bound}", file=sys.stderr, flush=True)
            symbols = wanted
            if not symbols:
                with KlineStore(settings.store_path()) as st:
                    symbols = sorted({s for s, i in st.series() if i == settings.universe.intervals[0]})
            if not symbols:
                raise ConfigError("no symbols: pass --symbols or run 'trader warm' first")
            await tc.load_rules(symbols)  # one request now rather than one per first order of each symbol
            found = await reconcile(engine, settings.trade.orphans)
            print(f"trader trade: reconciled: {len(found['open_positions'])} open positions, {len(found['orphans'])} orphan orders "
                  f"({found['action']}), {len(found['resolved'])} journal entries settled, mismatches {found['balance_mismatch'] or 'none'}",
                  file=sys.stderr, flush=True)
            done = 0
            last = int(lg.get_meta("last_step_ms") or 0)
            from trader.trade.virtual import VirtualBook

            virtual = VirtualBook(lg, settings.risk, settings.replay.matching.taker_fee, settings.universe.intervals[0])
            engine.virtual = virtual
            vtask = asyncio.create_task(_virtual_loop(virtual, settings, tc, stop))
            await tc.sync_time()
            from trader.exchange.trading import UserDataStream

            wake = asyncio.Event()  # a fill reported by the user-data stream: book it now, not at the next poll

            def on_event(ev: dict[str, Any]) -> None:
                if ev.get("e") == "executionReport" and ev.get("x") == "TRADE":
                    wake.set()

            async def on_reconnect() -> None:  # events may have been missed: look at the orders again
                observer.reconnects.inc()
                wake.set()

            uds = UserDataStream(settings.exchange.ws_api, creds, tc.clock, on_event, on_reconnect)
            utask = asyncio.create_task(uds.run(stop))
            lags: list[float] = []
            s2o: list[float] = []
            try:
                while not stop.is_set():
                    now = tc.clock.now_ms()
                    t = now // iv * iv
                    if t > last:
                        lag_s = (now - t) / 1000.0 / max(tc.clock.speed, 1e-9)
                        if done:  # the first decision catches up with a close from before the start: not a lag
                            observer.lag.observe(lag_s)
                            lags.append(lag_s)
                        await tc.sync_time()
                        rep = await paper_step(settings, settings.store_path(), rest, engine, t, symbols)
                        for s in rep.signal_to_order_s:
                            observer.signal_to_order.observe(s)
                        s2o += rep.signal_to_order_s
                        lg.set_meta("last_step_ms", str(t))
                        last = t
                        done += 1
                        observer.equity.set(float(rep.equity))
                        _status_line(t, rep, lg)
                        if steps is not None and done >= steps:
                            break
                    else:
                        await engine.sync(now)
                    # wake at the next close (the server clock may run faster than the wall: the replay's speed)
                    to_close = ((t + iv) - tc.clock.now_ms()) / 1000.0 / max(tc.clock.speed, 1e-9)
                    try:
                        await asyncio.wait_for(wake.wait(), max(min(settings.trade.fill_poll_s, to_close), 0.0))
                    except TimeoutError:
                        pass
                    wake.clear()
            finally:
                vtask.cancel()
                utask.cancel()
                await runner.cleanup()
                if done:
                    print(f"trader trade: {done} decisions; loop lag p50 {_pct(lags, 50) * 1000:.1f} ms p99 {_pct(lags, 99) * 1000:.1f} ms; "
                          f"signal to order ({len(s2o)}) p50 {_pct(s2o, 50) * 1000:.2f} ms p99 {_pct(s2o, 99) * 1000:.2f} ms",
                          file=sys.stderr, flush=True)
                tc.journal.close()
    finally:
        lg.close()


async def _local_loop(settings: Any, wanted: list[str], listen: str, steps: int | None, ledger_file: Path | None, stop: Any) -> None:
    """Paper trading without keys: the venue's market data, fills simulated here (:class:`LocalBroker`)."""
    import asyncio
    from decimal import Decimal

    from trader.errors import ConfigError
    from trader.exchange.rest import BinanceClient
    from trader.exchange.trading import ServerClock
    from trader.models import interval_ms
    from trader.store.klines import KlineStore
    from trader.trade.broker import LocalBroker
    from trader.trade.engine import TradeEngine
    from trader.trade.ledger import Ledger
    from trader.trade.observe import Observer
    from trader.trade.run import paper_step
    from trader.trade.virtual import VirtualBook

    path = _ledger_path(settings, None, ledger_file)
    lg = Ledger(path)
    host, _, port = listen.rpartition(":")
    base = settings.universe.intervals[0]
    try:
        async with BinanceClient(settings.exchange, settings.client) as rest:
            clock = ServerClock()
            await clock.sync(rest)
            symbols = wanted
            if not symbols:
                with KlineStore(settings.store_path()) as st:
                    symbols = sorted({s for s, i in st.series() if i == base})
            if not symbols:
                raise ConfigError("no symbols: pass --symbols or run 'trader warm' first")

            def load(symbol: str) -> Any:
                with KlineStore(settings.store_path()) as st:
                    return st.load(symbol, base)

            state = lg.get_meta("local_broker")
            import base64

            broker = LocalBroker(load, symbols, base, {settings.universe.quote_asset: Decimal("10000")}, settings.replay.spread_bps,
                                 settings.replay.matching, base64.b64decode(state) if state else None)
            min_score = settings.risk.min_score if settings.risk.min_score is not None else settings.scan.min_score
            engine = TradeEngine(broker, lg, settings.risk, min_score, strategy=settings.trade.strategy, quote=settings.universe.quote_asset,
                                 virtual=VirtualBook(lg, settings.risk, settings.replay.matching.taker_fee, base))
            iv = interval_ms(settings.trade.decision_interval)
            observer = Observer(engine.bus, "paper-local", max_silence_s=max(2 * iv / 1000.0, 60.0))
            runner, bound = await observer.serve(host or "127.0.0.1", int(port or 0))
            print(f"trader trade: paper with local simulated fills (no keys); ledger {path}; /health and /metrics on "
                  f"http://{host or '127.0.0.1'}:{bound}", file=sys.stderr, flush=True)
            last = int(lg.get_meta("last_step_ms") or 0)
            done = 0
            try:
                while not stop.is_set():
                    now = clock.now_ms()
                    t = now // iv * iv
                    if t > last:
                        await clock.sync(rest)
                        rep = await paper_step(settings, settings.store_path(), rest, engine, t, symbols, after_warm=lambda t=t: broker.refresh(t))
                        lg.set_meta("local_broker", base64.b64encode(broker.dump()).decode())
                        lg.set_meta("last_step_ms", str(t))
                        last = t
                        done += 1
                        observer.equity.set(float(rep.equity))
                        _status_line(t, rep, lg)
                        if steps is not None and done >= steps:
                            break
                    to_close = ((t + iv) - clock.now_ms()) / 1000.0 / max(clock.speed, 1e-9)
                    try:
                        await asyncio.wait_for(stop.wait(), max(min(settings.trade.fill_poll_s, to_close), 0.0))
                    except TimeoutError:
                        pass
            finally:
                await runner.cleanup()
    finally:
        lg.close()


def _status_line(t: int, rep: Any, lg: Any) -> None:
    """One stderr line per decision: time, state, equity, entries, exits, open positions."""
    print(f"trader trade: {time.strftime('%Y-%m-%d %H:%M', time.gmtime(t / 1000))} {rep.state} equity {rep.equity:.2f} "
          f"entered {rep.entered or '-'} exits {rep.exits or '-'} open {len(lg.positions('OPEN'))}", file=sys.stderr, flush=True)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(int(len(s) * q / 100), len(s) - 1)]


async def _virtual_loop(virtual: Any, settings: Any, tc: Any, stop: Any) -> None:
    """Settle virtual positions from the store every 5 s, in its own task (the trading loop never waits on it)."""
    import asyncio

    from trader.store.klines import KlineStore

    base = settings.universe.intervals[0]
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 5.0)
        except TimeoutError:
            pass
        if not virtual.ledger.open_virtual():
            continue

        def settle() -> int:
            with KlineStore(settings.store_path()) as st:
                return int(virtual.update(tc.clock.now_ms(), lambda s: st.load(s, base)))

        await asyncio.to_thread(settle)


def _open_ledger(ctx: typer.Context) -> tuple[Any, Any]:
    from trader.exchange.signing import load_credentials
    from trader.trade.ledger import Ledger

    o = ctx.obj or {}
    settings = load(o.get("config"), o.get("profile"), o.get("rest_url"), o.get("ws_url"), o.get("store"))
    creds = load_credentials()
    path = _ledger_path(settings, creds.api_key if creds else None, o.get("ledger"))
    if not path.is_file():
        raise fail(f"no ledger at {path} (has 'trader trade' run with this profile and key?)", 4)
    return settings, Ledger(path)


def _emit(ctx: typer.Context, rows: list[dict[str, Any]], title: str) -> None:
    import orjson

    if (ctx.obj or {}).get("as_json") or (ctx.params or {}).get("as_json"):
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=None)
    for k in (rows[0].keys() if rows else ["-"]):
        table.add_column(k)
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    Console(width=200).print(table)


def _pos_doc(p: Any) -> dict[str, Any]:
    return {"id": p.id, "symbol": p.symbol, "qty": f"{p.qty.normalize():f}", "left": f"{p.left_qty.normalize():f}",
            "entry_price": f"{p.entry_price.normalize():f}", "entry": time.strftime("%Y-%m-%d %H:%M", time.gmtime(p.entry_ms / 1000)),
            "status": p.status, "exit_reason": p.exit_reason or "", "pnl_quote": f"{p.pnl:.4f}" if p.status == "CLOSED" else "",
            "mode": p.mode}


@trade_app.command("status")
@handle_errors
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Trading state, equity, open positions and the last decision (from the ledger)."""
    _, lg = _open_ledger(ctx)
    curve = lg.equity_curve()
    closed = lg.positions("CLOSED")
    doc = {"open_positions": len(lg.positions("OPEN")), "closed_positions": len(closed),
           "realised_pnl_quote": f"{sum((p.pnl for p in closed), start=__import__('decimal').Decimal(0)):.4f}",
           "equity_quote": f"{curve[-1][1]:.4f}" if curve else None, "last_decision_ms": curve[-1][0] if curve else None,
           "day_start_equity": lg.get_meta("day_start_equity")}
    _emit(ctx, [doc], "trade status")


@trade_app.command("positions")
@handle_errors
def positions(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Open positions."""
    _, lg = _open_ledger(ctx)
    _emit(ctx, [_pos_doc(p) for p in lg.positions("OPEN")], "open positions")


@trade_app.command("history")
@handle_errors
def history(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Closed positions with their exit reason and net P&L."""
    _, lg = _open_ledger(ctx)
    _emit(ctx, [_pos_doc(p) for p in lg.positions("CLOSED")], "closed positions")


@trade_app.command("flatten")
@handle_errors
def flatten(ctx: typer.Context, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Close every open position safely: cancel its protective orders, then sell what is left at market."""
    from cli.common import run

    settings, lg = _open_ledger(ctx)
    n = len(lg.positions("OPEN"))
    if n and not yes and not typer.confirm(f"Close {n} open positions at market?"):
        raise fail("not confirmed; nothing was done", 2)

    async def body(stop: Any) -> int:
        from trader.exchange.journal import OrderJournal
        from trader.exchange.rest import BinanceClient
        from trader.exchange.signing import load_credentials
        from trader.exchange.trading import TradingClient
        from trader.trade.broker import VenueBroker
        from trader.trade.engine import TradeEngine

        creds = load_credentials()
        if creds is None:
            raise fail("flatten needs the account's keys in the environment", 2)
        async with BinanceClient(settings.exchange, settings.client) as rest:
            tc = TradingClient(rest, creds, OrderJournal(lg.path))
            engine = TradeEngine(VenueBroker(tc), lg, settings.risk, 100.0, strategy=settings.trade.strategy, quote=settings.universe.quote_asset)
            t = await tc.sync_time()
            await engine.sync(t)
            return await engine.flatten(t)

    closed = run(body)
    print(f"trader trade: flattened {closed} positions", file=sys.stderr)
