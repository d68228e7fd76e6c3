"""Pure pieces of the replay venue: clock, weight limiter, dataset parsing and validation, derived
intervals, the intrabar market model."""

from __future__ import annotations

import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FakeClock, bundled_rows
from trader.errors import ConfigError
from trader.models import CLOSE, HIGH, LOW, OPEN, OPEN_TIME, QUOTE_VOLUME, TRADES, VOLUME, check_klines
from trader.replay import market
from trader.replay.clock import MAX_STEP_MS, ReplayClock
from trader.replay.dataset import ReplayDataset, _decimals, split_symbol
from trader.replay.limits import WeightLimiter
from trader.replay.server import SHIFT_PERIOD_MS, default_start_ms, wall_shift_ms

HOUR = 3_600_000
DAY = 24 * HOUR
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_buy_base,taker_buy_quote"


def test_clock_speed_steps_and_bounds() -> None:
    wall = FakeClock(100.0)
    clock = ReplayClock(1_000_000, speed=60.0, wall=wall)
    assert clock.now_ms() == 1_000_000
    wall.advance(1.0)
    assert clock.now_ms() == 1_060_000
    assert clock.step(5) == 1_060_005
    frozen = ReplayClock(5, speed=0)
    assert frozen.set(10) == 10
    with pytest.raises(ConfigError, match="backwards"):
        frozen.step(-1)
    with pytest.raises(ConfigError):
        frozen.set(9)
    with pytest.raises(ConfigError):
        frozen.step(MAX_STEP_MS + 1)
    with pytest.raises(ConfigError, match="finite"):
        ReplayClock(0, speed=float("inf"))
    with pytest.raises(ConfigError, match="wall clock"):
        ReplayClock(0, 1.0, steppable=False).step(1)


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


def test_series_are_kline_blocks_equal_to_the_csv(dataset: ReplayDataset) -> None:
    s = dataset.series("PEOPLEUSDT", "1h")
    assert s.values.shape == (11, 7296) and s.values.flags.c_contiguous
    rows = bundled_rows("PEOPLEUSDT", "1h")
    for i in (0, 1, 3000, 7295):
        assert list(s.values[:, i]) == [float(x) for x in rows[i]]
    check_klines(s.values, "1h")


def test_forming_row_path_is_inside_the_candle_and_ends_at_it(dataset: ReplayDataset) -> None:
    s = dataset.series("ETHUSDT", "1h")
    for idx in (10, 11, 500, 4000):
        o, h, lo, c, v = (s.values[r, idx] for r in (OPEN, HIGH, LOW, CLOSE, VOLUME))
        open_ms = int(s.open_time_ms[idx])
        prev_high = -np.inf
        for f in np.linspace(0, 1, 13):
            row = market.forming_row(s, idx, open_ms + int(f * HOUR))
            ro, rh, rl, rc, rv = (float(x) for x in row[1:6])
            assert ro == o and rl <= min(ro, rc) and rh >= max(ro, rc)
            assert lo - 1e-9 <= rl and rh <= h + 1e-9 and 0 <= rv <= v
            assert rh >= prev_high  # the high never falls while a candle forms
            prev_high = rh
        end = market.forming_row(s, idx, open_ms + HOUR)
        assert [float(x) for x in end[1:6]] == pytest.approx([o, h, lo, c, v])


def test_derived_intervals_aggregate_exactly_on_binance_boundaries(dataset: ReplayDataset) -> None:
    h1 = dataset.series("BTCUSDT", "1h")
    for interval, hours in (("2h", 2), ("6h", 6), ("8h", 8), ("12h", 12), ("1d", 24), ("3d", 72), ("1w", 168)):
        agg = dataset.series("BTCUSDT", interval)
        assert agg.base is not None and agg.base.interval == "1h"
        check_klines(agg.values, interval)  # boundaries, close_time = open_time + interval - 1
        k = 3 if len(agg) > 3 else 0
        lo = int(np.searchsorted(h1.open_time_ms, agg.open_time_ms[k]))
        part = h1.values[:, lo : lo + hours]
        assert part[OPEN_TIME, 0] == agg.values[OPEN_TIME, k] and part.shape[1] == hours
        assert agg.values[OPEN, k] == part[OPEN, 0] and agg.values[CLOSE, k] == part[CLOSE, -1]
        assert agg.values[HIGH, k] == part[HIGH].max() and agg.values[LOW, k] == part[LOW].min()
        assert agg.values[TRADES, k] == part[TRADES].sum()
        rows = bundled_rows("BTCUSDT", "1h")[lo : lo + hours]
        exact = sum(Decimal(r[QUOTE_VOLUME]) for r in rows)
        assert Decimal(agg.data.line(k).split(b",")[QUOTE_VOLUME].decode()) == exact.quantize(Decimal("0.00000001"))
    weekly = dataset.series("BTCUSDT", "1w").open_time_ms
    assert {dt.datetime.fromtimestamp(t / 1000, dt.UTC).weekday() for t in weekly} == {0}  # Mondays
    assert not dataset.has("BTCUSDT", "1M") and not dataset.has("BTCUSDT", "1s")


def test_derived_forming_kline_aggregates_the_closed_base_klines(dataset: ReplayDataset) -> None:
    d1 = dataset.series("SOLUSDT", "1d")
    h1 = dataset.series("SOLUSDT", "1h")
    idx = 50
    open_ms = int(d1.open_time_ms[idx])
    now = open_ms + 5 * HOUR  # five 1h klines closed, the sixth just opened
    row = market.forming_row(d1, idx, now)
    lo = int(np.searchsorted(h1.open_time_ms, open_ms))
    five = h1.values[:, lo : lo + 5]
    assert float(row[1]) == five[OPEN, 0] and float(row[2]) == five[HIGH].max() and float(row[3]) == five[LOW].min()
    assert float(row[4]) == h1.values[OPEN, lo + 5]  # the last price is the just-opened sixth kline's open
    assert row[8] == int(five[TRADES].sum())


def test_market_model_is_consistent(dataset: ReplayDataset) -> None:
    s = dataset.series("BTCUSDT", "1h")
    now = int(s.open_time_ms[4000]) + HOUR // 3
    stats = market.window_stats(s, now - DAY, now)
    assert stats is not None
    assert stats.low <= min(stats.open, stats.last) and stats.high >= max(stats.open, stats.last)
    price = market.current_price(s, now)
    assert price == pytest.approx(stats.last)
    book = market.book_ticker(s, now, spread_bps=2.0)
    bid, ask = float(book["bidPrice"]), float(book["askPrice"])
    assert bid < price < ask and (ask - bid) / price == pytest.approx(2e-4, rel=0.5)
    avg = float(market.avg_price(s, now)["price"])
    assert s.values[LOW, 4000] <= avg <= s.values[HIGH, 4000]
    info = market.symbol_info(s, now)
    kinds = [f["filterType"] for f in info["filters"]]
    assert kinds == ["PRICE_FILTER", "LOT_SIZE", "ICEBERG_PARTS", "MARKET_LOT_SIZE", "TRAILING_DELTA",
                     "PERCENT_PRICE_BY_SIDE", "NOTIONAL", "MAX_NUM_ORDERS", "MAX_NUM_ALGO_ORDERS"]
    assert info["filters"][0]["tickSize"] == "0.01000000"


def test_tick_size_uses_only_data_up_to_now(tmp_path: Path) -> None:
    rows = bundled_rows("BTCUSDT", "1h")[:20]
    mid = (float(rows[15][HIGH]) + float(rows[15][LOW])) / 2
    rows[15][CLOSE] = f"{mid:.2f}3"  # a finer price (3 decimals) appears only later
    (tmp_path / "BTCUSDT-1h.csv").write_text("\n".join([HEADER] + [",".join(r) for r in rows]) + "\n")
    s = ReplayDataset(tmp_path).series("BTCUSDT", "1h")
    assert s.decimals(14) == (2, 5) and s.decimals(15)[0] == 3


def test_wall_shift_keeps_every_boundary() -> None:
    recorded = 1_728_921_600_000
    wall = 1_796_000_000_123
    shift = wall_shift_ms(recorded, wall)
    assert shift % SHIFT_PERIOD_MS == 0 and 0 <= wall - shift - recorded < SHIFT_PERIOD_MS
    assert SHIFT_PERIOD_MS % (7 * DAY) == 0 and SHIFT_PERIOD_MS % (3 * DAY) == 0


def test_decimals_and_symbol_split() -> None:
    assert list(_decimals(np.array([60672.01, 59590.0, 60000.1]))) == [2, 0, 1]
    assert list(_decimals(np.array([0.00001234]))) == [8]
    assert split_symbol("BTCUSDT") == ("BTC", "USDT")
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("1INCHUSDT") == ("1INCH", "USDT")


def test_malformed_data_files_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "AUSDT-1h.csv").write_text(HEADER + "\n1,2,3\n")
    with pytest.raises(ConfigError, match=r"AUSDT-1h\.csv:2: malformed kline row"):
        ReplayDataset(tmp_path).series("AUSDT", "1h")
    rows = bundled_rows("BTCUSDT", "1h")[:5]
    rows[3][6] = str(int(rows[3][6]) + 1)  # close_time off by one
    (tmp_path / "CUSDT-1h.csv").write_text("\n".join([HEADER] + [",".join(r) for r in rows]) + "\n")
    with pytest.raises(ConfigError, match=r"CUSDT-1h\.csv:5: close_time"):
        ReplayDataset(tmp_path).series("CUSDT", "1h")
    (tmp_path / "DUSDT-1h.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match="gzip"):
        ReplayDataset(tmp_path).series("DUSDT", "1h")
    (tmp_path / "BUSDT-1h.csv").write_text("time,price\n1,2\n")
    with pytest.raises(ConfigError, match="unexpected header"):
        ReplayDataset(tmp_path).series("BUSDT", "1h")
    problems = ReplayDataset(tmp_path).preload()
    assert len(problems) == 4 and all(":" in p for p in problems)
    with pytest.raises(ConfigError, match="not found"):
        ReplayDataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no <SYMBOL>"):
        ReplayDataset(empty)


def test_identical_files_share_one_parse(tmp_path: Path) -> None:
    raw = (ReplayDataset().data_dir / "ETHUSDT-4h.csv.gz").read_bytes()
    for name in ("AAAUSDT", "BBBUSDT"):
        (tmp_path / f"{name}-4h.csv.gz").write_bytes(raw)
    ds = ReplayDataset(tmp_path)
    a, b = ds.series("AAAUSDT", "4h"), ds.series("BBBUSDT", "4h")
    assert a.data is b.data and a.symbol != b.symbol
    assert gzip.decompress(raw)


def test_bundled_data_is_complete(dataset: ReplayDataset) -> None:
    assert len(dataset.symbols) == 96 and dataset.intervals == ("1h", "4h")
    assert (dataset.data_dir / "README.md").is_file()
    s = dataset.series("BTCUSDT", "1h")
    assert len(s) == 7296 and int(s.open_time_ms[0]) == 1714521600000


def test_only_requests_that_ignored_a_429_are_violations() -> None:
    """In flight when the 429 was sent: not held against the client. Sent after seeing it: a violation."""
    clock = FakeClock(120.0)
    lim = WeightLimiter(limit=10, ban_after_429s=2, clock=clock, grace_s=0.25)
    a, b, c = object(), object(), object()
    assert lim.admit("ip", 10, a).status == 200
    assert lim.admit("ip", 2, a).status == 429  # over the limit: back-off until the window rolls
    for conn in (b, c, object(), object(), object()):  # other connections' requests already on the wire
        assert lim.admit("ip", 2, conn).status == 429
    assert lim._ips["ip"].violations == 0
    assert lim.admit("ip", 2, a).status == 429 and lim.admit("ip", 2, b).status == 429  # repeated after seeing it
    assert lim.admit("ip", 2, a).status == 418  # the third violation: banned
    clock2 = FakeClock(120.0)
    lim2 = WeightLimiter(limit=10, ban_after_429s=0, clock=clock2, grace_s=0.25)
    lim2.force_429("ip", 1, conn=a)
    clock2.advance(0.5)  # later than a round trip: the client had time to see it
    assert lim2.admit("ip", 2, object()).status == 418
