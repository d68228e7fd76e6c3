"""`trader trade`: the same engine over the replay venue (paper) and over the store (backtest)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from trader.config import AccountConfig, ClientConfig, MatchingReplayConfig, ProfileConfig, Settings
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import Credentials
from trader.exchange.trading import TradingClient
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.trade.backtest import backtest
from trader.trade.broker import VenueBroker
from trader.trade.engine import TradeEngine
from trader.trade.ledger import Ledger
from trader.trade.session import TradingSession
from trader.trade.signals import StoreDecider
from trader.warm import warm

H = 3_600_000
KEY, SECRET = "tradeKey" + "T" * 56, "tradeSecret" + "S" * 53
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "PEOPLEUSDT", "FILUSDT", "BCHUSDT"]
START = 1_728_000_000_000  # 2024-10-04 00:00 UTC
HOURS = 30
FAST_WEIGHT = 1_000_000  # request weight per wall minute for tests that replay an hour in a fraction of a second


def _settings(tmp: Path) -> Settings:
    # a lower bar than the default 75 so that 10 symbols x 30 h trade at all; the 2 h time stop and the ladder are the seed's
    return Settings.model_validate({"store": {"path": str(tmp / "store")}, "risk": {"min_score": 55.0}, "universe": {"intervals": ["1h", "4h"]}})


def _last_step(path: Path) -> int | None:
    import sqlite3

    if not path.is_file():
        return None
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'last_step_ms'").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return int(row[0]) if row else None


def _trades(lg: Ledger) -> list[tuple[object, ...]]:
    return [(p.symbol, p.entry_ms, p.qty, p.entry_price, p.status, p.exit_reason, p.proceeds.quantize(Decimal("0.0001")), p.closed_ms)
            for p in lg.positions()]


async def test_a_backtest_and_a_paper_run_over_the_same_window_make_the_same_trades(dataset: ReplayDataset, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    accounts = [AccountConfig(api_key=KEY, api_secret=SECRET, balances={"USDT": 10_000.0})]
    # a replayed hour every ~0.1 s of wall time: far more request weight per wall minute than hourly decisions use
    async with ReplayExchange(dataset, port=0, speed=0, start_ms=START, accounts=accounts, weight_limit=FAST_WEIGHT,
                              matching=MatchingReplayConfig(**settings.replay.matching.model_dump())) as venue:
        profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
        async with BinanceClient(profile, ClientConfig(timeout_s=5.0, weight_limit=FAST_WEIGHT)) as rest:
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, SYMBOLS, ["1h", "4h"], depth=8000)
            paper_ledger = Ledger(tmp_path / "paper.sqlite")
            tc = TradingClient(rest, Credentials.hmac(KEY, SECRET), OrderJournal(tmp_path / "paper.sqlite"))
            engine = TradeEngine(VenueBroker(tc), paper_ledger, settings.risk, 55.0, strategy=settings.trade.strategy, universe=SYMBOLS)
            # the hand-made score: the shipped model trained on this window (a backtest uses its out-of-sample predictions,
            # a paper decision the model itself: identical only after its training window, which the bundled data does not reach)
            session = TradingSession(engine, StoreDecider(settings, settings.store_path(), SYMBOLS, rest, use_model=False), interval_ms=H,
                                     clock=tc.clock, sync=tc.sync_time)
            found = await session.start()
            assert found.orphan_orders == [] and found.orphan_holdings == [] and not paper_ledger.positions("OPEN")
            for k in range(HOURS):
                venue.clock.set(START + k * H)
                await tc.sync_time()
                await session.decide(START + k * H)
            # the backtest fills its last decisions on the klines that follow them: store a few more
            venue.clock.set(START + (HOURS + 3) * H)
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, SYMBOLS, ["1h", "4h"], depth=8000)
    paper = _trades(paper_ledger)
    assert len(paper) >= 3, "the window must trade for the comparison to mean anything"
    bt_ledger_path = tmp_path / "backtest.sqlite"
    res = await asyncio.to_thread(backtest, settings, settings.store_path(), START, START + HOURS * H, symbols=SYMBOLS, baseline_seeds=1,
                                  ledger_path=bt_ledger_path, use_model=False)
    out = res.as_dict()
    bt = _trades(Ledger(bt_ledger_path))
    assert bt == paper
    assert out["trades"] == sum(1 for t in paper if t[4] == "CLOSED")
    assert set(out["exit_reasons"]) <= {"take_profit_1", "take_profit_2", "stop_loss", "time_stop", "dust", "stop_failed"}
    assert out["baseline"]["seeds"] == 1 and out["baseline"]["net_return_mean"] is not None
    assert out["accounting"]["equity_error_max"] == 0 and out["accounting"]["unbooked_fills"] == 0


@pytest.mark.slow
async def test_twenty_sigkill_restart_cycles_with_order_faults_leave_no_duplicate_and_the_ledger_equal_to_the_venue(
    dataset: ReplayDataset, tmp_path: Path
) -> None:
    """`trader trade` as a real process, killed at random moments of its decisions (orders in flight,
    answers lost to 500/503/held responses), restarted each time; then compared with the venue."""
    import os
    import random
    import signal
    import sys

    symbols = SYMBOLS
    settings = _settings(tmp_path)
    start = 1_728_921_600_000  # 2024-10-14 16:00 UTC, where the plan enters at once (and every 2 h after its time stops)
    accounts = [AccountConfig(api_key=KEY, api_secret=SECRET, balances={"USDT": 10_000.0})]
    rng = random.Random(7)
    ledger_path = tmp_path / "ledger.sqlite"
    root = Path(__file__).resolve().parents[2]
    async with ReplayExchange(dataset, port=0, speed=0, start_ms=start, accounts=accounts, weight_limit=FAST_WEIGHT) as venue:
        profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)
        async with BinanceClient(profile) as rest:
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, symbols, ["1h", "4h"], depth=1000)
        env = {**os.environ, "TRADER_API_KEY": KEY, "TRADER_API_SECRET": SECRET, "TRADER_RISK__MIN_SCORE": "55",
               "TRADER_CLIENT__TIMEOUT_S": "1.0", "TRADER_CLIENT__WEIGHT_LIMIT": str(FAST_WEIGHT), "PYTHONPATH": str(root)}
        cmd = [sys.executable, "-c", "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1); sys.argv[0] = 'trader'; "
               "from cli.main import main; main()", "trade", "--rest-url", venue.rest_url, "--ws-url", venue.ws_url, "--store",
               str(settings.store_path()), "--ledger", str(ledger_path), "--symbols", ",".join(symbols), "--steps", "1",
               "--listen", "127.0.0.1:0"]

        async def run(kill_after: float | None) -> int:
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=root)
            if kill_after is None:
                try:
                    await asyncio.wait_for(proc.wait(), 90)
                except TimeoutError:
                    proc.send_signal(signal.SIGUSR1)
                    await asyncio.sleep(1)
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                assert proc.stderr is not None
                err = await proc.stderr.read()
                assert proc.returncode == 0, err.decode()[-3000:] + f"\nvenue: {dict(venue.stats.requests)} {list(venue.stats.log)[-5:]}"
                return 0
            try:
                await asyncio.wait_for(proc.wait(), kill_after)
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                return 1
            return 0

        acct = venue.trading.engine.accounts[KEY]

        async def run_and_kill(n: int) -> bool:
            """Start a decision; SIGKILL it right after the venue accepted its n-th order (True), or let it end."""
            before = len(acct.orders)
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=root)
            while proc.returncode is None:
                if len(acct.orders) - before >= n:
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    return True
                try:  # wait for the child or for the venue's next order, whichever comes first
                    await asyncio.wait_for(proc.wait(), 0.005)
                except TimeoutError:
                    pass
            return False

        killed = 0  # kills that landed inside a decision, right after an order was accepted
        for k in range(20):
            venue.clock.set(start + k * H)
            venue.trading.faults = venue.trading.faults.model_copy(update={"order_5xx_rate": 0.3, "order_hang_s": 2.0, "seed": k})
            if not await run_and_kill(rng.randint(1, 3)):
                continue  # the decision placed fewer orders than that: it ended by itself
            killed += 1
            # 10 s pass before the restart (the venue's clock is frozen otherwise): an order written to the
            # journal but never sent is then provably dead (past timestamp + recvWindow) and may be sent again
            venue.clock.step(10_000)
            await run(None)  # restarted: it finishes the decision it was killed in
        venue.trading.faults = venue.trading.faults.model_copy(update={"order_5xx_rate": 0.0})
        venue.clock.set(start + 20 * H)
        await run(None)  # a last clean decision books everything
        per_cid: dict[str, int] = {}
        for o in acct.orders.values():
            per_cid[o.client_order_id] = per_cid.get(o.client_order_id, 0) + 1
        assert killed >= 5 and per_cid and max(per_cid.values()) == 1  # not one order sent twice
        assert len(per_cid) >= 10
        print(f"cycles 20, kills inside a decision {killed}, venue orders {len(per_cid)}, answers lost {len(venue.trading.unknown_status_orders)}")
        assert venue.trading.unknown_status_orders  # answers were lost, and resolved by lookups
        lg = Ledger(ledger_path)
        rows = {r.cid: r for r in lg.orders()}
        venue_sells = sum((o.executed_qty for o in acct.orders.values() if o.side == "SELL"), Decimal(0))
        ledger_sells = sum((r.executed for r in rows.values() if r.side == "SELL"), Decimal(0))
        assert ledger_sells == venue_sells  # no lost fill
        assert {o.client_order_id for o in acct.orders.values() if o.executed_qty > 0} <= set(rows)
        for p in lg.positions("OPEN"):
            base = p.symbol.removesuffix("USDT")
            held = sum(acct.balances.get(base, [Decimal(0), Decimal(0)]))
            assert held >= p.left_qty  # the venue holds what the ledger says is open
        closed = lg.positions("CLOSED")
        assert closed and all(p.exit_reason for p in closed)


def test_tune_search_objective_backtest_holds_out_the_last_fold_and_reports_the_random_baseline(warmed_store: tuple[Path, int], tmp_path: Path) -> None:
    from trader.trade.plan_search import plan_overlay, run_plan_search

    store, _ = warmed_store
    settings = Settings.model_validate({"store": {"path": str(store)}})
    out = run_plan_search(settings, store, symbols=None, start_ms=None, end_ms=None, trials=3, folds=3, seeds=2,
                          study_name="plan-test", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert out["trials"] == 3 and len(out["best"]["fold_returns"]) == 2  # two inner folds; the third never searched
    h = out["held_out"]
    assert h["decisions"] > 0 and len(h["random_baseline"]["net_returns"]) == 2
    assert set(h["tuned"]) >= {"trades", "net_return", "max_drawdown", "exit_reasons"} and "net_return" in h["default_plan"]
    assert h["tuned_beats_random"] == (h["tuned"]["net_return"] > max(h["random_baseline"]["net_returns"]))
    text = plan_overlay(out)
    overlay = tmp_path / "plan.yaml"
    overlay.write_text(text)
    from trader.config import load_settings

    tuned = load_settings(overlay, environ={})
    assert tuned.risk.time_stop == out["best"]["plan"]["time_stop"] and abs(sum(tuned.risk.take_profit_sizes) - 1) < 1e-3


@pytest.mark.slow
async def test_paper_without_keys_simulates_fills_locally_and_survives_a_restart(dataset: ReplayDataset, tmp_path: Path) -> None:
    """No keys: real (replayed) market data, the venue's matching rules run locally, state in the ledger."""
    import os
    import sys

    symbols = SYMBOLS
    settings = _settings(tmp_path)
    root = Path(__file__).resolve().parents[2]
    start = 1_728_921_600_000  # 2024-10-14 16:00 UTC: the bundled replay's default start, where the plan enters at once
    async with ReplayExchange(dataset, port=0, speed=0, start_ms=start) as venue:
        async with BinanceClient(ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url)) as rest:
            with KlineStore(settings.store_path()) as store:
                await warm(rest, store, symbols, ["1h", "4h"], depth=1000)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_API")}
        env.update({"TRADER_RISK__MIN_SCORE": "55", "PYTHONPATH": str(root)})
        ledger = tmp_path / "local.sqlite"
        cmd = [sys.executable, "-m", "cli.main", "trade", "--rest-url", venue.rest_url, "--ws-url", venue.ws_url, "--store",
               str(settings.store_path()), "--ledger", str(ledger), "--symbols", ",".join(symbols), "--steps", "1", "--cash", "5000"]
        for k in range(10):  # ten decisions, a fresh process for each (a restart every hour)
            venue.clock.set(start + k * H)
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=root)
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()[-1500:]
            assert b"local simulated fills" in err
        assert venue.trading.engine.accounts[venue.trading.default_account.api_key].orders == {}  # nothing was sent
    lg = Ledger(ledger)
    assert lg.snapshots()[0]["equity"] == Decimal(5000)  # --cash: the new simulated account's quote
    assert lg.load_sim() is not None and lg.virtual_samples()  # the account in its sim_* tables; virtual positions settled
    positions = lg.positions()
    assert positions and all(p.mode == "paper-local" for p in positions)
    closed = [p for p in positions if p.status == "CLOSED"]
    assert closed and all(p.exit_reason for p in closed)  # exits happened in later processes: the state survived
    assert all(p.closed_ms is not None and p.closed_ms > p.entry_ms for p in closed)


def test_a_backtest_books_a_partial_market_exit_in_a_thin_symbol_and_sells_the_remainder(dataset: ReplayDataset, tmp_path: Path) -> None:
    """DUSKUSDT's recorded volume caps a large market exit (10 % of a kline's volume): the position stays
    open with the remainder, sold at the next step; proceeds are the quote received, and the books balance."""
    store = tmp_path / "store"
    with KlineStore(store) as st:
        for iv in ("1h", "4h"):
            st.append("DUSKUSDT", iv, dataset.series("DUSKUSDT", iv).values)
    settings = Settings.model_validate({"store": {"path": str(store)}, "universe": {"intervals": ["1h", "4h"]},
                                        "risk": {"min_score": 50.0, "max_order_notional": 60_000.0, "max_positions": 1}})
    start = 1_727_740_800_000  # 2024-10-01
    out = backtest(settings, store, start, start + 14 * 24 * H, symbols=["DUSKUSDT"], cash=200_000.0, baseline_seeds=0,
                   ledger_path=tmp_path / "bt.sqlite", use_model=False)
    a = out.accounting
    assert a["partial_exits"] > 0 and a["positions_with_remainder"] > 0, a
    # each remainder sold at a later step (one may still be selling when the window ends)
    assert a["remainders_sold"] + a["remainders_open"] == a["positions_with_remainder"] and a["remainders_open"] <= 1
    assert a["equity_error_max"] == 0 and a["proceeds_error_max"] == 0 and a["unbooked_fills"] == 0 and a["position_mismatches"] == 0
    lg = Ledger(tmp_path / "bt.sqlite")
    try:
        for p in lg.positions("CLOSED"):
            sells = [f for f in lg.fills() if f["position_id"] == p.id and f["side"] == "SELL"]
            got = sum((f["quote"] - (f["commission"] if f["commission_asset"] == "USDT" else 0) for f in sells), Decimal(0))
            assert p.proceeds == got  # the quote actually received, net of commission
        exits = [o for o in lg.orders() if o.role == "exit" and o.status == "EXPIRED" and o.executed > 0]
        assert exits  # a market exit the venue filled only partly
        for o in exits:  # the position was sold again after the partial fill
            assert sum(1 for x in lg.orders(position_id=o.position_id) if x.role == "exit") >= 2 or lg.position(o.position_id).status == "OPEN"
    finally:
        lg.close()


async def test_flatten_reaches_flat_with_phantom_ledger_rows_and_after_the_venue_restarted(dataset: ReplayDataset, tmp_path: Path) -> None:
    """`trader trade flatten --yes` as a process: first with a phantom position in the ledger (a BCHUSDT row
    the venue never held), then after the replay exchange was restarted (the venue forgot everything)."""
    import os
    import sqlite3
    import sys

    from tests.integration import crash_session as cs

    root = Path(__file__).resolve().parents[2]
    ledger = tmp_path / "ledger.sqlite"
    accounts = [AccountConfig(api_key=cs.KEY, api_secret=cs.SECRET, balances={"USDT": cs.CASH})]

    async def flatten(venue: ReplayExchange) -> tuple[int, str]:
        env = {**os.environ, "TRADER_API_KEY": cs.KEY, "TRADER_API_SECRET": cs.SECRET, "PYTHONPATH": str(root)}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", "trade", "--rest-url", venue.rest_url, "--ws-url",
                                                    venue.ws_url, "--store", str(tmp_path / "store"), "--ledger", str(ledger), "flatten",
                                                    "--yes", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=root)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        return int(proc.returncode or 0), err.decode()

    async with ReplayExchange(dataset, port=0, speed=0, start_ms=cs.START, accounts=accounts) as venue:
        assert await cs.run(venue.rest_url, venue.ws_url, str(ledger), "step", cs.START) == 0  # three entries, six OCOs
        acct = venue.trading.engine.accounts[cs.KEY]
        assert len(acct.open) == 12
        db = sqlite3.connect(ledger)
        db.execute("INSERT INTO positions (symbol, qty, left_qty, entry_price, entry_ms, cost, status, fees, entry_cid, mode) "
                   "VALUES ('BCHUSDT', '2.598', '2.598', '400', ?, '1039.2', 'OPEN', '0', 'phantom', 'paper')", (cs.START,))
        db.commit()
        db.close()
        venue.clock.set(cs.START + H)
        code, err = await flatten(venue)
        assert code == 0, err[-2000:]
        assert "trader trade: flatten:" in err and not acct.open  # every protective order cancelled
        for asset in ("LINK", "DOGE", "BTC"):
            rules = venue.trading.market.rules(f"{asset}USDT", cs.START + H)
            assert sum(acct.balances[asset]) < max(rules.step, rules.min_notional / Decimal(60_000))  # only what one step cannot sell
        lg = Ledger(ledger)
        try:
            assert not lg.positions("OPEN")
            phantom = next(p for p in lg.positions() if p.symbol == "BCHUSDT")
            assert phantom.status == "CLOSED" and phantom.exit_reason == "reconcile" and phantom.left_qty == 0
            assert any("ledger 2.598 > venue 0" in d[3] for d in lg.decisions("reconcile"))
        finally:
            lg.close()
        venue.clock.set(cs.START + 4 * H)
        assert await cs.run(venue.rest_url, venue.ws_url, str(ledger), "step", cs.START + 4 * H) == 0  # two more entries
        port = venue.port
    # the replay exchange restarts (same port, a fresh account): the venue no longer holds anything the ledger booked
    async with ReplayExchange(dataset, port=port, speed=0, start_ms=cs.START + 5 * H, accounts=accounts) as venue:
        code, err = await flatten(venue)
        assert code == 0, err[-2000:]
        assert not venue.trading.engine.accounts[cs.KEY].orders  # nothing to sell: nothing sent
    lg = Ledger(ledger)
    try:
        assert not lg.positions("OPEN") and {p.exit_reason for p in lg.positions() if p.symbol in ("ETHUSDT", "SOLUSDT")} == {"reconcile"}
        assert lg.decisions("venue_reset")
    finally:
        lg.close()
