"""Recorded klines served by the replay exchange.

A data directory holds one file per (symbol, interval), named ``<SYMBOL>-<interval>.csv.gz`` (or
``.csv``), with the header ``open_time,open,high,low,close,volume,close_time,quote_volume,trades,
taker_buy_base,taker_buy_quote`` (the format of the bundled Binance data; see
``trader/data/binance/README.md``).

Loading (lazy, thread-safe, off the event loop through :meth:`ReplayDataset.aseries`):

- a file's numbers become a kline block (:mod:`trader.models`: ``(11, n)`` float64) in one orjson
  pass over the CSV text (correctly rounded: the same doubles a client parses from the served
  strings); every line is validated (11 numeric fields, strictly increasing open times on the
  interval's boundaries, ``close_time = open_time + interval - 1``) and a bad one is reported as
  ``file:line: what is wrong``;
- files with identical bytes share one parsed :class:`SeriesData` (a universe of cloned symbols
  costs the memory of the distinct files only);
- the exact Binance JSON of closed rows (``[1714521600000,"60672.01000000",...,"0"]``: prices and
  volumes as strings with 8 decimals, times and trade counts as integers) is rendered from the
  original text on demand, in blocks of :data:`BLOCK_ROWS` rows, and cached: serving 1000 klines is
  a few bytes joins.

Derived intervals: an interval with no file of its own (2h, 6h, 8h, 12h, 1d, 3d, 1w from 1h data)
is aggregated from the finest recorded interval that divides it, on Binance's UTC boundaries
(:func:`trader.models.kline_open_ms`: multiples of the interval since the epoch, 1w on Monday):
open of the first, high/low extremes, close of the last, volumes, quote volume, trades and taker
volumes summed exactly (decimal arithmetic on the served strings). Only complete periods are
derived; the period containing the replay's now is served forming (see
:func:`trader.replay.market.forming_row`).

Shift: ``shift_ms`` moves every served time forward (``--clock wall``), a whole multiple of every
interval's period so boundaries stay aligned.

Symbol filters for ``exchangeInfo`` come from the data up to a given row only
(:meth:`Series.decimals`): tick size from the most decimals any price has had so far, step size
likewise for base volumes.
"""

from __future__ import annotations

import asyncio
import bisect
import gzip
import threading
import zlib
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trader.errors import ConfigError
from trader.models import (
    BINANCE_INTERVALS,
    CLOSE,
    CLOSE_TIME,
    HIGH,
    LOW,
    N_FIELDS,
    OPEN,
    OPEN_TIME,
    TRADES,
    VOLUME,
    kline_open_ms,
)

__all__ = [
    "BLOCK_ROWS",
    "DERIVABLE",
    "QUOTE_ASSETS",
    "ReplayDataset",
    "Series",
    "SeriesData",
    "bundled_data_dir",
    "split_symbol",
]

#: Quote assets recognised when splitting a symbol into base and quote asset (longest first).
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
#: Intervals the replay can serve; those without a file are aggregated from a finer one.
DERIVABLE = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
#: Rows rendered to JSON together (and cached).
BLOCK_ROWS = 256

_HEADER = b"open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"
_SUM_FIELDS = (VOLUME, 7, TRADES, 9, 10)  # volume, quote_volume, trades, taker_buy_base, taker_buy_quote
_PRICE_FIELDS = (OPEN, HIGH, LOW, CLOSE)
_QTY_FIELDS = (VOLUME, 9)
_TIME_FIELDS = (OPEN_TIME, CLOSE_TIME, TRADES)  # rendered as JSON integers


def bundled_data_dir() -> Path:
    """Directory of the real Binance klines shipped inside the package (96 USDT pairs, 1h and 4h)."""
    return Path(str(resources.files("trader") / "data" / "binance"))


_ZEROS = tuple(b"0" * k for k in range(9))


def _pad8(field: bytes) -> bytes:
    """Render a decimal string the way Binance does: exactly 8 decimals (``b"59590"`` -> ``b"59590.00000000"``)."""
    dot = field.find(b".")
    if dot < 0:
        return field + b".00000000"
    decimals = len(field) - dot - 1
    if decimals <= 8:
        return field + _ZEROS[8 - decimals]
    # more than 8: only float-noise digits of quote volumes; round half-even like Decimal
    return str(Decimal(field.decode()).quantize(Decimal("0.00000001"), ROUND_HALF_EVEN)).encode()


def _decimals(x: np.ndarray) -> np.ndarray:
    """Per element, the fewest decimals (0-8) that represent it exactly (judged within 2 ulps). Pure.

    The values were parsed from decimal strings with at most 8 decimals, so ``x * 10**d`` is an
    integer up to float rounding (relative error below 4e-16) exactly when ``d`` is enough.
    """
    out = np.full(x.shape, 8, dtype=np.int8)
    todo = np.ones(x.shape, dtype=bool)
    for d in range(9):
        y = x * 10.0**d
        hit = todo & (np.abs(y - np.round(y)) <= np.abs(y) * 4e-16 + 1e-9)
        out[hit] = d
        todo &= ~hit
        if not todo.any():
            break
    return out


def decimals_table(values: np.ndarray) -> tuple[list[int], list[int]]:
    """Per kline, the running ``(price decimals, quantity decimals)`` of a kline block ``(11, n)``:
    the most decimals any price / base volume has had up to that kline (tick / step = 10**-d). Pure."""
    pd = np.maximum.accumulate(_decimals(values[list(_PRICE_FIELDS)]).max(axis=0))
    qd = np.maximum.accumulate(_decimals(values[list(_QTY_FIELDS)]).max(axis=0))
    return pd.tolist(), qd.tolist()


def split_symbol(symbol: str) -> tuple[str, str]:
    """Split ``"BTCUSDT"`` into ``("BTC", "USDT")`` by the known quote assets."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


class SeriesData:
    """The parsed content of one recorded (or derived) series, shared by every symbol with identical data.

    Args:
        text: the CSV body (no header), one kline per line.
        source: file name for error messages.
        interval: the interval the lines are.
        shift_ms: added to every served time.

    Attributes:
        values: kline block ``(11, n)`` float64, times shifted.
        open_time_ms: ``(n,)`` int64 open times (shifted), strictly increasing.
        trades_cumsum: ``(n,)`` int64 running total of trades (trade ids).
        open_list: the open times as a list of ints (cheap single-element access).
        lines: ``n + 1`` offsets of each line in ``text``.

    Raises:
        ConfigError: a malformed line, naming ``source:line``.
    """

    def __init__(self, text: bytes, source: str, interval: str, shift_ms: int = 0) -> None:
        self.text = text
        self.source = source
        self.interval = interval
        self.interval_ms = int(BINANCE_INTERVALS[interval] or 0)
        self.shift_ms = int(shift_ms)
        newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10) + 1
        starts = [0, *newlines.tolist()]
        if starts[-1] != len(text):
            starts.append(len(text) + 1)
        self.lines: list[int] = starts
        n = len(starts) - 1
        body = text.rstrip(b"\n")
        try:
            table = np.array(orjson.loads(b"[[" + body.replace(b"\n", b"],[") + b"]]"), dtype=np.float64) if n else np.empty((0, N_FIELDS))
            if table.ndim != 2 or table.shape[1] != N_FIELDS:
                raise ValueError
        except (orjson.JSONDecodeError, ValueError, TypeError):
            raise ConfigError(self._first_bad_line()) from None
        values = np.ascontiguousarray(table.T)
        self._validate(values)
        values[OPEN_TIME] += self.shift_ms
        values[CLOSE_TIME] += self.shift_ms
        self.values = values
        self.open_time_ms = values[OPEN_TIME].astype(np.int64)
        self.open_list: list[int] = self.open_time_ms.tolist()  # plain ints for per-kline arithmetic
        self.trades_cumsum = np.cumsum(values[TRADES].astype(np.int64))
        self.volume_cumsum = np.cumsum(values[VOLUME])  # base volume up to and including each kline
        self._blocks: dict[int, tuple[bytes, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._dec: tuple[list[int], list[int]] | None = None

    def __len__(self) -> int:
        return int(self.open_time_ms.shape[0])

    def line(self, i: int) -> bytes:
        """The CSV text of row ``i``."""
        return self.text[self.lines[i] : self.lines[i + 1] - 1].strip()

    def _first_bad_line(self) -> str:
        for i in range(len(self.lines) - 1):
            fields = self.line(i).split(b",")
            if len(fields) != N_FIELDS:
                return f"{self.source}:{i + 2}: malformed kline row (expected {N_FIELDS} fields, got {len(fields)})"
            for f in fields:
                try:
                    float(f)
                except ValueError:
                    return f"{self.source}:{i + 2}: malformed kline row (not a number: {f[:20].decode(errors='replace')!r})"
        return f"{self.source}: malformed kline data"

    def _validate(self, v: np.ndarray) -> None:
        ot = v[OPEN_TIME]
        step = self.interval_ms

        def where(mask: Any, what: str) -> None:
            bad = np.flatnonzero(mask)
            if bad.size:
                raise ConfigError(f"{self.source}:{int(bad[0]) + 2}: {what}")

        where(~np.isfinite(v).all(axis=0), "non-finite value")
        where(v[CLOSE_TIME] - ot != step - 1, f"close_time is not open_time + {step - 1}")
        where(ot != ot.astype(np.int64), "open_time is not an integer")
        offset = 4 * 86_400_000 if self.interval == "1w" else 0
        where((ot - offset) % step != 0, f"open_time is not on a {self.interval} boundary")
        if ot.shape[0] > 1:
            bad = np.flatnonzero(np.diff(ot) <= 0)
            if bad.size:
                raise ConfigError(f"{self.source}:{int(bad[0]) + 3}: open_time is not strictly increasing")
        where((v[[OPEN, HIGH, LOW, CLOSE]] <= 0).any(axis=0), "a price is not positive")
        where(v[HIGH] < v[[OPEN, CLOSE, LOW]].max(axis=0), "high is below open, close or low")
        where(v[LOW] > v[[OPEN, CLOSE]].min(axis=0), "low is above open or close")

    # ------------------------------------------------------------------ JSON rendering

    def _render_rows(self, lo: int, hi: int) -> list[bytes]:
        text, starts = self.text, self.lines
        step = self.interval_ms
        out = []
        for i, ot in zip(range(lo, hi), self.open_time_ms[lo:hi].tolist(), strict=True):
            f = text[starts[i] : starts[i + 1] - 1].strip().split(b",")
            trades = f[8]
            if b"." in trades:
                trades = trades.split(b".")[0]
            out.append(
                b"".join(
                    (
                        b"[", str(ot).encode(), b',"', _pad8(f[1]), b'","', _pad8(f[2]), b'","', _pad8(f[3]), b'","',
                        _pad8(f[4]), b'","', _pad8(f[5]), b'",', str(ot + step - 1).encode(), b',"', _pad8(f[7]),
                        b'",', trades, b',"', _pad8(f[9]), b'","', _pad8(f[10]), b'","0"],',
                    )
                )
            )
        return out

    def _block(self, b: int) -> tuple[bytes, np.ndarray]:
        found = self._blocks.get(b)
        if found is not None:
            return found
        with self._lock:
            found = self._blocks.get(b)
            if found is None:
                lo, hi = b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, len(self))
                rows = self._render_rows(lo, hi)
                offsets = np.zeros(len(rows) + 1, dtype=np.int64)
                np.cumsum([len(r) for r in rows], out=offsets[1:])
                found = self._blocks[b] = (b"".join(rows), offsets)
        return found

    def rendered(self, start: int, stop: int) -> bool:
        """True if rows ``[start, stop)`` are already rendered (serving them is then cheap)."""
        return all(b in self._blocks for b in range(start // BLOCK_ROWS, (max(stop, start + 1) - 1) // BLOCK_ROWS + 1))

    def rows_json(self, start: int, stop: int) -> bytes:
        """Binance JSON of rows ``[start, stop)`` joined with commas (no enclosing brackets)."""
        if stop <= start:
            return b""
        parts = []
        for b in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
            body, off = self._block(b)
            lo = max(start - b * BLOCK_ROWS, 0)
            hi = min(stop - b * BLOCK_ROWS, len(off) - 1)
            parts.append(body[int(off[lo]) : int(off[hi])])
        return b"".join(parts)[:-1]  # every row is stored with a trailing comma

    # ------------------------------------------------------------------ filters from the data so far

    def decimals(self, upto: int) -> tuple[int, int]:
        """``(price decimals, quantity decimals)`` over rows ``[0, upto]`` (tick / step size = 10**-d)."""
        if self._dec is None:
            with self._lock:
                if self._dec is None:
                    self._dec = decimals_table(self.values)
        i = min(max(int(upto), 0), len(self) - 1)
        return self._dec[0][i], self._dec[1][i]


def _aggregate(base: SeriesData, interval: str, source: str) -> SeriesData:
    """Complete ``interval`` periods of ``base`` as a new :class:`SeriesData` (CSV text built exactly)."""
    step = int(BINANCE_INTERVALS[interval] or 0)
    k = step // base.interval_ms
    recorded = base.open_time_ms - base.shift_ms
    offset = kline_open_ms(0, interval) % step if interval == "1w" else 0  # weeks open on Monday
    groups = (recorded - offset) // step * step + offset
    lines = []
    if len(base):
        bounds = np.flatnonzero(np.diff(groups)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(base)]])
        for lo, hi in zip(starts.tolist(), stops.tolist(), strict=True):
            if hi - lo != k or int(recorded[lo]) != int(groups[lo]):
                continue  # an incomplete period (data edge or a gap): not derived
            rows = [base.line(i).split(b",") for i in range(lo, hi)]
            v = base.values[:, lo:hi]
            hi_i = int(np.argmax(v[HIGH]))
            lo_i = int(np.argmin(v[LOW]))
            sums = []
            for fld in _SUM_FIELDS:
                if fld == TRADES:
                    sums.append(str(sum(int(r[fld].split(b".")[0]) for r in rows)).encode())
                else:
                    units = sum(int(_pad8(r[fld]).replace(b".", b"")) for r in rows)
                    sign = "-" if units < 0 else ""
                    whole, frac = divmod(abs(units), 10**8)
                    sums.append(f"{sign}{whole}.{frac:08d}".encode())
            open_ms = int(groups[lo])
            lines.append(
                b",".join(
                    (
                        str(open_ms).encode(), rows[0][OPEN], rows[hi_i][HIGH], rows[lo_i][LOW], rows[-1][CLOSE],
                        sums[0], str(open_ms + step - 1).encode(), sums[1], sums[2], sums[3], sums[4],
                    )
                )
            )
    return SeriesData(b"\n".join(lines) + (b"\n" if lines else b""), source, interval, base.shift_ms)


class Series:
    """One (symbol, interval) series: a symbol's name on a shared :class:`SeriesData`.

    Attributes:
        symbol, interval, interval_ms: the series.
        data: the shared parsed content.
        base: the finer series it is aggregated from, or None for a recorded one.
    """

    def __init__(self, symbol: str, interval: str, data: SeriesData, base: Series | None = None) -> None:
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = data.interval_ms
        self.data = data
        self.base = base

    @property
    def values(self) -> np.ndarray:
        """Kline block ``(11, n)`` float64 (times shifted)."""
        values: np.ndarray = self.data.values
        return values

    @property
    def open_time_ms(self) -> np.ndarray:
        """``(n,)`` int64 open times, epoch ms."""
        ot: np.ndarray = self.data.open_time_ms
        return ot

    @property
    def trades_cumsum(self) -> np.ndarray:
        """``(n,)`` int64 running total of trades."""
        cs: np.ndarray = self.data.trades_cumsum
        return cs

    def __len__(self) -> int:
        return len(self.data)

    def rows_json(self, start: int, stop: int) -> bytes:
        """Binance JSON of closed rows ``[start, stop)`` joined with commas."""
        return self.data.rows_json(start, stop)

    def decimals(self, upto: int) -> tuple[int, int]:
        """``(price decimals, quantity decimals)`` of the data up to row ``upto``."""
        return self.data.decimals(upto)

    def visible(self, now_ms: int) -> int:
        """Rows that have opened at ``now_ms`` (the last may still be forming)."""
        return bisect.bisect_right(self.data.open_list, now_ms)


class ReplayDataset:
    """Lazily loaded recorded klines of one data directory. Thread-safe.

    Args:
        data_dir: directory of ``<SYMBOL>-<interval>.csv[.gz]`` files; default the bundled data.
        shift_ms: added to every served time (``--clock wall``).

    Raises:
        ConfigError: the directory does not exist or holds no kline files.
    """

    def __init__(self, data_dir: str | Path | None = None, shift_ms: int = 0) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else bundled_data_dir()
        self.shift_ms = int(shift_ms)
        if not self.data_dir.is_dir():
            raise ConfigError(f"replay data directory not found: {self.data_dir}")
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
            raise ConfigError(f"no <SYMBOL>-<interval>.csv[.gz] files in {self.data_dir}")
        self.symbols: tuple[str, ...] = tuple(sorted({s for s, _ in self._files}))
        self.intervals: tuple[str, ...] = tuple(sorted({i for _, i in self._files}, key=lambda i: BINANCE_INTERVALS[i] or 0))
        self._recorded: dict[str, list[str]] = {}
        for s, i in self._files:
            self._recorded.setdefault(s, []).append(i)
        for ivs in self._recorded.values():
            ivs.sort(key=lambda i: BINANCE_INTERVALS[i] or 0)
        self._series: dict[tuple[str, str], Series] = {}
        self._shared: dict[tuple[int, int, str], SeriesData] = {}
        self._content_locks: dict[tuple[int, int, str], threading.Lock] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what exists

    def base_interval(self, symbol: str, interval: str) -> str | None:
        """The recorded interval ``interval`` is served from (itself, or the finest that divides it), or None."""
        if (symbol, interval) in self._files:
            return interval
        step = BINANCE_INTERVALS.get(interval)
        if not step or interval not in DERIVABLE:
            return None
        for base in self._recorded.get(symbol, []):
            b = BINANCE_INTERVALS[base] or 0
            if b < step and step % b == 0:
                return base
        return None

    def finest(self, symbol: str) -> str:
        """The shortest recorded interval of ``symbol`` (tickers and the book are computed from it).

        Raises:
            KeyError: no data for ``symbol``.
        """
        return self._recorded[symbol][0]

    def has(self, symbol: str, interval: str) -> bool:
        """True if ``(symbol, interval)`` can be served (recorded, or derivable from a recorded interval)."""
        return self.base_interval(symbol, interval) is not None

    # ------------------------------------------------------------------ loading

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def _read(self, symbol: str, interval: str) -> SeriesData:
        path = self._files[(symbol, interval)]
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        digest = (zlib.crc32(raw), len(raw), interval)
        with self._lock:
            shared = self._shared.get(digest)
            content_lock = self._content_locks.setdefault(digest, threading.Lock())
        if shared is not None:
            return shared
        with content_lock:  # clones loaded at the same time are parsed once, not once each
            with self._lock:
                shared = self._shared.get(digest)
            if shared is not None:
                return shared
            data = self._parse(path, raw, interval)
            with self._lock:
                return self._shared.setdefault(digest, data)

    def _parse(self, path: Path, raw: bytes, interval: str) -> SeriesData:
        try:
            text = gzip.decompress(raw) if path.name.endswith(".gz") else raw
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"{path}: not a readable gzip file ({exc})") from None
        header, _, body = text.partition(b"\n")
        if header.strip() != _HEADER:
            raise ConfigError(f"{path}:1: unexpected header {header[:120]!r}" if text else f"{path}: empty file")
        return SeriesData(body, str(path), interval, self.shift_ms)

    def series(self, symbol: str, interval: str) -> Series:
        """The series for ``(symbol, interval)``, loading (or deriving) it on first use.

        Raises:
            KeyError: the pair can be neither served from a file nor derived.
            ConfigError: its file is malformed (the message names file and line).
        """
        key = (symbol, interval)
        found = self._series.get(key)
        if found is not None:
            return found
        base_iv = self.base_interval(symbol, interval)
        if base_iv is None:
            raise KeyError(key)
        with self._lock_for(key):
            found = self._series.get(key)
            if found is not None:
                return found
            if base_iv == interval:
                series = Series(symbol, interval, self._read(symbol, interval))
            else:
                base = self.series(symbol, base_iv)
                digest = (id(base.data), 0, interval)
                with self._lock:
                    shared = self._shared.get(digest)
                if shared is None:
                    shared = _aggregate(base.data, interval, f"{base.data.source} (as {interval})")
                    with self._lock:
                        shared = self._shared.setdefault(digest, shared)
                series = Series(symbol, interval, shared, base)
            self._series[key] = series
            return series

    async def aseries(self, symbol: str, interval: str) -> Series:
        """:meth:`series` for the event loop: a series not loaded yet is parsed in a worker thread."""
        found = self._series.get((symbol, interval))
        if found is not None:
            return found
        return await asyncio.to_thread(self.series, symbol, interval)

    def loaded(self, symbol: str, interval: str) -> bool:
        """True if the series is parsed already."""
        return (symbol, interval) in self._series

    def bounds_ms(self) -> tuple[int, int]:
        """``(first open_time, last close_time + 1)`` of the base interval of the first symbol, ms (shifted).

        The bundled files all share one window, so one series is representative.
        """
        s = self.series(self.symbols[0], self.intervals[0])
        return int(s.open_time_ms[0]), int(s.open_time_ms[-1]) + s.interval_ms

    def preload(self, render: bool = False) -> list[str]:
        """Parse (and validate) every file now; with ``render`` also render every row's JSON.

        Returns:
            One ``file:line: problem`` message per malformed file (the others are loaded).
        """
        problems = []
        for symbol, interval in self._files:
            try:
                s = self.series(symbol, interval)
                if render:
                    s.rows_json(0, len(s))
            except ConfigError as exc:
                problems.append(str(exc))
        return problems
