"""The replay venue's USD-M engine on a hand-written recorded path (a real ReplayDataset on disk).

Path (1h klines of TESTUSDT from T0, an 8 h funding boundary; up klines go O->L->H->C, down klines
O->H->L->C, one third of the hour per leg):

    k0  100.00 -> 99.00 (20 min) -> 101.00 (40) -> 100.50     up
    k1  100.50 -> 100.00 -> 130.00 -> 110.00                  up: a spike to 130 in its second third
    k2+ 110.00 -> 109.00 -> 111.00 -> 110.00                  up, repeated

Contract: tick 0.01, step 0.001, min notional 5 USDT, liquidation fee 1.25 %; one tier up to
100 000 USDT at 20x, maintenance 1 % (cum 0). Spread 10 bps, no impact: at 100.00 the book is
99.95 / 100.05. Fees 0.02 % maker / 0.05 % taker, funding 0.01 % per 8 h.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from trader.replay.dataset import ReplayDataset
from trader.replay.futures import FAccount, FuturesConfig, FuturesEngine, FuturesRequest
from trader.replay.matching import Rejected
from trader.replay.pathmarket import SeriesMarket
from trader.usdm import Bracket, ContractRules, bankruptcy_price, liquidation_price

H = 3_600_000
T0 = 1_699_977_600_000  # a multiple of 8 h: a funding time
assert T0 % (8 * H) == 0
KLINES = [(100.00, 101.00, 99.00, 100.50), (100.50, 130.00, 100.00, 110.00)] + [(110.00, 111.00, 109.00, 110.00)] * 30
D = Decimal
RULES = ContractRules(
    symbol="TESTUSDT", base="TEST", quote="USDT", tick=D("0.01"), min_price=D("0.01"), max_price=D(100000), step=D("0.001"),
    min_qty=D("0.001"), max_qty=D(10000), market_step=D("0.001"), market_max_qty=D(10000), min_notional=D(5),
    mult_up=D("1.5"), mult_down=D("0.5"), price_precision=2, quantity_precision=3, liquidation_fee=D("0.0125"),
    max_orders=200, max_algo_orders=10,
    order_types=("LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"),
    time_in_force=("GTC", "IOC", "FOK", "GTX", "GTD"),
)
TIERS = (Bracket(1, 20, D(0), D(100_000), D("0.01"), D(0)), Bracket(2, 10, D(100_000), D(1_000_000), D("0.025"), D(1500)))


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> SeriesMarket:
    d = tmp_path_factory.mktemp("fpath")
    lines = ["open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"]
    for i, (o, h, lo, c) in enumerate(KLINES):
        t = T0 + i * H
        lines.append(f"{t},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},100.001,{t + H - 1},{100 * c:.4f},100,50.000,{50 * c:.4f}")
    (d / "TESTUSDT-1h.csv").write_text("\n".join(lines) + "\n")
    return SeriesMarket(ReplayDataset(d), spread_bps=10.0)


def _engine(market: SeriesMarket, wallet: str = "1000") -> tuple[FuturesEngine, FAccount, list[dict[str, object]]]:
    events: list[dict[str, object]] = []
    engine = FuturesEngine(market, {"TESTUSDT": RULES}, {"TESTUSDT": TIERS}, FuturesConfig(impact_bps=0.0),
                           emit=lambda a, e: events.append(e), spread_bps=10.0)
    engine.advance(T0)
    return engine, engine.add_account("k" * 16, D(wallet)), events


def req(side: str, kind: str, qty: str | None = "1", price: str | None = None, stop: str | None = None, **kw: object) -> FuturesRequest:
    return FuturesRequest(symbol="TESTUSDT", side=side, type=kind, quantity=D(qty) if qty else None, price=D(price) if price else None,
                          stop_price=D(stop) if stop else None, time_in_force="GTC" if kind == "LIMIT" else None, **kw)  # type: ignore[arg-type]


def test_a_long_and_a_short_book_pnl_and_fees(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    buy = engine.place(acct, req("BUY", "MARKET", "2"), T0)
    assert buy is not None and buy.status == "FILLED" and buy.avg_price() == D("100.05")  # the ask
    pos = acct.positions["TESTUSDT"]
    assert (pos.amt, pos.entry) == (D(2), D("100.05"))
    engine.advance(T0 + 2 * H // 3)  # the path at 101.00: book 100.94 / 101.06
    sell = engine.place(acct, req("SELL", "MARKET", "2"), T0 + 2 * H // 3)
    assert sell is not None and sell.avg_price() == D("100.94")
    fees = (D("200.10") + D("201.88")) * D("0.0005")
    assert acct.positions["TESTUSDT"].amt == 0
    assert acct.wallet == D(1000) + 2 * (D("100.94") - D("100.05")) - fees.quantize(D("0.00000001"))
    incomes = [(r["incomeType"], r["income"]) for r in acct.income]
    assert ("REALIZED_PNL", "1.78000000") in incomes and sum(1 for k, _ in incomes if k == "COMMISSION") == 2
    # a short the other way round: sold at the bid, bought back lower
    engine2, acct2, _ = _engine(market)
    engine2.place(acct2, req("SELL", "MARKET", "1"), T0)  # 99.95
    engine2.advance(T0 + H // 3)  # 99.00: book 98.95 / 99.05
    engine2.place(acct2, req("BUY", "MARKET", "1"), T0 + H // 3)
    assert acct2.trades[-1]["realizedPnl"] == "0.90000000"  # (99.95 - 99.05) x 1


def test_funding_settles_at_the_8h_boundaries_longs_pay_a_positive_rate(market: SeriesMarket) -> None:
    engine, acct, events = _engine(market, "10000")
    other = engine.add_account("s" * 16, D(10000))
    engine.place(acct, req("BUY", "MARKET", "10"), T0 + 1)
    engine.place(other, req("SELL", "MARKET", "10"), T0 + 1)
    engine.advance(T0 + 8 * H - 1)
    assert not [r for r in acct.income if r["incomeType"] == "FUNDING_FEE"]  # not before the boundary
    engine.advance(T0 + 17 * H)  # crosses T0 + 8 h and T0 + 16 h
    paid = [r for r in acct.income if r["incomeType"] == "FUNDING_FEE"]
    got = [r for r in other.income if r["incomeType"] == "FUNDING_FEE"]
    assert [r["time"] for r in paid] == [T0 + 8 * H, T0 + 16 * H] == [r["time"] for r in got]
    mark = engine.mark("TESTUSDT", T0 + 8 * H)  # 110.00 (k8 opens at 110)
    assert mark == D("110.00")
    assert paid[0]["income"] == "-0.11000000" and got[0]["income"] == "0.11000000"  # 10 x 110 x 0.0001
    assert any(e["e"] == "ACCOUNT_UPDATE" and e["a"]["m"] == "FUNDING_FEE" for e in events)  # type: ignore[index]


def test_a_5x_isolated_short_is_liquidated_on_the_spike_at_binances_price(market: SeriesMarket) -> None:
    engine, acct, events = _engine(market)
    engine.set_margin_type(acct, "TESTUSDT", "ISOLATED")
    engine.set_leverage(acct, "TESTUSDT", 5, T0)
    short = engine.place(acct, req("SELL", "MARKET", "4"), T0)  # 4 x 99.95 = 399.80 notional
    assert short is not None and short.avg_price() == D("99.95")
    pos = acct.positions["TESTUSDT"]
    assert pos.isolated_wallet == D("79.96")  # 399.80 / 5
    wallet_after_open = acct.wallet
    expected = liquidation_price(-1, D(4), D("99.95"), D("79.96"), D("0.01"), D(0))
    assert engine.liq_price(acct, pos, T0) == expected  # (79.96 + 0 + 4 x 99.95) / (4 x 0.01 + 4) = 118.7524...
    assert abs(expected - (D("79.96") + 4 * D("99.95")) / D("4.04")) < D("1e-8")
    assert bankruptcy_price(-1, D(4), D("99.95"), D("79.96")) == D("119.94")
    engine.advance(T0 + 2 * H)
    liq = [o for o in acct.orders.values() if o.liquidation]
    assert len(liq) == 1 and liq[0].status == "FILLED" and liq[0].client_order_id.startswith("autoclose-")
    fill_price = D(acct.trades[-1]["price"])
    assert fill_price == D("118.76")  # the liquidation price, on the tick against the short
    # the path crosses it in k1's second third (100.00 -> 130.00 over 20 minutes)
    t_cross = T0 + H + H // 3 + (float(expected) - 100.0) / 30.0 * (H / 3)
    assert abs(liq[0].update_ms - t_cross) <= 1
    assert acct.positions["TESTUSDT"].amt == 0 and pos.isolated_wallet == 0
    lost = wallet_after_open - acct.wallet
    assert abs(lost - D("79.96")) < D("0.05")  # the isolated margin (to a tick of rounding x 4)
    assert [r["incomeType"] for r in acct.income][-2:] == ["REALIZED_PNL", "INSURANCE_CLEAR"]
    kinds = [(e["e"], e.get("o", {}).get("o")) for e in events]  # type: ignore[union-attr]
    assert ("ORDER_TRADE_UPDATE", "LIQUIDATION") in kinds
    calls = [e for e in events if e["e"] == "MARGIN_CALL"]
    assert len(calls) == 1 and kinds.index(("MARGIN_CALL", None)) < kinds.index(("ORDER_TRADE_UPDATE", "LIQUIDATION"))
    call = calls[0]["p"][0]  # type: ignore[index]
    assert D(call["mm"]) / (D("79.96") + D(call["up"])) >= D("0.8") - D("0.001")  # the margin ratio reached 80 %


def test_reduce_only_never_opens_increases_or_flips(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    for bad in (req("SELL", "MARKET", "1", reduce_only=True), req("BUY", "MARKET", "1", reduce_only=True)):
        with pytest.raises(Rejected) as e:
            engine.place(acct, bad, T0)
        assert e.value.code == -2022
    engine.place(acct, req("BUY", "MARKET", "1"), T0)
    with pytest.raises(Rejected) as e:
        engine.place(acct, req("SELL", "MARKET", "1.5", reduce_only=True), T0)  # would flip to short 0.5
    assert e.value.code == -2022
    with pytest.raises(Rejected) as e:
        engine.place(acct, req("BUY", "MARKET", "1", reduce_only=True), T0)  # would increase
    assert e.value.code == -2022
    half = engine.place(acct, req("SELL", "MARKET", "0.5", reduce_only=True), T0)
    assert half is not None and half.status == "FILLED" and acct.positions["TESTUSDT"].amt == D("0.5")


def test_close_position_stop_closes_whatever_is_held(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    engine.place(acct, req("BUY", "MARKET", "3"), T0)
    with pytest.raises(Rejected) as e:
        engine.place(acct, req("SELL", "STOP_MARKET", None, stop="100.50", close_position=True), T0)  # 100 <= 100.5: fires now
    assert e.value.code == -2021
    stop = engine.place(acct, req("SELL", "STOP_MARKET", None, stop="99.50", close_position=True), T0)
    assert stop is not None and stop.status == "NEW"
    engine.place(acct, req("BUY", "MARKET", "1"), T0 + 1)  # the position grows after the stop was placed
    engine.advance(T0 + H // 3)  # the path falls to 99.00 through 99.50
    assert stop.status == "FILLED" and stop.executed == D(4) and acct.positions["TESTUSDT"].amt == 0


def test_post_only_that_would_take_is_refused_and_a_resting_one_is_maker(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    with pytest.raises(Rejected) as e:
        engine.place(acct, FuturesRequest("TESTUSDT", "BUY", "LIMIT", D(1), D("100.05"), time_in_force="GTX"), T0)
    assert e.value.code == -5022
    rest = engine.place(acct, FuturesRequest("TESTUSDT", "BUY", "LIMIT", D(1), D("99.50"), time_in_force="GTX"), T0)
    assert rest is not None and rest.status == "NEW"
    engine.advance(T0 + H // 3)
    assert rest.status == "FILLED" and acct.trades[-1]["maker"] is True and acct.trades[-1]["commission"] == "0.01990000"


def test_trailing_stop_follows_the_high_and_fires_on_the_callback(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market)
    engine.place(acct, req("BUY", "MARKET", "1"), T0)
    trail = engine.place(acct, FuturesRequest("TESTUSDT", "SELL", "TRAILING_STOP_MARKET", D(1), callback_rate=D("1"),
                                              activation_price=D("100.80"), reduce_only=True), T0)
    assert trail is not None
    engine.advance(T0 + H)  # up to 101.00 (activated at 100.80), then down to 100.50: above 101.00 x 0.99 = 99.99
    assert trail.status == "NEW" and trail.activated
    engine.advance(T0 + H + H // 3)  # 100.50 -> 100.00: still above 101.00 x 0.99 = 99.99
    assert trail.status == "NEW"
    engine.advance(T0 + 3 * H)  # the spike lifts the high to 130: fires on the way down at 128.70
    assert trail.status == "FILLED"
    assert abs(D(acct.trades[-1]["price"]) - D("128.70") * (1 - D("0.0005"))) < D("0.07")  # at the bid of 128.70


def test_margin_leverage_and_margin_type_rules(market: SeriesMarket) -> None:
    engine, acct, _ = _engine(market, "100")
    with pytest.raises(Rejected) as e:
        engine.set_leverage(acct, "TESTUSDT", 21, T0)
    assert e.value.code == -4028
    engine.set_leverage(acct, "TESTUSDT", 2, T0)
    with pytest.raises(Rejected) as e:
        engine.place(acct, req("BUY", "MARKET", "3"), T0)  # 300 notional / 2 = 150 > 100
    assert e.value.code == -2019
    engine.place(acct, req("BUY", "MARKET", "1"), T0)
    with pytest.raises(Rejected) as e:
        engine.set_margin_type(acct, "TESTUSDT", "ISOLATED")
    assert e.value.code == -4048
    with pytest.raises(Rejected) as e:
        engine.set_margin_type(acct, "TESTUSDT", "CROSSED")
    assert e.value.code == -4046
    with pytest.raises(Rejected) as e:
        engine.place(acct, req("BUY", "LIMIT", "0.01", price="99.00"), T0)
    assert e.value.code == -4164  # 0.99 USDT < 5
    with pytest.raises(Rejected) as e:
        engine.place(acct, req("BUY", "LIMIT", "0.1234", price="99.00"), T0)
    assert e.value.code == -1111


def test_funding_files_in_binances_format_replace_the_constant(market: SeriesMarket, tmp_path: Path) -> None:
    """``--funding DIR``: a negative rate at T0 + 8 h makes the shorts pay (and the constant applies elsewhere)."""
    import json

    from trader.replay.futures_api import load_funding_dir

    (tmp_path / "TESTUSDT.json").write_text(json.dumps([{"symbol": "TESTUSDT", "fundingTime": T0 + 8 * H, "fundingRate": "-0.00030000",
                                                          "markPrice": "110.00000000"}]))
    cfg = FuturesConfig(impact_bps=0.0, funding=load_funding_dir(tmp_path))
    engine = FuturesEngine(market, {"TESTUSDT": RULES}, {"TESTUSDT": TIERS}, cfg, spread_bps=10.0)
    engine.advance(T0)
    acct = engine.add_account("k" * 16, D(10000))
    engine.place(acct, req("SELL", "MARKET", "10"), T0 + 1)
    engine.advance(T0 + 17 * H)
    assert [r["income"] for r in acct.income if r["incomeType"] == "FUNDING_FEE"] == ["-0.33000000", "0.11000000"]
    (tmp_path / "BAD.json").write_text("{not json")
    from trader.errors import ConfigError

    with pytest.raises(ConfigError, match=r"BAD\.json"):
        load_funding_dir(tmp_path)


def test_the_cached_available_balance_equals_the_full_computation(market: SeriesMarket) -> None:
    """``available`` (cached open-order margin) must equal ``totals`` after orders come and go."""
    engine, acct, _ = _engine(market, "100000")
    checks = 0
    for i, t in enumerate((T0, T0, T0 + 1, T0 + H // 6, T0 + H // 6, T0 + H)):
        engine.advance(t)
        engine.place(acct, req("BUY", "LIMIT", "1", price=f"{95 - i}.00"), t)
        engine.place(acct, req("SELL", "LIMIT", "2", price=f"{106 + i}.00"), t)
        if i % 2:
            engine.place(acct, req("BUY", "MARKET", "3"), t)
            engine.cancel(acct, "TESTUSDT", next(iter(acct.open.values())).order_id, None, t)
        assert engine.available(acct, t) == engine.totals(acct, t)["available"]
        checks += 1
    assert checks == 6 and engine.open_order_im(acct, T0 + H) > 0
