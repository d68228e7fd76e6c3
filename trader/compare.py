"""The measurements behind ``trader compare``: each speed-up against the best alternative a user has.

Every comparison runs on the bundled real klines, on this machine, in this run. The replay exchange
runs **in its own process** (``trader replay`` on 127.0.0.1:0), so its CPU is not billed to the
client side being timed; REST latency is injected there (``latency_ms``, default 100 ms — a
typical round trip from a retail VPS or home line to Binance). Each side is timed ``runs`` times
(at least 3) and reported as the median with min and max; a ratio is baseline median / contender
median, and a contender that loses says so (``verdict``).

=========================  ==============================================  ===============================================
name                       baseline (what a user runs instead)             contenders
=========================  ==============================================  ===============================================
``rest_vs_ws``             REST per scan: fetch 300 klines of every        scan of the WebSocket-fed live cache, with the
                           series (20 in flight), then score               venue's clock running so events arrive meanwhile
``rest_vs_ws_0ms``         the same with 0 ms injected latency             (same)
``serial_vs_concurrent``   REST fetches one at a time                      20 in flight; ccxt async (if installed)
``scoring``                a serial TA-Lib loop per symbol (same           trader's vectorized core; threads; a reused
                           indicators, same structure and score)           process pool
``incremental``            the fastest full recomputation available        O(1) incremental update of every series
                           (TA-Lib per series or trader's batch kernels)
``process_pool``           a new process pool per scan                     one pool reused
``ml_batch``               native XGBoost ``inplace_predict`` on the       onnxruntime on the same rows (one session)
                           universe's feature rows (its fastest path)
``ml_row``                 the same, one row at a time                     onnxruntime, one row at a time
``ml_pool``                a new process pool per scan, each worker        one pool reused, the model loaded once per worker
                           loading the ONNX model (a model-scan cycle)
=========================  ==============================================  ===============================================

The model of the ``ml_*`` rows is trained here on the universe's bundled history (depth 3, 200
rounds: the size ``tune train`` produces) and exported to ONNX with the registry's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from trader.config import ClientConfig, IndicatorConfig, ProfileConfig, ScanConfig, StreamConfig
from trader.errors import ConfigError
from trader.models import CLOSE_TIME, OHLCVQ

__all__ = ["COMPARISONS", "Comparison", "Side", "run_compare", "talib_scores"]

COMPARISONS = ("rest_vs_ws", "rest_vs_ws_0ms", "serial_vs_concurrent", "scoring", "incremental", "process_pool", "ml_batch", "ml_row", "ml_pool")
INTERVALS = ("1h", "4h")
LOOKBACK = 300


@dataclass
class Side:
    """One side of a comparison: wall time per scan (or per cycle) over ``runs`` runs."""

    label: str
    wall_s: float
    wall_min_s: float
    wall_max_s: float
    runs: int
    api_calls: float = 0.0
    weight: float = 0.0
    symbols_per_s: float = 0.0

    @classmethod
    def of(cls, label: str, walls: Sequence[float], symbols: int = 0, api_calls: float = 0.0, weight: float = 0.0) -> Side:
        med = statistics.median(walls)
        return cls(label, med, min(walls), max(walls), len(walls), api_calls, weight, symbols / med if symbols and med > 0 else 0.0)


@dataclass
class Comparison:
    """A measured comparison: ``ratios[label]`` = baseline median / contender median (> 1: contender faster)."""

    name: str
    title: str
    baseline: Side
    contenders: list[Side]
    reference: str
    note: str = ""
    ratios: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)

    def finish(self) -> Comparison:
        for c in self.contenders:
            r = self.baseline.wall_s / c.wall_s if c.wall_s > 0 else float("inf")
            self.ratios[c.label] = round(r, 2)
            self.verdicts[c.label] = "faster" if r > 1.05 else "slower" if r < 0.95 else "no difference"
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _times(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


async def _atimes(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


# ---------------------------------------------------------------------- the venue in its own process


@contextlib.contextmanager
def replay_process(*args: str) -> Iterator[str]:
    """Run a replay exchange (:mod:`trader.replay.child`: port 0, weight limit 10**9, every series rendered,
    ``args`` such as ``--speed 0 --latency-ms 20``) in a child process; yield its URL."""
    cmd = [sys.executable, "-m", "trader.replay.child", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise ConfigError("the replay exchange did not start (run 'trader replay' to see why)")
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def _client(url: str, concurrency: int = 20) -> Any:
    from trader.exchange.rest import BinanceClient

    ws = url.replace("http", "ws", 1)
    return BinanceClient(ProfileConfig(rest_url=url, ws_url=ws), ClientConfig(concurrency=concurrency))


async def _fetch_all(client: Any, symbols: Sequence[str], concurrency: int) -> list[list[np.ndarray]]:
    sem = asyncio.Semaphore(concurrency)
    now = await client.fetch_server_time()

    async def one(symbol: str, interval: str) -> np.ndarray:
        async with sem:
            block: np.ndarray = await client.fetch_klines_page(symbol, interval, limit=LOOKBACK + 1)
        closed: np.ndarray = block[:, block[CLOSE_TIME] < now]  # closed klines only
        return closed

    got = await asyncio.gather(*(one(s, i) for s in symbols for i in INTERVALS))
    return [list(got[k * len(INTERVALS) : (k + 1) * len(INTERVALS)]) for k in range(len(symbols))]


def _score(per_symbol: list[list[np.ndarray]]) -> None:
    from trader.scan import score_arrays

    data = [np.stack([arrs[i][list(OHLCVQ), -LOOKBACK:] for arrs in per_symbol]) for i in range(len(INTERVALS))]
    score_arrays(data, ScanConfig())


async def _rest_vs_ws(symbols: Sequence[str], latency_ms: float, runs: int, name: str) -> Comparison:
    """REST-per-scan vs scans of a WebSocket-fed cache, the venue's clock running (events arrive)."""
    from trader.live import LiveFeed
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    n = len(symbols)
    with replay_process("--speed", "60", "--latency-ms", str(latency_ms)) as url, tempfile.TemporaryDirectory() as tmp:
        async with _client(url) as client:
            async def rest_scan() -> None:
                _score(await _fetch_all(client, symbols, 20))

            await rest_scan()  # connections open, server caches warm
            s0 = client.stats.requests
            rest = await _atimes(rest_scan, runs)
            calls = (client.stats.requests - s0) / runs
            with KlineStore(Path(tmp) / "store") as store:
                feed = LiveFeed(client, store, symbols, INTERVALS, url.replace("http", "ws", 1), stream_cfg=StreamConfig(snapshot_s=0), depth=LOOKBACK)
                async with feed:
                    with Scanner(store, ScanConfig(), INTERVALS, loader=feed.load) as scanner:
                        scanner.scan(symbols)
                        await asyncio.sleep(0.2)  # let events flow: the venue runs at 60x
                        before = (client.stats.requests, feed.stats.forming_updates + feed.stats.closed_applied)
                        ws: list[float] = []
                        for _ in range(runs):
                            t = time.perf_counter()
                            scanner.scan(symbols)
                            ws.append(time.perf_counter() - t)
                            await asyncio.sleep(0.05)  # events arrive between (and are queued during) scans
                        events = feed.stats.forming_updates + feed.stats.closed_applied - before[1]
                        ws_calls = (client.stats.requests - before[0]) / runs
    weight = 2.0 * calls  # klines: weight 2 each (the server-time call costs 1 more per scan)
    return Comparison(
        name,
        f"REST per scan vs WebSocket-cache scan ({n} symbols x 1h, 4h, {latency_ms:g} ms latency)",
        Side.of("REST per scan", rest, n, calls, weight),
        [Side.of("WebSocket cache", ws, n, ws_calls, 0.0)],
        "17x (20 symbols: 17 s -> 1 s)",
        f"REST side already concurrent (20 in flight); {events} stream events arrived during the WS scans; "
        "the venue runs in its own process",
    ).finish()


async def _serial_vs_concurrent(symbols: Sequence[str], latency_ms: float, runs: int) -> Comparison:
    """Fetching the last 300 klines of every series: one request at a time, 20 in flight, ccxt async."""
    n = len(symbols)
    with replay_process("--speed", "0", "--latency-ms", str(latency_ms)) as url:
        sides = []
        for label, conc in (("serial", 1), ("concurrent x20", 20)):
            async with _client(url, conc) as client:
                await client.fetch_server_time()
                s0 = client.stats.requests
                async def fetch(c: Any = client, k: int = conc) -> None:
                    await _fetch_all(c, symbols, k)

                walls = await _atimes(fetch, runs)
                sides.append(Side.of(label, walls, n, (client.stats.requests - s0) / runs, 2.0 * n * len(INTERVALS)))
        note = "latency-bound: the ratio approaches the concurrency bound as latency dominates"
        ccxt_side = await _ccxt_fetch(url, symbols, runs)
        if ccxt_side is not None:
            sides.append(ccxt_side)
        else:
            note += "; ccxt not installed (pip install ccxt) — its row is missing"
    return Comparison(
        "serial_vs_concurrent",
        f"serial vs concurrent REST fetching ({n} symbols x 2 intervals, {latency_ms:g} ms latency)",
        sides[0],
        sides[1:],
        "6x (200 pairs: 60 s -> 10 s at concurrency 20)",
        note,
    ).finish()


async def _ccxt_fetch(url: str, symbols: Sequence[str], runs: int) -> Side | None:
    """ccxt's async binance client fetching the same klines, all requests at once (its own rate limiter on)."""
    try:
        import ccxt.async_support as ccxt_async
    except ImportError:
        return None
    ex = ccxt_async.binance({"enableRateLimit": True, "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"] = {k: f"{url}/api/v3" for k in ("public", "private", "v3", "v1")}
    try:
        await ex.load_markets()
        markets = {m["id"]: m["symbol"] for m in ex.markets.values()}

        async def all_once() -> None:
            await asyncio.gather(*(ex.fetch_ohlcv(markets[s], i, limit=LOOKBACK + 1) for s in symbols for i in INTERVALS))

        await all_once()
        walls = await _atimes(all_once, runs)
    finally:
        await ex.close()
    return Side.of("ccxt async (rate limiter on)", walls, len(symbols), len(symbols) * len(INTERVALS), 2.0 * len(symbols) * len(INTERVALS))


# ---------------------------------------------------------------------- scoring


def _build_store(path: Path, symbols: Sequence[str]) -> int:
    """A store like ``trader warm`` leaves it at the replay's default start (1000 klines per series)."""
    from trader.replay.dataset import ReplayDataset
    from trader.replay.server import default_start_ms
    from trader.store.klines import KlineStore
    from trader.warm import last_closed_open_ms

    ds = ReplayDataset()
    now = default_start_ms(ds)
    with KlineStore(path) as store:
        for s in symbols:
            for i in INTERVALS:
                ser = ds.series(s, i)
                hi = int((ser.open_time_ms <= last_closed_open_ms(now, i)).sum())
                store.append(s, i, ser.values[:, hi - 1000 : hi])
    return now


def _talib_indicators(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, q: np.ndarray, p: IndicatorConfig) -> dict[str, np.ndarray]:
    """The scan's indicators for one series with TA-Lib (each ``(T,)``): what a user's loop computes."""
    import talib

    macd, sig, hist = talib.MACD(c, p.macd_fast, p.macd_slow, p.macd_signal)
    up, mid, low_b = talib.BBANDS(c, p.bb, p.bb_k, p.bb_k)
    obv = talib.OBV(c, v)
    sma_v = talib.SMA(v, p.volume)
    sd_v = talib.STDDEV(v, p.volume)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = talib.SUM(q, p.vwap) / talib.SUM(v, p.vwap)
        return {
            "rsi": talib.RSI(c, p.rsi),
            "ema_fast": talib.EMA(c, p.ema_fast),
            "ema_slow": talib.EMA(c, p.ema_slow),
            "macd": macd,
            "macd_signal": sig,
            "macd_hist": hist,
            "atr": talib.ATR(h, lo, c, p.atr),
            "adx": talib.ADX(h, lo, c, p.adx),
            "plus_di": talib.PLUS_DI(h, lo, c, p.adx),
            "minus_di": talib.MINUS_DI(h, lo, c, p.adx),
            "volume_z": np.where(sd_v > 0, (v - sma_v) / sd_v, 0.0),
            "obv_slope": talib.LINEARREG_SLOPE(obv, p.obv) / talib.SMA(v, p.obv),
            "vwap_dist": c / vwap - 1.0,
            "bb_width": (up - low_b) / mid,
        }


def talib_scores(per_symbol: Sequence[Sequence[np.ndarray]], cfg: ScanConfig) -> np.ndarray:
    """Score symbols one at a time with TA-Lib indicators and trader's structure and factor code.

    This is the serial loop a user would write (TA-Lib for the indicators, per symbol); it computes
    the same score as :func:`trader.scan.score_arrays` (to ~1e-9), and is the ``scoring`` baseline.

    Args:
        per_symbol: per symbol, one ``(6, L)`` :data:`~trader.models.OHLCVQ` array per interval.
        cfg: the ``scan`` config section.

    Returns:
        ``(n,)`` scores.
    """
    from trader.features.factors import interval_biases, score_universe
    from trader.features.structure import structure_features

    out = np.empty(len(per_symbol))
    weights = cfg.weights.model_dump()
    for k, arrays in enumerate(per_symbol):
        biases = []
        for a in arrays:
            o, h, lo, c, v, q = (np.ascontiguousarray(a[j]) for j in range(6))
            ind = _talib_indicators(o, h, lo, c, v, q, cfg.indicators)
            last = {name: (val[None, -50:] if name == "bb_width" else val[-1:]) for name, val in ind.items()}
            st = structure_features(o[None], h[None], lo[None], c[None], cfg.swing_length, window=cfg.structure_window)
            biases.append(interval_biases(last, st, o[-1:], c[-1:], cfg.factors))
        out[k] = score_universe(biases, weights, sharpness=cfg.factors.sharpness).score[0]
    return out


def _scoring(symbols: Sequence[str], runs: int) -> Comparison:
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    n = len(symbols)
    cfg = ScanConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        now = _build_store(path, symbols)
        walls: dict[str, list[float]] = {}
        with KlineStore(path) as store:
            for strategy in ("vectorized", "threads", "processes"):
                with Scanner(store, cfg.model_copy(update={"strategy": strategy}), INTERVALS) as sc:
                    sc.scan(symbols, now_ms=now)
                    walls[strategy] = _times(partial(sc.scan, symbols, now_ms=now), runs)
            with Scanner(store, cfg, INTERVALS) as sc:
                ours = {s.symbol: s.score for s in sc.scan(symbols, now_ms=now).signals}

            def talib_scan() -> np.ndarray:
                per = [[store.load(s, i, limit=LOOKBACK)[list(OHLCVQ)] for i in INTERVALS] for s in symbols]
                return talib_scores(per, cfg)

            try:
                ref = talib_scan()
                base = Side.of("serial TA-Lib loop", _times(talib_scan, runs), n)
                diff = max(abs(ref[k] - ours[s]) for k, s in enumerate(symbols) if s in ours)
                note = f"same scores as the TA-Lib loop (max difference {diff:.1e} points); both include loading the store"
            except ImportError:
                with Scanner(store, cfg.model_copy(update={"strategy": "serial"}), INTERVALS) as sc:
                    base = Side.of("serial (trader kernels; TA-Lib not installed)", _times(lambda: sc.scan(symbols, now_ms=now), runs), n)
                note = "TA-Lib not installed (pip install ta-lib): the baseline is trader's own kernels run per symbol"
    labels = {"vectorized": "trader vectorized", "threads": "threads (2)", "processes": "process pool (2, reused)"}
    return Comparison(
        "scoring",
        f"scoring {n} symbols x 1h, 4h (lookback {LOOKBACK}) from the store",
        base,
        [Side.of(labels[k], v, n) for k, v in walls.items()],
        "threads 0.35x of serial (the GIL)",
        note + "; threads cannot beat a serial loop for CPU-bound numpy on small arrays (the GIL); processes pay pickling",
    ).finish()


def _incremental(symbols: Sequence[str], runs: int) -> Comparison:
    """One new closed kline for every series: the fastest full recomputation vs O(1) updates."""
    from trader.features.indicators import IndicatorState, compute_last
    from trader.replay.dataset import ReplayDataset

    ds = ReplayDataset()
    p = IndicatorConfig()
    blocks = [ds.series(s, i).values[list(OHLCVQ), -(LOOKBACK + 1) :] for s in symbols for i in INTERVALS]
    arrays = [np.ascontiguousarray(np.stack([b[j] for b in blocks])) for j in range(6)]
    ho, hh, hl, hc, hv, hq = (a[:, :-1] for a in arrays)
    window = [np.ascontiguousarray(a[:, 1:]) for a in arrays]
    wo, wh, wl, wc, wv, wq = window
    new = [a[:, -1].copy() for a in arrays]
    state = IndicatorState.from_history(ho, hh, hl, hc, hv, hq, p)
    full = {"trader batch kernels": _times(lambda: compute_last(wo, wh, wl, wc, wv, wq, p), runs * 5)}
    try:
        import talib  # noqa: F401

        def talib_all() -> None:
            for k in range(wc.shape[0]):
                _talib_indicators(wo[k], wh[k], wl[k], wc[k], wv[k], wq[k], p)

        full["TA-Lib per series"] = _times(talib_all, runs * 5)
    except ImportError:
        pass
    best = min(full, key=lambda k: statistics.median(full[k]))

    def step() -> None:
        state.update(new[1], new[2], new[3], new[4], new[5])

    inc = _times(step, runs * 5)
    m = len(symbols) * len(INTERVALS)
    others = ", ".join(f"{k} {statistics.median(v) * 1e3:.2f} ms" for k, v in full.items())
    return Comparison(
        "incremental",
        f"indicators after one new kline ({m} series, lookback {LOOKBACK})",
        Side.of(f"full recomputation ({best})", full[best], len(symbols)),
        [Side.of("incremental O(1)", inc, len(symbols))],
        "10x",
        f"baseline = the fastest full recomputation measured ({others})",
    ).finish()


def _process_pool(symbols: Sequence[str], runs: int) -> Comparison:
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    cfg = ScanConfig(strategy="processes", workers=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        now = _build_store(path, symbols)
        with KlineStore(path) as store:

            def fresh() -> None:
                with Scanner(store, cfg, INTERVALS) as sc:
                    sc.scan(symbols, now_ms=now)

            per_scan = _times(fresh, runs)
            with Scanner(store, cfg, INTERVALS) as sc:
                sc.scan(symbols, now_ms=now)
                reused = _times(lambda: sc.scan(symbols, now_ms=now), runs)
    saved = statistics.median(per_scan) - statistics.median(reused)
    return Comparison(
        "process_pool",
        f"process pool per scan vs reused ({len(symbols)} symbols, 2 workers)",
        Side.of("new pool per scan", per_scan),
        [Side.of("pool reused", reused)],
        "0.5-1 s saved per cycle",
        f"saved per cycle: {saved:.3f} s (workers import no model yet; forkserver start-up is cheap)",
    ).finish()


def _ml_model(store_path: Path, symbols: Sequence[str]) -> tuple[Any, Any, np.ndarray]:
    """Train a compare-sized model on the bundled history, register it in ``store_path``: ``(ActiveModel, booster, rows)``."""
    import xgboost as xgb

    from trader.features.matrix import FEATURE_SET, FeatureParams, feature_names
    from trader.ml.dataset import build_dataset
    from trader.ml.export import to_onnx
    from trader.ml.predict import ActiveModel
    from trader.ml.registry import Registry
    from trader.ml.train import labels
    from trader.replay.dataset import ReplayDataset

    rd = ReplayDataset()
    params = FeatureParams(INTERVALS)
    ds = build_dataset(lambda sym, iv: rd.series(sym, iv).values, symbols, params)
    y = labels(ds, "excess", "24h")
    ok = np.isfinite(y)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.05, "nthread": 2, "verbosity": 0},
                        xgb.DMatrix(ds.features[ok], label=y[ok]), 200)
    names = feature_names(INTERVALS)
    meta = {"id": "compare", "feature_set": FEATURE_SET, "features": names, "feature_params": params.as_dict()}
    info = Registry(store_path).register("compare", {"model.onnx": to_onnx(booster, len(names))}, meta)
    rows = ds.features[:, -1][ds.valid[:, -1]]
    return ActiveModel(info.path, info.meta), booster, rows


def _ml(symbols: Sequence[str], runs: int) -> list[Comparison]:
    from trader.ml.predict import ActiveModel
    from trader.scan import Scanner
    from trader.store.klines import KlineStore

    reps = 200  # inference calls per timed run (one call is ~0.1-1 ms)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        now = _build_store(path, symbols)
        model, booster, rows = _ml_model(path, symbols)
        one = rows[:1]

        def loop(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> Callable[[], None]:
            def run() -> None:
                for _ in range(reps):
                    fn(x)
            return run

        native = partial(booster.inplace_predict)
        onnx = model.onnx.predict
        n = rows.shape[0]
        out.append(Comparison(
            "ml_batch", f"model inference, {n} rows at once (the universe), per call",
            Side.of("xgboost inplace_predict", [t / reps for t in _times(loop(native, rows), runs)]),
            [Side.of("onnxruntime", [t / reps for t in _times(loop(onnx, rows), runs)])],
            "ONNX 3-5x", f"{rows.shape[1]} float32 features; one onnxruntime intra-op thread; xgboost with 2 threads",
        ).finish())
        out.append(Comparison(
            "ml_row", "model inference, one row per call",
            Side.of("xgboost inplace_predict", [t / reps for t in _times(loop(native, one), runs)]),
            [Side.of("onnxruntime", [t / reps for t in _times(loop(onnx, one), runs)])],
            "2-5 ms -> 1-3 ms", "what a loop over symbols pays per prediction",
        ).finish())
        cfg = ScanConfig(strategy="processes", workers=2)
        with KlineStore(path) as store:

            def fresh() -> None:  # what a cron job pays: a new pool and a new model session every scan
                with Scanner(store, cfg, INTERVALS, model=ActiveModel(model.folder, model.meta)) as sc:
                    sc.scan(symbols, now_ms=now)

            per_scan = _times(fresh, runs)
            with Scanner(store, cfg, INTERVALS, model=model) as sc:
                sc.scan(symbols, now_ms=now)
                reused = _times(lambda: sc.scan(symbols, now_ms=now), runs)
        saved = statistics.median(per_scan) - statistics.median(reused)
        out.append(Comparison(
            "ml_pool", f"scan with a model: pool + model session per scan vs both kept ({len(symbols)} symbols, 2 workers)",
            Side.of("new pool + model session per scan", per_scan),
            [Side.of("pool and model session reused", reused)],
            "0.5-1 s saved per cycle", f"saved per cycle: {saved:.3f} s",
        ).finish())
    return out


def run_compare(
    which: Sequence[str], *, quick: bool, latency_ms: float = 100.0, symbols: Sequence[str] | None = None, runs: int | None = None
) -> list[Comparison]:
    """Run the named comparisons (subset of :data:`COMPARISONS`).

    Args:
        which: comparison names.
        quick: 20 symbols (full: every bundled symbol).
        latency_ms: REST latency injected into the replay exchange, ms.
        symbols: override the symbol list.
        runs: timed runs per side (default 3 quick, 5 full; never fewer than 3).

    Raises:
        ConfigError: an unknown comparison name.
    """
    from trader.replay.dataset import ReplayDataset

    unknown = [w for w in which if w not in COMPARISONS]
    if unknown:
        raise ConfigError(f"unknown comparison(s) {', '.join(unknown)}; expected {', '.join(COMPARISONS)}")
    universe = list(symbols) if symbols else list(ReplayDataset().symbols)[: 20 if quick else None]
    n_runs = max(3, runs or (3 if quick else 5))
    out = []
    for name in which:
        if name == "rest_vs_ws":
            out.append(asyncio.run(_rest_vs_ws(universe, latency_ms, n_runs, name)))
        elif name == "rest_vs_ws_0ms":
            out.append(asyncio.run(_rest_vs_ws(universe, 0.0, n_runs, name)))
        elif name == "serial_vs_concurrent":
            out.append(asyncio.run(_serial_vs_concurrent(universe, latency_ms, n_runs)))
        elif name == "scoring":
            out.append(_scoring(universe, n_runs))
        elif name == "incremental":
            out.append(_incremental(universe, n_runs))
        elif name == "process_pool":
            out.append(_process_pool(universe, n_runs))
    wanted_ml = [w for w in which if w.startswith("ml_")]
    if wanted_ml:
        out += [c for c in _ml(universe, n_runs) if c.name in wanted_ml]
    return out
