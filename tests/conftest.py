"""Shared fixtures: the bundled dataset (parsed once per session) and an in-process replay exchange
on 127.0.0.1:0 with a frozen replay clock and an injected weight-window clock (no sleeps)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from trader.replay.dataset import ReplayDataset, bundled_data_dir
from trader.replay.server import ReplayExchange

DATA = Path(__file__).parent / "data"


class FakeClock:
    """A settable clock (seconds) for weight windows and back-offs."""

    def __init__(self, t: float = 1_700_000_040.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        """Virtual sleep: moves this clock instead of waiting (yields to the loop once)."""
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)


@pytest.fixture(scope="session")
def dataset() -> ReplayDataset:
    return ReplayDataset()


@pytest.fixture
def weight_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def exchange(dataset: ReplayDataset, weight_clock: FakeClock) -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(dataset, port=0, speed=0, weight_clock=weight_clock) as ex:
        yield ex


def bundled_rows(symbol: str, interval: str) -> list[list[str]]:
    """The bundled CSV rows of one series, as strings, header dropped."""
    path = bundled_data_dir() / f"{symbol}-{interval}.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    return [ln.split(",") for ln in lines[1:] if ln]


def source_rows(dataset: ReplayDataset, symbol: str, interval: str, last_open_ms: int, n: int) -> np.ndarray:
    """The recorded kline block ``(11, n)`` ending at ``last_open_ms`` (inclusive), for store comparisons."""
    s = dataset.series(symbol, interval)
    hi = int(np.searchsorted(s.open_time_ms, last_open_ms, side="right"))
    return s.values[:, max(hi - n, 0) : hi]


SCAN_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "PEOPLEUSDT", "FILUSDT", "BCHUSDT"]


@pytest.fixture(scope="session")
def warmed_store(dataset: ReplayDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A store warmed through the replay exchange (10 symbols x 1h, 4h x 400 klines) and the replay now."""
    from trader.config import ClientConfig, ProfileConfig
    from trader.exchange.rest import BinanceClient
    from trader.store.klines import KlineStore
    from trader.warm import warm

    path = tmp_path_factory.mktemp("warmed") / "store"

    async def run() -> int:
        async with ReplayExchange(dataset, port=0, speed=0) as ex:
            async with BinanceClient(ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url), ClientConfig()) as client:
                with KlineStore(path) as store:
                    report = await warm(client, store, SCAN_SYMBOLS, ["1h", "4h"], depth=400)
                    assert not report.errors
            return ex.clock.now_ms()

    return path, asyncio.run(run())


#: the universe of the tune tests: enough symbols for cross-sectional statistics, small enough to train in seconds
TUNE_SYMBOLS = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "PEOPLEUSDT", "FILUSDT", "BCHUSDT",
    "AVAXUSDT", "DOTUSDT", "LTCUSDT", "TRXUSDT", "ETCUSDT", "ATOMUSDT", "NEARUSDT", "BNBUSDT", "HBARUSDT", "XLMUSDT",
    "CRVUSDT", "GALAUSDT", "AAVEUSDT", "UNIUSDT",
]


@pytest.fixture(scope="session")
def history_store(dataset: ReplayDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the whole recorded history of :data:`TUNE_SYMBOLS` (1h + 4h), warmed through the
    replay exchange started at the end of the recording (``--start end``) — what ``trader tune`` reads."""
    from trader.config import ClientConfig, ProfileConfig
    from trader.exchange.rest import BinanceClient
    from trader.store.klines import KlineStore
    from trader.warm import warm

    path = tmp_path_factory.mktemp("history") / "store"
    symbols = TUNE_SYMBOLS

    async def run() -> None:
        async with ReplayExchange(dataset, port=0, speed=0, start_ms=dataset.bounds_ms()[1]) as ex:
            async with BinanceClient(ProfileConfig(rest_url=ex.rest_url, ws_url=ex.ws_url), ClientConfig()) as client:
                with KlineStore(path) as store:
                    report = await warm(client, store, symbols, ["1h", "4h"], depth=8000)
                    assert not report.errors

    asyncio.run(run())
    return path
