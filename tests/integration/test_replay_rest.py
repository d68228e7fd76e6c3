"""The replay exchange's REST API, checked with a real httpx client against the server on port 0."""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal

import httpx
import pytest

from tests.conftest import DATA, FakeClock, bundled_rows
from trader.config import FaultConfig
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

HOUR = 3_600_000


async def get(ex: ReplayExchange, path: str, **params: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ex.rest_url) as c:
        return await c.get(path, params=params)


def shape(value: object) -> object:
    """Keys in order and JSON types, recursively: what a client can tell apart."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def assert_same_row(served: list[object], csv_row: list[str]) -> None:
    assert len(served) == 12 and served[11] == "0"
    for i, (got, want) in enumerate(zip(served[:11], csv_row, strict=True)):
        if i in (0, 6, 8):
            assert got == int(want), (i, got, want)
        else:
            assert isinstance(got, str) and len(got.split(".")[1]) == 8, got  # Binance: 8 decimals, as a string
            assert Decimal(got) == Decimal(want), (i, got, want)


async def test_binds_loopback_and_reports_port(exchange: ReplayExchange) -> None:
    assert exchange.host == "127.0.0.1" and exchange.port > 0
    assert exchange.rest_url == f"http://127.0.0.1:{exchange.port}"


async def test_ping_and_time(exchange: ReplayExchange) -> None:
    r = await get(exchange, "/api/v3/ping")
    assert r.status_code == 200 and r.json() == {}
    r = await get(exchange, "/api/v3/time")
    assert r.json() == {"serverTime": exchange.clock.now_ms()}
    assert shape(r.json()) == shape(json.loads((DATA / "time.json").read_text()))


async def test_klines_1000_equal_to_bundled_data(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    now = exchange.clock.now_ms()
    r = await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", limit=1000, endTime=now - 1)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    rows = r.json()
    assert len(rows) == 1000
    assert shape(rows) == shape(json.loads((DATA / "klines.json").read_text()))
    csv = {int(row[0]): row for row in bundled_rows("BTCUSDT", "1h")}
    for served in rows:
        assert_same_row(served, csv[served[0]])
    assert rows[-1][6] < now  # all closed
    assert [b[0] - a[0] for a, b in itertools.pairwise(rows)] == [HOUR] * 999


async def test_klines_default_limit_and_most_recent(exchange: ReplayExchange) -> None:
    rows = (await get(exchange, "/api/v3/klines", symbol="ETHUSDT", interval="4h")).json()
    assert len(rows) == 500
    now = exchange.clock.now_ms()
    assert rows[-1][0] <= now <= rows[-1][6]  # the last one is the forming candle


async def test_klines_paging_by_start_time(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    series = dataset.series("SOLUSDT", "4h")
    start = int(series.open_time_ms[0])
    now = exchange.clock.now_ms()
    seen: list[int] = []
    while True:
        page = (await get(exchange, "/api/v3/klines", symbol="SOLUSDT", interval="4h", startTime=start, limit=1000)).json()
        if not page:
            break
        seen += [row[0] for row in page]
        start = page[-1][0] + 1
    assert seen == sorted(set(seen))
    assert seen[0] == int(series.open_time_ms[0])
    assert seen[-1] <= now and seen[-1] + 4 * HOUR > now
    assert len(seen) == int((series.open_time_ms <= now).sum())


async def test_klines_end_time_only_and_window(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    ot = dataset.series("BTCUSDT", "1h").open_time_ms
    end = int(ot[100]) + 5
    rows = (await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", endTime=end, limit=10)).json()
    assert [r[0] for r in rows] == [int(x) for x in ot[91:101]]
    rows = (
        await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=int(ot[10]), endTime=int(ot[14]))
    ).json()
    assert [r[0] for r in rows] == [int(x) for x in ot[10:15]]
    rows = (await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=0, limit=3)).json()
    assert [r[0] for r in rows] == [int(x) for x in ot[:3]]


async def test_replay_clock_boundary(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    now = exchange.clock.now_ms()
    rows = (await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=now - 2 * HOUR)).json()
    assert all(r[0] <= now for r in rows)
    assert rows[-1][0] == now  # the candle that opened at now, zero volume so far
    assert rows[-1][5] == "0.00000000" and rows[-1][8] == 0
    assert rows[-1][6] == now + HOUR - 1  # close_time is the scheduled close, as Binance serves it
    # nothing after now, even when asked explicitly
    assert (await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=now + 1)).json() == []

    exchange.clock.step(HOUR // 2)
    rows = (await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=now)).json()
    assert len(rows) == 1
    forming = rows[0]
    recorded = {int(r[0]): r for r in bundled_rows("BTCUSDT", "1h")}[now]
    o, h, lo, c = (Decimal(x) for x in forming[1:5])
    assert o == Decimal(recorded[1])
    assert lo <= min(o, c) and h >= max(o, c)
    assert Decimal(recorded[3]) <= lo and h <= Decimal(recorded[2])
    assert Decimal(forming[5]) <= Decimal(recorded[5]) / 2  # volume pro rata, rounded down to the step

    exchange.clock.step(HOUR // 2)  # the candle closes: now the recorded values, exactly
    rows = (await get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=now, endTime=now)).json()
    assert_same_row(rows[0], recorded)


async def test_weight_header_rises_by_documented_weight(exchange: ReplayExchange, weight_clock: FakeClock) -> None:
    async with httpx.AsyncClient(base_url=exchange.rest_url) as c:
        async def used(path: str, **params: object) -> int:
            r = await c.get(path, params=params)
            return int(r.headers["X-MBX-USED-WEIGHT-1M"])

        assert await used("/api/v3/klines", symbol="BTCUSDT", interval="1h", limit=1000) == 2
        assert await used("/api/v3/klines", symbol="BTCUSDT", interval="1h", limit=5) == 4
        assert await used("/api/v3/ping") == 5
        assert await used("/api/v3/time") == 6
        assert await used("/api/v3/exchangeInfo", symbol="BTCUSDT") == 26
        assert await used("/api/v3/ticker/24hr", symbol="BTCUSDT") == 28
        assert await used("/api/v3/ticker/24hr", symbols='["BTCUSDT","ETHUSDT"]') == 30
        assert await used("/api/v3/ticker/24hr") == 110
        assert await used("/api/v3/klines", symbol="NOPE", interval="1h") == 112  # errors cost weight too
        weight_clock.advance(60)
        assert await used("/api/v3/ping") == 1  # a new minute window


async def test_429_then_418_with_escalating_retry_after(dataset: ReplayDataset) -> None:
    clock = FakeClock(1_700_000_000.0)  # 20 s into a minute window
    async with ReplayExchange(dataset, port=0, speed=0, weight_limit=10, ban_after_429s=2, weight_clock=clock) as ex:
        async with httpx.AsyncClient(base_url=ex.rest_url) as c:
            params = {"symbol": "BTCUSDT", "interval": "1h", "limit": 1}
            for _ in range(5):
                assert (await c.get("/api/v3/klines", params=params)).status_code == 200
            r = await c.get("/api/v3/klines", params=params)
            assert r.status_code == 429
            assert r.json()["code"] == -1003 and "request weight" in r.json()["msg"]
            assert int(r.headers["Retry-After"]) == 40
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == "10"
            # keep hammering during the back-off: 2 violations tolerated, the 3rd is banned
            assert (await c.get("/api/v3/klines", params=params)).status_code == 429
            assert (await c.get("/api/v3/klines", params=params)).status_code == 429
            r = await c.get("/api/v3/klines", params=params)
            assert r.status_code == 418 and int(r.headers["Retry-After"]) == 120
            assert "banned until" in r.json()["msg"]
            clock.advance(60)  # new window, still banned
            r = await c.get("/api/v3/ping")
            assert r.status_code == 418 and int(r.headers["Retry-After"]) == 60
            clock.advance(61)  # ban over
            assert (await c.get("/api/v3/ping")).status_code == 200
            # second offence: the ban doubles
            for _ in range(9):
                await c.get("/api/v3/ping")
            assert (await c.get("/api/v3/ping")).status_code == 429
            for _ in range(2):
                assert (await c.get("/api/v3/ping")).status_code == 429
            r = await c.get("/api/v3/ping")
            assert r.status_code == 418 and int(r.headers["Retry-After"]) == 240


async def test_a_client_that_backs_off_is_never_banned(dataset: ReplayDataset) -> None:
    clock = FakeClock(1_700_000_000.0)
    async with ReplayExchange(dataset, port=0, speed=0, weight_limit=4, weight_clock=clock) as ex:
        async with httpx.AsyncClient(base_url=ex.rest_url) as c:
            for _ in range(3):
                for _ in range(4):
                    await c.get("/api/v3/ping")
                r = await c.get("/api/v3/ping")
                assert r.status_code == 429
                clock.advance(int(r.headers["Retry-After"]))
            assert (await c.get("/api/v3/ping")).status_code == 200


@pytest.mark.parametrize(
    ("params", "status", "code", "msg"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1h"}, 400, -1121, "Invalid symbol."),
        ({"symbol": "BTCUSDT", "interval": "7h"}, 400, -1120, "Invalid interval."),
        ({"interval": "1h"}, 400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ({"symbol": "BTCUSDT"}, 400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."),
        ({"symbol": "", "interval": "1h"}, 400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ({"symbol": "btcusdt", "interval": "1h"}, 400, -1100, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "abc"}, 400, -1100, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "1.5"}, 400, -1100, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "1001"}, 400, -1130, "Data sent for parameter 'limit' is not valid."),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "0"}, 400, -1130, "Data sent for parameter 'limit' is not valid."),
        ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "5", "endTime": "4"}, 400, -1023, "Start time is greater than end time."),
        ({"symbol": "BTCUSDT", "interval": "1h", "foo": "1"}, 400, -1104, None),
    ],
)
async def test_klines_errors_as_binance_sends_them(
    exchange: ReplayExchange, params: dict[str, str], status: int, code: int, msg: str | None
) -> None:
    r = await get(exchange, "/api/v3/klines", **params)
    assert r.status_code == status
    body = r.json()
    assert list(body) == ["code", "msg"] and body["code"] == code
    if msg is not None:
        assert body["msg"] == msg
    assert "X-MBX-USED-WEIGHT-1M" in r.headers


async def test_duplicate_parameter(exchange: ReplayExchange) -> None:
    async with httpx.AsyncClient(base_url=exchange.rest_url) as c:
        r = await c.get("/api/v3/klines?symbol=BTCUSDT&symbol=ETHUSDT&interval=1h")
    assert r.status_code == 400
    assert r.json() == {"code": -1101, "msg": "Duplicate values for a parameter detected."}


async def test_invalid_symbol_body_matches_binance(exchange: ReplayExchange) -> None:
    r = await get(exchange, "/api/v3/ticker/24hr", symbol="NOPEUSDT")
    assert r.status_code == 400
    assert r.json() == json.loads((DATA / "error_invalid_symbol.json").read_text())


async def test_exchange_info(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    info = (await get(exchange, "/api/v3/exchangeInfo")).json()
    assert len(info["symbols"]) == 96 == len(dataset.symbols)
    recorded = json.loads((DATA / "exchange_info.json").read_text())
    assert shape(info["symbols"][0]) == shape(recorded["symbols"][0])
    assert [k for k in info] == [k for k in recorded]
    btc = (await get(exchange, "/api/v3/exchangeInfo", symbol="BTCUSDT")).json()["symbols"][0]
    assert (btc["symbol"], btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTCUSDT", "BTC", "USDT", "TRADING")
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"  # Binance's real BTCUSDT tick
    assert list(filters) == [f["filterType"] for f in recorded["symbols"][0]["filters"]]
    for name, f in filters.items():
        assert shape(f) == shape(next(r for r in recorded["symbols"][0]["filters"] if r["filterType"] == name)), name
    assert [r["rateLimitType"] for r in info["rateLimits"]] == ["REQUEST_WEIGHT", "ORDERS", "ORDERS", "RAW_REQUESTS"]
    # every recorded price up to now is a multiple of the derived tick size
    series = dataset.series("BTCUSDT", "1h")
    ticks = series.values[1:5, : series.visible(exchange.clock.now_ms())] / 0.01
    assert abs(ticks - ticks.round()).max() < 1e-6
    two = (await get(exchange, "/api/v3/exchangeInfo", symbols='["ETHUSDT","BTCUSDT"]')).json()
    assert [s["symbol"] for s in two["symbols"]] == ["ETHUSDT", "BTCUSDT"]
    r = await get(exchange, "/api/v3/exchangeInfo", symbol="NOPEUSDT")
    assert r.status_code == 400 and r.json()["code"] == -1121


async def test_ticker_24hr(exchange: ReplayExchange, dataset: ReplayDataset) -> None:
    exchange.clock.step(HOUR // 4)
    t = (await get(exchange, "/api/v3/ticker/24hr", symbol="BTCUSDT")).json()
    assert shape(t) == shape(json.loads((DATA / "ticker_24hr.json").read_text()))
    mini = (await get(exchange, "/api/v3/ticker/24hr", symbol="BTCUSDT", type="MINI")).json()
    assert shape(mini) == shape(json.loads((DATA / "ticker_24hr_mini.json").read_text()))
    now = exchange.clock.now_ms()
    assert t["closeTime"] == now and t["openTime"] == now - 24 * HOUR
    assert t["lastId"] - t["firstId"] + 1 == t["count"]
    assert Decimal(t["lowPrice"]) <= Decimal(t["lastPrice"]) <= Decimal(t["highPrice"])
    assert Decimal(t["quoteVolume"]) > 0
    everything = (await get(exchange, "/api/v3/ticker/24hr")).json()
    assert len(everything) == 96 and {x["symbol"] for x in everything} == set(dataset.symbols)


async def test_fault_injection_5xx_and_forced_429(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(error_rate=1.0)) as ex:
        r = await get(ex, "/api/v3/ping")
        assert r.status_code == 500 and r.json()["code"] == -1001
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(rate_429=1.0)) as ex:
        r = await get(ex, "/api/v3/ping")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["code"] == -1003
    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(error_rate=0.3, seed=7)) as ex:
        codes = [(await get(ex, "/api/v3/ping")).status_code for _ in range(60)]
        assert 5 < codes.count(500) < 35 and codes.count(200) + codes.count(500) == 60


async def test_fault_injection_latency_is_added(dataset: ReplayDataset) -> None:
    import time

    async with ReplayExchange(dataset, port=0, speed=0, faults=FaultConfig(latency_ms=80)) as ex:
        t0 = time.perf_counter()
        await get(ex, "/api/v3/ping")
        assert time.perf_counter() - t0 >= 0.08  # a lower bound: cannot fail on a slow machine


async def test_custom_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = bundled_rows("BTCUSDT", "4h")[:20]
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"
    (tmp_path / "FOOUSDT-4h.csv").write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    ds = ReplayDataset(tmp_path)
    assert ds.symbols == ("FOOUSDT",) and ds.intervals == ("4h",)
    async with ReplayExchange(ds, port=0, speed=0, start_ms=int(rows[-1][6]) + 1) as ex:
        got = (await get(ex, "/api/v3/klines", symbol="FOOUSDT", interval="4h")).json()
        assert len(got) == 20
        for served, want in zip(got, rows, strict=True):
            assert_same_row(served, want)
        r = await get(ex, "/api/v3/klines", symbol="FOOUSDT", interval="1h")  # finer than the data: cannot derive
        assert r.status_code == 400 and r.json()["code"] == -1120 and "4h" in r.json()["msg"]


async def test_price_book_avg_rolling_ticker_and_depth(exchange: ReplayExchange) -> None:
    exchange.clock.step(HOUR // 3)  # inside a forming kline: the path price moves
    one = (await get(exchange, "/api/v3/ticker/price", symbol="BTCUSDT")).json()
    assert list(one) == ["symbol", "price"] and len(one["price"].split(".")[1]) == 8
    everything = (await get(exchange, "/api/v3/ticker/price")).json()
    assert len(everything) == 96 and {"symbol": "BTCUSDT", "price": one["price"]} in everything
    two = (await get(exchange, "/api/v3/ticker/bookTicker", symbols='["BTCUSDT","ETHUSDT"]')).json()
    assert [b["symbol"] for b in two] == ["BTCUSDT", "ETHUSDT"] and list(two[0]) == ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"]
    assert float(two[0]["bidPrice"]) < float(one["price"]) < float(two[0]["askPrice"])
    avg = (await get(exchange, "/api/v3/avgPrice", symbol="BTCUSDT")).json()
    assert list(avg) == ["mins", "price", "closeTime"] and avg["mins"] == 5 and avg["closeTime"] == exchange.clock.now_ms()
    roll = (await get(exchange, "/api/v3/ticker", symbol="BTCUSDT", windowSize="4h")).json()
    day = (await get(exchange, "/api/v3/ticker/24hr", symbol="BTCUSDT")).json()
    assert set(roll) == set(day) and roll["lastPrice"] == day["lastPrice"] == one["price"]
    assert roll["openTime"] % 60_000 == 0 and roll["closeTime"] == exchange.clock.now_ms()  # Binance: openTime on a minute
    assert float(roll["volume"]) < float(day["volume"])
    bad = await get(exchange, "/api/v3/ticker", symbol="BTCUSDT", windowSize="25h")
    assert bad.status_code == 400 and bad.json()["code"] == -1130
    book = (await get(exchange, "/api/v3/depth", symbol="BTCUSDT", limit=10)).json()
    assert list(book) == ["lastUpdateId", "bids", "asks"] and len(book["bids"]) == len(book["asks"]) == 10
    assert book["bids"][0][0] == two[0]["bidPrice"] and book["asks"][0][0] == two[0]["askPrice"]
    r = await get(exchange, "/api/v3/depth", symbol="BTCUSDT", limit=5000)
    assert r.headers["X-MBX-USED-WEIGHT-1M"] and r.status_code == 200


async def test_weights_come_from_the_shared_endpoint_table(exchange: ReplayExchange) -> None:
    from trader.exchange.endpoints import endpoint

    for name, params in (("depth", {"symbol": "BTCUSDT", "limit": "1000"}), ("ticker", {"symbols": '["BTCUSDT","ETHUSDT"]'}),
                         ("tickerPrice", {}), ("klines", {"symbol": "BTCUSDT", "interval": "1h"})):
        exchange.stats.reset()
        ep = endpoint("spot", name)
        r = await get(exchange, ep.path, **params)
        assert r.status_code == 200 and exchange.stats.weight == ep.weight(params), name


async def test_derived_intervals_and_clear_errors(exchange: ReplayExchange) -> None:
    for interval, step in (("2h", 2 * HOUR), ("12h", 12 * HOUR), ("1d", 24 * HOUR), ("1w", 7 * 24 * HOUR)):
        rows = (await get(exchange, "/api/v3/klines", symbol="SOLUSDT", interval=interval, limit=5)).json()
        assert len(rows) == 5 and all(r[6] - r[0] == step - 1 for r in rows), interval
        assert rows[-1][0] <= exchange.clock.now_ms() < rows[-1][6] + 1  # the last one is forming
    ui = (await get(exchange, "/api/v3/uiKlines", symbol="SOLUSDT", interval="1h", limit=3)).json()
    assert ui == (await get(exchange, "/api/v3/klines", symbol="SOLUSDT", interval="1h", limit=3)).json()
    for interval in ("1s", "1m", "1M"):
        r = await get(exchange, "/api/v3/klines", symbol="SOLUSDT", interval=interval)
        assert r.status_code == 400 and r.json()["code"] == -1120 and "1h" in r.json()["msg"], interval  # never []
    r = await get(exchange, "/api/v3/trades", symbol="SOLUSDT")
    assert r.status_code == 400 and r.json()["code"] == -1020
    r = await get(exchange, "/api/v3/no/such/thing")
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json") and r.json()["code"] == -1000
    async with httpx.AsyncClient(base_url=exchange.rest_url) as c:
        r = await c.post("/replay/clock", params={"stepMs": "1e20"})
        assert r.status_code == 400 and r.json()["code"] == -1130
        r = await c.post("/replay/clock", params={"stepMs": str(10**14)})
        assert r.status_code == 400
    assert (await get(exchange, "/api/v3/time")).status_code == 200  # the clock still works


async def test_ban_expiry_is_reported_on_the_replay_clock(dataset: ReplayDataset, weight_clock: FakeClock) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, weight_limit=10, ban_after_429s=0, weight_clock=weight_clock) as ex:
        for _ in range(7):  # 5 fit, the 6th is a 429, the 7th repeats on the same connection: a ban
            ex.limiter.admit("127.0.0.1", 2)
        r = await get(ex, "/api/v3/time")
        assert r.status_code == 418
        until = int(r.json()["msg"].split("banned until ")[1].split(".")[0])
        assert until == ex.clock.now_ms() + int(r.headers["Retry-After"]) * 1000  # 2024 replay time, not the wall clock


async def test_tls_serves_https_and_wss(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    import websockets

    from trader.config import ReplayConfig

    ex = ReplayExchange.from_config(ReplayConfig(port=0, speed=0, tls=True), tls_dir=tmp_path)
    async with ex:
        assert ex.rest_url.startswith("https://") and ex.ws_url.startswith("wss://") and ex.cert_path is not None
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ex.cert_path))) as c:
            assert (await c.get(f"{ex.rest_url}/api/v3/ping")).json() == {}
        ctx = ssl.create_default_context(cafile=str(ex.cert_path))
        async with websockets.connect(f"{ex.ws_url}/ws/btcusdt@kline_1h", ssl=ctx) as ws:
            ex.clock.step(2000)
            assert json.loads(await ws.recv())["e"] == "kline"
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0


async def test_many_symbols_load_off_the_event_loop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A universe of cloned files: the first all-symbol requests come back while the venue is still
    loading (each file parsed in a worker thread, clones parsed once), none of them times out."""
    src = ReplayDataset().data_dir
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(src.glob("*.csv.gz"))[:40]:
        symbol, rest = path.name.split("-", 1)
        for c in range(8):
            (data / f"{symbol[:-4]}X{c}{symbol[-4:]}-{rest}").symlink_to(path)
    ds = ReplayDataset(data)
    async with ReplayExchange(ds, port=0, speed=0, background_load=True) as ex:
        async with httpx.AsyncClient(base_url=ex.rest_url, timeout=30) as c:
            t, i = await asyncio.gather(c.get("/api/v3/ticker/24hr"), c.get("/api/v3/exchangeInfo"))
            assert t.status_code == i.status_code == 200 and len(t.json()) == len(i.json()["symbols"]) == 160
            pages = await asyncio.gather(*(c.get("/api/v3/klines", params={"symbol": s, "interval": "1h", "limit": 1000}) for s in ds.symbols[:60]))
            assert all(p.status_code == 200 and len(p.json()) == 1000 for p in pages)
    assert len({id(ds.series(s, "1h").data) for s in ds.symbols}) == 20  # 160 symbols, 20 distinct 1h files
