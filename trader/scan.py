"""The scanner: score every symbol of the universe from the KlineStore, with no network.

Pipeline per scan, one block of ``scan.block_symbols`` symbols at a time (so memory stays bounded
at any universe size): **load** the last ``lookback`` closed klines of every (symbol, interval) from
the store (one read each) -> drop *stale* series (newest close older than one interval + grace,
judged on the exchange's clock recorded by the last warm, so replayed 2024 data is judged by the
replay clock) and series with less than ``min_history`` klines -> **features** (the indicators' last
values, :func:`~trader.features.indicators.compute_last`; structure) -> **score** (factors,
multi-timeframe agreement, blend) -> :class:`ScanResult`.

Strategies (same numbers, different execution; ``trader compare`` measures them):

- ``vectorized`` (default): every series of every interval stacked into ``(n_series, n_klines)``
  arrays, one pass of numpy kernels for the whole universe;
- ``serial``: one symbol at a time, same kernels on ``(1, n_klines)`` arrays;
- ``threads``: the serial per-symbol work on a thread pool (GIL-bound: for comparison);
- ``processes``: the per-symbol work on a process pool created once per :class:`Scanner` and reused
  across scans (workers initialised once with the parameters).

A symbol whose computation fails or yields non-finite values is reported in ``errors``; it never
aborts the scan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trader.config import ScanConfig
from trader.errors import ConfigError, TraderError
from trader.features.factors import FACTORS, interval_biases, score_universe
from trader.features.indicators import compute_last
from trader.features.structure import structure_features
from trader.models import CLOSE, CLOSE_TIME, OHLCVQ, TAKER_BUY_BASE_VOLUME, interval_ms
from trader.store.klines import KlineStore

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from trader.ml.predict import ActiveModel

__all__ = ["STRATEGIES", "ScanResult", "Scanner", "Signal", "score_arrays"]

STRATEGIES = ("vectorized", "serial", "threads", "processes")
_FEATURE_ROWS = [*OHLCVQ, TAKER_BUY_BASE_VOLUME]  # the kline-block rows the features (and a model) read
from trader.timeutil import DAY_MS as _DAY_MS  # noqa: E402


@dataclass(frozen=True)
class Signal:
    """One scored symbol.

    Attributes:
        symbol: e.g. ``"BTCUSDT"``.
        direction: ``"long"`` or ``"short"``.
        score: 0-100.
        factors: factor name -> score 0-100.
        last_close: close of the newest closed base-interval kline, quote asset.
        change_24h_pct: percent change of the close over the last 24 h (percent, not fraction).
        close_time_ms: close time of that kline, epoch ms.
        data_age_s: exchange now minus that close time, seconds.
        ml_probability: the active model's probability (0-1) that the symbol beats the universe
            median over the model's horizon; None without an active model.
        percentile: that probability's percentile across the scanned universe (0-1], which the
            score and direction come from (:mod:`trader.ml.signal`); None without a model.
        expected_excess_pct: what acting on the signal earned on average in the model's walk-forward
            test folds at this percentile: excess over the universe median at the model's horizon,
            net of a round trip of taker fees, percent; None without a model.
        hit_rate: the share of the folds' signals in this score's bucket that beat the median on
            their side after fees (0-1); None without a model.
    """

    symbol: str
    direction: str
    score: float
    factors: dict[str, float]
    last_close: float
    change_24h_pct: float
    close_time_ms: int
    data_age_s: float
    ml_probability: float | None = None
    percentile: float | None = None
    expected_excess_pct: float | None = None
    hit_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the documented ``signals[]`` object)."""
        return {
            "symbol": self.symbol,
            "direction": self.direction,
            "score": round(self.score, 2),
            "factors": {k: round(v, 2) for k, v in self.factors.items()},
            "last_close": self.last_close,
            "change_24h_pct": None if np.isnan(self.change_24h_pct) else round(self.change_24h_pct, 3),
            "close_time_ms": self.close_time_ms,
            "data_age_s": round(self.data_age_s, 1),
            "ml_probability": _opt(self.ml_probability, 4),
            "percentile": _opt(self.percentile, 4),
            "expected_excess_pct": _opt(self.expected_excess_pct, 3),
            "hit_rate": _opt(self.hit_rate, 3),
        }


def _opt(x: float | None, nd: int) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


@dataclass
class ScanResult:
    """The outcome of one scan.

    Attributes:
        signals: every scored symbol, best score first (filter with :meth:`passing`).
        stale: ``(symbol, interval, newest_close_ms, age_s)`` of series too old to score.
        insufficient: ``(symbol, interval, klines)`` of series with too little history.
        errors: ``(symbol, message)`` of symbols whose scoring failed.
        exchange_now_ms: the exchange time the scan was judged at, epoch ms.
        universe: symbols asked for.
        strategy: execution strategy used.
        timings_ms: ``load``, ``features`` (features + score), ``total``.
        warnings: notes for stderr (e.g. a cross-section too small for the model, a model trained long
            before the store's newest kline).
        model: id of the model the scores come from, or None (the hand-made factor score).
        model_window: ``{"from", "to"}`` UTC dates of the model's training window, or None.
    """

    signals: list[Signal]
    stale: list[tuple[str, str, int, float]]
    insufficient: list[tuple[str, str, int]]
    errors: list[tuple[str, str]]
    exchange_now_ms: int
    universe: int
    strategy: str
    timings_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    model: str | None = None
    model_window: dict[str, Any] | None = None

    def passing(self, min_score: float) -> list[Signal]:
        """Signals with ``score >= min_score``, best first."""
        return [s for s in self.signals if s.score >= min_score]


# ------------------------------------------------------------------ pure scoring of stacked data


def score_arrays(data: Sequence[np.ndarray], cfg: ScanConfig) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The hand-made factor score of ``n`` symbols from stacked klines. Pure; used by every strategy.

    Args:
        data: one array per interval (base first), each ``(n, r, L)`` with ``r >= 6``: the
            :data:`_FEATURE_ROWS` (open, high, low, close, volume, quote_volume[, taker_buy_base_volume])
            of the last ``L`` klines (``L`` may differ per interval).
        cfg: the ``scan`` config section (indicator periods, structure settings, weights).

    Returns:
        ``(score (n,), direction (n,), factors {name: (n,)}, valid (n,))``.
    """
    p = cfg.indicators
    # intervals with the same number of klines are stacked into one pass of every kernel
    by_len: dict[int, list[int]] = {}
    for i, arr in enumerate(data):
        by_len.setdefault(arr.shape[2], []).append(i)
    biases: list[dict[str, np.ndarray]] = [{} for _ in data]
    for idxs in by_len.values():
        stacked = np.concatenate([data[i] for i in idxs]) if len(idxs) > 1 else data[idxs[0]]
        o, h, lo, c, v, q = (np.ascontiguousarray(stacked[:, j, :]) for j in range(6))
        ind = compute_last(o, h, lo, c, v, q, p, window=50)
        st = structure_features(o, h, lo, c, cfg.swing_length, window=cfg.structure_window)
        b = interval_biases(ind, st, o[:, -1], c[:, -1], cfg.factors)
        n = data[idxs[0]].shape[0]
        for j, i in enumerate(idxs):
            biases[i] = {k: val[j * n : (j + 1) * n] for k, val in b.items()}
    res = score_universe(biases, cfg.weights.model_dump(), sharpness=cfg.factors.sharpness)
    return res.score, res.direction, res.factors, res.valid


_Item = tuple[str, list[np.ndarray]]  # (symbol, kline rows per interval)


def _score_chunk(chunk: Sequence[_Item], params: ScanConfig) -> list[tuple[str, Any]]:
    """Serial per-symbol scoring of a chunk; each symbol isolated. Returns ``(symbol, result or error str)``."""
    out: list[tuple[str, Any]] = []
    for symbol, arrays in chunk:
        try:
            score, direction, factors, valid = score_arrays([a[None] for a in arrays], params)
            if not valid[0]:
                out.append((symbol, "non-finite factor values (flat or degenerate prices)"))
            else:
                out.append((symbol, (float(score[0]), float(direction[0]), {k: float(v[0]) for k, v in factors.items()})))
        except Exception as exc:  # noqa: BLE001 - isolate the symbol, report, go on
            out.append((symbol, f"{type(exc).__name__}: {exc}"))
    return out


_WORKER_PARAMS: ScanConfig | None = None


def _init_worker(params: ScanConfig) -> None:
    global _WORKER_PARAMS
    _WORKER_PARAMS = params


def _worker_chunk(chunk: list[_Item]) -> list[tuple[str, Any]]:
    assert _WORKER_PARAMS is not None
    return _score_chunk(chunk, _WORKER_PARAMS)


# ------------------------------------------------------------------ the scanner


class Scanner:
    """Scores a universe from a :class:`KlineStore`; reusable across scans (pools live with it).

    Args:
        store: the kline store (read only).
        cfg: the ``scan`` config section (strategy, workers, lookback, weights, periods, ...).
        intervals: base (fastest) interval first, e.g. ``("1h", "4h")``.
        loader: ``loader(symbol, interval, limit) -> kline block (11, n)``; default ``store.load``
            (a live cache passes its own, e.g. :meth:`trader.live.LiveFeed.load`).
        model: the active model (:meth:`ActiveModel.from_store`), or None: scores are then the
            hand-made factor score. With a model, every scan first ranks the model's features across
            the store's fresh universe and predicts it in one onnxruntime call in this process (the
            session lives as long as the scanner); the printed score and direction are the model's
            (:mod:`trader.ml.signal`, blended with the factor score only if ``scan.blend`` > 0) and
            the factor scores stay as columns.

    Raises:
        ConfigError: unknown strategy, or no interval.
    """

    def __init__(
        self,
        store: KlineStore,
        cfg: ScanConfig,
        intervals: Sequence[str],
        loader: Callable[[str, str, int], np.ndarray] | None = None,
        model: ActiveModel | None = None,
    ) -> None:
        if cfg.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {cfg.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not intervals:
            raise ConfigError("a scan needs at least one interval")
        self.store = store
        self.params = cfg
        self.intervals = tuple(intervals)
        self.strategy = cfg.strategy
        self.workers = cfg.workers
        self._load = loader or (lambda symbol, interval, limit: store.load(symbol, interval, limit=limit))
        self._pool: Executor | None = None
        self.model = model
        if model is not None and tuple(model.params.intervals) != self.intervals:
            from trader.errors import ModelError

            raise ModelError(f"the active model {model.id} was trained on {'/'.join(model.params.intervals)}; scan those intervals")

    def _executor(self) -> Executor:
        from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

        if self._pool is None:
            if self.strategy == "processes":
                import multiprocessing as mp

                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=mp.get_context("forkserver"), initializer=_init_worker, initargs=(self.params,)
                )
            else:
                self._pool = ThreadPoolExecutor(self.workers)
        return self._pool

    def close(self) -> None:
        """Shut the worker pool down (if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def universe(self) -> list[str]:
        """Symbols stored for every interval of the scan, sorted."""
        have: dict[str, set[str]] = {}
        for symbol, interval in self.store.series():
            have.setdefault(symbol, set()).add(interval)
        need = set(self.intervals)
        return sorted(s for s, ivs in have.items() if need <= ivs)

    def exchange_now_ms(self) -> int:
        """The exchange's time now, from the offset the last warm recorded (local clock if none)."""
        local = int(time.time() * 1000)
        clock = self.store.clock()
        return local + int(clock["offset_ms"]) if clock else local

    def scan(self, symbols: Sequence[str] | None = None, now_ms: int | None = None) -> ScanResult:
        """Score ``symbols`` (default: :meth:`universe`) at exchange time ``now_ms`` (default: :meth:`exchange_now_ms`).

        Symbols are processed in blocks of ``scan.block_symbols``: only one block's klines and
        features are in memory at a time.
        """
        t0 = time.perf_counter()
        symbols = list(symbols) if symbols is not None else self.universe()
        now = self.exchange_now_ms() if now_ms is None else now_ms
        stale: list[tuple[str, str, int, float]] = []
        short: list[tuple[str, str, int]] = []
        errors: list[tuple[str, str]] = []
        signals: list[Signal] = []
        warnings: list[str] = []
        load_s = 0.0
        size = self.params.block_symbols
        probs = self._probabilities(now, warnings) if self.model is not None else None
        for b in range(0, len(symbols), size):
            tb = time.perf_counter()
            loaded = self._load_block(symbols[b : b + size], now, stale, short, errors)
            load_s += time.perf_counter() - tb
            scored, errs = self._run(loaded)
            errors += errs
            signals += self._signals(loaded, scored, now, probs)
        signals.sort(key=lambda s: (-s.score, s.symbol))
        t2 = time.perf_counter()
        return ScanResult(
            warnings=warnings,
            model=self.model.id if self.model is not None and probs else None,
            model_window=self.model.window if self.model is not None and probs else None,
            signals=signals,
            stale=stale,
            insufficient=short,
            errors=sorted(errors),
            exchange_now_ms=now,
            universe=len(symbols),
            strategy=self.strategy,
            timings_ms={"load": load_s * 1e3, "features": (t2 - t0 - load_s) * 1e3, "total": (t2 - t0) * 1e3},
        )

    def _probabilities(self, now: int, warnings: list[str]) -> dict[str, tuple[float, float]] | None:
        """The model's probabilities for the store's whole fresh universe (its cross-section), or
        None (with a warning) when the cross-section is too small. Block by block: only feature
        rows are kept, never every symbol's klines."""
        assert self.model is not None
        universe = self.universe()
        names: list[str] = []
        parts: list[np.ndarray] = []
        size = self.params.block_symbols
        for b in range(0, len(universe), size):
            loaded = self._load_block(universe[b : b + size], now, [], [], [])
            if loaded:
                names += [s for s, _ in loaded]
                parts.append(self.model.feature_rows([(s, [a[_FEATURE_ROWS] for a in arrs]) for s, arrs in loaded]))
        X = np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)
        probs = self.model.predict(names, X)
        if not probs:
            from trader.features.matrix import MIN_CROSS_SECTION

            warnings.append(
                f"model {self.model.id}: fewer than {MIN_CROSS_SECTION} fresh symbols in the store to rank its features across; "
                "scored with the hand-made factors instead"
            )
            return None
        return probs

    def _load_block(
        self,
        symbols: Sequence[str],
        now: int,
        stale: list[tuple[str, str, int, float]],
        short: list[tuple[str, str, int]],
        errors: list[tuple[str, str]],
    ) -> list[tuple[str, list[np.ndarray]]]:
        p = self.params
        loaded: list[tuple[str, list[np.ndarray]]] = []
        for symbol in symbols:
            arrays = []
            ok = True
            for interval in self.intervals:
                try:
                    raw = self._load(symbol, interval, p.lookback)
                except TraderError as exc:  # a damaged series: reported for this symbol, the scan goes on
                    errors.append((symbol, str(exc)))
                    ok = False
                    break
                n = raw.shape[1]
                if n < p.min_history:
                    short.append((symbol, interval, n))
                    ok = False
                    continue
                newest_close = int(raw[CLOSE_TIME, -1])
                if newest_close + interval_ms(interval) + p.grace_s * 1000 < now:
                    stale.append((symbol, interval, newest_close, (now - newest_close) / 1000.0))
                    ok = False
                    continue
                arrays.append(raw)
            if ok:
                loaded.append((symbol, arrays))
        return loaded

    def _signals(self, loaded: list[tuple[str, list[np.ndarray]]], scored: dict[str, tuple[float, float, dict[str, float]]], now: int,
                 probs: dict[str, tuple[float, float]] | None = None) -> list[Signal]:
        from trader.ml.signal import blend_signals, score_from_percentile

        out = []
        per_day = _DAY_MS // interval_ms(self.intervals[0])
        table = self.model.table if self.model is not None else None
        for symbol, arrays in loaded:
            if symbol not in scored:
                continue
            score, direction, factors = scored[symbol]
            shown = {k: factors[k] for k in FACTORS if k in factors}
            p = q = excess = hit = None
            if probs is not None:
                if symbol not in probs:  # the model had no finite features for it: no model signal
                    continue
                p, q = probs[symbol]
                ms, md = score_from_percentile(q)
                shown["factor_score"] = score
                bs, bd = blend_signals(ms, md, np.asarray(score), np.asarray(direction), self.params.blend)
                score, direction = float(bs), float(bd)
                if table is not None:
                    excess = 100.0 * table.expected_net_excess(q, direction)
                    hit = table.hit_rate(score)
            base = arrays[0]
            close = base[CLOSE]
            change = (close[-1] / close[-1 - per_day] - 1.0) * 100.0 if 0 < per_day < close.shape[0] else float("nan")
            close_time = int(base[CLOSE_TIME, -1])
            out.append(
                Signal(
                    symbol=symbol,
                    direction="long" if direction > 0 else "short",
                    score=score,
                    factors=shown,
                    ml_probability=p,
                    percentile=q,
                    expected_excess_pct=excess,
                    hit_rate=hit,
                    last_close=float(close[-1]),
                    change_24h_pct=float(change),
                    close_time_ms=close_time,
                    data_age_s=(now - close_time) / 1000.0,
                )
            )
        return out

    # ------------------------------------------------------------------ strategies

    def _run(self, loaded: list[tuple[str, list[np.ndarray]]]) -> tuple[dict[str, tuple[float, float, dict[str, float]]], list[tuple[str, str]]]:
        if not loaded:
            return {}, []
        chunks: list[_Item] = [(s, [a[_FEATURE_ROWS] for a in arrs]) for s, arrs in loaded]
        if self.strategy == "vectorized":
            return self._vectorized(chunks)
        if self.strategy == "serial":
            results = _score_chunk(chunks, self.params)
        elif self.strategy == "threads":
            pool = self._executor()
            results = [r for part in pool.map(lambda c: _score_chunk([c], self.params), chunks) for r in part]
        else:
            pool = self._executor()
            size = max(1, -(-len(chunks) // (self.workers * 4)))
            parts = [chunks[i : i + size] for i in range(0, len(chunks), size)]
            results = [r for part in pool.map(_worker_chunk, parts) for r in part]
        return _split(results)

    def _vectorized(self, chunks: list[_Item]) -> tuple[dict[str, tuple[float, float, dict[str, float]]], list[tuple[str, str]]]:
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for item in chunks:
            groups.setdefault(tuple(a.shape[1] for a in item[1]), []).append(item)
        scored: dict[str, tuple[float, float, dict[str, float]]] = {}
        errors: list[tuple[str, str]] = []
        for group in groups.values():
            try:
                data = [np.stack([arrs[i] for _, arrs in group]) for i in range(len(self.intervals))]
                score, direction, factors, valid = score_arrays(data, self.params)
            except Exception:  # noqa: BLE001 - find the culprit symbol by symbol
                part_scored, part_errors = _split(_score_chunk(group, self.params))
                scored.update(part_scored)
                errors += part_errors
                continue
            for j, (symbol, _) in enumerate(group):
                if valid[j]:
                    scored[symbol] = (float(score[j]), float(direction[j]), {k: float(v[j]) for k, v in factors.items()})
                else:
                    errors.append((symbol, "non-finite factor values (flat or degenerate prices)"))
        return scored, errors


def _split(results: list[tuple[str, Any]]) -> tuple[dict[str, tuple[float, float, dict[str, float]]], list[tuple[str, str]]]:
    scored = {s: r for s, r in results if not isinstance(r, str)}
    errors = [(s, r) for s, r in results if isinstance(r, str)]
    return scored, errors
