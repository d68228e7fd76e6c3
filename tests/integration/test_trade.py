"""`trader trade`: the same engine over the replay venue (paper) and over the store (backtest)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from trader.config import AccountConfig, ClientConfig, MatchingReplayConfig, ProfileConfig, Settings
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import Credentials
from trader.exchange.trading import TradingClient
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.trade.broker import VenueBroker
from trader.trade.engine import TradeEngine
from trader.trade.ledger import Ledger
from trader.trade.run import backtest, paper_step, reconcile
from trader.warm import warm

H = 3_600_000
KEY, SECRET = "tradeKey" + "T" * 56, "tradeSecret" + "S" * 53
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "PEOPLEUSDT", "FILUSDT", "BCHUSDT"]
START = 1_728_000_000_000  # 2024-10-04 00:00 UTC
HOURS = 30


def _settings(tmp: Path) -> Settings:
    # a lower bar than the default 75 so that 10 symbols x 30 h trade at all; the 2 h time stop and the ladder are the seed's
    return Settings.model_validate({"store": {"path": str(tmp / "store")}, "risk": {"min_score": 55.0}, "universe": {"intervals": ["1h", "4h"]}})


def _trades(lg: Ledger) -> list[tuple[object, ...]]:
    return [(p.symbol, p.entry_ms, p.qty, p.entry_price, p.status, p.exit_reason, p.proceeds.quantize(Decimal("0.0001")), p.closed_ms)
            for p in lg.positions()]


async def test_a_backtest_and_a_paper_run_over_the_same_window_make_the_same_trades(dataset: ReplayDataset, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    accounts = [AccountConfig(api_key=KEY, api_secret=SECRET, balances={"USDT": 10_000.0})]
    async with ReplayExchange(dataset, port=0, speed=0, start_ms=START, accounts=accounts,
                              matching=MatchingReplayConfig(**settings.replay.matching.model_dump())) as venue:
        profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
        async with BinanceClient(profile, ClientConfig(timeout_s=5.0)) as rest:
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, SYMBOLS, ["1h", "4h"], depth=8000)
            paper_ledger = Ledger(tmp_path / "paper.sqlite")
            tc = TradingClient(rest, Credentials.hmac(KEY, SECRET), OrderJournal(tmp_path / "paper.sqlite"))
            engine = TradeEngine(VenueBroker(tc), paper_ledger, settings.risk, 55.0, strategy=settings.trade.strategy)
            found = await reconcile(engine, "cancel")
            assert found["orphans"] == [] and found["open_positions"] == []
            for k in range(HOURS):
                venue.clock.set(START + k * H)
                await paper_step(settings, settings.store_path(), rest, engine, START + k * H, SYMBOLS)
            # the backtest fills its last decisions on the klines that follow them: store a few more
            venue.clock.set(START + (HOURS + 3) * H)
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, SYMBOLS, ["1h", "4h"], depth=8000)
    paper = _trades(paper_ledger)
    assert len(paper) >= 3, "the window must trade for the comparison to mean anything"
    bt_ledger_path = tmp_path / "backtest.sqlite"
    out = await asyncio.to_thread(backtest, settings, settings.store_path(), START, START + HOURS * H, symbols=SYMBOLS, baseline_seeds=1,
                                  ledger_path=bt_ledger_path)
    bt = _trades(Ledger(bt_ledger_path))
    assert bt == paper
    assert out["trades"] == sum(1 for t in paper if t[4] == "CLOSED")
    assert set(out["exit_reasons"]) <= {"take_profit_1", "take_profit_2", "stop_loss", "time_stop", "dust", "stop_failed"}
    assert out["baseline"]["seeds"] == 1 and out["baseline"]["net_return_mean"] is not None
