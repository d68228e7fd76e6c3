"""Child process of the crash-cycle test: submit intents 0..N-1 (one per signal time) through the
journal, print each order as JSON on stdout. Credentials come from the environment, as in real use.

Usage: python -m tests.integration.order_child REST_URL JOURNAL N [spot|usdm]
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

import orjson

from trader.config import ClientConfig, ProfileConfig
from trader.exchange.journal import OrderJournal
from trader.exchange.rest import BinanceClient
from trader.exchange.signing import load_credentials
from trader.exchange.trading import OrderIntent, TradingClient


async def main(url: str, journal: str, n: int, market: str = "spot") -> None:
    from trader.exchange.futures import FuturesClient, FuturesIntent

    creds = load_credentials()
    assert creds is not None
    profile = ProfileConfig(rest_url=url, ws_url=url.replace("http", "ws"), market=market)  # type: ignore[arg-type]
    async with BinanceClient(profile, ClientConfig(timeout_s=60.0)) as rest:
        cls = FuturesClient if market == "usdm" else TradingClient
        tc = cls(rest, creds, OrderJournal(journal), resolve_timeout_s=30.0, poll_s=0.02)
        for i in range(n):
            print(f"submitting {i}", file=sys.stderr, flush=True)
            if market == "usdm":
                intent: OrderIntent = FuturesIntent("crash", "BTCUSDT", 1_000 + i, "entry", "BUY", "MARKET", quantity=Decimal("0.002"))
            else:
                intent = OrderIntent("crash", "BTCUSDT", 1_000 + i, "entry", "BUY", "MARKET", quantity=Decimal("0.001"))
            o = await tc.submit(intent)
            sys.stdout.write(orjson.dumps({"i": i, "cid": o.client_order_id, "orderId": o.order_id, "status": o.status}).decode() + "\n")
            sys.stdout.flush()
        sys.stdout.write(orjson.dumps({"stats": tc.stats.__dict__}).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5]))
