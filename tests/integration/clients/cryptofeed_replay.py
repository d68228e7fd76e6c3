"""cryptofeed against a replay started with ``--tls`` (the README's snippet): argv rest_url ws_url [deadline_s].

The replay's certificate comes in through SSL_CERT_FILE / REQUESTS_CA_BUNDLE. Prints the callback
counts per channel once every channel has delivered (or at the deadline) and exits.
"""
import os
import sys
import threading
import time
from typing import ClassVar

from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import CANDLES, L2_BOOK, TICKER, TRADES
from cryptofeed.exchanges import Binance

rest, ws = sys.argv[1], sys.argv[2]
deadline_s = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0


class ReplayBinance(Binance):
    """cryptofeed's Binance feed with the replay's endpoints (everything else unchanged)."""

    websocket_endpoints: ClassVar = [WebsocketEndpoint(ws)]
    rest_endpoints: ClassVar = [RestEndpoint(rest, routes=Routes(
        "/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}", authentication="/api/v3/userDataStream"))]


got = {CANDLES: 0, TICKER: 0, L2_BOOK: 0, TRADES: 0}


def count(kind: str):
    async def cb(obj, ts) -> None:
        got[kind] += 1
    return cb


def stop_when_done() -> None:
    end = time.monotonic() + deadline_s
    while min(got.values()) == 0 and time.monotonic() < end:
        time.sleep(0.05)
    print(dict(got), flush=True)
    os._exit(0)


fh = FeedHandler(config={"log": {"filename": os.devnull, "level": "ERROR"}})
fh.add_feed(ReplayBinance(symbols=["BTC-USDT", "ETH-USDT"], channels=list(got), callbacks={k: count(k) for k in got},
                          candle_interval="1h", candle_closed_only=False))
threading.Thread(target=stop_when_done, daemon=True).start()
fh.run()
