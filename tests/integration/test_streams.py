"""WebSocket streams end to end: the replay exchange's streams, the stream client, the live feed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import orjson
import pytest
import websockets

from tests.conftest import bundled_rows
from trader.config import ClientConfig, IndicatorConfig, ProfileConfig, StreamConfig
from trader.config import WsReplayConfig as WsConfig
from trader.exchange.rest import BinanceClient
from trader.exchange.stream import KlineStream
from trader.features.indicators import compute_all
from trader.live import LiveFeed
from trader.models import CLOSE, CLOSE_TIME, OHLCVQ
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.warm import last_closed_open_ms

HOUR = 3_600_000
SYMS = ["BTCUSDT", "ETHUSDT"]


async def recv_json(ws: websockets.ClientConnection, timeout: float = 5.0) -> dict:  # type: ignore[type-arg]
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_raw_and_combined_streams_driven_by_the_clock(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        now = ex.clock.now_ms()
        async with websockets.connect(f"{ex.ws_url}/ws/btcusdt@kline_1h") as raw, websockets.connect(
            f"{ex.ws_url}/stream?streams=btcusdt@kline_1h/ethusdt@kline_4h"
        ) as comb:
            ex.clock.step(2000)  # one forming update per stream
            ev = await recv_json(raw)
            assert set(ev) == {"e", "E", "s", "k"} and ev["e"] == "kline" and ev["E"] == now + 2000
            k = ev["k"]
            assert set(k) == set("tTsifLochlvnxqVQB") and k["x"] is False and k["i"] == "1h"
            assert all(isinstance(k[f], str) for f in "ochlvqVQB") and all(isinstance(k[f], int) for f in "tTfLn")
            wrapped = [await recv_json(comb), await recv_json(comb)]
            assert {w["stream"] for w in wrapped} == {"btcusdt@kline_1h", "ethusdt@kline_4h"}
            ex.clock.step(HOUR)  # the 1h kline closes: x true with the recorded values, then a forming update
            closed = await recv_json(raw)
            assert closed["k"]["x"] is True and closed["k"]["t"] == now and closed["E"] == now + HOUR
            rec = {int(r[0]): r for r in bundled_rows("BTCUSDT", "1h")}[now]
            assert float(closed["k"]["c"]) == float(rec[4]) and float(closed["k"]["v"]) == float(rec[5])
            assert closed["k"]["n"] == int(rec[8]) and closed["k"]["L"] - closed["k"]["f"] + 1 == int(rec[8])
            nxt = await recv_json(raw)
            assert nxt["k"]["x"] is False and nxt["k"]["t"] == now + HOUR


async def test_control_messages(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex, websockets.connect(f"{ex.ws_url}/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h", "ethusdt@kline_1h"], "id": 1}))
        assert await recv_json(ws) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@kline_1h"], "id": 2}))
        assert await recv_json(ws) == {"result": None, "id": 2}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        assert await recv_json(ws) == {"result": ["btcusdt@kline_1h"], "id": 3}
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 4}))
        assert await recv_json(ws) == {"result": False, "id": 4}
        await asyncio.sleep(1.1)  # stay under 5 messages per second (Binance's limit)
        await ws.send(json.dumps({"method": "NOPE", "id": 5}))
        err = await recv_json(ws)  # Binance's shape: ccxt.pro and binance-sdk-spot read message["error"]
        assert set(err) == {"error", "id"} and err["id"] == 5
        assert err["error"]["code"] == 2 and "unknown variant" in err["error"]["msg"]
        await ws.send("{not json")
        assert (await recv_json(ws))["error"]["code"] == 3


async def test_too_many_messages_or_streams_disconnect(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        async with websockets.connect(f"{ex.ws_url}/ws") as ws:
            for i in range(7):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(websockets.ConnectionClosed):
                for _ in range(10):
                    await recv_json(ws)
        async with websockets.connect(f"{ex.ws_url}/ws") as ws:
            names = [f"s{i}usdt@kline_1h" for i in range(1025)]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
            with pytest.raises(websockets.ConnectionClosed):
                await recv_json(ws)


async def test_ping_pong_and_lifetime(dataset: ReplayDataset) -> None:
    cfg = WsConfig(ping_interval_s=0.25, pong_timeout_s=0.6, lifetime_s=600)  # pongs count: stay under 5/s
    async with ReplayExchange(dataset, port=0, speed=0, ws=cfg) as ex:
        async with aiohttp.ClientSession() as session:
            # a client that never answers pings is dropped after the pong timeout
            mute = await session.ws_connect(f"{ex.ws_url}/ws/btcusdt@kline_1h", autoping=False)
            pings = 0
            while True:
                msg = await asyncio.wait_for(mute.receive(), 5)
                if msg.type == aiohttp.WSMsgType.PING:
                    pings += 1
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    break
            assert pings >= 1
            await mute.close()
        # a client that answers (websockets does) stays connected across several pings
        async with websockets.connect(f"{ex.ws_url}/ws/btcusdt@kline_1h") as ws:
            await asyncio.sleep(1.2)  # > pong timeout: would have been dropped without pongs
            ex.clock.step(2000)
            assert (await recv_json(ws))["e"] == "kline"
    async with ReplayExchange(dataset, port=0, speed=0, ws=WsConfig(lifetime_s=0.2)) as ex:
        async with websockets.connect(f"{ex.ws_url}/ws/btcusdt@kline_1h") as ws:
            assert (await recv_json(ws))["e"] == "serverShutdown"
            with pytest.raises(websockets.ConnectionClosed):
                await recv_json(ws)


async def test_subscription_batching_stays_under_5_per_second(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        series = [(s, i) for s in dataset.symbols for i in ("1h", "4h")]  # 192 streams
        stream = KlineStream(ex.ws_url, series, lambda *a: None, cfg=StreamConfig(batch=20, control_per_s=4))
        await stream.start()
        await asyncio.wait_for(stream.ready.wait(), 30)
        await stream.stop()
        times = stream.stats.control_times
        assert stream.stats.control_messages == 10 and ex.hub.dropped == 0
        assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 4


async def run_feed(ex: ReplayExchange, store: KlineStore, steps: list[int], cfg: StreamConfig | None = None,
                   params: IndicatorConfig | None = None) -> LiveFeed:
    async with BinanceClient(ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url), ClientConfig()) as client:
        feed = LiveFeed(client, store, SYMS, ["1h", "4h"], ex.ws_url, depth=300, indicators=params,
                        stream_cfg=cfg or StreamConfig(backoff_base_s=0.01, backoff_max_s=0.05, snapshot_s=0))
        await feed.start()
        for ms in steps:
            ex.clock.step(ms)
            for _ in range(200):  # let the events flow (no timing asserted)
                await asyncio.sleep(0.005)
                if not feed._backfilling and all(
                    (feed.cache.ring(s, "1h").last_open_ms or 0) >= last_closed_open_ms(ex.clock.now_ms(), "1h") for s in SYMS
                ):
                    break
        await asyncio.sleep(0.1)
        await feed.stop()
        return feed


def assert_store_is_source(store: KlineStore, ds: ReplayDataset, now: int) -> None:
    for s in SYMS:
        for iv in ("1h", "4h"):
            got = store.load(s, iv)
            ser = ds.series(s, iv)
            hi = int((ser.open_time_ms <= last_closed_open_ms(now, iv)).sum())
            assert got.shape[1] >= 300
            assert np.array_equal(got, ser.values[:, hi - got.shape[1] : hi]), (s, iv)  # nothing lost, doubled or forming
            assert (got[CLOSE_TIME] < now).all()


async def test_killed_mid_candle_loses_and_duplicates_nothing(dataset: ReplayDataset, tmp_path: Path) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, ws=WsConfig(drop_every_messages=5)) as ex:
        with KlineStore(tmp_path) as store:
            feed = await run_feed(ex, store, [HOUR // 2] * 14)  # 7 hours in half-hour steps: kills mid-candle
            assert feed.stream is not None and feed.stream.stats.reconnects >= 2
            assert_store_is_source(store, dataset, ex.clock.now_ms())


async def test_backfill_after_long_outage(dataset: ReplayDataset, tmp_path: Path) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, ws=WsConfig(drop_every_messages=1)) as ex:
        with KlineStore(tmp_path) as store:
            feed = await run_feed(ex, store, [12 * HOUR])  # half a day while the socket keeps dying
            assert feed.stats.backfilled_klines >= 10
            assert_store_is_source(store, dataset, ex.clock.now_ms())


async def test_rotation_with_overlap_and_malformed_frames(dataset: ReplayDataset, tmp_path: Path) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, ws=WsConfig(malformed_rate=0.3, seed=4)) as ex:
        with KlineStore(tmp_path) as store:
            cfg = StreamConfig(rotate_after_s=0.05, backoff_base_s=0.01, backoff_max_s=0.05, snapshot_s=0)
            feed = await run_feed(ex, store, [HOUR // 4] * 16, cfg)
            st = feed.stream.stats  # type: ignore[union-attr]
            assert st.rotations >= 1 and st.malformed >= 1 and st.reconnects == 0
            assert_store_is_source(store, dataset, ex.clock.now_ms())


async def test_forming_never_stored_and_indicators_match_batch(dataset: ReplayDataset, tmp_path: Path) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        with KlineStore(tmp_path) as store:
            params = IndicatorConfig()
            feed = await run_feed(ex, store, [HOUR // 3] * 8, params=params)  # 2h40m: ends inside a forming kline
            now = ex.clock.now_ms()
            assert all(feed.cache.ring(s, "1h").has_forming for s in SYMS)
            assert_store_is_source(store, dataset, now)
            for s in SYMS:
                v = store.load(s, "1h")[:, -(300 + 2) :]  # the history the state has seen: 300 seeded + 2 closed live
                batch = compute_all(*(v[r][None] for r in OHLCVQ), params, last=1)
                state = feed.states[(s, "1h")].values
                for k, val in state.items():
                    ref = batch[k][0, -1]
                    assert abs(val[0] - ref) <= 1e-9 * max(abs(ref), 1e-9 * v[CLOSE, -1]), (s, k)


async def test_ticker_and_book_streams(dataset: ReplayDataset) -> None:
    """@ticker, @miniTicker and @bookTicker as Binance sends them, consistent with the REST tickers."""
    import httpx

    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        names = "btcusdt@ticker/btcusdt@miniTicker/btcusdt@bookTicker"
        async with websockets.connect(f"{ex.ws_url}/stream?streams={names}") as ws:
            ex.clock.step(2000)
            got = {}
            for _ in range(3):
                msg = await recv_json(ws)
                got[msg["stream"]] = msg["data"]
            t, m, b = got["btcusdt@ticker"], got["btcusdt@miniTicker"], got["btcusdt@bookTicker"]
            assert t["e"] == "24hrTicker" and list(t) == list("eEspPwxcQbBaAohlvqOCFLn")
            assert m["e"] == "24hrMiniTicker" and list(m) == list("eEscohlvq")
            assert list(b) == list("usbBaA") and float(b["b"]) < float(b["a"])
            async with httpx.AsyncClient(base_url=ex.rest_url) as http:
                rest = (await http.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"})).json()
            assert (t["c"], t["o"], t["h"], t["l"], t["v"], t["n"]) == (
                rest["lastPrice"], rest["openPrice"], rest["highPrice"], rest["lowPrice"], rest["volume"], rest["count"])


async def test_derived_interval_streams_close_like_rest(dataset: ReplayDataset) -> None:
    import httpx

    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        async with websockets.connect(f"{ex.ws_url}/ws/ethusdt@kline_2h") as ws:
            ex.clock.step(2 * HOUR)
            closed = None
            while closed is None:
                ev = await recv_json(ws)
                if ev["k"]["x"]:
                    closed = ev["k"]
            async with httpx.AsyncClient(base_url=ex.rest_url) as http:
                rows = (await http.get("/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "2h", "limit": 3})).json()
            row = next(r for r in rows if r[0] == closed["t"])
            assert [closed[k] for k in "tohlcvTqnVQ"] == [row[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]


async def test_unsupported_streams_are_refused_not_silent(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        # one unsupported name in a combined URL (what cryptofeed builds) must not take the others down
        url = f"{ex.ws_url}/stream?streams=btcusdt@kline_15m/btcusdt@kline_1h/ethusdt@depth7"
        async with websockets.connect(url) as ws:
            first = await recv_json(ws)
            assert first["id"] is None and first["error"]["code"] == 2
            assert "btcusdt@kline_15m" in first["error"]["msg"] and "ethusdt@depth7" in first["error"]["msg"]
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert await recv_json(ws) == {"result": ["btcusdt@kline_1h"], "id": 1}
            ex.clock.step(5000)
            assert (await recv_json(ws))["stream"] == "btcusdt@kline_1h"
        async with websockets.connect(f"{ex.ws_url}/ws") as ws:
            for bad in ("btcusdt@avgPrice", "btcusdt@kline_1s", "nopeusdt@kline_1h", "btcusdt@depth7", "btcusdt@depth@250ms"):
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [bad], "id": 7}))
                reply = await recv_json(ws)
                assert reply["id"] == 7 and reply["error"]["code"] == 2 and bad in reply["error"]["msg"]
                await asyncio.sleep(0.25)  # stay under 5 incoming messages per second
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            assert (await recv_json(ws))["result"] == []


async def test_a_diff_depth_client_keeps_a_local_book_equal_to_rest(dataset: ReplayDataset) -> None:
    """Binance's "How to manage a local order book correctly", step by step, against the synthetic book:
    buffer diff events, take a REST snapshot, drop u <= lastUpdateId, check U/u sequencing, apply;
    the local book then equals REST depth at every later update id (also across kline closes)."""
    async with ReplayExchange(dataset, port=0, speed=0) as ex, httpx.AsyncClient(base_url=ex.rest_url) as http:
        async with websockets.connect(f"{ex.ws_url}/ws/btcusdt@depth@100ms", max_size=2**24) as ws:
            for _ in range(100):  # wait for the venue to register the stream (no timing asserted)
                if ex.hub.subs.get("btcusdt@depth@100ms"):
                    break
                await asyncio.sleep(0.01)
            buffered = []
            ex.clock.step(700)
            buffered.append(await recv_json(ws))
            snap = (await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5000})).json()
            bids = {p: q for p, q in snap["bids"]}
            asks = {p: q for p, q in snap["asks"]}
            last_u = snap["lastUpdateId"]
            started = False
            for step in [900, 100, 100, 3_600_000, 100, 45_000, 700, 3 * 3_600_000]:
                ex.clock.step(step)
                while True:  # every event the step produced (a quiet book sends none)
                    try:
                        buffered.append(await recv_json(ws, timeout=0.5))
                    except TimeoutError:
                        break
                for ev in buffered:
                    assert ev["e"] == "depthUpdate" and ev["s"] == "BTCUSDT"
                    if ev["u"] <= snap["lastUpdateId"]:
                        continue
                    if not started:
                        assert ev["U"] <= snap["lastUpdateId"] + 1 <= ev["u"]
                        started = True
                    else:
                        assert ev["U"] == last_u + 1
                    last_u = ev["u"]
                    for book, levels in ((bids, ev["b"]), (asks, ev["a"])):
                        for p, q in levels:
                            if q == "0.00000000":
                                book.pop(p, None)
                            else:
                                book[p] = q
                buffered = []
                ref = (await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5000})).json()
                assert ref["lastUpdateId"] >= last_u or not started  # a quiet book sends no event; its ids run on
                if started:
                    assert bids == dict(ref["bids"]) and asks == dict(ref["asks"])
                    top = (await http.get("/api/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"})).json()
                    assert (top["bidPrice"], top["askPrice"]) == (ref["bids"][0][0], ref["asks"][0][0])
            assert started


async def test_synthetic_trades_follow_the_kline_tape(dataset: ReplayDataset) -> None:
    """Trade prints carry the running trade ids of the kline events and add up to the kline's volume."""
    async with ReplayExchange(dataset, port=0, speed=0) as ex, httpx.AsyncClient(base_url=ex.rest_url) as http:
        url = f"{ex.ws_url}/stream?streams=btcusdt@aggTrade/btcusdt@trade"
        async with websockets.connect(url) as ws:
            for _ in range(100):
                if ex.hub.subs.get("btcusdt@aggTrade"):
                    break
                await asyncio.sleep(0.01)
            aggs, trades = [], []
            for _ in range(5):
                ex.clock.step(60_000)
                for _ in range(2):
                    ev = await recv_json(ws)
                    (aggs if ev["stream"] == "btcusdt@aggTrade" else trades).append(ev["data"])
        kl = (await http.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1h", "limit": 1})).json()[-1]
        assert [a["f"] for a in aggs[1:]] == [a["l"] + 1 for a in aggs[:-1]]  # contiguous trade ids
        assert [t["t"] for t in trades] == [a["l"] for a in aggs]
        assert all(a["e"] == "aggTrade" and float(a["q"]) > 0 for a in aggs)
        assert aggs[-1]["p"] == kl[4]  # the last print is the forming kline's close
        series = dataset.series("BTCUSDT", "1h")
        i = series.visible(ex.clock.now_ms()) - 1
        assert aggs[-1]["l"] == int(series.trades_cumsum[i - 1]) + kl[8]  # the kline event's "L"


async def test_partial_depth_streams(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex, httpx.AsyncClient(base_url=ex.rest_url) as http:
        url = f"{ex.ws_url}/stream?streams=ethusdt@depth5/ethusdt@depth20@100ms"
        async with websockets.connect(url) as ws:
            for _ in range(100):
                if ex.hub.subs.get("ethusdt@depth5"):
                    break
                await asyncio.sleep(0.01)
            ex.clock.step(1000)
            got = {}
            while len(got) < 2:
                ev = await recv_json(ws)
                got[ev["stream"]] = ev["data"]
        rest = (await http.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 20})).json()
        assert got["ethusdt@depth20@100ms"] == rest
        assert got["ethusdt@depth5"] == {"lastUpdateId": rest["lastUpdateId"], "bids": rest["bids"][:5], "asks": rest["asks"][:5]}


async def test_ws_latency_delays_without_serialising(dataset: ReplayDataset) -> None:
    """--ws-latency-ms is a latency: a burst of 40 events arrives about one latency later, not forty."""
    syms = list(dataset.symbols)[:40]
    async with ReplayExchange(dataset, port=0, speed=0, ws=WsConfig(latency_ms=200)) as ex:
        names = "/".join(f"{s.lower()}@kline_1h" for s in syms)
        async with websockets.connect(f"{ex.ws_url}/stream?streams={names}", max_size=2**22) as ws:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            ex.clock.step(2000)
            for _ in syms:
                await recv_json(ws, timeout=10)
            elapsed = loop.time() - t0
    assert 0.2 <= elapsed < 2.0, elapsed  # serialised, it would take 40 x 0.2 s = 8 s


async def test_a_running_feed_follows_added_symbols(dataset: ReplayDataset, tmp_path: Path) -> None:
    """`warm --follow`'s reload path: symbols added while running are warmed, streamed and kept current."""
    async with ReplayExchange(dataset, port=0, speed=0) as ex, BinanceClient(ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url)) as client:
        with KlineStore(tmp_path / "s") as store:
            feed = LiveFeed(client, store, ["BTCUSDT"], ["1h"], ex.ws_url, depth=200,
                            stream_cfg=StreamConfig(backoff_base_s=0.01, backoff_max_s=0.05, snapshot_s=0))
            await feed.start()
            try:
                added = await feed.add_symbols(["ETHUSDT", "BTCUSDT"])
                assert added == [("ETHUSDT", "1h")] and ("ETHUSDT", "1h") in feed.live
                assert store.load("ETHUSDT", "1h").shape[1] == 200  # warmed over REST
                before = feed.cache.ring("ETHUSDT", "1h").last_open_ms
                ex.clock.step(3_600_000)
                for _ in range(400):  # until the new stream delivers the next close (deadline ~4 s)
                    if (feed.cache.ring("ETHUSDT", "1h").last_open_ms or 0) > (before or 0):
                        break
                    await asyncio.sleep(0.01)
                assert (feed.cache.ring("ETHUSDT", "1h").last_open_ms or 0) == (before or 0) + 3_600_000
            finally:
                await feed.stop()
