"""Client-side protection of the exchange limits: a request-weight budget, Retry-After pauses, an
adaptive bound on requests in flight, and a circuit breaker for batch work. Retries themselves are
tenacity's (see :mod:`trader.exchange.rest`).

Binance rules applied (Binance spot REST API, "LIMITS" — "IP Limits"; USD-M futures "Limits"):

- Request weight is counted per IP per minute (spot 6000, USD-M 2400); every response reports the
  window's used weight in ``X-MBX-USED-WEIGHT-1M``. The :class:`WeightBudget` reserves the weight of
  each request before it is sent, keeps the server-reported figure as the truth, and when the next
  request would go over the limit it waits for the window to roll — it never sleeps to pace.
- "When a 429 is received, it's your obligation as an API to back off and not spam the API";
  on 429/418 :meth:`WeightBudget.pause` stops every request of the process until Retry-After ends —
  new ones, and those already in flight that come back 429 (their retry waits too), so no request
  is sent into a Retry-After window. "Repeatedly ... failing to back off after receiving 429s
  will result in an automated IP ban": after a 429 the :class:`InflightLimit` halves how many
  requests may be on the wire at once, and grows back by one per ``recover_after`` successes.

Time is injected (``clock`` in epoch seconds and an async ``sleep``) so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from trader.errors import CircuitOpenError, ConfigError, RateLimited

__all__ = ["CircuitBreaker", "InflightLimit", "WeightBudget"]

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
            raise ConfigError(f"weight limit must be > 0 and 0 <= margin < 1 (got {limit}, {margin})")
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

    async def acquire(self, weight: int, max_wait_s: float | None = None) -> None:
        """Reserve ``weight`` for one request, waiting for the window to roll or a pause to end.

        Args:
            weight: the request's weight.
            max_wait_s: give up rather than wait for a pause longer than this (the caller's deadline).

        Raises:
            ConfigError: if ``weight`` exceeds the whole per-minute capacity (``client.weight_limit`` too low).
            RateLimited: the exchange's Retry-After (a ban, typically) ends after ``max_wait_s``.
        """
        if weight > self.capacity:
            raise ConfigError(f"request weight {weight} exceeds the budget capacity {self.capacity} (client.weight_limit too low)")
        while True:
            now = self._clock()
            if self.pause_until > now:
                remaining = self.pause_until - now
                if max_wait_s is not None and remaining > max_wait_s:
                    raise RateLimited(
                        f"the exchange asked us to wait {remaining:.0f} s (Retry-After), beyond the deadline",
                        retry_after_s=remaining,
                    )
                self.waits += 1
                await self._sleep(remaining)
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


class InflightLimit:
    """How many requests may be on the wire at once: ``maximum`` normally, halved on every 429.

    A request already on the wire when a 429 is sent cannot be recalled, and an exchange that bans
    "failing to back off" may count it: keeping fewer in flight after a 429 bounds that exposure,
    while a healthy exchange gets the full concurrency back (one slot per ``recover_after``
    successes — additive increase, multiplicative decrease).

    Args:
        maximum: the configured concurrency (``client.concurrency``).
        recover_after: consecutive successes that win one slot back.
    """

    def __init__(self, maximum: int, recover_after: int = 20) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.recover_after = recover_after
        self.inflight = 0
        self.lowest = maximum  #: the smallest limit reached
        self._ok = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> None:
        """Wait for a free slot."""
        while self.inflight >= self.limit:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        self.inflight += 1

    def release(self, rate_limited: bool = False, healthy: bool = True) -> None:
        """Free a slot; ``rate_limited`` halves the limit, a ``healthy`` response counts toward recovery."""
        self.inflight = max(self.inflight - 1, 0)
        if rate_limited:
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self._ok = 0
        elif healthy:
            self._ok += 1
            if self._ok >= self.recover_after and self.limit < self.maximum:
                self.limit += 1
                self._ok = 0
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class CircuitBreaker:
    """Stop hammering an unhealthy exchange; let batch work wait for it instead of failing.

    States: *closed* (calls pass), *open* (after ``threshold`` consecutive failures of distinct
    requests), *half-open* (after ``cooldown_s``: one trial call passes; success closes, failure
    re-opens for another cool-down). Only failures that say the exchange is unhealthy count (network
    errors, 5xx); a rejected request (4xx) proves it is up. The retries of one request count once
    (``failure(counted=False)``), so one flaky request cannot open the circuit by itself.

    A caller that finds the circuit open **waits** in :meth:`acquire` for the half-open trial and its
    outcome, up to its own deadline — a warm of 2 000 series rides out a slow minute instead of
    failing every remaining series at once. Only a deadline that passes raises :class:`CircuitOpenError`.

    Args:
        threshold: consecutive failures (of distinct requests) that open the circuit.
        cooldown_s: seconds the circuit stays open before a trial call.
        clock: monotonic seconds.
        sleep: async sleep used to wait for the cool-down (virtual in tests).
    """

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._sleep = sleep
        self.failures = 0
        self.opened_at: float | None = None
        self.opened = 0  #: times the circuit opened
        self._trial = False
        self._outcome: asyncio.Event | None = None

    def now(self) -> float:
        """The breaker's clock (monotonic seconds): deadlines passed to :meth:`acquire` are on it."""
        return self._clock()

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.cooldown_s else "open"

    async def acquire(self, deadline: float | None = None) -> bool:
        """Wait until a call may go out.

        Args:
            deadline: monotonic time after which to give up (None = wait as long as it takes).

        Returns:
            True when this call is the half-open trial (its outcome decides the state).

        Raises:
            CircuitOpenError: the circuit did not close before ``deadline``.
        """
        while True:
            state = self.state
            if state == "closed":
                return False
            if state == "half-open" and not self._trial:
                self._trial = True
                self._outcome = asyncio.Event()
                return True
            now = self._clock()
            assert self.opened_at is not None
            wake = self.opened_at + self.cooldown_s if state == "open" else now + 1.0
            if deadline is not None and now >= deadline:
                raise CircuitOpenError(
                    f"circuit open after {self.failures} consecutive failures of distinct requests; "
                    f"deadline reached while waiting for the exchange to recover"
                )
            until = wake if deadline is None else min(wake, deadline)
            if state == "half-open" and self._outcome is not None:
                # a trial is in flight: wait for its outcome (or a second, or the deadline)
                try:
                    async with asyncio.timeout(max(until - now, 0.001)):
                        await self._outcome.wait()
                except TimeoutError:
                    pass
            else:
                await self._sleep(max(until - now, 0.001))

    def success(self) -> None:
        """Record a healthy response: close the circuit."""
        self.failures = 0
        self.opened_at = None
        self._end_trial()

    def failure(self, counted: bool = True) -> None:
        """Record an unhealthy outcome; open at the threshold, or re-open on a failed trial.

        Args:
            counted: False for a retry of a request whose first failure was already counted.
        """
        trial = self._trial
        if counted:
            self.failures += 1
        if trial or (self.opened_at is None and self.failures >= self.threshold):
            if self.opened_at is None:
                self.opened += 1
            self.opened_at = self._clock()
        self._end_trial()

    def abandon(self, trial: bool) -> None:
        """A call ended without telling anything about the exchange (cancelled): if it was the
        trial, let the next caller be the trial instead."""
        if trial:
            self._end_trial()

    def _end_trial(self) -> None:
        self._trial = False
        if self._outcome is not None:
            self._outcome.set()
            self._outcome = None
