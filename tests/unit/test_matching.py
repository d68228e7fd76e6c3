"""The replay venue's matching engine on a hand-written recorded path (a real ReplayDataset on disk).

Path (1h klines of TESTUSDT from T0; up klines go O->L->H->C, down klines O->H->L->C, one third
of the hour per leg):

    k0  100.00 -> 99.00 (20 min) -> 101.00 (40) -> 100.51     up
    k1  100.51 -> 102.00 (20) -> 98.00 (40) -> 99.00          down
    k2   99.00 -> 99.50 -> 97.00 -> 98.00                     down
    k3   95.00 (a gap down from 98.00) -> 94.00 -> 96.00 -> 95.50   up
    k4+  95.50 / 96.00 / 95.00 / 95.50 ...                    flat

Volume 10.001 per kline (step 0.001), so ``max_volume_share`` 0.1 caps one order at 1.000 per kline.
Spread 10 bps: at 100.00 the book is 99.95 / 100.05.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from trader.replay.dataset import ReplayDataset
from trader.replay.matching import Account, MatchingConfig, MatchingEngine, OrderRequest, Rejected
from trader.replay.pathmarket import SeriesMarket

H = 3_600_000
T0 = 1_699_999_200_000  # an hour boundary
KLINES = [
    (100.00, 101.00, 99.00, 100.51),
    (100.51, 102.00, 98.00, 99.00),
    (99.00, 99.50, 97.00, 98.00),
    (95.00, 96.00, 94.00, 95.50),
] + [(95.50, 96.00, 95.00, 95.50)] * 20
D = Decimal


def _write(dirpath: Path) -> None:
    lines = ["open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"]
    for i, (o, h, lo, c) in enumerate(KLINES):
        t = T0 + i * H
        lines.append(f"{t},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},10.001,{t + H - 1},{10 * c:.4f},100,5.000,{5 * c:.4f}")
    (dirpath / "TESTUSDT-1h.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> SeriesMarket:
    d = tmp_path_factory.mktemp("path")
    _write(d)
    return SeriesMarket(ReplayDataset(d), spread_bps=10.0)


def _engine(market: SeriesMarket, **cfg: object) -> tuple[MatchingEngine, Account, list[dict[str, object]]]:
    events: list[dict[str, object]] = []
    engine = MatchingEngine(market, MatchingConfig(impact_bps=0.0, **cfg), lambda a, e: events.append(e))  # type: ignore[arg-type]
    acct = engine.add_account(Account("k" * 16, {"USDT": D(10_000), "TEST": D(10)}, secret=b"s"))
    return engine, acct, events


def req(side: str, kind: str, qty: str | None = "1", price: str | None = None, stop: str | None = None, **kw: object) -> OrderRequest:
    return OrderRequest(
        symbol="TESTUSDT", side=side, type=kind, quantity=D(qty) if qty else None, price=D(price) if price else None,
        stop_price=D(stop) if stop else None, time_in_force="GTC" if kind in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") else None,
        **kw,  # type: ignore[arg-type]
    )


def bal(acct: Account, asset: str) -> tuple[Decimal, Decimal]:
    free, locked = acct.balances[asset]
    return free, locked


def test_the_path_and_book_are_the_documented_ones(market: SeriesMarket) -> None:
    assert market.price("TESTUSDT", T0) == 100.0
    assert market.price("TESTUSDT", T0 + H // 3) == pytest.approx(99.0)
    assert market.price("TESTUSDT", T0 + 2 * H // 3) == pytest.approx(101.0)
    assert market.price("TESTUSDT", T0 + H + H // 3) == pytest.approx(102.0)  # a down kline visits its high first
    assert market.book("TESTUSDT", 100.0, T0) == (D("99.95"), D("100.05"))
    rules = market.rules("TESTUSDT", T0)
    assert (rules.tick, rules.step, rules.min_notional) == (D("0.01"), D("0.001"), D(5))


def test_market_buy_fills_at_the_ask_with_the_taker_fee_in_the_base_asset(market: SeriesMarket) -> None:
    engine, acct, events = _engine(market)
    o = engine.place(acct, req("BUY", "MARKET", "0.5"), T0)
    assert o is not None and o.status == "FILLED"
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"], f["isMaker"]) for f in o.fills] == [
        ("100.05000000", "0.50000000", "0.00050000", "TEST", False)
    ]
    assert bal(acct, "USDT") == (D(10_000) - D("50.025"), 0)
    assert bal(acct, "TEST") == (D(10) + D("0.5") - D("0.0005"), 0)
    assert [e["x"] for e in events if e["e"] == "executionReport"] == ["NEW", "TRADE"]


def test_market_impact_grows_with_size_against_the_kline_volume(market: SeriesMarket) -> None:
    events: list[object] = []
    engine = MatchingEngine(market, MatchingConfig(impact_bps=5.0), lambda a, e: events.append(e))
    acct = engine.add_account(Account("k" * 16, {"USDT": D(10_000)}, secret=b"s"))
    small = engine.place(acct, req("BUY", "MARKET", "0.1"), T0)
    big = engine.place(acct, req("BUY", "MARKET", "0.9"), T0)
    assert small is not None and big is not None
    # 0.1 x 100.05 is 1.0 % of the kline's 1005.1 USDT: 5.0 bps above the ask; 0.9 is 9 %: 44.8 bps
    # (100.05 x 1.000498 = 100.0998 and 100.05 x 1.00448 = 100.498, rounded up to the tick)
    assert D(small.fills[0]["price"]) == D("100.10")
    assert D(big.fills[0]["price"]) == D("100.50")


def test_a_resting_limit_fills_only_when_the_path_trades_through(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    o = engine.place(acct, req("BUY", "LIMIT", "1", price="99.00"), T0)
    assert o is not None and o.status == "NEW"
    assert bal(acct, "USDT") == (D(10_000) - 99, D(99))  # locked at the limit price
    engine.advance(T0 + H)  # k0 only touches 99.00 at 20 min: no fill
    assert o.status == "NEW"
    engine.advance(T0 + 2 * H)  # k1 goes through it on its way from 102 to 98, 3/4 of that leg
    assert o.status == "FILLED"
    f = o.fills[0]
    assert (f["price"], f["time"], f["isMaker"], f["commission"]) == ("99.00000000", T0 + H + 35 * 60_000, True, "0.00100000")
    assert bal(acct, "USDT") == (D(10_000) - 99, 0)


def test_fill_on_touch_fills_at_the_touch(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market, fill_on_touch=True)
    o = engine.place(acct, req("BUY", "LIMIT", "1", price="99.00"), T0)
    engine.advance(T0 + H)
    assert o is not None and o.status == "FILLED" and o.fills[0]["time"] == T0 + 20 * 60_000


def test_a_marketable_limit_takes_at_the_book_not_at_its_price(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    o = engine.place(acct, req("BUY", "LIMIT", "1", price="101.00"), T0)
    assert o is not None and o.status == "FILLED"
    assert (o.fills[0]["price"], o.fills[0]["isMaker"]) == ("100.05000000", False)
    assert bal(acct, "USDT") == (D(10_000) - D("100.05"), 0)  # the lock at 101 was released


def test_stop_loss_triggers_on_the_cross_and_fills_at_the_bid(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    o = engine.place(acct, req("SELL", "STOP_LOSS", "1", stop="98.50"), T0)
    assert o is not None and not o.working and o.working_ms == -1
    engine.advance(T0 + 2 * H)
    assert o.status == "FILLED" and o.working_ms == T0 + H + 37 * 60_000 + 30_000  # 7/8 of 102 -> 98
    assert (o.fills[0]["price"], o.fills[0]["commissionAsset"]) == ("98.45000000", "USDT")


def test_a_stop_across_a_gap_fills_on_the_far_side(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    o = engine.place(acct, req("SELL", "STOP_LOSS", "1", stop="96.00"), T0)
    engine.advance(T0 + 3 * H + 1)
    assert o is not None and o.status == "FILLED"
    assert (o.fills[0]["price"], o.fills[0]["time"]) == ("94.95000000", T0 + 3 * H)  # the gap 98 -> 95, not 96


def test_stop_limit_becomes_a_resting_limit_once_triggered(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    o = engine.place(acct, req("BUY", "STOP_LOSS_LIMIT", "1", price="101.70", stop="101.50"), T0)
    engine.advance(T0 + H)  # k0 high 101: not triggered
    assert o is not None and not o.triggered
    engine.advance(T0 + H + 20 * 60_000)  # k1 rises to 102: triggers at 101.50, takes at the ask (<= its limit)
    assert o.triggered and o.status == "FILLED"
    assert D(o.fills[0]["price"]) <= D("101.70")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req("SELL", "STOP_LOSS", "1", stop="100.50"), "Order would trigger immediately."),
        (req("BUY", "TAKE_PROFIT", "1", stop="100.50"), "Order would trigger immediately."),
        (req("BUY", "LIMIT_MAKER", "1", price="100.05"), "Order would immediately match and take."),
        (req("SELL", "LIMIT_MAKER", "1", price="99.95"), "Order would immediately match and take."),
        (req("BUY", "LIMIT", "1", price="99.999"), "Filter failure: PRICE_FILTER"),
        (req("BUY", "LIMIT", "0.0001", price="99"), "Filter failure: LOT_SIZE"),
        (req("BUY", "LIMIT", "0.01", price="99"), "Filter failure: NOTIONAL"),
        (req("BUY", "MARKET", "0.01"), "Filter failure: NOTIONAL"),
        (req("BUY", "LIMIT", "0.1", price="600"), "Filter failure: PERCENT_PRICE_BY_SIDE"),
        (req("SELL", "LIMIT", "1", price="19"), "Filter failure: PERCENT_PRICE_BY_SIDE"),
        (req("BUY", "LIMIT", "200", price="99"), "Account has insufficient balance for requested action."),
        (req("SELL", "LIMIT", "11", price="100.50"), "Account has insufficient balance for requested action."),
        (req("SELL", "MARKET", "11"), "Filter failure: MARKET_LOT_SIZE"),
    ],
)
def test_rejections_carry_binance_codes_and_messages(market: SeriesMarket, request_: OrderRequest, message: str) -> None:
    engine, acct, events = _engine(market)
    with pytest.raises(Rejected) as err:
        engine.place(acct, request_, T0)
    assert err.value.msg == message and err.value.code == (-1013 if message.startswith("Filter") else -2010)
    assert not acct.orders and not events and bal(acct, "USDT") == (D(10_000), 0)


def test_max_num_orders_and_duplicate_client_ids(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    for i in range(200):
        engine.place(acct, req("BUY", "LIMIT", "0.06", price="90", client_order_id=f"c{i}"), T0)
    with pytest.raises(Rejected, match="MAX_NUM_ORDERS"):
        engine.place(acct, req("BUY", "LIMIT", "0.06", price="90"), T0)
    engine.cancel(acct, "TESTUSDT", None, "c7", T0)
    with pytest.raises(Rejected, match=r"^Duplicate order sent\.$"):
        engine.place(acct, req("BUY", "LIMIT", "0.06", price="90", client_order_id="c8"), T0)
    again = engine.place(acct, req("BUY", "LIMIT", "0.06", price="90", client_order_id="c7"), T0)  # c7 is not open
    assert again is not None and engine.find(acct, "TESTUSDT", None, "c7") is again
    with pytest.raises(Rejected) as err:
        engine.cancel(acct, "TESTUSDT", 99_999, None, T0)
    assert (err.value.code, err.value.msg) == (-2011, "Unknown order sent.")


def test_partial_fills_are_capped_by_a_share_of_each_klines_volume(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market, max_volume_share=0.1)
    o = engine.place(acct, req("SELL", "LIMIT", "2.5", price="100.20"), T0)
    engine.advance(T0 + 12 * H)
    assert o is not None and o.status == "PARTIALLY_FILLED"
    assert [(f["qty"], f["time"]) for f in o.fills] == [("1.00000000", T0 + 32 * 60_000), ("1.00000000", T0 + H)]
    assert bal(acct, "TEST") == (D("7.5"), D("0.5"))  # what is left stays locked
    m = engine.place(acct, req("BUY", "MARKET", "1.5"), T0 + 12 * H)
    assert m is not None and (m.status, m.executed_qty) == ("EXPIRED", D(1))


def test_oco_one_leg_fills_and_the_other_expires(market: SeriesMarket) -> None:
    engine, acct, events = _engine(market)
    above = req("SELL", "LIMIT_MAKER", None, price="101.50")
    below = req("SELL", "STOP_LOSS_LIMIT", None, price="98.00", stop="98.50")
    olist = engine.place_oco(acct, "TESTUSDT", "SELL", D(1), above, below, "list1", T0)
    assert bal(acct, "TEST") == (D(9), D(1))  # one lock for both legs
    engine.advance(T0 + 3 * H)
    tp, sl = olist.legs
    assert (tp.status, sl.status, olist.status) == ("FILLED", "EXPIRED", "ALL_DONE")
    assert tp.fills[0]["price"] == "101.50000000" and tp.fills[0]["isMaker"]
    assert bal(acct, "TEST") == (D(9), 0)
    statuses = [e["L"] for e in events if e["e"] == "listStatus"]
    assert statuses == ["EXECUTING", "ALL_DONE"]


def test_oco_stop_leg_triggers_first_and_cancels_the_take_profit(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    above = req("SELL", "LIMIT_MAKER", None, price="103.00")
    below = req("SELL", "STOP_LOSS", None, stop="98.50")
    olist = engine.place_oco(acct, "TESTUSDT", "SELL", D(1), above, below, None, T0)
    engine.advance(T0 + 3 * H)
    tp, sl = olist.legs
    assert (tp.status, sl.status) == ("EXPIRED", "FILLED") and sl.fills[0]["price"] == "98.45000000"
    assert bal(acct, "TEST") == (D(9), 0)
    with pytest.raises(Rejected, match="relationship of the prices"):
        engine.place_oco(acct, "TESTUSDT", "SELL", D(1), req("SELL", "LIMIT_MAKER", None, price="90"), below, None, T0 + 3 * H)


def test_fills_do_not_depend_on_how_often_the_engine_is_advanced(market: SeriesMarket) -> None:
    def run(step_ms: int) -> list[tuple[object, ...]]:
        engine, acct, _ = _engine(market)
        engine.place(acct, req("BUY", "LIMIT", "1", price="99.00"), T0)
        engine.place(acct, req("SELL", "LIMIT", "2.5", price="100.20"), T0)
        engine.place(acct, req("SELL", "STOP_LOSS_LIMIT", "1", price="95.00", stop="97.50"), T0)
        engine.place_oco(acct, "TESTUSDT", "SELL", D(1), req("SELL", "LIMIT_MAKER", None, price="101.50"),
                         req("SELL", "STOP_LOSS", None, stop="94.50"), None, T0)
        t = T0
        while t < T0 + 6 * H:
            t += step_ms
            engine.advance(t)
        return [(f["orderId"], f["price"], f["qty"], f["time"]) for f in acct.trades] + [tuple(sorted(map(str, acct.balances.items())))]

    one = run(6 * H)
    assert len(one) > 4
    assert run(60_000) == one == run(7 * 60_000 + 13)


def test_cancel_releases_the_lock_and_balances_are_conserved(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    o = engine.place(acct, req("BUY", "LIMIT", "2", price="90.00"), T0)
    assert bal(acct, "USDT") == (D(10_000) - 180, D(180))
    assert o is not None
    engine.cancel(acct, "TESTUSDT", o.order_id, None, T0)
    assert o.status == "CANCELED" and bal(acct, "USDT") == (D(10_000), 0)
    with pytest.raises(Rejected) as err:
        engine.cancel(acct, "TESTUSDT", o.order_id, None, T0)
    assert err.value.code == -2011
