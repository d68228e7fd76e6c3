"""``trader trade``: backtest, paper (default) or live — one engine, one risk plan, one ledger.

``trader trade --backtest --from DATE --to DATE [--json]`` replays the plan over the store;
``trader trade`` / ``--paper`` trades against the profile's venue (the replay exchange by default)
with the keys in the environment; ``--live`` requires keys, a non-replay profile and a typed
confirmation unless ``--yes``. ``trader trade status|positions|history|flatten`` read the ledger.
"""

from __future__ import annotations

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
    return ledger if ledger is not None else Path(settings.ledger_path(api_key))


def _date(text: str | None, flag: str) -> int | None:
    from trader.timeutil import parse_date

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
    cash: Annotated[float, typer.Option("--cash", help="Backtest, and a new keyless paper account: starting quote balance (USDT).", min=10)] = 10_000.0,
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT of /health and /metrics (port 0 = free, printed).", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Paper/live: stop after this many decisions.", min=1, show_default=False)] = None,
    ledger: LedgerOpt = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Decide on the hand-made factor score, not the active (or shipped) model.")] = False,
    plan: Annotated[str | None, typer.Option("--plan", help="seed (the mission's 3-position plan) or portfolio (risk.portfolio: long/short, "
                                                          "horizon-matched); default risk.plan.", show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Backtest --plan portfolio: write the equity curves (PNG).", show_default=False)] = None,
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
    given = {name for name, value in {"frm": frm, "to": to, "plot": plot, "listen": listen, "steps": steps}.items() if value is not None}
    given |= {"seeds"} if seeds != 3 else set()
    given |= {"yes"} if yes else set()
    wrong = given & ({"listen", "steps", "yes"} if backtest else {"frm", "to", "seeds", "plot"})
    if wrong:
        flag = {"frm": "--from", "to": "--to", "seeds": "--seeds", "plot": "--plot", "listen": "--listen", "steps": "--steps", "yes": "--yes"}
        mode_name = "--backtest" if backtest else ("--live" if live else "paper")
        raise fail(f"{', '.join(sorted(flag[w] for w in wrong))} only apply to another mode, not {mode_name}", 2)
    settings = load(config, profile, rest_url, ws_url, store)
    wanted = [s.upper() for s in split_list(symbols)]
    if plan is not None:
        if plan not in ("seed", "portfolio"):
            raise fail(f"--plan must be seed or portfolio, got {plan}", 2)
        settings = settings.model_copy(update={"risk": settings.risk.model_copy(update={"plan": plan})})
    if plot is not None and not (backtest and settings.risk.plan == "portfolio"):
        raise fail("--plot goes with --backtest --plan portfolio", 2)
    if backtest and settings.risk.plan == "portfolio":
        if no_model:
            raise fail("--plan portfolio ranks by the model; --no-model does not apply", 2)
        _portfolio_backtest(settings, wanted, _date(frm, "--from"), _date(to, "--to"), max(seeds, 1), cash, plot, as_json)
        return
    if settings.risk.plan == "portfolio":
        from cli.portfolio import run_portfolio

        if live and settings.profile == "replay":
            raise fail("--live trades on a real exchange: choose --profile binance-usdm or binance-usdm-testnet", 2)
        run_portfolio(settings, wanted, "live" if live else "paper", steps, ledger, yes, as_json)
        return
    if backtest:
        _backtest(settings, wanted, _date(frm, "--from"), _date(to, "--to"), seeds, cash, ledger, as_json, not no_model)
        return
    mode = "live" if live else "paper"
    if live:
        if settings.profile == "replay":
            raise fail("--live trades on a real exchange: choose --profile binance-spot or binance-testnet", 2)
        if not yes:
            typed = typer.prompt(f"Trade REAL money on {settings.profile} ({settings.exchange.rest_url})? Type LIVE to go on", default="")
            if typed != "LIVE":
                raise fail("not confirmed; nothing was done", 2)
    from trader.config import parse_listen

    parse_listen(listen or settings.trade.listen)  # a malformed --listen fails before anything starts
    reload = (lambda: load(config, profile, rest_url, ws_url, store), config)  # the same file and flags, read again
    _trade(settings, wanted, mode, listen or settings.trade.listen, steps, ledger, cash, not no_model, reload)


def _portfolio_backtest(settings: Any, wanted: list[str], start: int | None, end: int | None, seeds: int, cash: float,
                        plot: Path | None, as_json: bool) -> None:
    import orjson

    from trader.trade.portfolio_backtest import portfolio_backtest

    out = portfolio_backtest(settings, settings.store_path(), start, end, symbols=wanted or None, cash=cash, seeds=seeds, plot=plot,
                             progress=lambda m: print(f"trader trade: {m}", file=sys.stderr, flush=True))
    if as_json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    c = Console()
    w, p = out["window"], out["params"]
    c.print(f"portfolio plan ({out['market']}): {w['decisions']} out-of-sample decisions x {w['symbols']} symbols; k {p['k']}, band {p['band']}, "
            f"{p['sleeves']} sleeves ({p['horizon']}), gross {p['gross']}x at {p['leverage']}x isolated, stop {p['stop_loss']:.0%}")
    table = Table(box=None)
    for col in ("", "net return", "CAGR", "vol", "Sharpe", "max DD"):
        table.add_column(col, justify="right" if col else "left")

    def row(name: str, m: dict[str, Any]) -> None:
        sh = m.get("sharpe")
        table.add_row(name, f"{m['net_return']:+.2%}", f"{m.get('cagr', 0):+.1%}" if m.get("cagr") is not None else "",
                      f"{m.get('volatility', 0):.1%}" if m.get("volatility") is not None else "", f"{sh:.2f}" if sh is not None else "–",
                      f"{m['max_drawdown']:.1%}" if m.get("max_drawdown") is not None else "")

    row("plan", out["result"])
    rb = out["baselines"]["random_portfolio"]
    table.add_row(f"random x{rb['seeds']} (mean)", f"{rb['net_return_mean']:+.2%}", "", "", "", f"range {rb['net_return_min']:+.1%} .. {rb['net_return_max']:+.1%}")
    row("equal weight long", out["baselines"]["equal_weight_long"])
    if "btc_long" in out["baselines"]:
        row("BTC long", out["baselines"]["btc_long"])
    c.print(table)
    r = out["result"]
    c.print(f"  turnover {r['turnover_per_day']:.2f}x equity/day, fees {r['fees']:.2f} USDT, funding {r['funding']:+.2f} USDT, maker share "
            f"{r['maker_share'] or 0:.0%}, gross {r['gross_exposure']:.2f}x, net {r['net_exposure']:+.2f}x, stops {r['stops']}, liquidations {r['liquidations']}")
    e, h = out["excess_vs_random"], out["held_out_block"]
    c.print(f"  daily excess over the random portfolios: {e.get('mean_daily_excess', 0):+.4%} (t {e.get('t')}, {e['days']} days)")
    c.print(f"  held-out last {h['share']:.0%}: plan {h['plan']['net_return']:+.2%}, random mean {h['random']['net_return_mean']:+.2%}, "
            f"t {h['excess_vs_random'].get('t')} -> the plan {'beats' if out['beats_random'] else 'does NOT beat'} every random run over the whole window")
    c.print(f"  {out['seconds']['total']:.1f} s" + (f"; plot {out['plot']}" if out.get("plot") else ""))


def _backtest(settings: Any, wanted: list[str], start: int | None, end: int | None, seeds: int, cash: float, ledger: Path | None, as_json: bool,
              use_model: bool = True) -> None:
    import orjson

    from trader.trade.backtest import backtest

    out = backtest(settings, settings.store_path(), start, end, symbols=wanted or None, cash=cash, baseline_seeds=seeds,
                   ledger_path=ledger, progress=lambda m: print(f"trader trade: {m}", file=sys.stderr, flush=True), use_model=use_model).as_dict()
    if as_json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from rich.console import Console

    b = out["baseline"]
    w = out["window"]
    a = out["accounting"]
    c = Console()
    c.print(f"backtest {w['decisions']} decisions x {w['symbols']} symbols, min score {out['min_score']}, model {'on' if out['model_active'] else 'off'}")
    c.print(f"  trades {out['trades']} (wins {out['wins']}), net return {out['net_return']:+.2%}, max drawdown {out['max_drawdown']:.2%}, "
            f"exposure {out['exposure']:.1%}, fees {out['fees_paid_quote']:.2f} USDT")
    c.print(f"  exits {out['exit_reasons']}")
    c.print(f"  accounting: equity error max {a['equity_error_max']:.2e} USDT, unbooked fills {a['unbooked_fills']}, "
            f"partial exits {a['partial_exits']} ({a['positions_with_remainder']} positions, {a['remainders_sold']} sold out), "
            f"dust {a['dust_assets']} assets worth {a['dust_value_quote']:.2f} USDT")
    if b["seeds"]:
        c.print(f"  random-entry baseline ({b['seeds']} seeds): mean {b['net_return_mean']:+.2%}, range {b['net_return_min']:+.2%} .. {b['net_return_max']:+.2%}"
                f" -> the plan {'beats' if out['beats_baseline'] else 'does NOT beat'} every random run")
    c.print(f"  {out['seconds']['total']:.1f} s")


def _trade(settings: Any, wanted: list[str], mode: str, listen: str, steps: int | None, ledger: Path | None, cash: float,
           use_model: bool = True, reload: Any = None) -> None:
    from cli.common import run

    run(lambda stop: _session(settings, wanted, mode, listen, steps, ledger, cash, stop, use_model, reload))


def _symbols(settings: Any, wanted: list[str]) -> list[str]:
    from trader.errors import ConfigError
    from trader.store.klines import KlineStore

    if wanted:
        return wanted
    with KlineStore(settings.store_path()) as st:
        symbols = sorted({s for s, i in st.series() if i == settings.universe.intervals[0]})
    if not symbols:
        raise ConfigError("no symbols: pass --symbols or run 'trader warm' first")
    return symbols


def _blocks(settings: Any, symbols: list[str]) -> Any:
    """A loader of the store's base-interval blocks of ``symbols`` (one store open per call)."""
    from trader.store.klines import KlineStore

    base = settings.universe.intervals[0]

    def load() -> dict[str, Any]:
        with KlineStore(settings.store_path()) as st:
            return {s: st.load(s, base) for s in symbols}

    return load


async def _session(settings: Any, wanted: list[str], mode: str, listen: str, steps: int | None, ledger_file: Path | None, cash: float,
                   stop: Any, use_model: bool = True, reload: Any = None) -> None:
    """Paper / live trading: one :class:`~trader.trade.session.TradingSession`, whatever the broker."""
    from decimal import Decimal

    from trader.errors import ConfigError
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import load_credentials
    from trader.exchange.trading import ServerClock, TradingClient, UserDataStream
    from trader.models import interval_ms
    from trader.store.klines import KlineStore
    from trader.trade.broker import LocalBroker, VenueBroker
    from trader.trade.engine import TradeEngine
    from trader.trade.ledger import Ledger
    from trader.trade.observe import Observer
    from trader.trade.session import TradingSession
    from trader.trade.signals import StoreDecider
    from trader.trade.virtual import VirtualBook

    creds = load_credentials()
    if creds is None and mode == "live":
        raise ConfigError("--live needs keys: export TRADER_API_KEY and TRADER_API_SECRET (or TRADER_ED25519_KEY_FILE)")
    symbols = _symbols(settings, wanted)
    path = _ledger_path(settings, creds.api_key if creds else None, ledger_file)
    lg = Ledger(path)
    host, _, port = listen.rpartition(":")
    base = settings.universe.intervals[0]
    quote = settings.universe.quote_asset
    try:
        async with BinanceClient(settings.exchange, settings.client) as rest:
            tc = None
            refresh = persist = None
            if creds is not None:
                tc = TradingClient(rest, creds, OrderJournal(path))
                broker: Any = VenueBroker(tc, mode)
                clock: Any = tc.clock
                sync = tc.sync_time
                await tc.load_rules(symbols)  # one request now rather than one per first order of each symbol
                what = mode
            else:
                clock = ServerClock()
                await clock.sync(rest)

                async def sync() -> int:
                    return int(await clock.sync(rest))

                state = lg.load_sim()
                local = LocalBroker(_blocks(settings, symbols), base, {quote: Decimal(repr(float(cash)))}, settings.replay.spread_bps,
                                    settings.replay.matching, state)
                broker, refresh = local, local.refresh

                def persist() -> None:
                    lg.save_sim(local.export())

                what = "paper with local simulated fills (no keys)" + (f", a new {cash:.2f} {quote} account" if state is None else "")
            decider = StoreDecider(settings, settings.store_path(), symbols, rest, use_model=use_model)
            virtual = VirtualBook(lg, settings.risk, settings.replay.matching.taker_fee, base)
            engine = TradeEngine(broker, lg, settings.risk, settings.entry_min_score(), strategy=settings.trade.strategy, quote=quote,
                                 model_active=decider.model_active, virtual=virtual, orphans=settings.trade.orphans, universe=symbols)
            iv = interval_ms(settings.trade.decision_interval)
            observer = Observer(engine.bus, mode if creds else "paper-local", max_silence_s=max(2 * iv / 1000.0, 60.0),
                                weight=lambda: rest.stats.weight_used)
            try:
                runner, bound = await observer.serve(host or "127.0.0.1", int(port or 0))
            except OSError as exc:  # unresolvable name, address not on this host, port taken
                raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}") from None

            def settle_virtual(t: int) -> int:
                with KlineStore(settings.store_path()) as st:
                    return int(virtual.update(t, lambda s: st.load(s, base)))

            user_data = None
            session: TradingSession | None = None
            if creds is not None and tc is not None:
                def on_event(ev: dict[str, Any]) -> None:
                    if ev.get("e") == "executionReport" and ev.get("x") == "TRADE" and session is not None:
                        session.wake()

                async def on_reconnect() -> None:  # events may have been missed: look at the orders again
                    observer.reconnects.inc()
                    if session is not None:
                        session.wake()

                user_data = UserDataStream(settings.exchange.ws_api, creds, tc.clock, on_event, on_reconnect)
            session = TradingSession(engine, decider, interval_ms=iv, clock=clock, sync=sync, steps=steps, poll_s=settings.trade.fill_poll_s,
                                     refresh=refresh, persist=persist, settle_virtual=settle_virtual, observer=observer,
                                     user_data=user_data, on_step=lambda rep: _status_line(rep, lg))
            source = f"model {decider.model.id}" if decider.model is not None else "the hand-made factor score (no model)"
            if decider.model is not None:
                from trader.models import CLOSE_TIME, duration_ms

                with KlineStore(settings.store_path()) as st:
                    newest = max((int(b[CLOSE_TIME, -1]) for b in (st.load(s, base, limit=1) for s in symbols) if b.shape[1]), default=0)
                note = decider.model.data_note(newest, duration_ms(settings.ml.max_age)) if newest else None
                if note:
                    print(f"trader trade: warning: {note}", file=sys.stderr, flush=True)
            print(f"trader trade: {what}; deciding on {source}; ledger {path}; /health and /metrics on http://{host or '127.0.0.1'}:{bound}",
                  file=sys.stderr, flush=True)
            reload_task = None
            if reload is not None:  # hot reload: SIGHUP or the --config file changing (trader/reload.py)
                import asyncio

                from trader.reload import ConfigReloader

                def apply(new: Any, diff: dict[str, Any]) -> None:
                    engine.cfg = new.risk  # read at the next decision
                    engine.min_score = new.entry_min_score()
                    decider.settings = new
                    decider.cfg = new.scan.model_copy(update={"lookback": new.trade.lookback,
                                                              "min_history": min(new.scan.min_history, new.trade.lookback)})

                reloader = ConfigReloader(reload[0], settings, apply, counter=observer.config_reloads)
                reload_stop = asyncio.Event()
                reload_task = asyncio.create_task(reloader.run(Path(reload[1]) if reload[1] else None, reload_stop))
            try:
                rec = await session.start()
                print(f"trader trade: reconciled with the venue: equity {rec.equity:.2f} {quote}, {len(lg.positions('OPEN'))} open positions, "
                      f"{rec.fills_booked} fills booked, {rec.orders_settled} orders settled, {len(rec.corrected)} corrected, "
                      f"orphans {len(rec.orphan_orders)} orders / {len(rec.orphan_holdings)} holdings ({settings.trade.orphans})"
                      + (", the venue's history was reset" if rec.venue_reset else ""), file=sys.stderr, flush=True)
                done = await session.run(stop)
            finally:
                if reload_task is not None:
                    reload_stop.set()
                    await reload_task
                await runner.cleanup()
                if tc is not None:
                    tc.journal.close()
            if done.decisions:
                print(f"trader trade: {done.decisions} decisions ({done.overruns} began after the next close had passed); "
                      f"loop lag p50 {_pct(done.lags_s, 50) * 1000:.1f} ms "
                      f"p99 {_pct(done.lags_s, 99) * 1000:.1f} ms; signal to order ({len(done.signal_to_order_s)}) "
                      f"p50 {_pct(done.signal_to_order_s, 50) * 1000:.2f} ms p99 {_pct(done.signal_to_order_s, 99) * 1000:.2f} ms",
                      file=sys.stderr, flush=True)
    finally:
        lg.close()


def _status_line(rep: Any, lg: Any) -> None:
    """One stderr line per decision: time, state, equity, entries, exits, partial exits, open positions."""
    print(f"trader trade: {time.strftime('%Y-%m-%d %H:%M', time.gmtime(rep.t_ms / 1000))} {rep.state} equity {rep.equity:.2f} "
          f"entered {rep.entered or '-'} exits {rep.exits or '-'}" + (f" partial {rep.partial_exits}" if rep.partial_exits else "")
          + f" open {len(lg.positions('OPEN'))}", file=sys.stderr, flush=True)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(int(len(s) * q / 100), len(s) - 1)]


def _open_ledger(ctx: typer.Context, **own: Any) -> tuple[Any, Any]:
    """The settings and ledger of a ``trade`` subcommand: its own options (after the subcommand)
    win over those given to ``trade`` before it."""
    from trader.exchange.signing import load_credentials
    from trader.trade.ledger import Ledger

    o = {**(ctx.obj or {}), **{k: v for k, v in own.items() if v is not None}}
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
            "status": p.status, "exit_reason": p.exit_reason or p.closing or "", "pnl_quote": f"{p.pnl:.4f}" if p.status == "CLOSED" else "",
            "mode": p.mode}


@trade_app.command("status")
@handle_errors
def status(ctx: typer.Context, as_json: JsonOpt = False, ledger: LedgerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None,
           store: StoreOpt = None) -> None:
    """Trading state, equity, open positions and the last decision (from the ledger)."""
    from decimal import Decimal

    _, lg = _open_ledger(ctx, ledger=ledger, config=config, profile=profile, store=store)
    snaps = lg.snapshots()
    closed = lg.positions("CLOSED")
    last = snaps[-1] if snaps else None
    doc = {"open_positions": len(lg.positions("OPEN")), "closed_positions": len(closed),
           "realised_pnl_quote": f"{sum((p.pnl for p in closed), start=Decimal(0)):.4f}",
           "equity_quote": f"{last['equity']:.4f}" if last else None, "state": last["state"] if last else None,
           "last_decision_ms": last["t_ms"] if last else None, "day_start": lg.get_json("day_start")}
    _emit(ctx, [doc], "trade status")


@trade_app.command("positions")
@handle_errors
def positions(ctx: typer.Context, as_json: JsonOpt = False, ledger: LedgerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None,
              store: StoreOpt = None) -> None:
    """Open positions."""
    _, lg = _open_ledger(ctx, ledger=ledger, config=config, profile=profile, store=store)
    _emit(ctx, [_pos_doc(p) for p in lg.positions("OPEN")], "open positions")


@trade_app.command("history")
@handle_errors
def history(ctx: typer.Context, as_json: JsonOpt = False, ledger: LedgerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None,
            store: StoreOpt = None) -> None:
    """Closed positions with their exit reason and net P&L."""
    _, lg = _open_ledger(ctx, ledger=ledger, config=config, profile=profile, store=store)
    _emit(ctx, [_pos_doc(p) for p in lg.positions("CLOSED")], "closed positions")


@trade_app.command("flatten")
@handle_errors
def flatten(ctx: typer.Context, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False, ledger: LedgerOpt = None,
            config: ConfigOpt = None, profile: ProfileOpt = None, store: StoreOpt = None) -> None:
    """Reach flat: cancel every open order, then sell at market what the ledger's positions hold on the venue
    (sized from the venue's free balance), round after round. Exit 0 when flat, 3 with the reason otherwise."""
    from cli.common import run

    settings, lg = _open_ledger(ctx, ledger=ledger, config=config, profile=profile, store=store)
    n = len(lg.positions("OPEN"))
    if n and not yes and not typer.confirm(f"Close {n} open positions at market?"):
        raise fail("not confirmed; nothing was done", 2)

    async def body(stop: Any) -> Any:

        from trader.exchange.journal import OrderJournal
        from trader.exchange.rest import BinanceClient
        from trader.exchange.signing import load_credentials
        from trader.exchange.trading import ServerClock, TradingClient
        from trader.trade.broker import LocalBroker, VenueBroker
        from trader.trade.engine import TradeEngine

        creds = load_credentials()
        async with BinanceClient(settings.exchange, settings.client) as rest:
            tc = None
            if creds is not None:
                tc = TradingClient(rest, creds, OrderJournal(lg.path))
                broker: Any = VenueBroker(tc)
                t = await tc.sync_time()
            else:
                state = lg.load_sim()
                if state is None:
                    raise fail("flatten needs the account's keys in the environment (this ledger has no simulated account)", 2)
                symbols = lg.traded_symbols()
                clock = ServerClock()
                t = await clock.sync(rest)
                broker = LocalBroker(_blocks(settings, symbols), settings.universe.intervals[0], {}, settings.replay.spread_bps,
                                     settings.replay.matching, state)
                broker.refresh(t)
            engine = TradeEngine(broker, lg, settings.risk, settings.entry_min_score(), strategy=settings.trade.strategy,
                                 quote=settings.universe.quote_asset, orphans=settings.trade.orphans)
            try:
                rep = await engine.flatten(t)
            finally:
                if creds is None:
                    lg.save_sim(broker.export())
                if tc is not None:
                    tc.journal.close()
            return rep

    rep = run(body)
    dust = ", ".join(f"{d.qty} {d.asset}" for d in rep.dust)
    print(f"trader trade: flatten: cancelled {rep.cancelled} orders, {len(rep.sold)} market sells in {rep.rounds} rounds, "
          f"{rep.closed} positions closed" + (f"; dust left: {dust}" if dust else ""), file=sys.stderr)
    if not rep.flat:
        raise fail(f"not flat: {rep.reason}", 3)
