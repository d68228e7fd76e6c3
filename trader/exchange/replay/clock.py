"""The replay exchange's clock: recorded time that moves at ``speed`` x wall time.

``now_ms() = start_ms + offset_ms + speed * (wall_s() - wall_start_s) * 1000``

``speed=0`` freezes the clock; tests then move it only with :meth:`ReplayClock.step` or
:meth:`ReplayClock.set`, deterministically and without sleeping. The wall-time source is injected
(``time.monotonic`` by default) so nothing here depends on the machine's date.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ReplayClock"]


class ReplayClock:
    """Replay "now" in epoch ms.

    Args:
        start_ms: replay time at construction, epoch ms (UTC).
        speed: replay ms per wall ms (1.0 = real time, 60.0 = one replay hour per wall minute, 0 = frozen).
        wall: monotonic wall-clock source in seconds (injectable for tests).

    Raises:
        ValueError: if ``speed`` is negative.
    """

    def __init__(self, start_ms: int, speed: float = 1.0, wall: Callable[[], float] = time.monotonic) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._wall = wall
        self._wall_start = wall()
        self._base_ms = int(start_ms)
        self.speed = float(speed)
        #: callables run after every explicit step/set (the stream hub wakes on them)
        self.listeners: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        """Current replay time, epoch ms."""
        if self.speed == 0.0:
            return self._base_ms
        return self._base_ms + int(self.speed * (self._wall() - self._wall_start) * 1000.0)

    def step(self, ms: int) -> int:
        """Move replay time forward by ``ms`` (>= 0) and return the new now, epoch ms."""
        if ms < 0:
            raise ValueError("the replay clock never goes backwards")
        self._base_ms += int(ms)
        for listener in self.listeners:
            listener()
        return self.now_ms()

    def set(self, now_ms: int) -> int:
        """Jump to ``now_ms`` (not earlier than the current now) and return it."""
        current = self.now_ms()
        if now_ms < current:
            raise ValueError("the replay clock never goes backwards")
        return self.step(now_ms - current)
