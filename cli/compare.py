"""``trader compare``: reproduce each speed-up against its baseline on this machine and data.

JSON (``--json``; schema ``trader.compare/2``)::

    {"schema": "trader.compare/2", "mode": "quick", "latency_ms": 100.0, "symbols": 20, "runs": 3,
     "comparisons": [{"name": "rest_vs_ws", "title": "...", "reference": "17x ...", "note": "...",
                      "baseline": {"label", "wall_s", "wall_min_s", "wall_max_s", "runs", "api_calls",
                                   "weight", "symbols_per_s"},
                      "contenders": [{...same keys...}],
                      "ratios": {"<contender label>": 45.3},            # baseline median / contender median
                      "verdicts": {"<contender label>": "faster"}}]}    # faster | slower | no difference
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import ConfigOpt, fail, handle_errors, load

MENU = {
    "quick": ("all comparisons, 20 symbols", True, None),
    "full": ("all comparisons, every bundled symbol", False, None),
    "rest-vs-ws": ("REST per scan vs WebSocket cache (100 ms and 0 ms latency), 20 symbols", True, ["rest_vs_ws", "rest_vs_ws_0ms"]),
    "serial-vs-concurrent": ("serial vs concurrent REST fetching (and ccxt), 20 symbols", True, ["serial_vs_concurrent"]),
    "scoring": ("serial TA-Lib loop vs trader's scan core, 20 symbols", True, ["scoring"]),
    "ml": ("native XGBoost vs ONNX (batch, per row), pool with the model preloaded vs per scan, 20 symbols", True, ["ml_batch", "ml_row", "ml_pool"]),
    "all": ("all comparisons, every bundled symbol", False, None),
}


@handle_errors
def compare(
    quick: Annotated[bool | None, typer.Option("--quick/--full", help="20 symbols (quick) or every bundled symbol (full).", show_default=False)] = None,
    only: Annotated[str | None, typer.Option("--only", help="Comma-separated: rest_vs_ws, rest_vs_ws_0ms, serial_vs_concurrent, scoring, incremental, process_pool.", show_default=False)] = None,
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="REST latency injected into the replay exchange, ms.", min=0, max=10000)] = 100.0,
    runs: Annotated[int | None, typer.Option("--runs", help="Timed runs per side (default 3 quick, 5 full; at least 3).", min=3, max=100, show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write a bar chart PNG (needs matplotlib).", show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Measure what each speed-up buys, against the replay exchange with injected latency.

    With no arguments on a terminal, offers a menu. Always runs on the bundled data through a
    local replay exchange on 127.0.0.1 (its own, on a free port), never on a real exchange.
    """
    from trader.compare import COMPARISONS, run_compare

    load(config, None, None, None, None)  # validates the common options
    if plot is not None and not plot.parent.is_dir():
        raise fail(f"--plot: directory {plot.parent} does not exist", 2)
    which = [w.strip() for w in (only or "").split(",") if w.strip()] or None
    if quick is None and which is None and not as_json and plot is None and sys.stdin.isatty() and sys.stdout.isatty():
        from rich.prompt import Prompt

        for key, (text, _, _) in MENU.items():
            print(f"  {key:<22} {text}")
        choice = Prompt.ask("compare", choices=list(MENU), default="quick")
        _, quick, which = MENU[choice]
    quick = True if quick is None else quick
    which = which or list(COMPARISONS)
    results = run_compare(which, quick=quick, latency_ms=latency_ms, runs=runs)
    doc = {
        "schema": "trader.compare/2",
        "mode": "quick" if quick else "full",
        "latency_ms": latency_ms,
        "symbols": 20 if quick else 96,
        "runs": results[0].baseline.runs if results else 0,
        "comparisons": [c.as_dict() for c in results],
    }
    if plot is not None:
        _plot(results, plot)
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        _render(results, doc)


def _fmt_s(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _render(results: list[Any], doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160, no_color=True, highlight=False)
    table = Table(
        title=f"trader compare ({doc['mode']}, {doc['symbols']} symbols, REST latency {doc['latency_ms']:g} ms, "
        f"median of {doc['runs']} runs [min-max])"
    )
    for col, j in (("comparison", "left"), ("side", "left"), ("wall / scan", "right"), ("min-max", "right"), ("API calls", "right"),
                   ("weight", "right"), ("symbols/s", "right"), ("ratio", "right"), ("verdict", "left"), ("reference", "left")):
        table.add_column(col, justify=j)  # type: ignore[arg-type]
    for c in results:
        b = c.baseline
        spread = f"{_fmt_s(b.wall_min_s)}-{_fmt_s(b.wall_max_s)}"
        table.add_row(c.name, b.label, _fmt_s(b.wall_s), spread, f"{b.api_calls:g}", f"{b.weight:g}", f"{b.symbols_per_s:,.0f}",
                      "1.00x", "baseline", c.reference)
        for s in c.contenders:
            ratio = f"{c.ratios[s.label]:.2f}x"
            verdict = c.verdicts[s.label] if c.verdicts[s.label] != "slower" else "SLOWER than baseline"
            table.add_row("", s.label, _fmt_s(s.wall_s), f"{_fmt_s(s.wall_min_s)}-{_fmt_s(s.wall_max_s)}", f"{s.api_calls:g}",
                          f"{s.weight:g}", f"{s.symbols_per_s:,.0f}", f"[bold]{ratio}[/]" if console.is_terminal else ratio, verdict, "")
    console.print(table)
    console.print("speed-up over the baseline (log scale, | = 1x):")
    width = 50
    top = max(max(c.ratios.values()) for c in results)
    scale = width / max(math.log10(max(top, 10)), 1e-9)
    for c in results:
        for label, r in c.ratios.items():
            n = int(max(math.log10(r), 0) * scale) if r > 0 else 0
            bar = "█" * n if r >= 1 else "▏" * 1
            console.print(f"  {c.name[:20]:<20} {label[:18]:<18} |{bar} {r:.2f}x")
    for c in results:
        if c.note:
            console.print(f"  note {c.name}: {c.note}")


def _plot(results: list[Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise fail("--plot needs matplotlib: pip install 'trader[plot]'", 2) from None
    labels, values = [], []
    for c in results:
        for label, r in c.ratios.items():
            labels.append(f"{c.name}\n{label}")
            values.append(r)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels)), 4.5))
    ax.bar(range(len(values)), values, color=["#2a9d8f" if v >= 1 else "#e76f51" for v in values])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("speed-up over baseline (x)")
    ax.set_title("trader compare")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}x", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
