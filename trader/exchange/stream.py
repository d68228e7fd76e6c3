"""WebSocket kline streams (websockets): combined connections, batched subscriptions, reconnects.

Rules followed (Binance spot "WebSocket Streams", general WSS information and limits):

- one combined-stream connection (``/stream``) per at most ``max_streams`` streams (Binance: 1024);
- ``SUBSCRIBE`` in batches of ``batch`` streams, at most ``control_per_s`` control messages per
  second (aiolimiter; Binance disconnects above 5 incoming messages per second, pongs included);
- pings are answered with pongs by websockets; the client sends no pings of its own;
- no permessage-deflate: per-frame compression of ~600-byte events costs more CPU and latency than
  the bandwidth it saves;
- silence longer than ``silence_s`` (default 60 s; kline streams update every 2 s) means a dead
  connection: close and reconnect;
- reconnects back off exponentially with full jitter up to ``backoff_max_s``;
- before the server's 24 h cut (``rotate_after_s``), or on a ``serverShutdown`` event, a new
  connection is opened and subscribed; the old one is drained and closed only once the new one
  answers — no event is lost in the switch (duplicates are harmless: closed klines dedupe by open time);
- after every reconnect the handler's ``on_reconnect`` runs (REST backfill of missed closed klines).

Malformed frames are counted (``stats.malformed``) and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
import websockets
from aiolimiter import AsyncLimiter

from trader.config import StreamConfig

__all__ = ["KlineHandler", "KlineStream", "StreamStats", "parse_kline_message"]

KlineHandler = Callable[[str, str, np.ndarray, bool, int], None]
ReconnectHandler = Callable[[list[tuple[str, str]]], Awaitable[None]]


@dataclass
class StreamStats:
    """Counters of a :class:`KlineStream`."""

    connections: int = 0
    reconnects: int = 0
    rotations: int = 0
    messages: int = 0
    kline_events: int = 0
    closed_events: int = 0
    malformed: int = 0
    control_messages: int = 0
    control_times: list[float] = field(default_factory=list)


def parse_kline_message(raw: str | bytes) -> tuple[str, str, np.ndarray, bool, int] | dict[str, object] | None:
    """Parse one frame. Pure.

    Returns:
        ``(symbol, interval, kline (11,), closed, event_ms)`` for a kline event (raw or combined) —
        the kline as one column of a kline block (:mod:`trader.models` order) —, the
        decoded dict for anything else that is valid JSON (control replies, ``serverShutdown``),
        or None if the frame is malformed.
    """
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    data = msg.get("data", msg) if "stream" in msg else msg
    if not isinstance(data, dict):
        return None
    if data.get("e") != "kline":
        return data
    try:
        k = data["k"]
        # the stream's fields in kline-block order: open_time, open, high, low, close, volume,
        # close_time, quote_volume, trades, taker_buy_base_volume, taker_buy_quote_volume
        row = np.array(
            (k["t"], float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]), k["T"],
             float(k["q"]), k["n"], float(k["V"]), float(k["Q"])),
            dtype=np.float64,
        )
        return str(k["s"]), str(k["i"]), row, bool(k["x"]), int(data["E"])
    except (KeyError, TypeError, ValueError):
        return None


class KlineStream:
    """Kline streams for many (symbol, interval) pairs over as few connections as allowed.

    Args:
        ws_url: WebSocket base URL (``wss://stream.binance.com:9443`` or the replay's ``ws://...``).
        series: ``[(symbol, interval), ...]``.
        on_kline: called for every kline event as ``on_kline(symbol, interval, row, closed, event_ms)``.
        on_reconnect: awaited after every reconnect with the series of that connection (backfill).
        cfg: stream settings (the ``stream`` config section).
    """

    def __init__(
        self,
        ws_url: str,
        series: Sequence[tuple[str, str]],
        on_kline: KlineHandler,
        on_reconnect: ReconnectHandler | None = None,
        cfg: StreamConfig | None = None,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.series = list(series)
        self.on_kline = on_kline
        self.on_reconnect = on_reconnect
        self.cfg = cfg or StreamConfig()
        self.stats = StreamStats()
        self._stop = asyncio.Event()
        # capacity 1, one token every 1/rate s: no 1-second window ever holds more than `rate` messages
        # (a bucket of `rate` tokens would allow a burst plus the rate: up to 2x in one second)
        self._limiter = AsyncLimiter(1, 1.0 / self.cfg.control_per_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._next_id = 0
        self.ready = asyncio.Event()
        self._ready_chunks = 0
        self.last_error: str | None = None  #: why the last connection attempt failed (for a clear error)
        #: set when the server refused the connection for good (HTTP 4xx but 429/418): ``ready`` is set too
        self.fatal: str | None = None

    @staticmethod
    def stream_name(symbol: str, interval: str) -> str:
        """Binance stream name, e.g. ``btcusdt@kline_1h``."""
        return f"{symbol.lower()}@kline_{interval}"

    def chunks(self) -> list[list[tuple[str, str]]]:
        """Series split into connections of at most ``max_streams``."""
        n = self.cfg.max_streams
        return [self.series[i : i + n] for i in range(0, len(self.series), n)]

    async def start(self) -> None:
        """Start one task per connection; returns at once (``ready`` is set when all are subscribed)."""
        for chunk in self.chunks():
            self._tasks.append(asyncio.create_task(self._run_chunk(chunk)))

    async def add(self, series: Sequence[tuple[str, str]]) -> None:
        """Stream more series (a config reload's universe additions): new connections of at most
        ``max_streams`` each, opened and subscribed as at start (waited for, up to the connect deadline);
        series already streamed are skipped."""
        new = [s for s in series if s not in set(self.series)]
        if not new or self._stop.is_set():
            return
        self.series.extend(new)
        n = self.cfg.max_streams
        opened = []
        for i in range(0, len(new), n):
            ev = asyncio.Event()
            opened.append(ev)
            self._tasks.append(asyncio.create_task(self._run_chunk(new[i : i + n], ev)))
        try:  # returns once the new connections are subscribed (their events are not missed)
            async with asyncio.timeout(self.cfg.connect_deadline_s):
                await asyncio.gather(*(ev.wait() for ev in opened))
        except TimeoutError:
            pass  # still connecting: they subscribe when they can, and the lag watchdog backfills

    async def stop(self) -> None:
        """Close every connection and wait for the tasks."""
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    # ------------------------------------------------------------------ one connection's life

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2**attempt))

    async def _open(self, chunk: list[tuple[str, str]]) -> websockets.ClientConnection:
        ws = await asyncio.wait_for(
            websockets.connect(
                f"{self.ws_url}/stream",
                ping_interval=None,  # Binance pings; we answer (websockets does it for us)
                max_size=2**22,
                open_timeout=self.cfg.open_timeout_s,
                compression=None,  # kline frames are ~600 bytes: deflate costs more CPU (both ends) than it saves
            ),
            self.cfg.open_timeout_s,
        )
        try:
            return await self._subscribe_all(ws, chunk)
        except BaseException:
            await _close(ws)
            raise

    async def _subscribe_all(self, ws: websockets.ClientConnection, chunk: list[tuple[str, str]]) -> websockets.ClientConnection:
        self.stats.connections += 1
        names = [self.stream_name(s, i) for s, i in chunk]
        pending: set[int] = set()
        for i in range(0, len(names), self.cfg.batch):
            async with self._limiter:
                self._next_id += 1
                pending.add(self._next_id)
                self.stats.control_messages += 1
                self.stats.control_times.append(time.monotonic())
                await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": names[i : i + self.cfg.batch], "id": self._next_id}).decode())
        deadline = time.monotonic() + self.cfg.open_timeout_s
        while pending:  # wait for every ack; events arriving meanwhile are delivered
            raw = await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.001))
            msg = self._dispatch(raw)
            if isinstance(msg, dict) and "id" in msg:
                pending.discard(msg["id"])  # type: ignore[arg-type]
        return ws

    def _dispatch(self, raw: str | bytes) -> dict[str, object] | None:
        self.stats.messages += 1
        parsed = parse_kline_message(raw)
        if parsed is None:
            self.stats.malformed += 1
            return None
        if isinstance(parsed, tuple):
            symbol, interval, row, closed, event_ms = parsed
            self.stats.kline_events += 1
            if closed:
                self.stats.closed_events += 1
            self.on_kline(symbol, interval, row, closed, event_ms)
            return None
        return parsed

    async def _pump(self, ws: websockets.ClientConnection, rotate_at: float) -> str:
        """Read until rotation time ("rotate"), a serverShutdown ("rotate"), silence or close ("lost")."""
        while not self._stop.is_set():
            timeout = min(self.cfg.silence_s, max(rotate_at - time.monotonic(), 0.0))
            try:
                async with asyncio.timeout(timeout):  # no task per message, unlike wait_for
                    raw = await ws.recv()
            except TimeoutError:
                return "rotate" if time.monotonic() >= rotate_at else "lost"
            except websockets.ConnectionClosed:
                return "lost"
            msg = self._dispatch(raw)
            if msg is not None and msg.get("e") == "serverShutdown":
                return "rotate"
        return "stop"

    async def _drain_and_close(self, ws: websockets.ClientConnection) -> None:
        with contextlib.suppress(Exception):
            while True:  # deliver what the old connection already received, then close it
                raw = await asyncio.wait_for(ws.recv(), 0.05)
                self._dispatch(raw)
        await _close(ws)

    async def _run_chunk(self, chunk: list[tuple[str, str]], opened_event: asyncio.Event | None = None) -> None:
        attempt = 0
        first = True
        ws: websockets.ClientConnection | None = None
        try:
            while not self._stop.is_set():
                if ws is None:
                    try:
                        ws = await self._open(chunk)
                    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                        status = _refused_status(exc)
                        if status is not None:  # a 4xx is an answer, not an outage: retrying cannot help
                            self.fatal = f"{self.ws_url} answered the WebSocket handshake with HTTP {status}"
                            self.ready.set()
                            return
                        await asyncio.sleep(self._backoff(attempt))
                        attempt += 1
                        continue
                    if first:
                        first = False
                        if opened_event is not None:
                            opened_event.set()
                        else:
                            self._ready_chunks += 1
                            if self._ready_chunks == len(self.chunks()):
                                self.ready.set()
                    else:
                        self.stats.reconnects += 1
                        if self.on_reconnect is not None:
                            await self.on_reconnect(chunk)
                    attempt = 0
                    opened = time.monotonic()
                reason = await self._pump(ws, opened + self.cfg.rotate_after_s)
                if reason == "rotate":
                    try:
                        new = await self._open(chunk)  # subscribed and acked: it is receiving
                    except (OSError, TimeoutError, websockets.WebSocketException):
                        continue  # keep the old one until it really dies
                    self.stats.rotations += 1
                    await self._drain_and_close(ws)
                    ws, opened = new, time.monotonic()
                    continue
                await _close(ws)
                ws = None
                if reason == "stop":
                    break
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
        finally:  # also on cancellation (stop() cancels this task mid-recv): never leak the socket
            if ws is not None:
                await _close(ws)


def _refused_status(exc: BaseException) -> int | None:
    """The HTTP status of a handshake the server answered with a client error (4xx other than the
    rate limits 418/429, which are waited out); None for anything worth retrying."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (418, 429):
        return status
    return None


async def _close(ws: websockets.ClientConnection) -> None:
    """Close a connection, even from a task being cancelled (the close handshake is shielded)."""
    with contextlib.suppress(BaseException):
        await asyncio.shield(ws.close())
