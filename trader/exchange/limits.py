"""Client-side protection of the exchange limits: a request-weight budget, Retry-After pauses, and a
circuit breaker. Retries themselves are tenacity's (see :mod:`trader.exchange.rest`).

Binance rules applied (Binance spot REST API, "LIMITS" — "IP Limits"; USD-M futures "Limits"):

- Request weight is counted per IP per minute (spot 6000, USD-M 2400); every response reports the
  window's used weight in ``X-MBX-USED-WEIGHT-1M``. The :class:`WeightBudget` reserves the weight of
  each request before it is sent, keeps the server-reported figure as the truth, and when the next
  request would go over the limit it waits for the window to roll — it never sleeps to pace.
- "When a 429 is received, it's your obligation as an API to back off and not spam the API";
  on 429/418 :meth:`WeightBudget.pause` stops every request of the process until Retry-After ends.

Time is injected (``clock`` in epoch seconds and an async ``sleep``) so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from trader.errors import CircuitOpenError

__all__ = ["CircuitBreaker", "WeightBudget"]

Sleep = Callable[[float], Awaitable[None]]
_WINDOW_S = 60.0


class WeightBudget:
    """Request-weight budget shared by every request of one process.

    Args:
        limit: weight the exchange allows per minute (spot 6000, USD-M 2400).
        margin: fraction of ``limit`` kept in reserve for other tools on the same IP (0.1 = use 90 %).
        skew_s: seconds to wait past a minute boundary before trusting that the server's window rolled.
        clock: epoch seconds.
        sleep: async sleep (``asyncio.sleep``); tests pass a virtual one.

    Attributes:
        used: weight the server reported for the current window (max seen), plus weight of
            requests that completed without a header.
        waits: how many times a request waited for the window to roll or for a pause to end.
    """

    def __init__(
        self,
        limit: int,
        *,
        margin: float = 0.1,
        skew_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if limit <= 0 or not 0 <= margin < 1:
            raise ValueError("limit must be > 0 and 0 <= margin < 1")
        self.limit = limit
        self.capacity = int(limit * (1.0 - margin))
        self.skew_s = skew_s
        self._clock = clock
        self._sleep = sleep
        self._window = int(clock() // _WINDOW_S)
        self.used = 0
        self.inflight = 0
        self.pause_until = 0.0
        self.waits = 0
        self.max_used_seen = 0
        self._settled: list[asyncio.Future[None]] = []

    def _roll(self, now: float) -> None:
        window = int((now - self.skew_s) // _WINDOW_S)
        if window > self._window:
            self._window = window
            self.used = 0

    async def acquire(self, weight: int) -> None:
        """Reserve ``weight`` for one request, waiting for the window to roll or a pause to end.

        Raises:
            ValueError: if ``weight`` exceeds the whole per-minute capacity.
        """
        if weight > self.capacity:
            raise ValueError(f"request weight {weight} exceeds the budget capacity {self.capacity}")
        while True:
            now = self._clock()
            if self.pause_until > now:
                self.waits += 1
                await self._sleep(self.pause_until - now)
                continue
            self._roll(now)
            if self.used + self.inflight + weight <= self.capacity:
                self.inflight += weight
                return
            self.waits += 1
            if self.inflight and self.used + weight <= self.capacity:
                # blocked only by requests in flight: their responses will say what they really cost
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._settled.append(fut)
                await fut
                continue
            next_window = (self._window + 1) * _WINDOW_S + self.skew_s
            await self._sleep(max(next_window - now, 0.001))

    def release(self, weight: int, used_header: int | None) -> None:
        """Settle a reservation with the server's ``X-MBX-USED-WEIGHT-1M`` (None if no response)."""
        self.inflight = max(self.inflight - weight, 0)
        self._roll(self._clock())
        if used_header is None:
            self.used += weight
        else:
            self.used = max(self.used, used_header)
            self.max_used_seen = max(self.max_used_seen, used_header)
        waiters, self._settled = self._settled, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def pause(self, seconds: float) -> None:
        """Stop every request until ``seconds`` from now (Retry-After of a 429/418)."""
        self.pause_until = max(self.pause_until, self._clock() + seconds)


class CircuitBreaker:
    """Fail fast after ``threshold`` consecutive failures; half-open after ``cooldown_s``.

    States: *closed* (calls pass), *open* (calls raise :class:`CircuitOpenError` at once), *half-open*
    (one trial call passes; success closes, failure re-opens). Only failures that say the exchange
    is unhealthy count (network errors, 5xx); a rejected request (4xx) proves it is up.

    Args:
        threshold: consecutive failures that open the circuit.
        cooldown_s: seconds the circuit stays open before a trial call.
        clock: monotonic seconds.
    """

    def __init__(self, threshold: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.cooldown_s else "open"

    def before_call(self) -> None:
        """Raise :class:`CircuitOpenError` if calls must fail fast now."""
        state = self.state
        if state == "open" or (state == "half-open" and self._trial):
            assert self.opened_at is not None
            wait = self.cooldown_s - (self._clock() - self.opened_at)
            raise CircuitOpenError(
                f"circuit open after {self.failures} consecutive failures; next trial in {max(wait, 0):.1f} s"
            )
        if state == "half-open":
            self._trial = True

    def success(self) -> None:
        """Record a healthy response: close the circuit."""
        self.failures = 0
        self.opened_at = None
        self._trial = False

    def failure(self) -> None:
        """Record an unhealthy outcome; open the circuit at the threshold (or on a failed trial)."""
        self.failures += 1
        if self._trial or self.failures >= self.threshold:
            self.opened_at = self._clock()
        self._trial = False
