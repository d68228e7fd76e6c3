"""Drivers of the engine: a backtest over the store, and one paper / live decision.

Both compute candidates with the same code (:func:`candidates_at`: the dataset's score at the
moment — the scan's score, one implementation — and, with an active model, its *out-of-sample*
probability) and call the same :meth:`~trader.trade.engine.TradeEngine.step`; only the broker
differs. The backtest also runs the **random-entry baseline**: at each moment where the strategy
had ``k`` signals, ``k`` random valid symbols with random directions (shorts are skipped on spot,
as the strategy's are), with the same sizing, exits, fees and fills, over several seeds.
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

from trader.config import Settings
from trader.errors import ConfigError
from trader.ml.dataset import Dataset
from trader.trade import risk
from trader.trade.broker import SimBroker
from trader.trade.engine import TradeEngine
from trader.trade.ledger import Ledger

__all__ = ["backtest", "candidates_at", "decision_dataset", "max_drawdown"]


def decision_dataset(settings: Settings, store_path: Path, symbols: list[str], start_ms: int | None, end_ms: int | None) -> Dataset:
    """The dataset on the decision grid (``trade.decision_interval``, e.g. every 1h close)."""
    from trader.ml.jobs import load_dataset
    from trader.ml.registry import Registry

    s = settings.model_copy(update={"ml": settings.ml.model_copy(update={"grid": settings.trade.decision_interval})})
    model = Registry(store_path).active() is not None  # ranked features only feed a model
    return load_dataset(s, store_path, symbols, list(settings.universe.intervals), start_ms=start_ms, end_ms=end_ms, horizons=["4h"],
                        rank=model)


def scores(settings: Settings, ds: Dataset, store_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(score, direction, probability or None)``, each ``(n, M)``; the probability is the active
    model's out-of-sample one (NaN where it trained)."""
    from trader.ml.evaluate import score_at_moments

    prob = None
    from trader.ml.registry import Registry

    info = Registry(store_path).active()
    if info is not None:
        from trader.ml.jobs import model_predictions

        prob, _ = model_predictions(info, ds, settings, store_path)
    scored, _, _ = score_at_moments(ds, settings.scan.weights, settings.scan.factors, prob)
    return scored.score, scored.direction, prob


def candidates_at(ds: Dataset, score: np.ndarray, direction: np.ndarray, prob: np.ndarray | None, m: int, min_score: float) -> list[risk.Candidate]:
    """The candidates (score >= ``min_score``, valid) at moment index ``m``."""
    t = int(ds.moments_ms[m])
    out = []
    ok = ds.valid[:, m] & np.isfinite(score[:, m]) & (score[:, m] >= min_score)
    for i in np.flatnonzero(ok):
        p = None if prob is None or not np.isfinite(prob[i, m]) else float(prob[i, m])
        out.append(risk.Candidate(ds.symbols[i], t, float(score[i, m]), int(direction[i, m]), p, float(ds.close[i, m])))
    return out


def _random_candidates(ds: Dataset, counts: list[int], rng: np.random.Generator, m: int) -> list[risk.Candidate]:
    k = counts[m]
    valid = np.flatnonzero(ds.valid[:, m])
    if k == 0 or valid.size == 0:
        return []
    pick = rng.choice(valid, size=min(k, valid.size), replace=False)
    t = int(ds.moments_ms[m])
    return [risk.Candidate(ds.symbols[i], t, 100.0, int(rng.choice([-1, 1])), 1.0, float(ds.close[i, m])) for i in pick]


def _random_picker(ds: Dataset, counts: list[int], rng: np.random.Generator) -> Callable[[int], list[risk.Candidate]]:
    return lambda m: _random_candidates(ds, counts, rng, m)


def max_drawdown(curve: list[Decimal]) -> float:
    """Largest peak-to-trough fall of an equity curve, fraction (0.1 = -10 %)."""
    peak, worst = 0.0, 0.0
    for e in map(float, curve):
        peak = max(peak, e)
        if peak > 0:
            worst = max(worst, (peak - e) / peak)
    return worst


async def _run(settings: Settings, ds: Dataset, blocks: dict[str, np.ndarray], base: str, ledger: Ledger,
               pick: Callable[[int], list[risk.Candidate]], min_score: float, model_active: bool, cash: Decimal) -> dict[str, Any]:
    from trader.trade.virtual import VirtualBook

    broker = SimBroker(blocks, base, {settings.universe.quote_asset: cash}, settings.replay.spread_bps, settings.replay.matching)
    virtual = VirtualBook(ledger, settings.risk, settings.replay.matching.taker_fee, base)
    engine = TradeEngine(broker, ledger, settings.risk, min_score, strategy=settings.trade.strategy,
                         quote=settings.universe.quote_asset, model_active=model_active, virtual=virtual)
    exposed = 0
    latencies: list[float] = []
    for m in range(ds.n_moments):
        t = int(ds.moments_ms[m])
        broker.set_time(t)
        report = await engine.step(t, pick(m))
        virtual.update(t, blocks.__getitem__)
        latencies += report.signal_to_order_s
        exposed += bool(ledger.positions("OPEN"))
    curve = [e for _, e in ledger.equity_curve()]
    end = curve[-1] if curve else cash
    fees = broker.fees_paid()
    quote_fees = float(fees.pop(settings.universe.quote_asset, Decimal(0)))
    base_fees = sum(float(p.fees) for p in ledger.positions()) if fees else 0.0
    out = engine.summary()
    out.update(
        net_return=round(float(end / cash - 1), 6),
        max_drawdown=round(max_drawdown(curve), 6),
        exposure=round(exposed / max(ds.n_moments, 1), 4),
        fees_paid_quote=round(quote_fees + base_fees, 4),
        end_equity=round(float(end), 4),
    )
    samples = ledger.virtual_samples()
    if samples:
        rets = [s[4] for s in samples]
        out["virtual"] = {"closed": len(samples), "mean_net_return": round(float(np.mean(rets)), 6),
                          "reasons": dict(sorted(__import__("collections").Counter(s[5] for s in samples).items()))}
    return out


def backtest(
    settings: Settings,
    store_path: Path,
    start_ms: int | None,
    end_ms: int | None,
    *,
    symbols: list[str] | None = None,
    cash: float = 10_000.0,
    baseline_seeds: int = 3,
    ledger_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Backtest the trade plan over the store's klines in ``[start_ms, end_ms)``.

    Returns:
        The summary (trades, net_return fraction, max_drawdown fraction, exposure = share of decision
        times with an open position, exit reasons, fees paid in quote, timing) and ``baseline``: the
        random-entry runs' net returns (mean, min, max over ``baseline_seeds`` seeds) beside it.

    Raises:
        ConfigError: an empty window; StoreError: no store.
    """
    t0 = time.perf_counter()
    from trader.store.klines import KlineStore

    ds = decision_dataset(settings, store_path, symbols or [], start_ms, end_ms)
    if ds.n_moments == 0:
        raise ConfigError("no decision moment in the window (warm the store, or widen --from/--to)")
    t_data = time.perf_counter() - t0
    base = settings.universe.intervals[0]
    with KlineStore(store_path) as store:
        blocks = {s: store.load(s, base) for s in ds.symbols}
    score, direction, prob = scores(settings, ds, store_path)
    min_score = settings.risk.min_score if settings.risk.min_score is not None else settings.scan.min_score
    model_active = prob is not None
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(ledger_path or Path(tmp) / "backtest.sqlite", durable=ledger_path is not None)
        out = asyncio.run(_run(settings, ds, blocks, base, ledger,
                               lambda m: candidates_at(ds, score, direction, prob, m, min_score), min_score, model_active, Decimal(repr(cash))))
        ledger.close()
        t_run = time.perf_counter() - t1
        counts = [int((ds.valid[:, m] & np.isfinite(score[:, m]) & (score[:, m] >= min_score)).sum()) for m in range(ds.n_moments)]
        rets = []
        for seed in range(baseline_seeds):
            rng = np.random.default_rng(seed)
            lg = Ledger(Path(tmp) / f"random-{seed}.sqlite", durable=False)
            r = asyncio.run(_run(settings, ds, blocks, base, lg, _random_picker(ds, counts, rng), 0.0, False, Decimal(repr(cash))))
            lg.close()
            rets.append(r["net_return"])
            if progress:
                progress(f"random baseline {seed + 1}/{baseline_seeds}: {r['net_return']:+.2%}")
    out.update(
        window={"from_ms": int(ds.moments_ms[0]), "to_ms": int(ds.moments_ms[-1]), "decisions": ds.n_moments, "symbols": len(ds.symbols)},
        min_score=min_score,
        model_active=model_active,
        baseline={"kind": "random symbols and directions at the strategy's signal moments, same sizing, exits, fees",
                  "seeds": baseline_seeds, "net_return_mean": round(float(np.mean(rets)), 6) if rets else None,
                  "net_return_min": min(rets) if rets else None, "net_return_max": max(rets) if rets else None},
        beats_baseline=bool(rets) and out["net_return"] > max(rets),
        seconds={"data": round(t_data, 2), "backtest": round(t_run, 2), "total": round(time.perf_counter() - t0, 2)},
    )
    return out


async def reconcile(engine: TradeEngine, policy: str) -> dict[str, Any]:
    """Before trading: settle the journal, book fills missed while down, and deal with orphans.

    An orphan is an open order on the venue that the ledger does not know (another tool, or a crash
    between the venue's acceptance and the ledger row): ``cancel`` (default) cancels it, ``adopt``
    records it in the ledger without a position. Returns what was found.
    """
    from trader.trade.broker import VenueBroker

    found: dict[str, Any] = {"resolved": {}, "orphans": [], "action": policy}
    broker = engine.broker
    if isinstance(broker, VenueBroker):
        resolved = await broker.client.resolve_journal()
        found["resolved"] = {cid: (o.status if o is not None else "NOT_PLACED") for cid, o in resolved.items()}
    t = await broker.now_ms()
    found["fills_booked"] = await engine.sync(t)
    known = {row["cid"] for row in engine.ledger.orders()}
    if isinstance(broker, VenueBroker):  # sent by us (the journal) but not yet in the ledger: the next step books it
        known |= {e.client_order_id for e in broker.client.journal.all()}
    for o in await broker.open_orders():
        if o.client_order_id in known:
            continue
        found["orphans"].append({"symbol": o.symbol, "clientOrderId": o.client_order_id, "side": o.side, "type": o.type})
        if policy == "cancel":
            await broker.cancel(o.symbol, o.client_order_id)
        else:
            engine.ledger.record_order(o.client_order_id, None, "adopted", o.symbol, o.side, o.type, o.status, o.order_id,
                                       o.executed_qty, o.cum_quote, t)
    found["open_positions"] = [{"symbol": p.symbol, "qty": str(p.left_qty)} for p in engine.ledger.positions("OPEN")]
    balances = await broker.balances()
    mismatch = []
    for p in engine.ledger.positions("OPEN"):
        base = p.symbol.removesuffix(engine.quote)
        have = balances[base].total if base in balances else Decimal(0)
        if have < p.left_qty:
            mismatch.append({"symbol": p.symbol, "ledger": str(p.left_qty), "venue": str(have)})
    found["balance_mismatch"] = mismatch
    return found


async def paper_step(settings: Settings, store_path: Path, rest: Any, engine: TradeEngine, t_ms: int, symbols: list[str],
                     after_warm: Callable[[], None] | None = None) -> Any:
    """One live decision at ``t_ms``: warm the store (incremental), score the moment, step the engine
    (``after_warm``: a local broker reloads the klines there)."""
    from trader.store.klines import KlineStore
    from trader.warm import warm

    with KlineStore(store_path) as store:
        await warm(rest, store, symbols, list(settings.universe.intervals), depth=settings.scan.lookback + 50)
    if after_warm is not None:
        after_warm()
    ds = decision_dataset(settings, store_path, symbols, t_ms, t_ms + 1)
    min_score = settings.risk.min_score if settings.risk.min_score is not None else settings.scan.min_score
    cands: list[risk.Candidate] = []
    if ds.n_moments:
        score, direction, prob = scores(settings, ds, store_path)
        cands = candidates_at(ds, score, direction, prob, 0, min_score)
    return await engine.step(t_ms, cands)
