"""A Binance-spot-compatible REST exchange that replays recorded klines (aiohttp web server).

Endpoints (Binance spot REST API, "Market Data endpoints" and "General endpoints"):

=========================  ======================================================  ==========
path                       parameters                                              weight
=========================  ======================================================  ==========
GET /api/v3/ping           —                                                       1
GET /api/v3/time           —                                                       1
GET /api/v3/exchangeInfo   symbol | symbols (JSON array)                           20
GET /api/v3/ticker/24hr    symbol | symbols; none = all symbols                    2 one / 2 for 1-20,
                                                                                   40 for 21-100, 80 for
                                                                                   101+ or all
GET /api/v3/klines         symbol, interval (mandatory); startTime, endTime,      2
                           limit (default 500, max 1000), timeZone (accepted)
=========================  ======================================================  ==========

Replay clock: only klines that opened at or before the replay "now" exist. The last one, if still
open, is served as Binance serves a forming candle: its ``close_time`` is the scheduled close and
its values follow a deterministic intrabar path through the real candle (see :func:`forming_row`).
Closed klines are the recorded values, byte for byte in Binance's format.

Non-Binance control endpoints for tests and demos live under ``/replay/`` (``GET /replay/clock``,
``POST /replay/clock?stepMs=N``); they cost no weight.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from trader.config import FaultConfig, ReplayConfig
from trader.exchange.replay.clock import ReplayClock
from trader.exchange.replay.dataset import ReplayDataset, Series, split_symbol
from trader.exchange.replay.limits import WeightLimiter
from trader.exchange.replay.streams import StreamHub, WsConfig
from trader.models import BINANCE_INTERVALS

__all__ = ["ReplayExchange", "ReplayStats", "default_start_ms", "forming_row"]

_JSON = "application/json;charset=UTF-8"
_SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_INT_RANGE = "^-?[0-9]{1,20}$"
_KLINE_PARAMS = {"symbol", "interval", "startTime", "endTime", "limit", "timeZone"}
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


class BinanceError(Exception):
    """An error answered as Binance does: HTTP status + ``{"code": c, "msg": m}``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}


def default_start_ms(dataset: ReplayDataset) -> int:
    """Default replay start: data start + 1000 klines of the longest interval (rounded to it).

    With the bundled 1h/4h data this leaves 1000 closed 4h (and 4000 closed 1h) klines behind "now"
    — enough for a cold ``warm --klines 1000`` of every interval — and 3296 h of data ahead.
    """
    first, last = dataset.bounds_ms()
    longest = max(BINANCE_INTERVALS[i] or 0 for i in dataset.intervals)
    return min(first + 1000 * longest, last - longest)


def _price(x: float, decimals: int) -> str:
    return f"{round(x, decimals):.8f}"


def forming_row(series: Series, index: int, now_ms: int) -> list[Any]:
    """Binance kline array of the candle ``index`` as it looked at ``now_ms`` while still open.

    Intrabar path (deterministic, documented): with recorded O, H, L, C the price moves in straight
    lines O -> L -> H -> C when C >= O, else O -> H -> L -> C, reaching each waypoint after 1/3, 2/3
    and 3/3 of the interval. At fraction ``f`` of the interval the served close is the path price,
    high/low the extremes visited so far, and volume, quote volume, trades and taker volumes are the
    recorded totals x ``f`` (pro rata). Prices round to the symbol's tick, volumes down to its step.
    At ``f = 1`` the row equals the recorded closed candle; closed candles are never invented.

    Args:
        series: the recorded series.
        index: row of the forming candle (its open_time <= now_ms < its close_time + 1).
        now_ms: replay now, epoch ms.

    Returns:
        A 12-element list in Binance's kline order (strings for prices and volumes).
    """
    v = series.values[index]
    o, h, lo, c = float(v[1]), float(v[2]), float(v[3]), float(v[4])
    open_ms = int(series.open_time_ms[index])
    f = min(max((now_ms - open_ms) / series.interval_ms, 0.0), 1.0)
    waypoints = (o, lo, h, c) if c >= o else (o, h, lo, c)
    pos = f * 3.0
    seg = min(int(pos), 2)
    frac = pos - seg
    price = waypoints[seg] + (waypoints[seg + 1] - waypoints[seg]) * frac
    visited = (*waypoints[: seg + 1], price)
    pd, qd = series.price_decimals, series.qty_decimals
    scale = 10.0**qd

    def qty(x: float) -> str:
        return f"{math.floor(x * f * scale + 1e-9) / scale:.8f}"

    return [
        open_ms,
        _price(o, pd),
        _price(max(visited), pd),
        _price(min(visited), pd),
        _price(price, pd),
        qty(float(v[5])),
        open_ms + series.interval_ms - 1,
        f"{float(v[7]) * f:.8f}",
        math.floor(float(v[8]) * f + 1e-9),
        qty(float(v[9])),
        f"{float(v[10]) * f:.8f}",
        "0",
    ]


@dataclass
class ReplayStats:
    """Counters of what clients asked, for tests and benchmarks.

    Attributes:
        requests: requests per path (including rejected ones).
        statuses: responses per HTTP status.
        weight: total weight charged.
        log: the last 100 000 requests as ``(weight_clock seconds, path, HTTP status)``.
    """

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    weight: int = 0
    log: deque[tuple[float, str, int]] = field(default_factory=lambda: deque(maxlen=100_000))

    def reset(self) -> None:
        """Zero every counter and clear the log."""
        self.requests.clear()
        self.statuses.clear()
        self.weight = 0
        self.log.clear()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReplayExchange:
    """The replay exchange as an async context manager, usable in-process from tests.

    ```python
    async with ReplayExchange(port=0, speed=0) as ex:
        httpx.get(f"{ex.rest_url}/api/v3/klines", params={...})
        ex.clock.step(3_600_000)
    ```

    Args:
        dataset: recorded klines; default the bundled Binance data.
        host: interface to bind; loopback unless told otherwise.
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        start_ms: replay start (epoch ms); None = :func:`default_start_ms`.
        speed: replay ms per wall ms (0 freezes the clock; tests step it).
        weight_limit: request weight per IP per minute.
        ban_after_429s: requests tolerated during a 429 back-off before an IP ban.
        faults: latency / 5xx / forced-429 injection.
        ws: WebSocket stream behaviour and faults.
        wall: monotonic clock of the replay clock (seconds).
        weight_clock: epoch-seconds clock of the weight windows (injectable for tests).
    """

    def __init__(
        self,
        dataset: ReplayDataset | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_ms: int | None = None,
        speed: float = 1.0,
        weight_limit: int = 6000,
        ban_after_429s: int = 3,
        faults: FaultConfig | None = None,
        ws: WsConfig | None = None,
        wall: Callable[[], float] = time.monotonic,
        weight_clock: Callable[[], float] = time.time,
    ) -> None:
        self.dataset = dataset if dataset is not None else ReplayDataset()
        self.host = host
        self._requested_port = port
        self.port = port
        self.clock = ReplayClock(start_ms if start_ms is not None else default_start_ms(self.dataset), speed, wall)
        self.limiter = WeightLimiter(weight_limit, ban_after_429s, weight_clock)
        self._weight_clock = weight_clock
        self.faults = faults or FaultConfig()
        self._rng = random.Random(self.faults.seed)
        self.stats = ReplayStats()
        self.hub = StreamHub(self.dataset, self.clock, ws)
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_config(cls, cfg: ReplayConfig, *, port: int | None = None, **kwargs: Any) -> ReplayExchange:
        """Build from the ``replay`` section of the settings (``start`` may be "auto", epoch ms or ISO-8601)."""
        dataset = ReplayDataset(cfg.data_dir) if cfg.data_dir else ReplayDataset()
        start_ms: int | None
        if cfg.start == "auto":
            start_ms = None
        elif isinstance(cfg.start, int) or str(cfg.start).lstrip("-").isdigit():
            start_ms = int(cfg.start)
        else:
            from datetime import UTC, datetime

            dt = datetime.fromisoformat(str(cfg.start))
            start_ms = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
        return cls(
            dataset,
            host=cfg.host,
            port=cfg.port if port is None else port,
            start_ms=start_ms,
            speed=cfg.speed,
            weight_limit=cfg.weight_limit,
            ban_after_429s=cfg.ban_after_429s,
            faults=cfg.faults,
            ws=WsConfig(**cfg.ws.model_dump()),
            **kwargs,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def rest_url(self) -> str:
        """REST base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket base URL, e.g. ``ws://127.0.0.1:41234``."""
        return f"ws://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        """The aiohttp application (routes and middleware), without binding a socket."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/ws", self.hub.handle)
        app.router.add_get("/ws/{streams:.*}", self.hub.handle)
        app.router.add_get("/stream", self.hub.handle)
        app.router.add_get("/replay/clock", self._clock_get)
        app.router.add_post("/replay/clock", self._clock_post)
        return app

    async def start(self) -> None:
        """Bind and start serving; :attr:`port` holds the bound port afterwards."""
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.hub.start()

    async def stop(self) -> None:
        """Stop serving and release the socket."""
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ReplayExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ middleware

    def _weight(self, request: web.Request) -> int:
        path = request.path
        if path == "/api/v3/klines":
            return 2
        if path == "/api/v3/exchangeInfo":
            return 20
        if path == "/api/v3/ticker/24hr":
            q = request.query
            if "symbol" in q:
                return 2
            if "symbols" in q:
                try:
                    n = len(orjson.loads(q["symbols"]))
                except (orjson.JSONDecodeError, TypeError):
                    return 2
                return 2 if n <= 20 else 40 if n <= 100 else 80
            return 80
        if path.startswith("/replay/") or path.startswith("/ws") or path.startswith("/stream"):
            return 0
        return 1

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.requests[request.path] += 1
        f = self.faults
        if f.latency_ms or f.jitter_ms:
            await asyncio.sleep((f.latency_ms + self._rng.uniform(0.0, f.jitter_ms)) / 1000.0)
        ip = request.remote or "unknown"
        weight = self._weight(request)
        try:
            if weight == 0:
                response = await handler(request)
            else:
                if f.rate_429 and self._rng.random() < f.rate_429:
                    adm = self.limiter.force_429(ip)
                else:
                    adm = self.limiter.admit(ip, weight)
                used = {"X-MBX-USED-WEIGHT-1M": str(adm.used_weight)}
                if adm.status == 418:
                    raise BinanceError(
                        418,
                        -1003,
                        f"Way too much request weight used; IP banned until {adm.banned_until_ms}. "
                        "Please use WebSocket Streams for live updates to avoid bans.",
                        {**used, "Retry-After": str(adm.retry_after_s)},
                    )
                if adm.status == 429:
                    raise BinanceError(
                        429,
                        -1003,
                        f"Too much request weight used; current limit is {self.limiter.limit} request weight "
                        "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                        {**used, "Retry-After": str(adm.retry_after_s)},
                    )
                self.stats.weight += weight
                if f.error_rate and self._rng.random() < f.error_rate:
                    raise BinanceError(500, -1001, "Internal error; unable to process your request. Please try again.", used)
                try:
                    response = await handler(request)
                except BinanceError as exc:
                    exc.headers.update(used)
                    raise
                response.headers.update(used)
        except BinanceError as exc:
            response = web.Response(
                status=exc.status,
                body=orjson.dumps({"code": exc.code, "msg": exc.msg}),
                content_type="application/json",
                charset="UTF-8",
                headers=exc.headers,
            )
        self.stats.statuses[response.status] += 1
        self.stats.log.append((self._weight_clock(), request.path, response.status))
        return response

    # ------------------------------------------------------------------ parameters

    @staticmethod
    def _check_params(request: web.Request, allowed: set[str]) -> dict[str, str]:
        q = request.query
        params: dict[str, str] = {}
        for key in q:
            if len(q.getall(key)) > 1:
                raise BinanceError(400, -1101, "Duplicate values for a parameter detected.")
            params[key] = q[key]
        unknown = [k for k in params if k not in allowed]
        if unknown:
            read = len(params) - len(unknown)
            raise BinanceError(
                400, -1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{len(params)}'."
            )
        return params

    @staticmethod
    def _mandatory(params: dict[str, str], name: str) -> str:
        value = params.get(name, "")
        if not value:
            raise BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return value

    @staticmethod
    def _int(params: dict[str, str], name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        body = raw[1:] if raw.startswith("-") else raw
        if not body.isdigit() or len(body) > 20 or not body.isascii():
            raise BinanceError(
                400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{_INT_RANGE}'."
            )
        return int(raw)

    def _symbol(self, raw: str) -> str:
        if not raw or len(raw) > 20 or not set(raw) <= _SYMBOL_CHARS:
            raise BinanceError(
                400, -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
            )
        if raw not in self._symbols():
            raise BinanceError(400, -1121, "Invalid symbol.")
        return raw

    def _symbols(self) -> frozenset[str]:
        return frozenset(self.dataset.symbols)

    def _symbol_list(self, raw: str) -> list[str]:
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError:
            items = None
        if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'; legal range is '^\\[\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}\\]$'.")
        if len(set(items)) != len(items):
            raise BinanceError(400, -1101, "Duplicate values for a parameter detected.")
        return [self._symbol(s) for s in items]

    @staticmethod
    def _json(payload: Any) -> web.Response:
        return web.Response(body=orjson.dumps(payload), content_type="application/json", charset="UTF-8")

    # ------------------------------------------------------------------ endpoints

    async def _ping(self, request: web.Request) -> web.Response:
        self._check_params(request, set())
        return self._json({})

    async def _time(self, request: web.Request) -> web.Response:
        self._check_params(request, set())
        return self._json({"serverTime": self.clock.now_ms()})

    async def _klines(self, request: web.Request) -> web.Response:
        params = self._check_params(request, _KLINE_PARAMS)
        symbol = self._symbol(self._mandatory(params, "symbol"))
        interval = self._mandatory(params, "interval")
        if interval not in BINANCE_INTERVALS:
            raise BinanceError(400, -1120, "Invalid interval.")
        start = self._int(params, "startTime")
        end = self._int(params, "endTime")
        limit = self._int(params, "limit")
        if limit is None:
            limit = 500
        if limit < 1 or limit > 1000:
            raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and start > end:
            raise BinanceError(400, -1023, "Start time is greater than end time.")
        if not self.dataset.has(symbol, interval):
            return web.Response(body=b"[]", content_type="application/json", charset="UTF-8")
        series = self.dataset.series(symbol, interval)
        now = self.clock.now_ms()
        ot = series.open_time_ms
        visible = int(np.searchsorted(ot, now, side="right"))
        hi = visible if end is None else min(visible, int(np.searchsorted(ot, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(ot, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(hi - limit, 0)
        if hi <= lo:
            return web.Response(body=b"[]", content_type="application/json", charset="UTF-8")
        forming = visible > 0 and now < int(ot[visible - 1]) + series.interval_ms
        closed_hi = hi - 1 if forming and hi == visible else hi
        body = series.rows_json(lo, closed_hi)
        if closed_hi < hi:
            last = orjson.dumps(forming_row(series, hi - 1, now))
            body = body + b"," + last if body else last
        return web.Response(body=b"[" + body + b"]", content_type="application/json", charset="UTF-8")

    def _symbol_info(self, symbol: str) -> dict[str, Any]:
        base, quote = split_symbol(symbol)
        series = self.dataset.series(symbol, self.dataset.intervals[0])
        pd, qd = series.price_decimals, series.qty_decimals
        tick = f"{10.0**-pd:.8f}"
        step = f"{10.0**-qd:.8f}"
        max_price = f"{round(float(series.values[:, 2].max()) * 1000, pd):.8f}"
        return {
            "symbol": symbol,
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": max_price, "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00000000", "stepSize": step},
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "5.00000000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _exchange_info(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"})
        if "symbol" in params and "symbols" in params:
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        if "symbol" in params:
            symbols = [self._symbol(params["symbol"])]
        elif "symbols" in params:
            symbols = self._symbol_list(params["symbols"])
        else:
            symbols = list(self.dataset.symbols)
        return self._json(
            {
                "timezone": "UTC",
                "serverTime": self.clock.now_ms(),
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.limiter.limit},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(s) for s in symbols],
            }
        )

    def _ticker(self, symbol: str, now: int, full: bool) -> dict[str, Any]:
        interval = self.dataset.intervals[0]
        series = self.dataset.series(symbol, interval)
        ot = series.open_time_ms
        visible = int(np.searchsorted(ot, now, side="right"))
        per_day = max(1, _DAY_MS // series.interval_ms)
        lo = max(visible - per_day, 0)
        rows = [list(map(float, series.values[i])) for i in range(lo, visible)]
        if visible and now < int(ot[visible - 1]) + series.interval_ms:
            fr = forming_row(series, visible - 1, now)
            rows[-1] = [float(x) for x in fr[:11]]
        if not rows:
            raise BinanceError(400, -1121, "Invalid symbol.")
        pd = series.price_decimals
        open_p, last = rows[0][1], rows[-1][4]
        high = max(r[2] for r in rows)
        low = min(r[3] for r in rows)
        volume = sum(r[5] for r in rows)
        quote_volume = sum(r[7] for r in rows)
        count = int(sum(r[8] for r in rows))
        prev_close = float(series.values[lo - 1][4]) if lo > 0 else open_p
        last_id = int(series.trades_cumsum[visible - 2]) + int(rows[-1][8]) if visible > 1 else int(rows[-1][8])
        tick = 10.0**-pd
        avg_qty = round(volume / max(count, 1), series.qty_decimals) or 10.0**-series.qty_decimals
        out: dict[str, Any] = {"symbol": symbol}
        if full:
            change = last - open_p
            out.update(
                priceChange=_price(change, pd),
                priceChangePercent=f"{(change / open_p * 100.0) if open_p else 0.0:.3f}",
                weightedAvgPrice=f"{(quote_volume / volume) if volume else last:.8f}",
                prevClosePrice=_price(prev_close, pd),
                lastPrice=_price(last, pd),
                lastQty=f"{avg_qty:.8f}",
                bidPrice=_price(last - tick, pd),
                bidQty=f"{avg_qty:.8f}",
                askPrice=_price(last, pd),
                askQty=f"{avg_qty:.8f}",
            )
        out.update(openPrice=_price(open_p, pd), highPrice=_price(high, pd), lowPrice=_price(low, pd))
        if not full:  # MINI: lastPrice follows lowPrice (Binance docs, "24hr ticker price change statistics")
            out["lastPrice"] = _price(last, pd)
        out.update(
            volume=f"{volume:.8f}",
            quoteVolume=f"{quote_volume:.8f}",
            openTime=now - _DAY_MS,
            closeTime=now,
            firstId=last_id - count + 1,
            lastId=last_id,
            count=count,
        )
        return out

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "type"})
        kind = params.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise BinanceError(400, -1130, "Data sent for parameter 'type' is not valid.")
        if "symbol" in params and "symbols" in params:
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        now = self.clock.now_ms()
        full = kind == "FULL"
        if "symbol" in params:
            return self._json(self._ticker(self._symbol(params["symbol"]), now, full))
        symbols = self._symbol_list(params["symbols"]) if "symbols" in params else list(self.dataset.symbols)
        return self._json([self._ticker(s, now, full) for s in symbols])

    async def _clock_get(self, request: web.Request) -> web.Response:
        return self._json({"nowMs": self.clock.now_ms(), "speed": self.clock.speed})

    async def _clock_post(self, request: web.Request) -> web.Response:
        try:
            step = int(request.query.get("stepMs", "0"))
            now = self.clock.step(step)
        except ValueError as exc:
            raise BinanceError(400, -1130, f"Data sent for parameter 'stepMs' is not valid: {exc}") from None
        return self._json({"nowMs": now, "speed": self.clock.speed})
