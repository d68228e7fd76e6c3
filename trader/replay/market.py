"""Market data of the replay venue, computed from recorded klines on the replay clock. Pure (no I/O).

**Intrabar path.** Between a recorded kline's open and close the price moves in straight lines
O -> L -> H -> C when the kline closed up (C >= O), else O -> H -> L -> C, reaching each waypoint
after 1/3, 2/3 and 3/3 of the interval (deterministic and documented; at the close it lands on the
recorded close). Volume, quote volume, trades and taker volumes accrue pro rata to elapsed time.
Everything the venue reports between two closes follows from this path:

- a **forming kline** (:func:`forming_row`): price so far as close, extremes visited so far as
  high/low, volumes pro rata; for a derived interval (1d from 1h, ...) the closed base klines of the
  period plus the forming one;
- **window statistics** (:func:`window_stats`) for ``ticker/24hr`` and the rolling
  ``ticker?windowSize=``: open = path price at the window's start, high/low = extremes of the path
  inside the window, last = path price now, volumes pro rata for partly covered klines;
- **book ticker** (:func:`book_ticker`): bid/ask ``spread_bps`` apart around the path price, rounded
  outward to the tick (at least one tick apart); quantities = the current kline's average trade size;
- **average price** (:func:`avg_price`): the exact time-average of the path over the last 5 minutes
  (Binance's ``avgPrice`` window);
- **depth** (:func:`depth`): a synthetic book, levels one tick apart from the book ticker outward,
  each with the average trade size (there are no recorded order books; documented as synthetic).

Prices are rounded to the symbol's tick and quantities down to its step, both taken from the data
up to now only (:meth:`Series.decimals`), and formatted with 8 decimals as Binance does.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trader.models import (
    CLOSE,
    HIGH,
    LOW,
    OPEN,
    QUOTE_VOLUME,
    TAKER_BUY_BASE_VOLUME,
    TAKER_BUY_QUOTE_VOLUME,
    TRADES,
    VOLUME,
)
from trader.replay.dataset import Series, split_symbol
from trader.wire import e8

__all__ = [
    "AVG_PRICE_MINS",
    "BOOK_LEVELS",
    "BOOK_UPDATE_MS",
    "Book",
    "WindowStats",
    "avg_price",
    "bid_ask",
    "book_at",
    "book_ticker",
    "depth",
    "depth_diff",
    "fmt_price",
    "fmt_qty",
    "forming_row",
    "path_price",
    "symbol_info",
    "ticker_doc",
    "trade_tape",
    "update_id",
    "window_stats",
]

AVG_PRICE_MINS = 5
_MINUTE = 60_000


def fmt_price(x: float, decimals: int) -> str:
    """A price rounded to ``decimals`` and written with 8 decimals (``"60672.01000000"``)."""
    return e8(round(x, decimals))


def fmt_qty(x: float, decimals: int) -> str:
    """A quantity rounded *down* to ``decimals`` and written with 8 decimals."""
    scale = 10.0**decimals
    return e8(math.floor(x * scale + 1e-9) / scale)


def _waypoints(o: float, h: float, lo: float, c: float) -> tuple[float, float, float, float]:
    return (o, lo, h, c) if c >= o else (o, h, lo, c)


def path_price(o: float, h: float, lo: float, c: float, f: float) -> float:
    """Price of the documented intrabar path at fraction ``f`` (0-1) of the kline."""
    w = _waypoints(o, h, lo, c)
    pos = min(max(f, 0.0), 1.0) * 3.0
    seg = min(int(pos), 2)
    return w[seg] + (w[seg + 1] - w[seg]) * (pos - seg)


def _path_range(o: float, h: float, lo: float, c: float, a: float, b: float) -> tuple[float, float]:
    """(max, min) of the path over fractions ``[a, b]``."""
    w = _waypoints(o, h, lo, c)
    pts = [path_price(o, h, lo, c, a), path_price(o, h, lo, c, b)]
    pts += [w[k] for k in (1, 2) if a < k / 3 < b]
    return max(pts), min(pts)


def _frac(series: Series, i: int, t_ms: int) -> float:
    return min(max((t_ms - series.data.open_list[i]) / series.interval_ms, 0.0), 1.0)


def _forming_values(series: Series, index: int, now_ms: int) -> list[float]:
    """The 11 fields of kline ``index`` as it stood at ``now_ms`` (floats, unrounded).

    Plain Python floats: one kline's arithmetic is ~20 numpy scalar operations, which cost more
    than the arithmetic itself (the stream hub builds one of these per stream per update).
    """
    v: list[float] = series.values[:, index].tolist()
    if series.base is None:
        f = _frac(series, index, now_ms)
        o, h, lo, c = v[OPEN], v[HIGH], v[LOW], v[CLOSE]
        v[HIGH], v[LOW] = _path_range(o, h, lo, c, 0.0, f)
        v[CLOSE] = path_price(o, h, lo, c, f)
        for r in (VOLUME, QUOTE_VOLUME, TAKER_BUY_BASE_VOLUME, TAKER_BUY_QUOTE_VOLUME):
            v[r] *= f
        v[TRADES] = math.floor(v[TRADES] * f + 1e-9)
        return v
    base = series.base
    open_ms = int(series.open_time_ms[index])
    lo_i = int(np.searchsorted(base.open_time_ms, open_ms, side="left"))
    hi_i = base.visible(now_ms)
    if hi_i <= lo_i:
        return v
    closed_to = hi_i if int(base.open_time_ms[hi_i - 1]) + base.interval_ms <= now_ms else hi_i - 1
    block = base.values[:, lo_i:closed_to]
    parts: list[list[float]] = [block[:, j].tolist() for j in range(block.shape[1])]
    if closed_to < hi_i:
        parts.append(_forming_values(base, hi_i - 1, now_ms))
    v[OPEN] = parts[0][OPEN]
    v[HIGH] = max(p[HIGH] for p in parts)
    v[LOW] = min(p[LOW] for p in parts)
    v[CLOSE] = parts[-1][CLOSE]
    for r in (VOLUME, QUOTE_VOLUME, TRADES, TAKER_BUY_BASE_VOLUME, TAKER_BUY_QUOTE_VOLUME):
        v[r] = math.fsum(p[r] for p in parts)
    return v


def forming_row(series: Series, index: int, now_ms: int) -> list[Any]:
    """Binance kline array of kline ``index`` as it looked at ``now_ms`` while still open.

    Returns:
        A 12-element list in Binance's kline order (strings for prices and volumes). At the close it
        equals the recorded kline (up to rounding to tick and step); closed klines are never invented.
    """
    v = _forming_values(series, index, now_ms)
    root = series.base or series
    pd, qd = root.decimals(root.visible(now_ms) - 1)
    open_ms = series.data.open_list[index]
    return [
        open_ms,
        fmt_price(v[OPEN], pd),
        fmt_price(v[HIGH], pd),
        fmt_price(v[LOW], pd),
        fmt_price(v[CLOSE], pd),
        fmt_qty(v[VOLUME], qd),
        open_ms + series.interval_ms - 1,
        e8(v[QUOTE_VOLUME]),
        int(v[TRADES]),
        fmt_qty(v[TAKER_BUY_BASE_VOLUME], qd),
        e8(v[TAKER_BUY_QUOTE_VOLUME]),
        "0",
    ]


_OHLC = [OPEN, HIGH, LOW, CLOSE]


def current_price(series: Series, now_ms: int) -> float:
    """The path price at ``now_ms`` (the close of the last kline once the data has run out)."""
    i = series.visible(now_ms) - 1
    if i < 0:
        return float("nan")
    o, h, lo, c = series.values[_OHLC, i].tolist()
    return path_price(o, h, lo, c, _frac(series, i, now_ms))


def path_mean(series: Series, t0_ms: int, t1_ms: int) -> float:
    """Time-average of the intrabar path over ``[t0, t1]`` (exact: the path is piecewise linear;
    instantaneous gaps between klines weigh nothing); the price at ``t1`` when no kline covers the window."""
    if t1_ms <= t0_ms:
        return current_price(series, t1_ms)
    ol = series.data.open_list
    iv = series.interval_ms
    i = max(bisect.bisect_right(ol, t0_ms) - 1, 0)
    n = series.visible(t1_ms)
    total = covered = 0.0
    while i < n:
        ot = ol[i]
        o, h, lo, c = series.values[_OHLC, i].tolist()
        w = _waypoints(o, h, lo, c)
        for k in range(3):
            sa = ot + k * iv / 3
            sb = sa + iv / 3
            a, b = max(sa, t0_ms), min(sb, t1_ms)
            if b <= a:
                continue
            slope = (w[k + 1] - w[k]) / (sb - sa)
            total += (w[k] + slope * ((a + b) / 2 - sa)) * (b - a)
            covered += b - a
        i += 1
    return total / covered if covered else current_price(series, t1_ms)


@dataclass(frozen=True)
class WindowStats:
    """Statistics of the path over ``[open_ms, close_ms]`` (floats; rounded when formatted)."""

    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    last: float
    prev_close: float
    volume: float
    quote_volume: float
    trades: int
    last_trade_id: int


def window_stats(series: Series, open_ms: int, close_ms: int) -> WindowStats | None:
    """Path statistics of ``series`` (a recorded one) over a time window; None if nothing traded in it."""
    ot = series.open_time_ms
    step = series.interval_ms
    first = max(int(np.searchsorted(ot + step, open_ms, side="right")), 0)
    last = series.visible(close_ms) - 1
    if last < first or last < 0:
        return None
    hi, lo = -math.inf, math.inf
    vol = qv = 0.0
    trades = 0.0
    for i in range(first, last + 1):
        a, b = _frac(series, i, open_ms), _frac(series, i, close_ms)
        if b <= a and i != last:
            continue
        o, h, l_, c = (float(series.values[r, i]) for r in (OPEN, HIGH, LOW, CLOSE))
        if a == 0.0 and b == 1.0:
            hi, lo = max(hi, h), min(lo, l_)
        else:
            ph, pl = _path_range(o, h, l_, c, a, b)
            hi, lo = max(hi, ph), min(lo, pl)
        share = b - a
        vol += float(series.values[VOLUME, i]) * share
        qv += float(series.values[QUOTE_VOLUME, i]) * share
        trades += float(series.values[TRADES, i]) * share
    fo = series.values[:, first]
    open_p = path_price(fo[OPEN], fo[HIGH], fo[LOW], fo[CLOSE], _frac(series, first, open_ms))
    lc = series.values[:, last]
    last_p = path_price(lc[OPEN], lc[HIGH], lc[LOW], lc[CLOSE], _frac(series, last, close_ms))
    done = int(series.trades_cumsum[last - 1]) if last > 0 else 0
    last_id = done + math.floor(float(series.values[TRADES, last]) * _frac(series, last, close_ms) + 1e-9)
    return WindowStats(open_ms, close_ms, open_p, hi, lo, last_p, open_p, vol, qv, math.floor(trades + 1e-9), last_id)


def _avg_qty(series: Series, now_ms: int, qd: int) -> float:
    i = max(series.visible(now_ms) - 1, 0)
    v = series.values[:, i]
    q = math.floor(float(v[VOLUME]) / max(float(v[TRADES]), 1.0) * 10.0**qd) / 10.0**qd
    return q or 10.0**-qd


def ticker_doc(series: Series, stats: WindowStats, full: bool, spread_bps: float = 2.0) -> dict[str, Any]:
    """A ``ticker/24hr`` / rolling ``ticker`` object (FULL or MINI) from window statistics."""
    pd, qd = series.decimals(series.visible(stats.close_ms) - 1)
    out: dict[str, Any] = {"symbol": series.symbol}
    if full:
        change = stats.last - stats.open
        bid, ask = _bid_ask(stats.last, pd, spread_bps)
        qty = _avg_qty(series, stats.close_ms, qd)
        out.update(
            priceChange=fmt_price(change, pd),
            priceChangePercent=f"{(change / stats.open * 100.0) if stats.open else 0.0:.3f}",
            weightedAvgPrice=e8((stats.quote_volume / stats.volume) if stats.volume else stats.last),
            prevClosePrice=fmt_price(stats.prev_close, pd),
            lastPrice=fmt_price(stats.last, pd),
            lastQty=e8(qty),
            bidPrice=bid,
            bidQty=e8(qty),
            askPrice=ask,
            askQty=e8(qty),
        )
    out.update(openPrice=fmt_price(stats.open, pd), highPrice=fmt_price(stats.high, pd), lowPrice=fmt_price(stats.low, pd))
    if not full:
        out["lastPrice"] = fmt_price(stats.last, pd)
    out.update(
        volume=fmt_qty(stats.volume, qd),
        quoteVolume=e8(stats.quote_volume),
        openTime=stats.open_ms,
        closeTime=stats.close_ms,
        firstId=stats.last_trade_id - stats.trades + 1,
        lastId=stats.last_trade_id,
        count=stats.trades,
    )
    return out


def bid_ask(price: float, pd: int, spread_bps: float) -> tuple[str, str]:
    """``(bid, ask)`` strings ``spread_bps`` apart around ``price``, rounded outward to the tick
    ``10**-pd`` and at least one tick apart: the book the venue quotes and fills market orders at."""
    return _bid_ask(price, pd, spread_bps)


def _bid_ask(price: float, pd: int, spread_bps: float) -> tuple[str, str]:
    tick = 10.0**-pd
    half = price * spread_bps / 20_000.0
    bid = math.floor((price - half) / tick + 1e-9) * tick
    ask = math.ceil((price + half) / tick - 1e-9) * tick
    if ask - bid < tick * 0.5:
        ask = bid + tick
    return fmt_price(bid, pd), fmt_price(ask, pd)


def book_ticker(series: Series, now_ms: int, spread_bps: float) -> dict[str, Any]:
    """``ticker/bookTicker`` object: the best level each side of :func:`book_at` (see module docstring)."""
    book = book_at(series, now_ms, spread_bps)
    return {"symbol": series.symbol, "bidPrice": book.price(book.bid), "bidQty": book.qty, "askPrice": book.price(book.ask), "askQty": book.qty}


BOOK_LEVELS = 5000  # levels a side of the synthetic book (REST depth's largest limit)
BOOK_UPDATE_MS = 100  # the book changes only at multiples of this; update id = t_ms // BOOK_UPDATE_MS


def update_id(t_ms: int) -> int:
    """The synthetic book's update id at ``t_ms``: REST ``depth.lastUpdateId``, the ``u`` of
    ``bookTicker`` and of diff-depth events. Advances every :data:`BOOK_UPDATE_MS` of replay time."""
    return int(t_ms) // BOOK_UPDATE_MS


@dataclass(frozen=True)
class Book:
    """The synthetic book at one update id: a contiguous tick grid each side, one quantity everywhere.

    Attributes:
        pd, qd: price and quantity decimals (tick ``10**-pd``).
        bid, ask: best bid and ask in ticks (integers; ``bid * 10**-pd`` is the price).
        qty: every level's quantity, wire text (the current kline's average trade size).
    """

    pd: int
    qd: int
    bid: int
    ask: int
    qty: str

    def bids(self, levels: int = BOOK_LEVELS) -> range:
        """Bid levels in ticks, best first (descending; only positive prices)."""
        return range(self.bid, max(self.bid - levels, 0), -1)

    def asks(self, levels: int = BOOK_LEVELS) -> range:
        """Ask levels in ticks, best first (ascending)."""
        return range(self.ask, self.ask + levels)

    def price(self, ticks: int) -> str:
        return e8(round(ticks * 10.0**-self.pd, self.pd))


def book_at(series: Series, t_ms: int, spread_bps: float) -> Book:
    """The synthetic book as of update id ``update_id(t_ms)`` (its time rounded down to the update
    step): best bid/ask around the path price as :func:`bid_ask` quotes them, levels one tick apart
    outward, each with the current kline's average trade size (there are no recorded order books)."""
    t = update_id(t_ms) * BOOK_UPDATE_MS
    pd, qd = series.decimals(series.visible(t) - 1)
    bid_s, ask_s = _bid_ask(current_price(series, t), pd, spread_bps)
    scale = 10**pd
    return Book(pd, qd, round(float(bid_s) * scale), round(float(ask_s) * scale), e8(_avg_qty(series, t, qd)))


def depth(series: Series, now_ms: int, spread_bps: float, limit: int) -> dict[str, Any]:
    """REST ``depth``: the top ``limit`` levels a side of :func:`book_at`; ``lastUpdateId`` =
    :func:`update_id` (a diff-depth stream client can sequence its events against it)."""
    book = book_at(series, now_ms, spread_bps)
    return {
        "lastUpdateId": update_id(now_ms),
        "bids": [[book.price(k), book.qty] for k in book.bids(limit)],
        "asks": [[book.price(k), book.qty] for k in book.asks(limit)],
    }


def _minus(new: range, old: range) -> list[int]:
    """Ticks of grid ``new`` not in grid ``old`` (both contiguous): O(the difference), not O(levels)."""
    if not len(new):
        return []
    lo1, hi1 = min(new[0], new[-1]), max(new[0], new[-1])
    if not len(old):
        return list(range(lo1, hi1 + 1))
    lo0, hi0 = min(old[0], old[-1]), max(old[0], old[-1])
    return [*range(lo1, min(hi1, lo0 - 1) + 1), *range(max(lo1, hi0 + 1), hi1 + 1)]


def _side_diff(old: range, new: range, old_book: Book, new_book: Book, same: bool) -> list[list[str]]:
    """Levels to set (absolute quantity) and remove (``"0.00000000"``) to turn side ``old`` into ``new``."""
    added = _minus(new, old) if same else list(new)
    out = [[new_book.price(k), new_book.qty] for k in added]
    out += [[old_book.price(k), "0.00000000"] for k in _minus(old, new)]
    return out


def depth_diff(series: Series, t0_ms: int, t1_ms: int, spread_bps: float) -> tuple[list[list[str]], list[list[str]]]:
    """``(bids, asks)`` of a ``depthUpdate`` taking the book from update id ``update_id(t0)`` to
    ``update_id(t1)`` (Binance "Diff. Depth Stream": absolute quantities, 0 removes a level).
    When only the grid moved, only the levels that entered or left it (O(ticks moved)); when the
    quantity or the tick changed, every level."""
    a, b = book_at(series, t0_ms, spread_bps), book_at(series, t1_ms, spread_bps)
    same = (a.pd, a.qty) == (b.pd, b.qty)
    if same and (a.bid, a.ask) == (b.bid, b.ask):
        return [], []
    return _side_diff(a.bids(), b.bids(), a, b, same), _side_diff(a.asks(), b.asks(), a, b, same)


def _tape_at(series: Series, t_ms: int) -> tuple[int, float]:
    """``(trades, base volume)`` accrued from the start of the data up to ``t_ms`` (pro rata inside
    the kline, trades floored as a forming kline's ``n`` is)."""
    i = series.visible(t_ms) - 1
    if i < 0:
        return 0, 0.0
    data = series.data
    before_n = int(data.trades_cumsum[i - 1]) if i > 0 else 0
    before_v = float(data.volume_cumsum[i - 1]) if i > 0 else 0.0
    f = _frac(series, i, t_ms)
    v = series.values[:, i]
    return before_n + math.floor(float(v[TRADES]) * f + 1e-9), before_v + float(v[VOLUME]) * f


def trade_tape(series: Series, t0_ms: int, t1_ms: int) -> tuple[int, int, float, float, bool] | None:
    """The synthetic trade print of ``(t0, t1]`` on the intrabar path (there are no recorded trades):
    ``(first trade id, last trade id, base quantity, price at t1, buyer is maker)``, or None when
    no trade happened. Trade ids are the running trade counts the kline events report (``f``/``L``),
    the quantity the path's pro-rata volume, the side from the path's direction (a falling price
    prints as sells: buyer is maker)."""
    n0, v0 = _tape_at(series, t0_ms)
    n1, v1 = _tape_at(series, t1_ms)
    if n1 <= n0 or v1 <= v0:
        return None
    p0, p1 = current_price(series, t0_ms), current_price(series, t1_ms)
    return n0 + 1, n1, v1 - v0, p1, p1 < p0


def avg_price(series: Series, now_ms: int) -> dict[str, Any]:
    """``avgPrice`` object: the time-average of the path over the last :data:`AVG_PRICE_MINS` minutes
    (:func:`path_mean`; Binance averages its trades over that window). PERCENT_PRICE_BY_SIDE and a
    MARKET order's NOTIONAL are checked against this same value."""
    mean = path_mean(series, now_ms - AVG_PRICE_MINS * _MINUTE, now_ms)
    return {"mins": AVG_PRICE_MINS, "price": e8(mean), "closeTime": now_ms}


def symbol_info(series: Series, now_ms: int) -> dict[str, Any]:
    """One ``exchangeInfo`` symbol with Binance's spot filter list, sizes from the data up to now.

    Filters (Binance "Filters" documentation): PRICE_FILTER (tick = 10**-price decimals so far,
    maxPrice 1000 x the highest high so far), LOT_SIZE (step = 10**-quantity decimals so far),
    ICEBERG_PARTS 10, MARKET_LOT_SIZE (maxQty = the largest kline volume so far), TRAILING_DELTA
    10-2000, PERCENT_PRICE_BY_SIDE 0.2-5 over 5 minutes, NOTIONAL min 5 USDT, MAX_NUM_ORDERS 200,
    MAX_NUM_ALGO_ORDERS 5 (the values Binance lists for its major USDT pairs).
    """
    base, quote = split_symbol(series.symbol)
    upto = max(series.visible(now_ms) - 1, 0)
    pd, qd = series.decimals(upto)
    tick = e8(10.0**-pd)
    step = e8(10.0**-qd)
    max_price = e8(round(float(series.values[HIGH, : upto + 1].max()) * 1000, pd))
    max_market = fmt_qty(float(series.values[VOLUME, : upto + 1].max()), qd)
    return {
        "symbol": series.symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": False,  # not implemented: clients read this and do not try
        "ocoAllowed": True,
        "otoAllowed": False,  # OTO / OTOCO lists not implemented
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,  # trailingDelta not implemented
        "cancelReplaceAllowed": True,
        "amendAllowed": False,
        "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": max_price, "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00000000", "stepSize": step},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": max_market, "stepSize": "0.00000000"},
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": AVG_PRICE_MINS,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": AVG_PRICE_MINS,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }
