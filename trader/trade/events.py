"""The trading engine's in-process event bus and its typed events.

Events are frozen dataclasses; :class:`EventBus` calls every handler subscribed to an event's type
(and to :class:`Event`, for observers such as metrics), in subscription order, synchronously —
a handler must not block (I/O goes through tasks). Handlers' exceptions are counted and kept in
:attr:`EventBus.errors`, never propagated into the trading loop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Event",
    "EventBus",
    "FillEvent",
    "KlineClosed",
    "OrderIntentEvent",
    "OrderUpdate",
    "PositionChanged",
    "RiskBreach",
    "SignalEvent",
]


@dataclass(frozen=True)
class Event:
    """Base of every event; ``t_ms`` is the exchange time it refers to (epoch ms)."""

    t_ms: int


@dataclass(frozen=True)
class KlineClosed(Event):
    """A decision time: every ``decision_interval`` kline closed at ``t_ms - 1``."""


@dataclass(frozen=True)
class SignalEvent(Event):
    """A candidate scored at a decision time (``action``: enter, virtual, skip; ``reason``)."""

    symbol: str = ""
    score: float = 0.0
    probability: float | None = None
    action: str = ""
    reason: str = ""


@dataclass(frozen=True)
class OrderIntentEvent(Event):
    """An order about to be sent (written to the journal first)."""

    client_order_id: str = ""
    symbol: str = ""
    side: str = ""
    type: str = ""
    role: str = ""


@dataclass(frozen=True)
class OrderUpdate(Event):
    """An order's status as the venue reports it; ``latency_s``: request to answer."""

    client_order_id: str = ""
    symbol: str = ""
    side: str = ""
    status: str = ""
    latency_s: float | None = None


@dataclass(frozen=True)
class FillEvent(Event):
    """A fill of one of our orders (quote and base amounts as Decimal strings)."""

    client_order_id: str = ""
    symbol: str = ""
    side: str = ""
    price: str = ""
    qty: str = ""


@dataclass(frozen=True)
class PositionChanged(Event):
    """A position opened, reduced or closed (``reason``: entry, take_profit_1, stop_loss, ...)."""

    symbol: str = ""
    qty: str = ""
    reason: str = ""
    open_positions: int = 0


@dataclass(frozen=True)
class RiskBreach(Event):
    """The trading state changed (ACTIVE / REDUCING / HALTED) and why."""

    state: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


E = TypeVar("E", bound=Event)


class EventBus:
    """Synchronous publish / subscribe by event type."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)
        self.published = 0
        self.errors: list[str] = []

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Call ``handler`` for every event of ``kind`` (``Event``: every event)."""
        self._handlers[kind].append(handler)

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to its type's handlers, then to ``Event``'s."""
        self.published += 1
        for kind in (type(event), Event) if type(event) is not Event else (Event,):
            for handler in self._handlers.get(kind, ()):
                try:
                    handler(event)
                except Exception as exc:  # noqa: BLE001 - an observer never breaks the trading loop
                    self.errors.append(f"{type(event).__name__}: {type(exc).__name__}: {exc}")
