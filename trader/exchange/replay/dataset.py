"""Recorded klines served by the replay exchange.

A data directory holds one file per (symbol, interval), named ``<SYMBOL>-<interval>.csv.gz``
(or ``.csv``), with the header ``open_time,open,high,low,close,volume,close_time,quote_volume,
trades,taker_buy_base,taker_buy_quote`` (the format of the bundled Binance data; see
``trader/data/binance/README.md``).

Series are parsed lazily on first use and kept in memory: the open times as an ``int64`` array
for ``searchsorted``, the numeric columns as a ``(n_klines, 11)`` float64 array (for the forming
candle and the 24h ticker), and every closed row pre-rendered as the exact JSON bytes Binance
sends (``[1714521600000,"60672.01000000",...,"0"]``: prices and volumes as strings with 8 decimals,
times and trade counts as integers, a trailing ``"0"`` for the unused field). Serving 1000 klines
is then one bytes join.

Symbol filters for ``exchangeInfo`` are derived from the data: tick size from the most decimals
any price has, step size from the most decimals any base volume has (:func:`decimals_of`).
"""

from __future__ import annotations

import gzip
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from trader.models import BINANCE_INTERVALS

__all__ = ["QUOTE_ASSETS", "ReplayDataset", "Series", "bundled_data_dir", "decimals_of", "split_symbol"]

#: Quote assets recognised when splitting a symbol into base and quote asset (longest first).
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")

_HEADER = b"open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"


def bundled_data_dir() -> Path:
    """Directory of the real Binance klines shipped inside the package (96 USDT pairs, 1h and 4h)."""
    return Path(str(resources.files("trader") / "data" / "binance"))


def _pad8(field: bytes) -> bytes:
    """Render a decimal string the way Binance does: exactly 8 decimals (``b"59590"`` -> ``b"59590.00000000"``)."""
    if b"." in field:
        whole, frac = field.split(b".", 1)
        if len(frac) > 8:  # only float-noise digits of quote volumes; round half-even like Decimal
            from decimal import ROUND_HALF_EVEN, Decimal

            return str(Decimal(field.decode()).quantize(Decimal("0.00000001"), ROUND_HALF_EVEN)).encode()
        return whole + b"." + frac + b"0" * (8 - len(frac))
    return field + b".00000000"


def decimals_of(x: np.ndarray) -> int:
    """Fewest decimals (0-8) that represent every value of ``x`` exactly, judged within 2 ulps.

    The values were parsed from decimal strings with at most 8 decimals, so ``x * 10**d`` is an
    integer up to float rounding (relative error below 4e-16) exactly when ``d`` is enough.
    """
    for d in range(9):
        y = x * 10.0**d
        if np.all(np.abs(y - np.round(y)) <= np.abs(y) * 4e-16 + 1e-9):
            return d
    return 8


class Series:
    """One recorded (symbol, interval) series.

    Attributes:
        symbol: e.g. ``"BTCUSDT"``.
        interval: e.g. ``"1h"``.
        interval_ms: kline length in ms.
        open_time_ms: ``(n_klines,)`` int64, strictly increasing.
        values: ``(n_klines, 11)`` float64 in :data:`trader.models.KLINE_COLUMNS` order.
        price_decimals: most decimals in open/high/low/close (tick size = 10**-price_decimals).
        qty_decimals: most decimals in base volumes (step size = 10**-qty_decimals).
        trades_cumsum: ``(n_klines,)`` int64 running total of trades, used as trade ids.

    The exact Binance JSON of the closed rows is rendered from the original text on first use
    (:meth:`rows_json`), since most series are only ever asked for their numbers (tickers).
    """

    def __init__(self, symbol: str, interval: str, body: list[bytes], source: str) -> None:
        n = len(body)
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = int(BINANCE_INTERVALS[interval] or 0)
        self._body: list[bytes] | None = body
        self._source = source
        self._lock = threading.Lock()
        self._rows: bytes | None = None
        self._offsets: np.ndarray | None = None
        try:
            values = np.array(b",".join(body).split(b","), dtype=np.float64).reshape(n, 11)
        except ValueError:
            bad = next((i for i, ln in enumerate(body) if ln.count(b",") != 10), None)
            where = f"{source}:{bad + 2}" if bad is not None else source
            raise ValueError(f"{where}: malformed kline row (expected 11 numeric fields)") from None
        self.values = values
        self.open_time_ms = values[:, 0].astype(np.int64)
        if n > 1 and (np.diff(self.open_time_ms) <= 0).any():
            raise ValueError(f"{source}: open_time is not strictly increasing")
        self.price_decimals = decimals_of(values[:, 1:5])
        self.qty_decimals = decimals_of(values[:, [5, 9]])
        self.trades_cumsum = np.cumsum(values[:, 8].astype(np.int64))

    def __len__(self) -> int:
        return int(self.open_time_ms.shape[0])

    def _render(self) -> tuple[bytes, np.ndarray]:
        with self._lock:
            if self._rows is None or self._offsets is None:
                body = self._body or []
                pieces: list[bytes] = []
                offsets = np.empty(len(body) + 1, dtype=np.int64)
                offsets[0] = 0
                pos = 0
                for i, line in enumerate(body):
                    f = line.split(b",")
                    row = b"".join(
                        (
                            b"[", f[0], b',"', _pad8(f[1]), b'","', _pad8(f[2]), b'","', _pad8(f[3]), b'","',
                            _pad8(f[4]), b'","', _pad8(f[5]), b'",', f[6], b',"', _pad8(f[7]), b'",', f[8],
                            b',"', _pad8(f[9]), b'","', _pad8(f[10]), b'","0"],',
                        )
                    )
                    pieces.append(row)
                    pos += len(row)
                    offsets[i + 1] = pos
                self._rows, self._offsets = b"".join(pieces), offsets
                self._body = None
            return self._rows, self._offsets

    def rows_json(self, start: int, stop: int) -> bytes:
        """Binance JSON of closed rows ``[start, stop)`` joined with commas (no enclosing brackets)."""
        if stop <= start:
            return b""
        rows, off = self._render()
        return rows[int(off[start]) : int(off[stop]) - 1]  # every row is stored with a trailing comma


def _parse_series(symbol: str, interval: str, raw: bytes, source: str) -> Series:
    lines = raw.splitlines()
    if not lines or lines[0].strip() != _HEADER:
        raise ValueError(f"{source}: unexpected header {lines[0][:120]!r}" if lines else f"{source}: empty file")
    return Series(symbol, interval, [ln.strip() for ln in lines[1:] if ln.strip()], source)


def split_symbol(symbol: str) -> tuple[str, str]:
    """Split ``"BTCUSDT"`` into ``("BTC", "USDT")`` by the known quote assets."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


class ReplayDataset:
    """Lazily loaded recorded klines of one data directory.

    Thread-safe: the server may load series from worker threads.

    Args:
        data_dir: directory of ``<SYMBOL>-<interval>.csv[.gz]`` files; default the bundled data.

    Raises:
        FileNotFoundError: if the directory does not exist or holds no kline files.
    """

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else bundled_data_dir()
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"replay data directory not found: {self.data_dir}")
        self._files: dict[tuple[str, str], Path] = {}
        for path in sorted(self.data_dir.iterdir()):
            name = path.name
            for ext in (".csv.gz", ".csv"):
                if name.endswith(ext):
                    stem = name[: -len(ext)]
                    if "-" in stem:
                        symbol, interval = stem.rsplit("-", 1)
                        if BINANCE_INTERVALS.get(interval):
                            self._files[(symbol, interval)] = path
                    break
        if not self._files:
            raise FileNotFoundError(f"no <SYMBOL>-<interval>.csv[.gz] files in {self.data_dir}")
        self.symbols: tuple[str, ...] = tuple(sorted({s for s, _ in self._files}))
        self.intervals: tuple[str, ...] = tuple(
            sorted({i for _, i in self._files}, key=lambda i: BINANCE_INTERVALS[i] or 0)
        )
        self._series: dict[tuple[str, str], Series] = {}
        self._lock = threading.Lock()

    def has(self, symbol: str, interval: str) -> bool:
        """True if the directory has data for ``(symbol, interval)``."""
        return (symbol, interval) in self._files

    def series(self, symbol: str, interval: str) -> Series:
        """The parsed series for ``(symbol, interval)``, loading it on first use.

        Raises:
            KeyError: no file for that pair.
            ValueError: the file is malformed (wrong header, field count, unsorted times).
        """
        key = (symbol, interval)
        found = self._series.get(key)
        if found is not None:
            return found
        path = self._files[key]
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        parsed = _parse_series(symbol, interval, raw, str(path))
        with self._lock:
            return self._series.setdefault(key, parsed)

    def bounds_ms(self) -> tuple[int, int]:
        """``(first open_time, last close_time + 1)`` over the base interval of the first symbol, in ms.

        The bundled files all share one window, so one series is representative.
        """
        s = self.series(self.symbols[0], self.intervals[0])
        return int(s.open_time_ms[0]), int(s.open_time_ms[-1]) + s.interval_ms

    def preload(self) -> None:
        """Parse and render every series now (benchmarks call this so start-up is not timed)."""
        for symbol, interval in self._files:
            self.series(symbol, interval).rows_json(0, 1)
