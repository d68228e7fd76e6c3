"""``trader trade --backtest --plan portfolio``: the portfolio plan and its baselines over the store's history.

Everything runs through the replay venue's USD-M engine in process (:func:`trader.trade.portfolio.simulate`).
Only moments where the model has an **out-of-sample** probability are traded (its walk-forward test
folds inside its training window, the model itself after it — :func:`trader.trade.signals.scores`).
The report has the whole out-of-sample window and its **last block** (``holdout`` of the moments,
default the last 25 %): the defaults were fixed before looking at it, and ``tune search --objective
backtest`` never searches it. The uncertainty beside the plan: the random portfolios' spread over
seeds, and the t-statistic of the plan's daily return minus the random portfolios' mean daily return.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from trader.config import Settings
from trader.errors import ConfigError
from trader.models import duration_ms
from trader.trade.portfolio import PortfolioRun, SleeveBook, choose_leverage, metrics, simulate

__all__ = ["PortfolioData", "portfolio_backtest"]


def _window(run: PortfolioRun, start_ms: int) -> PortfolioRun:
    """``run`` from ``start_ms`` on, as if it had started there (rebased equity)."""
    i = int(np.searchsorted(np.asarray(run.times_ms), start_ms))
    out = PortfolioRun(run.times_ms[i:], run.equity[i:], gross=run.gross[i:], net=run.net[i:])
    return out


def _daily(run: PortfolioRun) -> np.ndarray:
    t = np.asarray(run.times_ms, dtype=np.int64)
    eq = np.asarray(run.equity, dtype=float)
    if t.size < 2:
        return np.zeros(0)
    last = np.flatnonzero(np.diff(t // 86_400_000) != 0)  # the last decision of each UTC day
    idx = np.concatenate([[0], last, [t.size - 1]])
    e = eq[idx]
    return np.asarray(np.diff(e) / e[:-1], dtype=float)


def _block(runs: dict[str, Any], start_ms: int, cash: float) -> dict[str, Any]:
    out = {}
    for name, r in runs.items():
        if isinstance(r, list):
            sub = [_window(x, start_ms) for x in r]
            rets = [metrics(x, x.equity[0])["net_return"] for x in sub if x.equity]
            out[name] = {"net_return_mean": round(float(np.mean(rets)), 6), "net_return_std": round(float(np.std(rets, ddof=1)), 6)
                         if len(rets) > 1 else None, "net_return_min": min(rets), "net_return_max": max(rets), "seeds": len(rets)}
        else:
            w = _window(r, start_ms)
            out[name] = {k: v for k, v in metrics(w, w.equity[0]).items()
                         if k in ("net_return", "cagr", "volatility", "sharpe", "max_drawdown", "years")}
    return out


def _excess_t(plan: PortfolioRun, randoms: list[PortfolioRun], start_ms: int = 0) -> dict[str, Any]:
    """Mean daily return of the plan minus the random portfolios' mean, its standard error and t."""
    p = _daily(_window(plan, start_ms))
    rs = [_daily(_window(r, start_ms)) for r in randoms]
    n = min([p.size, *(r.size for r in rs)]) if rs else 0
    if n < 3:
        return {"days": n}
    diff = p[:n] - np.mean([r[:n] for r in rs], axis=0)
    se = float(np.std(diff, ddof=1) / math.sqrt(n))
    return {"days": n, "mean_daily_excess": round(float(np.mean(diff)), 6), "se": round(se, 6),
            "t": round(float(np.mean(diff)) / se, 2) if se > 0 else None}


class PortfolioData:
    """Everything a portfolio backtest reads, loaded once (the search runs many plans on it).

    Args: as :func:`portfolio_backtest`. Attributes: ``moments`` (out-of-sample decision moments, epoch
    ms), ``blocks`` (symbol -> base kline block), ``rules``, ``tiers``; :meth:`run` simulates one plan.

    Raises:
        ConfigError: no model, too few USD-M symbols, no out-of-sample moment.
    """

    def __init__(self, settings: Settings, store_path: Path, start_ms: int | None, end_ms: int | None, symbols: list[str] | None) -> None:
        from trader.store.klines import KlineStore
        from trader.trade.broker import BlockSeries
        from trader.trade.signals import decision_dataset, scores
        from trader.usdm import ContractRules, bundled_brackets, bundled_exchange_info

        t0 = time.perf_counter()
        ds = decision_dataset(settings, store_path, symbols or [], start_ms, end_ms, use_model=True)
        _, _, prob = scores(settings, ds, store_path, use_model=True)
        if prob is None:
            raise ConfigError("the portfolio plan ranks symbols by the model's out-of-sample probability: no active or shipped model "
                              "(trader tune train, or the shipped model in the package)")
        info = {s["symbol"]: s for s in bundled_exchange_info()["symbols"]}
        usable = [i for i, s in enumerate(ds.symbols) if s in info]
        if len(usable) < 4:
            raise ConfigError(f"only {len(usable)} symbols of the store are USD-M contracts here; the plan needs at least 4")
        self.oos = np.flatnonzero(np.isfinite(prob[usable]).any(axis=0))
        if self.oos.size < 2:
            raise ConfigError("no moment in the window has an out-of-sample model probability (the model trained on all of it)")
        self.moments = ds.moments_ms[self.oos]
        self.fingerprint = ds.fingerprint
        base = settings.universe.intervals[0]
        with KlineStore(store_path) as store:
            self.blocks = {ds.symbols[i]: store.load(ds.symbols[i], base) for i in usable}
        self.series = {s: BlockSeries(s, base, b) for s, b in self.blocks.items()}
        self.rules = {s: ContractRules.from_symbol_info(info[s]) for s in self.blocks}
        self.tiers = {s: t for s, t in bundled_brackets().items() if s in self.rules}
        self.col = {s: i for i, s in enumerate(ds.symbols)}
        self.valid = ds.valid
        self.prob = prob
        close = np.where(np.isfinite(ds.close), ds.close, np.nan)
        self.logret = np.diff(np.log(close), axis=1, prepend=np.nan)
        # the model's out-of-sample predictions exist on its own grid (the shipped model's: every 4 h): the
        # decisions are those moments, and the sleeves follow their spacing so each holds for the horizon
        self.decision_ms = max(duration_ms(settings.trade.decision_interval), int(np.median(np.diff(self.moments))))
        self._tradable: dict[int, list[str]] = {}
        self.seconds = time.perf_counter() - t0

    def tradable(self, m: int) -> list[str]:
        hit = self._tradable.get(m)
        if hit is None:
            j = self.oos[m]
            hit = self._tradable[m] = [s for s in self.blocks if self.valid[self.col[s], j]]
        return hit

    def ranked(self, m: int) -> list[str]:
        j = self.oos[m]
        cand = [(float(self.prob[self.col[s], j]), s) for s in self.blocks
                if self.valid[self.col[s], j] and np.isfinite(self.prob[self.col[s], j])]
        return [s for _, s in sorted(cand, key=lambda x: (-x[0], x[1]))]

    def vol(self, m: int) -> dict[str, float]:
        j = self.oos[m]
        lo = max(0, j - 168)
        return {s: float(np.nanstd(self.logret[self.col[s], lo:j + 1])) for s in self.blocks}

    def run(self, settings: Settings, lo: int, hi: int, cash: float, kind: str = "plan", seed: int = 0) -> PortfolioRun:
        """Simulate over the moments ``[lo, hi)``: ``kind`` plan, random (the plan on a random
        relabelling of the symbols, ``seed``), equal_weight_long or btc_long."""
        from trader.replay.futures import FuturesConfig, FuturesEngine
        from trader.replay.pathmarket import SeriesMarket

        cfg = settings.risk.portfolio
        long_only = cfg.market == "spot"
        leverage = 1 if long_only else choose_leverage(cfg, settings.risk, self.tiers)
        fees = settings.costs.spot if long_only else settings.costs.usdm
        fcfg = FuturesConfig(maker_fee=Decimal(repr(fees.maker_fee)), taker_fee=Decimal(repr(fees.taker_fee)),
                             funding_rate=Decimal(0) if long_only else Decimal(repr(settings.replay.futures.funding_rate)),
                             impact_bps=settings.costs.impact_bps)
        market = SeriesMarket(None, settings.costs.spread_bps, series_for=self.series.__getitem__)
        engine = FuturesEngine(market, self.rules, self.tiers, fcfg, spread_bps=settings.costs.spread_bps)
        moments = self.moments[lo:hi]
        engine.advance(int(moments[0]))
        n_sleeves = max(1, duration_ms(cfg.horizon) // self.decision_ms)

        def tradable(m: int) -> list[str]:
            return self.tradable(lo + m)

        def ranked(m: int) -> list[str]:
            return self.ranked(lo + m)

        if kind == "random":
            names = sorted(self.blocks)
            perm = dict(zip(names, (str(x) for x in np.random.default_rng(seed).permutation(names)), strict=True))

            def ranked(m: int) -> list[str]:
                can = set(self.tradable(lo + m))
                return [perm[s] for s in self.ranked(lo + m) if perm[s] in can]

        fixed = None
        if kind == "equal_weight_long":
            first = tradable(0)
            fixed = {s: 1.0 / len(first) for s in first}
        elif kind == "btc_long":
            fixed = {"BTCUSDT": 1.0}
        vol = (lambda m: self.vol(lo + m)) if cfg.weighting == "inverse_vol" else None
        book = SleeveBook(cfg, 1 if fixed else n_sleeves, long_only or fixed is not None)
        return simulate(engine, self.rules, moments, tradable, ranked, book, settings.risk, cash, decision_ms=self.decision_ms,
                        leverage=leverage, vol=vol, fixed=fixed)


def portfolio_backtest(settings: Settings, store_path: Path, start_ms: int | None, end_ms: int | None, *,
                       symbols: list[str] | None = None, cash: float = 10_000.0, seeds: int = 5, holdout: float = 0.25,
                       plot: Path | None = None, progress: Any = None) -> dict[str, Any]:
    """Run the portfolio plan and its baselines (module docstring); the ``--json`` document.

    Raises:
        ConfigError: no model (the plan ranks by its out-of-sample probability), no out-of-sample
            moment in the window, a non-finite cash, or a leverage that puts liquidation too close.
    """
    if not np.isfinite(cash) or cash <= 0:
        raise ConfigError(f"--cash must be a positive finite amount, got {cash}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (the random portfolios are the baseline), got {seeds}")
    cfg = settings.risk.portfolio
    t0 = time.perf_counter()
    data = PortfolioData(settings, store_path, start_ms, end_ms, symbols)
    if len(data.blocks) < 2 * cfg.k:
        raise ConfigError(f"{len(data.blocks)} USD-M symbols are too few for k = {cfg.k} per side")
    n = len(data.moments)
    leverage = 1 if cfg.market == "spot" else choose_leverage(cfg, settings.risk, data.tiers)
    n_sleeves = max(1, duration_ms(cfg.horizon) // data.decision_ms)
    t1 = time.perf_counter()
    plan = data.run(settings, 0, n, cash)
    t_plan = time.perf_counter() - t1
    if progress:
        progress(f"portfolio plan: {metrics(plan, cash)['net_return']:+.2%} in {t_plan:.1f} s")
    randoms = []
    for seed in range(seeds):
        randoms.append(data.run(settings, 0, n, cash, "random", seed))
        if progress:
            progress(f"random portfolio {seed + 1}/{seeds}: {metrics(randoms[-1], cash)['net_return']:+.2%}")
    ew = data.run(settings, 0, n, cash, "equal_weight_long")
    btc = data.run(settings, 0, n, cash, "btc_long") if "BTCUSDT" in data.tradable(0) else None
    moments = data.moments
    random_ret = [metrics(r, cash)["net_return"] for r in randoms]
    split = int(moments[int(len(moments) * (1 - holdout))]) if 0 < holdout < 1 else int(moments[0])
    runs: dict[str, Any] = {"plan": plan, "random": randoms, "equal_weight_long": ew}
    if btc is not None:
        runs["btc_long"] = btc
    doc: dict[str, Any] = {
        "plan": "portfolio",
        "market": cfg.market,
        "params": cfg.model_dump(mode="json") | {"sleeves": n_sleeves, "decision_every_ms": data.decision_ms, "leverage": leverage,
                                                 "stop_loss": settings.risk.stop_loss},
        "window": {"from_ms": int(moments[0]), "to_ms": int(moments[-1]), "decisions": n, "symbols": len(data.blocks),
                   "out_of_sample_only": True},
        "result": metrics(plan, cash),
        "baselines": {
            "random_portfolio": {"kind": "the plan's decisions on a random relabelling of the symbols (same sleeves, turnover, exposure)",
                                 "seeds": seeds, "net_return_mean": round(float(np.mean(random_ret)), 6),
                                 "net_return_std": round(float(np.std(random_ret, ddof=1)), 6) if seeds > 1 else None,
                                 "net_return_min": min(random_ret), "net_return_max": max(random_ret),
                                 "turnover_per_day_mean": round(float(np.mean([metrics(r, cash)["turnover_per_day"] for r in randoms])), 4),
                                 "gross_exposure_mean": round(float(np.mean([metrics(r, cash)["gross_exposure"] for r in randoms])), 4)},
            "equal_weight_long": {k: v for k, v in metrics(ew, cash).items() if k in ("net_return", "cagr", "volatility", "sharpe", "max_drawdown")},
            **({"btc_long": {k: v for k, v in metrics(btc, cash).items() if k in ("net_return", "cagr", "volatility", "sharpe", "max_drawdown")}}
               if btc is not None else {}),
        },
        "excess_vs_random": _excess_t(plan, randoms),
        "held_out_block": {"from_ms": split, "share": holdout, **_block(runs, split, cash), "excess_vs_random": _excess_t(plan, randoms, split)},
        "seconds": {"plan": round(t_plan, 2), "total": round(time.perf_counter() - t0, 2)},
    }
    doc["beats_random"] = doc["result"]["net_return"] > doc["baselines"]["random_portfolio"]["net_return_max"]
    if plot is not None:
        _plot(plot, runs, split)
        doc["plot"] = str(plot)
    return doc


def _plot(path: Path, runs: dict[str, Any], split: int) -> None:
    """Equity curves (plan, each random portfolio, equal weight, BTC) with the held-out block shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install 'trader[plot]'") from exc
    import matplotlib.dates as mdates

    def days(ms: list[int] | int) -> Any:
        return mdates.date2num(np.asarray(ms, dtype="datetime64[ms]"))  # type: ignore[no-untyped-call]

    fig, ax = plt.subplots(figsize=(11, 5.5))
    for name, r in runs.items():
        group = r if isinstance(r, list) else [r]
        for k, x in enumerate(group):
            t = days(x.times_ms)
            style = {"plan": ("C0", 2.0), "random": ("0.6", 0.8), "equal_weight_long": ("C2", 1.2), "btc_long": ("C1", 1.2)}[name]
            ax.plot(t, x.equity, color=style[0], lw=style[1], label=name if k == 0 else None)
    ax.axvspan(float(days(split)), float(days(runs["plan"].times_ms[-1])), color="0.9", zorder=0, label="held-out block")
    ax.xaxis_date()
    ax.set_ylabel("equity, USDT")
    ax.set_title("portfolio plan vs random portfolios (same turnover and exposure), equal weight, BTC — out of sample, net of fees and funding")
    ax.legend(loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
