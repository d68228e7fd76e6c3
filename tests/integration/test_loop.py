"""The on-close loops in the library (trader.loop): the close barrier, live scans that survive a symbol
whose warm failed, and the one rule for which symbols a command works on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from trader.config import ClientConfig, ProfileConfig, ScanConfig, StreamConfig
from trader.errors import ConfigError
from trader.exchange.rest import BinanceClient
from trader.live import LiveFeed
from trader.loop import CloseBarrier, live_scans
from trader.replay.server import ReplayExchange
from trader.scan import Scanner
from trader.store.klines import KlineStore
from trader.warm import resolve_symbols

HOUR = 3_600_000


async def test_barrier_fires_when_every_live_symbol_closed() -> None:
    b = CloseBarrier({"A", "B"}, "1h", wait_s=60)
    b.on_close("A", "1h", HOUR)
    b.on_close("A", "4h", HOUR)  # another interval: ignored
    assert not b.ready.is_set() and b.pending() == 1
    b.on_close("B", "1h", HOUR)
    assert b.ready.is_set() and b.fired_ms == HOUR and b.pending() == 0
    b.ready.clear()
    b.on_close("A", "1h", HOUR)  # a late duplicate of a close already fired for
    assert not b.ready.is_set() and b.pending() == 0
    b.on_close("NOPE", "1h", 2 * HOUR)  # not a live symbol
    assert b.pending() == 0


async def test_barrier_times_out_on_a_lagging_symbol_and_stays_bounded() -> None:
    b = CloseBarrier({"A", "B"}, "1h", wait_s=0.05)
    for k in range(1, 50):  # B never closes: every close still triggers, nothing accumulates
        b.ready.clear()
        b.on_close("A", "1h", k * HOUR)
        await asyncio.wait_for(b.ready.wait(), 5)
        assert b.fired_ms == k * HOUR and b.pending() == 0


async def test_live_scans_go_on_when_a_symbol_failed_its_warm(exchange: ReplayExchange, tmp_path: Path) -> None:
    """The old loop waited for len(wanted) closes, so one failed symbol stopped rescans for good."""
    profile = ProfileConfig(rest_url=exchange.rest_url, ws_url=exchange.ws_url)
    cfg = ScanConfig(live_wait_s=30)
    stop = asyncio.Event()
    with KlineStore(tmp_path) as store:
        async with BinanceClient(profile, ClientConfig()) as client:
            barrier = CloseBarrier((), "1h", cfg.live_wait_s)
            feed = LiveFeed(client, store, ["BTCUSDT", "NOPEUSDT", "ETHUSDT"], ["1h", "4h"], exchange.ws_url,
                            stream_cfg=StreamConfig(snapshot_s=0), capacity=300, on_close=barrier.on_close, depth=300)
            async with feed:
                assert [(e.symbol, e.interval) for e in feed.warm_report.errors] == [("NOPEUSDT", "1h"), ("NOPEUSDT", "4h")]
                barrier.expected = {s for s, i in feed.live if i == "1h"}
                with Scanner(store, cfg, ["1h", "4h"], loader=feed.load) as scanner:
                    scans = live_scans(feed, scanner, barrier, stop, max_scans=3)
                    first = await anext(scans)
                    assert {s.symbol for s in first.signals} == {"BTCUSDT", "ETHUSDT"}
                    for k in (1, 2):  # two more closes of the base interval: two more scans
                        exchange.clock.step(HOUR)
                        result = await asyncio.wait_for(anext(scans), 20)
                        assert len(result.signals) == 2 and barrier.pending() == 0, k
                    with pytest.raises(StopAsyncIteration):
                        await anext(scans)


async def test_symbols_precedence_symbols_then_top_then_configured(exchange: ReplayExchange) -> None:
    """`warm --top N --follow` used to ignore --top when universe.symbols was set."""
    async with BinanceClient(ProfileConfig(rest_url=exchange.rest_url, ws_url=exchange.ws_url)) as client:
        assert await resolve_symbols(client, symbols=["ETHUSDT"], top=5, configured=["XRPUSDT"]) == ["ETHUSDT"]
        top = await resolve_symbols(client, top=5, configured=["XRPUSDT"])
        assert len(top) == 5 and top != ["XRPUSDT"]  # the 5 largest by 24h quote volume, not the configured list
        assert await resolve_symbols(client, configured=["XRPUSDT"]) == ["XRPUSDT"]
        with pytest.raises(ConfigError, match="no symbols"):
            await resolve_symbols(client)
