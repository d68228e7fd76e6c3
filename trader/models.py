"""Core value types shared by every layer: intervals, kline columns, symbols.

Kline columns follow Binance's `/api/v3/klines` array order (Binance spot REST API,
"Market Data endpoints" — "Kline/Candlestick data"), in their standard long names.
Times are integer epoch milliseconds (UTC) named ``*_ms``.
"""

from __future__ import annotations

import re
from typing import Final

from trader.errors import ConfigError

__all__ = [
    "BINANCE_INTERVALS",
    "KLINE_COLUMNS",
    "KLINE_FIELDS",
    "interval_ms",
    "parse_interval",
    "validate_symbol",
]

#: Column order of a stored kline row and of Binance's kline array (the 12th, "ignore", dropped).
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
#: Column name -> index into a kline row.
KLINE_FIELDS: Final[dict[str, int]] = {name: i for i, name in enumerate(KLINE_COLUMNS)}

_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

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
