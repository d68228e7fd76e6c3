"""``trader replay``: run the Binance-compatible replay exchange until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import ConfigOpt, fail, handle_errors, load


@handle_errors
def replay(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1, loopback only).", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="TCP port; 0 picks a free one (default 8765).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Directory of <SYMBOL>-<interval>.csv[.gz] files (default: bundled data).", show_default=False)] = None,
    start: Annotated[str | None, typer.Option(help="Replay start: 'auto', 'end' (every recorded kline closed), epoch ms or ISO-8601 UTC.", show_default=False)] = None,
    speed: Annotated[float | None, typer.Option(help="Replay ms per wall ms (0 freezes the clock).", show_default=False)] = None,
    clock: Annotated[str | None, typer.Option("--clock", help="replay (recorded time from --start) or wall (recording shifted so now = wall clock).", show_default=False)] = None,
    tls: Annotated[bool, typer.Option("--tls", help="Serve https:// and wss:// with a self-signed certificate (path printed on stderr).")] = False,
    spread_bps: Annotated[float | None, typer.Option("--spread-bps", help="Synthetic bid/ask spread, basis points (default 2).", show_default=False)] = None,
    weight_limit: Annotated[int | None, typer.Option(help="Request weight per IP per minute (default 6000).", show_default=False)] = None,
    latency_ms: Annotated[float | None, typer.Option(help="Fault: fixed latency per REST request, ms.", show_default=False)] = None,
    jitter_ms: Annotated[float | None, typer.Option(help="Fault: extra uniform latency in [0, jitter], ms.", show_default=False)] = None,
    error_rate: Annotated[float | None, typer.Option(help="Fault: fraction of requests answered HTTP 500.", show_default=False)] = None,
    rate_429: Annotated[float | None, typer.Option("--rate-429", help="Fault: fraction of requests answered HTTP 429.", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault RNG.", show_default=False)] = None,
    order_5xx_rate: Annotated[float | None, typer.Option("--order-5xx-rate", help="Order fault: fraction of accepted orders answered 500/503 or held past the client's timeout (status unknown).", show_default=False)] = None,
    order_reject_rate: Annotated[float | None, typer.Option("--order-reject-rate", help="Order fault: fraction of order requests rejected before the engine (HTTP 400).", show_default=False)] = None,
    order_latency_ms: Annotated[float | None, typer.Option("--order-latency-ms", help="Order fault: extra delay of the order endpoints, ms.", show_default=False)] = None,
    order_5xx_mode: Annotated[str | None, typer.Option("--order-5xx-mode", help="What --order-5xx-rate answers: 500, 503, hang or mixed (default).", show_default=False)] = None,
    order_hang_s: Annotated[float | None, typer.Option("--order-hang-s", help="Order fault: how long a 'timed out' accepted order holds its response, s (default 30).", show_default=False)] = None,
    user_data_drop_every: Annotated[int | None, typer.Option("--user-data-drop-every", help="Fault: abort a user-data stream connection after N events.", show_default=False)] = None,
    ws_latency_ms: Annotated[float | None, typer.Option(help="Stream fault: delay of every outgoing message, ms.", show_default=False)] = None,
    ws_drop_every_s: Annotated[float | None, typer.Option(help="Stream fault: abort every connection after N seconds.", show_default=False)] = None,
    ws_drop_every_messages: Annotated[int | None, typer.Option(help="Stream fault: abort a connection after N events.", show_default=False)] = None,
    ws_malformed_rate: Annotated[float | None, typer.Option(help="Stream fault: probability of a malformed frame after an event.", show_default=False)] = None,
    preload: Annotated[bool, typer.Option(help="Parse and render every series before printing the URL (default: in the background after).")] = False,
    funding: Annotated[Path | None, typer.Option("--funding", help="USD-M: directory of <SYMBOL>.json funding files (Binance fundingRate format); default: the constant replay.futures.funding_rate.", show_default=False)] = None,
    brackets: Annotated[Path | None, typer.Option("--brackets", help="USD-M: a GET /fapi/v1/leverageBracket response to use instead of the shipped published tiers.", show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve recorded Binance klines over Binance's REST API and WebSocket streams on 127.0.0.1.

    Spot under /api/v3 and USD-M perpetual futures under /fapi on the same port. There are no
    recorded perpetual prices: the perpetuals trade on the spot recording (basis modelled as zero;
    mark = index = last), with funding every 8 h at a constant rate or from --funding files.

    The first line on stdout is the base URL (http://127.0.0.1:PORT), flushed at once; the second
    gives the first trading account's credentials as ``TRADER_API_KEY=... TRADER_API_SECRET=...``
    (an Ed25519 account: ``TRADER_API_KEY=...`` only), ready for ``export``.
    """
    replay_over: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "data_dir": str(data) if data else None,
            "start": start,
            "speed": speed,
            "clock": clock,
            "tls": tls or None,
            "spread_bps": spread_bps,
            "weight_limit": weight_limit,
        }.items()
        if v is not None
    }
    faults = {
        k: v
        for k, v in {"latency_ms": latency_ms, "jitter_ms": jitter_ms, "error_rate": error_rate, "rate_429": rate_429, "seed": seed,
                     "order_5xx_rate": order_5xx_rate, "order_reject_rate": order_reject_rate, "order_latency_ms": order_latency_ms,
                     "order_hang_s": order_hang_s, "order_5xx_mode": order_5xx_mode, "user_data_drop_every_events": user_data_drop_every}.items()
        if v is not None
    }
    if faults:
        replay_over["faults"] = faults
    ws = {
        k: v
        for k, v in {"latency_ms": ws_latency_ms, "drop_every_s": ws_drop_every_s, "drop_every_messages": ws_drop_every_messages,
                     "malformed_rate": ws_malformed_rate}.items()
        if v is not None
    }
    if ws:
        replay_over["ws"] = ws
    fut = {k: str(v) for k, v in {"funding_dir": funding, "brackets_file": brackets}.items() if v is not None}
    if fut:
        replay_over["futures"] = fut
    settings = load(config, None, None, None, None, {"replay": replay_over} if replay_over else None)
    from trader.replay.server import ReplayExchange

    exchange = ReplayExchange.from_config(settings.replay, background_load=not preload)
    if preload:
        exchange.load_all(render=True)
    from cli.common import run

    run(lambda stop: _serve(exchange, stop))


async def _serve(exchange: Any, stop: Any) -> None:
    try:
        await exchange.start()
    except OSError as exc:
        raise fail(f"cannot bind {exchange.host}:{exchange.port}: {exc.strerror or exc}", 3) from None
    acct = exchange.trading.default_account
    creds = f"TRADER_API_KEY={acct.api_key}" + (f" TRADER_API_SECRET={acct.api_secret}" if acct.api_secret else "")
    sys.stdout.write(exchange.rest_url + "\n" + creds + "\n")
    sys.stdout.flush()
    print(
        f"replay exchange: {len(exchange.dataset.symbols)} symbols {','.join(exchange.dataset.intervals)}, "
        f"now={exchange.clock.now_ms()} speed={exchange.clock.speed}"
        + (f", shift={exchange.dataset.shift_ms} ms (clock follows the wall clock)" if exchange.dataset.shift_ms else ""),
        file=sys.stderr,
        flush=True,
    )
    if exchange.cert_path is not None:
        print(f"replay exchange: TLS certificate (trust it as a CA): {exchange.cert_path}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await exchange.stop()
