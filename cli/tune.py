"""``trader tune``: measure what a signal is worth, train a model, manage models, search parameters.

Every sub-command reads the store only (no network) and shares ``--from``/``--to`` (UTC dates of
the moments used), ``--symbols``, ``--intervals`` and ``--horizon``. Heavy libraries (xgboost,
onnxmltools, optuna, scikit-learn, matplotlib) are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import (
    ConfigOpt,
    StoreOpt,
    fail,
    handle_errors,
    load,
    split_list,
    symbols_and_intervals,
)

tune_app = typer.Typer(
    help="Measure signals out of sample, train and manage models (XGBoost -> ONNX), tune parameters.",
    no_args_is_help=True,
    add_completion=False,
)

FromOpt = Annotated[str | None, typer.Option("--from", help="First moment, UTC date (YYYY-MM-DD) or ISO time.", show_default=False)]
ToOpt = Annotated[str | None, typer.Option("--to", help="End of the moments (exclusive), UTC date or ISO time.", show_default=False)]
SymbolsOpt = Annotated[str | None, typer.Option("--symbols", "-s", help="Comma-separated symbols (default: every stored symbol).", show_default=False)]
IntervalsOpt = Annotated[str | None, typer.Option("--intervals", "-i", help="Comma-separated intervals, base first (default 1h,4h).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]


def _window(frm: str | None, to: str | None) -> tuple[int | None, int | None]:
    from trader.timeutil import parse_date

    start, end = parse_date(frm, "--from"), parse_date(to, "--to")
    if start is not None and end is not None and end <= start:
        raise fail("--to must be after --from", 2)
    return start, end


def _json(doc: Any) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2).decode() + "\n")


def _fmt(x: float | None, pct: bool = False, nd: int = 3) -> str:
    if x is None:
        return "–"
    return f"{x * 100:+.{nd - 1}f}%" if pct else f"{x:+.{nd}f}"


def _ci(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"[{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"


def _verdict(r: dict[str, Any]) -> str:
    ic, t = r["rank_ic"]["mean"], r["rank_ic"]["t"]
    top = r["top_decile"]["random"]
    parts = []
    if t is None:
        parts.append("IC n/a")
    elif t >= 2:
        parts.append("IC > 0")
    elif t <= -2:
        parts.append("IC < 0")
    else:
        parts.append("IC ≈ 0")
    if top and top["diff_ci"][0] is not None:
        lo, hi = top["diff_ci"]
        parts.append("top beats random" if lo > 0 else ("top below random" if hi < 0 else "top ≈ random"))
    del ic
    return ", ".join(parts)


def _console() -> Any:
    """stdout console; wide when piped (cron logs, files) so tables never wrap."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def print_report(report: dict[str, Any], threshold: float) -> None:
    """The evaluation report as rich tables, one per horizon (stdout)."""
    from rich.table import Table

    console = _console()
    w = report["window"]
    console.print(
        f"[bold]signal report[/] {w['from']} → {w['to']}: {w['moments']} moments every {w['grid']}, {w['symbols']} symbols, "
        f"fee {w['fee_per_side'] * 100:g} % per side; excess = vs the universe median at the moment; CIs 95 %, week blocks"
    )
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    for warn in report.get("warnings", []):
        console.print(f"[red]warning:[/] {warn}")
    horizons = list(next(iter(report["scorers"].values())).keys()) if report["scorers"] else []
    key = f"{threshold:g}"
    for hz in horizons:
        printed = report.get("printed")
        table = Table(title=f"horizon {hz}" + (f"  (first row: what 'trader scan' prints — {printed})" if printed else ""), title_justify="left")
        for col in ("scorer", "rank IC", "t", f"≥{key} n", f"≥{key} net", "random", "vs random [CI]", "top decile net [CI]", "vs random [CI]", "verdict"):
            table.add_column(col, justify="left" if col in ("scorer", "verdict") else "right", no_wrap=True)
        for name, by in report["scorers"].items():
            r = by[hz]
            th = r["thresholds"].get(key) or {}
            td = r["top_decile"]
            rnd = td.get("random") or {}
            table.add_row(
                name,
                _fmt(r["rank_ic"]["mean"], nd=4),
                "–" if r["rank_ic"]["t"] is None else f"{r['rank_ic']['t']:+.2f}",
                str(th.get("n", 0)),
                _fmt(th.get("excess_mean"), pct=True),
                _fmt((th.get("random") or {}).get("excess_mean"), pct=True),
                f"{_fmt((th.get('random') or {}).get('diff_mean'), pct=True)} {_ci((th.get('random') or {}).get('diff_ci'))}",
                f"{_fmt(td['excess_mean'], pct=True)} {_ci(td['excess_ci'])}",
                f"{_fmt(rnd.get('diff_mean'), pct=True)} {_ci(rnd.get('diff_ci'))}",
                _verdict(r),
            )
        console.print(table)
    console.print(
        "rank IC: mean Spearman correlation of the signal with the forward return across symbols per moment; "
        "t: Newey-West. top decile: long the 10 % most bullish per moment, net of a round trip of fees; "
        "vs random: minus what random picks at the same moments earn (selection skill)."
    )


def _plot(path: Path, report: dict[str, Any], series: dict[Any, Any], horizon: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    moments = series["moments_ms"]
    days = (moments - moments[0]) / 86_400_000
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8))
    for name in report["scorers"]:
        ic = series[(name, horizon)]
        ok = np.isfinite(ic)
        if ok.sum() < 2:
            continue
        k = max(1, min(42, int(ok.sum()) // 4))  # ~1 week of 4h moments
        filled = np.where(ok, ic, 0.0)
        roll = np.convolve(filled, np.ones(k), "same") / np.maximum(np.convolve(ok.astype(float), np.ones(k), "same"), 1)
        ax1.plot(days, roll, label=name, lw=1)
    ax1.axhline(0, color="black", lw=0.5)
    ax1.set_title(f"rank IC over time at {horizon} (rolling mean)")
    ax1.set_xlabel(f"days since {report['window']['from']}")
    ax1.legend(fontsize=7, ncol=4)
    names = list(report["scorers"])
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        dec = report["scorers"][name][horizon]["deciles"]
        ax2.bar([d["decile"] + i * width - 0.4 for d in dec], [(d["excess_mean"] or 0) * 100 for d in dec], width, label=name)
    ax2.axhline(0, color="black", lw=0.5)
    ax2.set_title(f"mean excess return by decile of the signal at {horizon} (gross, %)")
    ax2.set_xlabel("decile (10 = most bullish)")
    ax2.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@tune_app.command("evaluate")
@handle_errors
def evaluate_cmd(
    scorer: Annotated[list[str] | None, typer.Option("--scorer", help="signal (what scan prints with a model) | blend | score (the hand-made factor score) | ml (raw probability) | a factor (trend, momentum, volume, volatility, structure, mtf) | momentum_24h | reversal_24h | random (repeatable; default: what scan prints first, then all).", show_default=False)] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Evaluate without the active model (what 'scan --no-model' prints).")] = False,
    horizon: Annotated[str | None, typer.Option("--horizon", help="Comma-separated horizons (default 4h,24h,72h).", show_default=False)] = None,
    frm: FromOpt = None,
    to: ToOpt = None,
    symbols: SymbolsOpt = None,
    intervals: IntervalsOpt = None,
    as_json: JsonOpt = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG: IC over time and excess by decile.", show_default=False)] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Out-of-sample signal quality of scorers over the stored history, beside random, momentum and reversal.

    Rank IC with Newey-West t, excess return vs the universe median by threshold and decile with
    week-block bootstrap CIs, hit rates, and what random picks at the same moments earn.
    """
    if plot is not None and not plot.parent.is_dir():
        raise fail(f"--plot: directory {plot.parent} does not exist", 2)
    settings = load(config, None, None, None, store)
    wanted, ivs = symbols_and_intervals(settings, symbols, intervals)
    start, end = _window(frm, to)
    from trader.ml.jobs import evaluate_job

    hz = split_list(horizon) or None
    names = [n for s in (scorer or []) for n in split_list(s)] or None
    report, _, series = evaluate_job(settings, settings.store_path(), wanted, ivs, names, hz, start, end, keep_series=plot is not None,
                                     use_model=not no_model)
    if plot is not None:
        _plot(plot, report, series, settings.ml.horizon if settings.ml.horizon in (hz or settings.tune.horizons) else (hz or settings.tune.horizons)[0])
        print(f"tune: wrote {plot}", file=sys.stderr)
    if as_json:
        _json(report)
    else:
        print_report(report, settings.scan.min_score)


class _Bar:
    """A rich progress bar on stderr (a no-op when stderr is not a terminal: cron logs stay clean)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task("dataset", total=1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def dataset(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total, description="dataset")

    def rounds(self, done: int, total: int, label: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total, description=label)


@tune_app.command("train")
@handle_errors
def train_cmd(
    frm: FromOpt = None,
    to: ToOpt = None,
    symbols: SymbolsOpt = None,
    intervals: IntervalsOpt = None,
    horizon: Annotated[str | None, typer.Option("--horizon", help="Label horizon (default ml.horizon, 24h).", show_default=False)] = None,
    target: Annotated[str | None, typer.Option("--target", help="excess | barrier (default ml.target).", show_default=False)] = None,
    no_activate: Annotated[bool, typer.Option("--no-activate", help="Register the model without making it active.")] = False,
    permutation: Annotated[bool, typer.Option("--permutation/--no-permutation", help="Run the permutation test (labels shuffled within each moment).")] = True,
    if_due: Annotated[bool, typer.Option("--if-due", help="Retrain only when the active model is older than ml.max_age or ml.retrain_interval new labelled signals exist.")] = False,
    ship: Annotated[bool, typer.Option("--ship", help="Also write the model into the package as its shipped model (make model); only if its checks pass.")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Walk-forward XGBoost training with purge and embargo, ONNX export with a parity check, registration.

    The model becomes active only when its out-of-sample checks pass (exit 1 otherwise: registered,
    not active). Exit 5 on model errors (too few samples, export or parity failure).
    """
    over: dict[str, Any] = {k: v for k, v in {"horizon": horizon, "target": target}.items() if v is not None}
    settings = load(config, None, None, None, store, {"ml": over} if over else None)
    wanted, ivs = symbols_and_intervals(settings, symbols, intervals)
    start, end = _window(frm, to)
    path = settings.store_path()
    from trader.errors import NoResultError
    from trader.ml.jobs import due, train_job

    if if_due:
        go, why = due(settings, path, wanted, ivs)
        if not go:
            from trader.ml.registry import Registry
            from trader.trade.ledger import virtual_samples_since

            active = Registry(path).active()
            if active is not None:
                import platformdirs

                ledgers = settings.trade.ledger_dir or Path(platformdirs.user_data_dir("trader", appauthor=False))
                n_virtual = virtual_samples_since(Path(ledgers), int(active.meta.get("label_end_ms", 0)))
                if n_virtual >= settings.ml.retrain_interval:
                    go, why = True, f"{n_virtual} new virtual-position outcomes in the trade ledgers (ml.retrain_interval {settings.ml.retrain_interval})"
        if not go:
            print(f"tune: not due: {why}", file=sys.stderr)
            return
        print(f"tune: due: {why}", file=sys.stderr)
    with _Bar(not as_json) as bar:
        summary = train_job(settings, path, wanted, ivs, start, end, activate=not no_activate, permutation=permutation,
                            progress=bar.rounds, dataset_progress=bar.dataset)
    if ship and summary["checks"]["passed"]:
        from trader.ml.registry import ship_model

        where = ship_model(Path(summary["path"]))
        print(f"tune: shipped model {summary['id']} written to {where}", file=sys.stderr)
    if as_json:
        _json(summary)
    else:
        _print_train(summary, settings)
    if not summary["checks"]["passed"]:
        raise NoResultError(f"model {summary['id']} registered but not activated: " + "; ".join(summary["checks"]["reasons"]))


def _print_train(summary: dict[str, Any], settings: Any) -> None:
    from rich.table import Table

    console = _console()
    d = summary["dataset"]
    console.print(f"[bold]model {summary['id']}[/]: {summary['rows']} labelled rows ({d['symbols']} symbols × {d['moments']} moments, "
                  f"{d['features']} features; dataset {d['seconds']} s), training {summary['seconds']} s, final model {summary['rounds']} rounds")
    table = Table(title="walk-forward folds (out of sample)", title_justify="left")
    for col in ("fold", "test from", "test to", "rows fit", "rows test", "rounds", "AUC", "log loss", "rank IC", "t", "top decile net"):
        table.add_column(col, justify="right")
    from trader.timeutil import iso

    for f in summary["folds"]:
        table.add_row(str(f["fold"]), iso(f["test_from_ms"]), iso(f["test_to_ms"]), str(f["rows_fit"]), str(f["rows_test"]), str(f["best_rounds"]),
                      str(f.get("auc")), str(f.get("logloss")), _fmt(f.get("rank_ic"), nd=4), str(f.get("rank_ic_t")), _fmt(f.get("top_decile_excess"), pct=True))
    console.print(table)
    if summary["permutation"]:
        p = summary["permutation"]
        console.print(f"permutation test (labels shuffled within each moment): rank IC {_fmt(p['rank_ic'], nd=4)}, t {p['t']} — should be ≈ 0")
    print_report(summary["oos"], settings.scan.min_score)
    checks = summary["checks"]
    console.print(f"ONNX parity: max |native - onnx| = {checks['parity_max_abs']:.1e}")
    if summary["activated"]:
        console.print(f"[green]active[/]: model {summary['id']} (previous kept for 'trader tune use --previous')")
    elif checks["passed"]:
        console.print(f"registered, not activated (--no-activate): 'trader tune use {summary['id']}' activates it")
    else:
        for r in checks["reasons"]:
            console.print(f"[red]not activated[/]: {r}")


@tune_app.command("list")
@handle_errors
def list_cmd(
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Registered models, the active one marked, with their out-of-sample figures."""
    from trader.ml.registry import Registry, shipped_model
    from trader.timeutil import iso

    settings = load(config, None, None, None, store)
    reg = Registry(settings.store_path())
    shipped = shipped_model()
    models = ([shipped] if shipped is not None else []) + reg.models()
    active, previous = reg.active_id(), reg.previous_id()
    rows = []
    for m in models:
        hz = m.meta.get("horizon", "24h")
        oos = m.meta.get("oos", {}).get(hz, {})
        rows.append({
            "id": m.id, "shipped": bool(m.meta.get("shipped")), "active": m.id == active, "previous": m.id == previous,
            "created": iso(m.meta.get("created_ms")),
            "target": m.meta.get("target"), "horizon": hz, "train_to": m.meta.get("train_window", {}).get("to"),
            "rank_ic": oos.get("rank_ic", {}).get("mean"), "rank_ic_t": oos.get("rank_ic", {}).get("t"),
            "top_decile_excess": oos.get("top_decile", {}).get("excess_mean"), "checks_passed": m.meta.get("checks", {}).get("passed"),
        })
    if as_json:
        _json({"active": active, "previous": previous, "models": rows})
        return
    if not rows:
        print("no models yet: 'trader tune train' registers one")
        return
    if active is None:
        print("no model is active ('trader tune use default' returns to the shipped one)")
    from rich.table import Table

    table = Table(title=f"models in {reg.root}", title_justify="left")
    for col in ("", "id", "created", "target", "horizon", "trained to", "OOS rank IC", "t", "top decile net", "checks"):
        table.add_column(col)
    for r in rows:
        mark = "*" if r["active"] else ("prev" if r["previous"] else "")
        table.add_row(mark, r["id"] + (" (shipped)" if r["shipped"] else ""), r["created"] or "", r["target"] or "", r["horizon"], r["train_to"] or "", _fmt(r["rank_ic"], nd=4),
                      str(r["rank_ic_t"]), _fmt(r["top_decile_excess"], pct=True), "pass" if r["checks_passed"] else "fail")
    _console().print(table)


@tune_app.command("use")
@handle_errors
def use_cmd(
    model_id: Annotated[str | None, typer.Argument(help="Model id (or a unique prefix), 'default' (the shipped model) or 'none' (no model).", show_default=False)] = None,
    previous: Annotated[bool, typer.Option("--previous", help="Roll back to the model active before the last switch.")] = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Make a model active (atomic switch; the one it replaces stays for --previous): an id, 'default', or 'none'."""
    from trader.ml.registry import Registry

    if (model_id is None) == (not previous):
        raise fail("give a model id or --previous (not both)", 2)
    settings = load(config, None, None, None, store)
    reg = Registry(settings.store_path())
    info = reg.rollback() if previous else reg.use(str(model_id))
    print(f"tune: active model {info.id}" + (" (shipped)" if info.meta.get("shipped") else "") if info is not None
          else "tune: no model is active (scores are the hand-made factor score)", file=sys.stderr)


@tune_app.command("search")
@handle_errors
def search_cmd(
    trials: Annotated[int | None, typer.Option("--trials", help="Trials to run now (default tune.trials).", min=1, show_default=False)] = None,
    study: Annotated[str, typer.Option("--study", help="Study name; an existing study is resumed.")] = "default",
    storage: Annotated[str | None, typer.Option("--storage", help="SQLAlchemy URL (default: SQLite in <store>/tune/optuna.db).", show_default=False)] = None,
    objective: Annotated[str | None, typer.Option("--objective", help="ic (mean OOS rank IC) | excess (top-decile excess net of fees) | backtest (the trade plan, walk-forward backtests).", show_default=False)] = None,
    space: Annotated[str, typer.Option("--space", help="score (weights + factor coefficients) | model (XGBoost) | all.")] = "all",
    worker: Annotated[int, typer.Option("--worker", help="Number of this process among those sharing a study (offsets the seed).", min=0)] = 0,
    plan: Annotated[str | None, typer.Option("--plan", help="--objective backtest: which plan's parameters (seed | portfolio; default risk.plan).", show_default=False)] = None,
    export_best: Annotated[Path | None, typer.Option("--export-best", help="Write the study's best overlay to FILE (from any machine sharing the study) and exit.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the config overlay here (default <store>/tune/<study>.yaml).", show_default=False)] = None,
    frm: FromOpt = None,
    to: ToOpt = None,
    symbols: SymbolsOpt = None,
    intervals: IntervalsOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Optuna TPE search of the score's weights and factor coefficients and the model's hyper-parameters.

    Objective: mean out-of-sample figure over the inner walk-forward folds; the last fold is held
    out and reported. Writes a config overlay (--config accepts it) with the held-out figures.
    """
    if out is not None and not out.parent.is_dir():
        raise fail(f"--out: directory {out.parent} does not exist", 2)
    over: dict[str, Any] = {k: v for k, v in {"objective": objective, "storage": storage}.items() if v is not None}
    if plan is not None and plan not in ("seed", "portfolio"):
        raise fail(f"--plan must be seed or portfolio, got {plan}", 2)
    overlay: dict[str, Any] = {"tune": over} if over else {}
    if plan is not None:
        overlay["risk"] = {"plan": plan}
    settings = load(config, None, None, None, store, overlay or None)
    wanted, ivs = symbols_and_intervals(settings, symbols, intervals)
    start, end = _window(frm, to)
    path = settings.store_path()
    from trader.ml.jobs import load_dataset
    from trader.ml.search import overlay_yaml, run_search

    url = settings.tune_storage_url()
    from trader.ml.storage import mask_url, open_storage

    storage_obj = open_storage(url, heartbeat_s=settings.tune.heartbeat_s)  # checked before any data loads: fails in seconds
    if export_best is not None:
        _export_best(storage_obj, study, export_best, mask_url(url))
        return
    url_shown = mask_url(url)
    n = trials or settings.tune.trials
    if settings.tune.objective == "backtest":
        _backtest_search(settings, path, wanted, start, end, n, study, storage_obj, out, as_json, worker)
        return
    ds = load_dataset(settings, path, wanted, ivs, start_ms=start, end_ms=end)

    def progress(done: int, total: int, best: float | None) -> None:
        if not as_json:
            print(f"search: trial {done}/{total}, best {'–' if best is None else f'{best:+.5f}'}", file=sys.stderr, flush=True)

    result = run_search(ds, settings, trials=n, study_name=study, storage=storage_obj, objective=settings.tune.objective, space=space,
                        worker=worker, progress=progress)
    result["storage"] = url_shown
    target = out or (path / "tune" / f"{study}.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    text = overlay_yaml(result)
    tmp.write_text(text)
    tmp.replace(target)
    _remember_overlay(storage_obj, study, text)
    result["overlay"] = str(target)
    if as_json:
        _json(result)
        return
    print(f"search: {result['trials']} trials in the study ({result['pruned']} pruned), {result['seconds']} s; best #{result['best']['number']} "
          f"inner-fold objective {result['best']['value']:+.5f}", file=sys.stderr)
    print_report(result["held_out"], settings.scan.min_score)
    print(f"overlay: {target} (use it with --config {target})")


def _remember_overlay(storage: Any, study: str, text: str) -> None:
    """Keep the study's best overlay in the study itself: ``--export-best`` writes it from any machine."""
    import optuna

    optuna.load_study(study_name=study, storage=storage).set_user_attr("overlay", text)


def _export_best(storage: Any, study: str, target: Path, shown: str) -> None:
    import optuna

    from trader.errors import NoResultError

    try:
        s = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise NoResultError(f"no study {study!r} in {shown}") from None
    text = s.user_attrs.get("overlay")
    if not text:
        raise NoResultError(f"study {study!r} has no overlay yet (a worker writes it when its search ends)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)
    print(f"overlay: {target} (study {study!r}, {len(s.trials)} trials, best #{s.best_trial.number if s.best_trials else '–'})")


def _backtest_search(settings: Any, path: Path, wanted: list[str], start: int | None, end: int | None, n: int, study: str, url: Any,
                     out: Path | None, as_json: bool, worker: int) -> None:
    """``tune search --objective backtest``: the plan of ``risk.plan`` searched walk-forward, its overlay
    written (and kept in the study for ``--export-best``), the held-out report printed."""
    portfolio = settings.risk.plan == "portfolio"

    def progress(done: int, total: int, best: float | None) -> None:
        if not as_json:
            print(f"search: trial {done}/{total}, best inner mean net return {'–' if best is None else f'{best:+.2%}'}", file=sys.stderr, flush=True)

    common = dict(symbols=wanted or None, start_ms=start, end_ms=end, trials=n, study_name=study, storage=url, worker=worker, progress=progress)
    if portfolio:
        from trader.trade.portfolio_search import portfolio_overlay, run_portfolio_search

        result = run_portfolio_search(settings, path, **common)  # type: ignore[arg-type]
        text = portfolio_overlay(result)
    else:
        from trader.trade.plan_search import plan_overlay, run_plan_search

        result = run_plan_search(settings, path, **common)  # type: ignore[arg-type]
        text = plan_overlay(result)
    target = out or (path / "tune" / f"{study}.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    _remember_overlay(url, study, text)
    result["overlay"] = str(target)
    if as_json:
        _json(result)
        return
    h = result["held_out"]
    if portfolio:
        r = h["random_portfolio"]
        print(f"search: {result['trials']} trials, {result['seconds']} s; best #{result['best']['number']} {result['best']['params']}: "
              f"inner folds {result['best']['inner_mean_net_return']:+.2%}")
        print(f"held out, {h['decisions']} decisions: tuned {h['tuned']['net_return']:+.2%}, default {h['default']['net_return']:+.2%}, "
              f"random portfolios {r['mean']:+.2%} (min {min(r['net_returns']):+.2%}, max {max(r['net_returns']):+.2%}), "
              f"equal weight {h['equal_weight_long']:+.2%}" + (f", BTC {h['btc_long']:+.2%}" if h["btc_long"] is not None else ""))
        print("the tuned plan " + ("beats" if h["tuned_beats_random"] else "does NOT beat") + " every random portfolio on the held-out block")
    else:
        print(f"search: {result['trials']} trials, {result['seconds']} s; best #{result['best']['number']}: inner folds "
              f"{result['best']['inner_mean_net_return']:+.2%} ({', '.join(f'{r:+.2%}' for r in result['best']['fold_returns'] or [])})")
        print(f"held out, {h['decisions']} decisions: tuned {h['tuned']['net_return']:+.2%} ({h['tuned']['trades']} trades), "
              f"default plan {h['default_plan']['net_return']:+.2%}, random entries {h['random_baseline']['mean']:+.2%} "
              f"(min {min(h['random_baseline']['net_returns']):+.2%}, max {max(h['random_baseline']['net_returns']):+.2%})")
        if not h["tuned_beats_random"]:
            print("the tuned plan does NOT beat random entries on the held-out block")
    print(f"overlay: {target} (use it with --config {target})")
