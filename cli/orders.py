"""``trader account`` and ``trader order``: balances and orders over signed requests.

Credentials come only from the environment: ``TRADER_API_KEY`` with ``TRADER_API_SECRET``
(or ``TRADER_API_SECRET_FILE``), or ``TRADER_ED25519_KEY_FILE`` (a 0600 PEM file); they are
never printed. Every placed order goes through the order journal (``--journal``, default
``<user data dir>/trader/orders-<profile>-<key id>.sqlite``) and has a deterministic client order id
from ``--strategy``, the symbol, ``--signal-ms`` and ``--leg``: running the same command again
with the same ``--signal-ms`` returns the order it placed instead of placing a second one.
"""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import ConfigOpt, ProfileOpt, RestUrlOpt, fail, handle_errors, load

order_app = typer.Typer(help="Place, query, cancel and list orders (signed requests).", no_args_is_help=True, add_completion=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
JournalOpt = Annotated[Path | None, typer.Option("--journal", help="Order journal (SQLite) path.", show_default=False)]
SymbolOpt = Annotated[str, typer.Option("--symbol", "-s", help="Symbol, e.g. BTCUSDT.")]
MarketOpt = Annotated[str | None, typer.Option("--market", help="spot or usdm (USD-M futures, /fapi on the same host); default: the profile's.",
                                               show_default=False)]
position_app = typer.Typer(help="USD-M futures positions: list, close (signed requests).", no_args_is_help=True, add_completion=False)


def _market(settings: Any, market: str | None) -> tuple[Any, str]:
    """``(settings, market)``: the market a command trades (``--market`` or the profile's) and the
    settings with the active profile switched to it (same URLs: the venue serves both)."""
    m = (market or settings.exchange.market).lower()
    if m not in ("spot", "usdm"):
        raise fail(f"--market must be spot or usdm, got {market}", 2)
    if m != settings.exchange.market:
        profile = settings.exchange.model_copy(update={"market": m})
        settings = settings.model_copy(update={"profiles": {**settings.profiles, settings.profile: profile}})
    return settings, m


def _dec(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise fail(f"{name}: {value!r} is not a decimal number", 2) from None
    if not d.is_finite() or d <= 0:
        raise fail(f"{name} must be a positive number, got {value}", 2)
    return d


def _journal_path(settings: Any, api_key: str, journal: Path | None) -> Path:
    return journal if journal is not None else Path(settings.journal_path(api_key))


async def _with_client(settings: Any, journal: Path | None, body: Any) -> Any:
    from trader.errors import ConfigError
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import load_credentials
    from trader.exchange.trading import TradingClient

    creds = load_credentials()
    if creds is None:
        raise ConfigError("no API key: set TRADER_API_KEY with TRADER_API_SECRET (or TRADER_API_SECRET_FILE / TRADER_ED25519_KEY_FILE)")
    async with BinanceClient(settings.exchange, settings.client) as rest:
        if settings.exchange.market == "usdm":
            from trader.exchange.futures import FuturesClient

            path = journal if journal is not None else Path(settings.journal_path(creds.api_key, "usdm"))
            tc: TradingClient = FuturesClient(rest, creds, OrderJournal(path))
        else:
            tc = TradingClient(rest, creds, OrderJournal(_journal_path(settings, creds.api_key, journal)))
        try:
            return await body(tc)
        finally:
            tc.journal.close()


def _order_doc(o: Any) -> dict[str, Any]:
    return {
        "symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id, "side": o.side, "type": o.type,
        "status": o.status, "price": f"{o.price:f}", "stopPrice": f"{o.stop_price:f}", "origQty": f"{o.orig_qty:f}",
        "executedQty": f"{o.executed_qty:f}", "cummulativeQuoteQty": f"{o.cum_quote:f}", "avgPrice": f"{o.avg_price.normalize():f}",
        "time": o.time_ms, "updateTime": o.update_ms,
        "fills": [{"price": f"{f.price:f}", "qty": f"{f.qty:f}", "commission": f"{f.commission:f}", "commissionAsset": f.commission_asset} for f in o.fills],
    }


def _print_orders(orders: list[Any], as_json: bool) -> None:
    import orjson

    if as_json:
        sys.stdout.write(orjson.dumps([_order_doc(o) for o in orders]).decode() + "\n")
        return
    from rich.table import Table

    table = Table(box=None)
    for col in ("symbol", "orderId", "clientOrderId", "side", "type", "status", "price", "stop", "qty", "filled", "avg price"):
        table.add_column(col)
    for o in orders:
        table.add_row(o.symbol, str(o.order_id), o.client_order_id, o.side, o.type, o.status, f"{o.price.normalize():f}",
                      f"{o.stop_price.normalize():f}", f"{o.orig_qty.normalize():f}", f"{o.executed_qty.normalize():f}",
                      f"{o.avg_price.normalize():f}" if o.executed_qty else "–")
    _console().print(table)


def _console() -> Any:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=220)


@handle_errors
def account(
    as_json: JsonOpt = False,
    market: MarketOpt = None,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """Balances of the account whose key is in the environment (non-zero assets); with --market usdm
    the futures wallet (USDT: wallet, unrealised PnL, margin balance, available, margins) and its positions."""
    from cli.common import run

    settings = load(config, profile, rest_url, None, None)
    settings, m = _market(settings, market)
    if m == "usdm":
        _futures_account(settings, as_json)
        return

    async def body(tc: Any) -> Any:
        return await tc.account()

    balances = run(lambda stop: _with_client(settings, None, body))
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps({a: {"free": f"{b.free:f}", "locked": f"{b.locked:f}"} for a, b in balances.items()}).decode() + "\n")
        return
    from rich.table import Table

    table = Table(box=None)
    for col in ("asset", "free", "locked"):
        table.add_column(col, justify="right" if col != "asset" else "left")
    for a, b in sorted(balances.items()):
        table.add_row(a, f"{b.free.normalize():f}", f"{b.locked.normalize():f}")
    _console().print(table)


def _futures_account(settings: Any, as_json: bool) -> None:
    from cli.common import run

    async def body(fc: Any) -> Any:
        return await fc.futures_account(), await fc.positions()

    acct, positions = run(lambda stop: _with_client(settings, None, body))
    figures = {"walletBalance": acct.wallet, "unrealizedProfit": acct.unrealized_pnl, "marginBalance": acct.margin_balance,
               "availableBalance": acct.available, "maintMargin": acct.maint_margin, "initialMargin": acct.initial_margin}
    if as_json:
        import orjson

        doc = {"asset": "USDT", **{k: f"{v:f}" for k, v in figures.items()}, "positions": [_position_doc(p) for p in positions]}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    from rich.table import Table

    table = Table(box=None)
    for col in ("USDT", *figures):
        table.add_column(col, justify="right")
    table.add_row("", *(f"{v.normalize():f}" for v in figures.values()))
    _console().print(table)
    _print_positions(positions, False)


def _position_doc(p: Any) -> dict[str, Any]:
    return {"symbol": p.symbol, "positionAmt": f"{p.amount:f}", "entryPrice": f"{p.entry_price:f}", "markPrice": f"{p.mark_price:f}",
            "unRealizedProfit": f"{p.unrealized_pnl:f}", "liquidationPrice": f"{p.liquidation_price:f}", "leverage": p.leverage,
            "marginType": p.margin_type, "isolatedWallet": f"{p.isolated_wallet:f}", "notional": f"{p.notional:f}", "updateTime": p.update_ms}


def _print_positions(positions: list[Any], as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps([_position_doc(p) for p in positions]).decode() + "\n")
        return
    if not positions:
        _console().print("no open positions")
        return
    from rich.table import Table

    table = Table(box=None)
    for col in ("symbol", "amount", "entry", "mark", "unrealised PnL", "liquidation", "leverage", "margin"):
        table.add_column(col, justify="left" if col in ("symbol", "margin") else "right")
    for p in positions:
        table.add_row(p.symbol, f"{p.amount.normalize():f}", f"{p.entry_price.normalize():f}", f"{p.mark_price.normalize():f}",
                      f"{p.unrealized_pnl:.2f}", f"{p.liquidation_price.normalize():f}" if p.liquidation_price else "–",
                      f"{p.leverage}x", p.margin_type)
    _console().print(table)


@position_app.command("list")
@handle_errors
def position_list(
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="One symbol (default: all).", show_default=False)] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """Open USD-M positions (amount, entry, mark, unrealised PnL, liquidation price, leverage, margin type)."""
    from cli.common import run
    from trader.models import validate_symbol

    settings = load(config, profile, rest_url, None, None)
    settings, _ = _market(settings, "usdm")
    sym = validate_symbol(symbol) if symbol else None

    async def body(fc: Any) -> Any:
        return await fc.positions(sym)

    _print_positions(run(lambda stop: _with_client(settings, None, body)), as_json)


@position_app.command("close")
@handle_errors
def position_close(
    symbol: SymbolOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Close without asking.")] = False,
    signal_ms: Annotated[int | None, typer.Option("--signal-ms", help="Intent time, epoch ms (default: now); the same value closes once.", show_default=False)] = None,
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """Close one USD-M position with a reduce-only MARKET order (exactly once); exit 1 when flat."""
    from cli.common import run
    from trader.errors import NoResultError
    from trader.models import validate_symbol

    if not yes:
        raise fail("closing a position sends a MARKET order: add --yes", 2)
    settings = load(config, profile, rest_url, None, None)
    settings, _ = _market(settings, "usdm")
    sym = validate_symbol(symbol)

    async def body(fc: Any) -> Any:
        return await fc.close_position(sym, signal_ms=signal_ms)

    done = run(lambda stop: _with_client(settings, journal, body))
    if done is None:
        raise NoResultError(f"no open position on {sym}")
    _print_orders([done], as_json)


@order_app.command("place")
@handle_errors
def place(
    symbol: SymbolOpt,
    side: Annotated[str, typer.Option("--side", help="BUY or SELL.")],
    type_: Annotated[str, typer.Option("--type", help="LIMIT, MARKET, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT, LIMIT_MAKER.")] = "MARKET",
    qty: Annotated[str | None, typer.Option("--qty", help="Quantity, base asset (rounded down to the step).", show_default=False)] = None,
    quote_qty: Annotated[str | None, typer.Option("--quote-qty", help="MARKET only: amount of quote asset to spend/receive.", show_default=False)] = None,
    price: Annotated[str | None, typer.Option("--price", help="Limit price, quote asset (rounded to the tick).", show_default=False)] = None,
    stop_price: Annotated[str | None, typer.Option("--stop-price", help="Stop price, quote asset.", show_default=False)] = None,
    tif: Annotated[str | None, typer.Option("--tif", help="GTC, IOC or FOK (limit types; default GTC).", show_default=False)] = None,
    strategy: Annotated[str, typer.Option("--strategy", help="Strategy name in the client order id.")] = "manual",
    signal_ms: Annotated[int | None, typer.Option("--signal-ms", help="Intent time, epoch ms (default: now); the same value places nothing new.", show_default=False)] = None,
    leg: Annotated[str, typer.Option("--leg", help="Leg name in the client order id.")] = "entry",
    market: MarketOpt = None,
    reduce_only: Annotated[bool, typer.Option("--reduce-only", help="usdm: never open, grow or flip a position.")] = False,
    close_position: Annotated[bool, typer.Option("--close-position", help="usdm STOP_MARKET / TAKE_PROFIT_MARKET: close what is held.")] = False,
    leverage: Annotated[int | None, typer.Option("--leverage", min=1, max=125, help="usdm: set the symbol's leverage first (idempotent).", show_default=False)] = None,
    margin_type: Annotated[str | None, typer.Option("--margin-type", help="usdm: ISOLATED or CROSSED, set first (idempotent).", show_default=False)] = None,
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """Place one order, exactly once (journal + deterministic client order id; never resent blindly).
    ``--market usdm`` places a USD-M futures order (LIMIT, MARKET, STOP, STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET)."""
    import time

    from cli.common import run
    from trader.exchange.trading import OrderIntent
    from trader.models import validate_symbol

    side_u, type_u = side.upper(), type_.upper()
    if side_u not in ("BUY", "SELL"):
        raise fail(f"--side must be BUY or SELL, got {side}", 2)
    if signal_ms is not None and not 0 <= signal_ms <= int(time.time() * 1000) + 86_400_000:
        raise fail(f"--signal-ms must be an epoch-ms time >= 0 and at most a day ahead, got {signal_ms}", 2)
    settings = load(config, profile, rest_url, None, None)
    settings, m = _market(settings, market)
    if m == "usdm":
        _place_futures(settings, symbol, side_u, type_u, qty, price, stop_price, tif, strategy, signal_ms, leg, reduce_only,
                       close_position, leverage, margin_type, journal, as_json)
        return
    if reduce_only or close_position or leverage or margin_type:
        raise fail("--reduce-only, --close-position, --leverage and --margin-type are for --market usdm", 2)
    kinds = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
    if type_u not in kinds:
        raise fail(f"--type must be one of {', '.join(kinds)}, got {type_}", 2)
    intent = OrderIntent(
        strategy=strategy, symbol=validate_symbol(symbol), signal_ms=signal_ms if signal_ms is not None else int(time.time() * 1000),
        leg=leg, side=side_u, type=type_u, quantity=_dec(qty, "--qty"), quote_order_qty=_dec(quote_qty, "--quote-qty"),
        price=_dec(price, "--price"), stop_price=_dec(stop_price, "--stop-price"), time_in_force=tif.upper() if tif else None,
    )
    if intent.quantity is None and intent.quote_order_qty is None:
        raise fail("give --qty (or --quote-qty for a MARKET order)", 2)

    async def body(tc: Any) -> Any:
        return await tc.submit(intent)

    _print_orders([run(lambda stop: _with_client(settings, journal, body))], as_json)


def _place_futures(settings: Any, symbol: str, side: str, kind: str, qty: str | None, price: str | None, stop_price: str | None,
                   tif: str | None, strategy: str, signal_ms: int | None, leg: str, reduce_only: bool, close_position: bool,
                   leverage: int | None, margin_type: str | None, journal: Path | None, as_json: bool) -> None:
    import time

    from cli.common import run
    from trader.exchange.futures import FuturesIntent
    from trader.models import validate_symbol

    kinds = ("LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET")
    if kind not in kinds:
        raise fail(f"--type must be one of {', '.join(kinds)} on usdm, got {kind}", 2)
    if margin_type is not None and margin_type.upper() not in ("ISOLATED", "CROSSED"):
        raise fail(f"--margin-type must be ISOLATED or CROSSED, got {margin_type}", 2)
    if close_position and (qty is not None or kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET")):
        raise fail("--close-position goes with --type STOP_MARKET or TAKE_PROFIT_MARKET and no --qty", 2)
    if not close_position and qty is None:
        raise fail("give --qty (contracts of the base asset)", 2)
    if tif is not None and tif.upper() not in ("GTC", "IOC", "FOK", "GTX"):
        raise fail(f"--tif must be GTC, IOC, FOK or GTX (post-only) on usdm, got {tif}", 2)
    sym = validate_symbol(symbol)
    intent = FuturesIntent(
        strategy=strategy, symbol=sym, signal_ms=signal_ms if signal_ms is not None else int(time.time() * 1000), leg=leg,
        side=side, type=kind, quantity=_dec(qty, "--qty"), price=_dec(price, "--price"), stop_price=_dec(stop_price, "--stop-price"),
        time_in_force=tif.upper() if tif else None, reduce_only=reduce_only, close_position=close_position,
    )

    async def body(fc: Any) -> Any:
        if margin_type is not None:
            await fc.ensure_margin_type(sym, margin_type.upper())
        if leverage is not None:
            await fc.ensure_leverage(sym, leverage)
        return await fc.submit(intent)

    _print_orders([run(lambda stop: _with_client(settings, journal, body))], as_json)


@order_app.command("query")
@handle_errors
def query(
    symbol: SymbolOpt,
    client_id: Annotated[str | None, typer.Option("--client-id", help="Client order id.", show_default=False)] = None,
    order_id: Annotated[int | None, typer.Option("--order-id", help="Exchange order id.", show_default=False)] = None,
    market: MarketOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """Look one order up (open or closed); exit 1 when the exchange has no such order."""
    from cli.common import run
    from trader.errors import NoResultError
    from trader.models import validate_symbol

    if client_id is None and order_id is None:
        raise fail("give --client-id or --order-id", 2)
    settings = load(config, profile, rest_url, None, None)
    settings, _ = _market(settings, market)
    sym = validate_symbol(symbol)

    async def body(tc: Any) -> Any:
        return await tc.query_order(sym, client_order_id=client_id, order_id=order_id)

    found = run(lambda stop: _with_client(settings, None, body))
    if found is None:
        raise NoResultError(f"no order {client_id or order_id} on {sym}")
    _print_orders([found], as_json)


@order_app.command("cancel")
@handle_errors
def cancel(
    symbol: SymbolOpt,
    client_id: Annotated[str | None, typer.Option("--client-id", help="Client order id.", show_default=False)] = None,
    order_id: Annotated[int | None, typer.Option("--order-id", help="Exchange order id.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Cancel every open order of the symbol.")] = False,
    market: MarketOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """Cancel one order (or --all of a symbol); exit 1 when nothing was open."""
    from cli.common import run
    from trader.errors import NoResultError
    from trader.models import validate_symbol

    if not all_ and client_id is None and order_id is None:
        raise fail("give --client-id, --order-id or --all", 2)
    settings = load(config, profile, rest_url, None, None)
    settings, _ = _market(settings, market)
    sym = validate_symbol(symbol)

    async def body(tc: Any) -> Any:
        if all_:
            return await tc.cancel_open_orders(sym)
        one = await tc.cancel_order(sym, client_order_id=client_id, order_id=order_id)
        return [one] if one is not None else []

    done = run(lambda stop: _with_client(settings, None, body))
    if not done:
        raise NoResultError(f"no open order to cancel on {sym}")
    _print_orders(done, as_json)


@order_app.command("open")
@handle_errors
def open_orders(
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="One symbol (default: all, weight 80).", show_default=False)] = None,
    market: MarketOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None, profile: ProfileOpt = None, rest_url: RestUrlOpt = None,
) -> None:
    """List open orders."""
    from cli.common import run
    from trader.models import validate_symbol

    settings = load(config, profile, rest_url, None, None)
    settings, _ = _market(settings, market)
    sym = validate_symbol(symbol) if symbol else None

    async def body(tc: Any) -> Any:
        return await tc.open_orders(sym)

    _print_orders(run(lambda stop: _with_client(settings, None, body)), as_json)
