"""``/health`` and ``/metrics`` of ``trader trade`` (aiohttp; prometheus-client's registry and text format).

Metrics (own :class:`prometheus_client.CollectorRegistry`, fed by the engine's event bus):

=================================  =========  ===================================================
name                               type       labels / meaning
=================================  =========  ===================================================
trader_orders_total                counter    status, side: order updates seen
trader_fills_total                 counter    side: orders that traded
trader_order_latency_seconds       histogram  request to answer of order placements
trader_equity_quote                gauge      account equity, quote asset
trader_open_positions              gauge      open positions
trader_request_weight_used         gauge      the venue's X-MBX-USED-WEIGHT-1M, last seen
trader_stream_reconnects_total     counter    user-data / market stream reconnections
trader_config_reloads_total        counter    result (applied, unchanged, refused, invalid): SIGHUP / --config changes
trader_signals_total               counter    action (enter, skip), reason
trader_build_info                  gauge      version, mode (always 1)
=================================  =========  ===================================================

``/health``: 200 with ``{"status": "ok", ...}`` while the last decision is recent (within two
decision intervals) and the trading state is not HALTED, else 503 with the same document
(``last_loop_ms``, ``last_kline_ms``, ``venue_connected``, ``trading_state``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from trader.trade.events import Event, EventBus, OrderUpdate, PositionChanged, RiskBreach, SignalEvent

__all__ = ["Observer"]


class Observer:
    """Metrics from the bus, and the HTTP endpoints.

    Args:
        bus: the engine's event bus.
        mode: backtest | paper | live (``trader_build_info``).
        max_silence_s: ``/health`` turns 503 after this long without a decision.
        weight: reads the client's last used weight (None: not exported).
    """

    def __init__(self, bus: EventBus, mode: str, max_silence_s: float, weight: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.orders = Counter("trader_orders", "Order updates seen, by status and side", ["status", "side"], registry=r)
        self.fills = Counter("trader_fills", "Orders that traded, by side", ["side"], registry=r)
        self.latency = Histogram("trader_order_latency_seconds", "Order placement request to answer", registry=r,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
        self.equity = Gauge("trader_equity_quote", "Account equity in the quote asset", registry=r)
        self.positions = Gauge("trader_open_positions", "Open positions", registry=r)
        self.weight = Gauge("trader_request_weight_used", "The venue's used request weight (1 minute)", registry=r)
        self.reconnects = Counter("trader_stream_reconnects", "Stream reconnections", registry=r)
        self.config_reloads = Counter("trader_config_reloads", "Configuration reload attempts, by result", ["result"], registry=r)
        self.signals = Counter("trader_signals", "Signals by action and reason", ["action", "reason"], registry=r)
        self.lag = Histogram("trader_loop_lag_seconds", "From a decision close to the loop acting on it", registry=r,
                             buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
        self.signal_to_order = Histogram("trader_signal_to_order_seconds", "From an entry decision to the venue's answer", registry=r,
                                         buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0))
        self.build = Gauge("trader_build_info", "Build and mode", ["version", "mode"], registry=r)
        self.build.labels(version="0.1.0", mode=mode).set(1)
        self.state = "ACTIVE"
        self.last_loop_ms: int | None = None
        self.last_loop_wall: float | None = None
        self.venue_connected = True
        self.max_silence_s = max_silence_s
        self._weight = weight
        bus.subscribe(OrderUpdate, self._order)
        bus.subscribe(PositionChanged, lambda e: self.positions.set(e.open_positions))
        bus.subscribe(SignalEvent, lambda e: self.signals.labels(action=e.action, reason=e.reason.split(":")[0]).inc())
        bus.subscribe(RiskBreach, self._state)
        bus.subscribe(Event, self._any)

    def _order(self, e: OrderUpdate) -> None:
        self.orders.labels(status=e.status, side=e.side).inc()
        if e.status in ("FILLED", "PARTIALLY_FILLED"):
            self.fills.labels(side=e.side).inc()
        if e.latency_s is not None:
            self.latency.observe(e.latency_s)

    def _state(self, e: RiskBreach) -> None:
        self.state = e.state

    def _any(self, e: Event) -> None:
        if type(e).__name__ == "KlineClosed":
            self.last_loop_ms = e.t_ms
            self.last_loop_wall = time.time()
        if self._weight is not None:
            self.weight.set(self._weight())

    def health(self) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, document)``."""
        silent = self.last_loop_wall is None or time.time() - self.last_loop_wall > self.max_silence_s
        ok = not silent and self.state != "HALTED" and self.venue_connected
        doc = {"status": "ok" if ok else "unhealthy", "trading_state": self.state, "last_loop_ms": self.last_loop_ms,
               "last_kline_ms": None if self.last_loop_ms is None else self.last_loop_ms - 1,
               "venue_connected": self.venue_connected, "seconds_since_loop": None if self.last_loop_wall is None else round(time.time() - self.last_loop_wall, 3)}
        return (200 if ok else 503), doc

    async def serve(self, host: str, port: int) -> tuple[web.AppRunner, int]:
        """Serve ``/health`` and ``/metrics``; returns the runner and the bound port."""
        import orjson

        async def health(request: web.Request) -> web.Response:
            status, doc = self.health()
            return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        return runner, int(runner.addresses[0][1])
