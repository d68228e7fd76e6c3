"""The crash matrix: a scripted paper session (``crash_session.py``) SIGKILLed right after the venue
handled its k-th request, restarted, and checked after every step.

The session goes through entries, protective OCO ladders, a take profit, a stop, a time stop, a
partial exit retried at the next step, a UTC day rollover and a flatten, with 20 % of order
answers lost (500 / 503 / held past the client's timeout). CI runs a dense sample of kill points
spread over the whole session; ``bench/crash_matrix.py`` runs every one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.integration.crash_session import session
from trader.replay.dataset import ReplayDataset
from trader.trade.ledger import Ledger
from trader.trade.types import Action


@pytest.fixture(scope="module")
def clean(dataset: ReplayDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The session run once without kills or faults."""
    return asyncio.run(session(dataset, tmp_path_factory.mktemp("clean"), None, fault_rate=0.0))


def test_the_scripted_session_goes_through_every_path_that_moves_money(clean: dict[str, Any]) -> None:
    r = clean
    assert r["violations"] == [] and r["killed_after"] is None
    lg = Ledger(r["ledger"])
    try:
        filled = {(o.symbol, o.role, o.rung) for o in lg.orders() if o.executed > 0}
        assert ("LINKUSDT", "take_profit", 1) in filled  # a take profit
        assert ("DOGEUSDT", "stop_loss", 1) in filled  # a stop
        reasons = {p.symbol: p.exit_reason for p in lg.positions()}
        assert reasons["BTCUSDT"] == "time_stop" and reasons["ETHUSDT"] == "flatten"
        partial = lg.decisions(Action.PARTIAL_EXIT)
        assert partial and partial[0][1] == "ALPHAUSDT"  # the venue's volume cap: the rest was retried and sold
        assert reasons["ALPHAUSDT"] == "time_stop" and not lg.positions("OPEN")
        dates = {s["t_ms"] // 86_400_000 for s in lg.snapshots()}
        assert len(dates) == 2  # a UTC day rollover
    finally:
        lg.close()
    assert r["requests"] > 200


@pytest.mark.slow
async def test_sigkill_after_the_kth_venue_request_breaks_no_invariant(dataset: ReplayDataset, clean: dict[str, Any], tmp_path: Path) -> None:
    """A dense sample of kill points over the whole session (every one: bench/crash_matrix.py)."""
    n = clean["requests"]
    points = sorted({1, 2, 3, *range(9, n + 1, max(n // 6, 1))})
    results = []
    for a in range(0, len(points), 2):  # two sessions at a time: one per core
        results += await asyncio.gather(*(session(dataset, tmp_path, k, fault_rate=0.2, seed=k) for k in points[a : a + 2]))
    killed = [r for r in results if r["killed_after"] is not None]
    assert len(killed) >= len(points) - 1, [r["kill_at"] for r in results]
    assert sum(r["answers_lost"] for r in results) > 0  # order answers were lost, and settled by look-ups
    bad = {r["kill_at"]: r["violations"] for r in results if r["violations"]}
    assert not bad, bad
    print(f"kill points {len(points)} of {n} requests, killed {len(killed)}, answers lost {sum(r['answers_lost'] for r in results)}")
