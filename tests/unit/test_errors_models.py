from __future__ import annotations

import pytest

from trader import errors
from trader.models import interval_ms, parse_interval, validate_symbol


def test_error_tree_and_exit_codes() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.TraderError)
    assert errors.ConfigError.exit_code == 2
    assert errors.ExchangeError.exit_code == errors.NetworkError.exit_code == 3
    assert errors.StoreError.exit_code == 4 and errors.ModelError.exit_code == 5
    assert errors.NoResultError.exit_code == 1
    rl = errors.RateLimited("slow down", retry_after_s=30, banned=True, status=418, code=-1003)
    assert (rl.retry_after_s, rl.banned, rl.status, rl.code, rl.retryable) == (30, True, 418, -1003, True)
    assert errors.ExchangeServerError("x").retryable and not errors.ExchangeError("x").retryable
    assert issubclass(errors.CircuitOpenError, errors.NetworkError)


def test_intervals_and_symbols() -> None:
    assert interval_ms("1h") == 3_600_000 and interval_ms("1w") == 7 * 86_400_000
    with pytest.raises(errors.ConfigError, match="invalid interval"):
        parse_interval("7h")
    with pytest.raises(errors.ConfigError, match="no fixed length"):
        parse_interval("1M")
    assert validate_symbol(" btcusdt ") == "BTCUSDT"
    with pytest.raises(errors.ConfigError):
        validate_symbol("BTC/USDT")
