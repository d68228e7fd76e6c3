"""``trader trade --plan portfolio`` in paper (default: the replay's /fapi) or live mode: wiring and printing only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cli.common import fail

__all__ = ["run_portfolio"]


def run_portfolio(settings: Any, wanted: list[str], mode: str, steps: int | None, ledger: Path | None, yes: bool, as_json: bool) -> None:
    """Run :class:`~trader.trade.portfolio_live.PortfolioTrader` until ``steps`` decisions or SIGINT."""
    import typer

    from cli.common import run

    if mode == "live" and not yes:
        typed = typer.prompt(f"Trade REAL money on {settings.profile} ({settings.exchange.rest_url})? Type LIVE to go on", default="")
        if typed != "LIVE":
            raise fail("not confirmed; nothing was done", 2)
    out = run(lambda stop: _session(settings, wanted, steps, ledger, stop))
    import orjson

    for d in out:
        if as_json:
            sys.stdout.write(orjson.dumps(d).decode() + "\n")
        else:
            print(f"decision {d['t']}: equity {d['equity']:.2f} USDT, {d['ranked']} ranked, {d['targets']} targets, "
                  f"{len(d['orders'])} orders" + (" HALTED" if d["halted"] else " REDUCING" if d["reducing"] else ""))


async def _session(settings: Any, wanted: list[str], steps: int | None, ledger: Path | None, stop: Any) -> list[dict[str, Any]]:
    import hashlib

    from trader.errors import ConfigError
    from trader.exchange.futures import FuturesClient
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import load_credentials
    from trader.store.klines import KlineStore
    from trader.trade.portfolio_live import PortfolioTrader
    from trader.trade.signals import StoreDecider

    creds = load_credentials()
    if creds is None:
        raise ConfigError("--plan portfolio trades on a USD-M venue: set TRADER_API_KEY with TRADER_API_SECRET (trader replay prints them)")
    spot = settings.exchange.model_copy(update={"market": "spot"})
    usdm = settings.exchange.model_copy(update={"market": "usdm"})
    if settings.exchange.market == "usdm" and settings.profile != "replay":
        spot = settings.exchange  # a real USD-M profile: klines from the futures API too
    store_path = settings.store_path()
    with KlineStore(store_path) as store:
        symbols = wanted or sorted({s for s, _ in store.series()})
    if not symbols:
        raise ConfigError(f"the store {store_path} holds no klines: run trader warm first")
    key_id = hashlib.sha256(creds.api_key.encode()).hexdigest()[:10]
    base = ledger.parent if ledger else settings.data_dir()
    stem = ledger.stem if ledger else f"portfolio-{settings.profile}-{key_id}"
    async with BinanceClient(spot, settings.client) as rest, BinanceClient(usdm, settings.client) as frest:
        fc = FuturesClient(frest, creds, OrderJournal(base / f"{stem}.journal.sqlite"))
        try:
            trader = PortfolioTrader(settings, fc, StoreDecider(settings, store_path, symbols, rest), symbols, base / f"{stem}.state.json")
            return await trader.run(steps, stop)
        finally:
            fc.journal.close()
