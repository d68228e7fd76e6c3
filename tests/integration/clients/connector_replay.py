"""binance-connector against the replay (the README's snippet): argv rest_url ws_url api_key api_secret.

Runs in its own process with PYTHONPATH=.venv/clients/connector (its top-level ``binance`` package
would shadow python-binance's). Waits for conditions, never for fixed times (deadline 30 s).
"""
import json
import sys
import threading
import time

from binance.spot import Spot
from binance.websocket.spot.websocket_api import SpotWebsocketAPIClient
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient


def wait_for(cond, what: str, deadline_s: float = 30.0) -> None:
    """Block until ``cond()`` holds; exit 2 naming ``what`` after the deadline."""
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.02)


rest, ws, key, secret = sys.argv[1:5]
client = Spot(api_key=key, api_secret=secret, base_url=rest)
print("klines", len(client.klines("BTCUSDT", "1h", limit=3)))
o = client.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.001)
print("order", o["status"])
print("account", [b for b in client.account()["balances"] if b["asset"] == "BTC"])
px = float(client.ticker_price("BTCUSDT")["price"])
oco = client.new_oco_order(symbol="BTCUSDT", side="SELL", quantity=0.0005, aboveType="LIMIT_MAKER", abovePrice=round(px * 1.2, 2),
                           belowType="STOP_LOSS", belowStopPrice=round(px * 0.8, 2))
print("oco", oco["listOrderStatus"], len(oco["orderReports"]), "open lists", len(client.get_oco_open_orders()))
client.cancel_oco_order("BTCUSDT", orderListId=oco["orderListId"])

got: list[dict] = []
lock = threading.Lock()


def on_message(_, msg: str) -> None:
    with lock:
        got.append(json.loads(msg))


def kinds() -> set[str]:
    with lock:
        return {m.get("e") or ("result" if "result" in m else "error" if "error" in m else "?") for m in got}


streams = SpotWebsocketStreamClient(stream_url=ws, on_message=on_message)
streams.kline(symbol="btcusdt", interval="1h")
listen_key = client.new_listen_key()["listenKey"]
streams.user_data(listen_key=listen_key)  # a listen key is a stream name on a market-stream connection
wait_for(lambda: sum(1 for m in list(got) if "result" in m) >= 2, "both SUBSCRIBE replies")
client.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.0009)
wait_for(lambda: {"executionReport", "kline", "outboundAccountPosition"} <= kinds(), "user data and klines")

api_got: list[dict] = []
api = SpotWebsocketAPIClient(stream_url=f"{ws}/ws-api/v3", api_key=key, api_secret=secret,
                             on_message=lambda _, m: api_got.append(json.loads(m)))
api.user_data_start()
api.ticker_price(symbol="BTCUSDT")
api.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.001)
wait_for(lambda: len(api_got) >= 3, "three WS API replies")
streams.stop()
api.stop()
print("stream kinds", sorted(kinds()))
print("api", [(m.get("status"), list(m.get("result", {}))[:3] if isinstance(m.get("result"), dict)
               else type(m.get("result")).__name__) for m in api_got[:3]])
