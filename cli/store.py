"""``trader store check``: verify every stored value; with --repair, quarantine or salvage what is damaged."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.common import ConfigOpt, StoreOpt, handle_errors, load

store_app = typer.Typer(help="Inspect and repair the kline store.", no_args_is_help=True, add_completion=False)


@store_app.command("check")
@handle_errors
def check(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Quarantine damaged entries (or, if the database itself is damaged, salvage every readable series "
            "into a fresh one, the old file kept aside); the next 'trader warm' refetches what was lost.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Read every stored value and verify it: SQLite's page check, then per series the meta, every
    chunk's key-bound checksum, row count and time span, continuity between chunks, and the tail.

    Exit 0 when the store is sound (or was repaired), 4 when damage was found and not repaired,
    or when the store was lost (its directory says it held klines; its database is gone or empty).
    """
    from trader.errors import StoreCorruptError, StoreError, StoreLostError
    from trader.store.klines import KlineStore, page_damage, salvage, writer_lock

    settings = load(config, None, None, None, store)
    path = settings.store_path()
    if not path.is_dir():
        raise StoreError(f"no kline store at {path}")
    doc: dict[str, Any] = {"store": str(path), "series": 0, "damaged": [], "repaired": [], "pages": [], "lost": None, "salvage": None}
    pages = page_damage(path) if (path / "cache.db").exists() else []
    doc["pages"] = pages
    found: list[tuple[str, str, list[str]]] = []
    actions: list[str] = []
    if pages:
        if repair:
            with writer_lock(path, settings.warm.lock_timeout_s):
                rep = salvage(path)
            doc["salvage"] = {
                "kept": [{"symbol": s, "interval": i, "klines": n} for s, i, n in rep.kept],
                "dropped": rep.dropped,
                "refetch": rep.refetch,
                "unreadable_rows": rep.unreadable_rows,
                "kept_aside": rep.kept_aside,
            }
            actions.append(f"salvaged {len(rep.kept)} series into a fresh database; the damaged one is kept as {rep.kept_aside}")
            actions += [f"lost (the next warm refetches it): {line}" for line in rep.refetch]
            actions += [f"lost (the next warm fetches it anew): {s}" for s in rep.dropped]
        else:
            found.append(("*", "*", [f"SQLite page check: {p}" for p in pages]))
    try:
        with KlineStore(path) as kstore:
            doc["lost"] = kstore.lost
            if kstore.lost is None:
                if repair:
                    with kstore.writer_lock(settings.warm.lock_timeout_s):
                        again = kstore.damaged()
                        actions += [a for s, i, _ in again for a in kstore.repair(s, i)]
                else:
                    found += kstore.damaged()
            doc["series"] = len(kstore.series())
    except StoreCorruptError as exc:
        if not found:
            found.append(("*", "*", [str(exc)]))
    doc["damaged"] = [{"symbol": s, "interval": i, "problems": p} for s, i, p in found]
    doc["repaired"] = actions
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        for s, i, problems in found:
            for p in problems:
                print(f"damaged: {'database' if s == '*' else f'{s} {i}'}: {p}")
        for a in actions:
            print(f"repaired: {a}")
        if doc["lost"] is None:
            summary = f"{doc['series']} series checked, {len(found)} damaged" + (f", {len(actions)} repairs" if repair else "")
            print(summary + ("" if repair or not found else "; run 'trader store check --repair'"), file=sys.stderr)
    if doc["lost"] is not None:
        raise StoreLostError(doc["lost"])
    if found and not repair:
        raise typer.Exit(4)
