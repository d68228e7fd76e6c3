"""Configuration: pydantic models of ``config/default.yaml`` and their loading.

Precedence, lowest to highest (each layer overrides the one before, key by key):

1. the defaults in these models (``config/default.yaml`` documents exactly these values;
   a test keeps the two identical);
2. a YAML file: ``--config FILE``, else ``$TRADER_CONFIG``, else ``<user config dir>/config.yaml``
   if it exists (platformdirs; ``~/.config/trader/config.yaml`` on Linux);
3. environment variables: ``TRADER_<SECTION>__<KEY>`` for any key (values parsed as YAML scalars,
   e.g. ``TRADER_REPLAY__PORT=9000``), plus the documented shortcuts ``TRADER_PROFILE``,
   ``TRADER_REST_URL``, ``TRADER_WS_URL`` and ``TRADER_STORE``;
4. command-line flags (``--profile``, ``--rest-url``, ``--ws-url``, ``--store`` and per-command flags).

Unknown keys and wrong types raise :class:`~trader.errors.ConfigError` naming the key path and,
for file values, the file and line (``config.yaml:12: replay.port: Input should be a valid integer``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trader.errors import ConfigError
from trader.models import duration_ms, parse_interval, validate_symbol

__all__ = [
    "ENV_PREFIX",
    "AccountConfig",
    "ClientConfig",
    "CostsConfig",
    "FactorConfig",
    "FaultConfig",
    "FuturesReplayConfig",
    "IndicatorConfig",
    "MLConfig",
    "MatchingReplayConfig",
    "ProfileConfig",
    "ReplayConfig",
    "RiskConfig",
    "ScanConfig",
    "Settings",
    "StoreConfig",
    "StreamConfig",
    "TradeConfig",
    "TuneConfig",
    "UniverseConfig",
    "WarmConfig",
    "WeightsConfig",
    "WsReplayConfig",
    "XGBoostConfig",
    "load_settings",
]

ENV_PREFIX = "TRADER_"

#: Environment shortcuts that scripts and cron jobs rely on -> the key path they set.
ENV_SHORTCUTS: dict[str, tuple[str, ...]] = {
    "TRADER_PROFILE": ("profile",),
    "TRADER_STORE": ("store", "path"),
}
#: Variables read elsewhere (not config keys): never treated as ``TRADER_<KEY>`` overrides.
_ENV_RESERVED = {"TRADER_CONFIG", "TRADER_REST_URL", "TRADER_WS_URL", "TRADER_API_KEY", "TRADER_API_SECRET", "TRADER_API_SECRET_FILE", "TRADER_ED25519_KEY_FILE"}


class _Model(BaseModel):
    """Base: unknown keys are errors, values are validated on assignment, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, defer_build=True)


class ProfileConfig(_Model):
    """Where one exchange lives. Only the base URLs differ between replay and real Binance."""

    rest_url: str = Field(description="REST base URL, no trailing slash, e.g. https://api.binance.com")
    ws_url: str = Field(description="WebSocket base URL, e.g. wss://stream.binance.com:9443")
    market: Literal["spot", "usdm"] = Field(
        "spot", description="API family: spot (/api/v3, limit 1000, weight 2) or usdm (/fapi/v1, limit 499)"
    )
    ws_api_url: str | None = Field(
        None, description="WebSocket API endpoint (user data); null = ws_url + /ws-api/v3 (the replay's layout)"
    )

    @property
    def ws_api(self) -> str:
        """The WebSocket API endpoint: ``ws_api_url`` or ``ws_url + "/ws-api/v3"``."""
        return self.ws_api_url or f"{self.ws_url}/ws-api/v3"

    @field_validator("rest_url", "ws_url", "ws_api_url")
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.isascii() or any(c.isspace() or ord(c) < 32 for c in value):
            raise ValueError("not a URL: it must be plain ASCII without spaces or control characters")
        schemes = ("http://", "https://") if info.field_name == "rest_url" else ("ws://", "wss://")
        if not value.startswith(schemes) or len(value) <= len(value.split("://")[0]) + 3:
            raise ValueError(f"{value!r} is not a {' or '.join(s[:-3] for s in schemes)} URL")
        return value


def _default_profiles() -> dict[str, ProfileConfig]:
    return {
        "replay": ProfileConfig(rest_url="http://127.0.0.1:8765", ws_url="ws://127.0.0.1:8765"),
        "binance-spot": ProfileConfig(
            rest_url="https://api.binance.com", ws_url="wss://stream.binance.com:9443",
            ws_api_url="wss://ws-api.binance.com:443/ws-api/v3",
        ),
        "binance-testnet": ProfileConfig(
            rest_url="https://testnet.binance.vision", ws_url="wss://stream.testnet.binance.vision",
            ws_api_url="wss://ws-api.testnet.binance.vision/ws-api/v3",
        ),
        "binance-usdm": ProfileConfig(
            rest_url="https://fapi.binance.com", ws_url="wss://fstream.binance.com", market="usdm"
        ),
        "binance-usdm-testnet": ProfileConfig(
            rest_url="https://testnet.binancefuture.com", ws_url="wss://stream.binancefuture.com", market="usdm"
        ),
    }


class StoreConfig(_Model):
    """Where the kline store lives. ``path: null`` means the platform user cache dir."""

    path: Path | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("the store path is empty (use null for the default location)")
        return value


class UniverseConfig(_Model):
    """Which symbols and intervals the commands work on by default."""

    quote_asset: str = "USDT"
    symbols: tuple[str, ...] = ()
    intervals: tuple[str, ...] = ("1h", "4h")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(validate_symbol(s) for s in value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one interval is required")
        try:
            return tuple(parse_interval(i) for i in value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class FaultConfig(_Model):
    """Fault injection of the replay exchange (all off by default)."""

    latency_ms: float = Field(0.0, ge=0, description="fixed delay added to every REST response, ms")
    jitter_ms: float = Field(0.0, ge=0, description="extra uniform random delay in [0, jitter_ms], ms")
    error_rate: float = Field(0.0, ge=0, le=1, description="fraction of REST requests answered HTTP 500 (-1001)")
    rate_429: float = Field(0.0, ge=0, le=1, description="fraction of REST requests answered HTTP 429 (-1003)")
    seed: int = Field(0, description="seed of the fault RNG, so a faulty run is reproducible")
    order_5xx_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of accepted orders answered 500/503 or left to time out: status unknown"
    )
    order_reject_rate: float = Field(0.0, ge=0, le=1, description="fraction of order requests rejected before the engine")
    order_latency_ms: float = Field(0.0, ge=0, description="extra delay of order endpoints, ms")
    order_5xx_mode: Literal["mixed", "500", "503", "hang"] = Field(
        "mixed", description="what order_5xx_rate answers: 500, 503, a held response (hang), or each at random (mixed)"
    )
    order_hang_s: float = Field(30.0, gt=0, description="how long a 'timed out' accepted order holds its response, s")
    user_data_drop_every_events: int = Field(0, ge=0, description="abort a user-data connection after this many events (0 = never)")


class WsReplayConfig(_Model):
    """WebSocket streams of the replay exchange (Binance's rules by default) and their faults.

    Taken as is by :class:`trader.replay.streams.StreamHub`.
    """

    update_ms: int = Field(2000, gt=0, description="replay ms between forming-kline / ticker updates (Binance: 2000 / 1000)")
    ping_interval_s: float = Field(20.0, gt=0, description="server ping every this many wall seconds")
    pong_timeout_s: float = Field(60.0, gt=0, description="disconnect a client without a pong within this, s")
    max_incoming_per_s: int = Field(5, ge=1, description="incoming messages per second before disconnection")
    max_streams: int = Field(1024, ge=1, description="streams per connection before disconnection")
    lifetime_s: float = Field(86_400.0, gt=0, description="connection lifetime, s; ends with serverShutdown")
    latency_ms: float = Field(0.0, ge=0, description="fault: delay of every outgoing message, ms")
    drop_every_s: float = Field(0.0, ge=0, description="fault: abort every connection after this many s (0 = never)")
    drop_every_messages: int = Field(0, ge=0, description="fault: abort a connection after this many events (0 = never)")
    malformed_rate: float = Field(0.0, ge=0, le=1, description="fault: probability of an extra malformed frame")
    seed: int = Field(0, description="seed of the stream fault RNG")


class AccountConfig(_Model):
    """One trading account of the replay venue: an API key with an HMAC secret or an Ed25519
    public key (PEM), and starting balances (asset -> amount)."""

    api_key: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    api_secret: str | None = Field(None, min_length=8, max_length=256, repr=False)
    ed25519_public_key: str | None = Field(None, description="PEM text of the account's Ed25519 public key")
    balances: dict[str, float] = Field(default_factory=lambda: {"USDT": 10_000.0})

    @model_validator(mode="after")
    def _one_key(self) -> AccountConfig:
        if (self.api_secret is None) == (self.ed25519_public_key is None):
            raise ValueError("give exactly one of api_secret (HMAC) or ed25519_public_key (PEM)")
        for asset, amount in self.balances.items():
            if not asset.isalnum() or not asset.isupper() or amount < 0:
                raise ValueError(f"balances: {asset}: {amount} is not an upper-case asset with an amount >= 0")
        return self


class MatchingReplayConfig(_Model):
    """How the replay venue fills orders (see :mod:`trader.replay.matching`)."""

    maker_fee: float = Field(0.001, ge=0, le=0.1, description="maker commission, fraction (0.001 = 0.1 %)")
    taker_fee: float = Field(0.001, ge=0, le=0.1, description="taker commission, fraction")
    fill_on_touch: bool = Field(False, description="a resting limit fills when the path reaches its price (else: trades through)")
    max_volume_share: float = Field(0.1, gt=0, le=1, description="largest share of one kline's volume one order fills")
    impact_bps: float = Field(5.0, ge=0, description="market-order impact, bps per 1 % of the kline's quote volume")
    order_limit_10s: int = Field(100, ge=1, description="new orders per account per 10 s (Binance: 100)")
    order_limit_1d: int = Field(200_000, ge=1, description="new orders per account per day (Binance: 200 000)")


class FuturesReplayConfig(_Model):
    """The replay venue's USD-M perpetual futures (see :mod:`trader.replay.futures`)."""

    maker_fee: float = Field(0.0002, ge=0, le=0.1, description="maker commission, fraction (Binance USD-M regular: 0.02 %)")
    taker_fee: float = Field(0.0005, ge=0, le=0.1, description="taker commission, fraction (Binance USD-M regular: 0.05 %)")
    funding_rate: float = Field(0.0001, ge=-0.03, le=0.03, description="funding rate per 8 h when no --funding file (0.0001 = 0.01 %)")
    funding_dir: Path | None = Field(None, description="per-symbol funding files <SYMBOL>.json in Binance's fundingRate format")
    brackets_file: Path | None = Field(None, description="a GET /fapi/v1/leverageBracket response to use instead of the shipped tiers")
    default_leverage: int = Field(20, ge=1, le=125, description="leverage of a symbol before POST /fapi/v1/leverage (Binance: 20)")
    wallet: float | None = Field(None, ge=0, description="each account's futures wallet, USDT (default: its spot USDT balance)")
    order_limit_10s: int = Field(300, ge=1, description="new futures orders per account per 10 s (Binance: 300)")
    order_limit_1m: int = Field(1200, ge=1, description="new futures orders per account per minute (Binance: 1200)")


class ReplayConfig(_Model):
    """The local Binance-compatible replay exchange."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    data_dir: Path | None = None
    start: str | int = "auto"
    speed: float = Field(1.0, ge=0, le=1e6)
    clock: Literal["replay", "wall"] = Field(
        "replay", description="replay: recorded time from `start` at `speed`; wall: the recording shifted so now = wall clock"
    )
    tls: bool = Field(False, description="serve https:// and wss:// with a self-signed certificate")
    spread_bps: float = Field(2.0, ge=0, le=1000, description="synthetic bid/ask spread around the path price, basis points")
    weight_limit: int = Field(6000, gt=0)
    ban_after_429s: int = Field(3, ge=1)
    faults: FaultConfig = FaultConfig()
    ws: WsReplayConfig = WsReplayConfig()
    accounts: list[AccountConfig] = Field(
        default_factory=list, description="trading accounts; empty = one generated account with 10 000 USDT"
    )
    matching: MatchingReplayConfig = MatchingReplayConfig()
    futures: FuturesReplayConfig = FuturesReplayConfig()


class ClientConfig(_Model):
    """The exchange REST client: timeouts, retries, circuit breaker, request-weight budget."""

    timeout_s: float = Field(10.0, gt=0, description="connect/read timeout per request, s")
    max_attempts: int = Field(5, ge=1, description="attempts per request (1 = no retry)")
    backoff_base_s: float = Field(0.2, gt=0, description="first retry wait (jittered exponential), s")
    backoff_max_s: float = Field(10.0, gt=0, description="cap of one retry wait, s")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="seconds the circuit stays open")
    weight_limit: int | None = Field(None, gt=0, description="weight/minute; null = 6000 spot, 2400 usdm")
    weight_margin: float = Field(0.1, ge=0, lt=1, description="fraction of the limit kept in reserve")
    concurrency: int = Field(20, ge=1, le=256, description="requests in flight at once")
    transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="HTTP transport under httpx's API: aiohttp (httpx-aiohttp, fast) or httpx's own"
    )


class StreamConfig(_Model):
    """WebSocket client and live cache (``warm --follow``, ``scan --live``); taken as is by
    :class:`trader.exchange.stream.KlineStream` and :class:`trader.live.LiveFeed`."""

    max_streams: int = Field(1024, ge=1, le=1024, description="streams per connection")
    batch: int = Field(200, ge=1, description="streams per SUBSCRIBE message")
    control_per_s: float = Field(4.0, gt=0, le=5, description="control messages per second")
    silence_s: float = Field(60.0, gt=0, description="silence before a connection is declared dead, s")
    backoff_base_s: float = Field(0.5, gt=0, description="first reconnect wait ceiling, s (full jitter, doubling)")
    backoff_max_s: float = Field(30.0, gt=0, description="reconnect wait cap, s")
    rotate_after_s: float = Field(84_600.0, gt=0, description="replace a connection after this, s (Binance cuts at 24 h)")
    open_timeout_s: float = Field(10.0, gt=0, description="connect + subscribe timeout of one attempt, s")
    connect_deadline_s: float = Field(30.0, gt=0, description="give up (exit 3) if no connection is subscribed by then, s")
    watchdog_s: float = Field(15.0, gt=0, description="how often the lag watchdog checks the exchange clock, s")
    lag_grace_s: float = Field(10.0, ge=0, description="a series is lagging once its newest close is this late, s")
    snapshot_s: float = Field(60.0, ge=0, description="seconds between persists of the live cache to the store")
    capacity: int = Field(300, ge=60, description="klines kept in memory per series")
    status_every_s: float = Field(60.0, gt=0, description="stderr status line (closed, reconnects, malformed frames, lag) every this often, s")


class WarmConfig(_Model):
    """``trader warm``."""

    klines: int = Field(1000, ge=1, le=5_000_000, description="history depth per series, klines (at most 5 000 000: 9.5 years of 1m)")
    lock_timeout_s: float = Field(60.0, ge=0, description="wait for another warm's lock, s (0 = exit at once)")
    deadline_s: float = Field(900.0, gt=0, description="overall deadline of one warm (waits for an open breaker included), s")


class IndicatorConfig(_Model):
    """Indicator periods, klines (see :mod:`trader.features.indicators`, which takes this model as is)."""

    rsi: int = Field(14, ge=2)
    ema_fast: int = Field(20, ge=2)
    ema_slow: int = Field(50, ge=2)
    macd_fast: int = Field(12, ge=2)
    macd_slow: int = Field(26, ge=2)
    macd_signal: int = Field(9, ge=2)
    atr: int = Field(14, ge=2)
    bb: int = Field(20, ge=2)
    bb_k: float = Field(2.0, gt=0)
    adx: int = Field(14, ge=2)
    volume: int = Field(20, ge=2)
    obv: int = Field(20, ge=2)
    vwap: int = Field(24, ge=2)

    @property
    def warmup(self) -> int:
        """Klines before every indicator has a value."""
        return max(self.ema_slow, self.macd_slow + self.macd_signal - 1, 2 * self.adx, self.bb, self.vwap, self.rsi + 1)


class WeightsConfig(_Model):
    """Weights of the factor scores in the blended score (any non-negative numbers; normalised)."""

    trend: float = Field(0.25, ge=0)
    momentum: float = Field(0.2, ge=0)
    volume: float = Field(0.1, ge=0)
    volatility: float = Field(0.1, ge=0)
    structure: float = Field(0.15, ge=0)
    mtf: float = Field(0.2, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "ml" in data:
            raise ValueError("scan.weights.ml is gone: with a model active the printed score is the model's; "
                             "mix in the hand-made factors with scan.blend (0-1)")
        return data

    @model_validator(mode="after")
    def _some_weight(self) -> WeightsConfig:
        if not any(v > 0 for v in self.model_dump().values()):
            raise ValueError("at least one factor weight must be > 0")
        return self


class FactorConfig(_Model):
    """Coefficients of the factor formulas (:mod:`trader.features.factors`); ``trader tune search`` fits them.

    A bias is a weighted sum of ``tanh``/clip terms; a negative weight turns a term around (e.g. a
    momentum term into a reversal term). Scales are in the units of their input (ATRs, RSI points).
    """

    trend_spread: float = Field(0.6, ge=-2, le=2, description="weight of tanh(EMA spread / ATR / trend_spread_scale)")
    trend_spread_scale: float = Field(2.0, gt=0)
    trend_distance: float = Field(0.4, ge=-2, le=2, description="weight of tanh((close - EMA slow) / ATR / trend_distance_scale)")
    trend_distance_scale: float = Field(3.0, gt=0)
    adx_ref: float = Field(25.0, gt=0, description="ADX at which the trend bias is no longer damped")
    adx_floor: float = Field(0.3, ge=0, le=1, description="damping of the trend bias at ADX 0")
    momentum_rsi: float = Field(0.4, ge=-2, le=2, description="weight of clip((RSI - 50) / rsi_scale)")
    rsi_scale: float = Field(20.0, gt=0)
    momentum_macd: float = Field(0.4, ge=-2, le=2, description="weight of tanh(macd_gain x MACD hist / ATR)")
    macd_gain: float = Field(4.0, gt=0)
    momentum_vwap: float = Field(0.2, ge=-2, le=2, description="weight of tanh(VWAP distance in ATRs / vwap_scale)")
    vwap_scale: float = Field(2.0, gt=0)
    volume_obv: float = Field(0.6, ge=-2, le=2, description="weight of tanh(obv_gain x OBV slope)")
    obv_gain: float = Field(2.0, gt=0)
    volume_z: float = Field(0.4, ge=-2, le=2, description="weight of tanh(volume z / volume_z_scale) x sign of the last kline")
    volume_z_scale: float = Field(2.0, gt=0)
    structure_state: float = Field(0.5, ge=-2, le=2, description="weight of the market structure state (+1/-1)")
    structure_ob: float = Field(0.2, ge=-2, le=2, description="weight of tanh(bullish - bearish order blocks)")
    structure_fvg: float = Field(0.15, ge=-2, le=2, description="weight of tanh((bullish - bearish gaps) / fvg_scale)")
    fvg_scale: float = Field(3.0, gt=0)
    structure_sweep: float = Field(0.15, ge=-2, le=2, description="weight of the latest liquidity sweep (+1/-1)")
    sharpness: float = Field(3.5, gt=0, le=10, description="a factor scores 50 + 50 sign(a) |a|^sharpness")


class ScanConfig(_Model):
    """``trader scan``."""

    min_score: float = Field(75.0, ge=0, le=100)
    lookback: int = Field(300, ge=60, le=5000)
    min_history: int = Field(200, ge=60)
    grace_s: float = Field(300.0, ge=0)
    strategy: Literal["vectorized", "serial", "threads", "processes"] = "vectorized"
    workers: int = Field(2, ge=1, le=64)
    block_symbols: int = Field(128, ge=1, description="symbols scored per block (bounds memory at large universes)")
    live_wait_s: float = Field(5.0, ge=0, description="scan --live: after the first close, wait this long for the rest, s")
    swing_length: int = Field(5, ge=1)
    structure_window: int = Field(120, ge=20)
    weights: WeightsConfig = WeightsConfig()
    factors: FactorConfig = FactorConfig()
    indicators: IndicatorConfig = IndicatorConfig()
    blend: float = Field(0.0, ge=0.0, le=1.0, description="with a model: weight of the hand-made factor score in the printed score (0: the model's alone)")
    fitted_until: str | None = Field(
        None, description="UTC date the weights/factors were fitted up to (tune search); tune evaluate reports only later moments"
    )

    @model_validator(mode="after")
    def _history(self) -> ScanConfig:
        if self.min_history > self.lookback:
            raise ValueError("min_history must not exceed lookback")
        return self


def _check_duration(value: str) -> str:
    try:
        duration_ms(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


#: A duration written as ``4h``, ``24h``, ``7d`` (:func:`trader.models.duration_ms`).
Duration = Annotated[str, AfterValidator(_check_duration)]


class XGBoostConfig(_Model):
    """XGBoost hyper-parameters of ``trader tune train`` (``tune search`` fits the main ones)."""

    max_depth: int = Field(3, ge=1, le=12, description="tree depth")
    learning_rate: float = Field(0.05, gt=0, le=1, description="shrinkage per boosting round")
    n_estimators: int = Field(400, ge=1, le=5000, description="boosting rounds at most (early stopping picks fewer)")
    early_stopping_rounds: int = Field(40, ge=1, description="rounds without improvement on the fold's validation slice")
    min_child_weight: float = Field(50.0, ge=0, description="minimum hessian per leaf (large: noisy labels)")
    subsample: float = Field(0.8, gt=0, le=1, description="rows sampled per tree")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="features sampled per tree")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation of leaf weights")


class BarrierConfig(_Model):
    """Triple-barrier label: take profit / stop loss in ATRs of the base interval, time limit = ``ml.horizon``."""

    take_profit_atr: float = Field(2.0, gt=0)
    stop_loss_atr: float = Field(1.0, gt=0)


class MLConfig(_Model):
    """The dataset, the model and its registry (``trader tune train``, the scan's ``ml`` factor)."""

    horizon: Duration = Field("24h", description="label horizon (forward return / time barrier)")
    target: Literal["excess", "barrier"] = Field("excess", description="label: excess return > 0, or triple-barrier win")
    fee: float = Field(0.001, ge=0, lt=0.05, description="fee per side, fraction; derived from costs (the taker fee of costs.market)")
    grid: Duration = Field("4h", description="moments sampled for training and evaluation")
    folds: int = Field(5, ge=2, le=20, description="walk-forward test folds")
    min_train_fraction: float = Field(0.4, gt=0, lt=1, description="share of the window before the first test fold")
    embargo: Duration = Field("24h", description="gap between a training fold's end (after the purge) and its test fold")
    valid_fraction: float = Field(0.15, gt=0, lt=0.5, description="end of each training fold used for early stopping only")
    nthread: int = Field(0, ge=0, le=256, description="XGBoost threads; 0 = every core")
    seed: int = Field(0, description="seed of training and of the permutation test")
    activate_min_t: float = Field(2.0, ge=0, description="activate a new model only if its out-of-sample rank IC t >= this")
    max_age: Duration = Field("7d", description="tune train --if-due: retrain a model older than this")
    retrain_interval: int = Field(50, ge=1, description="--if-due: or once this many new labelled signals exist")
    min_training_samples: int = Field(200, ge=1, description="refuse to train on fewer labelled rows")
    barrier: BarrierConfig = BarrierConfig()
    xgboost: XGBoostConfig = XGBoostConfig()


class TuneConfig(_Model):
    """``trader tune evaluate`` and ``trader tune search``."""

    horizons: tuple[Duration, ...] = Field(("4h", "24h", "72h"), min_length=1)
    thresholds: tuple[float, ...] = Field((60.0, 70.0, 75.0, 80.0), min_length=1)
    bootstrap: int = Field(1000, ge=100, le=100_000, description="block-bootstrap resamples (blocks = UTC weeks)")
    seed: int = Field(0, description="seed of bootstraps and random baselines")
    trials: int = Field(40, ge=1, description="tune search: Optuna trials")
    objective: Literal["ic", "excess", "backtest"] = Field(
        "ic", description="tune search: mean OOS rank IC, top-decile excess net of fees, or the trade plan's walk-forward backtest"
    )
    storage: str | None = Field(None, description="tune search: SQLAlchemy URL; null = SQLite in <store>/tune/optuna.db")
    heartbeat_s: int = Field(30, ge=1, le=3600, description="tune search: a worker's heartbeat; its trial is failed and re-run after 3x this without one")


class PortfolioConfig(_Model):
    """The ``portfolio`` plan (:mod:`trader.trade.portfolio`): a horizon-matched long/short portfolio of the model's ranking."""

    market: Literal["usdm", "spot"] = Field("usdm", description="usdm: long/short perpetuals; spot: long-only (exposed to the market)")
    k: int = Field(5, ge=1, le=50, description="positions per side: long the top k, short the bottom k of the model's ranking")
    band: int = Field(12, ge=1, le=100, description="no-trade band: a held position stays while its rank is within the top/bottom band")
    horizon: str = Field("24h", description="how long a sleeve holds its picks: the signal's horizon (sleeves = horizon / decision interval)")
    gross: float = Field(1.0, gt=0, le=125, description="gross exposure, multiple of equity (<= risk.leverage)")
    net: float = Field(0.0, ge=-1, le=1, description="net exposure, fraction of gross (usdm; 0 = market neutral)")
    weighting: Literal["equal", "inverse_vol"] = Field("equal", description="position sizes within a side")
    max_weight: float = Field(0.25, gt=0, le=10, description="largest position, multiple of equity")
    maker_wait: int = Field(1, ge=0, le=24, description="decisions a post-only order waits at the touch before the rest goes taker (0: taker)")
    min_trade: float = Field(0.1, ge=0, le=1, description="skip a rebalance trade smaller than this fraction of the position's target")
    liq_multiple: float = Field(2.0, ge=1, description="liquidation distance must be >= this multiple of risk.stop_loss (checked)")

    @model_validator(mode="after")
    def _band(self) -> PortfolioConfig:
        if self.band < self.k:
            raise ValueError(f"band ({self.band}) must be >= k ({self.k})")
        duration_ms(self.horizon)
        return self


class RiskConfig(_Model):
    """The trade plan and its hard limits (``trader trade``; enforced by :mod:`trader.trade.risk`)."""

    plan: Literal["seed", "portfolio"] = Field("seed", description="seed: the mission's 3-position plan; portfolio: risk.portfolio")
    portfolio: PortfolioConfig = PortfolioConfig()

    max_positions: int = Field(3, ge=1, le=100, description="open positions at once")
    leverage: float = Field(5.0, ge=1, le=125, description="USD-M futures only; spot always trades at 1")
    min_confidence: float | None = Field(
        None, ge=0, le=1, description="with a model: its probability needed to enter, besides the score; null = the score alone")
    min_score: float | None = Field(None, ge=0, le=100, description="score needed to enter; null = scan.min_score")
    stop_loss: float = Field(0.05, gt=0, lt=1, description="stop loss below the entry price, fraction (0.05 = -5 %)")
    take_profit: list[float] = Field(default_factory=lambda: [0.10, 0.20], description="take-profit ladder above the entry, fractions")
    take_profit_sizes: list[float] = Field(default_factory=lambda: [0.5, 0.5], description="share of the position sold at each rung")
    time_stop: str = Field("2h", description="close a position this long after its entry")
    max_order_notional: float = Field(1000.0, gt=0, description="largest entry, quote asset (USDT)")
    daily_loss_limit: float = Field(0.05, gt=0, lt=1, description="HALTED (flatten, no entries) at this loss of the day's starting equity")
    reduce_at: float = Field(0.03, gt=0, lt=1, description="REDUCING (no new entries) at this loss of the day's starting equity")
    kill_switch_file: Path | None = Field(None, description="if this file exists: flatten everything and halt")

    @model_validator(mode="after")
    def _ladder(self) -> RiskConfig:
        if len(self.take_profit) != len(self.take_profit_sizes) or not self.take_profit:
            raise ValueError("take_profit and take_profit_sizes need the same, non-zero length")
        if abs(sum(self.take_profit_sizes) - 1.0) > 1e-9 or any(s <= 0 for s in self.take_profit_sizes):
            raise ValueError("take_profit_sizes must be positive and sum to 1")
        if any(b <= a for a, b in zip(self.take_profit, self.take_profit[1:], strict=False)) or self.take_profit[0] <= 0:
            raise ValueError("take_profit must be positive and increasing")
        if self.reduce_at > self.daily_loss_limit:
            raise ValueError("reduce_at must not exceed daily_loss_limit")
        duration_ms(self.time_stop)
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9100"`` -> ``("127.0.0.1", 9100)``: a host (IP literal or DNS name) and a port 0-65535.

    Raises:
        ConfigError: not ``HOST:PORT``, a malformed IP address, or a port out of range.
    """
    import ipaddress

    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {value!r}: expected HOST:PORT with a port in 0-65535")
    looks_ip = all(c.isdigit() or c == "." for c in host) or ":" in host
    if looks_ip:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"listen address {value!r}: {host!r} is not a valid IP address") from None
    elif not all(part and len(part) <= 63 and part.replace("-", "").isalnum() for part in host.split(".")):
        raise ConfigError(f"listen address {value!r}: {host!r} is not a valid host name")
    return host, int(port)


class TradeConfig(_Model):
    """``trader trade``: strategy, decisions, ledger, observability."""

    strategy: str = Field("scan", min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_]+$", description="name in client order ids and the ledger")
    decision_interval: str = Field("1h", description="decide at every close of this interval")
    listen: str = Field("127.0.0.1:0", description="host:port of /health and /metrics (port 0: a free one, printed)")

    @field_validator("listen")
    @classmethod
    def _listen_ok(cls, v: str) -> str:
        try:
            parse_listen(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v
    orphans: Literal["adopt", "cancel", "report"] = Field(
        "cancel", description="venue orders / holdings the ledger does not know: cancel (orders; holdings reported), adopt, report")
    lookback: int = Field(1000, ge=100, le=10_000, description="klines per series a paper/live decision scores (1000: the backtest's numbers to ~1e-12)")
    ledger_dir: Path | None = Field(None, description="directory of the ledgers (one per account); null = user data dir")
    fill_poll_s: float = Field(1.0, gt=0, description="paper/live: how often open orders are polled between decisions, s")


class MarketFees(_Model):
    """Commission rates of one market, fractions (0.001 = 0.1 %)."""

    maker_fee: float = Field(ge=0, le=0.1, description="maker commission, fraction")
    taker_fee: float = Field(ge=0, le=0.1, description="taker commission, fraction")


class CostsConfig(_Model):
    """The one cost model: what every figure and every fill charges.

    Read by the labels and ``tune evaluate`` (``ml.fee``: the taker fee of ``market``, charged twice
    per round trip), the backtest and keyless paper (the simulated venue), and the replay venue's
    matching (``replay.matching`` fees and impact, ``replay.spread_bps``): those keys are derived
    from this section and cannot be set on their own (:meth:`Settings._one_cost_model`).
    Defaults: Binance's standard (VIP 0, no BNB discount) fee schedule — spot 0.1 % / 0.1 %,
    USD-M futures 0.02 % maker / 0.05 % taker.
    """

    market: Literal["spot", "usdm"] = Field("spot", description="the market whose fees labels and evaluation charge")
    spot: MarketFees = MarketFees(maker_fee=0.001, taker_fee=0.001)
    usdm: MarketFees = MarketFees(maker_fee=0.0002, taker_fee=0.0005)
    spread_bps: float = Field(2.0, ge=0, le=1000, description="bid/ask spread around the path price, basis points")
    impact_bps: float = Field(5.0, ge=0, description="market-order impact, bps per 1 % of the kline's quote volume")

    def fees(self) -> MarketFees:
        """The fees of :attr:`market`."""
        return self.usdm if self.market == "usdm" else self.spot


#: keys derived from ``costs`` (path -> how), refused when set to another value
_DERIVED_COSTS: dict[tuple[str, ...], Any] = {
    ("ml", "fee"): lambda c: c.fees().taker_fee,
    ("replay", "spread_bps"): lambda c: c.spread_bps,
    ("replay", "matching", "maker_fee"): lambda c: c.spot.maker_fee,
    ("replay", "matching", "taker_fee"): lambda c: c.spot.taker_fee,
    ("replay", "matching", "impact_bps"): lambda c: c.impact_bps,
    ("replay", "futures", "maker_fee"): lambda c: c.usdm.maker_fee,
    ("replay", "futures", "taker_fee"): lambda c: c.usdm.taker_fee,
}


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value) if isinstance(value, dict) else {}


class Settings(_Model):
    """The whole configuration. Build with :func:`load_settings`, never mutate (frozen)."""

    profile: str = "replay"
    profiles: dict[str, ProfileConfig] = Field(default_factory=_default_profiles)
    store: StoreConfig = StoreConfig()
    universe: UniverseConfig = UniverseConfig()
    replay: ReplayConfig = ReplayConfig()
    client: ClientConfig = ClientConfig()
    warm: WarmConfig = WarmConfig()
    scan: ScanConfig = ScanConfig()
    stream: StreamConfig = StreamConfig()
    ml: MLConfig = MLConfig()
    tune: TuneConfig = TuneConfig()
    risk: RiskConfig = RiskConfig()
    trade: TradeConfig = TradeConfig()
    costs: CostsConfig = CostsConfig()

    @model_validator(mode="before")
    @classmethod
    def _one_cost_model(cls, data: Any) -> Any:
        """Derive every fee, spread and impact from ``costs``; one set elsewhere to another value is an error."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        raw = data.get("costs")
        costs = raw if isinstance(raw, CostsConfig) else CostsConfig.model_validate(raw or {})
        for path, derive in _DERIVED_COSTS.items():
            value = derive(costs)
            parents = [data]
            node = data
            for key in path[:-1]:
                child = _as_dict(node.get(key))
                node[key] = child
                node = child
                parents.append(node)
            leaf = path[-1]
            if leaf in node and node[leaf] != value:
                src = {"ml.fee": f"costs.{costs.market}.taker_fee", "replay.spread_bps": "costs.spread_bps",
                       "replay.matching.impact_bps": "costs.impact_bps"}.get(
                    ".".join(path), f"costs.{'usdm' if path[1] == 'futures' else 'spot'}.{leaf}")
                raise ValueError(f"{'.'.join(path)} comes from the one cost model: set {src} instead (it is {value:g})")
            node[leaf] = value
        return data

    def entry_min_score(self) -> float:
        """The score an entry needs: ``risk.min_score``, or ``scan.min_score`` when that is null."""
        return self.risk.min_score if self.risk.min_score is not None else self.scan.min_score

    @model_validator(mode="after")
    def _profile_exists(self) -> Settings:
        if self.profile not in self.profiles:
            raise ValueError(f"unknown profile {self.profile!r}; known: {', '.join(sorted(self.profiles))}")
        return self

    @property
    def exchange(self) -> ProfileConfig:
        """The active profile (``profiles[profile]``)."""
        return self.profiles[self.profile]

    def data_dir(self) -> Path:
        """The user data directory of ledgers, journals and portfolio state (platform default)."""
        import platformdirs

        return Path(platformdirs.user_data_dir("trader", appauthor=False))

    def ledger_path(self, api_key: str | None) -> Path:
        """The default trade ledger of this profile and key: ``<trade.ledger_dir or data dir>/ledger-<profile>-<key id>.sqlite``
        (the key id is a hash: the key itself never appears in a path)."""
        import hashlib

        root = self.trade.ledger_dir or self.data_dir()
        key_id = hashlib.sha256((api_key or "paper").encode()).hexdigest()[:10]
        return Path(root) / f"ledger-{self.profile}-{key_id}.sqlite"

    def journal_path(self, api_key: str, market: str = "spot") -> Path:
        """The default order journal of this profile, key and market: ``<data dir>/orders-<profile>-<key id>[-usdm].sqlite``."""
        import hashlib

        key_id = hashlib.sha256(api_key.encode()).hexdigest()[:10]
        return self.data_dir() / f"orders-{self.profile}-{key_id}{'-usdm' if market == 'usdm' else ''}.sqlite"

    def tune_storage_url(self) -> str:
        """``tune.storage``, or the SQLite file ``<store>/tune/optuna.db`` (its directory created)."""
        if self.tune.storage is not None:
            return self.tune.storage
        path = self.store_path() / "tune"
        path.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path / 'optuna.db'}"

    def store_path(self) -> Path:
        """Directory of the kline store: ``store.path`` or the platform user cache dir + ``/store``."""
        if self.store.path is not None:
            return self.store.path.expanduser()
        import platformdirs

        return Path(platformdirs.user_cache_dir("trader", appauthor=False)) / "store"


# --------------------------------------------------------------------------- loading


#: YAML a config file may use: nesting depth and aliases (anchors are fine; "billion laughs" is not)
MAX_YAML_DEPTH = 50
MAX_YAML_ALIASES = 100
MAX_CONFIG_BYTES = 1 << 20  # a configuration is a few KB; anything over 1 MiB is refused before parsing


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing deep nesting, many aliases and recursive aliases.

    A "billion laughs" file (aliases of aliases) expands exponentially in anything that walks it,
    and a recursive alias (``&a [*a]``) never ends; a configuration needs neither.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._open_anchors: list[str] = []

    def _refuse(self, what: str) -> ConfigError:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        return ConfigError(f"{getattr(self, '_source', '<config>')}:{mark.line + 1}: {what}")

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping, refusing a key given twice (PyYAML lets the last one win without a word)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{getattr(self, '_source', '<config>')}:{line}: duplicate key {key!r} (first at line {seen[key]}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:  # type: ignore[override]
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise self._refuse(f"more than {MAX_YAML_ALIASES} YAML aliases")
            if event.anchor in self._open_anchors:
                raise self._refuse(f"recursive YAML alias *{event.anchor}")
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise self._refuse(f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
        anchor = getattr(event, "anchor", None) if not isinstance(event, yaml.AliasEvent) else None
        if anchor:
            self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1
            if anchor:
                self._open_anchors.pop()


def _line_index(node: yaml.Node) -> dict[tuple[str | int, ...], int]:
    """Map every key path in a composed YAML document to its 1-based line number.

    Each node is visited once: a node shared through aliases is indexed at its first path only, so
    the walk is linear in the file, not in its alias expansion.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(node, ())]
    while todo:
        current, path = todo.pop()
        lines.setdefault(path, current.start_mark.line + 1)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = key_node.value
                lines.setdefault((*path, key), key_node.start_mark.line + 1)
                todo.append((value_node, (*path, key)))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                todo.append((item, (*path, i)))
    return lines


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str | int, ...], int]]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a configuration is a few KB (wrong file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    try:
        loader = _BoundedLoader(text)
        loader._source = str(path)  # type: ignore[attr-defined]
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: top level must be a mapping of keys, got {type(data).__name__}")
    return data, _line_index(node) if node is not None else {}


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _ENV_RESERVED:
            continue
        if name in ENV_SHORTCUTS:
            path = ENV_SHORTCUTS[name]
        else:
            path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and path[-1] != "symbols" and path[-1] != "intervals":
            value = raw  # a flat variable never smuggles a structure in, except the documented lists
        if path[-1] in ("symbols", "intervals") and isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        _set_path(tree, path, value)
    return tree


def _format_errors(exc: ValidationError, source: str, lines: dict[tuple[str | int, ...], int]) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        line = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        where = f"{source}:{line}: " if line else (f"{source}: " if source else "")
        parts.append(f"{where}{key}: {msg}")
    return "; ".join(parts)


def load_settings(
    config_file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    rest_url: str | None = None,
    ws_url: str | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, file, environment and flags (in that precedence).

    Args:
        config_file: YAML file to read; None means ``$TRADER_CONFIG`` or the user config file if present.
        environ: environment to read ``TRADER_*`` variables from (default ``os.environ``).
        overrides: nested mapping of flag values (highest precedence), e.g. ``{"store": {"path": "/x"}}``.
        rest_url: override of the active profile's REST base URL (``--rest-url``/``$TRADER_REST_URL``).
        ws_url: override of the active profile's WebSocket base URL (``--ws-url``/``$TRADER_WS_URL``).

    Returns:
        A validated, frozen :class:`Settings`.

    Raises:
        ConfigError: malformed YAML, unknown keys, wrong types or unknown profile, naming key path and line.
    """
    env = os.environ if environ is None else environ
    source = ""
    lines: dict[tuple[str | int, ...], int] = {}
    data: dict[str, Any] = {}
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file)
    elif env.get("TRADER_CONFIG"):
        path = Path(env["TRADER_CONFIG"])
    else:
        import platformdirs

        candidate = Path(platformdirs.user_config_dir("trader", appauthor=False)) / "config.yaml"
        path = candidate if candidate.is_file() else None
    if path is not None:
        data, lines = _read_yaml(path)
        source = str(path)

    # Profiles are merged key by key onto the built-in ones, so a file can add one or change a URL.
    if isinstance(data.get("profiles"), dict):
        builtin = {k: v.model_dump() for k, v in _default_profiles().items()}
        data = dict(data)
        data["profiles"] = _deep_merge(builtin, data["profiles"])
    try:
        Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, lines)) from None

    merged = _deep_merge(data, _env_overrides(env))
    if overrides:
        merged = _deep_merge(merged, overrides)
    rest_url = rest_url or env.get("TRADER_REST_URL") or None
    ws_url = ws_url or env.get("TRADER_WS_URL") or None
    try:
        settings = Settings.model_validate(merged)
        if rest_url or ws_url:
            active = settings.exchange
            patched = active.model_copy(
                update={k: v for k, v in (("rest_url", rest_url), ("ws_url", ws_url)) if v}
            )
            patched = ProfileConfig.model_validate(patched.model_dump())
            settings = settings.model_copy(update={"profiles": {**settings.profiles, settings.profile: patched}})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, "environment/flags", {})) from None
    return settings
