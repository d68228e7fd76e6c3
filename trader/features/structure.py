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

:func:`structure_features` returns, per symbol, the values at the last kline.
"""

from __future__ import annotations

import numpy as np

__all__ = ["StructureFeatures", "structure_features", "swing_points"]

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


def _suffix_after(x: np.ndarray, fn: np.ufunc, fill: float) -> np.ndarray:
    """``fn``-accumulate of ``x[:, t+1:]`` for each t (``fill`` when empty)."""
    rev = fn.accumulate(x[:, ::-1], axis=1)[:, ::-1]
    out = np.full(x.shape, fill)
    out[:, :-1] = rev[:, 1:]
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


def structure_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    swing_length: int = 5,
    sweep_bars: int = 3,
) -> StructureFeatures:
    """Structure state, BOS/CHoCH, unmitigated order blocks, unfilled FVGs and recent sweeps.

    Args:
        open_, high, low, close: ``(n_symbols, T)`` float64, oldest first.
        swing_length: ``k`` of the swing-point definition (klines each side).
        sweep_bars: a sweep counts if it happened within the last ``sweep_bars`` klines.

    Returns:
        ``{name: (n_symbols,)}`` at the last kline: ``state`` (+1/0/-1), ``bars_since_bos``
        (klines, ``T`` if none), ``choch`` (1.0 if the last BOS changed the state), ``ob_bull``,
        ``ob_bear`` (unmitigated order blocks), ``fvg_bull``, ``fvg_bear`` (unfilled gaps),
        ``sweep`` (+1 bullish, -1 bearish, 0 none, most recent wins).
    """
    n, T = close.shape
    k = swing_length
    sh, sl = swing_points(high, low, k)
    # a swing at i is known from i + k on: shift the masks right by k
    known_h = np.zeros_like(sh)
    known_l = np.zeros_like(sl)
    known_h[:, k:] = sh[:, : T - k]
    known_l[:, k:] = sl[:, : T - k]
    bull_bos, active_h, lvl_h = _first_breaks(close, high, known_h, k, above=True)
    bear_bos, active_l, lvl_l = _first_breaks(close, low, known_l, k, above=False)
    tcols = np.arange(T)
    last_bull = np.maximum.accumulate(np.where(bull_bos, tcols, -1), axis=1)[:, -1]
    last_bear = np.maximum.accumulate(np.where(bear_bos, tcols, -1), axis=1)[:, -1]
    state = np.where(last_bull > last_bear, 1.0, np.where(last_bear > last_bull, -1.0, 0.0))
    last_bos = np.maximum(last_bull, last_bear)
    # CHoCH: the BOS before the last one pointed the other way
    any_bos = bull_bos | bear_bos
    prev_idx = _last_index(any_bos)[np.arange(n), np.maximum(last_bos, 0)]
    prev_dir = np.where(prev_idx >= 0, np.where(bull_bos[np.arange(n), np.maximum(prev_idx, 0)], 1.0, -1.0), 0.0)
    choch = ((last_bos >= 0) & (prev_dir != 0) & (prev_dir != state)).astype(float)
    # sweeps in the last bars, against the levels still active (not yet broken)
    recent = slice(max(T - sweep_bars, 0), T)
    sw_bear = active_h[:, recent] & (high[:, recent] > lvl_h[:, recent]) & (close[:, recent] < lvl_h[:, recent])
    sw_bull = active_l[:, recent] & (low[:, recent] < lvl_l[:, recent]) & (close[:, recent] > lvl_l[:, recent])
    width = recent.stop - recent.start
    pos = np.arange(width)
    last_bear_sw = np.where(sw_bear, pos, -1).max(axis=1, initial=-1)
    last_bull_sw = np.where(sw_bull, pos, -1).max(axis=1, initial=-1)
    sweep = np.where(last_bull_sw > last_bear_sw, 1.0, np.where(last_bear_sw > last_bull_sw, -1.0, 0.0))

    # order blocks: gather the last opposite candle before each BOS, test mitigation with suffix extremes
    last_down = _last_index(close < open_)
    last_up = _last_index(close > open_)
    min_close_after = _suffix_after(close, np.minimum, np.inf)
    max_close_after = _suffix_after(close, np.maximum, -np.inf)
    jd = np.where(last_down >= 0, last_down, 0)
    ju = np.where(last_up >= 0, last_up, 0)
    ob_bull = bull_bos & (last_down >= 0) & ~(min_close_after < np.take_along_axis(low, jd, axis=1))
    ob_bear = bear_bos & (last_up >= 0) & ~(max_close_after > np.take_along_axis(high, ju, axis=1))

    # fair value gaps
    fvg_bull = np.zeros((n, T), dtype=bool)
    fvg_bear = np.zeros((n, T), dtype=bool)
    if T >= 3:
        bull = low[:, 2:] > high[:, :-2]
        bear = high[:, 2:] < low[:, :-2]
        min_low_after = _suffix_after(low, np.minimum, np.inf)[:, 2:]
        max_high_after = _suffix_after(high, np.maximum, -np.inf)[:, 2:]
        fvg_bull[:, 2:] = bull & ~(min_low_after <= high[:, :-2])
        fvg_bear[:, 2:] = bear & ~(max_high_after >= low[:, :-2])

    return {
        "state": state,
        "bars_since_bos": np.where(last_bos >= 0, T - 1 - last_bos, T).astype(float),
        "choch": choch,
        "ob_bull": ob_bull.sum(axis=1).astype(float),
        "ob_bear": ob_bear.sum(axis=1).astype(float),
        "fvg_bull": fvg_bull.sum(axis=1).astype(float),
        "fvg_bear": fvg_bear.sum(axis=1).astype(float),
        "sweep": sweep,
    }
