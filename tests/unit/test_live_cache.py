from __future__ import annotations

import numpy as np

from trader.exchange.stream import parse_kline_message
from trader.store.live import APPENDED, GAP, IGNORED, LiveCache, Ring

HOUR = 3_600_000


def row(t: int, close: float = 1.0) -> np.ndarray:
    r = np.zeros(11)
    r[0], r[4], r[6] = t, close, t + HOUR - 1
    return r


def test_ring_wraps_and_views_are_contiguous_zero_copy() -> None:
    ring = Ring(capacity=4, step_ms=HOUR)
    for i in range(10):
        assert ring.append(row(i * HOUR, float(i))) == APPENDED
        v = ring.view()
        assert (v.shape == (11, min(i + 1, 4)) and v.flags["C_CONTIGUOUS"] is False) or v.base is ring.data
        assert list(v[4]) == [float(j) for j in range(max(0, i - 3), i + 1)]
        assert np.shares_memory(v, ring.data)
    assert list(ring.view(2)[4]) == [8.0, 9.0] and ring.last_open_ms == 9 * HOUR


def test_replace_ignore_gap_and_forming() -> None:
    ring = Ring(capacity=5, step_ms=HOUR)
    for i in range(3):
        ring.append(row(i * HOUR, float(i)))
    assert ring.append(row(1 * HOUR, 42.0)) == "replaced" and ring.view()[4, 1] == 42.0
    assert ring.append(row(-5 * HOUR)) == IGNORED
    assert ring.append(row(5 * HOUR)) == GAP and len(ring) == 3  # nothing written: backfill first
    ring.set_forming(row(3 * HOUR, 7.0))
    assert ring.has_forming and len(ring) == 3  # the forming kline is not in the ring
    ring.append(row(3 * HOUR, 8.0))
    assert not ring.has_forming and ring.view()[4, -1] == 8.0
    ring.set_forming(row(2 * HOUR))  # a late update of a closed kline is ignored
    assert not ring.has_forming


def test_memory_for_100_symbols_2_intervals_300_klines() -> None:
    cache = LiveCache(300)
    for i in range(100):
        for iv in ("1h", "4h"):
            cache.ring(f"S{i}USDT", iv)
    assert cache.nbytes() <= 12 * 1024 * 1024
    cols = np.stack([row(i * HOUR) for i in range(400)]).T
    cache.seed("S0USDT", "1h", cols)
    assert cache.load("S0USDT", "1h", 300).shape == (11, 300) and cache.load("NOPE", "1h").shape == (11, 0)


def test_parse_kline_messages() -> None:
    k = {"t": 1, "T": 2, "s": "BTCUSDT", "i": "1h", "f": 1, "L": 2, "o": "1.5", "c": "2", "h": "3", "l": "1",
         "v": "10", "n": 2, "x": True, "q": "20", "V": "5", "Q": "10", "B": "0"}
    ev = {"e": "kline", "E": 5, "s": "BTCUSDT", "k": k}
    for frame in (ev, {"stream": "btcusdt@kline_1h", "data": ev}):
        sym, iv, r, closed, e = parse_kline_message(__import__("orjson").dumps(frame))  # type: ignore[misc]
        assert (sym, iv, closed, e) == ("BTCUSDT", "1h", True, 5) and list(r) == [1, 1.5, 3, 1, 2, 10, 2, 20, 2, 5, 10]
    assert parse_kline_message(b'{"e":"kline","E":1,"k":{"t":1}}') is None  # missing fields
    assert parse_kline_message(b'{"stream":"x","data":{"e":"kl') is None  # truncated
    assert parse_kline_message(b"[1,2]") is None
    assert parse_kline_message(b'{"result":null,"id":1}') == {"result": None, "id": 1}
