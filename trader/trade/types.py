"""The trade domain's vocabulary: what an order is for, why a position closed, what a decision did,
and the typed results of the engine's steps (no strings parsed back out of client order ids).

Order statuses, sides and types are :mod:`trader.models`'s (:class:`~trader.models.OrderStatus`,
:data:`~trader.models.OPEN_STATUSES`), shared with the replay venue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "Action",
    "Dust",
    "ExitReason",
    "FlattenReport",
    "PositionStatus",
    "ReconcileReport",
    "Role",
    "StepReport",
    "TradingState",
    "exit_label",
]


class Role(StrEnum):
    """What an order of ours is for (ledger ``orders.role``; a ladder rung is in ``orders.rung``)."""

    ENTRY = "entry"
    TAKE_PROFIT = "take_profit"  #: the LIMIT_MAKER leg of a rung's OCO
    STOP_LOSS = "stop_loss"  #: the STOP_LOSS leg of a rung's OCO
    EXIT = "exit"  #: a market exit (reason in ``orders.reason``)


class ExitReason(StrEnum):
    """Why (part of) a position was sold. A take profit is reported with its rung: ``take_profit_1``."""

    TAKE_PROFIT = "take_profit"
    STOP_LOSS = "stop_loss"
    TIME_STOP = "time_stop"
    SIGNAL_EXIT = "signal_exit"
    KILL_SWITCH = "kill_switch"
    DAILY_LOSS = "daily_loss"
    STOP_FAILED = "stop_failed"
    FLATTEN = "flatten"
    DUST = "dust"  #: what is left cannot be sold (below the step or the minimum notional)
    RECONCILE = "reconcile"  #: the venue holds less than the ledger believed; corrected to the venue


class Action(StrEnum):
    """What a logged decision did (ledger ``decisions.action``)."""

    ENTER = "enter"
    SKIP = "skip"
    EXIT = "exit"
    PARTIAL_EXIT = "partial_exit"  #: a market exit filled only partly; the rest is retried at the next step
    STATE = "state"  #: the trading state changed (with the equity figures that changed it)
    RECONCILE = "reconcile"  #: the ledger was corrected to what the venue holds
    ORPHAN = "orphan"  #: an order or a holding on the venue that the ledger does not know
    VENUE_RESET = "venue_reset"  #: the venue no longer knows trades the ledger booked (a restarted replay)


class PositionStatus(StrEnum):
    """A position is OPEN until the venue says its quantity is gone (or only unsellable dust is left)."""

    OPEN = "OPEN"
    CLOSED = "CLOSED"


class TradingState(StrEnum):
    """The day's trading state (:func:`trader.trade.risk.trading_state`)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  #: no new entries
    HALTED = "HALTED"  #: flatten everything, nothing new until the next UTC day (or the kill switch is removed)


def exit_label(reason: str, rung: int | None = None) -> str:
    """The reported exit reason: ``take_profit`` with its rung (``take_profit_1``), else the reason."""
    if reason == ExitReason.TAKE_PROFIT and rung is not None:
        return f"take_profit_{rung}"
    return str(reason)


@dataclass(frozen=True)
class Dust:
    """A holding too small to sell: ``qty`` of ``asset`` worth ``value`` quote (below the symbol's
    minimum notional or under one step)."""

    asset: str
    qty: Decimal
    value: Decimal


@dataclass
class ReconcileReport:
    """What one reconciliation with the venue found and did.

    Attributes:
        t_ms: when (venue time, epoch ms).
        equity: the account valued at the venue's prices (quote + every held asset at its book mid,
            reserved holdings excluded), quote asset.
        free_quote: the venue's free quote balance.
        fills_booked: venue trades booked now (ours, and others on the symbols we trade).
        exits: ``(symbol, exit reason)`` of positions that closed.
        corrected: ``(symbol, ledger qty, venue qty)`` of positions corrected down to the venue.
        orphan_orders / orphan_holdings: venue orders / holdings the ledger does not know, as dicts.
        dust: holdings too small to sell.
        unpriced: held assets without a ``<asset><quote>`` market (not in ``equity``).
        venue_reset: the venue no longer knows trades the ledger booked.
        requests: venue requests this reconciliation made.
    """

    t_ms: int
    equity: Decimal = Decimal(0)
    free_quote: Decimal = Decimal(0)
    fills_booked: int = 0
    exits: list[tuple[str, str]] = field(default_factory=list)
    corrected: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    orphan_orders: list[dict[str, str]] = field(default_factory=list)
    orphan_holdings: list[dict[str, str]] = field(default_factory=list)
    dust: list[Dust] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    venue_reset: bool = False
    orders_settled: int = 0


@dataclass
class StepReport:
    """What one decision step did (for the CLI, tests and metrics).

    Attributes:
        t_ms: the decision time; state: the trading state it ran in.
        equity: the venue-valued equity the state was decided on (before this step's orders).
        day_start_equity: the day's starting equity in force.
        entered: symbols entered; exits: ``(symbol, reason)``; partial_exits: symbols whose
            market exit filled only partly (the rest is retried at the next step).
        skipped: ``(symbol, reason)`` of passing signals not traded.
        signal_to_order_s: per entry, from the decision to the venue's answer.
        reconcile: the step's reconciliation.
    """

    t_ms: int
    state: str
    equity: Decimal = Decimal(0)
    day_start_equity: Decimal = Decimal(0)
    entered: list[str] = field(default_factory=list)
    exits: list[tuple[str, str]] = field(default_factory=list)
    partial_exits: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    signal_to_order_s: list[float] = field(default_factory=list)
    reconcile: ReconcileReport | None = None


@dataclass
class FlattenReport:
    """The outcome of :meth:`~trader.trade.engine.TradeEngine.flatten`.

    Attributes:
        flat: no open order of ours is left and nothing the ledger owns can still be sold.
        cancelled: orders cancelled; sold: ``(symbol, qty)`` market sells; rounds: sell rounds run;
        exits: ``(symbol, reason)`` of the positions it closed.
        closed: positions closed; dust: holdings left that cannot be sold.
        reason: why it is not flat (empty when flat).
    """

    flat: bool
    cancelled: int = 0
    sold: list[tuple[str, Decimal]] = field(default_factory=list)
    exits: list[tuple[str, str]] = field(default_factory=list)
    rounds: int = 0
    closed: int = 0
    dust: list[Dust] = field(default_factory=list)
    reason: str = ""
