"""Pure parts of the REST client: payload parsing, error mapping, weights, warm planning.
(Mock transports only here, for parsing and error mapping.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.config import ClientConfig, ProfileConfig
from trader.errors import ExchangeError, ExchangeServerError, InvalidKlinesError, RateLimited
from trader.exchange.endpoints import Endpoint, by_path, endpoint
from trader.exchange.rest import BinanceClient, kline_page_limit, map_error, parse_klines, retryable
from trader.models import CLOSE_TIME, OPEN, OPEN_TIME, TRADES, check_klines
from trader.warm import last_closed_open_ms, plan_series, select_top

DATA = Path(__file__).resolve().parents[1] / "data"
HOUR = 3_600_000


def test_parse_klines_recorded_payload() -> None:
    block = parse_klines((DATA / "klines.json").read_bytes())
    assert block.shape == (11, 1) and block.dtype == np.float64 and block.flags.c_contiguous
    assert block[OPEN_TIME, 0] == 1499040000000 and block[OPEN, 0] == 0.0163479
    assert block[TRADES, 0] == 308 and block[CLOSE_TIME, 0] == 1499644799999
    assert parse_klines(b"[]").shape == (11, 0)


@pytest.mark.parametrize("raw", [b"{", b'{"a": 1}', b"[[1, 2]]", b'[[1,"x",3,4,5,6,7,8,9,10,11,"0"]]', b"[[1,2,3,4,5,6,7,8,9,10,11,0],[1]]"])
def test_parse_klines_malformed(raw: bytes) -> None:
    with pytest.raises(InvalidKlinesError, match="malformed klines payload"):
        parse_klines(raw)


_DECIMAL = st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[_DECIMAL] * 8), min_size=1, max_size=30))
def test_fast_parse_is_exactly_float_of_the_text(rows: list[tuple[object, ...]]) -> None:
    """The fast path (quotes stripped, orjson numbers) gives the same doubles as float(text)."""
    texts = [[f"{v:f}" for v in r] for r in rows]
    payload = "[" + ",".join(
        f'[{1000 + i},"{t[0]}","{t[1]}","{t[2]}","{t[3]}","{t[4]}",{1999 + i},"{t[5]}",{i},"{t[6]}","{t[7]}","0"]'
        for i, t in enumerate(texts)
    ) + "]"
    block = parse_klines(payload.encode())
    cols = (1, 2, 3, 4, 5, 7, 9, 10)
    for i, t in enumerate(texts):
        assert [block[c, i] for c in cols] == [float(x) for x in t]


def test_check_klines_invariants() -> None:
    ok = parse_klines((DATA / "klines.json").read_bytes())
    check_klines(ok, "1w")
    with pytest.raises(InvalidKlinesError, match="close_time"):
        check_klines(ok, "1d")
    twice = np.concatenate([ok, ok], axis=1)
    with pytest.raises(InvalidKlinesError, match="strictly increasing"):
        check_klines(twice, "1w")


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
            await client.request("time", {"signature": "SECRET", "timestamp": 1, "apiKey": "KEY"})
    assert "SECRET" not in str(info.value) and "KEY" not in str(info.value)


def test_weights_and_page_sizes_come_from_the_endpoint_table() -> None:
    klines = endpoint("spot", "klines")
    assert kline_page_limit("spot") == 1000 and klines.weight({"limit": "1000"}) == 2
    usdm = endpoint("usdm", "klines")
    assert kline_page_limit("usdm") == 499 and usdm.weight({"limit": "499"}) == 2
    assert [usdm.weight({"limit": str(n)}) for n in (99, 100, 500, 1000, 1500)] == [1, 2, 5, 5, 10]
    t24 = endpoint("spot", "ticker24hr")
    assert [t24.weight(p) for p in ({"symbol": "X"}, {"symbols": '["A","B"]'}, {"symbols": str(["A"] * 30).replace("'", '"')}, {})] == [2, 2, 40, 80]
    assert endpoint("spot", "depth").weight({"limit": "5000"}) == 250
    assert endpoint("spot", "ticker").weight({"symbols": str(["A"] * 60).replace("'", '"')}) == 200
    assert by_path("spot", "GET", "/api/v3/klines") is klines and by_path("spot", "GET", "/nope") is None


def test_only_idempotent_requests_are_retried() -> None:
    read = endpoint("spot", "klines")
    order = Endpoint("order", "POST", "/api/v3/order", lambda p: 1, signed=True, idempotent=False, counters=("REQUEST_WEIGHT", "ORDERS"))
    five = ExchangeServerError("x", status=503)
    timeout = __import__("trader.errors", fromlist=["NetworkError"]).NetworkError("timeout")
    assert retryable(five, read) and retryable(timeout, read)
    assert not retryable(five, order) and not retryable(timeout, order)  # status unknown: look it up, never resend
    assert not retryable(RateLimited("ban", retry_after_s=120, banned=True), read)
    assert not retryable(ExchangeError("Invalid symbol.", status=400, code=-1121), read)


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
