"""The risk rules of ``trader trade``. Pure: no I/O, no clock, no exchange — every input is an argument.

The plan (``risk`` config section, the seed's defaults): at most ``max_positions`` (3) open
positions; enter only a long signal (spot cannot short; ``leverage`` applies to USD-M only) whose
score is at least ``min_score`` and, with an active model, whose probability is at least
``min_confidence`` (off by default: the score is the model's conviction); size = min(equity / max_positions, ``max_order_notional``, free quote);
protective exits placed at once: a stop ``stop_loss`` (-5 %) below the entry and a take-profit
ladder (+10 % for half, +20 % for the rest), each rung an OCO with the stop; a time stop after
``time_stop`` (2 h). Trading state from the day's P&L: ACTIVE; REDUCING (no entries) once the loss
reaches ``reduce_at``; HALTED (flatten, nothing new) at ``daily_loss_limit`` or when the kill
switch is on.

Every decision carries its reason; exits name theirs (:data:`EXIT_REASONS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from trader.config import RiskConfig
from trader.models import SymbolRules, duration_ms
from trader.trade.types import ExitReason, TradingState

__all__ = [
    "ACTIVE",
    "EXIT_REASONS",
    "HALTED",
    "REDUCING",
    "Candidate",
    "ExitLeg",
    "exit_ladder",
    "select_entries",
    "size_entry",
    "time_stop_due",
    "trading_state",
]

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
#: why a position (or part of it) was closed (a take profit is reported with its rung: take_profit_1)
EXIT_REASONS = tuple(ExitReason)


@dataclass(frozen=True)
class Candidate:
    """A scored symbol at a decision time.

    Attributes:
        symbol; t_ms: the decision time (a kline close + 1 ms, epoch ms); score: 0-100;
        direction: +1 long, -1 short; probability: model probability (0-1) or None; price: last close (quote).
    """

    symbol: str
    t_ms: int
    score: float
    direction: int
    probability: float | None
    price: float


@dataclass(frozen=True)
class ExitLeg:
    """One protective OCO, rung ``rung`` (1-based) of the ladder: sell ``qty`` at ``take_profit``
    (LIMIT_MAKER) or at ``stop`` (STOP_LOSS). Prices and quantity are already on the symbol's tick and step."""

    rung: int
    qty: Decimal
    take_profit: Decimal
    stop: Decimal

    @property
    def name(self) -> str:
        """``take_profit_<rung>``: the exit reason when its take profit fills."""
        return f"take_profit_{self.rung}"


def trading_state(equity: float, day_start_equity: float, cfg: RiskConfig, kill_switch: bool) -> tuple[TradingState, str]:
    """``(state, reason)`` from the day's loss (``1 - equity / day_start_equity``, fraction) and the kill switch."""
    if kill_switch:
        return HALTED, "kill_switch"
    loss = (day_start_equity - equity) / day_start_equity if day_start_equity > 0 else 0.0
    if loss >= cfg.daily_loss_limit:
        return HALTED, f"daily_loss {loss:.2%} >= {cfg.daily_loss_limit:.2%}"
    if loss >= cfg.reduce_at:
        return REDUCING, f"daily_loss {loss:.2%} >= {cfg.reduce_at:.2%}"
    return ACTIVE, "ok"


def select_entries(
    candidates: list[Candidate], open_symbols: set[str], cfg: RiskConfig, min_score: float, state: str,
    *, market: str = "spot", model_active: bool = False,
) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """Which candidates to enter now, best score first, and why each other one is not.

    A candidate that passes every *signal* filter but finds the slots full is returned with reason
    ``slots_full`` (it becomes a virtual position); one that fails a filter gets that filter's name.
    """
    take: list[Candidate] = []
    skipped: list[tuple[Candidate, str]] = []
    slots = cfg.max_positions - len(open_symbols)
    for c in sorted(candidates, key=lambda c: (-c.score, c.symbol)):
        if c.score != c.score or c.score < min_score:
            continue  # not a signal at all: not even logged
        if c.direction <= 0 and market == "spot":
            skipped.append((c, "short_on_spot"))
        elif model_active and cfg.min_confidence is not None and (c.probability is None or c.probability < cfg.min_confidence):
            skipped.append((c, "below_confidence"))
        elif c.symbol in open_symbols:
            skipped.append((c, "already_open"))
        elif state != ACTIVE:
            skipped.append((c, f"state_{state.lower()}"))
        elif slots <= 0:
            skipped.append((c, "slots_full"))
        else:
            take.append(c)
            slots -= 1
    return take, skipped


def size_entry(equity: Decimal, quote_free: Decimal, cfg: RiskConfig, rules: SymbolRules) -> Decimal:
    """Quote amount (USDT) to spend on one entry: min(equity / max_positions, max_order_notional,
    99 % of the free quote), rounded down to a cent; 0 when below the symbol's minimum notional x 2
    (the exits must stay above it after a partial take-profit)."""
    want = min(equity / cfg.max_positions, Decimal(repr(cfg.max_order_notional)), quote_free * Decimal("0.99"))
    want = want.quantize(Decimal("0.01"), ROUND_FLOOR)
    return want if want >= rules.min_notional * 2 else Decimal(0)


def exit_ladder(entry_price: Decimal, qty: Decimal, cfg: RiskConfig, rules: SymbolRules) -> list[ExitLeg]:
    """The protective OCOs of a long position of ``qty`` bought at ``entry_price``.

    Rung ``k`` sells ``take_profit_sizes[k]`` of the quantity (the last one whatever is left, so the
    rungs sum exactly to ``qty``) at ``entry x (1 + take_profit[k])`` rounded up to the tick, with a
    stop at ``entry x (1 - stop_loss)`` rounded down. A rung whose value would fall under the minimum
    notional is merged into the next one.
    """
    stop = rules.round_price(entry_price * (1 - Decimal(repr(cfg.stop_loss))))
    legs: list[ExitLeg] = []
    left = qty
    carry = Decimal(0)
    n = len(cfg.take_profit)
    for k, (tp, share) in enumerate(zip(cfg.take_profit, cfg.take_profit_sizes, strict=True)):
        part = left if k == n - 1 else rules.round_qty(qty * Decimal(repr(share))) + carry
        price = rules.round_price(entry_price * (1 + Decimal(repr(tp))), up=True)
        if k < n - 1 and (part * stop < rules.min_notional or part <= 0):
            carry = part
            continue
        carry = Decimal(0)
        part = min(part, left)
        if part <= 0:
            continue
        legs.append(ExitLeg(k + 1, part, price, stop))
        left -= part
    return legs


def time_stop_due(entry_ms: int, now_ms: int, cfg: RiskConfig) -> bool:
    """True once ``time_stop`` has passed since the entry."""
    return now_ms - entry_ms >= duration_ms(cfg.time_stop)
