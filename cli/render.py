"""Rendering of scan results: rich table on a TTY (plain text otherwise), JSON, NDJSON, CSV.

JSON document (``--format json``; stable, versioned by ``schema``)::

    {
      "schema": "trader.scan/1",
      "exchange_time_ms": 1728921600000,      # the exchange time the scan was judged at
      "min_score": 75.0,
      "intervals": ["1h", "4h"],
      "strategy": "vectorized",
      "universe": 96,                          # symbols asked for
      "scored": 96,                            # symbols scored
      "signals": [                             # score >= min_score, best first (--top N keeps N)
        {"symbol": "ETHUSDT", "direction": "long", "score": 79.61,   # with a model: the model's signal (trader.ml.signal)
         "factors": {"trend": .., "momentum": .., "volume": .., "volatility": .., "structure": .., "mtf": ..,
                     "factor_score": ..},          # the hand-made factors (0-100) and their blend, as columns
         "last_close": 2631.3, "change_24h_pct": 2.113, "close_time_ms": 1728921599999, "data_age_s": 0.0,
         "ml_probability": 0.5312,            # the model's P(beats the universe median over its horizon), null without one
         "percentile": 0.9271,                # that probability's rank across the scanned universe (0-1]
         "expected_excess_pct": 0.152,        # walk-forward folds: excess over the median on this side, net of a round trip, %
         "hit_rate": 0.523}                   # walk-forward folds: share of this score bucket's signals that won after fees
      ],
      "stale": [{"symbol": .., "interval": .., "newest_close_ms": .., "age_s": ..}],
      "insufficient_history": [{"symbol": .., "interval": .., "klines": ..}],
      "errors": [{"symbol": .., "message": ..}],
      "timings_ms": {"load": .., "features": .., "total": ..},
      "model": "20261201T203815Z-6fa47060",    # the model the scores come from, or null (the hand-made factor score)
      "model_window": {"from": .., "to": ..}   # its training window (UTC), or null
    }

NDJSON prints one ``signals[]`` object per line; CSV one row per signal with the factors as columns.
"""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

import orjson

from trader.features.factors import FACTORS

SCHEMA = "trader.scan/1"


def scan_document(result: Any, signals: list[Any], min_score: float, intervals: list[str]) -> dict[str, Any]:
    """The documented JSON document of one scan."""
    return {
        "schema": SCHEMA,
        "exchange_time_ms": result.exchange_now_ms,
        "min_score": min_score,
        "intervals": intervals,
        "strategy": result.strategy,
        "universe": result.universe,
        "scored": len(result.signals),
        "signals": [s.as_dict() for s in signals],
        "stale": [{"symbol": s, "interval": i, "newest_close_ms": c, "age_s": round(a, 1)} for s, i, c, a in result.stale],
        "insufficient_history": [{"symbol": s, "interval": i, "klines": n} for s, i, n in result.insufficient],
        "errors": [{"symbol": s, "message": m} for s, m in result.errors],
        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
        "model": result.model,
        "model_window": None if result.model_window is None else {"from": result.model_window.get("from"), "to": result.model_window.get("to")},
    }


def render_scan(result: Any, signals: list[Any], fmt: str, min_score: float, intervals: list[str]) -> None:
    """Write one scan's output to stdout in ``fmt`` (table, json, ndjson, csv)."""
    if fmt == "json":
        sys.stdout.write(orjson.dumps(scan_document(result, signals, min_score, intervals)).decode() + "\n")
    elif fmt == "ndjson":
        for s in signals:
            sys.stdout.write(orjson.dumps(s.as_dict()).decode() + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["symbol", "direction", "score", *FACTORS, "factor_score", "last_close", "change_24h_pct", "close_time_ms", "data_age_s",
                    "ml_probability", "percentile", "expected_excess_pct", "hit_rate"])
        for s in signals:
            d = s.as_dict()
            w.writerow([d["symbol"], d["direction"], d["score"], *(d["factors"].get(f, "") for f in FACTORS), d["factors"].get("factor_score", ""),
                        d["last_close"], d["change_24h_pct"], d["close_time_ms"], d["data_age_s"],
                        *("" if d[k] is None else d[k] for k in ("ml_probability", "percentile", "expected_excess_pct", "hit_rate"))])
        sys.stdout.write(buf.getvalue())
    else:
        _table(result, signals, min_score, intervals)
    sys.stdout.flush()


def _fmt_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(result: Any, signals: list[Any], min_score: float, intervals: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tty = console.is_terminal
    if not tty:  # cron logs: never squeeze the table into 80 columns
        console = Console(width=160, no_color=True, highlight=False)
    mw = getattr(result, "model_window", None)
    source = (f"model {result.model}, trained {(mw or {}).get('from', '?')[:10]} → {(mw or {}).get('to', '?')[:10]}" if result.model
              else "hand-made factor score, no model")
    table = Table(
        title=f"{len(signals)} of {len(result.signals)} symbols score ≥ {min_score:g} ({'/'.join(intervals)}, exchange time "
        f"{_iso(result.exchange_now_ms)}; {source})",
        header_style="bold" if tty else None,
    )
    for name, justify in (("symbol", "left"), ("dir", "left"), ("score", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for f in FACTORS:
        table.add_column(f[:6], justify="right")
    with_ml = any(s.ml_probability is not None for s in signals)
    if with_ml:
        table.add_column("factors", justify="right")
        table.add_column("P(ml)", justify="right")
        table.add_column("exp. %", justify="right")
        table.add_column("hit", justify="right")
    table.add_column("last close", justify="right")
    table.add_column("24h %", justify="right")
    table.add_column("age", justify="right")
    for s in signals:
        colour = ("green" if s.direction == "long" else "red") if tty else ""
        change = "" if s.change_24h_pct != s.change_24h_pct else f"{s.change_24h_pct:+.2f}"
        table.add_row(
            s.symbol,
            f"[{colour}]{s.direction}[/]" if colour else s.direction,
            f"[bold]{s.score:.1f}[/]" if tty else f"{s.score:.1f}",
            *(f"{s.factors.get(f, float('nan')):.0f}" for f in FACTORS),
            *([f"{s.factors.get('factor_score', float('nan')):.0f}", _opt(s.ml_probability, "{:.3f}"),
               _opt(s.expected_excess_pct, "{:+.2f}"), _opt(s.hit_rate, "{:.0%}")] if with_ml else []),
            f"{s.last_close:g}",
            change,
            _fmt_age(s.data_age_s),
        )
    if with_ml:
        table.caption = ("score: the model's signal (75 = its top or bottom decile across the universe); factors: the hand-made "
                         "factor score; exp. %: mean excess over the universe median on this side, net of a round trip of fees, in "
                         "the model's walk-forward test folds; hit: share of that score bucket's signals there that won after fees")
    console.print(table)


def _opt(x: float | None, fmt: str) -> str:
    return "–" if x is None or x != x else fmt.format(x)


def print_notes(result: Any) -> None:
    """Stale, short and failed series on stderr — for every output format (cron reads stdout)."""
    notes = []
    if result.stale:
        notes.append(f"{len(result.stale)} stale series not scored (run 'trader warm' or 'scan --refresh'): "
                     + ", ".join(f"{s} {i}" for s, i, _, _ in result.stale[:8]) + (" …" if len(result.stale) > 8 else ""))
    if result.insufficient:
        notes.append(f"{len(result.insufficient)} series with too little history: "
                     + ", ".join(f"{s} {i} ({n})" for s, i, n in result.insufficient[:8]))
    for s, m in result.errors:
        notes.append(f"{s}: {m}")
    notes += list(getattr(result, "warnings", []))
    for n in notes:
        print(f"trader: warning: {n}", file=sys.stderr)


def _iso(ms: int) -> str:
    from trader.timeutil import iso

    return str(iso(ms, "%Y-%m-%d %H:%M UTC"))
