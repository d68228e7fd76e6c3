"""What every command shares: the common options, settings loading and error handling.

Every command accepts ``--config``, ``--profile``, ``--rest-url``, ``--ws-url`` and ``--store``
(environment: ``TRADER_CONFIG``, ``TRADER_PROFILE``, ``TRADER_REST_URL``, ``TRADER_WS_URL``,
``TRADER_STORE``). Heavy modules are imported inside commands, never here, so ``trader --help``
stays fast.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from trader.errors import NoResultError, TraderError

if TYPE_CHECKING:
    import asyncio

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="TRADER_CONFIG", help="YAML config file (overrides the defaults).", show_default=False),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", envvar="TRADER_PROFILE", help="Exchange profile: replay, binance-spot, binance-testnet, binance-usdm.", show_default=False),
]
RestUrlOpt = Annotated[
    str | None,
    typer.Option("--rest-url", envvar="TRADER_REST_URL", help="Override the profile's REST base URL.", show_default=False),
]
WsUrlOpt = Annotated[
    str | None,
    typer.Option("--ws-url", envvar="TRADER_WS_URL", help="Override the profile's WebSocket base URL.", show_default=False),
]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="TRADER_STORE", help="Kline store directory (default: user cache dir).", show_default=False),
]


def load(
    config: Path | None,
    profile: str | None,
    rest_url: str | None,
    ws_url: str | None,
    store: str | None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Load :class:`trader.config.Settings` with the common flags applied on top (highest precedence)."""
    from trader.config import load_settings

    flags: dict[str, Any] = dict(overrides or {})
    if profile:
        flags["profile"] = profile
    if store is not None:
        flags["store"] = {"path": store}  # validated by StoreConfig ('' is refused, not the current directory)
    return load_settings(config, overrides=flags, rest_url=rest_url, ws_url=ws_url)


def split_list(value: str | None) -> list[str]:
    """``"BTCUSDT, ethusdt"`` -> ``["BTCUSDT", "ethusdt"]``: split on commas only, each item stripped,
    so ``"btc usdt"`` stays one (invalid) item and is refused instead of becoming two symbols."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def symbols_and_intervals(settings: Any, symbols: str | None, intervals: str | None) -> tuple[list[str], list[str]]:
    """Validated ``--symbols`` (possibly empty) and ``--intervals`` (default ``universe.intervals``).

    Raises:
        ConfigError: an invalid symbol or interval.
    """
    from trader.models import parse_interval, validate_symbol

    wanted = [validate_symbol(s) for s in split_list(symbols)]
    ivs = [parse_interval(i) for i in split_list(intervals)] or list(settings.universe.intervals)
    return wanted, ivs


def client(settings: Any) -> Any:
    """The REST client of the active profile (enter it with ``async with``)."""
    from trader.exchange.rest import BinanceClient

    return BinanceClient(settings.exchange, settings.client)


#: after SIGINT/SIGTERM, a command that has not stopped by itself is cancelled this many seconds later
STOP_GRACE_S = 1.0


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run an async command so SIGINT/SIGTERM stop it within ~1 s, whatever it is doing.

    The first signal sets the ``stop`` event passed to ``main`` (loops end cleanly, live caches are
    persisted); if ``main`` has not returned :data:`STOP_GRACE_S` later — it was warming, connecting
    or waiting on the exchange — it is cancelled (``async with`` blocks still clean up and persist),
    and the command exits 130. A second signal cancels at once.

    Raises:
        KeyboardInterrupt: when the command was cancelled by a signal (the CLI maps it to exit 130).
    """
    import asyncio
    import signal

    async def runner() -> T:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None
        timer: list[asyncio.TimerHandle] = []

        def on_signal() -> None:
            if stop.is_set():
                task.cancel()
                return
            stop.set()
            timer.append(loop.call_later(STOP_GRACE_S, task.cancel))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await main(stop)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for t in timer:
                t.cancel()

    return asyncio.run(runner())


def fail(message: str, code: int) -> typer.Exit:
    """Print ``trader: error: <message>`` on stderr and return the Exit to raise."""
    print(f"trader: error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn a :class:`TraderError` into one stderr line and its exit code; anything else into a
    plain traceback (no locals: they may hold keys) and exit code 70."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NoResultError as exc:  # not an error: "ran fine, nothing to report" (exit 1, like grep)
            print(f"trader: {exc}", file=sys.stderr, flush=True)
            raise typer.Exit(exc.exit_code) from None
        except TraderError as exc:
            raise fail(str(exc) or type(exc).__name__, exc.exit_code) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception:  # noqa: BLE001 - the last line of defence prints and exits 70
            traceback.print_exc()
            raise typer.Exit(70) from None

    return wrapper  # type: ignore[return-value]
