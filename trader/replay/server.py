"""A Binance-spot-compatible REST exchange that replays recorded klines (aiohttp web server).

Endpoints (Binance spot REST API, "General endpoints" and "Market Data endpoints"); the path,
weight and security of each come from :mod:`trader.exchange.endpoints`, shared with the client:

==============================  ===============================================================
path                            parameters
==============================  ===============================================================
GET /api/v3/ping, /time         —
GET /api/v3/exchangeInfo        symbol | symbols (JSON array); filters from the data up to now
GET /api/v3/klines, /uiKlines   symbol, interval; startTime, endTime, limit (default 500, max 1000),
                                timeZone (accepted)
GET /api/v3/ticker/24hr         symbol | symbols | none; type FULL | MINI
GET /api/v3/ticker              symbol | symbols; windowSize 1m-59m, 1h-23h, 1d-7d; type
GET /api/v3/ticker/tradingDay   symbol | symbols; timeZone; type (the trading day so far, on the path)
GET /api/v3/ticker/price        symbol | symbols | none
GET /api/v3/ticker/bookTicker   symbol | symbols | none
GET /api/v3/avgPrice            symbol
GET /api/v3/depth               symbol; limit (default 100, max 5000)
==============================  ===============================================================

Replay clock: only klines that opened at or before the replay "now" exist; the last one, if still
open, is served as Binance serves a forming kline (see :mod:`trader.replay.market`). Closed klines
are the recorded values, byte for byte in Binance's format. Every time the venue reports (server
time, tickers, ban expiry) is on its clock. ``--clock wall`` shifts the recording by a whole number
of 21-day periods (a multiple of every interval's boundary period: 1w, 3d, 1d, ...) so its "now"
is the wall clock, and clients that count back from their own clock get data.

Errors are Binance's: HTTP 400 ``{"code": -1121, "msg": "Invalid symbol."}`` and friends; an interval
that is neither recorded nor derivable is -1120 with the list of what is served; a known Binance
endpoint the venue cannot serve (no recorded trades) is -1020; any other path is HTTP 404 with a
JSON body. Non-Binance control endpoints for tests and demos live under ``/replay/``
(``GET /replay/clock``, ``POST /replay/clock?stepMs=N`` from loopback peers only; ``POST /replay/balance``
signed by the account it credits); they cost no weight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from trader.config import (
    AccountConfig,
    FaultConfig,
    FuturesReplayConfig,
    MatchingReplayConfig,
    ReplayConfig,
    WsReplayConfig,
)
from trader.errors import ConfigError
from trader.exchange.endpoints import by_path
from trader.models import BINANCE_INTERVALS
from trader.replay import market
from trader.replay.clock import ReplayClock
from trader.replay.dataset import DERIVABLE, ReplayDataset, Series
from trader.replay.limits import WeightLimiter
from trader.replay.matching import Rejected
from trader.replay.streams import StreamHub
from trader.replay.trading import TradingVenue

__all__ = ["SHIFT_PERIOD_MS", "BinanceError", "ReplayExchange", "ReplayStats", "default_start_ms", "wall_shift_ms"]

_SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_INT_RANGE = "^-?[0-9]{1,20}$"
_KLINE_PARAMS = {"symbol", "interval", "startTime", "endTime", "limit", "timeZone"}
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS
#: ``--clock wall`` shifts the recording by multiples of this: 21 days = lcm(1w, 3d), so every
#: interval's boundaries (1w on Monday included) stay where Binance puts them.
SHIFT_PERIOD_MS = 21 * _DAY_MS
#: Binance endpoints the venue knows but cannot serve (there are no recorded trades or order history).
_UNSUPPORTED = {"/api/v3/trades", "/api/v3/historicalTrades", "/api/v3/aggTrades"}


class BinanceError(Rejected):
    """An error answered as Binance does: HTTP status + ``{"code": c, "msg": m}`` — the market-data
    handlers' spelling (status first) of :class:`trader.replay.matching.Rejected`, which the
    middleware answers."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code, msg, status, headers)


def default_start_ms(dataset: ReplayDataset) -> int:
    """Default replay start: data start + 1000 klines of the longest recorded interval (rounded to it).

    With the bundled 1h/4h data this leaves 1000 closed 4h (and 4000 closed 1h) klines behind "now"
    — enough for a cold ``warm --klines 1000`` of every interval — and 3296 h of data ahead.
    """
    first, last = dataset.bounds_ms()
    longest = max(BINANCE_INTERVALS[i] or 0 for i in dataset.intervals)
    return min(first + 1000 * longest, last - longest)


def wall_shift_ms(recorded_now_ms: int, wall_now_ms: int) -> int:
    """The shift (a multiple of :data:`SHIFT_PERIOD_MS`) that puts recorded time within one period
    after ``recorded_now_ms`` at the wall clock's now. Pure."""
    return (wall_now_ms - recorded_now_ms) // SHIFT_PERIOD_MS * SHIFT_PERIOD_MS


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


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", charset="UTF-8")


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
        clock: a ready-made clock (``--clock wall``); overrides ``start_ms`` and ``speed``.
        weight_limit: request weight per IP per minute.
        ban_after_429s: requests tolerated during a 429 back-off before an IP ban.
        faults: latency / 5xx / forced-429 injection.
        ws: WebSocket stream behaviour and faults (the ``replay.ws`` config section).
        spread_bps: synthetic bid/ask spread, basis points.
        ssl_context: serve https:// and wss:// with it (``--tls``).
        wall: monotonic clock of the replay clock (seconds).
        weight_clock: epoch-seconds clock of the weight windows (injectable for tests).
        background_load: parse and validate every data file in a background thread after start.
        accounts: trading accounts (``replay.accounts``); empty = one generated account.
        matching: fill rules and order limits (``replay.matching``).
        futures: the USD-M venue's fees, funding, tiers and order limits (``replay.futures``).
    """

    def __init__(
        self,
        dataset: ReplayDataset | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_ms: int | None = None,
        speed: float = 1.0,
        clock: ReplayClock | None = None,
        weight_limit: int = 6000,
        ban_after_429s: int = 3,
        faults: FaultConfig | None = None,
        ws: WsReplayConfig | None = None,
        spread_bps: float = 2.0,
        ssl_context: Any = None,
        wall: Callable[[], float] = time.monotonic,
        weight_clock: Callable[[], float] = time.time,
        background_load: bool = False,
        accounts: list[AccountConfig] | None = None,
        matching: MatchingReplayConfig | None = None,
        futures: FuturesReplayConfig | None = None,
    ) -> None:
        self.dataset = dataset if dataset is not None else ReplayDataset()
        self.host = host
        self._requested_port = port
        self.port = port
        self.clock = clock or ReplayClock(start_ms if start_ms is not None else default_start_ms(self.dataset), speed, wall)
        self.faults = faults or FaultConfig()
        # one round trip: the venue's own injected latency, plus 250 ms of network
        grace = 0.25 + (self.faults.latency_ms + self.faults.jitter_ms) / 1000.0
        self.limiter = WeightLimiter(weight_limit, ban_after_429s, weight_clock, grace_s=grace)
        self._weight_clock = weight_clock
        self.spread_bps = spread_bps
        self._ssl = ssl_context
        self._rng = random.Random(self.faults.seed)
        self.stats = ReplayStats()
        self.hub = StreamHub(self.dataset, self.clock, ws, spread_bps)
        self._runner: web.AppRunner | None = None
        self._background = background_load
        self.problems: dict[str, str] = {}  #: symbol -> why its data cannot be served
        self.cert_path: Path | None = None
        self.trading = TradingVenue(
            self.dataset,
            self.clock,
            spread_bps,
            accounts or [],
            matching or MatchingReplayConfig(),
            self.faults,
            weight_clock,
            symbol_check=self._symbol,
        )
        self.hub.user_data = self.trading  # listen keys work as stream names on market-stream connections
        #: Binance counts /fapi request weight apart from /api: a budget of its own
        self.fapi_limiter = WeightLimiter(weight_limit, ban_after_429s, weight_clock, grace_s=grace)
        from trader.replay.futures_api import FuturesVenue

        self.futures = FuturesVenue(self, futures or FuturesReplayConfig(), weight_clock)
        self.trading.advance_hooks.append(self.futures.advance)
        self._trading_task: asyncio.Task[None] | None = None
        #: called with (request, response) after every request is handled, before the response leaves
        #: (tests: a crash right after the venue acted on the k-th request)
        self.on_response: Callable[[web.Request, web.StreamResponse], None] | None = None

    @classmethod
    def from_config(cls, cfg: ReplayConfig, *, port: int | None = None, tls_dir: Path | None = None, **kwargs: Any) -> ReplayExchange:
        """Build from the ``replay`` section (``start``: "auto", "end", epoch ms or ISO-8601; ``clock``: replay | wall).

        Raises:
            ConfigError: bad data directory, start time, or clock/speed combination.
        """
        dataset = ReplayDataset(cfg.data_dir)
        start_ms: int | None
        if cfg.start == "auto":
            start_ms = None
        elif cfg.start == "end":  # every recorded kline closed: a whole-history warm (tune's datasets)
            start_ms = dataset.bounds_ms()[1]
        elif isinstance(cfg.start, int) or str(cfg.start).lstrip("-").isdigit():
            start_ms = int(cfg.start)
        else:
            from datetime import UTC, datetime

            try:
                parsed = datetime.fromisoformat(str(cfg.start))
            except ValueError:
                raise ConfigError(f"replay.start: {cfg.start!r} is not 'auto', 'end', epoch ms or an ISO-8601 time") from None
            start_ms = int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)
        if start_ms is not None:
            first, last = dataset.bounds_ms()
            if not first <= start_ms <= last:
                from datetime import UTC, datetime

                def iso(ms: int) -> str:
                    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")

                where = "after the recording ends" if start_ms > last else "before the recording starts"
                raise ConfigError(
                    f"replay.start {cfg.start!r} ({iso(start_ms)}) is {where}: the data covers {iso(first)} .. {iso(last)}; "
                    "pick a time inside it, 'auto' or 'end'"
                )
        clock = None
        if cfg.clock == "wall":
            if cfg.speed != 1.0:
                raise ConfigError("--clock wall runs at the wall clock's speed; drop --speed (or pass 1)")
            recorded = start_ms if start_ms is not None else default_start_ms(dataset)
            wall_now = int(time.time() * 1000)
            dataset = ReplayDataset(cfg.data_dir, shift_ms=wall_shift_ms(recorded, wall_now))
            clock = ReplayClock(wall_now, 1.0, time.time, steppable=False)
        ssl_context = None
        cert = None
        if cfg.tls:
            import tempfile

            from trader.replay.tls import self_signed, server_context

            cert, key = self_signed(cfg.host, tls_dir or Path(tempfile.mkdtemp(prefix="trader-replay-tls-")))
            ssl_context = server_context(cert, key)
        ex = cls(
            dataset,
            host=cfg.host,
            port=cfg.port if port is None else port,
            start_ms=start_ms,
            speed=cfg.speed,
            clock=clock,
            weight_limit=cfg.weight_limit,
            ban_after_429s=cfg.ban_after_429s,
            faults=cfg.faults,
            ws=cfg.ws,
            spread_bps=cfg.spread_bps,
            ssl_context=ssl_context,
            accounts=list(cfg.accounts),
            matching=cfg.matching,
            futures=cfg.futures,
            **kwargs,
        )
        ex.cert_path = cert
        return ex

    # ------------------------------------------------------------------ lifecycle

    @property
    def rest_url(self) -> str:
        """REST base URL, e.g. ``http://127.0.0.1:41234`` (``https://`` with TLS)."""
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket base URL, e.g. ``ws://127.0.0.1:41234`` (``wss://`` with TLS)."""
        return f"{'wss' if self._ssl else 'ws'}://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        """The aiohttp application (routes and middleware), without binding a socket."""
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/uiKlines", self._klines)
        r.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        r.add_get("/api/v3/ticker", self._ticker_rolling)
        r.add_get("/api/v3/ticker/tradingDay", self._ticker_trading_day)
        r.add_get("/api/v3/ticker/price", self._ticker_price)
        r.add_get("/api/v3/ticker/bookTicker", self._book_ticker)
        r.add_get("/api/v3/avgPrice", self._avg_price)
        r.add_get("/api/v3/depth", self._depth)
        self.trading.routes(app)
        self.futures.routes(app)
        r.add_get("/ws", self._ws_root)
        r.add_get("/ws/{streams:.*}", self._ws_path)
        r.add_get("/stream", self.hub.handle)
        # Binance USD-M's split stream endpoints (fstream.binance.com/public|market|private/...): the same streams;
        # user data also as /private/ws?listenKey=<key> (python-binance's futures_user_socket)
        for category in ("public", "market", "private"):
            r.add_get(f"/{category}/ws", self._ws_root)
            r.add_get(f"/{category}/ws/{{streams:.*}}", self._ws_path)
            r.add_get(f"/{category}/stream", self.hub.handle)
        r.add_get("/replay/clock", self._clock_get)
        r.add_post("/replay/clock", self._clock_post)
        r.add_route("*", "/{tail:.*}", self._unknown)
        # the WebSocket API runs the REST handlers, charged to the same per-IP weight budget
        self.trading.rest_handlers = {
            (route.method, route.resource.canonical): route.handler for route in r.routes() if route.resource is not None
        }
        self.trading.charge = self._charge_ws
        self.trading.weight_limit = self.limiter.limit
        return app

    def _charge_ws(self, ip: str, weight: int, conn: object, what: str) -> Any:
        """Weight of one WebSocket API request (or connection), counted like a REST request's."""
        self.stats.requests[what] += 1
        adm = self.limiter.admit(ip, weight, conn)
        if adm.status == 200:
            self.stats.weight += weight
        return adm

    async def start(self) -> None:
        """Bind and start serving; :attr:`port` holds the bound port afterwards."""
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True, ssl_context=self._ssl)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.hub.start()
        self._trading_task = asyncio.get_running_loop().create_task(self.trading.run())
        if self._background:
            threading.Thread(target=self.load_all, name="replay-load", daemon=True).start()

    def load_all(self, render: bool = False) -> dict[str, str]:
        """Parse and validate every data file (with ``render``, render every row too); a malformed
        file is reported once on stderr and its symbol answers -1121 from then on. Returns the problems."""
        for message in self.dataset.preload(render):
            symbol = Path(message.split(":", 1)[0]).name.rsplit("-", 1)[0]
            self.problems[symbol] = message
            print(f"replay exchange: warning: {message}; {symbol} is not served", file=sys.stderr, flush=True)
        return self.problems

    async def stop(self) -> None:
        """Stop serving and release the socket."""
        await self.hub.stop()
        self.trading.close()
        if self._trading_task is not None:
            self._trading_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trading_task
            self._trading_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ReplayExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.requests[request.path] += 1
        usdm = request.path.startswith("/fapi/")
        ep = by_path("usdm" if usdm else "spot", request.method, request.path)
        weight = ep.weight(request.query) if ep is not None else 0
        limiter = self.fapi_limiter if usdm else self.limiter
        f = self.faults
        try:
            if weight == 0:
                response = await handler(request)
            else:
                ip = request.remote or "unknown"
                conn = request.transport  # one HTTP/1.1 connection: its requests are sequential
                if f.rate_429 and self._rng.random() < f.rate_429:
                    adm = limiter.force_429(ip, conn=conn)
                else:
                    adm = limiter.admit(ip, weight, conn)  # decided on receipt
                if f.latency_ms or f.jitter_ms:  # then the response takes its time
                    await asyncio.sleep((f.latency_ms + self._rng.uniform(0.0, f.jitter_ms)) / 1000.0)
                used = {"X-MBX-USED-WEIGHT-1M": str(adm.used_weight)}
                if adm.status == 418:
                    until = self.clock.now_ms() + adm.retry_after_s * 1000  # on the venue's clock
                    raise BinanceError(
                        418,
                        -1003,
                        f"Way too much request weight used; IP banned until {until}. "
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
                except Rejected as exc:
                    exc.headers.update(used)
                    raise
                response.headers.update(used)
        except Rejected as exc:
            response = web.Response(
                status=exc.status,
                body=orjson.dumps(exc.body()),
                content_type="application/json",
                charset="UTF-8",
                headers=exc.headers,
            )
        self.stats.statuses[response.status] += 1
        self.stats.log.append((self._weight_clock(), request.path, response.status))
        if self.on_response is not None:
            self.on_response(request, response)
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
            raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{_INT_RANGE}'.")
        return int(raw)

    def _symbol(self, raw: str) -> str:
        if not raw or len(raw) > 20 or not set(raw) <= _SYMBOL_CHARS:
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.")
        if raw not in self.dataset.symbols:
            raise BinanceError(400, -1121, "Invalid symbol.")
        if raw in self.problems:
            raise BinanceError(400, -1121, f"Invalid symbol. (The replay data of {raw} is malformed.)")
        return raw

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

    def _symbols(self, params: dict[str, str], default_all: bool = True) -> tuple[list[str], bool]:
        """``(symbols, single)`` from ``symbol`` / ``symbols`` / neither."""
        if "symbol" in params and "symbols" in params:
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        if "symbol" in params:
            return [self._symbol(params["symbol"])], True
        if "symbols" in params:
            return self._symbol_list(params["symbols"]), False
        if not default_all:
            raise BinanceError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        return [s for s in self.dataset.symbols if s not in self.problems], False

    async def _series(self, symbol: str, interval: str) -> Series:
        try:
            return await self.dataset.aseries(symbol, interval)
        except ConfigError as exc:
            self.problems[symbol] = str(exc)
            raise BinanceError(400, -1121, f"Invalid symbol. (The replay data of {symbol} is malformed.)") from None

    async def _market(self, symbol: str) -> Series:
        return await self._series(symbol, self.dataset.finest(symbol))

    async def _markets(self, symbols: list[str]) -> list[Series]:
        return list(await asyncio.gather(*(self._market(s) for s in symbols)))

    # ------------------------------------------------------------------ endpoints

    async def _unknown(self, request: web.Request) -> web.Response:
        if request.path in _UNSUPPORTED:
            return _json({"code": -1020, "msg": "This operation is not supported. (The replay exchange has no recorded trades.)"}, 400)
        return _json({"code": -1000, "msg": f"Unknown endpoint {request.method} {request.path}: the replay exchange does not serve it."}, 404)

    async def _ping(self, request: web.Request) -> web.Response:
        self._check_params(request, set())
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        self._check_params(request, set())
        # the body is Binance's; the X-Replay-Speed header lets our client keep timestamps on a fast replay clock
        response = _json({"serverTime": self.clock.now_ms()})
        response.headers["X-Replay-Speed"] = repr(self.clock.speed)
        return response

    async def _ws_root(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("listenKey")
        if key and self.trading.is_listen_key(key):
            return await self.trading.listen_key_socket(request, key)
        return await self.hub.handle(request)

    async def _ws_path(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info.get("streams", "")
        if self.trading.is_listen_key(token):
            return await self.trading.listen_key_socket(request, token)
        return await self.hub.handle(request)

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
        body = await self.kline_body(symbol, interval, start, end, limit)
        return web.Response(body=body, content_type="application/json", charset="UTF-8")

    async def kline_body(self, symbol: str, interval: str, start: int | None, end: int | None, limit: int,
                         price_only: bool = False) -> bytes:
        """The JSON array of klines a ``klines`` request answers (shared by spot and USD-M; with
        ``price_only`` the USD-M mark/index price kline rows: volumes and counts zero).

        Raises:
            BinanceError: -1120 an interval the recording cannot give.
        """
        if not self.dataset.has(symbol, interval):
            recorded = ", ".join(self.dataset.intervals)
            derived = ", ".join(i for i in DERIVABLE if self.dataset.has(symbol, i) and i not in self.dataset.intervals)
            raise BinanceError(
                400, -1120, f"Invalid interval. The replay exchange serves {symbol} in {recorded} (recorded) and {derived} (derived); not {interval}."
            )
        series = await self._series(symbol, interval)
        now = self.clock.now_ms()
        ot = series.open_time_ms
        visible = series.visible(now)
        hi = visible if end is None else min(visible, int(np.searchsorted(ot, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(ot, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(hi - limit, 0)
        if hi <= lo:
            return b"[]"
        forming = visible > 0 and now < int(ot[visible - 1]) + series.interval_ms
        closed_hi = hi - 1 if forming and hi == visible else hi
        if price_only:
            rows = orjson.loads(b"[" + series.rows_json(lo, closed_hi) + b"]")
            if closed_hi < hi:
                rows.append(market.forming_row(series, hi - 1, now))
            return orjson.dumps([[r[0], r[1], r[2], r[3], r[4], "0", r[6], "0", 0, "0", "0", "0"] for r in rows])
        if series.data.rendered(lo, closed_hi):
            body = series.rows_json(lo, closed_hi)
        else:  # rendering a block of text is ~1 ms: off the event loop
            body = await asyncio.to_thread(series.rows_json, lo, closed_hi)
        if closed_hi < hi:
            last = orjson.dumps(market.forming_row(series, hi - 1, now))
            body = body + b"," + last if body else last
        return b"[" + body + b"]"

    def _exchange_info_doc(self, series: list[Series], now: int) -> bytes:
        return orjson.dumps(
            {
                "timezone": "UTC",
                "serverTime": now,
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.limiter.limit},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [market.symbol_info(s, now) for s in series],
            }
        )

    async def _exchange_info(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"})
        symbols, _ = self._symbols(params)
        series = await self._markets(symbols)
        body = await asyncio.to_thread(self._exchange_info_doc, series, self.clock.now_ms())
        return web.Response(body=body, content_type="application/json", charset="UTF-8")

    def _tickers(self, series: list[Series], open_ms: int, now: int, full: bool) -> list[dict[str, Any]]:
        out = []
        for s in series:
            stats = market.window_stats(s, open_ms, now)
            if stats is not None:
                out.append(market.ticker_doc(s, stats, full, self.spread_bps))
        return out

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "type"})
        kind = params.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise BinanceError(400, -1130, "Data sent for parameter 'type' is not valid.")
        symbols, single = self._symbols(params)
        now = self.clock.now_ms()
        docs = await asyncio.to_thread(self._tickers, await self._markets(symbols), now - _DAY_MS, now, kind == "FULL")
        if single and not docs:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return _json(docs[0] if single else docs)

    async def _ticker_rolling(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "windowSize", "type"})
        kind = params.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise BinanceError(400, -1130, "Data sent for parameter 'type' is not valid.")
        window = _window_ms(params.get("windowSize", "1d"))
        symbols, single = self._symbols(params, default_all=False)
        if len(symbols) > 100:
            raise BinanceError(400, -1101, "Too many values sent for parameter 'symbols', maximum allowed up to 100.")
        now = self.clock.now_ms()
        open_ms = (now - window) // _MINUTE_MS * _MINUTE_MS  # Binance: openTime always starts on a minute
        docs = await asyncio.to_thread(self._tickers, await self._markets(symbols), open_ms, now, kind == "FULL")
        if single and not docs:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return _json(docs[0] if single else docs)

    async def _ticker_trading_day(self, request: web.Request) -> web.Response:
        """``ticker/tradingDay``: statistics of the current trading day (UTC midnight, shifted by
        ``timeZone`` hours[:minutes], -12:00 to +14:00) up to now, from the intrabar path."""
        params = self._check_params(request, {"symbol", "symbols", "timeZone", "type", "symbolStatus"})
        kind = params.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise BinanceError(400, -1130, "Data sent for parameter 'type' is not valid.")
        offset = _tz_offset_ms(params.get("timeZone", "0"))
        symbols, single = self._symbols(params, default_all=False)
        if len(symbols) > 100:
            raise BinanceError(400, -1101, "Too many values sent for parameter 'symbols', maximum allowed up to 100.")
        now = self.clock.now_ms()
        open_ms = (now + offset) // _DAY_MS * _DAY_MS - offset
        docs = await asyncio.to_thread(self._tickers, await self._markets(symbols), open_ms, now, kind == "FULL")
        for d in docs:  # the trading-day ticker has no book or previous-close fields
            for k in ("prevClosePrice", "lastQty", "bidPrice", "bidQty", "askPrice", "askQty"):
                d.pop(k, None)
        if single and not docs:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return _json(docs[0] if single else docs)

    async def _ticker_price(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "symbolStatus"})
        symbols, single = self._symbols(params)
        now = self.clock.now_ms()
        docs = []
        for s in await self._markets(symbols):
            pd, _ = s.decimals(s.visible(now) - 1)
            docs.append({"symbol": s.symbol, "price": market.fmt_price(market.current_price(s, now), pd)})
        return _json(docs[0] if single else docs)

    async def _book_ticker(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "symbols", "symbolStatus"})
        symbols, single = self._symbols(params)
        now = self.clock.now_ms()
        docs = [market.book_ticker(s, now, self.spread_bps) for s in await self._markets(symbols)]
        return _json(docs[0] if single else docs)

    async def _avg_price(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol"})
        series = await self._market(self._symbol(self._mandatory(params, "symbol")))
        return _json(market.avg_price(series, self.clock.now_ms()))

    async def _depth(self, request: web.Request) -> web.Response:
        params = self._check_params(request, {"symbol", "limit", "symbolStatus"})
        series = await self._market(self._symbol(self._mandatory(params, "symbol")))
        limit = self._int(params, "limit") or 100
        if limit < 1:
            raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return _json(market.depth(series, self.clock.now_ms(), self.spread_bps, min(limit, 5000)))

    async def _clock_get(self, request: web.Request) -> web.Response:
        return _json({"nowMs": self.clock.now_ms(), "speed": self.clock.speed})

    async def _clock_post(self, request: web.Request) -> web.Response:
        """``POST /replay/clock?stepMs=N``: step a speed-0 clock. Loopback clients only: a venue bound
        beyond loopback (``--host``) still lets nobody else move its time."""
        if not _loopback(request.remote):
            raise BinanceError(403, -1002, "You are not authorized to execute this request: /replay/ control endpoints answer loopback clients only.")
        raw = request.query.get("stepMs", "0")
        if not raw.isdigit() or len(raw) > 15:
            raise BinanceError(400, -1130, "Data sent for parameter 'stepMs' is not valid: a whole number of ms >= 0 expected.")
        try:
            now = self.clock.step(int(raw))
        except ConfigError as exc:
            raise BinanceError(400, -1130, f"Data sent for parameter 'stepMs' is not valid: {exc}") from None
        return _json({"nowMs": now, "speed": self.clock.speed})


def _loopback(remote: str | None) -> bool:
    """True for a peer on 127.0.0.0/8 or ::1 (an IPv4-mapped IPv6 loopback included)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address((remote or "").removeprefix("::ffff:"))
    except ValueError:
        return False
    return ip.is_loopback


def _tz_offset_ms(raw: str) -> int:
    """``timeZone`` of ``ticker/tradingDay``: hours (``"-1"``, ``"10"``) or ``"hh:mm"`` in [-12:00, +14:00]."""
    sign = -1 if raw.startswith("-") else 1
    body = raw.lstrip("+-")
    hh, _, mm = body.partition(":")
    if not hh.isdigit() or (mm and not mm.isdigit()) or len(hh) > 2 or len(mm) > 2:
        raise BinanceError(400, -1130, "Data sent for parameter 'timeZone' is not valid.")
    minutes = sign * (int(hh) * 60 + int(mm or 0))
    if not -12 * 60 <= minutes <= 14 * 60:
        raise BinanceError(400, -1130, "Data sent for parameter 'timeZone' is not valid.")
    return minutes * _MINUTE_MS


def _window_ms(raw: str) -> int:
    """``windowSize`` of the rolling ticker: 1m-59m, 1h-23h, 1d-7d (Binance; units cannot be combined)."""
    units = {"m": (_MINUTE_MS, 59), "h": (_HOUR_MS, 23), "d": (_DAY_MS, 7)}
    num, unit = raw[:-1], raw[-1:]
    if unit not in units or not num.isdigit() or not 1 <= int(num) <= units[unit][1]:
        raise BinanceError(400, -1130, "Data sent for parameter 'windowSize' is not valid.")
    return int(num) * units[unit][0]
