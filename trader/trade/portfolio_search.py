"""``trader tune search --objective backtest`` with ``risk.plan: portfolio``: the portfolio's parameters by walk-forward backtests.

The out-of-sample decision moments (:class:`~trader.trade.portfolio_backtest.PortfolioData`) are cut
into ``folds`` consecutive blocks. A trial (Optuna TPE, seeded with ``tune.seed + worker``) runs the
plan on every block but the last, each from fresh cash, through the venue's USD-M engine (fees,
funding, fills); its objective is the mean net return over those inner blocks. **The last block is
never seen by the search**: the best parameters are run on it once, beside the default parameters,
the random portfolios with the best parameters (``seeds`` relabellings), the equal-weight long and
BTC long — and the report says plainly whether the tuned plan beats the random portfolios there.

Searched (``risk.portfolio`` and ``risk.stop_loss``): ``k`` 2-10 (at most half the universe), ``band`` k .. k + 20, ``horizon``
12h/24h/48h/72h, ``gross`` 0.5-2, ``maker_wait`` 0-3, ``stop_loss`` 3-30 % (trials whose leverage
would put liquidation within ``liq_multiple`` x the stop are pruned).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trader.config import PortfolioConfig, RiskConfig, Settings
from trader.errors import ConfigError
from trader.trade.portfolio import metrics
from trader.trade.portfolio_backtest import PortfolioData

__all__ = ["portfolio_overlay", "run_portfolio_search"]

_HORIZONS = ["12h", "24h", "48h", "72h"]


def _params(trial: Any, k_max: int = 10) -> dict[str, Any]:
    k = trial.suggest_int("k", 2, k_max)
    return {
        "k": k,
        "band": k + trial.suggest_int("band_over_k", 0, 20),
        "horizon": trial.suggest_categorical("horizon", _HORIZONS),
        "gross": trial.suggest_float("gross", 0.5, 2.0),
        "maker_wait": trial.suggest_int("maker_wait", 0, 3),
        "stop_loss": trial.suggest_float("stop_loss", 0.03, 0.30),
    }


def _settings(settings: Settings, p: dict[str, Any]) -> Settings:
    pf = PortfolioConfig(**{**settings.risk.portfolio.model_dump(), **{k: v for k, v in p.items() if k != "stop_loss"}})
    risk = RiskConfig(**{**settings.risk.model_dump(), "plan": "portfolio", "portfolio": pf, "stop_loss": p["stop_loss"]})
    return settings.model_copy(update={"risk": risk})


def run_portfolio_search(settings: Settings, store_path: Path, *, symbols: list[str] | None, start_ms: int | None, end_ms: int | None,
                         trials: int, folds: int = 4, seeds: int = 5, study_name: str = "portfolio", storage: Any = None,
                         worker: int = 0, cash: float = 10_000.0,
                         progress: Callable[[int, int, float | None], None] | None = None) -> dict[str, Any]:
    """Search the portfolio's parameters; the best, its inner objective and the held-out report.

    Raises:
        ConfigError: fewer than 2 folds or too few moments per fold (and PortfolioData's errors).
    """
    import optuna

    if folds < 2:
        raise ConfigError("a walk-forward search needs at least 2 folds (the last is held out)")
    t0 = time.perf_counter()
    data = PortfolioData(settings, store_path, start_ms, end_ms, symbols)
    n = len(data.moments)
    if n < folds * 12:
        raise ConfigError(f"{n} out-of-sample decisions are too few for {folds} folds (at least 12 per fold)")
    edges = np.linspace(0, n, folds + 1).astype(int)
    k_max = max(2, min(10, len(data.blocks) // 2))  # both sides must fit the universe

    def block(k: int, s: Settings, kind: str = "plan", seed: int = 0) -> dict[str, Any]:
        return metrics(data.run(s, int(edges[k]), int(edges[k + 1]), cash, kind, seed), cash)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.tune.seed + 1000 * worker)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler, load_if_exists=True)
    from trader.ml.storage import check_fingerprint

    check_fingerprint(study, {"symbols": sorted(data.blocks), "from_ms": int(data.moments[0]), "to_ms": int(data.moments[-1]),
                              "klines": data.fingerprint, "plan": "portfolio"})
    study.set_user_attr("objective", "backtest-portfolio")

    def objective(trial: Any) -> float:
        p = _params(trial, k_max)
        s = _settings(settings, p)
        try:
            rets = [block(k, s)["net_return"] for k in range(folds - 1)]
        except ConfigError as exc:  # a leverage too close to liquidation for this stop
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("fold_returns", rets)
        return float(np.mean(rets))

    def callback(study: Any, trial: Any) -> None:
        if progress is not None:
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            progress(trial.number + 1, trials, study.best_value if done else None)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from trader.ml.search import optimize_through_outages

    optimize_through_outages(study, objective, trials, [callback])
    best = study.best_trial
    p = _params(optuna.trial.FixedTrial(best.params), k_max)
    tuned_s = _settings(settings, p)
    held = folds - 1
    tuned = block(held, tuned_s)
    default = block(held, settings)
    randoms = [block(held, tuned_s, "random", s)["net_return"] for s in range(seeds)]
    ew = block(held, tuned_s, "equal_weight_long")
    btc = block(held, tuned_s, "btc_long") if "BTCUSDT" in data.tradable(int(edges[held])) else None
    keep = ("net_return", "sharpe", "max_drawdown", "turnover_per_day", "fees", "funding", "maker_share", "gross_exposure", "net_exposure")
    lo, hi = int(edges[held]), int(edges[held + 1])
    rstd = float(np.std(randoms, ddof=1)) if len(randoms) > 1 else None
    return {
        "objective": "backtest", "plan": "portfolio", "trials": len(study.trials), "worker": worker,
        "best": {"number": best.number, "inner_mean_net_return": round(float(best.value or 0.0), 6),
                 "fold_returns": best.user_attrs.get("fold_returns"), "params": p},
        "held_out": {
            "from_ms": int(data.moments[lo]), "to_ms": int(data.moments[hi - 1]), "decisions": hi - lo,
            "tuned": {k: tuned[k] for k in keep}, "default": {k: default[k] for k in keep},
            "random_portfolio": {"seeds": seeds, "net_returns": randoms, "mean": round(float(np.mean(randoms)), 6),
                                 "std": round(rstd, 6) if rstd is not None else None},
            "equal_weight_long": ew["net_return"], "btc_long": btc["net_return"] if btc else None,
            "tuned_beats_random": tuned["net_return"] > max(randoms),
            "tuned_z_vs_random": round((tuned["net_return"] - float(np.mean(randoms))) / rstd, 2) if rstd else None,
            "tuned_beats_default": tuned["net_return"] > default["net_return"],
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


def portfolio_overlay(result: dict[str, Any]) -> str:
    """A ``risk:`` config overlay of the best parameters, with the held-out figures as comments."""
    p = result["best"]["params"]
    h = result["held_out"]
    r = h["random_portfolio"]
    return "\n".join([
        "# trader tune search --objective backtest (risk.plan: portfolio): the best parameters of the inner folds",
        f"# held out ({h['decisions']} decisions): tuned {h['tuned']['net_return']:+.2%}, default {h['default']['net_return']:+.2%}, "
        f"random portfolios {r['mean']:+.2%} (mean of {r['seeds']})" + ("" if h["tuned_beats_random"] else " -- the tuned plan does NOT beat them"),
        "risk:",
        "  plan: portfolio",
        f"  stop_loss: {p['stop_loss']:.4f}",
        "  portfolio:",
        f"    k: {p['k']}",
        f"    band: {p['band']}",
        f"    horizon: {p['horizon']}",
        f"    gross: {p['gross']:.4f}",
        f"    maker_wait: {p['maker_wait']}",
    ]) + "\n"
