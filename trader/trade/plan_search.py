"""``trader tune search --objective backtest``: tune the trade plan by walk-forward backtests.

The decision moments are cut into ``folds`` consecutive blocks of time. A trial (Optuna TPE,
seeded; the study lives in the same storage as the other searches) backtests its plan on every
block but the last, each from fresh cash, net of fees, spread and impact (the venue's matching
rules: :class:`~trader.trade.broker.SimBroker`); its objective is the mean net return over those
inner blocks. The **last block is never seen by the search**: the best plan is backtested on it
once, beside the default plan and the random-entry baseline (random symbols and directions at the
plan's signal moments, same exits, ``seeds`` runs) on the same block — a plan that does not beat the
baseline is reported as such.

Searched (``risk`` keys): ``min_score`` 50-90, ``stop_loss`` 1-10 %, the two take-profit rungs
(1-15 %, then 1.2-3x the first) and the first rung's share (20-80 %), ``time_stop`` 2h-48h,
``max_positions`` 1-6, and ``min_confidence`` 0.5-0.8 when a model is active.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from trader.config import RiskConfig, Settings
from trader.errors import ConfigError
from trader.trade.backtest import PlanResult
from trader.trade.backtest import random_picker as _random_picker
from trader.trade.backtest import run_plan as _run
from trader.trade.ledger import Ledger
from trader.trade.signals import candidates_at, decision_dataset, scores

__all__ = ["run_plan_search"]

_TIME_STOPS = ["2h", "4h", "8h", "12h", "24h", "48h"]


def _plan(trial: Any, model: bool) -> dict[str, Any]:
    tp1 = trial.suggest_float("tp1", 0.01, 0.15)
    plan = {
        "min_score": trial.suggest_float("min_score", 50.0, 90.0),
        "stop_loss": trial.suggest_float("stop_loss", 0.01, 0.10),
        "take_profit": [tp1, tp1 * trial.suggest_float("tp2_over_tp1", 1.2, 3.0)],
        "take_profit_sizes": [trial.suggest_float("tp1_share", 0.2, 0.8)],
        "time_stop": trial.suggest_categorical("time_stop", _TIME_STOPS),
        "max_positions": trial.suggest_int("max_positions", 1, 6),
    }
    plan["take_profit_sizes"].append(1.0 - plan["take_profit_sizes"][0])
    if model:
        plan["min_confidence"] = trial.suggest_float("min_confidence", 0.5, 0.8)
    return plan


def run_plan_search(
    settings: Settings,
    store_path: Path,
    *,
    symbols: list[str] | None,
    start_ms: int | None,
    end_ms: int | None,
    trials: int,
    folds: int = 4,
    seeds: int = 3,
    study_name: str = "plan",
    storage: Any = None,
    cash: float = 10_000.0,
    progress: Callable[[int, int, float | None], None] | None = None,
    worker: int = 0,
) -> dict[str, Any]:
    """Search the trade plan; returns the best plan, its inner objective and the held-out report.

    Raises:
        ConfigError: fewer than 2 folds, or too few moments per fold.
    """
    import optuna

    if folds < 2:
        raise ConfigError("a walk-forward plan search needs at least 2 folds (the last is held out)")
    t0 = time.perf_counter()
    ds = decision_dataset(settings, store_path, symbols or [], start_ms, end_ms)
    if ds.n_moments < folds * 24:
        raise ConfigError(f"{ds.n_moments} decision moments are too few for {folds} folds (at least 24 per fold)")
    base = settings.universe.intervals[0]
    from trader.store.klines import KlineStore

    with KlineStore(store_path) as store:
        blocks = {s: store.load(s, base) for s in ds.symbols}
    score, direction, prob = scores(settings, ds, store_path)
    model = prob is not None
    edges = np.linspace(0, ds.n_moments, folds + 1).astype(int)
    money = Decimal(repr(cash))

    def backtest_block(k: int, risk_cfg: RiskConfig, min_score: float, tmp: str, tag: str, random_seed: int | None = None) -> dict[str, Any]:
        return _backtest_block(k, risk_cfg, min_score, tmp, tag, random_seed).as_dict()

    def _backtest_block(k: int, risk_cfg: RiskConfig, min_score: float, tmp: str, tag: str, random_seed: int | None = None) -> PlanResult:
        lo, hi = int(edges[k]), int(edges[k + 1])
        sub = ds.window(int(ds.moments_ms[lo]), int(ds.moments_ms[hi - 1]) + 1)
        sc, dr = score[:, lo:hi], direction[:, lo:hi]
        pr = None if prob is None else prob[:, lo:hi]
        s = settings.model_copy(update={"risk": risk_cfg})
        lg = Ledger(Path(tmp) / f"{tag}.sqlite", durable=False)
        try:
            if random_seed is None:
                pick = lambda m: candidates_at(sub, sc, dr, pr, m, min_score)  # noqa: E731
                return asyncio.run(_run(s, sub, blocks, base, lg, pick, min_score, model, money))
            counts = [int((sub.valid[:, m] & np.isfinite(sc[:, m]) & (np.round(sc[:, m], 6) >= min_score)).sum()) for m in range(sub.n_moments)]
            return asyncio.run(_run(s, sub, blocks, base, lg, _random_picker(sub, counts, np.random.default_rng(random_seed)), 0.0, False, money))
        finally:
            lg.close()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.tune.seed + 1000 * worker)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler, load_if_exists=True)
    from trader.ml.storage import check_fingerprint

    check_fingerprint(study, {"symbols": list(ds.symbols), "from_ms": int(ds.moments_ms[0]), "to_ms": int(ds.moments_ms[-1]),
                              "klines": ds.fingerprint, "plan": "seed"})
    study.set_user_attr("objective", "backtest")
    with tempfile.TemporaryDirectory() as tmp:

        def objective(trial: Any) -> float:
            plan = _plan(trial, model)
            cfg = RiskConfig(**{**settings.risk.model_dump(), **plan})
            rets = [backtest_block(k, cfg, plan["min_score"], tmp, f"t{trial.number}-{k}")["net_return"] for k in range(folds - 1)]
            trial.set_user_attr("fold_returns", rets)
            return float(np.mean(rets))

        def callback(study: Any, trial: Any) -> None:
            if progress is not None:
                progress(trial.number + 1, trials, study.best_value if study.best_trial is not None else None)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from trader.ml.search import optimize_through_outages

        optimize_through_outages(study, objective, trials, [callback])
        best = study.best_trial
        plan = _plan(optuna.trial.FixedTrial(best.params), model)
        best_cfg = RiskConfig(**{**settings.risk.model_dump(), **plan})
        held = folds - 1
        default_min = settings.entry_min_score()
        tuned = backtest_block(held, best_cfg, plan["min_score"], tmp, "held-tuned")
        default = backtest_block(held, settings.risk, default_min, tmp, "held-default")
        randoms = [backtest_block(held, best_cfg, plan["min_score"], tmp, f"held-random-{s}", random_seed=s)["net_return"] for s in range(seeds)]
    keep = ("trades", "net_return", "max_drawdown", "exposure", "fees_paid_quote", "exit_reasons")
    lo, hi = int(edges[held]), int(edges[held + 1])
    return {
        "objective": "backtest",
        "trials": len(study.trials),
        "best": {"number": best.number, "inner_mean_net_return": round(float(best.value or 0.0), 6), "fold_returns": best.user_attrs.get("fold_returns"),
                 "plan": plan},
        "held_out": {
            "from_ms": int(ds.moments_ms[lo]), "to_ms": int(ds.moments_ms[hi - 1]), "decisions": hi - lo,
            "tuned": {k: tuned[k] for k in keep},
            "default_plan": {k: default[k] for k in keep},
            "random_baseline": {"seeds": seeds, "net_returns": randoms, "mean": round(float(np.mean(randoms)), 6) if randoms else None},
            "tuned_beats_random": bool(randoms) and tuned["net_return"] > max(randoms),
            "tuned_beats_default": tuned["net_return"] > default["net_return"],
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


def plan_overlay(result: dict[str, Any]) -> str:
    """A ``risk:`` config overlay of the best plan, with the held-out figures as comments."""
    p = result["best"]["plan"]
    h = result["held_out"]
    lines = [
        "# trader tune search --objective backtest: the best trade plan of the inner folds",
        f"# held out ({h['decisions']} decisions): tuned {h['tuned']['net_return']:+.2%}, default plan {h['default_plan']['net_return']:+.2%}, "
        f"random entries {h['random_baseline']['mean']:+.2%} (mean of {h['random_baseline']['seeds']})"
        + ("" if h["tuned_beats_random"] else " -- the tuned plan does NOT beat random entries"),
        "risk:",
        f"  min_score: {p['min_score']:.2f}",
        f"  stop_loss: {p['stop_loss']:.4f}",
        f"  take_profit: [{p['take_profit'][0]:.4f}, {p['take_profit'][1]:.4f}]",
        f"  take_profit_sizes: [{p['take_profit_sizes'][0]:.4f}, {1 - p['take_profit_sizes'][0]:.4f}]",
        f"  time_stop: {p['time_stop']}",
        f"  max_positions: {p['max_positions']}",
    ]
    if "min_confidence" in p:
        lines.append(f"  min_confidence: {p['min_confidence']:.4f}")
    return "\n".join(lines) + "\n"
