"""One exception tree for everything `trader` raises on purpose.

```
TraderError                      exit 70 unless a subclass says otherwise
├── ConfigError                  exit 2   bad flag, bad YAML, unknown key, wrong type
├── ExchangeError                exit 3   the exchange answered with an error (HTTP status + Binance code)
│   ├── ExchangeServerError      exit 3   HTTP 5xx: execution status unknown; retryable for reads
│   ├── RateLimited              exit 3   HTTP 429 / 418 with Retry-After; retryable after the wait
│   ├── OrderRejected            exit 3   an order refused (by the exchange, or by the client's own filter check)
│   └── OrderStatusUnknown       exit 3   an order whose fate could not be established yet (never resent)
│   └── InvalidKlinesError       exit 3   klines that break Binance's invariants (malformed payload)
├── NetworkError                 exit 3   connect/read failure or timeout; retryable
│   └── CircuitOpenError         exit 3   too many consecutive failures; fails fast until the cool-down
├── StoreError                   exit 4   the kline store cannot be read or written
│   ├── StoreLockedError         exit 4   another process holds the store's writer lock
│   ├── StoreCorruptError        exit 4   a stored value failed its integrity check
│   └── StoreLostError           exit 4   the store's directory says it held klines; its database is gone
├── ModelError                   exit 5   a trained model is missing, invalid or mismatched
├── StaleDataError               exit 6   nothing fresh enough to act on (every series stale or unscorable)
└── NoResultError                exit 1   the command ran fine but found nothing (e.g. no signal passes)
```

Exit codes are part of the CLI contract (README, "Exit codes"): cron jobs branch on them.
The CLI prints ``str(error)`` as one line on stderr; messages therefore never contain
secrets and never span lines.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "ExchangeError",
    "ExchangeServerError",
    "InvalidKlinesError",
    "ModelError",
    "NetworkError",
    "NoResultError",
    "OrderRejected",
    "OrderStatusUnknown",
    "RateLimited",
    "StaleDataError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreLostError",
    "TraderError",
]


class TraderError(Exception):
    """Root of every deliberate `trader` error.

    Attributes:
        exit_code: process exit code the CLI uses for this error class.
        retryable: True when repeating the same operation later may succeed.
    """

    exit_code: int = 70
    retryable: bool = False


class ConfigError(TraderError):
    """Invalid configuration or command-line input (exit code 2)."""

    exit_code = 2


class ExchangeError(TraderError):
    """The exchange rejected a request.

    Args:
        message: human-readable one-line description.
        status: HTTP status code of the response (e.g. 400).
        code: Binance error code from the body (e.g. -1121), or None if the body had none.
        method: HTTP method of the request that failed.
        url: URL of the request that failed, without query secrets (signatures are stripped).
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.method = method
        self.url = url


class ExchangeServerError(ExchangeError):
    """HTTP 5xx from the exchange. Binance: "the execution status is UNKNOWN".

    Retryable for reads (market data); a write must be reconciled, not blindly repeated.
    """

    retryable = True


class RateLimited(ExchangeError):
    """HTTP 429 (request weight exceeded) or 418 (IP banned), with the server's Retry-After.

    Args:
        retry_after_s: seconds the server asked us to wait before any further request.
        banned: True for HTTP 418 (IP ban), False for HTTP 429.

    Source: Binance spot REST API, "LIMITS" — "IP Limits".
    """

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float, banned: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s
        self.banned = banned


class OrderRejected(ExchangeError):
    """The order was definitely not placed: a 4xx from the exchange (with its Binance code, e.g.
    -1013 filter, -2010 balance / duplicate / would trigger) or the client's own filter check
    (``code`` None, ``local`` True: that is a bug of the caller's sizing, never sent)."""

    def __init__(self, message: str, *, local: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.local = local


class OrderStatusUnknown(ExchangeError):
    """An order that may or may not exist: its request timed out or got a 5xx, and looking it up
    by client order id has not settled it within the deadline. It is never resent while unknown;
    the journal keeps it for the next resolution attempt.

    Args:
        client_order_id: the order's ``newClientOrderId``.
    """

    retryable = True

    def __init__(self, message: str, *, client_order_id: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.client_order_id = client_order_id


class InvalidKlinesError(ExchangeError):
    """Klines that are not a valid kline block: malformed payload, ``close_time`` not
    ``open_time + interval - 1``, unsorted or off-boundary open times, non-finite values."""


class NetworkError(TraderError):
    """The request did not complete (connection refused, reset, timeout). Retryable."""

    exit_code = 3
    retryable = True


class CircuitOpenError(NetworkError):
    """The circuit breaker stayed open past the caller's deadline (repeated failures of distinct requests)."""

    retryable = False


class StoreError(TraderError):
    """The kline store cannot be opened, read or written (exit code 4)."""

    exit_code = 4


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock and the wait timed out."""


class StoreCorruptError(StoreError):
    """A stored chunk failed validation (wrong shape, unsorted or duplicate open times)."""


class StoreLostError(StoreError):
    """The store directory's ``store.json`` says it held klines, but its database is missing, empty or holds none."""


class ModelError(TraderError):
    """A trained model is missing, unreadable or does not match the feature set (exit code 5)."""

    exit_code = 5


class StaleDataError(TraderError):
    """Nothing could be scored: every series is stale, too short or failed (exit code 6).

    Distinct from :class:`NoResultError` (exit 1, "scanned, nothing passed"): a cron job must not
    read a dead feed as a quiet market.
    """

    exit_code = 6


class NoResultError(TraderError):
    """The command succeeded but produced nothing to act on (exit code 1, like grep)."""

    exit_code = 1
