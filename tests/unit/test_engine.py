"""The trading engine on the hand-written path of test_matching (SimBroker = the venue's matching
engine in process): time stop, kill switch, a refused stop replaced by a market exit, /health and
/metrics over HTTP."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np

from tests.unit.test_matching import KLINES, T0, H
from trader.config import MatchingReplayConfig, RiskConfig
from trader.models import N_FIELDS
from trader.trade import risk
from trader.trade.broker import SimBroker
from trader.trade.engine import TradeEngine
from trader.trade.events import EventBus
from trader.trade.ledger import Ledger
from trader.trade.observe import Observer


def _block() -> np.ndarray:
    b = np.zeros((N_FIELDS, len(KLINES)))
    for i, (o, h, lo, c) in enumerate(KLINES):
        b[:, i] = [T0 + i * H, o, h, lo, c, 10.001, T0 + (i + 1) * H - 1, 10 * c, 100, 5.0, 5 * c]
    return b


def _engine(tmp: Path, **risk_kw: object) -> tuple[TradeEngine, SimBroker]:
    broker = SimBroker({"TESTUSDT": _block()}, "1h", {"USDT": Decimal(3000)}, 10.0, MatchingReplayConfig(impact_bps=0.0, max_volume_share=1.0))
    cfg = RiskConfig(**{"max_order_notional": 500.0, **risk_kw})  # type: ignore[arg-type]
    return TradeEngine(broker, Ledger(tmp / "l.sqlite", durable=False), cfg, 50.0), broker


def cand(t: int) -> list[risk.Candidate]:
    return [risk.Candidate("TESTUSDT", t, 90.0, 1, None, 100.0)]


async def _step(engine: TradeEngine, broker: SimBroker, t: int, cands: list[risk.Candidate]) -> object:
    broker.set_time(t)
    return await engine.step(t, cands)


async def test_entry_places_the_ladder_on_the_venue_and_the_time_stop_closes_it(tmp_path: Path) -> None:
    engine, broker = _engine(tmp_path, stop_loss=0.2, take_profit=[0.3, 0.4])  # exits far away: only time can close it
    rep = await _step(engine, broker, T0, cand(T0))
    assert rep.entered == ["TESTUSDT"]  # type: ignore[attr-defined]
    roles = sorted((r.role, r.rung or 0) for r in engine.ledger.orders())
    assert roles == [("entry", 0), ("stop_loss", 1), ("stop_loss", 2), ("take_profit", 1), ("take_profit", 2)]
    assert len(broker.account.open) == 4  # two OCOs live on the (simulated) venue
    await _step(engine, broker, T0 + H, [])
    assert engine.ledger.positions("OPEN")
    rep = await _step(engine, broker, T0 + 2 * H, [])
    assert rep.exits == [("TESTUSDT", "time_stop")] and not engine.ledger.positions("OPEN")  # type: ignore[attr-defined]
    assert engine.ledger.positions("CLOSED")[0].exit_reason == "time_stop" and not broker.account.open


async def test_a_stop_the_venue_refuses_is_replaced_by_a_market_exit(tmp_path: Path) -> None:
    engine, broker = _engine(tmp_path, stop_loss=0.0001)  # a stop above the price: the venue refuses the OCO (-2010)
    await _step(engine, broker, T0, cand(T0))
    reasons = [d[3] for d in engine.ledger.decisions() if d[2] == "exit"]
    assert len(reasons) == 2 and all(r.startswith("stop_failed: The relationship of the prices") and "-2010" in r for r in reasons)
    p = engine.ledger.positions()[0]
    assert p.status == "CLOSED" and p.exit_reason == "stop_failed" and not broker.account.open


async def test_the_kill_switch_flattens_and_halts(tmp_path: Path) -> None:
    switch = tmp_path / "KILL"
    engine, broker = _engine(tmp_path, stop_loss=0.2, take_profit=[0.3, 0.4], kill_switch_file=switch)
    await _step(engine, broker, T0, cand(T0))
    switch.write_text("stop")
    rep = await _step(engine, broker, T0 + H, cand(T0 + H))
    assert rep.state == risk.HALTED and rep.entered == [] and ("TESTUSDT", "kill_switch") in rep.exits  # type: ignore[attr-defined]
    assert engine.ledger.positions("CLOSED")[0].exit_reason == "kill_switch" and not broker.account.open


async def test_health_and_metrics_over_http_during_a_run(tmp_path: Path) -> None:
    bus = EventBus()
    engine, broker = _engine(tmp_path)
    engine.bus = bus
    obs = Observer(bus, "backtest", max_silence_s=60)
    runner, port = await obs.serve("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            assert (await c.get("/health")).status_code == 503  # no decision yet
            await _step(engine, broker, T0, cand(T0))
            health = await c.get("/health")
            assert health.status_code == 200 and health.json()["last_loop_ms"] == T0
            text = (await c.get("/metrics")).text
    finally:
        await runner.cleanup()
    assert 'trader_orders_total{side="BUY",status="FILLED"} 1.0' in text
    assert "trader_open_positions 1.0" in text and 'trader_build_info{mode="backtest",version="0.1.0"} 1.0' in text


def test_virtual_positions_follow_the_same_exits_and_count_for_retraining(tmp_path: Path) -> None:
    from trader.trade.ledger import virtual_samples_since
    from trader.trade.virtual import VirtualBook, virtual_outcome

    block = _block()
    cfg = RiskConfig()
    # entered at k1's open (100.51): k1 reaches 102 (+1.5 %) and 98 (-2.5 %): no exit; k3 opens at 95 (-5.5 %): the stop
    assert virtual_outcome(block, T0 + H, 100.51, cfg, 0.001, "1h", T0 + 2 * H) is None  # only k1 closed: not known yet
    reason, t, price, net = virtual_outcome(block, T0 + H, 100.51, RiskConfig(time_stop="48h"), 0.001, "1h", T0 + 10 * H)  # type: ignore[misc]
    assert (reason, t) == ("stop_loss", T0 + 4 * H) and abs(net - (-0.05 - 0.002)) < 1e-9
    reason, t, price, _ = virtual_outcome(block, T0 + H, 100.51, cfg, 0.001, "1h", T0 + 10 * H)  # type: ignore[misc]
    assert (reason, t, price) == ("time_stop", T0 + 3 * H, 98.0)  # 2 h after the entry, at that kline's close
    lg = Ledger(tmp_path / "ledger-paper-x.sqlite", durable=False)
    book = VirtualBook(lg, cfg, 0.001, "1h")
    book.add(risk.Candidate("TESTUSDT", T0 + H, 80.0, 1, 0.55, 100.51), "below_confidence")
    book.add(risk.Candidate("TESTUSDT", T0 + 2 * H, 80.0, -1, None, 99.0), "slots_full")  # a short on spot: not followed
    book.add(risk.Candidate("TESTUSDT", T0 + 2 * H, 80.0, 1, None, 99.0), "already_open")  # not a passing signal left out
    assert book.update(T0 + 10 * H, lambda s: block) == 1
    assert [s[5] for s in lg.virtual_samples()] == ["time_stop"]
    lg.close()
    assert virtual_samples_since(tmp_path, T0) == 1 and virtual_samples_since(tmp_path, T0 + H) == 0


def test_an_older_ledger_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite3

    from trader.trade.ledger import MIGRATIONS

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    db.execute("INSERT INTO meta VALUES ('day', '1')")
    db.executemany("INSERT INTO orders (cid, position_id, role, symbol, side, type, status, updated_ms) VALUES (?, 1, ?, 'XUSDT', 'SELL', 'MARKET', 'FILLED', 0)",
                   [("a", "take_profit_2"), ("b", "stop_loss_1"), ("c", "exit-time_stop-take_profit_1"), ("d", "entry")])
    db.commit()
    db.close()
    lg = Ledger(path)
    assert lg.get_meta("day") == "1" and lg.get_meta("legacy_fills") == "1"
    roles = {r.cid: (r.role, r.rung, r.reason) for r in lg.orders()}  # roles become typed columns: nothing parsed at run time
    assert roles == {"a": ("take_profit", 2, None), "b": ("stop_loss", 1, None), "c": ("exit", None, "time_stop"), "d": ("entry", None, None)}
    lg.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 3
    for name in ("orders_unbooked", "fills", "cursors", "sim_orders", "positions_symbol", "snapshots"):
        assert db.execute("SELECT name FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None, name
