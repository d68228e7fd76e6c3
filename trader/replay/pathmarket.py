"""The recorded intrabar path as the matching engines read it (:class:`SeriesMarket`): pure, no I/O.

Kept apart from the venue's aiohttp modules so that a backtest (which runs the matching engines in
process) imports neither aiohttp nor the server.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from trader.models import CLOSE, HIGH, LOW, OPEN, QUOTE_VOLUME, VOLUME, SymbolRules
from trader.replay import market

if TYPE_CHECKING:
    from trader.replay.dataset import ReplayDataset, Series

__all__ = ["SeriesMarket"]


class SeriesMarket:
    """:class:`~trader.replay.matching.MarketView` over the recorded klines (finest interval), or over
    any series-like objects ``series_for(symbol)`` returns (the backtest's store blocks).

    The filters are parsed from the very ``exchangeInfo`` document the venue serves
    (:func:`trader.replay.market.symbol_info`), so what is published is what is enforced.
    """

    def __init__(self, dataset: ReplayDataset | None, spread_bps: float, series_for: Callable[[str], Any] | None = None) -> None:
        self.dataset = dataset
        self.spread_bps = spread_bps
        self._series_for = series_for
        self._series: dict[str, Series] = {}
        self._rules: dict[tuple[str, int], SymbolRules] = {}
        self._avg: dict[tuple[str, int], Decimal] = {}
        self._klines: dict[tuple[str, int], tuple[int, float, float]] = {}
        self._price: dict[str, tuple[int, float]] = {}  # the last (t, price) per symbol
        self._book: dict[str, tuple[tuple[int, float], tuple[Decimal, Decimal]]] = {}

    def series(self, symbol: str) -> Series:
        s = self._series.get(symbol)
        if s is None:
            if self._series_for is not None:
                s = self._series[symbol] = self._series_for(symbol)
            else:
                assert self.dataset is not None
                s = self._series[symbol] = self.dataset.series(symbol, self.dataset.finest(symbol))
        return s

    def _index(self, symbol: str, t_ms: int) -> tuple[Series, int]:
        s = self.series(symbol)
        return s, max(s.visible(t_ms) - 1, 0)

    def rules(self, symbol: str, t_ms: int) -> SymbolRules:
        s, i = self._index(symbol, t_ms)
        r = self._rules.get((symbol, i))
        if r is None:
            r = self._rules[(symbol, i)] = SymbolRules.from_symbol_info(market.symbol_info(s, t_ms))
        return r

    def price(self, symbol: str, t_ms: int) -> float:
        hit = self._price.get(symbol)
        if hit is not None and hit[0] == t_ms:
            return hit[1]
        p = market.current_price(self.series(symbol), t_ms)
        self._price[symbol] = (t_ms, p)
        return p

    def book(self, symbol: str, price: float, t_ms: int) -> tuple[Decimal, Decimal]:
        hit = self._book.get(symbol)
        if hit is not None and hit[0] == (t_ms, price):
            return hit[1]
        s, i = self._index(symbol, t_ms)
        pd, _ = s.decimals(i)
        bid, ask = market.bid_ask(price, pd, self.spread_bps)
        out = (Decimal(bid), Decimal(ask))
        self._book[symbol] = ((t_ms, price), out)
        return out

    def avg_price(self, symbol: str, t_ms: int) -> Decimal:
        key = (symbol, t_ms // 1000)
        v = self._avg.get(key)
        if v is None:
            if len(self._avg) > 10_000:
                self._avg.clear()
            v = self._avg[key] = Decimal(market.avg_price(self.series(symbol), t_ms)["price"])
        return v

    def kline(self, symbol: str, t_ms: int) -> tuple[int, float, float]:
        s, i = self._index(symbol, t_ms)
        key = (symbol, i)
        hit = self._klines.get(key)
        if hit is None:
            vol, qvol = s.values[[VOLUME, QUOTE_VOLUME], i].tolist()
            hit = self._klines[key] = (i, vol, qvol)
        return hit

    def price_range(self, symbol: str, t0_ms: int, t1_ms: int) -> tuple[float, float]:
        """A range that contains every path price over ``[t0, t1]``: the lows and highs of the klines
        it touches, and the price at ``t0`` (a cheap superset, for skipping quiet spans)."""
        s = self.series(symbol)
        ol = s.data.open_list
        i = max(bisect.bisect_right(ol, t0_ms) - 1, 0)
        j = max(s.visible(t1_ms), i + 1)
        v = s.values
        if j - i <= 4:  # the usual span (a decision interval of one or a few klines): no numpy call overhead
            lows, highs = v[LOW], v[HIGH]
            lo = min(float(lows[k]) for k in range(i, j))
            hi = max(float(highs[k]) for k in range(i, j))
        else:
            lo, hi = float(np.min(v[LOW, i:j])), float(np.max(v[HIGH, i:j]))
        p0 = self.price(symbol, t0_ms)
        return min(lo, p0), max(hi, p0)

    def segments(self, symbol: str, t0_ms: int, t1_ms: int) -> Iterator[tuple[int, float, int, float, bool]]:
        """Pieces of the documented intrabar path over ``(t0, t1]``, with the jumps between klines."""
        s = self.series(symbol)
        ol = s.data.open_list
        iv = s.interval_ms
        v = s.values
        i = max(bisect.bisect_right(ol, t0_ms) - 1, 0)
        n = s.visible(t1_ms)
        while i < n:
            ot = ol[i]
            o, h, lo, c = float(v[OPEN, i]), float(v[HIGH, i]), float(v[LOW, i]), float(v[CLOSE, i])
            if i > 0 and t0_ms < ot <= t1_ms:
                prev = float(v[CLOSE, i - 1])
                if prev != o:
                    yield ot, prev, ot, o, True
            w = (o, lo, h, c) if c >= o else (o, h, lo, c)
            for k in range(3):
                sa, sb = ot + k * iv / 3, ot + (k + 1) * iv / 3
                a, b = max(sa, t0_ms), min(sb, t1_ms)
                if b <= a:
                    continue
                pa = w[k] + (w[k + 1] - w[k]) * (a - sa) / (sb - sa)
                pb = w[k] + (w[k + 1] - w[k]) * (b - sa) / (sb - sa)
                yield int(a), pa, int(b), pb, False
            i += 1
