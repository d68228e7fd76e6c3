"""`scan --live` and `warm --follow` as real subprocesses against the replay exchange (clock stepped by the test)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from trader.replay.dataset import ReplayDataset
from trader.replay.server import ReplayExchange
from trader.store.klines import KlineStore
from trader.warm import last_closed_open_ms

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000


async def _lines_until(stream: asyncio.StreamReader, n: int) -> list[str]:
    out = []
    while len(out) < n:
        line = await asyncio.wait_for(stream.readline(), 60)
        if not line:
            break
        out.append(line.decode())
    return out


async def test_scan_live_rescans_on_close_with_zero_rest(dataset: ReplayDataset, tmp_path: Path) -> None:
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "scan", "--live", "--symbols", "BTCUSDT,ETHUSDT", "-m", "0", "--max-scans", "2",
            "--rest-url", ex.rest_url, "--ws-url", ex.ws_url, "--store", str(tmp_path / "s"), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        first = await _lines_until(proc.stdout, 2)  # the first scan, NDJSON because stdout is a pipe
        assert {json.loads(x)["symbol"] for x in first} == {"BTCUSDT", "ETHUSDT"}
        rest_before = sum(ex.stats.requests.values())
        ex.clock.step(HOUR)  # every 1h kline closes: one rescan
        second = await _lines_until(proc.stdout, 2)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert len(second) == 2
        # the rescan used the stream only (REST after the close: at most the feed's gap checks, no klines)
        assert ex.stats.requests["/api/v3/klines"] <= 4 and sum(ex.stats.requests.values()) - rest_before <= 6


async def test_warm_follow_persists_closed_klines_and_stops_cleanly(dataset: ReplayDataset, tmp_path: Path) -> None:
    store = tmp_path / "s"
    async with ReplayExchange(dataset, port=0, speed=0) as ex:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "warm", "--follow", "--symbols", "BTCUSDT", "--klines", "300",
            "--rest-url", ex.rest_url, "--ws-url", ex.ws_url, "--store", str(store), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        while b"streams live" not in await asyncio.wait_for(proc.stderr.readline(), 60):
            pass
        for _ in range(4):
            ex.clock.step(HOUR // 2)
            await asyncio.sleep(0.2)  # let the events reach the subprocess; nothing timed is asserted
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        now = ex.clock.now_ms()
    with KlineStore(store) as s:
        assert s.last_open_time("BTCUSDT", "1h") == last_closed_open_ms(now, "1h")
        assert (s.load("BTCUSDT", "1h")[6] < now).all()
