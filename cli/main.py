"""The ``trader`` command: assembles the sub-commands, nothing else.

Exit codes (README, "Exit codes"): 0 ok; 1 no result (e.g. no signal passes ``--min-score``);
2 usage or configuration error; 3 exchange or network error; 4 store error; 5 model error;
70 internal error (traceback printed); 130 interrupted.
"""

from __future__ import annotations

import typer

from cli.compare import compare
from cli.orders import account, order_app, position_app
from cli.replay import replay
from cli.scan import scan
from cli.store import store_app
from cli.trade import trade_app
from cli.tune import tune_app
from cli.warm import warm

app = typer.Typer(
    name="trader",
    help="Incremental Binance kline store, fast universe scanner and replay exchange.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("replay")(replay)
app.command("warm")(warm)
app.command("scan")(scan)
app.command("compare")(compare)
app.add_typer(store_app, name="store")
app.add_typer(tune_app, name="tune")
app.command("account")(account)
app.add_typer(order_app, name="order")
app.add_typer(position_app, name="position")
app.add_typer(trade_app, name="trade")


def _version(value: bool) -> None:
    if not value:
        return
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        v = version("trader")
    except PackageNotFoundError:
        v = "unknown"
    commit = ""
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5)
            commit = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            commit = ""
    print(f"trader {v}" + (f" ({commit})" if commit else ""))
    raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", help="Print the version (and git commit) and exit.", is_eager=True,
                                 callback=_version),
) -> None:
    """Incremental Binance kline store, fast universe scanner and replay exchange."""


def main() -> None:
    """Console-script entry point.

    Usage errors (an unknown option, a flag value out of range) are one line on stderr,
    ``trader: error: <what> (see 'trader <command> --help')``, exit 2 — not a usage panel.
    """
    import sys

    from trader.runtime import tune_allocator

    tune_allocator()  # keep numpy temporaries on the heap: no page faults per scan (trader/runtime.py)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print("trader: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # click's usage errors, vendored by typer
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            sys.exit(0)
        message = " ".join(str(exc.format_message() if hasattr(exc, "format_message") else exc).split())
        where = ctx.command_path if ctx is not None else "trader"
        print(f"trader: error: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
