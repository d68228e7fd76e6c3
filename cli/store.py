"""``trader store check``: find (and with --repair, quarantine) damaged store entries."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.common import ConfigOpt, ProfileOpt, RestUrlOpt, StoreOpt, WsUrlOpt, handle_errors, load

store_app = typer.Typer(help="Inspect and repair the kline store.", no_args_is_help=True, add_completion=False)


@store_app.command("check")
@handle_errors
def check(
    repair: Annotated[bool, typer.Option("--repair", help="Quarantine damaged entries; the next 'trader warm' refetches them.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    rest_url: RestUrlOpt = None,
    ws_url: WsUrlOpt = None,
    store: StoreOpt = None,
) -> None:
    """Read every stored value and verify it (checksums, sizes, row counts, metas).

    Exit 0 when the store is sound (or was repaired), 4 when damage was found and not repaired.
    """
    from trader.errors import StoreError
    from trader.store.klines import KlineStore

    settings = load(config, profile, rest_url, ws_url, store)
    path = settings.store_path()
    if not path.is_dir():
        raise StoreError(f"no kline store at {path}")
    with KlineStore(path) as kstore:
        if repair:
            with kstore.writer_lock(settings.warm.lock_timeout_s):
                found = kstore.damaged()
                actions = [a for s, i, _ in found for a in kstore.repair(s, i)]
        else:
            found = kstore.damaged()
            actions = []
        series = len(kstore.series())
    if as_json:
        import orjson

        doc = {
            "store": str(path),
            "series": series,
            "damaged": [{"symbol": s, "interval": i, "problems": p} for s, i, p in found],
            "repaired": actions,
        }
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        for s, i, problems in found:
            for p in problems:
                print(f"damaged: {s} {i}: {p}")
        for a in actions:
            print(f"repaired: {a}")
        print(f"{series} series checked, {len(found)} damaged" + (f", {len(actions)} repairs" if repair else ""), file=sys.stderr)
    if found and not repair:
        raise typer.Exit(4)
