"""Shared fixtures: the bundled dataset (parsed once per session) and an in-process replay exchange
on 127.0.0.1:0 with a frozen replay clock and an injected weight-window clock (no sleeps)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trader.exchange.replay.dataset import ReplayDataset, bundled_data_dir
from trader.exchange.replay.server import ReplayExchange

DATA = Path(__file__).parent / "data"


class FakeClock:
    """A settable clock (seconds) for weight windows and back-offs."""

    def __init__(self, t: float = 1_700_000_040.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


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
