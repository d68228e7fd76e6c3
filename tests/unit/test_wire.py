"""trader.wire.e8: every decimal on the venue's wire as Binance prints it (fixed 8 decimals)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.wire import e8

WIRE = re.compile(r"^-?\d+\.\d{8}$")


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e12"), max_value=Decimal("1e12")))
def test_decimals_are_fixed_8_and_exact(x: Decimal) -> None:
    text = e8(x)
    assert WIRE.match(text) and "E" not in text and text != "-0.00000000"
    assert Decimal(text) == x.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_floats_are_fixed_8_and_round_trip(x: float) -> None:
    text = e8(x)
    assert WIRE.match(text) and text != "-0.00000000"
    assert abs(float(text) - x) <= 5e-9 * max(1.0, abs(x) * 1e-7) + 5e-9


def test_the_cases_that_leaked_exponents() -> None:
    assert e8(Decimal("0E-8")) == "0.00000000"
    assert e8(Decimal("1.0E-7")) == "0.00000010"
    assert e8(Decimal("-0")) == "0.00000000"
    assert e8(Decimal("0.000000005")) == "0.00000000"  # half-even
    assert e8(Decimal("0.000000015")) == "0.00000002"
    assert e8(-0.0) == e8(0) == e8(np.float64(0)) == "0.00000000"
    assert e8(np.float32(1.5)) == "1.50000000" and e8(np.int64(3)) == "3.00000000"
    for bad in (float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")):
        with pytest.raises(ValueError):
            e8(bad)
