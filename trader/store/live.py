"""Live kline cache: fixed-size numpy ring buffers per (symbol, interval), fed by the stream.

Each series keeps its newest ``capacity`` *closed* klines in a ``(11, 2 x capacity)`` float64 array,
every row written twice (at ``i`` and ``i + capacity``), so the newest ``k`` klines are always the
contiguous slice ``data[:, e - k : e]``: appends are O(1) and the scanner reads a zero-copy
``(11, k)`` view in the store's column layout (:data:`trader.models.KLINE_COLUMNS` order). The
still-forming kline lives apart (``forming``) and never enters the ring or the store.

Memory: 100 symbols x 2 intervals x 300 klines = 2 x 300 x 11 x 8 B per series = 10.6 MB
(:meth:`LiveCache.nbytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trader.models import N_FIELDS, OPEN_TIME, interval_ms

__all__ = ["APPENDED", "GAP", "IGNORED", "LiveCache", "Ring"]

APPENDED, REPLACED, IGNORED, GAP = "appended", "replaced", "ignored", "gap"
_COLS = N_FIELDS


@dataclass(eq=False)
class Ring:
    """Closed klines of one series (newest ``capacity``) plus the forming one.

    Attributes:
        capacity: klines kept.
        step_ms: interval length, ms.
        data: ``(11, 2 x capacity)`` storage (see module docstring).
        n: klines ever appended (the write position is ``n % capacity``).
        forming: ``(11,)`` the forming kline, valid when ``has_forming``.
    """

    capacity: int
    step_ms: int
    data: np.ndarray = field(init=False)
    n: int = 0
    forming: np.ndarray = field(init=False)
    has_forming: bool = False

    def __post_init__(self) -> None:
        self.data = np.zeros((_COLS, 2 * self.capacity))
        self.forming = np.zeros(_COLS)

    def __len__(self) -> int:
        return min(self.n, self.capacity)

    @property
    def last_open_ms(self) -> int | None:
        """Open time of the newest closed kline, or None."""
        if self.n == 0:
            return None
        return int(self.data[OPEN_TIME, (self.n - 1) % self.capacity])

    def view(self, k: int | None = None) -> np.ndarray:
        """The newest ``k`` (default all) closed klines, oldest first: a zero-copy ``(11, k)`` view."""
        size = len(self)
        k = size if k is None else min(k, size)
        end = self.n % self.capacity + self.capacity
        return self.data[:, end - k : end]

    def append(self, row: np.ndarray) -> str:
        """Add one closed kline ``(11,)``; O(1).

        Returns:
            ``"appended"``; ``"replaced"`` when that open time is already held (last wins);
            ``"ignored"`` for an open time older than everything held; ``"gap"`` when klines are
            missing between the newest held and this one (nothing is written: backfill first).
        """
        t = row[OPEN_TIME]
        last = self.last_open_ms
        if last is not None:
            if t <= last:
                hits = np.flatnonzero(self.view()[OPEN_TIME] == t)
                if hits.size == 0:
                    return IGNORED
                pos = (self.n - len(self) + int(hits[0])) % self.capacity
                self.data[:, pos] = row
                self.data[:, pos + self.capacity] = row
                return REPLACED
            if t > last + self.step_ms:
                return GAP
        i = self.n % self.capacity
        self.data[:, i] = row
        self.data[:, i + self.capacity] = row
        self.n += 1
        if self.has_forming and self.forming[OPEN_TIME] <= t:
            self.has_forming = False
        return APPENDED

    def set_forming(self, row: np.ndarray) -> None:
        """Replace the forming kline (never stored; dropped when its close arrives)."""
        last = self.last_open_ms
        if last is not None and row[OPEN_TIME] <= last:
            return  # a late update of a kline that has already closed
        self.forming[:] = row
        self.has_forming = True


class LiveCache:
    """Ring buffers for many series.

    Args:
        capacity: klines kept per series.
    """

    def __init__(self, capacity: int = 300) -> None:
        self.capacity = capacity
        self.rings: dict[tuple[str, str], Ring] = {}

    def ring(self, symbol: str, interval: str) -> Ring:
        """The ring of a series, created empty on first use."""
        key = (symbol, interval)
        ring = self.rings.get(key)
        if ring is None:
            ring = self.rings[key] = Ring(self.capacity, interval_ms(interval))
        return ring

    def seed(self, symbol: str, interval: str, columns: np.ndarray) -> None:
        """Fill a series from ``(11, n)`` stored klines (oldest first), e.g. ``KlineStore.load``."""
        ring = self.ring(symbol, interval)
        for j in range(max(columns.shape[1] - self.capacity, 0), columns.shape[1]):
            ring.append(columns[:, j])

    def load(self, symbol: str, interval: str, limit: int | None = None) -> np.ndarray:
        """Newest ``limit`` closed klines as ``(11, n)``, the :meth:`KlineStore.load` layout (a view)."""
        ring = self.rings.get((symbol, interval))
        if ring is None:
            return np.empty((_COLS, 0))
        return ring.view(limit)

    def nbytes(self) -> int:
        """Bytes held by every ring (storage and forming rows)."""
        return sum(r.data.nbytes + r.forming.nbytes for r in self.rings.values())
