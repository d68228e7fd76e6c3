"""A scripted paper session against the replay exchange, one decision (or a flatten) per process:
what the crash matrix kills after every venue request (``test_crash_matrix.py``, ``bench/crash_matrix.py``).

The scenario (bundled Binance klines, 2024-05-24 21:00 UTC onwards, a plan with a 1 % / 2 % ladder,
a 1 % stop and a 3 h time stop) is chosen so that one session goes through every path that moves
money: four entries at 21:00 (LINK reaches its first take profit, DOGE its stop, BTC its time
stop, ALPHA is thin enough that the venue's 10 %-of-volume cap fills its entry and its exit only
partly, so the exit is retried), a UTC day rollover at 00:00, two more entries at 01:00 and a
flatten at 02:00 that must cancel their protective orders and sell what is held.

Only the decisions are scripted (no scan: the store plays no part); the engine, session, signed
client, journal, ledger and the venue are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

H = 3_600_000
START = 1_716_584_400_000  # 2024-05-24 21:00 UTC
KEY, SECRET = "crashKey" + "K" * 56, "crashSecret" + "S" * 53
CASH = 20_000.0
#: decision time -> symbols to enter (scores high: every one passes)
SCRIPT: dict[int, list[str]] = {
    START: ["LINKUSDT", "DOGEUSDT", "BTCUSDT"],
    START + 2 * H: ["ALPHAUSDT"],
    START + 4 * H: ["ETHUSDT", "SOLUSDT"],
}
#: the session: hourly decisions, then a flatten
STEPS: list[tuple[str, int]] = [("step", START + k * H) for k in range(7)] + [("flatten", START + 7 * H)]
UNIVERSE = sorted({s for v in SCRIPT.values() for s in v})
RISK = {"max_positions": 4, "stop_loss": 0.01, "take_profit": [0.01, 0.02], "take_profit_sizes": [0.5, 0.5], "time_stop": "3h",
        "max_order_notional": 3000.0, "daily_loss_limit": 0.05, "reduce_at": 0.03, "min_score": 50.0}


class ScriptedDecider:
    """The script's candidates at each decision time (nothing to warm)."""

    model_active = False

    async def warm(self) -> None:
        return None

    def candidates(self, t_ms: int, min_score: float) -> list[Any]:
        from trader.trade.risk import Candidate

        return [Candidate(s, t_ms, 90.0, 1, None, 0.0) for s in SCRIPT.get(t_ms, [])]


async def run(rest_url: str, ws_url: str, ledger: str, action: str, t_ms: int) -> int:
    """One process's work: ``step`` (start the session, reconcile, decide at ``t_ms``) or ``flatten``.
    Returns the exit code (0; a flatten that is not flat: 3)."""
    from trader.config import ClientConfig, ProfileConfig, RiskConfig
    from trader.exchange.journal import OrderJournal
    from trader.exchange.rest import BinanceClient
    from trader.exchange.signing import Credentials
    from trader.exchange.trading import TradingClient
    from trader.trade.broker import VenueBroker
    from trader.trade.engine import TradeEngine
    from trader.trade.ledger import Ledger
    from trader.trade.session import TradingSession

    cfg = RiskConfig.model_validate(RISK)
    client = ClientConfig(timeout_s=0.5, weight_limit=1_000_000)
    async with BinanceClient(ProfileConfig(rest_url=rest_url, ws_url=ws_url), client) as rest:
        tc = TradingClient(rest, Credentials.hmac(KEY, SECRET), OrderJournal(ledger), resolve_timeout_s=60.0, poll_s=0.02)
        lg = Ledger(ledger)
        try:
            engine = TradeEngine(VenueBroker(tc), lg, cfg, 50.0, universe=UNIVERSE)
            if action == "flatten":
                await tc.sync_time()
                rep = await engine.flatten(t_ms)
                return 0 if rep.flat else 3
            session = TradingSession(engine, ScriptedDecider(), interval_ms=H, clock=tc.clock, sync=tc.sync_time)
            await session.start()
            await session.decide(t_ms)
            return 0
        finally:
            lg.close()
            tc.journal.close()


def child(rest_url: str, ws_url: str, ledger: str, action: str, t_ms: int, done: str) -> None:
    """A process's entry point (multiprocessing target): runs :func:`run`, writes its exit code to
    ``done`` (the harness's proof that the process finished, whatever the process pool reports), exits."""
    code = asyncio.run(run(rest_url, ws_url, ledger, action, t_ms))
    Path(done).write_text(str(code))
    sys.stdout.flush()
    os._exit(code)


def invariants(venue: Any, ledger_path: Path, *, flat: bool = False) -> list[str]:
    """What must hold after every completed step (and after a restart): the violations found."""
    from trader.trade.ledger import Ledger

    acct = venue.trading.engine.accounts[KEY]
    out: list[str] = []
    per_cid: dict[str, int] = {}
    for o in acct.orders.values():
        per_cid[o.client_order_id] = per_cid.get(o.client_order_id, 0) + 1
    out += [f"client order id {c} sent {n} times" for c, n in per_cid.items() if n > 1]
    lg = Ledger(ledger_path, durable=False)
    try:
        booked = {(f["symbol"], f["trade_id"]) for f in lg.fills()}
        venue_trades = {(t["symbol"], t["id"]) for t in acct.trades}
        if booked != venue_trades:
            out.append(f"venue trades not booked {sorted(venue_trades - booked)[:5]}, booked but not on the venue {sorted(booked - venue_trades)[:5]}")
        held: dict[str, Decimal] = {}
        for p in lg.positions():
            held[p.symbol] = held.get(p.symbol, Decimal(0)) + p.left_qty
        for symbol in set(held) | {f"{a}USDT" for a in acct.balances if a != "USDT"}:
            venue_qty = sum(acct.balances.get(symbol.removesuffix("USDT"), [Decimal(0), Decimal(0)]))
            if held.get(symbol, Decimal(0)) != venue_qty:
                out.append(f"{symbol}: ledger positions hold {held.get(symbol, Decimal(0))}, the venue {venue_qty}")
        snaps = lg.snapshots()
        days: dict[str, list[dict[str, Any]]] = {}
        from trader.trade.engine import utc_date

        for s in snaps:
            days.setdefault(utc_date(s["t_ms"]), []).append(s)
        for date, rows in days.items():
            if rows[0]["day_start"] != rows[0]["equity"] or any(r["day_start"] != rows[0]["day_start"] for r in rows):
                out.append(f"{date}: day start {rows[0]['day_start']} is not the day's first venue-valued equity {rows[0]['equity']}")
        cfg_limit = Decimal(str(RISK["daily_loss_limit"]))
        for s in snaps:
            if s["state"] == "HALTED" and (s["day_start"] - s["equity"]) / s["day_start"] < cfg_limit:
                out.append(f"HALTED at {s['t_ms']} with equity {s['equity']} vs day start {s['day_start']}: not justified")
        if flat:
            still = [o.client_order_id for o in acct.open.values()]
            if still:
                out.append(f"flatten left {len(still)} open orders")
            if lg.positions("OPEN"):
                out.append(f"flatten left open positions {[p.symbol for p in lg.positions('OPEN')]}")
    finally:
        lg.close()
    return out


async def session(dataset: Any, tmp: Path, kill_at: int | None, *, fault_rate: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Run the whole scripted session once against a fresh venue; SIGKILL the process right after the
    venue handled its ``kill_at``-th request (counted over the session), restart it, and check
    :func:`invariants` after every completed step. Order answers are lost at ``fault_rate`` (500, 503,
    or held past the client's timeout: the order exists, the client does not know it)."""
    import multiprocessing as mp
    import signal

    from trader.config import AccountConfig, FaultConfig
    from trader.replay.server import ReplayExchange

    ctx = mp.get_context("forkserver")
    accounts = [AccountConfig(api_key=KEY, api_secret=SECRET, balances={"USDT": CASH})]
    faults = FaultConfig(order_5xx_rate=fault_rate, order_5xx_mode="mixed", order_hang_s=1.0, seed=seed)
    ledger = tmp / f"ledger-{kill_at}-{seed}.sqlite"
    state: dict[str, Any] = {"n": 0, "pid": None, "killed_at": None}
    async with ReplayExchange(dataset, port=0, speed=0, start_ms=START, accounts=accounts, weight_limit=1_000_000, faults=faults) as venue:

        def hook(request: Any, response: Any) -> None:
            state["n"] += 1
            if kill_at is not None and state["n"] == kill_at and state["pid"] is not None and state["killed_at"] is None:
                os.kill(state["pid"], signal.SIGKILL)
                state["killed_at"] = (request.method, request.path)

        venue.on_response = hook
        violations: list[str] = []
        runs = 0
        codes: list[int] = []
        for action, t in STEPS:
            venue.clock.set(t)
            for attempt in range(5):
                done = tmp / f"done-{kill_at}-{seed}-{t}-{attempt}"
                p = ctx.Process(target=child, args=(venue.rest_url, venue.ws_url, str(ledger), action, t, str(done)))
                p.start()
                state["pid"] = p.pid
                runs += 1
                await asyncio.to_thread(p.join, 180)
                if p.exitcode is None:
                    p.kill()
                    await asyncio.to_thread(p.join)
                    violations.append(f"{action} at {t}: did not finish in 180 s")
                    break
                state["pid"] = None
                if done.exists():  # finished (the pool may fail to report a status: trust the file)
                    codes.append(int(done.read_text()))
                    break
                if p.exitcode != -signal.SIGKILL or state["killed_at"] is None:
                    violations.append(f"{action} at {t}: the process died without finishing (exit {p.exitcode})")
                # 10 s pass before the restart: an order written to the journal but never sent is then
                # provably dead on the venue's clock (past timestamp + recvWindow) and may be sent again
                venue.clock.step(10_000)
            state["pid"] = None
            violations += [f"after {action} at {t}: {v}" for v in invariants(venue, ledger, flat=action == "flatten")]
        if any(c != 0 for c in codes):
            violations.append(f"exit codes {codes}")
        acct = venue.trading.engine.accounts[KEY]
        return {"kill_at": kill_at, "requests": state["n"], "killed_after": state["killed_at"], "runs": runs, "violations": violations,
                "orders": len(acct.orders), "trades": len(acct.trades), "answers_lost": len(venue.trading.unknown_status_orders),
                "ledger": ledger}
