"""What the engine decides on: the candidates at a decision moment — one definition for backtest and paper/live.

- **Backtest** (:func:`candidates_at`): the dataset's score at every moment (:mod:`trader.ml.dataset`,
  features at every kline in one vectorised pass over the whole history) and, with an active model,
  its *out-of-sample* probability.
- **Paper / live** (:class:`StoreDecider`): at the decision moment only — an incremental warm,
  then the scanner's path over the last ``trade.lookback`` closed klines of every series (the
  features of the last closed klines, no labels, nothing over the history).

Both give the same numbers: at ``trade.lookback`` = 1000 klines the scanner's scores equal the
dataset's to ~1e-12 (the indicators' recursions have forgotten their seeds; measured on the
bundled data), and scores are rounded to 1e-6 before any threshold, so a backtest and a paper run
over the same window make the same decisions (``test_a_backtest_and_a_paper_run_over_the_same_window_make_the_same_trades``).
A symbol is a candidate only when its base kline closing at the moment itself is stored (as the
dataset's ``valid``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trader.config import Settings
from trader.trade import risk

if TYPE_CHECKING:
    from trader.ml.dataset import Dataset

__all__ = ["StoreDecider", "candidates_at", "decision_dataset", "round_score", "scores"]


def round_score(x: float) -> float:
    """A score as decisions compare it: rounded to 1e-6 (the scanner and the dataset agree far below that)."""
    return round(float(x), 6)


def decision_dataset(settings: Settings, store_path: Path, symbols: list[str], start_ms: int | None, end_ms: int | None,
                     use_model: bool = True) -> Dataset:
    """The dataset on the decision grid (``trade.decision_interval``, e.g. every 1h close), for a backtest."""
    from trader.ml.jobs import load_dataset

    s = settings.model_copy(update={"ml": settings.ml.model_copy(update={"grid": settings.trade.decision_interval})})
    # the score inputs only: a model's probabilities come from its walk-forward predictions, or are
    # computed on their own window after its training labels (trader.ml.jobs.model_predictions)
    return load_dataset(s, store_path, symbols, list(settings.universe.intervals), start_ms=start_ms, end_ms=end_ms, horizons=["4h"],
                        rank=False, features=False, labels=False)


def scores(settings: Settings, ds: Dataset, store_path: Path, use_model: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(score, direction, probability or None)``, each ``(n_symbols, n_moments)``: what a scan prints
    at each moment — the active model's signal (:mod:`trader.ml.signal`) from its *out-of-sample*
    probability (NaN where it trained), or the hand-made factor score without a model."""
    from trader.ml.evaluate import score_at_moments, signal_scorer
    from trader.ml.registry import Registry

    hand, _, _ = score_at_moments(ds, settings.scan.weights, settings.scan.factors)
    info = Registry(store_path).active() if use_model else None
    if info is None:
        return hand.score, hand.direction, None
    from trader.ml.jobs import model_predictions

    prob, _ = model_predictions(info, ds, settings, store_path)
    scored = signal_scorer(prob, ds.valid, hand, settings.scan.blend)
    return scored.score, scored.direction, prob


def candidates_at(ds: Dataset, score: np.ndarray, direction: np.ndarray, prob: np.ndarray | None, m: int, min_score: float) -> list[risk.Candidate]:
    """The candidates (valid, rounded score >= ``min_score``) at moment index ``m`` of a backtest."""
    t = int(ds.moments_ms[m])
    out = []
    col = np.round(score[:, m], 6)
    ok = ds.valid[:, m] & np.isfinite(col) & (col >= min_score)
    for i in np.flatnonzero(ok):
        p = None if prob is None or not np.isfinite(prob[i, m]) else float(prob[i, m])
        out.append(risk.Candidate(ds.symbols[i], t, float(col[i]), int(direction[i, m]), p, float(ds.close[i, m])))
    return out


class StoreDecider:
    """Paper / live decisions from the store: warm it (incremental) at the moment, then score the last
    closed klines with the scanner (``trade.lookback`` klines per series) and the active model.

    Args:
        settings: the configuration (``scan``, ``trade.lookback``, ``universe.intervals``).
        store_path: the kline store.
        symbols: the universe the session trades.
        rest: an entered :class:`~trader.exchange.rest.BinanceClient` to warm with (None: no warm).
        use_model: score with the store's active model when there is one.
    """

    def __init__(self, settings: Settings, store_path: Path, symbols: list[str], rest: Any = None, use_model: bool = True) -> None:
        from trader.ml.predict import ActiveModel

        self.settings = settings
        self.store_path = store_path
        self.symbols = symbols
        self.rest = rest
        self.model = ActiveModel.from_store(store_path) if use_model else None
        self.cfg = settings.scan.model_copy(update={"lookback": settings.trade.lookback,
                                                    "min_history": min(settings.scan.min_history, settings.trade.lookback)})

    @property
    def model_active(self) -> bool:
        return self.model is not None

    async def warm(self) -> None:
        """Fetch what the store lacks up to now (the klines that closed since the last decision)."""
        if self.rest is None:
            return
        from trader.store.klines import KlineStore
        from trader.warm import warm

        with KlineStore(self.store_path) as store:
            await warm(self.rest, store, self.symbols, list(self.settings.universe.intervals), depth=self.settings.trade.lookback + 50)

    def candidates(self, t_ms: int, min_score: float) -> list[risk.Candidate]:
        """The candidates at decision time ``t_ms`` (a base close + 1 ms): rounded score >= ``min_score``."""
        from trader.scan import Scanner
        from trader.store.klines import KlineStore

        with KlineStore(self.store_path) as store, Scanner(store, self.cfg, self.settings.universe.intervals, model=self.model) as scanner:
            res = scanner.scan(self.symbols, now_ms=t_ms)
        out = []
        for sig in res.signals:
            score = round_score(sig.score)
            if sig.close_time_ms + 1 != t_ms or not np.isfinite(score) or score < min_score:
                continue
            p = sig.ml_probability
            out.append(risk.Candidate(sig.symbol, t_ms, score, 1 if sig.direction == "long" else -1,
                                      None if p is None or not np.isfinite(p) else float(p), float(sig.last_close)))
        return out
