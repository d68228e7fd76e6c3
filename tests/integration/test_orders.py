"""Orders end to end against the replay venue on 127.0.0.1: the signed client, Binance's error
shapes, fills along the recorded path, unknown-status resolution, user data, Ed25519."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trader.config import AccountConfig, ClientConfig, FaultConfig, MatchingReplayConfig, ProfileConfig
from trader.errors import OrderRejected, OrderStatusUnknown
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import Credentials, encode_params
from trader.exchange.trading import OrderIntent, TradingClient, UserDataStream
from trader.models import LOW, OPEN_TIME
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

D = Decimal
H = 3_600_000
KEY, SECRET = "hmacKey" + "A" * 57, "hmacSecret" + "B" * 54
_ED = Ed25519PrivateKey.generate()
ED_PEM = _ED.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
ED_PUB = _ED.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
ED_KEY = "ed25519Key" + "C" * 54
ACCOUNTS = [
    AccountConfig(api_key=KEY, api_secret=SECRET, balances={"USDT": 10_000.0, "BTC": 1.0}),
    AccountConfig(api_key=ED_KEY, ed25519_public_key=ED_PUB, balances={"USDT": 1_000.0}),
]


@pytest.fixture
async def venue(dataset: ReplayDataset) -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(dataset, port=0, speed=0, accounts=ACCOUNTS, matching=MatchingReplayConfig(order_limit_10s=1000)) as ex:
        yield ex


@pytest.fixture
async def client(venue: ReplayExchange) -> AsyncIterator[TradingClient]:
    profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
    async with BinanceClient(profile, ClientConfig(timeout_s=1.0, max_attempts=2, backoff_base_s=0.01)) as rest:
        yield TradingClient(rest, Credentials.hmac(KEY, SECRET), resolve_timeout_s=5.0, poll_s=0.01)


def intent(leg: str, side: str, kind: str, signal_ms: int = 1, **kw: Any) -> OrderIntent:
    return OrderIntent("test", kw.pop("symbol", "BTCUSDT"), signal_ms, leg, side, kind, **kw)


async def raw(venue: ReplayExchange, method: str, path: str, params: list[tuple[str, Any]], *, key: str | None = KEY,
              secret: str = SECRET, timestamp: int | None = None, sign: bool = True, recv_window: int | None = None) -> httpx.Response:
    """A hand-made signed request (what any Binance client sends)."""
    items = list(params)
    if recv_window is not None:
        items.append(("recvWindow", recv_window))
    if timestamp is not False:
        items.append(("timestamp", venue.clock.now_ms() if timestamp is None else timestamp))
    query = Credentials.hmac(key or "x", secret).signed_query(items) if sign else encode_params(items)
    headers = {"X-MBX-APIKEY": key} if key else {}
    async with httpx.AsyncClient() as c:
        return await c.request(method, f"{venue.rest_url}{path}?{query}", headers=headers)


def book(venue: ReplayExchange, symbol: str = "BTCUSDT") -> tuple[Decimal, Decimal]:
    m = venue.trading.market
    return m.book(symbol, m.price(symbol, venue.clock.now_ms()), venue.clock.now_ms())


def venue_orders(venue: ReplayExchange, key: str = KEY) -> list[Any]:
    return list(venue.trading.engine.accounts[key].orders.values())


async def test_every_order_type_through_the_client(venue: ReplayExchange, client: TradingClient) -> None:
    bid, ask = book(venue)
    m = await client.submit(intent("m", "BUY", "MARKET", quantity=D("0.01")))
    assert m.status == "FILLED" and m.fills and m.fills[0].price >= ask and m.fills[0].commission_asset == "BTC"
    q = await client.submit(intent("q", "BUY", "MARKET", quote_order_qty=D("100")))
    assert q.status == "FILLED" and q.cum_quote <= 100 and q.executed_qty > 0
    lim = await client.submit(intent("l", "BUY", "LIMIT", quantity=D("0.01"), price=bid * D("0.95")))
    mk = await client.submit(intent("mk", "SELL", "LIMIT_MAKER", quantity=D("0.01"), price=ask * D("1.05")))
    sl = await client.submit(intent("sl", "SELL", "STOP_LOSS_LIMIT", quantity=D("0.01"), price=bid * D("0.9"), stop_price=bid * D("0.92")))
    tp = await client.submit(intent("tp", "SELL", "TAKE_PROFIT_LIMIT", quantity=D("0.01"), price=ask * D("1.1"), stop_price=ask * D("1.08")))
    s2 = await client.submit(intent("s2", "SELL", "STOP_LOSS", quantity=D("0.01"), stop_price=bid * D("0.9")))
    t2 = await client.submit(intent("t2", "SELL", "TAKE_PROFIT", quantity=D("0.01"), stop_price=ask * D("1.1")))
    resting = [lim, mk, sl, tp, s2, t2]
    assert all(o.status == "NEW" for o in resting)
    assert lim.price == (bid * D("0.95")).quantize(D("0.01")) or lim.price % D("0.01") == 0  # rounded to the tick
    opened = await client.open_orders("BTCUSDT")
    assert {o.client_order_id for o in opened} == {o.client_order_id for o in resting}
    found = await client.query_order("BTCUSDT", client_order_id=sl.client_order_id)
    assert found is not None and (found.type, found.stop_price) == ("STOP_LOSS_LIMIT", sl.stop_price)
    assert await client.query_order("BTCUSDT", client_order_id="nope") is None
    cancelled = await client.cancel_order("BTCUSDT", client_order_id=lim.client_order_id)
    assert cancelled is not None and cancelled.status == "CANCELED"
    assert await client.cancel_order("BTCUSDT", client_order_id=lim.client_order_id) is None  # -2011
    rest = await client.cancel_open_orders("BTCUSDT")
    assert len(rest) == 5 and await client.open_orders() == []
    history = await client.all_orders("BTCUSDT")
    assert [o.client_order_id for o in history] == [o.client_order_id for o in [m, q, *resting]]
    trades = await client.my_trades("BTCUSDT")
    assert len(trades) == 2 and all(t.commission > 0 for t in trades)
    balances = await client.account()
    bought = m.executed_qty + q.executed_qty - sum(t.commission for t in trades)
    assert balances["BTC"].free == D(1) + bought and balances["BTC"].locked == 0
    assert balances["USDT"].free == D(10_000) - m.cum_quote - q.cum_quote and balances["USDT"].locked == 0


async def test_response_types_are_binance_shaped(venue: ReplayExchange) -> None:
    shapes = {}
    for rt in ("ACK", "RESULT", "FULL"):
        r = await raw(venue, "POST", "/api/v3/order", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.001"), ("newOrderRespType", rt)])
        assert r.status_code == 200, r.text
        shapes[rt] = set(r.json())
        assert r.headers["X-MBX-ORDER-COUNT-10S"] and r.headers["X-MBX-ORDER-COUNT-1D"]
    assert shapes["ACK"] == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    assert shapes["RESULT"] >= shapes["ACK"] | {"price", "origQty", "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type", "side", "workingTime"}
    assert shapes["FULL"] == shapes["RESULT"] | {"fills"}
    t = await raw(venue, "POST", "/api/v3/order/test", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.001")])
    assert t.status_code == 200 and t.json() == {}
    t2 = await raw(venue, "POST", "/api/v3/order/test", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.001"), ("computeCommissionRates", "true")])
    assert t2.json()["standardCommissionForOrder"] == {"maker": "0.00100000", "taker": "0.00100000"}
    assert len(venue_orders(venue)) == 3  # the tests placed nothing


async def test_rejections_have_binance_codes_messages_and_statuses(venue: ReplayExchange) -> None:
    order = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "0.001")]
    bid, _ = book(venue)
    now = venue.clock.now_ms()
    cases: list[tuple[httpx.Response, int, int, str]] = [
        (await raw(venue, "GET", "/api/v3/account", [], key=None), 401, -2014, "API-key format invalid."),
        (await raw(venue, "GET", "/api/v3/account", [], key="unknownKey123"), 401, -2015, "Invalid API-key, IP, or permissions for action."),
        (await raw(venue, "GET", "/api/v3/account", [], secret="wrong"), 400, -1022, "Signature for this request is not valid."),
        (await raw(venue, "GET", "/api/v3/account", [], sign=False), 400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."),
        (await raw(venue, "GET", "/api/v3/account", [], timestamp=now - 6000), 400, -1021, "Timestamp for this request is outside of the recvWindow."),
        (await raw(venue, "GET", "/api/v3/account", [], timestamp=now + 1000), 400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."),
        (await raw(venue, "GET", "/api/v3/account", [], recv_window=60_001), 400, -1131, "recvWindow must be less than 60000"),
        (await raw(venue, "POST", "/api/v3/order", order), 400, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
        (await raw(venue, "POST", "/api/v3/order", [*order, ("price", "1.001")]), 400, -1013, "Filter failure: PRICE_FILTER"),
        (await raw(venue, "POST", "/api/v3/order", [*order[:-1], ("quantity", "0.0000001"), ("price", f"{bid}")]), 400, -1013, "Filter failure: LOT_SIZE"),
        (await raw(venue, "POST", "/api/v3/order", [*order[:-1], ("quantity", "0.00001"), ("price", f"{bid}")]), 400, -1013, "Filter failure: NOTIONAL"),
        (await raw(venue, "POST", "/api/v3/order", [*order[:-1], ("quantity", "1"), ("price", f"{bid * 6}")]), 400, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        (await raw(venue, "POST", "/api/v3/order", [*order[:-1], ("quantity", "1"), ("price", f"{bid}")]), 400, -2010, "Account has insufficient balance for requested action."),
        (await raw(venue, "POST", "/api/v3/order", [("symbol", "BTCUSDT"), ("side", "SELL"), ("type", "STOP_LOSS"), ("quantity", "0.01"), ("stopPrice", f"{bid * 2}")]),
         400, -2010, "Order would trigger immediately."),
        (await raw(venue, "POST", "/api/v3/order", [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT_MAKER"), ("quantity", "0.01"), ("price", f"{bid * D('1.01'):.2f}")]),
         400, -2010, "Order would immediately match and take."),
        (await raw(venue, "DELETE", "/api/v3/order", [("symbol", "BTCUSDT"), ("orderId", 12345)]), 400, -2011, "Unknown order sent."),
        (await raw(venue, "GET", "/api/v3/order", [("symbol", "BTCUSDT"), ("origClientOrderId", "nope")]), 400, -2013, "Order does not exist."),
        (await raw(venue, "POST", "/api/v3/order", [("symbol", "NOPEUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "1")]), 400, -1121, "Invalid symbol."),
        (await raw(venue, "POST", "/api/v3/order", [("symbol", "BTCUSDT"), ("side", "UP"), ("type", "MARKET"), ("quantity", "1")]), 400, -1117, "Invalid side."),
    ]
    for resp, status, code, msg in cases:
        assert (resp.status_code, resp.json()) == (status, {"code": code, "msg": msg})
    assert venue_orders(venue) == []


async def test_order_count_limits_answer_429_minus_1015_with_the_counts(dataset: ReplayDataset) -> None:
    async with ReplayExchange(dataset, port=0, speed=0, accounts=ACCOUNTS, matching=MatchingReplayConfig(order_limit_10s=3)) as ex:
        params = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.001")]
        answers = [await raw(ex, "POST", "/api/v3/order", params) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert [r.headers.get("X-MBX-ORDER-COUNT-10S") for r in answers] == ["1", "2", "3", "3"]
        assert answers[3].json() == {"code": -1015, "msg": "Too many new orders; current limit is 3 orders per 10 SECOND."}
        assert answers[3].headers["Retry-After"] == "10" and len(venue_orders(ex)) == 3


async def test_fills_only_where_the_recorded_path_allows(venue: ReplayExchange, client: TradingClient, dataset: ReplayDataset) -> None:
    s = dataset.series("BTCUSDT", "1h")
    now = venue.clock.now_ms()
    i = int(np.searchsorted(s.open_time_ms, now))
    lows = s.values[LOW, i : i + 48]
    target = D(str(round(float(np.sort(lows)[len(lows) // 3]), 2)))  # a third of the next 48 lows go through it
    never = D(str(round(float(lows.min()) * 0.999, 2)))
    o = await client.submit(intent("through", "BUY", "LIMIT", quantity=D("0.002"), price=target))
    n = await client.submit(intent("never", "BUY", "LIMIT", quantity=D("0.002"), price=never))
    venue.clock.step(48 * H)
    done = await client.query_order("BTCUSDT", client_order_id=o.client_order_id)
    left = await client.query_order("BTCUSDT", client_order_id=n.client_order_id)
    assert done is not None and left is not None and left.status == "NEW"
    assert done.status == "FILLED" and done.avg_price == target
    fills = await client.my_trades("BTCUSDT", order_id=done.order_id)
    k = int(np.searchsorted(s.open_time_ms, fills[0].time_ms, side="right")) - 1
    first = i + int(np.argmax(lows < float(target)))
    assert k == first and s.values[OPEN_TIME, k] <= fills[0].time_ms < s.values[OPEN_TIME, k] + H  # the first kline trading through
    assert fills[0].is_maker and fills[0].commission == D("0.00000200")  # 0.1 % of 0.002 BTC


async def test_clock_skew_gives_minus_1021_then_a_resync_and_success(venue: ReplayExchange, client: TradingClient) -> None:
    await client.sync_time()
    venue.clock.step(H)  # the client's idea of the server time is now an hour behind
    o = await client.submit(intent("skew", "BUY", "MARKET", quantity=D("0.001")))
    assert o.status == "FILLED" and client.stats.time_resyncs == 1 and len(venue_orders(venue)) == 1


@pytest.mark.parametrize("mode", ["500", "503", "hang"])
async def test_an_unknown_status_is_resolved_by_looking_up_never_by_resending(venue: ReplayExchange, client: TradingClient, mode: str) -> None:
    venue.trading.faults = FaultConfig(order_5xx_rate=1.0, order_5xx_mode=mode, order_hang_s=3.0)  # type: ignore[arg-type]
    o = await client.submit(intent("u", "BUY", "MARKET", quantity=D("0.001")))
    assert o.status == "FILLED"
    assert (client.stats.orders_sent, client.stats.unknown, client.stats.resolved_found) == (1, 1, 1)
    assert [x.client_order_id for x in venue_orders(venue)] == [o.client_order_id]
    assert venue.trading.unknown_status_orders == [o.client_order_id]
    assert client.journal.get(o.client_order_id).status == "PLACED"  # type: ignore[union-attr]
    again = await client.submit(intent("u", "BUY", "MARKET", quantity=D("0.001")))  # the same intent: the same order
    assert again.order_id == o.order_id and len(venue_orders(venue)) == 1


async def test_an_order_that_never_left_is_sent_once_its_window_has_passed(venue: ReplayExchange, client: TradingClient) -> None:
    it = intent("lost", "BUY", "MARKET", quantity=D("0.001"))
    await client.sync_time()
    ts = client.clock.now_ms()
    client.journal.sending(it.client_order_id, "BTCUSDT", {}, ts, 5000)  # written, then the process died before sending
    client.resolve_timeout_s = 0.05
    with pytest.raises(OrderStatusUnknown):  # the server clock has not moved: it might still arrive; not sent
        await client.submit(it)
    assert venue_orders(venue) == [] and client.journal.get(it.client_order_id).status == "UNKNOWN"  # type: ignore[union-attr]
    venue.clock.step(6001 + 1000)  # past timestamp + recvWindow (+1 s margin): it can never be accepted now
    o = await client.submit(it)
    assert o.status == "FILLED" and client.stats.resolved_absent == 1 and len(venue_orders(venue)) == 1


async def test_rejected_orders_and_local_checks_send_nothing_twice(venue: ReplayExchange, client: TradingClient) -> None:
    venue.trading.faults = FaultConfig(order_reject_rate=1.0)
    with pytest.raises(OrderRejected) as err:
        await client.submit(intent("r", "BUY", "MARKET", quantity=D("0.001")))
    assert err.value.code == -2010 and venue_orders(venue) == []
    venue.trading.faults = FaultConfig()
    with pytest.raises(OrderRejected, match="rejected before"):  # the journal remembers; not resent
        await client.submit(intent("r", "BUY", "MARKET", quantity=D("0.001")))
    sent = client.stats.orders_sent
    with pytest.raises(OrderRejected, match="NOTIONAL") as local:
        await client.submit(intent("tiny", "BUY", "LIMIT", quantity=D("0.00001"), price=D("50000")))
    assert local.value.local and client.stats.orders_sent == sent and client.stats.local_rejects == 1
    bid, _ = book(venue)
    with pytest.raises(OrderRejected, match="PERCENT_PRICE_BY_SIDE"):
        await client.submit(intent("far", "BUY", "LIMIT", quantity=D("0.001"), price=bid * 6))
    odd = await client.submit(intent("odd", "BUY", "LIMIT", quantity=D("0.0012345"), price=bid * D("0.9") + D("0.004")))
    assert odd.orig_qty == D("0.00123") and odd.price % D("0.01") == 0  # rounded, then accepted
    assert client.stats.orders_sent == sent + 1


async def test_ed25519_accounts_sign_and_trade(venue: ReplayExchange) -> None:
    profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
    async with BinanceClient(profile) as rest:
        tc = TradingClient(rest, Credentials.ed25519(ED_KEY, ED_PEM))
        o = await tc.submit(intent("ed", "BUY", "MARKET", quantity=D("0.001")))
        assert o.status == "FILLED"
        assert (await tc.account())["BTC"].free == D("0.000999")
        wrong = TradingClient(rest, Credentials.ed25519(ED_KEY, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())))
        with pytest.raises(Exception, match="-1022"):
            await wrong.account()


async def test_user_data_over_the_listen_key_stream_and_the_ws_api(venue: ReplayExchange, client: TradingClient) -> None:
    import websockets

    key = await client.new_listen_key()
    assert key == await client.new_listen_key()  # the account's live key
    stop = asyncio.Event()
    events: list[dict[str, Any]] = []
    await client.sync_time()
    stream = UserDataStream(f"{venue.ws_url}/ws-api/v3", client.credentials, client.clock, events.append)
    task = asyncio.create_task(stream.run(stop))
    await asyncio.wait_for(stream.connected.wait(), 10)
    async with websockets.connect(f"{venue.ws_url}/ws/{key}") as ws:
        for _ in range(100):  # wait until the venue has the socket registered (no timing asserted)
            if any(lk.sockets for lk in venue.trading._listen_keys.values()):
                break
            await asyncio.sleep(0.01)
        o = await client.submit(intent("ud", "BUY", "MARKET", quantity=D("0.001")))
        raw_events = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]
    kinds = [(e["e"], e.get("x")) for e in raw_events]
    assert kinds == [("executionReport", "NEW"), ("outboundAccountPosition", None), ("executionReport", "TRADE"), ("outboundAccountPosition", None)]
    trade = raw_events[2]
    assert (trade["c"], trade["X"], trade["l"], trade["N"]) == (o.client_order_id, "FILLED", "0.00100000", "BTC")
    assert {"e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "x", "X", "r", "i", "l", "z", "L", "n", "N", "T", "t", "w", "m", "O", "Z", "Y", "Q"} <= set(trade)
    for _ in range(500):
        if o.client_order_id in stream.reports and stream.reports[o.client_order_id]["X"] == "FILLED":
            break
        await asyncio.sleep(0.01)
    assert stream.reports[o.client_order_id]["x"] == "TRADE"
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_user_data_drops_reconnect_and_report(venue: ReplayExchange, client: TradingClient) -> None:
    venue.trading.faults = FaultConfig(user_data_drop_every_events=2)
    stop = asyncio.Event()
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    await client.sync_time()
    stream = UserDataStream(f"{venue.ws_url}/ws-api/v3", client.credentials, client.clock, on_reconnect=on_reconnect)
    task = asyncio.create_task(stream.run(stop))
    await asyncio.wait_for(stream.connected.wait(), 10)
    await client.submit(intent("d1", "BUY", "MARKET", quantity=D("0.001")))  # 4 events: the socket drops after the reply + 1
    await asyncio.wait_for(reconnected.wait(), 10)
    assert stream.reconnects >= 1 and venue.trading.user_data_dropped >= 1
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_the_journal_survives_reopening(tmp_path: Any, venue: ReplayExchange) -> None:
    path = tmp_path / "orders.sqlite"
    profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
    async with BinanceClient(profile) as rest:
        tc = TradingClient(rest, Credentials.hmac(KEY, SECRET), OrderJournal(path))
        o = await tc.submit(intent("j", "BUY", "MARKET", quantity=D("0.001")))
        tc.journal.close()
        tc2 = TradingClient(rest, Credentials.hmac(KEY, SECRET), OrderJournal(path))
        assert (await tc2.submit(intent("j", "BUY", "MARKET", quantity=D("0.001")))).order_id == o.order_id
        assert tc2.stats.orders_sent == 0 and len(venue_orders(venue)) == 1
    assert SECRET.encode() not in path.read_bytes()


@pytest.mark.slow
async def test_twenty_crash_cycles_leave_exactly_one_order_per_intent(venue: ReplayExchange, tmp_path: Any) -> None:
    """Each cycle: the venue accepts the new intent's order and holds its response; the client is
    SIGKILLed while waiting; a restarted client submits every intent again. 0 duplicates allowed."""
    import os
    import signal
    import sys
    from pathlib import Path

    from trader.exchange.trading import client_order_id

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRADER_API_KEY": KEY, "TRADER_API_SECRET": SECRET, "PYTHONPATH": str(root)}
    journal = str(tmp_path / "journal.sqlite")
    acct = venue.trading.engine.accounts[KEY]
    cycles = 20

    async def child(n: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.order_child", venue.rest_url, journal, str(n),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=root,
        )

    for k in range(cycles):
        cid = client_order_id("crash", "BTCUSDT", 1_000 + k, "entry")
        venue.trading.faults = FaultConfig(order_5xx_rate=1.0, order_5xx_mode="hang", order_hang_s=120.0)
        proc = await child(k + 1)
        for _ in range(3000):  # until the venue holds the new order (accepted, its answer withheld)
            if (("BTCUSDT", cid) in acct.by_client) or proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        assert ("BTCUSDT", cid) in acct.by_client, (await proc.communicate())[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        venue.trading.faults = FaultConfig()
        restarted = await child(k + 1)
        out, err = await asyncio.wait_for(restarted.communicate(), 120)
        assert restarted.returncode == 0, err.decode()[-2000:]
        lines = [orjson.loads(x) for x in out.splitlines()]
        placed = {d["cid"]: d["orderId"] for d in lines if "cid" in d}
        assert len(placed) == k + 1 and lines[-1]["stats"]["orders_sent"] == 0  # nothing was sent again
        per_cid: dict[str, int] = {}
        for o in acct.orders.values():
            per_cid[o.client_order_id] = per_cid.get(o.client_order_id, 0) + 1
        assert per_cid == dict.fromkeys(placed, 1)  # exactly one order per intent, ever
        assert {acct.by_client[("BTCUSDT", c)].order_id for c in placed} == set(placed.values())
    assert len(acct.orders) == cycles
