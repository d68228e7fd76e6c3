"""The USD-M client against the replay's /fapi: exactly-once orders (also across SIGKILLs), local
checks, idempotent leverage and margin type, typed positions and account, reduce-only close."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_orders import ACCOUNTS, KEY, SECRET
from trader.config import FaultConfig, ProfileConfig
from trader.errors import OrderRejected
from trader.exchange.futures import FuturesClient, FuturesIntent
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import Credentials
from trader.exchange.trading import client_order_id
from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def venue(dataset: ReplayDataset) -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(dataset, port=0, speed=0, accounts=ACCOUNTS) as ex:
        yield ex


@pytest.fixture
async def fc(venue: ReplayExchange, tmp_path: Path) -> AsyncIterator[FuturesClient]:
    profile = ProfileConfig(rest_url=venue.rest_url, ws_url=venue.ws_url, market="usdm")
    async with BinanceClient(profile) as rest:
        client = FuturesClient(rest, Credentials.hmac(KEY, SECRET), OrderJournal(tmp_path / "j.sqlite"))
        yield client
        client.journal.close()


async def test_a_short_exactly_once_positions_and_a_reduce_only_close(venue: ReplayExchange, fc: FuturesClient) -> None:
    await fc.ensure_margin_type("ETHUSDT", "ISOLATED")
    await fc.ensure_margin_type("ETHUSDT", "ISOLATED")  # -4046 "no need to change" is success
    await fc.ensure_leverage("ETHUSDT", 3)
    posts = venue.stats.requests["/fapi/v1/leverage"]
    await fc.ensure_leverage("ETHUSDT", 3)
    assert venue.stats.requests["/fapi/v1/leverage"] == posts == 1  # read first, changed only when different
    short = FuturesIntent("t", "ETHUSDT", 1, "entry", "SELL", "MARKET", quantity=D("0.5"))
    o = await fc.submit(short)
    again = await fc.submit(short)
    assert o.status == "FILLED" and again.order_id == o.order_id and fc.stats.orders_sent == 1
    [pos] = await fc.positions()
    assert pos.amount == D("-0.5") and pos.leverage == 3 and pos.margin_type == "isolated"
    assert pos.liquidation_price > pos.entry_price > 0 and abs(pos.isolated_wallet - pos.entry_price * D("0.5") / 3) < D("1e-8")
    acct = await fc.futures_account()
    assert acct.wallet < D(10_000) and acct.available < acct.wallet  # the fee paid, the margin set aside
    with pytest.raises(OrderRejected) as e:  # checked locally: nothing sent
        await fc.submit(FuturesIntent("t", "ETHUSDT", 2, "tiny", "BUY", "LIMIT", quantity=D("0.001"), price=D("2000")))
    assert e.value.local and e.value.code == -4164 and fc.stats.orders_sent == 1
    closed = await fc.close_position("ETHUSDT", signal_ms=3)
    assert closed is not None and closed.status == "FILLED" and await fc.positions() == []
    assert await fc.close_position("ETHUSDT", signal_ms=4) is None
    kinds = {r["incomeType"] for r in await fc.income()}
    assert kinds == {"COMMISSION", "REALIZED_PNL"}


async def test_an_order_answered_503_is_looked_up_not_resent(venue: ReplayExchange, fc: FuturesClient) -> None:
    venue.trading.faults = FaultConfig(order_5xx_rate=1.0, order_5xx_mode="503")
    o = await fc.submit(FuturesIntent("t", "BTCUSDT", 1, "entry", "BUY", "MARKET", quantity=D("0.002")))
    venue.trading.faults = FaultConfig()
    assert o.status == "FILLED" and fc.stats.unknown == 1 and fc.stats.resolved_found == 1
    assert len(venue.futures.engine.accounts[KEY].orders) == 1


@pytest.mark.slow
async def test_twenty_sigkill_cycles_on_fapi_leave_exactly_one_order_per_intent(venue: ReplayExchange, tmp_path: Any) -> None:
    """As the spot test: the venue accepts each new order and holds its answer; the client is
    SIGKILLed while waiting; a restarted client submits every intent again. 0 duplicates allowed."""
    env = {**os.environ, "TRADER_API_KEY": KEY, "TRADER_API_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    journal = str(tmp_path / "journal.sqlite")
    acct = venue.futures.engine.accounts[KEY]
    cycles = 20

    async def child(n: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.order_child", venue.rest_url, journal, str(n), "usdm",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )

    for k in range(cycles):
        cid = client_order_id("crash", "BTCUSDT", 1_000 + k, "entry")
        venue.trading.faults = FaultConfig(order_5xx_rate=1.0, order_5xx_mode="hang", order_hang_s=120.0)
        proc = await child(k + 1)
        for _ in range(3000):  # until the venue holds the new order (accepted, its answer withheld)
            if ("BTCUSDT", cid) in acct.by_client or proc.returncode is not None:
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
    assert len(acct.orders) == cycles and acct.positions["BTCUSDT"].amt == D("0.002") * cycles
