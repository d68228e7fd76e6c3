"""Numbers as Binance writes them on the wire: one function for every price, quantity and amount.

Binance prints every decimal field with exactly 8 fractional digits and never in exponent form:
``"0.00000000"``, ``"0.00100000"``, ``"63250.12000000"`` (REST ``account``/``order``/``myTrades``,
streams, user data and the WebSocket API alike; see the recorded payloads under
``trader/data/binance`` and the examples in rest-api.md). Python's ``str(Decimal)`` switches to
exponent form for small values (``"0E-8"``, ``"1.0E-7"``), which clients that parse with a regex
or a fixed-point type reject — hence this module.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["e8"]

_E8 = Decimal("0.00000001")


def e8(x: Decimal | float | int) -> str:
    """``x`` as fixed 8-decimal text, rounded half-even, never exponent form, never ``"-0.00000000"``.

    Args:
        x: a Decimal, float or int (a price in quote units, a quantity in base units, an amount).

    Raises:
        ValueError: ``x`` is NaN or infinite (nothing on Binance's wire is).
    """
    if isinstance(x, Decimal):
        if not x.is_finite():
            raise ValueError(f"not a finite number: {x}")
        q = x.quantize(_E8, rounding=ROUND_HALF_EVEN)
        return f"{q.copy_abs() if q.is_zero() else q:f}"
    if isinstance(x, int):
        return f"{int(x)}.00000000"
    f = float(x)  # numpy scalars too
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {x}")
    text = f"{f:.8f}"
    return "0.00000000" if text == "-0.00000000" else text
