"""WebSocket market streams of the replay exchange, as Binance serves them.

Streams (Binance spot "WebSocket Streams"):

=====================================  ==============================================  =================
stream                                 event                                           updates
=====================================  ==============================================  =================
``<symbol>@kline_<interval>``          ``kline``: forming values, then ``x: true`` at   every ``update_ms``
                                       the close with the recorded values (REST         of replay time (2 s)
                                       strings)
``<symbol>@ticker``                    ``24hrTicker`` (rolling 24 h window)             every 1000 ms
``<symbol>@miniTicker``                ``24hrMiniTicker``                               every 1000 ms
``<symbol>@bookTicker``                best bid/ask (``u, s, b, B, a, A``)              every ``update_ms``
``<symbol>@markPrice[@1s]``            USD-M ``markPriceUpdate`` (``p, i, P, r, T``)     3000 / 1000
``<symbol>@depth``, ``@depth@100ms``   ``depthUpdate`` (``U``, ``u``, ``b``, ``a``)     1000 / 100 ms
``<symbol>@depth<5|10|20>[@100ms]``    ``{"lastUpdateId", "bids", "asks"}``             1000 / 100 ms
``<symbol>@trade``, ``@aggTrade``      ``trade`` / ``aggTrade`` (synthetic prints)      100 ms
=====================================  ==============================================  =================

All values follow the venue's intrabar model (:mod:`trader.replay.market`); intervals without a
file are derived (:mod:`trader.replay.dataset`). **The order book is synthetic** (there are no
recorded books): :func:`trader.replay.market.book_at` — a tick grid each side of the path price,
one quantity everywhere — whose update id advances every 100 ms of replay time and is what REST
``depth`` returns as ``lastUpdateId``; diff events carry ``U`` = the previous event's ``u`` + 1,
so Binance's "How to manage a local order book correctly" procedure works unchanged (an event is
sent only when the book changed; its ids cover the quiet updates before it).

**Trades are synthetic** too (there are no recorded trades): one print per 100 ms of replay time in
which the path traded (:func:`trader.replay.market.trade_tape`): the path price, the pro-rata base
volume of that step, trade ids = the running trade counts kline events report (``aggTrade``
``f``..``l`` covers them), a falling price printing as sells.

Any other stream name is refused with Binance's error frame
``{"error": {"code": 2, "msg": "Invalid request: unsupported stream name(s): ..."}, "id": N}``:
in reply to ``SUBSCRIBE``, or — for names in the connection URL — as the first frame of a
connection that serves every other name it asked for. A ``/ws/<token>`` path whose token is not a
stream name (no ``@``) opens a connection with no streams, as Binance does. Every control-message
error has that shape (code 0 unknown property, 1 invalid value, 2 invalid request, 3 invalid JSON).

Endpoints: ``/ws/<stream>`` (raw: events as they are; more streams with ``SUBSCRIBE``), ``/ws``;
``/stream?streams=<a>/<b>`` (combined: ``{"stream": name, "data": event}``); control messages
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY`` answered
``{"result": ..., "id": N}`` or the error frame above. When the clock jumps (a test stepping it), every kline that closed in the
jump gets its ``x: true`` event, in order, then one forming update: closed klines are never skipped
or invented.

Limits enforced as Binance does: a ping frame every ``ping_interval_s`` (20 s) and disconnection
without a pong within ``pong_timeout_s`` (60 s); more than ``max_incoming_per_s`` (5) incoming
messages per second (text, ping and pong frames) or more than ``max_streams`` (1024) streams on a
connection -> disconnected; after ``lifetime_s`` (24 h) a ``serverShutdown`` event, then disconnection.

Faults: ``latency_ms`` delays every outgoing message by that much *without serialising the
stream* (each frame is stamped when queued and sent once it is due, so the delay is a latency, not a
slow pipe); abrupt drops every N seconds or N messages; malformed extra frames (real events are
never replaced).

Events are built as bytes from the rendered REST rows (no dict, no JSON encoder on the hot path)
and sent as text frames without re-encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from trader.config import WsReplayConfig
from trader.models import BINANCE_INTERVALS
from trader.replay import market

if TYPE_CHECKING:
    from trader.replay.clock import ReplayClock
    from trader.replay.dataset import ReplayDataset, Series

__all__ = ["StreamHub", "depth_event", "error_frame", "kline_event", "parse_stream", "partial_depth_event", "trade_event"]

from trader.timeutil import DAY_MS as _DAY_MS

_SIMPLE = {"ticker": "ticker", "miniticker": "miniTicker", "bookticker": "bookTicker", "trade": "trade", "aggtrade": "aggTrade"}
_DEPTH_KINDS = {"depth": 0, "depth5": 5, "depth10": 10, "depth20": 20}  # kind -> levels (0: diff depth)


def parse_stream(name: str) -> tuple[str, str, str] | None:
    """``"btcusdt@kline_1h"`` -> ``("BTCUSDT", "kline", "1h")``; ``"ethusdt@bookTicker"`` ->
    ``("ETHUSDT", "bookTicker", "")``; ``"btcusdt@depth@100ms"`` -> ``("BTCUSDT", "depth", "100")``;
    ``"btcusdt@depth5"`` -> ``("BTCUSDT", "depth5", "1000")``; None for anything else. Pure (does
    not check the data)."""
    sym, sep, kind = name.partition("@")
    if not sep or not sym or sym != sym.lower():
        return None
    if kind.startswith("kline_"):
        interval = kind[len("kline_") :]
        return (sym.upper(), "kline", interval) if interval in BINANCE_INTERVALS else None
    if kind.startswith("markPrice"):  # USD-M: every 3 s, or every 1 s with @1s
        speed = kind[len("markPrice"):]
        cadence = {"": "3000", "@1s": "1000"}.get(speed)
        return (sym.upper(), "markPrice", cadence) if cadence else None
    if kind.startswith("depth"):
        book, _, speed = kind.partition("@")
        cadence = {"": "1000", "1000ms": "1000", "100ms": "100"}.get(speed)
        if cadence is None or book not in _DEPTH_KINDS:
            return None
        return sym.upper(), book, cadence
    simple = _SIMPLE.get(kind.lower())
    if simple is None or kind != simple:
        return None
    return sym.upper(), simple, ""


def _fast(parsed: tuple[str, str, str] | None) -> bool:
    """Streams updated every 100 ms of replay time (the hub then ticks faster)."""
    return parsed is not None and (parsed[2] == "100" or parsed[1] in ("trade", "aggTrade"))


def depth_event(symbol: str, now_ms: int, first_id: int, last_id: int, bids: list[list[str]], asks: list[list[str]]) -> bytes:
    """Binance ``depthUpdate`` (Diff. Depth Stream): ids ``U = first_id``, ``u = last_id``."""
    return orjson.dumps({"e": "depthUpdate", "E": now_ms, "s": symbol, "U": first_id, "u": last_id, "b": bids, "a": asks})


def partial_depth_event(book: market.Book, now_ms: int, levels: int) -> bytes:
    """Binance Partial Book Depth payload: ``{"lastUpdateId", "bids", "asks"}``, the top ``levels``."""
    return orjson.dumps({
        "lastUpdateId": market.update_id(now_ms),
        "bids": [[book.price(k), book.qty] for k in book.bids(levels)],
        "asks": [[book.price(k), book.qty] for k in book.asks(levels)],
    })


def trade_event(series: Series, kind: str, t0_ms: int, t1_ms: int) -> bytes | None:
    """A synthetic ``trade`` / ``aggTrade`` event for ``(t0, t1]`` (:func:`trader.replay.market.trade_tape`):
    one print per update step of the path, its quantity the volume traded in it. None if nothing traded."""
    tape = market.trade_tape(series, t0_ms, t1_ms)
    if tape is None:
        return None
    first, last, qty, price, maker = tape
    pd, qd = series.decimals(series.visible(t1_ms) - 1)
    p, q = market.fmt_price(price, pd), market.fmt_qty(qty, qd)
    if kind == "trade":
        doc = {"e": "trade", "E": t1_ms, "s": series.symbol, "t": last, "p": p, "q": q, "T": t1_ms, "m": maker, "M": True}
    else:
        doc = {"e": "aggTrade", "E": t1_ms, "s": series.symbol, "a": last, "p": p, "q": q, "f": first, "l": last, "T": t1_ms, "m": maker, "M": True}
    return orjson.dumps(doc)


def error_frame(code: int, msg: str, rid: Any = None) -> bytes:
    """A control-message error exactly as Binance's stream servers send it:
    ``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}``."""
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": rid})


def _unsupported_msg(bad: list[str]) -> str:
    return f"Invalid request: unsupported stream name(s): {', '.join(bad[:10])}"


def _closed_fields(series: Series, index: int) -> list[bytes]:
    """The 12 JSON fields of a closed row, as rendered for REST (strings keep their quotes)."""
    return series.rows_json(index, index + 1)[1:-1].split(b",")


def _forming_fields(series: Series, index: int, now_ms: int) -> list[bytes]:
    row = market.forming_row(series, index, now_ms)
    return [str(x).encode() if isinstance(x, int) else b'"' + x.encode() + b'"' for x in row]


def kline_event(series: Series, index: int, event_ms: int, closed: bool, now_ms: int | None = None) -> bytes:
    """Binance ``kline`` event (bytes) for kline ``index`` of ``series``.

    Closed klines carry the recorded values (the same strings as REST); a forming one carries
    :func:`trader.replay.market.forming_row` values at ``now_ms`` (default ``event_ms``). Trade ids
    ``f``/``L`` are running trade counts.
    """
    f = _closed_fields(series, index) if closed else _forming_fields(series, index, event_ms if now_ms is None else now_ms)
    n = int(f[8])
    before = int(series.trades_cumsum[index - 1]) if index > 0 else 0
    sym = series.symbol.encode()
    return b"".join(
        (
            b'{"e":"kline","E":', str(int(event_ms)).encode(), b',"s":"', sym, b'","k":{"t":', f[0], b',"T":', f[6],
            b',"s":"', sym, b'","i":"', series.interval.encode(), b'","f":', str(before + 1 if n else -1).encode(),
            b',"L":', str(before + n if n else -1).encode(), b',"o":', f[1], b',"c":', f[4], b',"h":', f[2], b',"l":', f[3],
            b',"v":', f[5], b',"n":', f[8], b',"x":', b"true" if closed else b"false", b',"q":', f[7], b',"V":', f[9],
            b',"Q":', f[10], b',"B":"0"}}',
        )
    )


def ticker_event(series: Series, now_ms: int, mini: bool, spread_bps: float) -> bytes | None:
    """``24hrTicker`` / ``24hrMiniTicker`` event (bytes) at ``now_ms``; None before the data starts."""
    stats = market.window_stats(series, now_ms - _DAY_MS, now_ms)
    if stats is None:
        return None
    doc = market.ticker_doc(series, stats, full=not mini, spread_bps=spread_bps)
    if mini:
        ev: dict[str, Any] = {"e": "24hrMiniTicker", "E": now_ms, "s": series.symbol, "c": doc["lastPrice"], "o": doc["openPrice"],
                              "h": doc["highPrice"], "l": doc["lowPrice"], "v": doc["volume"], "q": doc["quoteVolume"]}
    else:
        ev = {"e": "24hrTicker", "E": now_ms, "s": series.symbol, "p": doc["priceChange"], "P": doc["priceChangePercent"],
              "w": doc["weightedAvgPrice"], "x": doc["prevClosePrice"], "c": doc["lastPrice"], "Q": doc["lastQty"],
              "b": doc["bidPrice"], "B": doc["bidQty"], "a": doc["askPrice"], "A": doc["askQty"], "o": doc["openPrice"],
              "h": doc["highPrice"], "l": doc["lowPrice"], "v": doc["volume"], "q": doc["quoteVolume"], "O": doc["openTime"],
              "C": doc["closeTime"], "F": doc["firstId"], "L": doc["lastId"], "n": doc["count"]}
    return orjson.dumps(ev)


def book_ticker_event(series: Series, now_ms: int, spread_bps: float) -> bytes | None:
    """``bookTicker`` event (bytes): ``{"u": update id, "s", "b", "B", "a", "A"}``."""
    if series.visible(now_ms) == 0:
        return None
    doc = market.book_ticker(series, now_ms, spread_bps)
    u = market.update_id(now_ms)
    return orjson.dumps({"u": u, "s": doc["symbol"], "b": doc["bidPrice"], "B": doc["bidQty"], "a": doc["askPrice"], "A": doc["askQty"]})


class _Conn:
    """One client connection: its subscriptions, time-stamped outgoing queue and counters."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, combined: bool, cfg: WsReplayConfig, rng: random.Random) -> None:
        self.ws = ws
        self.request = request
        self.combined = combined
        self.cfg = cfg
        self.rng = rng
        self.streams: set[str] = set()
        self.user_keys: dict[str, Callable[[], None]] = {}  # listen key -> detach (user data on this connection)
        self.queue: asyncio.Queue[tuple[float, bytes, bool]] = asyncio.Queue()
        self.incoming: deque[float] = deque()
        self.last_pong = time.monotonic()
        self.sent_events = 0
        self.closed = False
        self._latency = cfg.latency_ms / 1000.0

    def put(self, frame: bytes, event: bool = False) -> None:
        self.queue.put_nowait((time.monotonic() + self._latency, frame, event))

    def push(self, name: str, event: bytes) -> None:
        if self.closed:
            return
        frame = b'{"stream":"' + name.encode() + b'","data":' + event + b"}" if self.combined else event
        self.put(frame, True)
        if self.cfg.malformed_rate and self.rng.random() < self.cfg.malformed_rate:
            self.put(frame[: max(1, len(frame) // 2)])  # a truncated, unparsable frame


class StreamHub:
    """Turns the replay clock into market-stream events for every subscribed stream.

    Args:
        dataset: recorded klines.
        clock: the replay clock (the hub wakes when it is stepped).
        cfg: the ``replay.ws`` config section.
        spread_bps: synthetic bid/ask spread (``replay.spread_bps``).
    """

    def __init__(self, dataset: ReplayDataset, clock: ReplayClock, cfg: WsReplayConfig | None = None, spread_bps: float = 2.0) -> None:
        self.dataset = dataset
        self.clock = clock
        self.cfg = cfg or WsReplayConfig()
        self.spread_bps = spread_bps
        self._rng = random.Random(self.cfg.seed)
        self.subs: dict[str, set[_Conn]] = {}
        self.last_ms: dict[str, int] = {}
        self._resolved: dict[str, tuple[str, str, str] | None] = {}
        self._depth_u: dict[str, int] = {}  # diff-depth stream -> the last update id its events covered
        self._fast = 0  # subscribed streams with a 100 ms cadence
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connections: set[_Conn] = set()
        self.events_sent = 0
        self.connections_total = 0
        self.dropped = 0
        clock.listeners.append(self._wake.set)
        #: the venue's user data (set by the exchange): listen keys are accepted as stream names
        self.user_data: Any = None
        #: USD-M ``markPriceUpdate`` events (set by the exchange's futures venue): (symbol, now ms) -> bytes
        self.mark_price_event: Any = None

    # ------------------------------------------------------------------ streams and events

    def resolve(self, name: str) -> tuple[str, str, str] | None:
        """:func:`parse_stream` plus a check that the venue has the data for it (cached per name)."""
        if name in self._resolved:
            return self._resolved[name]
        parsed = parse_stream(name)
        if parsed is not None:
            symbol, kind, interval = parsed
            ok = self.dataset.has(symbol, interval) if kind == "kline" else symbol in self.dataset.symbols
            if kind == "markPrice" and self.mark_price_event is None:
                ok = False
            parsed = parsed if ok else None
        self._resolved[name] = parsed
        return parsed

    def _market_series(self, symbol: str) -> Series:
        return self.dataset.series(symbol, self.dataset.finest(symbol))

    def advance(self, name: str, now: int) -> list[bytes]:
        """Events of stream ``name`` between its last emission and ``now`` (replay ms), serialised."""
        parsed = self.resolve(name)
        last = self.last_ms.get(name, now)
        self.last_ms[name] = now
        if parsed is None or now <= last:
            return []
        symbol, kind, interval = parsed
        out: list[bytes] = []
        if kind == "kline":
            series = self.dataset.series(symbol, interval)
            ot = series.open_time_ms
            step = series.interval_ms
            lo = int(np.searchsorted(ot + step, last, side="right"))
            hi = int(np.searchsorted(ot + step, now, side="right"))
            for i in range(lo, hi):  # every kline that closed in (last, now]: x = true, recorded values
                out.append(kline_event(series, i, int(ot[i]) + step, closed=True))
            idx = int(np.searchsorted(ot, now, side="right")) - 1
            upd = self.cfg.update_ms
            if idx >= 0 and now < int(ot[idx]) + step and (now // upd > last // upd or hi > lo):
                out.append(kline_event(series, idx, now, closed=False))
            return out
        series = self._market_series(symbol)
        if kind.startswith("depth"):
            cadence = int(interval)
            if now // cadence <= last // cadence:
                return out
            levels = _DEPTH_KINDS[kind]
            if levels:
                out.append(partial_depth_event(market.book_at(series, now, self.spread_bps), now, levels))
                return out
            u0 = self._depth_u.get(name, market.update_id(last))  # the last id this stream covered
            u1 = market.update_id(now)
            if u1 > u0:
                bids, asks = market.depth_diff(series, u0 * market.BOOK_UPDATE_MS, now, self.spread_bps)
                if bids or asks:  # nothing changed: no event, and the next one still starts at u0 + 1
                    self._depth_u[name] = u1
                    out.append(depth_event(symbol, now, u0 + 1, u1, bids, asks))
                else:
                    self._depth_u[name] = u0
            return out
        if kind in ("trade", "aggTrade"):
            if now // market.BOOK_UPDATE_MS > last // market.BOOK_UPDATE_MS:
                ev = trade_event(series, kind, last, now)
                if ev is not None:
                    out.append(ev)
            return out
        if kind == "markPrice":
            cadence = int(interval)
            if now // cadence > last // cadence and self.mark_price_event is not None:
                out.append(self.mark_price_event(symbol, now))
            return out
        if kind in ("ticker", "miniTicker"):
            if now // 1000 > last // 1000:
                ev = ticker_event(series, now, kind == "miniTicker", self.spread_bps)
                if ev is not None:
                    out.append(ev)
        elif now // self.cfg.update_ms > last // self.cfg.update_ms:
            ev = book_ticker_event(series, now, self.spread_bps)
            if ev is not None:
                out.append(ev)
        return out

    async def _tick(self) -> None:
        now = self.clock.now_ms()
        for k, (name, conns) in enumerate(list(self.subs.items())):
            if not conns:
                continue
            for ev in self.advance(name, now):
                for conn in list(conns):
                    conn.push(name, ev)
                    self.events_sent += 1
            if k % 32 == 31:
                await asyncio.sleep(0)  # let the connections send what is built so far

    async def run(self) -> None:
        """Emit events as the replay clock moves, until cancelled."""
        while True:
            self._wake.clear()  # before the tick: a step during the tick wakes the next one
            await self._tick()
            speed = self.clock.speed
            cadence = 100 if self._fast else min(self.cfg.update_ms, 1000)
            timeout = None if speed == 0 else max(cadence / speed / 1000.0 / 4, 0.005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def start(self) -> None:
        """Start the event loop task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="replay-stream-hub")

    async def stop(self) -> None:
        """Stop emitting and disconnect every client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for conn in list(self.connections):
            conn.closed = True
            with contextlib.suppress(Exception):
                await conn.ws.close()

    # ------------------------------------------------------------------ subscriptions

    def _subscribe(self, conn: _Conn, names: list[str]) -> bool:
        for name in names:
            if name in conn.streams:
                continue
            conn.streams.add(name)
            if not self.subs.get(name):
                self.subs[name] = set()
                self.last_ms[name] = self.clock.now_ms()
                self._depth_u.pop(name, None)
                self._fast += _fast(self.resolve(name))
            self.subs[name].add(conn)
        return len(conn.streams) <= self.cfg.max_streams

    def _unsubscribe(self, conn: _Conn, names: list[str]) -> None:
        for name in names:
            conn.streams.discard(name)
            subs = self.subs.get(name)
            if subs is not None and conn in subs:
                subs.discard(conn)
                if not subs:
                    self._fast -= _fast(self.resolve(name))

    def unsupported(self, names: list[str]) -> list[str]:
        """The names the venue cannot serve (unknown kind, symbol or interval; not a live listen key)."""
        return [n for n in names if self.resolve(n) is None and not self._is_listen_key(n)]

    def _is_listen_key(self, name: str) -> bool:
        return self.user_data is not None and self.user_data.is_listen_key(name)

    def _attach_user_data(self, conn: _Conn, keys: list[str]) -> None:
        """User data of these listen keys on this connection (raw events; ``stream`` = the key when combined)."""
        for key in keys:
            if key not in conn.user_keys:
                conn.user_keys[key] = self.user_data.attach(key, lambda raw, k=key: conn.push(k, raw), conn.ws, conn.request)

    def _detach_user_data(self, conn: _Conn, keys: list[str]) -> None:
        for key in keys:
            detach = conn.user_keys.pop(key, None)
            if detach is not None:
                detach()

    # ------------------------------------------------------------------ the connection

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``/ws``, ``/ws/<streams>`` and ``/stream?streams=...``."""
        combined = request.path.startswith("/stream")
        if combined:
            initial = [s for s in request.query.get("streams", "").split("/") if s]
        else:
            # tokens without "@" are not stream names: Binance accepts /ws/<anything> and clients rely on it
            # (ccxt.pro connects to /ws/0, then SUBSCRIBEs)
            tail = request.match_info.get("streams", "")
            initial = [s for s in tail.split("/") if "@" in s or self._is_listen_key(s)]
        bad = self.unsupported(initial) if len(initial) <= self.cfg.max_streams else []
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, compress=False)  # no permessage-deflate
        await ws.prepare(request)
        conn = _Conn(ws, request, combined, self.cfg, self._rng)
        self.connections.add(conn)
        self.connections_total += 1
        if bad:  # the others are served; the client hears at once which names it will never get
            conn.put(error_frame(2, _unsupported_msg(bad)))
            initial = [n for n in initial if n not in set(bad)]
        keys = [n for n in initial if self._is_listen_key(n)]
        self._attach_user_data(conn, keys)
        initial = [n for n in initial if n not in keys]
        if not self._subscribe(conn, initial):
            await self._drop(conn, 1008, "too many streams")
            return ws
        tasks = [asyncio.create_task(self._sender(conn)), asyncio.create_task(self._pinger(conn))]
        tasks.append(asyncio.create_task(self._lifetime(conn)))
        if self.cfg.drop_every_s:
            tasks.append(asyncio.create_task(self._drop_after(conn, self.cfg.drop_every_s)))
        self._wake.set()
        try:
            async for msg in ws:
                if not self._count_incoming(conn):
                    await self._drop(conn, 1008, "too many messages")
                    break
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = time.monotonic()
                elif msg.type == WSMsgType.TEXT:
                    reply = self._control(conn, msg.data)
                    if reply is None:
                        await self._drop(conn, 1008, "too many streams")
                        break
                    if "code" in reply:  # an error: Binance wraps it as {"error": {"code", "msg"}, "id"}
                        conn.put(error_frame(reply["code"], reply["msg"], reply.get("id")))
                    else:
                        conn.put(orjson.dumps(reply))
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            conn.closed = True
            self._detach_user_data(conn, list(conn.user_keys))
            self._unsubscribe(conn, list(conn.streams))
            self.connections.discard(conn)
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    def _count_incoming(self, conn: _Conn) -> bool:
        now = time.monotonic()
        q = conn.incoming
        q.append(now)
        while q and now - q[0] > 1.0:
            q.popleft()
        return len(q) <= self.cfg.max_incoming_per_s

    def _control(self, conn: _Conn, text: str) -> dict[str, Any] | None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return {"code": 3, "msg": f"Invalid JSON: {exc}", "id": None}
        if not isinstance(req, dict) or "method" not in req:
            return {"code": 2, "msg": "Invalid request: missing field `method`", "id": None}
        rid = req.get("id")
        if rid is not None and not isinstance(rid, (int, str)):
            return {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer", "id": None}
        method = req["method"]
        params = req.get("params", [])
        if method == "SUBSCRIBE" or method == "UNSUBSCRIBE":
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return {"code": 2, "msg": "Invalid request: params must be a list of stream names", "id": rid}
            if method == "SUBSCRIBE":
                if len(conn.streams | set(params)) > self.cfg.max_streams:
                    return None  # over the limit: Binance disconnects, whatever the names
                bad = self.unsupported(params)
                if bad:
                    return {"code": 2, "msg": _unsupported_msg(bad), "id": rid}
                keys = [p for p in params if self._is_listen_key(p)]
                self._attach_user_data(conn, keys)
                if not self._subscribe(conn, [p for p in params if p not in keys]):
                    return None
                self._wake.set()
            else:
                self._detach_user_data(conn, params)
                self._unsubscribe(conn, params)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams | set(conn.user_keys)), "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not params or params[0] != "combined":
                return {"code": 0, "msg": "Unknown property", "id": rid}
            if method == "GET_PROPERTY":
                return {"result": conn.combined, "id": rid}
            if len(params) != 2 or not isinstance(params[1], bool):
                return {"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid}
            conn.combined = params[1]
            return {"result": None, "id": rid}
        return {
            "code": 2,
            "msg": f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
            "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
            "id": rid,
        }

    async def _sender(self, conn: _Conn) -> None:
        while True:
            due, frame, event = await conn.queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # injected latency: this frame is due later; later frames are not delayed more
            if conn.closed:
                return
            await conn.ws.send_frame(frame, WSMsgType.TEXT)
            if event:
                conn.sent_events += 1
                n = self.cfg.drop_every_messages
                if n and conn.sent_events % n == 0:
                    await self._drop(conn, None, "fault: drop after messages")
                    return

    async def _pinger(self, conn: _Conn) -> None:
        while not conn.closed:
            await asyncio.sleep(self.cfg.ping_interval_s)
            if time.monotonic() - conn.last_pong > self.cfg.pong_timeout_s:
                await self._drop(conn, 1008, "pong timeout")
                return
            with contextlib.suppress(Exception):
                await conn.ws.ping(b"")

    async def _lifetime(self, conn: _Conn) -> None:
        await asyncio.sleep(self.cfg.lifetime_s)
        conn.put(orjson.dumps({"e": "serverShutdown", "E": self.clock.now_ms()}))
        await asyncio.sleep(0.05 + self.cfg.latency_ms / 1000.0)
        await self._drop(conn, 1001, "connection lifetime reached")

    async def _drop_after(self, conn: _Conn, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._drop(conn, None, "fault: drop after seconds")

    async def _drop(self, conn: _Conn, code: int | None, reason: str) -> None:
        """Close (``code``) or, for injected faults (``code=None``), abort the TCP connection abruptly."""
        if conn.closed:
            return
        conn.closed = True
        self.dropped += 1
        if code is None:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
            return
        with contextlib.suppress(Exception):
            await conn.ws.close(code=code, message=reason.encode())
