"""The portfolio plan: sleeves and the no-trade band (pure), and the paper loop against the replay's
USD-M venue — longs and shorts placed maker first, taker after the wait, stops, and a decision re-run
after a crash that places nothing twice."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.integration.test_orders import ACCOUNTS, KEY, SECRET
from trader.config import PortfolioConfig, ProfileConfig, Settings
from trader.exchange.futures import FuturesClient
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import Credentials
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.trade.portfolio import SleeveBook
from trader.trade.portfolio_live import PortfolioState, PortfolioTrader
from trader.trade.signals import StoreDecider
from trader.warm import warm

SYMBOLS = ["ADAUSDT", "AVAXUSDT", "BNBUSDT", "BTCUSDT", "DOGEUSDT", "DOTUSDT", "ETHUSDT", "LINKUSDT", "LTCUSDT", "SOLUSDT",
           "TRXUSDT", "XRPUSDT"]
START = 1_728_921_600_000  # 2024-10-14 16:00 UTC


def test_sleeves_are_staggered_and_the_band_keeps_names() -> None:
    cfg = PortfolioConfig(k=2, band=3, gross=1.0)
    book = SleeveBook(cfg, n_sleeves=3)
    ranked = ["A", "B", "C", "D", "E", "F", "G", "H"]
    book.rebalance(0, ranked)
    assert (book.longs[0], book.shorts[0]) == (["A", "B"], ["H", "G"]) and book.longs[1] == []
    w = book.weights()
    assert abs(sum(abs(x) for x in w.values()) - 1.0 / 3) < 1e-12 and abs(sum(w.values())) < 1e-12  # one sleeve of three, neutral
    book.rebalance(3, ["C", "A", "D", "B", "E", "H", "F", "G"])  # sleeve 0 again: A and B still within the top 3? A yes (2nd), B no (4th)
    assert book.longs[0] == ["A", "C"] and book.changes[-1] == (1, 0)  # one name replaced, G and H still in the bottom 3
    for m in (1, 2):
        book.rebalance(m, ranked)
    assert abs(sum(abs(x) for x in book.weights().values()) - 1.0) < 1e-12  # three sleeves: the whole gross
    spot = SleeveBook(PortfolioConfig(k=2, band=2, market="spot", max_weight=1.0), 1, long_only=True)
    spot.rebalance(0, ranked)
    assert spot.shorts[0] == [] and spot.weights() == {"A": 0.5, "B": 0.5}


async def test_paper_portfolio_on_the_usdm_venue_maker_first_stops_and_no_duplicate_after_a_crash(dataset: ReplayDataset, tmp_path: Path) -> None:
    settings = Settings().model_copy(update={
        "store": Settings().store.model_copy(update={"path": tmp_path / "store"}),
        "risk": Settings().risk.model_copy(update={"plan": "portfolio", "portfolio": PortfolioConfig(k=2, band=3, horizon="2h")}),
    })
    async with ReplayExchange(dataset, port=0, speed=0, start_ms=START, accounts=ACCOUNTS) as venue:
        spot = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
        usdm = spot.model_copy(update={"market": "usdm"})
        async with BinanceClient(spot) as rest, BinanceClient(usdm) as frest:
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, SYMBOLS, ["1h", "4h"], depth=1100)

            def trader() -> tuple[PortfolioTrader, FuturesClient]:
                fc = FuturesClient(frest, Credentials.hmac(KEY, SECRET), OrderJournal(tmp_path / "j.sqlite"))
                return PortfolioTrader(settings, fc, StoreDecider(settings, settings.store_path(), SYMBOLS, rest), SYMBOLS,
                                       tmp_path / "state.json"), fc

            t1 = START // 3_600_000 * 3_600_000
            pt, fc = trader()
            first = await pt.decide(t1)
            assert first["ranked"] == len(SYMBOLS) and first["targets"] == 4  # one of two sleeves: 2 longs, 2 shorts
            assert {o[3] for o in first["orders"]} == {"LIMIT"}  # maker first: post-only at the touch
            assert {o[1] for o in first["orders"]} == {"BUY", "SELL"}
            after_first = (tmp_path / "state.json").read_text()
            state = PortfolioState.load(tmp_path / "state.json")
            assert state.last_t == t1 and sum(len(x) for x in state.longs) == 2 and len(state.pending) == 4
            venue.clock.step(3_600_000)
            second = await pt.decide(t1 + 3_600_000)
            # what the makers did not fill went taker (maker_wait 1); sleeve 1 starts post-only
            assert any(o[3] == "MARKET" for o in second["orders"]) or not PortfolioState.load(tmp_path / "state.json").pending
            acct = venue.futures.engine.accounts[KEY]
            held = {s: p.amt for s, p in acct.positions.items() if p.amt != 0}
            assert any(a > 0 for a in held.values()) and any(a < 0 for a in held.values())  # long and short
            stops = [o for o in acct.open.values() if o.req.type == "STOP_MARKET" and o.req.close_position]
            assert {o.symbol for o in stops} == set(held)  # one protective stop per position
            for s in held:
                assert s in acct.isolated and venue.futures.engine.leverage(acct, s) == 1
            n_orders = len(acct.orders)
            working = sorted(o.order_id for o in acct.open.values() if o.type == "LIMIT")
            fc.journal.close()
            # a crash after the second decision's orders went out but before its state was saved: the
            # state is the first decision's, and the second decision runs again
            (tmp_path / "state.json").write_text(after_first)
            pt2, fc2 = trader()
            again = await pt2.decide(t1 + 3_600_000)
            assert fc2.stats.orders_sent == 0 and len(acct.orders) == n_orders  # nothing placed twice
            assert sorted(o.order_id for o in acct.open.values() if o.type == "LIMIT") == working  # nor its own makers cancelled
            assert {o[0] for o in again["orders"]} <= {o[0] for o in second["orders"]}
            fc2.journal.close()
            assert Decimal(str(again["equity"])) > Decimal(9_000)
