"""Server-side request-weight accounting of the replay exchange, per client IP.

Rules (Binance spot REST API, "LIMITS" — "IP Limits"), as the replay applies them:

- Weight is counted per IP in fixed one-minute windows aligned to the wall-clock minute; every
  response carries ``X-MBX-USED-WEIGHT-1M`` with the weight used in the current window.
- A request whose weight would take the window over ``limit`` is rejected with HTTP 429, a
  ``Retry-After`` header (whole seconds until the window rolls) and body ``-1003``; rejected
  requests do not add weight.
- "Repeatedly violating rate limits and/or failing to back off **after receiving** 429s will
  result in an automated IP ban (HTTP status 418)." A request that arrives while a 429's
  Retry-After runs is answered 429 again, and counts as a *violation* when the client could have
  known about the 429: it arrives on a connection that has already carried a 429 response (HTTP/1.1
  is sequential: the client read the 429 before sending it), or more than ``grace_s`` after the
  first 429 (one round trip: the venue's injected latency + 250 ms). Requests already on the wire
  when the 429 was sent cannot be recalled and are not held against the client. More than
  ``ban_after_429s`` violations ban the IP. Bans "scale in duration for repeat offenders, from 2
  minutes to 3 days": 120 s for the first, doubling each time, capped at 3 days. While banned,
  every request gets HTTP 418 with the remaining ban as Retry-After.

Wall time is injected (``time.time`` by default) so tests drive windows without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Admission", "WeightLimiter"]

_WINDOW_S = 60.0
_FIRST_BAN_S = 120.0
_MAX_BAN_S = 3 * 24 * 3600.0


@dataclass(slots=True)
class _IpState:
    window: int = -1
    used: int = 0
    backoff_until: float = 0.0
    backoff_from: float = 0.0
    warned: set[object] = field(default_factory=set)  # connections that carried a 429 in this back-off
    violations: int = 0
    banned_until: float = 0.0
    bans: int = 0


@dataclass(frozen=True, slots=True)
class Admission:
    """Decision for one request.

    Attributes:
        status: 200 to serve, 429 (over the limit / still backing off) or 418 (banned).
        used_weight: weight used by the IP in the current window after this decision.
        retry_after_s: whole seconds for the Retry-After header (0 when admitted).
        banned_until_ms: epoch ms the ban ends (418 only, else 0).
    """

    status: int
    used_weight: int
    retry_after_s: int = 0
    banned_until_ms: int = 0


class WeightLimiter:
    """Per-IP request-weight windows with 429 and escalating 418 bans.

    Args:
        limit: request weight allowed per IP per minute (Binance spot: 6000).
        ban_after_429s: violations (requests during a 429 back-off) tolerated before a ban.
        clock: wall-clock source in epoch seconds.
    """

    def __init__(self, limit: int = 6000, ban_after_429s: int = 3, clock: Callable[[], float] = time.time, grace_s: float = 0.25) -> None:
        self.limit = int(limit)
        self.ban_after_429s = int(ban_after_429s)
        self.grace_s = grace_s
        self._clock = clock
        self._ips: dict[str, _IpState] = {}

    def _state(self, ip: str, now: float) -> _IpState:
        st = self._ips.get(ip)
        if st is None:
            st = self._ips[ip] = _IpState()
        window = int(now // _WINDOW_S)
        if window != st.window:
            st.window = window
            st.used = 0
            st.violations = 0
        return st

    def used(self, ip: str) -> int:
        """Weight used by ``ip`` in the current window."""
        return self._state(ip, self._clock()).used

    def _start_backoff(self, st: _IpState, now: float, until: float, conn: object) -> None:
        if st.backoff_until <= now:  # a new back-off: forget who was warned in the last one
            st.backoff_from = now
            st.warned = set()
        st.backoff_until = max(st.backoff_until, until)
        st.warned.add(conn)

    def admit(self, ip: str, weight: int, conn: object = None) -> Admission:
        """Charge ``weight`` to ``ip`` if allowed, else say why not (429/418).

        Args:
            ip: client address.
            weight: request weight (from the endpoint table).
            conn: an identity of the client's connection (a violation needs the client to have
                been able to see the 429: see the module docstring).
        """
        now = self._clock()
        st = self._state(ip, now)
        if st.banned_until > now:
            return Admission(418, st.used, math.ceil(st.banned_until - now), int(st.banned_until * 1000))
        if st.backoff_until > now:
            if conn in st.warned or now - st.backoff_from > self.grace_s:
                st.violations += 1
                if st.violations > self.ban_after_429s:
                    duration = min(_FIRST_BAN_S * (2**st.bans), _MAX_BAN_S)
                    st.bans += 1
                    st.banned_until = now + duration
                    st.violations = 0
                    return Admission(418, st.used, math.ceil(duration), int(st.banned_until * 1000))
            st.warned.add(conn)
            return Admission(429, st.used, max(1, math.ceil(st.backoff_until - now)))
        if st.used + weight > self.limit:
            window_end = (st.window + 1) * _WINDOW_S
            self._start_backoff(st, now, window_end, conn)
            return Admission(429, st.used, max(1, math.ceil(window_end - now)))
        st.used += weight
        return Admission(200, st.used)

    def force_429(self, ip: str, retry_after_s: int = 1, conn: object = None) -> Admission:
        """Fault injection: reject this request with 429 and a short back-off, as an overloaded exchange might."""
        now = self._clock()
        st = self._state(ip, now)
        if st.banned_until > now:
            return Admission(418, st.used, math.ceil(st.banned_until - now), int(st.banned_until * 1000))
        self._start_backoff(st, now, now + retry_after_s, conn)
        return Admission(429, st.used, retry_after_s)
