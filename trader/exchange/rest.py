"""Async Binance REST client (httpx): klines, exchangeInfo, ticker/24hr, server time.

One :class:`BinanceClient` per process, used as ``async with``; base URLs come from the config
profile, so the same code talks to the replay exchange or to Binance. Every request goes through
the :class:`~trader.exchange.limits.WeightBudget` (weight reserved before sending, settled from
``X-MBX-USED-WEIGHT-1M``), the :class:`~trader.exchange.limits.CircuitBreaker`, and tenacity's
jittered exponential retries — for network errors, HTTP 5xx and 429 only.

Endpoints and weights:

=============  ==========================  ==========================================
endpoint       spot (``/api/v3``)          USD-M futures (``/fapi/v1``)
=============  ==========================  ==========================================
klines         weight 2 for any limit      1 (<100), 2 (<500), 5 (<=1000), 10 (>1000)
               -> pages of 1000            -> pages of 499
exchangeInfo   20                          1
ticker/24hr    2 one symbol, 80 all        1 one symbol, 40 all
time           1                           1
=============  ==========================  ==========================================

Sources: Binance spot REST API "Market Data endpoints" / "General endpoints"; Binance USD-M
futures "Market Data" (Kline/Candlestick Data: weight by limit).

Errors (see :mod:`trader.errors`): HTTP 429/418 -> :class:`RateLimited` (every request pauses for
Retry-After; 429 is retried, 418 is not); 5xx -> :class:`ExchangeServerError` (execution status
unknown; retried for these reads); other 4xx -> :class:`ExchangeError` with the Binance code (never
retried: an invalid symbol stays invalid); transport failures -> :class:`NetworkError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from trader.config import ClientConfig, ProfileConfig
from trader.errors import (
    ExchangeError,
    ExchangeServerError,
    NetworkError,
    RateLimited,
    TraderError,
)
from trader.exchange.limits import CircuitBreaker, Sleep, WeightBudget

__all__ = [
    "BinanceClient",
    "ClientStats",
    "kline_page_limit",
    "kline_weight",
    "map_error",
    "parse_klines",
]

_PATHS = {
    "spot": {
        "klines": "/api/v3/klines",
        "exchangeInfo": "/api/v3/exchangeInfo",
        "ticker24hr": "/api/v3/ticker/24hr",
        "time": "/api/v3/time",
    },
    "usdm": {
        "klines": "/fapi/v1/klines",
        "exchangeInfo": "/fapi/v1/exchangeInfo",
        "ticker24hr": "/fapi/v1/ticker/24hr",
        "time": "/fapi/v1/time",
    },
}
_DEFAULT_WEIGHT_LIMIT = {"spot": 6000, "usdm": 2400}
_SECRET_PARAMS = {"signature", "timestamp", "apikey", "api_key", "recvwindow"}


def kline_page_limit(market: str) -> int:
    """Klines per request that minimise weight per kline: 1000 on spot (weight 2), 499 on USD-M (weight 2)."""
    return 1000 if market == "spot" else 499


def kline_weight(market: str, limit: int) -> int:
    """Request weight of one klines call (see the module table)."""
    if market == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def parse_klines(raw: bytes) -> np.ndarray:
    """Parse a klines response body into a ``(n_klines, 11)`` float64 array.

    Columns are :data:`trader.models.KLINE_COLUMNS` (times in epoch ms, exact in float64 below
    2**53; prices in quote asset; volumes in base/quote asset); the 12th "ignore" field is dropped.
    Pure: no I/O.

    Raises:
        ExchangeError: if the body is not a JSON array of 12-element kline arrays.
    """
    try:
        rows = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExchangeError(f"malformed klines payload: {exc}") from None
    if not isinstance(rows, list):
        raise ExchangeError("malformed klines payload: expected a JSON array")
    if not rows:
        return np.empty((0, 11), dtype=np.float64)
    try:
        table = np.array(rows, dtype=object)
        if table.ndim != 2 or table.shape[1] < 11:
            raise ValueError(f"expected rows of 12 fields, got shape {table.shape}")
        return table[:, :11].astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise ExchangeError(f"malformed klines payload: {exc}") from None


def _describe(method: str, path: str, params: dict[str, Any] | None) -> str:
    shown = {k: v for k, v in (params or {}).items() if k.lower() not in _SECRET_PARAMS}
    query = " ".join(f"{k}={v}" for k, v in shown.items())
    return f"{method} {path}" + (f" {query}" if query else "")


def map_error(status: int, content: bytes, headers: httpx.Headers | dict[str, str], where: str) -> ExchangeError:
    """Turn a non-200 response into the right :mod:`trader.errors` class. Pure.

    Args:
        status: HTTP status.
        content: response body (Binance: ``{"code": -1121, "msg": "Invalid symbol."}``).
        headers: response headers (``Retry-After`` in seconds for 429/418).
        where: request description for the message (method, path, public parameters).
    """
    code: int | None = None
    msg: str | None = None
    try:
        body = orjson.loads(content)
        if isinstance(body, dict):
            code = body.get("code") if isinstance(body.get("code"), int) else None
            msg = body.get("msg") if isinstance(body.get("msg"), str) else None
    except orjson.JSONDecodeError:
        pass
    text = msg or content[:200].decode("utf-8", "replace").strip().replace("\n", " ") or f"HTTP {status}"
    code_part = f"code {code}, " if code is not None else ""
    if status in (418, 429):
        try:
            retry_after = float(headers.get("Retry-After") or 60)
        except ValueError:
            retry_after = 60.0
        what = "IP banned by the exchange" if status == 418 else "rate limited by the exchange"
        return RateLimited(
            f"{what} ({code_part}HTTP {status}); retry after {retry_after:.0f} s — {where}",
            retry_after_s=retry_after,
            banned=status == 418,
            status=status,
            code=code,
        )
    if status >= 500:
        return ExchangeServerError(f"exchange server error: {text} ({code_part}HTTP {status}) — {where}", status=status, code=code)
    return ExchangeError(f"{text} ({code_part}HTTP {status}) — {where}", status=status, code=code)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RateLimited):
        return not exc.banned
    return isinstance(exc, TraderError) and exc.retryable


@dataclass
class ClientStats:
    """Counters of one client.

    Attributes:
        requests: HTTP requests sent (including retried attempts).
        retries: attempts beyond the first.
        rate_limited: 429/418 responses received.
        weight_used: highest ``X-MBX-USED-WEIGHT-1M`` seen.
        kline_requests: requests to the klines endpoint.
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    weight_used: int = 0
    kline_requests: int = 0


class BinanceClient:
    """Async Binance REST client for market data.

    Args:
        profile: base URLs and market (spot / usdm).
        cfg: timeouts, retries, breaker, budget and concurrency.
        budget: shared weight budget (default: one built from ``cfg`` and the market's limit).
        breaker: circuit breaker (default from ``cfg``).
        transport: httpx transport (unit tests of parsing/error mapping only).
        sleep: async sleep used for retries and waits (virtual in tests).
        clock: epoch seconds, for the default budget.

    Use as ``async with BinanceClient(profile, cfg) as client: ...``.
    """

    def __init__(
        self,
        profile: ProfileConfig,
        cfg: ClientConfig | None = None,
        *,
        budget: WeightBudget | None = None,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        self.cfg = cfg or ClientConfig()
        self.market = profile.market
        limit = self.cfg.weight_limit or _DEFAULT_WEIGHT_LIMIT[self.market]
        self.budget = budget or WeightBudget(limit, margin=self.cfg.weight_margin, clock=clock, sleep=sleep)
        self.breaker = breaker or CircuitBreaker(self.cfg.breaker_failures, self.cfg.breaker_cooldown_s)
        self._transport = transport
        self._sleep = sleep
        self._paths = _PATHS[self.market]
        self._http: httpx.AsyncClient | None = None
        self.stats = ClientStats()

    async def __aenter__(self) -> BinanceClient:
        n = self.cfg.concurrency
        self._http = httpx.AsyncClient(
            base_url=self.profile.rest_url,
            timeout=httpx.Timeout(self.cfg.timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            headers={"User-Agent": "trader/0.1"},
            transport=self._transport,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ transport

    async def _send_once(self, path: str, params: dict[str, Any] | None, weight: int, where: str) -> bytes:
        if self._http is None:
            raise RuntimeError("BinanceClient used outside 'async with'")
        self.breaker.before_call()
        await self.budget.acquire(weight)
        try:
            resp = await self._http.get(path, params=params)
        except httpx.TransportError as exc:
            self.budget.release(weight, None)
            self.breaker.failure()
            raise NetworkError(f"{type(exc).__name__}: {exc or 'no response'} — {where}") from None
        except BaseException:  # cancelled: the reservation must not leak
            self.budget.release(weight, None)
            raise
        self.stats.requests += 1
        raw_used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
        used = int(raw_used) if raw_used and raw_used.isdigit() else None
        self.budget.release(weight, used)
        if used is not None:
            self.stats.weight_used = max(self.stats.weight_used, used)
        if resp.status_code == 200:
            self.breaker.success()
            return resp.content
        err = map_error(resp.status_code, resp.content, resp.headers, where)
        if isinstance(err, RateLimited):
            self.stats.rate_limited += 1
            self.budget.pause(err.retry_after_s)
        elif isinstance(err, ExchangeServerError):
            self.breaker.failure()
        else:
            self.breaker.success()
        raise err

    async def _get(self, name: str, params: dict[str, Any] | None, weight: int) -> bytes:
        path = self._paths[name]
        where = _describe("GET", path, params)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_attempts),
            wait=wait_random_exponential(multiplier=self.cfg.backoff_base_s, max=self.cfg.backoff_max_s),
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            reraise=True,
        )
        first = True
        async for attempt in retrying:
            with attempt:
                if not first:
                    self.stats.retries += 1
                first = False
                return await self._send_once(path, params, weight, where)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ endpoints

    async def fetch_server_time(self) -> int:
        """Exchange time, epoch ms (weight 1)."""
        body = orjson.loads(await self._get("time", None, 1))
        return int(body["serverTime"])

    async def fetch_exchange_info(self) -> dict[str, Any]:
        """Parsed ``exchangeInfo`` for every symbol (spot weight 20)."""
        result: dict[str, Any] = orjson.loads(await self._get("exchangeInfo", None, 20 if self.market == "spot" else 1))
        return result

    async def fetch_ticker_24hr(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """24h rolling statistics of one symbol or of all (spot weight 2 / 80).

        Returns:
            A list of ticker dicts (one element when ``symbol`` is given); numbers are Binance strings.
        """
        spot = self.market == "spot"
        if symbol is not None:
            return [orjson.loads(await self._get("ticker24hr", {"symbol": symbol}, 2 if spot else 1))]
        data: list[dict[str, Any]] = orjson.loads(await self._get("ticker24hr", None, 80 if spot else 40))
        return data

    async def fetch_klines_page(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> np.ndarray:
        """One klines request: ``(n, 11)`` float64 (see :func:`parse_klines`), open-time order.

        Args:
            symbol: e.g. ``"BTCUSDT"``.
            interval: e.g. ``"1h"``.
            start_ms: first open time wanted (inclusive), epoch ms.
            end_ms: last open time wanted (inclusive), epoch ms.
            limit: rows wanted; default the market's page size (spot 1000, USD-M 499).

        Raises:
            ExchangeError: invalid symbol (-1121) or interval (-1120), malformed payload, ...
            RateLimited, NetworkError, CircuitOpenError: after retries where retryable.
        """
        limit = limit or kline_page_limit(self.market)
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        self.stats.kline_requests += 1
        return parse_klines(await self._get("klines", params, kline_weight(self.market, limit)))

    async def fetch_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        """Every kline with ``start_ms <= open_time <= end_ms``, paging by open time.

        Pages of the market's size; the next page starts at the last open time + 1 ms; stops at a short
        page or once ``end_ms`` is reached. Returns ``(n, 11)`` float64 in open-time order.
        """
        pages: list[np.ndarray] = []
        limit = kline_page_limit(self.market)
        start = int(start_ms)
        while start <= end_ms:
            page = await self.fetch_klines_page(symbol, interval, start, end_ms, limit)
            if page.shape[0] == 0:
                break
            pages.append(page)
            last_open = int(page[-1, 0])
            if page.shape[0] < limit or last_open >= end_ms:
                break
            start = last_open + 1
        if not pages:
            return np.empty((0, 11), dtype=np.float64)
        return pages[0] if len(pages) == 1 else np.concatenate(pages)
