"""The replay venue's USD-M futures REST API under ``/fapi`` (Binance "USDⓈ-M Futures" REST API).

Served on the same port as spot, by the same exchange: the same clock, the same accounts (one API key
has a spot account and a futures wallet, as on Binance), request security (HMAC / Ed25519 signatures,
``timestamp`` / ``recvWindow``), request weight (its own per-IP budget, as Binance counts ``/fapi``
apart from ``/api``) and order faults. Orders, positions, funding and liquidation are
:class:`trader.replay.futures.FuturesEngine`'s. Perpetual prices are the spot recording's (basis
zero); see that module's docstring.

Endpoints: market data ``ping``, ``time``, ``exchangeInfo`` (the real 2025-03-06 entries of the bundled
symbols), ``klines``, ``continuousKlines``, ``markPriceKlines``, ``indexPriceKlines``, ``premiumIndex``,
``fundingRate``, ``fundingInfo``, ``ticker/24hr``, ``ticker/price`` (v1, v2), ``ticker/bookTicker``,
``depth``; ``openInterest`` is refused (no recorded positions to count). Trading: ``order`` (POST, GET,
DELETE), ``batchOrders`` (POST, DELETE), ``openOrder``, ``openOrders``, ``allOrders``,
``allOpenOrders`` (DELETE), ``countdownCancelAll``, ``leverage``, ``marginType``, ``leverageBracket``,
``positionSide/dual`` (one-way only), ``multiAssetsMargin`` (off), ``positionRisk`` (v2, v3),
``account`` (v2, v3), ``balance`` (v2, v3), ``userTrades``, ``income``, ``commissionRate``,
``listenKey`` (POST / PUT / DELETE; events on ``/ws/<listenKey>``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from trader.config import FuturesReplayConfig
from trader.errors import ConfigError
from trader.replay import market
from trader.replay.futures import (
    FUNDING_INTERVAL_MS,
    FAccount,
    FOrder,
    FuturesConfig,
    FuturesEngine,
    FuturesRequest,
    _fmt,
)
from trader.replay.matching import Rejected
from trader.replay.trading import _KEY_CHARS, _LISTEN_KEY_TTL_S, _dec, _int, _ListenKey, _mandatory
from trader.usdm import ContractRules, brackets_from_doc, bundled_brackets, bundled_exchange_info
from trader.wire import e8

if TYPE_CHECKING:
    from trader.replay.server import ReplayExchange

__all__ = ["FuturesVenue", "load_funding_dir"]

_ORDER_PARAMS = {
    "symbol", "side", "positionSide", "type", "timeInForce", "quantity", "reduceOnly", "price", "newClientOrderId",
    "stopPrice", "closePosition", "activationPrice", "callbackRate", "workingType", "priceProtect", "newOrderRespType",
    "priceMatch", "selfTradePreventionMode", "goodTillDate",
}
_BOOL = {"true": True, "false": False, "TRUE": True, "FALSE": False}


def load_funding_dir(path: Path) -> dict[str, list[tuple[int, Decimal]]]:
    """``<SYMBOL>.json`` files, each a ``GET /fapi/v1/fundingRate`` response (``[{"symbol",
    "fundingRate", "fundingTime", ...}]``) -> per symbol ``[(fundingTime ms, rate)]`` sorted.

    Raises:
        ConfigError: the directory is missing or a file is not that shape.
    """
    if not path.is_dir():
        raise ConfigError(f"--funding {path}: not a directory")
    out: dict[str, list[tuple[int, Decimal]]] = {}
    for f in sorted(path.glob("*.json")):
        try:
            rows = json.loads(f.read_text())
            out[f.stem.upper()] = sorted((int(r["fundingTime"]), Decimal(str(r["fundingRate"]))) for r in rows)
        except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as exc:
            raise ConfigError(f"--funding {f}: not a fundingRate response ({exc})") from None
    return out


class _FuturesOrderCounter:
    """New futures orders per account: 10-second and 1-minute windows (Binance USD-M ORDERS limits)."""

    def __init__(self, limit_10s: int, limit_1m: int, clock: Callable[[], float]) -> None:
        self.limits = ((10.0, limit_10s, "10S", "10 SECOND"), (60.0, limit_1m, "1M", "1 MINUTE"))
        self.clock = clock
        self._times: dict[str, deque[float]] = {}

    def admit(self, key: str, n: int) -> dict[str, str]:
        now = self.clock()
        q = self._times.setdefault(key, deque())
        while q and now - q[0] >= 60.0:
            q.popleft()
        counts = [sum(1 for t in q if now - t < w) for w, _, _, _ in self.limits]
        headers = {f"X-MBX-ORDER-COUNT-{tag}": str(c) for c, (_, _, tag, _) in zip(counts, self.limits, strict=True)}
        for c, (w, limit, _, unit) in zip(counts, self.limits, strict=True):
            if c + n > limit:
                raise Rejected(-1015, f"Too many new orders; current limit is {limit} orders per {unit}.", 429,
                               {"Retry-After": str(int(w)), **headers})
        q.extend([now] * n)
        return {f"X-MBX-ORDER-COUNT-{tag}": str(c + n) for c, (_, _, tag, _) in zip(counts, self.limits, strict=True)}


def _json(payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json", charset="UTF-8", headers=headers)


class FuturesVenue:
    """USD-M futures of one replay exchange (module docstring).

    Args:
        exchange: the replay exchange (clock, dataset, symbol checks, kline rendering, spot accounts and security).
        cfg: the ``replay.futures`` config section.
        weight_clock: epoch-seconds clock of the order-count windows.
    """

    def __init__(self, exchange: ReplayExchange, cfg: FuturesReplayConfig, weight_clock: Callable[[], float] = time.time) -> None:
        self.ex = exchange
        self.trading = exchange.trading
        self.clock = exchange.clock
        self.cfg = cfg
        info = bundled_exchange_info()
        served = set(exchange.dataset.symbols)
        self.info_symbols = [s for s in info["symbols"] if s["symbol"] in served]
        self.info = info
        rules = {s["symbol"]: ContractRules.from_symbol_info(s) for s in self.info_symbols}
        brackets = bundled_brackets()
        if cfg.brackets_file is not None:
            try:
                brackets = {**brackets, **brackets_from_doc(json.loads(Path(cfg.brackets_file).read_text()))}
            except (OSError, ValueError) as exc:
                raise ConfigError(f"replay.futures.brackets_file: {exc}") from None
        funding = load_funding_dir(Path(cfg.funding_dir)) if cfg.funding_dir is not None else {}
        self.engine = FuturesEngine(
            self.trading.market, rules, brackets,
            FuturesConfig(maker_fee=Decimal(repr(cfg.maker_fee)), taker_fee=Decimal(repr(cfg.taker_fee)),
                          funding_rate=Decimal(repr(cfg.funding_rate)), funding=funding, default_leverage=cfg.default_leverage),
            emit=self._emit, spread_bps=exchange.spread_bps,
        )
        for ac in self.trading.account_configs:
            wallet = cfg.wallet if cfg.wallet is not None else ac.balances.get("USDT", 0.0)
            self.engine.add_account(ac.api_key, Decimal(repr(wallet)))
        self.counter = _FuturesOrderCounter(cfg.order_limit_10s, cfg.order_limit_1m, weight_clock)
        self.clock.listeners.append(self._on_clock)
        exchange.hub.mark_price_event = self.mark_price_event

    def mark_price_event(self, symbol: str, now: int) -> bytes:
        """The ``<symbol>@markPrice`` stream's ``markPriceUpdate`` (Binance USD-M "Mark Price Stream")."""
        d = self._premium(symbol, now)
        return orjson.dumps({"e": "markPriceUpdate", "E": now, "s": symbol, "p": d["markPrice"], "i": d["indexPrice"],
                             "P": d["estimatedSettlePrice"], "r": d["lastFundingRate"], "T": d["nextFundingTime"]})

    # ------------------------------------------------------------------ wiring

    def routes(self, app: web.Application) -> None:
        """Add the ``/fapi`` routes (before the exchange's catch-all)."""
        r = app.router
        v1, v2, v3 = "/fapi/v1", "/fapi/v2", "/fapi/v3"
        for path, h in ((f"{v1}/ping", self._ping), (f"{v1}/time", self._time), (f"{v1}/exchangeInfo", self._exchange_info),
                        (f"{v1}/klines", self._klines), (f"{v1}/continuousKlines", self._continuous_klines),
                        (f"{v1}/markPriceKlines", self._price_klines), (f"{v1}/indexPriceKlines", self._index_klines),
                        (f"{v1}/premiumIndex", self._premium_index), (f"{v1}/fundingRate", self._funding_rate),
                        (f"{v1}/fundingInfo", self._funding_info), (f"{v1}/ticker/24hr", self._ticker_24hr),
                        (f"{v1}/ticker/price", self._ticker_price), (f"{v2}/ticker/price", self._ticker_price),
                        (f"{v1}/ticker/bookTicker", self._book_ticker), (f"{v1}/depth", self._depth),
                        (f"{v1}/openInterest", self._open_interest),
                        (f"{v1}/order", self._query), (f"{v1}/openOrder", self._open_order), (f"{v1}/openOrders", self._open_orders),
                        (f"{v1}/allOrders", self._all_orders), (f"{v1}/leverageBracket", self._leverage_bracket),
                        (f"{v1}/positionSide/dual", self._dual_get), (f"{v1}/multiAssetsMargin", self._multi_assets),
                        (f"{v2}/positionRisk", self._position_risk_v2), (f"{v3}/positionRisk", self._position_risk_v3),
                        (f"{v2}/account", self._account_v2), (f"{v3}/account", self._account_v3),
                        (f"{v2}/balance", self._balance), (f"{v3}/balance", self._balance),
                        (f"{v1}/userTrades", self._user_trades), (f"{v1}/income", self._income),
                        (f"{v1}/commissionRate", self._commission_rate)):
            r.add_get(path, h)
        r.add_post(f"{v1}/order", self._place)
        r.add_delete(f"{v1}/order", self._cancel)
        r.add_post(f"{v1}/batchOrders", self._batch_place)
        r.add_delete(f"{v1}/batchOrders", self._batch_cancel)
        r.add_delete(f"{v1}/allOpenOrders", self._cancel_all)
        r.add_post(f"{v1}/countdownCancelAll", self._countdown)
        r.add_post(f"{v1}/leverage", self._leverage)
        r.add_post(f"{v1}/marginType", self._margin_type)
        r.add_post(f"{v1}/positionSide/dual", self._dual_post)
        r.add_post(f"{v1}/listenKey", self._listen_new)
        r.add_put(f"{v1}/listenKey", self._listen_keepalive)
        r.add_delete(f"{v1}/listenKey", self._listen_close)

    def _on_clock(self) -> None:
        self.engine.advance(self.clock.now_ms())

    def advance(self) -> None:
        """Run the engine up to the clock's now (the exchange calls this every 50 ms of wall time)."""
        self.engine.advance(self.clock.now_ms())

    # ------------------------------------------------------------------ helpers

    def _acct(self, api_key: str) -> FAccount:
        return self.engine.accounts[api_key]

    async def _signed(self, request: web.Request, allowed: set[str]) -> tuple[FAccount, dict[str, str]]:
        acct, params = await self.trading._signed(request, allowed)
        self.engine.advance(self.clock.now_ms())
        return self._acct(acct.api_key), params

    def _public(self, request: web.Request, allowed: set[str]) -> dict[str, str]:
        return self.ex._check_params(request, allowed)

    def _symbol(self, raw: str) -> str:
        s = self.ex._symbol(raw)
        if s not in self.engine.rules:
            raise Rejected(-1121, "Invalid symbol.")
        return s

    async def _load(self, symbol: str) -> None:
        await self.ex._market(symbol)

    def _symbols(self, params: dict[str, str]) -> tuple[list[str], bool]:
        if params.get("symbol"):
            return [self._symbol(params["symbol"])], True
        return [s for s in self.engine.rules if s not in self.ex.problems], False

    def _order_doc(self, o: FOrder, query: bool = False) -> dict[str, Any]:
        return o.doc(self.engine.rules[o.symbol], query=query)

    def _emit(self, acct: FAccount, event: dict[str, Any]) -> None:
        raw = orjson.dumps(event)
        for lk in self.trading._listen_keys.values():
            if lk.market == "usdm" and lk.account.api_key == acct.api_key:
                for sub in lk.sockets:
                    sub.queue.put_nowait(raw)

    # ------------------------------------------------------------------ market data

    async def _ping(self, request: web.Request) -> web.Response:
        self._public(request, set())
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        self._public(request, set())
        response = _json({"serverTime": self.clock.now_ms()})
        response.headers["X-Replay-Speed"] = repr(self.clock.speed)
        return response

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self._public(request, set())
        doc = {k: v for k, v in self.info.items() if k != "symbols"}
        doc["serverTime"] = self.clock.now_ms()
        doc["rateLimits"] = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.ex.limiter.limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.cfg.order_limit_1m},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.cfg.order_limit_10s},
        ]
        doc["assets"] = [a for a in self.info.get("assets", []) if a.get("asset") == "USDT"]
        doc["symbols"] = [s for s in self.info_symbols if s["symbol"] not in self.ex.problems]
        return _json(doc)

    async def _kline_params(self, request: web.Request, allowed: set[str], symbol_key: str = "symbol") -> tuple[str, str, int | None, int | None, int]:
        params = self._public(request, allowed)
        symbol = self._symbol(_mandatory(params, symbol_key))
        if symbol_key == "pair" and params.get("contractType", "PERPETUAL") != "PERPETUAL":
            raise Rejected(-4000, "Invalid contract type. The replay venue lists PERPETUAL contracts only.")
        interval = _mandatory(params, "interval")
        limit = self.ex._int(params, "limit")
        limit = 500 if limit is None else limit
        if not 1 <= limit <= 1500:
            raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = self.ex._int(params, "startTime"), self.ex._int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise Rejected(-1023, "Start time is greater than end time.")
        from trader.models import BINANCE_INTERVALS

        if interval not in BINANCE_INTERVALS:
            raise Rejected(-1120, "Invalid interval.")
        return symbol, interval, start, end, limit

    async def _klines(self, request: web.Request) -> web.Response:
        symbol, interval, start, end, limit = await self._kline_params(request, {"symbol", "interval", "startTime", "endTime", "limit"})
        return web.Response(body=await self.ex.kline_body(symbol, interval, start, end, limit), content_type="application/json", charset="UTF-8")

    async def _continuous_klines(self, request: web.Request) -> web.Response:
        symbol, interval, start, end, limit = await self._kline_params(
            request, {"pair", "contractType", "interval", "startTime", "endTime", "limit"}, "pair")
        return web.Response(body=await self.ex.kline_body(symbol, interval, start, end, limit), content_type="application/json", charset="UTF-8")

    async def _price_klines(self, request: web.Request) -> web.Response:
        symbol, interval, start, end, limit = await self._kline_params(request, {"symbol", "interval", "startTime", "endTime", "limit"})
        body = await self.ex.kline_body(symbol, interval, start, end, limit, price_only=True)
        return web.Response(body=body, content_type="application/json", charset="UTF-8")

    async def _index_klines(self, request: web.Request) -> web.Response:
        symbol, interval, start, end, limit = await self._kline_params(request, {"pair", "interval", "startTime", "endTime", "limit"}, "pair")
        body = await self.ex.kline_body(symbol, interval, start, end, limit, price_only=True)
        return web.Response(body=body, content_type="application/json", charset="UTF-8")

    def _premium(self, symbol: str, now: int) -> dict[str, Any]:
        pp = self.engine.rules[symbol].price_precision
        mark = self.engine.mark(symbol, now)
        nxt = (now // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        return {"symbol": symbol, "markPrice": _fmt(mark, pp + 6 if pp < 2 else 8), "indexPrice": _fmt(mark, 8),
                "estimatedSettlePrice": _fmt(mark, 8), "lastFundingRate": f"{self.engine.cfg.rate_at(symbol, nxt):.8f}",
                "interestRate": "0.00010000", "nextFundingTime": nxt, "time": now}

    async def _premium_index(self, request: web.Request) -> web.Response:
        symbols, single = self._symbols(self._public(request, {"symbol"}))
        for s in symbols:
            await self._load(s)
        now = self.clock.now_ms()
        docs = [self._premium(s, now) for s in symbols]
        return _json(docs[0] if single else docs)

    async def _funding_rate(self, request: web.Request) -> web.Response:
        params = self._public(request, {"symbol", "startTime", "endTime", "limit"})
        symbols, _ = self._symbols(params)
        now = self.clock.now_ms()
        limit = self.ex._int(params, "limit") or 100
        if not 1 <= limit <= 1000:
            raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
        end = min(self.ex._int(params, "endTime") or now, now)
        start = self.ex._int(params, "startTime")
        out: list[dict[str, Any]] = []
        for s in symbols:
            await self._load(s)
            series = self.trading.market.series(s)
            first = int(series.open_time_ms[0])
            t = end // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS
            rows: list[dict[str, Any]] = []
            while t >= first and (start is None or t >= start) and len(rows) < limit:
                rows.append({"symbol": s, "fundingTime": t, "fundingRate": f"{self.engine.cfg.rate_at(s, t):.8f}",
                             "markPrice": _fmt(self.engine.mark(s, t), 8)})
                t -= FUNDING_INTERVAL_MS
            out.extend(reversed(rows))
        out.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
        return _json(out[-limit:] if start is None else out[:limit])

    async def _funding_info(self, request: web.Request) -> web.Response:
        self._public(request, set())
        return _json([{"symbol": s, "adjustedFundingRateCap": "0.03000000", "adjustedFundingRateFloor": "-0.03000000",
                       "fundingIntervalHours": 8, "disclaimer": False} for s in self.engine.rules])

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        symbols, single = self._symbols(self._public(request, {"symbol"}))
        now = self.clock.now_ms()
        docs = []
        for s in symbols:
            series = await self.ex._market(s)
            stats = market.window_stats(series, now - 86_400_000, now)
            if stats is None:
                continue
            d = market.ticker_doc(series, stats, True, self.ex.spread_bps)
            docs.append({k: d[k] for k in ("symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "lastPrice", "lastQty",
                                           "openPrice", "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime",
                                           "firstId", "lastId", "count")})
        if single and not docs:
            raise Rejected(-1121, "Invalid symbol.")
        return _json(docs[0] if single else docs)

    async def _ticker_price(self, request: web.Request) -> web.Response:
        symbols, single = self._symbols(self._public(request, {"symbol"}))
        now = self.clock.now_ms()
        docs = []
        for s in symbols:
            await self._load(s)
            docs.append({"symbol": s, "price": _fmt(self.engine.mark(s, now), self.engine.rules[s].price_precision), "time": now})
        return _json(docs[0] if single else docs)

    def _book(self, symbol: str, now: int) -> dict[str, Any]:
        rules = self.engine.rules[symbol]
        bid, ask = self.engine.book(symbol, self.trading.market.price(symbol, now))
        series = self.trading.market.series(symbol)
        _, vol, _ = self.trading.market.kline(symbol, now)
        i = max(series.visible(now) - 1, 0)
        trades = float(series.values[8, i]) if series.values.shape[0] > 8 else 1.0
        qty = max(Decimal(repr(vol / max(trades, 1.0))).quantize(rules.step), rules.min_qty)
        return {"symbol": symbol, "bidPrice": _fmt(bid, rules.price_precision), "bidQty": _fmt(qty, rules.quantity_precision),
                "askPrice": _fmt(ask, rules.price_precision), "askQty": _fmt(qty, rules.quantity_precision),
                "time": now, "lastUpdateId": market.update_id(now)}

    async def _book_ticker(self, request: web.Request) -> web.Response:
        symbols, single = self._symbols(self._public(request, {"symbol"}))
        now = self.clock.now_ms()
        for s in symbols:
            await self._load(s)
        docs = [self._book(s, now) for s in symbols]
        return _json(docs[0] if single else docs)

    async def _depth(self, request: web.Request) -> web.Response:
        params = self._public(request, {"symbol", "limit"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        limit = self.ex._int(params, "limit") or 500
        if limit not in (5, 10, 20, 50, 100, 500, 1000):
            raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
        await self._load(symbol)
        now = self.clock.now_ms()
        top = self._book(symbol, now)
        rules = self.engine.rules[symbol]
        bid, ask, tick = Decimal(top["bidPrice"]), Decimal(top["askPrice"]), rules.tick
        pp = rules.price_precision
        bids = [[_fmt(bid - k * tick, pp), top["bidQty"]] for k in range(limit) if bid - k * tick > 0]
        asks = [[_fmt(ask + k * tick, pp), top["askQty"]] for k in range(limit)]
        return _json({"lastUpdateId": market.update_id(now), "E": now, "T": now, "bids": bids, "asks": asks})

    async def _open_interest(self, request: web.Request) -> web.Response:
        self._public(request, {"symbol"})
        raise Rejected(-1000, "openInterest is not modelled by the replay venue: it replays no other traders' positions.")

    # ------------------------------------------------------------------ orders

    def _request(self, params: dict[str, str]) -> FuturesRequest:
        symbol = self._symbol(_mandatory(params, "symbol"))
        side = _mandatory(params, "side")
        if side not in ("BUY", "SELL"):
            raise Rejected(-1117, "Invalid side.")
        kind = _mandatory(params, "type")
        from trader.replay.futures import ORDER_TYPES

        if kind not in ORDER_TYPES:
            raise Rejected(-1116, "Invalid orderType.")
        if params.get("positionSide", "BOTH") != "BOTH":
            raise Rejected(-4061, "Order's position side does not match user's setting.")
        if params.get("priceMatch", "NONE") != "NONE":
            raise Rejected(-1013, "priceMatch is not supported by the replay venue.")

        def flag(name: str) -> bool:
            raw = params.get(name, "false")
            if raw not in _BOOL:
                raise Rejected(-1100, f"Illegal characters found in parameter '{name}'; legal range is 'true, false'.")
            return _BOOL[raw]

        wt = params.get("workingType", "CONTRACT_PRICE")
        if wt not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise Rejected(-1100, "Illegal characters found in parameter 'workingType'; legal range is 'MARK_PRICE, CONTRACT_PRICE'.")
        resp = params.get("newOrderRespType", "ACK")
        if resp not in ("ACK", "RESULT"):
            raise Rejected(-1100, "Illegal characters found in parameter 'newOrderRespType'; legal range is 'ACK, RESULT'.")
        tif = params.get("timeInForce") or None
        if kind in ("LIMIT", "STOP", "TAKE_PROFIT") and tif is None:
            tif = "GTC" if kind != "LIMIT" else None
        return FuturesRequest(
            symbol=symbol, side=side, type=kind, quantity=_dec(params, "quantity"), price=_dec(params, "price"),
            stop_price=_dec(params, "stopPrice"), time_in_force=tif, reduce_only=flag("reduceOnly"),
            close_position=flag("closePosition"), working_type=wt, price_protect=flag("priceProtect"),
            activation_price=_dec(params, "activationPrice"), callback_rate=_dec(params, "callbackRate"),
            good_till_ms=_int(params, "goodTillDate") or 0, client_order_id=params.get("newClientOrderId") or None, resp_type=resp,
        )

    async def _place_one(self, acct: FAccount, params: dict[str, str]) -> FOrder:
        req = self._request(params)
        await self._load(req.symbol)
        self.trading._maybe_reject()
        order = self.engine.place(acct, req, self.clock.now_ms())
        assert order is not None
        return order

    async def _place(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, _ORDER_PARAMS)
        await self.trading._fault_latency()
        headers = self.counter.admit(acct.api_key, 1)
        try:
            order = await self._place_one(acct, params)
            await self.trading._unknown_status_fault([order.client_order_id])
        except Rejected as exc:
            exc.headers.update(headers)
            raise
        return _json(self._order_doc(order), headers)

    async def _batch_place(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"batchOrders"})
        try:
            items = orjson.loads(_mandatory(params, "batchOrders"))
        except orjson.JSONDecodeError:
            raise Rejected(-1130, "Data sent for parameter 'batchOrders' is not valid.") from None
        if not isinstance(items, list) or not 1 <= len(items) <= 5 or not all(isinstance(i, dict) for i in items):
            raise Rejected(-1130, "Data sent for parameter 'batchOrders' is not valid.")
        await self.trading._fault_latency()
        headers = self.counter.admit(acct.api_key, len(items))
        out: list[dict[str, Any]] = []
        placed = []
        for item in items:
            p = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in item.items()}
            unknown = [k for k in p if k not in _ORDER_PARAMS]
            try:
                if unknown:
                    raise Rejected(-1104, f"Not all sent parameters were read; read '{len(p) - len(unknown)}' parameter(s) but was sent '{len(p)}'.")
                o = await self._place_one(acct, p)
                placed.append(o.client_order_id)
                out.append(self._order_doc(o))
            except Rejected as exc:
                out.append({"code": exc.code, "msg": exc.msg})
        await self.trading._unknown_status_fault(placed)
        return _json(out, headers)

    def _find(self, acct: FAccount, params: dict[str, str]) -> FOrder | None:
        symbol = self._symbol(_mandatory(params, "symbol"))
        oid = _int(params, "orderId")
        cid = params.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise Rejected(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return self.engine.find(acct, symbol, oid, cid)

    async def _query(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "origClientOrderId"})
        o = self._find(acct, params)
        if o is None:
            raise Rejected(-2013, "Order does not exist.")
        return _json(self._order_doc(o, query=True))

    async def _open_order(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "origClientOrderId"})
        o = self._find(acct, params)
        if o is None or not o.is_open:
            raise Rejected(-2013, "Order does not exist.")
        return _json(self._order_doc(o, query=True))

    async def _cancel(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "origClientOrderId"})
        o = self._find(acct, params)
        if o is None or not o.is_open:
            raise Rejected(-2011, "Unknown order sent.")
        self.engine.cancel(acct, o.symbol, o.order_id, None, self.clock.now_ms())
        return _json(self._order_doc(o))

    async def _batch_cancel(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderIdList", "origClientOrderIdList"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        try:
            ids = orjson.loads(params.get("orderIdList") or "[]")
            cids = orjson.loads(params.get("origClientOrderIdList") or "[]")
        except orjson.JSONDecodeError:
            raise Rejected(-1130, "Data sent for parameter 'orderIdList' is not valid.") from None
        out: list[dict[str, Any]] = []
        for oid, cid in [(int(i), None) for i in ids] + [(None, str(c)) for c in cids]:
            try:
                o = self.engine.cancel(acct, symbol, oid, cid, self.clock.now_ms())
                out.append(self._order_doc(o))
            except Rejected as exc:
                out.append({"code": exc.code, "msg": exc.msg})
        return _json(out)

    async def _cancel_all(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol"})
        self.engine.cancel_all(acct, self._symbol(_mandatory(params, "symbol")), self.clock.now_ms())
        return _json({"code": 200, "msg": "The operation of cancel all open order is done."})

    async def _countdown(self, request: web.Request) -> web.Response:
        """``countdownCancelAll``: cancel the symbol's open orders when the countdown (ms of replay
        time) ends without another call; 0 stops it."""
        acct, params = await self._signed(request, {"symbol", "countdownTime"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        ms = _int(params, "countdownTime")
        if ms is None:
            raise Rejected(-1102, "Mandatory parameter 'countdownTime' was not sent, was empty/null, or malformed.")
        if ms == 0:
            acct.countdown.pop(symbol, None)
        else:
            acct.countdown[symbol] = (ms, self.clock.now_ms() + ms)
        return _json({"symbol": symbol, "countdownTime": str(ms)})

    async def _open_orders(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol"})
        symbol = self._symbol(params["symbol"]) if params.get("symbol") else None
        return _json([self._order_doc(o, query=True) for o in acct.open.values() if symbol is None or o.symbol == symbol])

    async def _all_orders(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "startTime", "endTime", "limit"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        limit = _int(params, "limit") or 500
        from_id, start, end = _int(params, "orderId"), _int(params, "startTime"), _int(params, "endTime")
        rows = [o for (s, _), o in acct.orders.items() if s == symbol and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)]
        rows.sort(key=lambda o: o.order_id)
        return _json([self._order_doc(o, query=True) for o in (rows[:limit] if from_id is not None else rows[-limit:])])

    # ------------------------------------------------------------------ account

    async def _leverage(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "leverage"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        lev = _int(params, "leverage")
        if lev is None:
            raise Rejected(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.")
        await self._load(symbol)
        return _json(self.engine.set_leverage(acct, symbol, lev, self.clock.now_ms()))

    async def _margin_type(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "marginType"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        self.engine.set_margin_type(acct, symbol, params.get("marginType", "").upper())
        return _json({"code": 200, "msg": "success"})

    async def _leverage_bracket(self, request: web.Request) -> web.Response:
        _, params = await self._signed(request, {"symbol"})
        symbols, single = self._symbols(params)
        docs = [{"symbol": s, "notionalCoef": 1.0, "brackets": [b.doc() for b in self.engine.brackets[s]]} for s in symbols]
        return _json(docs[0] if single else docs)

    async def _dual_get(self, request: web.Request) -> web.Response:
        await self._signed(request, set())
        return _json({"dualSidePosition": False})

    async def _dual_post(self, request: web.Request) -> web.Response:
        _, params = await self._signed(request, {"dualSidePosition"})
        if params.get("dualSidePosition") == "false":
            raise Rejected(-4059, "No need to change position side.")
        raise Rejected(-4068, "Hedge mode (dualSidePosition) is not modelled by the replay venue: one-way mode only.")

    async def _multi_assets(self, request: web.Request) -> web.Response:
        await self._signed(request, set())
        return _json({"multiAssetsMargin": False})

    def _positions(self, acct: FAccount, symbols: list[str], now: int, v3: bool) -> list[dict[str, Any]]:
        out = []
        for s in symbols:
            p = acct.positions.get(s)
            has_orders = any(o.symbol == s for o in acct.open.values())
            if v3 and (p is None or p.amt == 0) and not has_orders:
                continue
            p = acct.position(s)
            rules = self.engine.rules[s]
            mark = self.engine.mark(s, now)
            lev = self.engine.leverage(acct, s)
            notional = p.amt * mark
            iso = s in acct.isolated
            upnl = self.engine.upnl(p, mark)
            liq = self.engine.liq_price(acct, p, now)
            cap = [b for b in self.engine.brackets[s] if b.initial_leverage >= lev][-1].cap
            d: dict[str, Any] = {
                "symbol": s, "positionSide": "BOTH", "positionAmt": _fmt(p.amt, rules.quantity_precision), "entryPrice": e8(p.entry),
                "breakEvenPrice": e8(p.entry), "markPrice": e8(mark), "unRealizedProfit": e8(upnl), "liquidationPrice": e8(liq),
                "isolatedMargin": e8(p.isolated_wallet + upnl if iso and p.amt else 0), "notional": e8(notional),
                "isolatedWallet": e8(p.isolated_wallet), "updateTime": p.update_ms,
            }
            if v3:
                im = self.engine.position_im(acct, p, mark)
                oim = sum((self.engine.order_im(acct, o, mark) for o in acct.open.values() if o.symbol == s), Decimal(0))
                d.update(marginAsset="USDT", initialMargin=e8(im + oim), maintMargin=e8(self.engine.maint(p, mark)),
                         positionInitialMargin=e8(im), openOrderInitialMargin=e8(oim), adl=0, bidNotional="0", askNotional="0")
            else:
                d.update(marginType="isolated" if iso else "cross", isAutoAddMargin="false", leverage=str(lev), maxNotionalValue=f"{cap:f}")
            out.append(d)
        return out

    async def _position_risk(self, request: web.Request, v3: bool) -> web.Response:
        acct, params = await self._signed(request, {"symbol"})
        symbols, _ = self._symbols(params)
        for s in symbols:
            if params.get("symbol") or s in acct.positions:
                await self._load(s)
        now = self.clock.now_ms()
        if not params.get("symbol"):
            symbols = [s for s in symbols if s in acct.positions or any(o.symbol == s for o in acct.open.values())] if v3 else symbols
            symbols = [s for s in symbols if self.ex.dataset.series(s, self.ex.dataset.finest(s)) is not None]
        return _json(self._positions(acct, symbols, now, v3))

    async def _position_risk_v2(self, request: web.Request) -> web.Response:
        return await self._position_risk(request, v3=False)

    async def _position_risk_v3(self, request: web.Request) -> web.Response:
        return await self._position_risk(request, v3=True)

    def _account_doc(self, acct: FAccount, now: int, v3: bool) -> dict[str, Any]:
        t = self.engine.totals(acct, now)
        avail = max(t["available"], Decimal(0))
        asset = {"asset": "USDT", "walletBalance": e8(t["wallet"]), "unrealizedProfit": e8(t["upnl"]),
                 "marginBalance": e8(t["margin_balance"]), "maintMargin": e8(t["maint"]),
                 "initialMargin": e8(t["position_im"] + t["open_order_im"]), "positionInitialMargin": e8(t["position_im"]),
                 "openOrderInitialMargin": e8(t["open_order_im"]), "crossWalletBalance": e8(t["cross_wallet"]),
                 "crossUnPnl": e8(t["cross_upnl"]), "availableBalance": e8(avail), "maxWithdrawAmount": e8(avail),
                 "updateTime": acct.update_ms}
        if not v3:
            asset["marginAvailable"] = True
        held = [s for s, p in acct.positions.items() if p.amt != 0]
        positions = []
        for s in held:
            p = acct.positions[s]
            mark = self.engine.mark(s, now)
            pd: dict[str, Any] = {"symbol": s, "positionSide": "BOTH", "positionAmt": _fmt(p.amt, self.engine.rules[s].quantity_precision),
                                  "unrealizedProfit": e8(self.engine.upnl(p, mark)), "isolatedMargin": e8(p.isolated_wallet),
                                  "notional": e8(p.amt * mark), "isolatedWallet": e8(p.isolated_wallet),
                                  "initialMargin": e8(self.engine.position_im(acct, p, mark)), "maintMargin": e8(self.engine.maint(p, mark)),
                                  "updateTime": p.update_ms}
            if not v3:
                lev = self.engine.leverage(acct, s)
                pd.update(leverage=str(lev), entryPrice=e8(p.entry), isolated=s in acct.isolated, breakEvenPrice=e8(p.entry),
                          positionInitialMargin=e8(self.engine.position_im(acct, p, mark)), openOrderInitialMargin="0.00000000",
                          maxNotional=f"{[b for b in self.engine.brackets[s] if b.initial_leverage >= lev][-1].cap:f}",
                          bidNotional="0", askNotional="0")
            positions.append(pd)
        doc: dict[str, Any] = {
            "totalInitialMargin": e8(t["position_im"] + t["open_order_im"]), "totalMaintMargin": e8(t["maint"]),
            "totalWalletBalance": e8(t["wallet"]), "totalUnrealizedProfit": e8(t["upnl"]), "totalMarginBalance": e8(t["margin_balance"]),
            "totalPositionInitialMargin": e8(t["position_im"]), "totalOpenOrderInitialMargin": e8(t["open_order_im"]),
            "totalCrossWalletBalance": e8(t["cross_wallet"]), "totalCrossUnPnl": e8(t["cross_upnl"]),
            "availableBalance": e8(avail), "maxWithdrawAmount": e8(avail), "assets": [asset], "positions": positions,
        }
        if not v3:
            doc = {"feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True, "canWithdraw": True, "updateTime": 0,
                   "multiAssetsMargin": False, "tradeGroupId": -1, **doc}
        return doc

    async def _account_v2(self, request: web.Request) -> web.Response:
        acct, _ = await self._signed(request, set())
        return _json(self._account_doc(acct, self.clock.now_ms(), v3=False))

    async def _account_v3(self, request: web.Request) -> web.Response:
        acct, _ = await self._signed(request, set())
        return _json(self._account_doc(acct, self.clock.now_ms(), v3=True))

    async def _balance(self, request: web.Request) -> web.Response:
        acct, _ = await self._signed(request, set())
        t = self.engine.totals(acct, self.clock.now_ms())
        avail = max(t["available"], Decimal(0))
        return _json([{"accountAlias": "SgsR", "asset": "USDT", "balance": e8(t["wallet"]), "crossWalletBalance": e8(t["cross_wallet"]),
                       "crossUnPnl": e8(t["cross_upnl"]), "availableBalance": e8(avail), "maxWithdrawAmount": e8(avail),
                       "marginAvailable": True, "updateTime": acct.update_ms}])

    async def _user_trades(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "orderId", "startTime", "endTime", "fromId", "limit"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        limit = _int(params, "limit") or 500
        if not 1 <= limit <= 1000:
            raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
        oid, from_id, start, end = (_int(params, k) for k in ("orderId", "fromId", "startTime", "endTime"))
        rows = [t for t in acct.trades if t["symbol"] == symbol and (oid is None or t["orderId"] == oid)
                and (from_id is None or t["id"] >= from_id) and (start is None or t["time"] >= start) and (end is None or t["time"] <= end)]
        return _json(rows[:limit] if from_id is not None or start is not None else rows[-limit:])

    async def _income(self, request: web.Request) -> web.Response:
        acct, params = await self._signed(request, {"symbol", "incomeType", "startTime", "endTime", "page", "limit"})
        limit = _int(params, "limit") or 100
        if not 1 <= limit <= 1000:
            raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
        symbol, kind = params.get("symbol"), params.get("incomeType")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        rows = [r for r in acct.income if (not symbol or r["symbol"] == symbol) and (not kind or r["incomeType"] == kind)
                and (start is None or r["time"] >= start) and (end is None or r["time"] <= end)]
        return _json(rows[:limit] if start is not None else rows[-limit:])

    async def _commission_rate(self, request: web.Request) -> web.Response:
        _, params = await self._signed(request, {"symbol"})
        symbol = self._symbol(_mandatory(params, "symbol"))
        c = self.engine.cfg
        return _json({"symbol": symbol, "makerCommissionRate": f"{c.maker_fee:f}", "takerCommissionRate": f"{c.taker_fee:f}"})

    # ------------------------------------------------------------------ user data

    async def _listen_new(self, request: web.Request) -> web.Response:
        acct = self.trading._account_for(request.headers.get("X-MBX-APIKEY"))
        await self.trading._params(request)
        for key, lk in self.trading._listen_keys.items():
            if lk.account is acct and lk.market == "usdm":
                lk.expires = time.monotonic() + _LISTEN_KEY_TTL_S
                return _json({"listenKey": key})
        key = "".join(secrets.choice(_KEY_CHARS) for _ in range(64))
        self.trading._listen_keys[key] = _ListenKey(acct, time.monotonic() + _LISTEN_KEY_TTL_S, market="usdm")
        return _json({"listenKey": key})

    def _own_key(self, request: web.Request) -> tuple[str, _ListenKey]:
        acct = self.trading._account_for(request.headers.get("X-MBX-APIKEY"))
        for key, lk in self.trading._listen_keys.items():
            if lk.account is acct and lk.market == "usdm":
                return key, lk
        raise Rejected(-1125, "This listenKey does not exist.")

    async def _listen_keepalive(self, request: web.Request) -> web.Response:
        await self.trading._params(request)
        key, lk = self._own_key(request)
        lk.expires = time.monotonic() + _LISTEN_KEY_TTL_S
        return _json({"listenKey": key})

    async def _listen_close(self, request: web.Request) -> web.Response:
        await self.trading._params(request)
        key, lk = self._own_key(request)
        self.trading._listen_keys.pop(key, None)
        for sub in lk.sockets:
            if hasattr(sub.ws, "close") and sub.queue.__class__.__name__ != "_Push":
                try:
                    await sub.ws.close()
                except Exception:  # noqa: BLE001 - the socket may already be gone
                    pass
        return _json({})
