"""The ``portfolio`` plan: a horizon-matched long/short portfolio of the model's ranking (``risk.plan: portfolio``).

**Targets** (:class:`SleeveBook`, pure, shared by the backtest and paper/live). At every decision the
symbols with a model score are ranked by it (the model's out-of-sample probability of the up-move:
its expected excess, cross-sectionally). The book is split into ``S = horizon / decision interval``
staggered **sleeves**; at each decision one sleeve (``m mod S``) is rebalanced and then held for the
horizon. A sleeve is long the top ``k`` and short the bottom ``k`` (usdm; spot: long only), with a
**no-trade band**: a name the sleeve holds stays while its rank is within the top / bottom ``band``;
only the freed slots take new names, best ranks first. Target weights (multiples of equity) =
``gross / S`` per sleeve, split per side by ``net`` (usdm, default 0: market neutral) equally or by
inverse volatility, each position capped at ``max_weight``; the symbol's weight is the sum over
sleeves. A symbol stopped out is excluded for one horizon.

**Execution** (:func:`simulate` for the backtest, the same rules for paper / live): the difference
between the target and the held notional is traded when it exceeds ``min_trade`` of the target;
**maker first** — a post-only order (GTX on usdm) at the touch, re-priced at the next decision, and
what is still missing after ``maker_wait`` decisions goes as a taker (MARKET) order; a reduce-only
STOP_MARKET ``stop_loss`` away from the entry protects each position (closePosition). The daily loss
limits of :mod:`trader.trade.risk` apply (REDUCING: no position grows; HALTED: flat until the next
UTC day). Positions are ISOLATED, at a leverage chosen so that the liquidation distance is at least
``liq_multiple`` x the stop.

**The backtest runs the replay venue's own USD-M engine** (:class:`trader.replay.futures.FuturesEngine`)
in process over the store's klines: the same fills along the intrabar path, fees (``costs.usdm``),
funding every 8 h and liquidation as the venue. Baselines on the same moments through the same engine
(:mod:`trader.trade.portfolio_backtest`): a **random portfolio** — the plan's decisions applied to a
random relabelling of the universe (one bijection per seed: the same sleeves, persistence, turnover,
concentration and exposure, the names at random), over several seeds; the **equal-weight universe** long (bought once); **BTC** long (bought once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np

from trader.config import PortfolioConfig, RiskConfig
from trader.errors import ConfigError
from trader.models import duration_ms
from trader.usdm import Bracket, ContractRules

__all__ = ["PortfolioRun", "SleeveBook", "choose_leverage", "metrics", "simulate"]

D0 = Decimal(0)
HOUR_MS = 3_600_000
YEAR_MS = 365.25 * 24 * HOUR_MS


def choose_leverage(cfg: PortfolioConfig, risk: RiskConfig, tiers: dict[str, tuple[Bracket, ...]]) -> int:
    """The per-symbol leverage: the gross exposure rounded up, at most ``risk.leverage``; refused when
    the liquidation distance ``1 / leverage - mmr`` (isolated, first tier) is under ``liq_multiple x stop_loss``.

    Raises:
        ConfigError: gross above risk.leverage, or a liquidation too close to the stop.
    """
    if cfg.gross > risk.leverage:
        raise ConfigError(f"risk.portfolio.gross {cfg.gross:g} exceeds risk.leverage {risk.leverage:g}")
    lev = max(1, math.ceil(max(cfg.gross, cfg.max_weight)))
    worst_mmr = max((float(t[0].mmr) for t in tiers.values()), default=0.0)
    distance = 1.0 / lev - worst_mmr
    need = cfg.liq_multiple * risk.stop_loss
    if distance < need:
        raise ConfigError(f"leverage {lev}x puts liquidation {distance:.1%} away, under {cfg.liq_multiple:g} x the {risk.stop_loss:.0%} stop "
                          "(lower risk.portfolio.gross / max_weight or liq_multiple)")
    return lev


@dataclass
class SleeveBook:
    """The staggered sleeves and their picks (module docstring). Pure: no I/O.

    Args:
        cfg: ``risk.portfolio``; n_sleeves: horizon / decision interval (>= 1).
        long_only: spot (no shorts).
    """

    cfg: PortfolioConfig
    n_sleeves: int
    long_only: bool = False
    longs: list[list[str]] = field(default_factory=list)
    shorts: list[list[str]] = field(default_factory=list)
    changes: list[tuple[int, int]] = field(default_factory=list)  # per rebalance: (longs replaced, shorts replaced)

    def __post_init__(self) -> None:
        self.longs = [[] for _ in range(self.n_sleeves)]
        self.shorts = [[] for _ in range(self.n_sleeves)]

    def rebalance(self, m: int, ranked: list[str], blocked: set[str] | None = None) -> int:
        """Rebalance sleeve ``m mod S`` from ``ranked`` (best first; only symbols that can trade now);
        returns the sleeve index."""
        j = m % self.n_sleeves
        blocked = blocked or set()
        k, band = self.cfg.k, self.cfg.band
        ok = [s for s in ranked if s not in blocked]
        n = len(ok)
        if n < 2:
            self.longs[j], self.shorts[j] = [], []
            self.changes.append((0, 0))
            return j
        k_side = min(k, n // 2) if not self.long_only else min(k, n)
        rank = {s: i for i, s in enumerate(ok)}
        out: list[tuple[list[str], int]] = []
        for side, held in ((1, self.longs[j]), (-1, self.shorts[j])):
            if side == -1 and self.long_only:
                out.append(([], 0))
                continue
            if side == 1:
                inside = [s for s in held if s in rank and rank[s] < band]
                candidates = [s for s in ok if s not in inside]
            else:
                inside = [s for s in held if s in rank and rank[s] >= n - band]
                candidates = [s for s in reversed(ok) if s not in inside]
            other = set(out[0][0]) if side == -1 and out else set()
            keep = inside[:k_side]
            new = [s for s in candidates if s not in keep and s not in other][:k_side - len(keep)]
            out.append((keep + new, len(new)))
        (self.longs[j], nl), (self.shorts[j], ns) = out
        self.changes.append((nl, ns))
        return j

    def weights(self, vol: dict[str, float] | None = None) -> dict[str, float]:
        """Target weight per symbol, multiples of equity (longs > 0, shorts < 0), summed over sleeves."""
        cfg = self.cfg
        per = cfg.gross / self.n_sleeves
        long_share = 1.0 if self.long_only else (1.0 + cfg.net) / 2.0
        w: dict[str, float] = {}
        for sleeve_longs, sleeve_shorts in zip(self.longs, self.shorts, strict=True):
            for names, share, sign in ((sleeve_longs, long_share, 1.0), (sleeve_shorts, 1.0 - long_share, -1.0)):
                if not names or share <= 0:
                    continue
                if cfg.weighting == "inverse_vol" and vol:
                    inv = [1.0 / max(vol.get(s, math.nan), 1e-9) if math.isfinite(vol.get(s, math.nan)) else 0.0 for s in names]
                    total = sum(inv)
                    parts = [x / total for x in inv] if total > 0 else [1.0 / len(names)] * len(names)
                else:
                    parts = [1.0 / len(names)] * len(names)
                for s, x in zip(names, parts, strict=True):
                    w[s] = w.get(s, 0.0) + sign * per * share * x
        cap = cfg.max_weight
        return {s: max(-cap, min(cap, x)) for s, x in w.items() if x}


@dataclass
class PortfolioRun:
    """One simulated run: the decision-time equity curve and what was paid and traded (USDT)."""

    times_ms: list[int]
    equity: list[float]
    fees: float = 0.0
    funding: float = 0.0
    traded_notional: float = 0.0
    maker_notional: float = 0.0
    gross: list[float] = field(default_factory=list)
    net: list[float] = field(default_factory=list)
    stops: int = 0
    liquidations: int = 0
    halted_days: int = 0
    changes: list[tuple[int, int]] = field(default_factory=list)


def metrics(run: PortfolioRun, cash: float) -> dict[str, Any]:
    """Net return, CAGR, annualised volatility and Sharpe (decision-time returns, no risk-free rate),
    max drawdown, turnover (traded notional / mean equity, per day), fees, funding, maker share,
    mean gross / net exposure (multiples of equity)."""
    eq = np.asarray(run.equity, dtype=float)
    if eq.size < 2:
        return {"net_return": 0.0}
    t = np.asarray(run.times_ms, dtype=float)
    years = max((t[-1] - t[0]) / YEAR_MS, 1e-9)
    rets = np.diff(eq) / eq[:-1]
    per_year = (eq.size - 1) / years
    vol = float(np.std(rets, ddof=1) * math.sqrt(per_year)) if rets.size > 1 else 0.0
    mean = float(np.mean(rets) * per_year)
    peak = np.maximum.accumulate(eq)
    days = years * 365.25
    return {
        "net_return": round(float(eq[-1] / cash - 1), 6),
        "cagr": round(float((eq[-1] / cash) ** (1 / years) - 1), 6) if eq[-1] > 0 else -1.0,
        "volatility": round(vol, 6),
        "sharpe": round(mean / vol, 4) if vol > 0 else None,
        "max_drawdown": round(float(np.max((peak - eq) / peak)), 6),
        "turnover_per_day": round(run.traded_notional / float(np.mean(eq)) / days, 4),
        "fees": round(run.fees, 4),
        "funding": round(run.funding, 4),
        "maker_share": round(run.maker_notional / run.traded_notional, 4) if run.traded_notional else None,
        "gross_exposure": round(float(np.mean(run.gross)), 4) if run.gross else 0.0,
        "net_exposure": round(float(np.mean(run.net)), 4) if run.net else 0.0,
        "stops": run.stops,
        "liquidations": run.liquidations,
        "halted_days": run.halted_days,
        "years": round(years, 3),
    }


def _q(x: Decimal, step: Decimal) -> Decimal:
    return (x / step).to_integral_value(ROUND_DOWN) * step


def simulate(
    engine: Any,
    rules: dict[str, ContractRules],
    moments_ms: np.ndarray,
    tradable: Callable[[int], list[str]],
    ranked: Callable[[int], list[str]],
    book: SleeveBook,
    risk: RiskConfig,
    cash: float,
    *,
    decision_ms: int,
    leverage: int,
    vol: Callable[[int], dict[str, float]] | None = None,
    fixed: dict[str, float] | None = None,
) -> PortfolioRun:
    """Run the plan (or a baseline) through ``engine`` (a fresh :class:`~trader.replay.futures.FuturesEngine`)
    over ``moments_ms``. ``ranked(m)``: symbols best first at moment index ``m``; ``tradable(m)``: those
    with a kline at ``m``. ``fixed``: constant target weights instead of the sleeves (buy-and-hold baselines).
    """
    from trader.replay.futures import FuturesRequest
    from trader.replay.matching import Rejected

    cfg = book.cfg
    acct = engine.add_account("portfolio", Decimal(repr(float(cash))))
    run = PortfolioRun([], [])
    horizon_ms = duration_ms(cfg.horizon)
    blocked_until: dict[str, int] = {}
    pending: dict[str, int] = {}  # symbol -> decisions its post-only order has waited
    stops: dict[str, Any] = {}
    day, day_start = -1, cash
    halted_day = -1
    seen_income = 0
    leveraged: set[str] = set()
    for m, t in enumerate(int(x) for x in moments_ms):
        engine.advance(t)
        for inc in acct.income[seen_income:]:
            if inc["incomeType"] == "COMMISSION" or inc["incomeType"] == "INSURANCE_CLEAR":
                run.fees -= float(inc["income"])
            elif inc["incomeType"] == "FUNDING_FEE":
                run.funding -= float(inc["income"])
        seen_income = len(acct.income)
        for s, o in list(stops.items()):  # a stop that fired: the symbol sits out one horizon
            if not o.is_open:
                if o.status == "FILLED":
                    run.stops += 1
                    blocked_until[s] = t + horizon_ms
                del stops[s]
        equity = float(engine.equity(acct, t))
        run.times_ms.append(t)
        run.equity.append(equity)
        marks = {s: engine.mark(s, t) for s, p in acct.positions.items() if p.amt != 0}
        run.gross.append(sum(abs(float(p.amt * marks[s])) for s, p in acct.positions.items() if p.amt != 0) / max(equity, 1e-9))
        run.net.append(sum(float(p.amt * marks[s]) for s, p in acct.positions.items() if p.amt != 0) / max(equity, 1e-9))
        if equity <= 0:
            break
        d = t // 86_400_000
        if d != day:
            day, day_start = d, equity
        loss = 1 - equity / day_start if day_start > 0 else 0.0
        halted = loss >= risk.daily_loss_limit or halted_day == d
        reducing = loss >= risk.reduce_at
        if halted and halted_day != d:
            halted_day = d
            run.halted_days += 1
        can = set(tradable(m))
        if fixed is not None:  # a buy-and-hold baseline: bought at the first moment, then held
            if m > 0:
                continue
            target = dict(fixed)
        else:
            now_blocked = {s for s, until in blocked_until.items() if until > t}
            book.rebalance(m, [s for s in ranked(m) if s in can], now_blocked)
            target = {} if halted else book.weights(vol(m) if vol else None)
        for o in [o for o in list(acct.open.values()) if not o.req.close_position]:
            engine.cancel(acct, o.symbol, o.order_id, None, t)  # re-priced below
        symbols = (set(target) | {s for s, p in acct.positions.items() if p.amt != 0}) & (can | set(acct.positions))
        for s in sorted(symbols):
            if s not in can:
                continue
            r = rules[s]
            if s not in leveraged:  # isolated: each position's liquidation is its own (and checked by choose_leverage)
                engine.set_margin_type(acct, s, "ISOLATED")
                engine.set_leverage(acct, s, leverage, t)
                leveraged.add(s)
            pos = acct.positions.get(s)
            held = pos.amt if pos is not None else D0
            mark = engine.mark(s, t)
            want = _q(Decimal(repr(target.get(s, 0.0) * equity)) / mark, r.step) if mark > 0 else D0
            delta = want - held
            if reducing and abs(want) > abs(held) and want * held >= 0:
                delta = D0  # REDUCING: no position grows
            if delta == 0 or abs(delta) < r.min_qty:
                pending.pop(s, None)
                continue
            if want != 0 and abs(delta) < abs(want) * Decimal(repr(cfg.min_trade)):
                pending.pop(s, None)
                continue
            side = "BUY" if delta > 0 else "SELL"
            qty = abs(delta)
            reduce = want * held >= 0 and abs(want) < abs(held)
            waited = pending.get(s, 0)
            price_now = engine.market.price(s, t)
            bid, ask = engine.book(s, price_now)
            try:
                if waited >= cfg.maker_wait or (qty * mark < r.min_notional and not reduce):
                    if qty * mark < r.min_notional and not reduce:
                        pending.pop(s, None)
                        continue
                    engine.place(acct, FuturesRequest(s, side, "MARKET", qty, reduce_only=reduce), t)
                    pending.pop(s, None)
                else:
                    px = bid if side == "BUY" else ask
                    engine.place(acct, FuturesRequest(s, side, "LIMIT", qty, px, time_in_force="GTX", reduce_only=reduce,
                                                      client_order_id=f"mk-{s}-{t}"), t)
                    pending[s] = waited + 1
            except Rejected:
                pending.pop(s, None)
        # stops: one closePosition STOP_MARKET per held symbol, stop_loss from the entry
        for s, p in acct.positions.items():
            if p.amt == 0 or s not in can:
                old = stops.pop(s, None)
                if old is not None and old.is_open:
                    engine.cancel(acct, s, old.order_id, None, t)
                continue
            old = stops.get(s)
            stop_px = p.entry * (1 - Decimal(repr(risk.stop_loss))) if p.amt > 0 else p.entry * (1 + Decimal(repr(risk.stop_loss)))
            stop_px = rules[s].round_price(stop_px, up=p.amt < 0)
            if old is not None and old.is_open and old.req.stop_price == stop_px and (old.side == "SELL") == (p.amt > 0):
                continue
            if old is not None and old.is_open:
                engine.cancel(acct, s, old.order_id, None, t)
            try:
                stops[s] = engine.place(acct, FuturesRequest(s, "SELL" if p.amt > 0 else "BUY", "STOP_MARKET", None, stop_price=stop_px,
                                                             close_position=True, working_type="MARK_PRICE"), t)
            except Rejected:
                stops.pop(s, None)  # already through the stop: the next decision trades it
    for tr in acct.trades:
        if tr["maker"]:
            run.maker_notional += float(tr["quoteQty"])
    run.traded_notional = sum(float(tr["quoteQty"]) for tr in acct.trades)
    run.liquidations = sum(1 for o in acct.orders.values() if o.liquidation)
    run.changes = list(book.changes)
    return run
