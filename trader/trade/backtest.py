"""``trader trade --backtest``: the engine over the store's history, with its accounting checked at every step.

The backtest runs :class:`~trader.trade.engine.TradeEngine` — the paper / live engine — against
:class:`~trader.trade.broker.SimBroker` (the replay venue's matching engine in process) at every
``trade.decision_interval`` close. Candidates come from :func:`~trader.trade.signals.candidates_at`.

**Accounting is checked, not assumed** (:class:`Accounting`): after every step, the ledger's cash
(starting quote + sells - buys - quote commissions, from its booked fills) plus its positions
(open and dust) at the venue's marks must equal the simulated account's quote plus holdings at the
same marks (``equity_error_max``); every position's proceeds must equal its sells' quote less their
commission (``proceeds_error_max``); every venue trade must be booked (``unbooked_fills``).
Positions whose market exit filled only partly are counted (``positions_with_remainder``) with how
they ended.

The **random-entry baseline**: at each moment where the strategy had ``k`` signals, ``k`` random
valid symbols with random directions (shorts are skipped on spot, as the strategy's are), with the
same sizing, exits, fees and fills, over several seeds.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trader.config import Settings
from trader.errors import ConfigError
from trader.models import OrderStatus, Side
from trader.trade import risk
from trader.trade.broker import SimBroker
from trader.trade.engine import TradeEngine
from trader.trade.ledger import Ledger
from trader.trade.signals import candidates_at, decision_dataset, scores
from trader.trade.types import Action, PositionStatus, Role

if TYPE_CHECKING:
    from trader.ml.dataset import Dataset

__all__ = ["Accounting", "BacktestResult", "PlanResult", "backtest", "max_drawdown", "run_plan"]

D0 = Decimal(0)


@dataclass
class PlanResult:
    """One run of the plan over a window (:func:`run_plan`).

    Attributes:
        trades, wins: closed positions and those with a positive P&L; pnl_quote: realised P&L, USDT.
        exit_reasons: closed positions per exit reason; open_positions: still open at the end.
        net_return: end equity / starting cash - 1 (fraction, the account valued at the venue's prices).
        max_drawdown: largest peak-to-trough fall of the decision-time equity (fraction).
        exposure: share of decision times with an open position; fees_paid_quote: commission, USDT.
        end_equity: USDT; accounting: :meth:`Accounting.report`; virtual: the virtual positions' outcomes.
    """

    trades: int
    wins: int
    pnl_quote: float
    exit_reasons: dict[str, int]
    open_positions: int
    net_return: float
    max_drawdown: float
    exposure: float
    fees_paid_quote: float
    end_equity: float
    accounting: dict[str, Any]
    virtual: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["virtual"] is None:
            out.pop("virtual")
        return out


@dataclass
class BacktestResult(PlanResult):
    """:func:`backtest`'s result: the plan's run, and beside it the random-entry baseline.

    Attributes:
        window: ``{from_ms, to_ms, decisions, symbols}``; min_score; model_active.
        baseline: the random-entry runs' net returns ``{kind, seeds, net_return_mean, net_return_min, net_return_max}``.
        beats_baseline: the plan's net return beats every random run; seconds: ``{data, backtest, total}``.
    """

    window: dict[str, int] = field(default_factory=dict)
    min_score: float = 0.0
    model_active: bool = False
    baseline: dict[str, Any] = field(default_factory=dict)
    beats_baseline: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def _random_candidates(ds: Dataset, counts: list[int], rng: np.random.Generator, m: int) -> list[risk.Candidate]:
    k = counts[m]
    valid = np.flatnonzero(ds.valid[:, m])
    if k == 0 or valid.size == 0:
        return []
    pick = rng.choice(valid, size=min(k, valid.size), replace=False)
    t = int(ds.moments_ms[m])
    return [risk.Candidate(ds.symbols[i], t, 100.0, int(rng.choice([-1, 1])), 1.0, float(ds.close[i, m])) for i in pick]


def random_picker(ds: Dataset, counts: list[int], rng: np.random.Generator) -> Callable[[int], list[risk.Candidate]]:
    """The random-entry baseline's candidates at moment index ``m`` (``counts[m]`` random valid symbols)."""
    return lambda m: _random_candidates(ds, counts, rng, m)


def max_drawdown(curve: list[Decimal]) -> float:
    """Largest peak-to-trough fall of an equity curve, fraction (0.1 = -10 %)."""
    peak, worst = 0.0, 0.0
    for e in map(float, curve):
        peak = max(peak, e)
        if peak > 0:
            worst = max(worst, (peak - e) / peak)
    return worst


class Accounting:
    """The backtest's books checked against the simulated venue after every step (see the module docstring).

    Args:
        ledger: the backtest's ledger; broker: its simulated venue; quote: the quote asset;
        cash: the starting quote balance (the account holds nothing else at start).
    """

    def __init__(self, ledger: Ledger, broker: SimBroker, quote: str, cash: Decimal) -> None:
        self.ledger = ledger
        self.broker = broker
        self.quote = quote
        self.cash = cash
        self.rowid = 0
        self.booked = 0
        self.hold: dict[str, Decimal] = {}  # symbol -> base held, from the booked fills
        self.sells: dict[int, Decimal] = {}  # position id -> quote received net of a quote commission
        self.diff: dict[str, Decimal] = {}  # symbol -> ledger positions - venue holding (should be empty)
        self.equity_error_max = D0
        self.proceeds_error_max = D0
        self.position_errors = 0
        self.checks = 0

    def check(self) -> None:
        """Compare after a step (raises nothing: the errors are reported)."""
        touched: set[str] = set()
        pids: set[int] = set()
        for rowid, symbol, pid, side, qty, quote, commission, asset in self.ledger.fills_after(self.rowid):
            self.rowid = rowid
            self.booked += 1
            base = symbol.removesuffix(self.quote)
            q_fee = commission if asset == self.quote else D0
            b_fee = commission if asset == base else D0
            if side == Side.BUY:
                self.cash -= quote + q_fee
                self.hold[symbol] = self.hold.get(symbol, D0) + qty - b_fee
            else:
                self.cash += quote - q_fee
                self.hold[symbol] = self.hold.get(symbol, D0) - qty - b_fee
                if pid is not None:
                    self.sells[pid] = self.sells.get(pid, D0) + quote - q_fee
                    pids.add(pid)
            touched.add(symbol)
        bal = self.broker.account.balances
        for symbol in touched:
            ps = self.ledger.positions(symbol=symbol)
            believed = sum((p.left_qty for p in ps), D0)
            venue = sum(bal.get(symbol.removesuffix(self.quote), [D0, D0]))
            if believed != venue:
                self.diff[symbol] = believed - venue
                self.position_errors += 1
            else:
                self.diff.pop(symbol, None)
        venue_quote = sum(bal.get(self.quote, [D0, D0]))
        err = self.cash - venue_quote
        for symbol, d in self.diff.items():
            err += d * self.broker.mid(symbol)
        self.equity_error_max = max(self.equity_error_max, abs(err))
        for pid in pids:
            p = self.ledger.position(pid)
            if p is not None:
                self.proceeds_error_max = max(self.proceeds_error_max, abs(p.proceeds - self.sells[pid]))
        self.checks += 1

    def report(self) -> dict[str, Any]:
        """``{equity_error_max, proceeds_error_max, unbooked_fills, position_mismatches, positions_with_remainder, ...}``."""
        # a market exit that filled only partly: EXPIRED with something executed
        partly = {r.position_id for r in self.ledger.orders() if r.role == Role.EXIT and r.status == OrderStatus.EXPIRED and r.executed > 0}
        remainder = [p for p in (self.ledger.position(pid) for pid in partly if pid is not None) if p is not None]
        return {
            "equity_error_max": float(self.equity_error_max),
            "proceeds_error_max": float(self.proceeds_error_max),
            "unbooked_fills": len(self.broker.account.trades) - self.booked,
            "position_mismatches": self.position_errors,
            "positions_with_remainder": len(remainder),
            "remainders_sold": sum(1 for p in remainder if p.status == PositionStatus.CLOSED),
            "remainders_open": sum(1 for p in remainder if p.status == PositionStatus.OPEN),
            "partial_exits": len(self.ledger.decisions(Action.PARTIAL_EXIT)),
            "checks": self.checks,
        }


async def run_plan(settings: Settings, ds: Dataset, blocks: dict[str, np.ndarray], base: str, ledger: Ledger,
                   pick: Callable[[int], list[risk.Candidate]], min_score: float, model_active: bool, cash: Decimal) -> PlanResult:
    """Run the engine over every moment of ``ds``; the plan's summary, with its accounting."""
    from trader.trade.virtual import VirtualBook

    quote = settings.universe.quote_asset
    broker = SimBroker(blocks, base, {quote: cash}, settings.replay.spread_bps, settings.replay.matching)
    virtual = VirtualBook(ledger, settings.risk, settings.replay.matching.taker_fee, base)
    engine = TradeEngine(broker, ledger, settings.risk, min_score, strategy=settings.trade.strategy, quote=quote,
                         model_active=model_active, virtual=virtual, universe=ds.symbols)
    books = Accounting(ledger, broker, quote, cash)
    exposed = 0
    for m in range(ds.n_moments):
        t = int(ds.moments_ms[m])
        broker.set_time(t)
        with ledger.batch():  # a backtest's ledger need not survive a crash: one transaction per step
            await engine.step(t, pick(m))
            books.check()
            virtual.update(t, blocks.__getitem__)
            exposed += bool(ledger.positions(PositionStatus.OPEN))
    # the account at the end, valued at the venue's prices (what is still held included)
    end_rep = await engine.reconcile(int(ds.moments_ms[-1]) if ds.n_moments else 0, dust=True)
    end = end_rep.equity if ds.n_moments else cash
    curve = [e for _, e in ledger.equity_curve()] + [end]
    samples = ledger.virtual_samples()
    virtual_out = None
    if samples:
        rets = [s[4] for s in samples]
        virtual_out = {"closed": len(samples), "mean_net_return": round(float(np.mean(rets)), 6),
                       "reasons": dict(sorted(Counter(s[5] for s in samples).items()))}
    return PlanResult(
        **engine.summary(),
        net_return=round(float(end / cash - 1), 6),
        max_drawdown=round(max_drawdown(curve), 6),
        exposure=round(exposed / max(ds.n_moments, 1), 4),
        fees_paid_quote=round(sum(float(p.fees) for p in ledger.positions()), 4),
        end_equity=round(float(end), 4),
        accounting=books.report() | {"dust_assets": len(end_rep.dust), "dust_value_quote": round(float(sum((d.value for d in end_rep.dust), D0)), 6)},
        virtual=virtual_out,
    )


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
    use_model: bool = True,
) -> BacktestResult:
    """Backtest the trade plan over the store's klines in ``[start_ms, end_ms)``.

    Returns:
        The plan's :class:`BacktestResult` (``as_dict()`` is the ``--json`` document), with the
        random-entry runs' net returns (mean, min, max over ``baseline_seeds`` seeds) beside it.

    Raises:
        ConfigError: an empty window or a non-finite cash; StoreError: no store.

    With ``use_model`` (default) the candidates are the active (or shipped) model's signal, from its
    *out-of-sample* predictions only: inside its training window its walk-forward test folds, after
    it the model itself; moments it trained on have no model score and are not traded.
    """
    if not np.isfinite(cash) or cash <= 0:
        raise ConfigError(f"--cash must be a positive finite amount, got {cash}")
    t0 = time.perf_counter()
    from trader.store.klines import KlineStore

    ds = decision_dataset(settings, store_path, symbols or [], start_ms, end_ms, use_model=use_model)
    if ds.n_moments == 0:
        raise ConfigError("no decision moment in the window (warm the store, or widen --from/--to)")
    t_data = time.perf_counter() - t0
    base = settings.universe.intervals[0]
    with KlineStore(store_path) as store:
        blocks = {s: store.load(s, base) for s in ds.symbols}
    score, direction, prob = scores(settings, ds, store_path, use_model=use_model)
    min_score = settings.entry_min_score()
    model_active = prob is not None
    t1 = time.perf_counter()
    money = Decimal(repr(float(cash)))
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(ledger_path or Path(tmp) / "backtest.sqlite", durable=ledger_path is not None)
        try:
            out = asyncio.run(run_plan(settings, ds, blocks, base, ledger, lambda m: candidates_at(ds, score, direction, prob, m, min_score),
                                       min_score, model_active, money))
        finally:
            ledger.close()
        t_run = time.perf_counter() - t1
        counts = [int((ds.valid[:, m] & np.isfinite(score[:, m]) & (np.round(score[:, m], 6) >= min_score)).sum()) for m in range(ds.n_moments)]
        rets = []
        for seed in range(baseline_seeds):
            rng = np.random.default_rng(seed)
            lg = Ledger(Path(tmp) / f"random-{seed}.sqlite", durable=False)
            try:
                r = asyncio.run(run_plan(settings, ds, blocks, base, lg, random_picker(ds, counts, rng), 0.0, False, money))
            finally:
                lg.close()
            rets.append(r.net_return)
            if progress:
                progress(f"random baseline {seed + 1}/{baseline_seeds}: {r.net_return:+.2%}")
    return BacktestResult(
        **{f: getattr(out, f) for f in PlanResult.__dataclass_fields__},
        window={"from_ms": int(ds.moments_ms[0]), "to_ms": int(ds.moments_ms[-1]), "decisions": ds.n_moments, "symbols": len(ds.symbols)},
        min_score=min_score,
        model_active=model_active,
        baseline={"kind": "random symbols and directions at the strategy's signal moments, same sizing, exits, fees",
                  "seeds": baseline_seeds, "net_return_mean": round(float(np.mean(rets)), 6) if rets else None,
                  "net_return_min": min(rets) if rets else None, "net_return_max": max(rets) if rets else None},
        beats_baseline=bool(rets) and out.net_return > max(rets),
        seconds={"data": round(t_data, 2), "backtest": round(t_run, 2), "total": round(time.perf_counter() - t0, 2)},
    )
