"""The replay exchange's clock: recorded time that moves at ``speed`` x wall time.

``now_ms() = start_ms + offset_ms + speed * (wall_s() - wall_start_s) * 1000``

``speed=0`` freezes the clock; tests then move it only with :meth:`ReplayClock.step` or
:meth:`ReplayClock.set`, deterministically and without sleeping. The wall-time source is injected
(``time.monotonic`` by default) so nothing here depends on the machine's date. In ``--clock wall``
mode the exchange builds the clock at the wall clock's now with speed 1 and ``steppable=False``:
its time then *is* the wall clock, and stepping it is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trader.errors import ConfigError

__all__ = ["MAX_STEP_MS", "ReplayClock"]

#: Largest single step accepted (10 years): a bigger one is a typo, and would overflow what clients parse.
MAX_STEP_MS = 10 * 366 * 86_400_000


class ReplayClock:
    """Replay "now" in epoch ms.

    Args:
        start_ms: replay time at construction, epoch ms (UTC).
        speed: replay ms per wall ms (1.0 = real time, 60.0 = one replay hour per wall minute, 0 = frozen).
        wall: monotonic wall-clock source in seconds (injectable for tests).
        steppable: False for a clock that must follow the wall clock (``--clock wall``).

    Raises:
        ConfigError: if ``speed`` is negative or not finite.
    """

    def __init__(
        self, start_ms: int, speed: float = 1.0, wall: Callable[[], float] = time.monotonic, *, steppable: bool = True
    ) -> None:
        if not 0 <= speed < float("inf"):
            raise ConfigError(f"replay speed must be a finite number >= 0, got {speed}")
        self._wall = wall
        self._wall_start = wall()
        self._base_ms = int(start_ms)
        self.speed = float(speed)
        self.steppable = steppable
        #: callables run after every explicit step/set (the stream hub wakes on them)
        self.listeners: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        """Current replay time, epoch ms."""
        if self.speed == 0.0:
            return self._base_ms
        return self._base_ms + int(self.speed * (self._wall() - self._wall_start) * 1000.0)

    def step(self, ms: int) -> int:
        """Move replay time forward by ``ms`` (0 <= ms <= :data:`MAX_STEP_MS`); return the new now, epoch ms.

        Raises:
            ConfigError: a negative or oversized step, or a clock that follows the wall clock.
        """
        if not self.steppable:
            raise ConfigError("this replay clock follows the wall clock (--clock wall) and cannot be stepped")
        if not 0 <= ms <= MAX_STEP_MS:
            raise ConfigError(f"a clock step must be between 0 and {MAX_STEP_MS} ms (the replay clock never goes backwards)")
        self._base_ms += int(ms)
        for listener in self.listeners:
            listener()
        return self.now_ms()

    def set(self, now_ms: int) -> int:
        """Jump to ``now_ms`` (not earlier than the current now) and return it.

        Raises:
            ConfigError: ``now_ms`` is in the past, too far ahead, or the clock is not steppable.
        """
        return self.step(int(now_ms) - self.now_ms())
