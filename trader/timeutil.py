"""Time helpers used across the package: one definition of the day in ms, of epoch ms -> ISO text and
of a date flag -> epoch ms (UTC throughout; Binance's times are epoch ms in UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from trader.errors import ConfigError

__all__ = ["DAY_MS", "HOUR_MS", "iso", "parse_date"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def iso(ms: int | None, fmt: str = "%Y-%m-%dT%H:%MZ") -> str | None:
    """Epoch ms -> UTC text (``YYYY-MM-DDTHH:MMZ`` by default; None stays None)."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def parse_date(text: str | None, flag: str) -> int | None:
    """``"2024-06-01"`` or an ISO-8601 time (UTC unless it says otherwise) -> epoch ms.

    Raises:
        ConfigError: not a date (the message names ``flag``).
    """
    if text is None:
        return None
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a date (YYYY-MM-DD or ISO-8601, UTC)") from None
    return int((d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp() * 1000)
