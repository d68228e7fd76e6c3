"""Pure parts of the REST client: payload parsing, error mapping, weights, warm planning.
(Mock transports only here, for parsing and error mapping.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from trader.config import ClientConfig, ProfileConfig
from trader.errors import ExchangeError, ExchangeServerError, RateLimited
from trader.exchange.rest import BinanceClient, kline_page_limit, kline_weight, map_error, parse_klines
from trader.warm import last_closed_open_ms, plan_series, select_top

DATA = Path(__file__).resolve().parents[1] / "data"
HOUR = 3_600_000


def test_parse_klines_recorded_payload() -> None:
    arr = parse_klines((DATA / "klines.json").read_bytes())
    assert arr.shape == (1, 11) and arr.dtype == np.float64
    assert arr[0, 0] == 1499040000000 and arr[0, 1] == 0.0163479 and arr[0, 8] == 308 and arr[0, 6] == 1499644799999
    assert parse_klines(b"[]").shape == (0, 11)


@pytest.mark.parametrize("raw", [b"{", b'{"a": 1}', b"[[1, 2]]", b'[[1,"x",3,4,5,6,7,8,9,10,11,"0"]]', b"[[1,2,3,4,5,6,7,8,9,10,11,0],[1]]"])
def test_parse_klines_malformed(raw: bytes) -> None:
    with pytest.raises(ExchangeError, match="malformed klines payload"):
        parse_klines(raw)


def test_map_error() -> None:
    body = (DATA / "error_invalid_symbol.json").read_bytes()
    err = map_error(400, body, {}, "GET /api/v3/klines symbol=NOPE")
    assert type(err) is ExchangeError and (err.status, err.code) == (400, -1121) and not err.retryable
    assert "Invalid symbol." in str(err) and "symbol=NOPE" in str(err)
    err = map_error(429, b'{"code":-1003,"msg":"Too much"}', {"Retry-After": "17"}, "x")
    assert isinstance(err, RateLimited) and err.retry_after_s == 17 and not err.banned
    err = map_error(418, b'{"code":-1003,"msg":"banned"}', {"Retry-After": "120"}, "x")
    assert isinstance(err, RateLimited) and err.banned and "banned" in str(err)
    err = map_error(503, b"<html>Service Unavailable</html>", {}, "x")
    assert isinstance(err, ExchangeServerError) and err.retryable and err.code is None
    assert "\n" not in str(map_error(403, b"line1\nline2", {}, "x"))


async def test_secrets_never_appear_in_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": -1022, "msg": "Signature for this request is not valid."})

    profile = ProfileConfig(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1")
    async with BinanceClient(profile, ClientConfig(), transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ExchangeError) as info:
            await client._get("time", {"signature": "SECRET", "timestamp": 1, "apiKey": "KEY"}, 1)
    assert "SECRET" not in str(info.value) and "KEY" not in str(info.value)


def test_weights_and_page_sizes() -> None:
    assert kline_page_limit("spot") == 1000 and kline_weight("spot", 1000) == 2
    assert kline_page_limit("usdm") == 499 and kline_weight("usdm", 499) == 2
    assert [kline_weight("usdm", n) for n in (99, 100, 500, 1000, 1500)] == [1, 2, 5, 5, 10]


def test_plan_series() -> None:
    now = 100 * HOUR + HOUR // 2  # half-way through the kline that opened at 100 h
    assert last_closed_open_ms(now, "1h") == 99 * HOUR
    assert plan_series(None, None, None, now, "1h", 10) == [(90 * HOUR, 99 * HOUR)]
    assert plan_series(90 * HOUR, 99 * HOUR, None, now, "1h", 10) == []  # up to date: no request
    assert plan_series(90 * HOUR, 97 * HOUR, None, now, "1h", 10) == [(98 * HOUR, 99 * HOUR)]
    assert plan_series(95 * HOUR, 99 * HOUR, None, now, "1h", 10) == [(90 * HOUR, 94 * HOUR)]
    assert plan_series(95 * HOUR, 99 * HOUR, 95 * HOUR, now, "1h", 10) == []  # nothing older exists
    assert last_closed_open_ms(100 * HOUR, "1h") == 99 * HOUR  # at the boundary the new kline is forming
    monday = 4 * 86_400_000
    assert last_closed_open_ms(monday + 8 * 86_400_000, "1w") == monday


def test_select_top() -> None:
    tickers = json.loads(json.dumps([
        {"symbol": "AUSDT", "quoteVolume": "10"}, {"symbol": "BUSDT", "quoteVolume": "30"},
        {"symbol": "CBTC", "quoteVolume": "99"}, {"symbol": "DUSDT", "quoteVolume": "20"},
    ]))
    info = {"symbols": [
        {"symbol": "AUSDT", "status": "TRADING", "quoteAsset": "USDT"},
        {"symbol": "BUSDT", "status": "BREAK", "quoteAsset": "USDT"},
        {"symbol": "CBTC", "status": "TRADING", "quoteAsset": "BTC"},
        {"symbol": "DUSDT", "status": "TRADING", "quoteAsset": "USDT"},
    ]}
    assert select_top(tickers, info, 5, "USDT") == ["DUSDT", "AUSDT"]
