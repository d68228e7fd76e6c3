"""Core value types shared by every layer: the kline block layout, intervals, symbols.

**One kline shape.** Everywhere in `trader` (REST parsing, the store, live rings, features,
benchmarks, the replay venue) a run of klines is a *kline block*: a C-contiguous ``(11, n)``
float64 array whose rows are the fields below, in Binance's ``/api/v3/klines`` array order (Binance
spot REST API, "Market Data endpoints" — "Kline/Candlestick data"; the 12th field, "ignore", is
dropped), oldest kline first. One kline on its own is the ``(11,)`` column of a block. Rows are
addressed by the named constants of this module, never by bare numbers::

    close = block[CLOSE]            # (n,) quote-asset prices
    ohlcvq = block[list(OHLCVQ)]    # (6, n): what the features read

Times are integer epoch milliseconds (UTC), named ``*_ms``; they are exact in float64 (below 2**53).
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np

from trader.errors import ConfigError, InvalidKlinesError

__all__ = [
    "BINANCE_INTERVALS",
    "CLOSE",
    "CLOSE_TIME",
    "HIGH",
    "KLINE_COLUMNS",
    "KLINE_FIELDS",
    "LOW",
    "N_FIELDS",
    "OHLCVQ",
    "OPEN",
    "OPEN_TIME",
    "QUOTE_VOLUME",
    "TAKER_BUY_BASE_VOLUME",
    "TAKER_BUY_QUOTE_VOLUME",
    "TRADES",
    "VOLUME",
    "check_klines",
    "duration_ms",
    "empty_klines",
    "interval_ms",
    "kline_open_ms",
    "parse_interval",
    "validate_symbol",
]

#: Row order of a kline block and of Binance's kline array (the 12th, "ignore", dropped).
KLINE_COLUMNS: Final[tuple[str, ...]] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
#: Field name -> row index of a kline block.
KLINE_FIELDS: Final[dict[str, int]] = {name: i for i, name in enumerate(KLINE_COLUMNS)}
#: Number of rows of a kline block.
N_FIELDS: Final[int] = len(KLINE_COLUMNS)

OPEN_TIME: Final[int] = 0  #: open time, epoch ms
OPEN: Final[int] = 1  #: open price, quote asset
HIGH: Final[int] = 2  #: high price, quote asset
LOW: Final[int] = 3  #: low price, quote asset
CLOSE: Final[int] = 4  #: close price, quote asset
VOLUME: Final[int] = 5  #: base-asset volume
CLOSE_TIME: Final[int] = 6  #: close time, epoch ms (= open_time + interval - 1)
QUOTE_VOLUME: Final[int] = 7  #: quote-asset volume
TRADES: Final[int] = 8  #: number of trades
TAKER_BUY_BASE_VOLUME: Final[int] = 9  #: taker-buy base-asset volume
TAKER_BUY_QUOTE_VOLUME: Final[int] = 10  #: taker-buy quote-asset volume

#: The rows the features read, in this order: open, high, low, close, volume, quote_volume.
OHLCVQ: Final[tuple[int, ...]] = (OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME)

_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
#: Binance weekly klines open on Monday 00:00 UTC; 1970-01-01 was a Thursday, so weeks start 4 days in.
WEEK_OFFSET_MS: Final[int] = 4 * _DAY

#: Every kline interval Binance spot accepts, with its length in ms. "1M" (calendar month)
#: has no fixed length and is accepted by the exchange but not by the store.
#: Source: Binance spot REST API, "ENUM definitions" — "Kline/Candlestick chart intervals".
BINANCE_INTERVALS: Final[dict[str, int | None]] = {
    "1s": 1_000,
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": _HOUR,
    "2h": 2 * _HOUR,
    "4h": 4 * _HOUR,
    "6h": 6 * _HOUR,
    "8h": 8 * _HOUR,
    "12h": 12 * _HOUR,
    "1d": _DAY,
    "3d": 3 * _DAY,
    "1w": 7 * _DAY,
    "1M": None,
}

_SYMBOL_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")


def empty_klines() -> np.ndarray:
    """An empty kline block, ``(11, 0)`` float64."""
    return np.empty((N_FIELDS, 0), dtype=np.float64)


def parse_interval(value: str) -> str:
    """Validate a kline interval string such as ``"1h"``.

    Args:
        value: interval as Binance spells it (case-sensitive: ``"1m"`` is a minute, ``"1M"`` a month).

    Returns:
        The same string.

    Raises:
        ConfigError: if Binance does not know the interval, or it has no fixed length ("1M").
    """
    if value not in BINANCE_INTERVALS:
        raise ConfigError(f"invalid interval {value!r}; expected one of {', '.join(BINANCE_INTERVALS)}")
    if BINANCE_INTERVALS[value] is None:
        raise ConfigError(f"interval {value!r} has no fixed length and cannot be stored")
    return value


def interval_ms(interval: str) -> int:
    """Length of one kline of ``interval`` in milliseconds (``"1h"`` -> 3_600_000).

    Raises:
        ConfigError: for an unknown or variable-length interval.
    """
    ms = BINANCE_INTERVALS.get(parse_interval(interval))
    assert ms is not None
    return ms


_DURATION_UNITS: Final[dict[str, int]] = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration_ms(text: str) -> int:
    """A duration such as ``"4h"``, ``"24h"``, ``"7d"``, ``"90m"``, ``"2w"`` in milliseconds. Pure.

    Raises:
        ConfigError: not a positive integer followed by one of m, h, d, w.
    """
    t = str(text).strip()
    unit = _DURATION_UNITS.get(t[-1:])
    if unit is None or not t[:-1].isdigit() or int(t[:-1]) <= 0:
        raise ConfigError(f"invalid duration {text!r}; expected e.g. 4h, 24h, 7d, 90m, 2w")
    return int(t[:-1]) * unit


def kline_open_ms(t_ms: int, interval: str) -> int:
    """Open time of the ``interval`` kline that contains ``t_ms`` (epoch ms). Pure.

    Boundaries are UTC multiples of the interval since the epoch, except ``1w``, which opens on
    Monday 00:00 UTC (Binance's weekly klines). ``3d`` is taken as epoch-aligned too.
    """
    step = interval_ms(interval)
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    return ((int(t_ms) - offset) // step) * step + offset


def check_klines(block: np.ndarray, interval: str, where: str = "") -> None:
    """Raise unless ``block`` is a well-formed kline block of ``interval``. Pure.

    Checks: shape ``(11, n)`` float64; open times strictly increasing and on ``interval``
    boundaries; ``close_time = open_time + interval - 1`` (Binance's definition); every value finite.

    Raises:
        InvalidKlinesError: naming ``where`` (e.g. ``"BTCUSDT 1h"``) and the first violation.
    """
    prefix = f"{where}: " if where else ""
    if block.ndim != 2 or block.shape[0] != N_FIELDS or block.dtype != np.float64:
        raise InvalidKlinesError(f"{prefix}expected a ({N_FIELDS}, n) float64 kline block, got {block.dtype} {block.shape}")
    if block.shape[1] == 0:
        return
    step = interval_ms(interval)
    if not np.isfinite(block).all():
        raise InvalidKlinesError(f"{prefix}klines contain non-finite values")
    ot = block[OPEN_TIME]
    if not np.array_equal(block[CLOSE_TIME] - ot, np.full(ot.shape[0], step - 1.0)):
        raise InvalidKlinesError(f"{prefix}close_time must equal open_time + {step - 1} ms")
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    if ((ot - offset) % step).any():
        raise InvalidKlinesError(f"{prefix}open_time is not on a {interval} boundary")
    if ot.shape[0] > 1 and not bool(np.all(ot[1:] > ot[:-1])):
        raise InvalidKlinesError(f"{prefix}open times are not strictly increasing")


def validate_symbol(value: str) -> str:
    """Normalise and validate a symbol: upper-case, 1-20 of ``A-Z 0-9 - _ .``.

    The pattern is the one Binance reports in its -1100 error for the ``symbol`` parameter.

    Args:
        value: symbol in any case, e.g. ``"btcusdt"``.

    Returns:
        The upper-case symbol, e.g. ``"BTCUSDT"``.

    Raises:
        ConfigError: if the symbol contains other characters or is empty/too long.
    """
    symbol = value.strip().upper()
    if not _SYMBOL_RE.match(symbol):
        raise ConfigError(f"invalid symbol {value!r}: expected 1-20 characters of A-Z, 0-9, '-', '_', '.'")
    return symbol
