"""WebSocket market streams of the replay exchange: ``<symbol>@kline_<interval>``, as Binance serves them.

Endpoints (Binance spot "WebSocket Streams", general WSS information):

- ``/ws/<stream>`` (raw: events as they are; more streams with ``SUBSCRIBE``), ``/ws``;
- ``/stream?streams=<a>/<b>`` (combined: ``{"stream": name, "data": event}``);
- control messages ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` /
  ``GET_PROPERTY`` answered ``{"result": ..., "id": N}``; errors ``{"code": 2, "msg": ..., "id": N}``.

Events are driven by the replay clock: while a kline forms, one event every ``update_ms`` of replay
time (Binance: 2000 ms) with the forming values of :func:`~trader.exchange.replay.server.forming_row`;
when it closes, one event with ``"x": true`` and the recorded values (strings exactly as the REST
klines). When the clock jumps (a test stepping it), every kline that closed in the jump gets its
``x: true`` event, in order, then one forming update: closed klines are never skipped or invented.

Limits enforced as Binance does: a ping frame every ``ping_interval_s`` (20 s) and disconnection
without a pong within ``pong_timeout_s`` (60 s); more than ``max_incoming_per_s`` (5) incoming
messages per second (text, ping and pong frames) or more than ``max_streams`` (1024) streams on a
connection -> disconnected; after ``lifetime_s`` (24 h) a ``serverShutdown`` event, then disconnection.

Fault injection: per-message latency, abrupt drops every N seconds or every N messages, and
malformed frames (extra garbage frames; real events are never replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from trader.models import BINANCE_INTERVALS

if TYPE_CHECKING:
    from trader.exchange.replay.clock import ReplayClock
    from trader.exchange.replay.dataset import ReplayDataset, Series

__all__ = ["StreamHub", "WsConfig", "kline_event"]


@dataclass(frozen=True)
class WsConfig:
    """Stream behaviour and faults of the replay exchange (``replay.ws`` in the config).

    Attributes:
        update_ms: replay ms between updates of a forming kline (Binance: 2000).
        ping_interval_s, pong_timeout_s: server pings and how long it waits for a pong (wall s).
        max_incoming_per_s: incoming messages per second before disconnection.
        max_streams: streams per connection before disconnection.
        lifetime_s: connection lifetime before ``serverShutdown`` (wall s).
        latency_ms: fault: delay of every outgoing message (wall ms).
        drop_every_s: fault: abort every connection after this many wall seconds (0 = never).
        drop_every_messages: fault: abort a connection after this many sent events (0 = never).
        malformed_rate: fault: probability of an extra malformed frame after an event.
        seed: RNG seed of the faults.
    """

    update_ms: int = 2000
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    max_incoming_per_s: int = 5
    max_streams: int = 1024
    lifetime_s: float = 86_400.0
    latency_ms: float = 0.0
    drop_every_s: float = 0.0
    drop_every_messages: int = 0
    malformed_rate: float = 0.0
    seed: int = 0


def kline_event(series: Series, index: int, event_ms: int, closed: bool, now_ms: int | None = None) -> dict[str, Any]:
    """Binance kline event for candle ``index`` of ``series``.

    Closed candles carry the recorded values (the same strings as REST); a forming one carries
    :func:`forming_row` values at ``now_ms``. Trade ids ``f``/``L`` are running trade counts.
    """
    from trader.exchange.replay.server import forming_row

    if closed:
        row = orjson.loads(b"[" + series.rows_json(index, index + 1) + b"]")[0]
    else:
        row = forming_row(series, index, event_ms if now_ms is None else now_ms)
    before = int(series.trades_cumsum[index - 1]) if index > 0 else 0
    n = int(row[8])
    return {
        "e": "kline",
        "E": int(event_ms),
        "s": series.symbol,
        "k": {
            "t": int(row[0]),
            "T": int(row[6]),
            "s": series.symbol,
            "i": series.interval,
            "f": before + 1 if n else -1,
            "L": before + n if n else -1,
            "o": row[1],
            "c": row[4],
            "h": row[2],
            "l": row[3],
            "v": row[5],
            "n": n,
            "x": closed,
            "q": row[7],
            "V": row[9],
            "Q": row[10],
            "B": "0",
        },
    }


class _Conn:
    """One client connection: its subscriptions, outgoing queue and counters."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, combined: bool, cfg: WsConfig, rng: random.Random) -> None:
        self.ws = ws
        self.request = request
        self.combined = combined
        self.cfg = cfg
        self.rng = rng
        self.streams: set[str] = set()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.incoming: deque[float] = deque()
        self.last_pong = time.monotonic()
        self.sent_events = 0
        self.closed = False

    def push(self, name: str, event: bytes) -> None:
        if self.closed:
            return
        frame = b'{"stream":"' + name.encode() + b'","data":' + event + b"}" if self.combined else event
        self.queue.put_nowait(frame)
        if self.cfg.malformed_rate and self.rng.random() < self.cfg.malformed_rate:
            self.queue.put_nowait(frame[: max(1, len(frame) // 2)])  # a truncated, unparsable frame


class StreamHub:
    """Turns the replay clock into kline events for every subscribed stream.

    Args:
        dataset: recorded klines.
        clock: the replay clock (the hub wakes when it is stepped).
        cfg: stream behaviour and faults.
    """

    def __init__(self, dataset: ReplayDataset, clock: ReplayClock, cfg: WsConfig | None = None) -> None:
        self.dataset = dataset
        self.clock = clock
        self.cfg = cfg or WsConfig()
        self._rng = random.Random(self.cfg.seed)
        self.subs: dict[str, set[_Conn]] = {}
        self.last_ms: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connections: set[_Conn] = set()
        self.events_sent = 0
        self.connections_total = 0
        self.dropped = 0
        clock.listeners.append(self._wake.set)

    # ------------------------------------------------------------------ streams and events

    def parse_stream(self, name: str) -> tuple[str, str] | None:
        """``"btcusdt@kline_1h"`` -> ``("BTCUSDT", "1h")`` if the replay has that series, else None."""
        sym, sep, kind = name.partition("@")
        if not sep or not kind.startswith("kline_") or sym != sym.lower():
            return None
        symbol, interval = sym.upper(), kind[len("kline_") :]
        if interval not in BINANCE_INTERVALS or not self.dataset.has(symbol, interval):
            return None
        return symbol, interval

    def advance(self, name: str, now: int) -> list[bytes]:
        """Events of stream ``name`` between its last emission and ``now`` (replay ms), serialised."""
        parsed = self.parse_stream(name)
        last = self.last_ms.get(name, now)
        self.last_ms[name] = now
        if parsed is None or now <= last:
            return []
        series = self.dataset.series(*parsed)
        ot = series.open_time_ms
        step = series.interval_ms
        out = []
        lo = int(np.searchsorted(ot + step, last, side="right"))
        hi = int(np.searchsorted(ot + step, now, side="right"))
        for i in range(lo, hi):  # every kline that closed in (last, now]: x = true, recorded values
            out.append(orjson.dumps(kline_event(series, i, int(ot[i]) + step, closed=True)))
        idx = int(np.searchsorted(ot, now, side="right")) - 1
        upd = self.cfg.update_ms
        if idx >= 0 and now < int(ot[idx]) + step and (now // upd > last // upd or hi > lo):
            out.append(orjson.dumps(kline_event(series, idx, now, closed=False)))
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
            timeout = None if speed == 0 else max(self.cfg.update_ms / speed / 1000.0 / 4, 0.005)
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
            self.subs[name].add(conn)
        return len(conn.streams) <= self.cfg.max_streams

    def _unsubscribe(self, conn: _Conn, names: list[str]) -> None:
        for name in names:
            conn.streams.discard(name)
            self.subs.get(name, set()).discard(conn)

    # ------------------------------------------------------------------ the connection

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``/ws``, ``/ws/<streams>`` and ``/stream?streams=...``."""
        combined = request.path.startswith("/stream")
        if combined:
            initial = [s for s in request.query.get("streams", "").split("/") if s]
        else:
            tail = request.match_info.get("streams", "")
            initial = [s for s in tail.split("/") if s]
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Conn(ws, request, combined, self.cfg, self._rng)
        self.connections.add(conn)
        self.connections_total += 1
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
                    conn.queue.put_nowait(orjson.dumps(reply))
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            conn.closed = True
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
            return {"code": 3, "msg": f"Invalid JSON: {exc}"}
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
                if not self._subscribe(conn, params):
                    return None
                self._wake.set()
            else:
                self._unsubscribe(conn, params)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": rid}
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
        latency = self.cfg.latency_ms / 1000.0
        while True:
            frame = await conn.queue.get()
            if latency:
                await asyncio.sleep(latency)  # injected network latency of this message
            if conn.closed:
                return
            await conn.ws.send_str(frame.decode())
            if frame.startswith(b'{"e":"kline"') or frame.startswith(b'{"stream"'):
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
        conn.queue.put_nowait(orjson.dumps({"e": "serverShutdown", "E": self.clock.now_ms()}))
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
