"""Benchmark (not a test): requests per second the replay exchange sustains on loopback for
``GET /api/v3/klines?limit=1000``.

The server runs as its own process (``trader replay --preload``), the client is aiohttp in this
process with ``--concurrency`` connections (the cheapest client here, so the server is what is
measured), so the two do not share a GIL. Prints one JSON line.

    .venv/bin/python bench/replay_rps.py [--requests 3000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import httpx


async def _run(url: str, n: int, concurrency: int, symbols: list[str]) -> tuple[float, int, int]:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    bytes_total = 0
    errors = 0
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        async def one(i: int) -> None:
            nonlocal bytes_total, errors
            async with sem:
                params = {"symbol": symbols[i % len(symbols)], "interval": "1h" if i % 2 else "4h", "limit": "1000"}
                async with client.get("/api/v3/klines", params=params) as r:
                    body = await r.read()
                if r.status != 200:
                    errors += 1
                bytes_total += len(body)

        await asyncio.gather(*(one(i) for i in range(min(n, 200))))  # warm-up: connections, series parsed
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, bytes_total, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "0", "--preload", "--weight-limit", "1000000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        symbols = [s["symbol"] for s in httpx.get(f"{url}/api/v3/exchangeInfo", timeout=60).json()["symbols"]]
        seconds, nbytes, errors = asyncio.run(_run(url, args.requests, args.concurrency, symbols))
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    print(
        json.dumps(
            {
                "benchmark": "replay_klines_limit_1000",
                "requests": args.requests,
                "concurrency": args.concurrency,
                "seconds": round(seconds, 3),
                "requests_per_s": round(args.requests / seconds, 1),
                "mb_per_s": round(nbytes / seconds / 1e6, 1),
                "errors": errors,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
