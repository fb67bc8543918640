"""JWT claim values (RFC 7519 §2): NumericDate."""

from __future__ import annotations

import math

__all__ = ["finite_number"]


def finite_number(value: object) -> float:
    """RFC 7519 §2 NumericDate: a finite JSON number (booleans are not numbers); ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("out of range") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number
