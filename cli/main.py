"""The ``trader`` command: assembles the sub-commands, nothing else.

Exit codes (README, "Exit codes"): 0 ok; 1 no result (e.g. no signal passes ``--min-score``);
2 usage or configuration error; 3 exchange or network error; 4 store error; 5 model error;
70 internal error (traceback printed); 130 interrupted.
"""

from __future__ import annotations

import typer

from cli.compare import compare
from cli.replay import replay
from cli.scan import scan
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


@app.callback()
def _root() -> None:
    """Incremental Binance kline store, fast universe scanner and replay exchange."""


def main() -> None:
    """Console-script entry point."""
    from trader.runtime import tune_allocator

    tune_allocator()  # keep numpy temporaries on the heap: no page faults per scan (trader/runtime.py)
    app()


if __name__ == "__main__":
    main()
