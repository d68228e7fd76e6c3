"""Shared plumbing of ``warm --follow`` and ``scan --live``: a LiveFeed until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def stream_config(settings: Any) -> Any:
    """:class:`trader.exchange.stream.StreamConfig` from the ``stream`` config section."""
    from trader.exchange.stream import StreamConfig

    s = settings.stream
    return StreamConfig(
        max_streams=s.max_streams,
        batch=s.batch,
        control_per_s=s.control_per_s,
        silence_s=s.silence_s,
        backoff_base_s=s.backoff_base_s,
        backoff_max_s=s.backoff_max_s,
        rotate_after_s=s.rotate_after_s,
    )


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (clean shutdown instead of a traceback)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@asynccontextmanager
async def live_feed(settings: Any, symbols: list[str], intervals: list[str], **kwargs: Any) -> AsyncIterator[Any]:
    """Writer lock, REST client and a started :class:`trader.live.LiveFeed`; stops and persists on exit."""
    from trader.exchange.rest import BinanceClient
    from trader.live import LiveFeed
    from trader.store.klines import KlineStore

    with KlineStore(settings.store_path()) as store, store.writer_lock(settings.warm.lock_timeout_s):
        async with BinanceClient(settings.exchange, settings.client) as client:
            feed = LiveFeed(
                client,
                store,
                symbols,
                intervals,
                capacity=max(settings.stream.capacity, settings.scan.lookback),
                stream_cfg=stream_config(settings),
                snapshot_s=settings.stream.snapshot_s,
                depth=settings.warm.klines,
                **kwargs,
            )
            await feed.start(settings.exchange.ws_url)
            for err in feed.warm_report.errors:
                print(f"trader: warning: {err.symbol} {err.interval}: {err.message}", file=sys.stderr)
            try:
                yield feed
            finally:
                await feed.stop()
