"""Pure pieces of the replay exchange: clock, weight limiter, forming candle, dataset parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FakeClock
from trader.exchange.replay.clock import ReplayClock
from trader.exchange.replay.dataset import ReplayDataset, decimals_of, split_symbol
from trader.exchange.replay.limits import WeightLimiter
from trader.exchange.replay.server import default_start_ms, forming_row

HOUR = 3_600_000


def test_clock_speed_and_steps() -> None:
    wall = FakeClock(100.0)
    clock = ReplayClock(1_000_000, speed=60.0, wall=wall)
    assert clock.now_ms() == 1_000_000
    wall.advance(1.0)
    assert clock.now_ms() == 1_060_000
    assert clock.step(5) == 1_060_005
    frozen = ReplayClock(5, speed=0)
    assert frozen.set(10) == 10
    with pytest.raises(ValueError):
        frozen.step(-1)
    with pytest.raises(ValueError):
        frozen.set(9)


def test_limiter_windows_are_per_ip() -> None:
    clock = FakeClock(120.0)
    lim = WeightLimiter(limit=10, clock=clock)
    assert lim.admit("a", 10).status == 200
    assert lim.admit("b", 10).status == 200
    assert lim.admit("a", 1).status == 429
    clock.advance(60)
    assert lim.admit("a", 1).used_weight == 1


def test_default_start_leaves_1000_longest_klines(dataset: ReplayDataset) -> None:
    start = default_start_ms(dataset)
    four_h = dataset.series("BTCUSDT", "4h").open_time_ms
    one_h = dataset.series("BTCUSDT", "1h").open_time_ms
    assert int((four_h + 4 * HOUR <= start).sum()) >= 1000
    assert int((one_h + HOUR <= start).sum()) >= 1000


def test_forming_row_path_is_inside_the_candle_and_ends_at_it(dataset: ReplayDataset) -> None:
    s = dataset.series("ETHUSDT", "1h")
    for idx in (10, 11, 500, 4000):
        o, h, lo, c, v = s.values[idx, 1:6]
        open_ms = int(s.open_time_ms[idx])
        prev_high = -np.inf
        for f in np.linspace(0, 1, 13):
            row = forming_row(s, idx, open_ms + int(f * HOUR))
            ro, rh, rl, rc, rv = (float(x) for x in row[1:6])
            assert ro == o and rl <= min(ro, rc) and rh >= max(ro, rc)
            assert lo - 1e-9 <= rl and rh <= h + 1e-9 and 0 <= rv <= v
            assert rh >= prev_high  # the high never falls while a candle forms
            prev_high = rh
        end = forming_row(s, idx, open_ms + HOUR)
        assert [float(x) for x in end[1:6]] == pytest.approx([o, h, lo, c, v])


def test_decimals_and_symbol_split() -> None:
    assert decimals_of(np.array([60672.01, 59590.0, 60000.1])) == 2
    assert decimals_of(np.array([0.00001234])) == 8
    assert decimals_of(np.array([3.0, 4.0])) == 0
    assert split_symbol("BTCUSDT") == ("BTC", "USDT")
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("1INCHUSDT") == ("1INCH", "USDT")


def test_malformed_data_files_are_reported(tmp_path: Path) -> None:
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"
    (tmp_path / "AUSDT-1h.csv").write_text(header + "\n1,2,3\n")
    ds = ReplayDataset(tmp_path)
    with pytest.raises(ValueError, match=r"AUSDT-1h\.csv:2"):
        ds.series("AUSDT", "1h")
    (tmp_path / "BUSDT-1h.csv").write_text("time,price\n1,2\n")
    with pytest.raises(ValueError, match="unexpected header"):
        ReplayDataset(tmp_path).series("BUSDT", "1h")
    with pytest.raises(FileNotFoundError):
        ReplayDataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        ReplayDataset(empty)


def test_bundled_data_is_complete(dataset: ReplayDataset) -> None:
    assert len(dataset.symbols) == 96 and dataset.intervals == ("1h", "4h")
    assert (dataset.data_dir / "README.md").is_file()
    s = dataset.series("BTCUSDT", "1h")
    assert len(s) == 7296 and int(s.open_time_ms[0]) == 1714521600000
