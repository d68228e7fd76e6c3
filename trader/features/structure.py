"""Market-structure features from the smart-money-concepts family, vectorised over symbols.

Definitions (after the ICT "smart money concepts" vocabulary as implemented by the
``smartmoneyconcepts`` Python package — functions ``swing_highs_lows``, ``bos_choch``, ``ob``,
``fvg``, ``liquidity`` — simplified to what can be computed causally, i.e. using only klines up to
each bar). Inputs are ``(n_symbols, T)`` float64 arrays, oldest first; ``k`` = ``swing_length``.

- **Swing high** at ``i``: ``high[i]`` is strictly above the ``k`` highs before it and at least the
  ``k`` highs after it; it becomes *known* at ``i + k`` (no look-ahead). Swing low mirrored.
- **Break of structure (BOS)**: a close above the latest known, not yet broken swing high is a
  bullish BOS (the level is then consumed); a close below the latest known swing low is bearish.
  The **market structure state** is the direction of the latest BOS (+1 / -1, 0 before any). A BOS
  against the previous state is a **change of character (CHoCH)**.
- **Order block (OB)**: for a bullish BOS at ``t``, the last down-close candle (close < open)
  before ``t``; its zone is that candle's [low, high]. It stays *unmitigated* until a later close
  falls below its low. Bearish OB mirrored (last up-close candle before a bearish BOS, mitigated
  by a close above its high).
- **Fair value gap (FVG)**: bullish at ``i`` when ``low[i] > high[i-2]`` (a gap the middle candle
  left); it stays *unfilled* until a later low reaches ``high[i-2]``. Bearish when
  ``high[i] < low[i-2]``, filled when a later high reaches ``low[i-2]``.
- **Liquidity sweep**: a bar whose high trades above the latest known swing high but closes back
  below it takes buy-side liquidity (bearish, -1); a low below the latest swing low with a close
  back above it is a bullish sweep (+1).

Every feature is computed for every kline at once (:func:`structure_series`, ``(n_symbols, T)``,
O(T) numpy work: no loop over time) and is *causal*: its value at kline ``t`` uses klines ``<= t``
only (a test appends wild klines and checks that nothing before them moves). Counts and states look
back over a ``window`` of klines (``scan.structure_window``): an order block, gap or break of
structure older than that no longer counts. :func:`structure_features` is the last column — what a
scan scores — so the scanner and the ML dataset share one implementation.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["STRUCTURE_KEYS", "StructureFeatures", "structure_features", "structure_series", "swing_points"]

StructureFeatures = dict[str, np.ndarray]


def swing_points(high: np.ndarray, low: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(n, T)`` masks of swing highs and swing lows (at the swing bar itself). Pure."""
    n, T = high.shape
    sh = np.zeros((n, T), dtype=bool)
    sl = np.zeros((n, T), dtype=bool)
    if T < 2 * k + 1:
        return sh, sl
    c = slice(k, T - k)  # candidate bars with k neighbours each side
    ch, cl = high[:, c], low[:, c]
    left_h = right_h = np.full(ch.shape, -np.inf)
    left_l = right_l = np.full(cl.shape, np.inf)
    for j in range(1, k + 1):  # shifted contiguous slices: 4k cheap ufunc calls, no strided windows
        left_h = np.maximum(left_h, high[:, k - j : T - k - j])
        right_h = np.maximum(right_h, high[:, k + j : T - k + j])
        left_l = np.minimum(left_l, low[:, k - j : T - k - j])
        right_l = np.minimum(right_l, low[:, k + j : T - k + j])
    sh[:, c] = (ch > left_h) & (ch >= right_h)
    sl[:, c] = (cl < left_l) & (cl <= right_l)
    return sh, sl


def _last_index(mask: np.ndarray) -> np.ndarray:
    """For each (row, t): index of the latest True strictly before t, or -1."""
    n, T = mask.shape
    idx = np.where(mask, np.arange(T), -1)
    run = np.maximum.accumulate(idx, axis=1)
    out = np.full((n, T), -1)
    out[:, 1:] = run[:, :-1]
    return out


def _first_breaks(
    close: np.ndarray, extreme: np.ndarray, known: np.ndarray, k: int, *, above: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BOS events against swing levels, without a loop over time.

    Each known swing starts a *segment* (until the next one becomes known) in which its level is the
    reference; the BOS is the first close beyond it inside the segment, after which the level is
    consumed. Returns ``(bos (n, T) bool, level_active (n, T) bool, level (n, T) float)``.
    """
    T = close.shape[1]
    tcols = np.arange(T)
    seg = np.maximum.accumulate(np.where(known, tcols, -1), axis=1)  # index where the segment began
    src = np.clip(seg - k, 0, T - 1)  # the swing bar itself (known k bars later)
    level = np.where(seg >= 0, np.take_along_axis(extreme, src, axis=1), np.nan)
    with np.errstate(invalid="ignore"):
        cross = (close > level) if above else (close < level)
    cs = np.cumsum(cross, axis=1)
    before_seg = np.where(seg > 0, np.take_along_axis(cs, np.maximum(seg - 1, 0), axis=1), 0)
    count: np.ndarray = cs - before_seg  # crosses so far inside this segment, including t
    bos = cross & (count == 1)
    active: np.ndarray = (count - cross) == 0  # no break yet before t in this segment
    return bos, active & (seg >= 0), level


def _latest(mask: np.ndarray) -> np.ndarray:
    """For each (row, t): index of the latest True at or before t, or -1."""
    return np.maximum.accumulate(np.where(mask, np.arange(mask.shape[1]), -1), axis=1)


def _counted_in_window(events: np.ndarray, ends: np.ndarray, rows: np.ndarray, T: int, window: int) -> np.ndarray:
    """``(n, T)`` number of events at ``t`` with ``t - window < start <= t`` and ``end > t``.

    ``events``/``ends`` are the start and end columns of each event (its row in ``rows``): an event
    counts from its start until it ends (mitigated, filled) or leaves the window.
    """
    n = int(rows.max()) + 1 if rows.size else 0
    out = np.zeros((max(n, 1), T + window + 1))
    stop = np.minimum(ends, events + window)
    np.add.at(out, (rows, events), 1.0)
    np.add.at(out, (rows, stop), -1.0)
    return np.cumsum(out, axis=1)[:, :T]


def _first_cross_after(values: np.ndarray, rows: np.ndarray, starts: np.ndarray, level: np.ndarray, window: int, *, below: bool) -> np.ndarray:
    """Column of the first ``values[row, m] < level`` (``below``) or ``>= level`` with
    ``start < m < start + window``; ``start + window`` when there is none. One strided gather."""
    n, T = values.shape
    if starts.size == 0:
        return starts.copy()
    fill = np.inf if below else -np.inf
    padded = np.full((n, T + window), fill)
    padded[:, :T] = values
    span = sliding_window_view(padded, window - 1, axis=1)  # (n, T + 2, window - 1) view, no copy
    out = np.empty_like(starts)
    step = max(1, (1 << 21) // (window - 1))  # gather at most ~2 M values (16 MB) at a time
    for a in range(0, starts.size, step):
        b = min(a + step, starts.size)
        ahead = span[rows[a:b], starts[a:b] + 1]  # (E, window - 1): the klines after each event
        hit = ahead < level[a:b, None] if below else ahead >= level[a:b, None]
        first = np.argmax(hit, axis=1)
        out[a:b] = np.where(hit.any(axis=1), starts[a:b] + 1 + first, starts[a:b] + window)
    return out


#: Keys of :func:`structure_series` / :func:`structure_features`.
STRUCTURE_KEYS = (
    "state", "bars_since_bos", "choch", "ob_bull", "ob_bear", "fvg_bull", "fvg_bear", "sweep",
    "swing_high", "swing_low", "bos_bull", "bos_bear",
)


def structure_series(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    swing_length: int = 5,
    window: int = 120,
    sweep_bars: int = 3,
) -> StructureFeatures:
    """Structure state, BOS/CHoCH, unmitigated order blocks, unfilled FVGs and sweeps at every kline.

    Args:
        open_, high, low, close: ``(n_symbols, T)`` float64, oldest first (quote-asset prices).
        swing_length: ``k`` of the swing-point definition (klines each side).
        window: klines an event (BOS, order block, gap) keeps counting for.
        sweep_bars: a sweep counts if it happened within the last ``sweep_bars`` klines.

    Returns:
        ``{name: (n_symbols, T)}``, causal (value at ``t`` from klines ``<= t``):
        ``state`` (+1/0/-1: direction of the latest BOS within ``window``), ``bars_since_bos``
        (klines since it, ``window`` if none), ``choch`` (1.0 if it reversed the BOS before it),
        ``ob_bull``/``ob_bear`` (order blocks formed within ``window``, not yet mitigated),
        ``fvg_bull``/``fvg_bear`` (gaps formed within ``window``, not yet filled), ``sweep`` (+1
        bullish, -1 bearish, 0 none; most recent wins), ``swing_high``/``swing_low`` (price of the
        latest *known* swing high / low, NaN before the first), ``bos_bull``/``bos_bear`` (bullish /
        bearish BOS events within ``window``).

    Raises:
        ValueError: never for well-shaped input; shapes must agree (numpy broadcasting errors otherwise).
    """
    n, T = close.shape
    k = swing_length
    w = max(int(window), 2)
    tcols = np.arange(T)
    sh, sl = swing_points(high, low, k)
    # a swing at i is known from i + k on: shift the masks right by k
    known_h = np.zeros_like(sh)
    known_l = np.zeros_like(sl)
    known_h[:, k:] = sh[:, : T - k]
    known_l[:, k:] = sl[:, : T - k]
    bull_bos, active_h, lvl_h = _first_breaks(close, high, known_h, k, above=True)
    bear_bos, active_l, lvl_l = _first_breaks(close, low, known_l, k, above=False)

    def in_window(idx: np.ndarray) -> np.ndarray:
        return np.where((idx >= 0) & (tcols - idx < w), idx, -1)

    last_bull = in_window(_latest(bull_bos))
    last_bear = in_window(_latest(bear_bos))
    state = np.sign(last_bull - last_bear).astype(float)
    last_bos = np.maximum(last_bull, last_bear)
    bars_since = np.where(last_bos >= 0, tcols - last_bos, w).astype(float)
    # CHoCH: the BOS before the latest one (within the window too) pointed the other way
    any_bos = bull_bos | bear_bos
    prev = np.take_along_axis(_last_index(any_bos), np.maximum(last_bos, 0), axis=1)
    prev_ok = (last_bos >= 0) & (prev >= 0) & (tcols - prev < w)
    prev_dir = np.where(np.take_along_axis(bull_bos, np.maximum(prev, 0), axis=1), 1.0, -1.0)
    choch = (prev_ok & (prev_dir != state)).astype(float)
    # sweeps of levels still active (not yet broken); the most recent within sweep_bars wins
    with np.errstate(invalid="ignore"):
        sw_bear = active_h & (high > lvl_h) & (close < lvl_h)
        sw_bull = active_l & (low < lvl_l) & (close > lvl_l)
    recent = max(int(sweep_bars), 1)
    lb = _latest(sw_bull)
    lr = _latest(sw_bear)
    lb = np.where((lb >= 0) & (tcols - lb < recent), lb, -1)
    lr = np.where((lr >= 0) & (tcols - lr < recent), lr, -1)
    sweep = np.sign(lb - lr).astype(float)

    # order blocks: the last opposite candle before each BOS; mitigated by a later close beyond it
    last_down = _last_index(close < open_)
    last_up = _last_index(close > open_)
    r_b, j_b = np.nonzero(bull_bos & (last_down >= 0))
    lvl_b = low[r_b, last_down[r_b, j_b]]
    end_b = _first_cross_after(close, r_b, j_b, lvl_b, w, below=True)
    r_s, j_s = np.nonzero(bear_bos & (last_up >= 0))
    lvl_s = -high[r_s, last_up[r_s, j_s]]
    end_s = _first_cross_after(-close, r_s, j_s, lvl_s, w, below=True)

    # fair value gaps, filled by a later low (high) reaching the far side of the gap
    r_fb, i_fb = np.nonzero(np.pad(low[:, 2:] > high[:, :-2], ((0, 0), (2, 0))))
    end_fb = _first_cross_after(-low, r_fb, i_fb, -high[r_fb, i_fb - 2], w, below=False)
    r_fs, i_fs = np.nonzero(np.pad(high[:, 2:] < low[:, :-2], ((0, 0), (2, 0))))
    end_fs = _first_cross_after(high, r_fs, i_fs, low[r_fs, i_fs - 2], w, below=False)

    def counts(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        out = np.zeros((n, T))
        if rows.size:
            c = _counted_in_window(starts, ends, rows, T, w)
            out[: c.shape[0]] = c
        return out

    # latest known swing levels (the swing bar is k klines before it became known)
    kh = _latest(known_h)
    kl = _latest(known_l)
    swing_high = np.where(kh >= 0, np.take_along_axis(high, np.maximum(kh - k, 0), axis=1), np.nan)
    swing_low = np.where(kl >= 0, np.take_along_axis(low, np.maximum(kl - k, 0), axis=1), np.nan)

    def rolling_count(mask: np.ndarray) -> np.ndarray:
        cs = np.cumsum(mask, axis=1, dtype=np.float64)
        out = cs.copy()
        out[:, w:] -= cs[:, :-w]
        return out

    return {
        "state": state,
        "bars_since_bos": bars_since,
        "choch": choch,
        "ob_bull": counts(r_b, j_b, end_b),
        "ob_bear": counts(r_s, j_s, end_s),
        "fvg_bull": counts(r_fb, i_fb, end_fb),
        "fvg_bear": counts(r_fs, i_fs, end_fs),
        "sweep": sweep,
        "swing_high": swing_high,
        "swing_low": swing_low,
        "bos_bull": rolling_count(bull_bos),
        "bos_bear": rolling_count(bear_bos),
    }


def structure_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    swing_length: int = 5,
    sweep_bars: int = 3,
    window: int = 120,
) -> StructureFeatures:
    """:func:`structure_series` at the last kline only: ``{name: (n_symbols,)}`` (what a scan scores)."""
    series = structure_series(open_, high, low, close, swing_length, window, sweep_bars)
    return {name: v[:, -1].copy() for name, v in series.items()}
