"""Run a replay exchange in a child process through the library (no CLI): the harnesses' venue.

``python -m trader.replay.child [--speed S] [--start START] [--latency-ms MS] [--weight-limit N]``
binds 127.0.0.1 on a free port, renders every series (``--preload``), prints its base URL on the
first stdout line and serves until SIGTERM. :func:`trader.compare.replay_process` and the benchmarks
start the venue this way, in its own process, so a measurement never shares a core with it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from trader.config import FaultConfig, ReplayConfig
from trader.replay.server import ReplayExchange
from trader.runtime import add_signal_handler

__all__ = ["main"]


async def _serve(cfg: ReplayConfig) -> None:
    exchange = ReplayExchange.from_config(cfg)
    exchange.load_all(render=True)
    await exchange.start()
    sys.stdout.write(exchange.rest_url + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        add_signal_handler(loop, sig, stop.set)
    try:
        await stop.wait()
    finally:
        await exchange.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse the few settings a harness varies and serve (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m trader.replay.child", description=__doc__.split("\n")[0])
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--start", default="auto")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--weight-limit", type=int, default=1_000_000_000)
    args = ap.parse_args(argv)
    cfg = ReplayConfig(port=0, speed=args.speed, start=args.start, weight_limit=args.weight_limit,
                       faults=FaultConfig(latency_ms=args.latency_ms))
    asyncio.run(_serve(cfg))


if __name__ == "__main__":
    main()
