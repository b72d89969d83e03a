"""Checks shared by the adapter configurations, which are also read from untrusted manifests."""

from __future__ import annotations

import math
from typing import Any


def require_int(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an ``int >= minimum``; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def require_float(
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> float:
    """``value`` as a finite ``float`` inside the given bounds; bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if above is not None and not number > above:
        raise ValueError(f"{name} must be > {above}, got {value!r}")
    if at_least is not None and not number >= at_least:
        raise ValueError(f"{name} must be >= {at_least}, got {value!r}")
    if below is not None and not number < below:
        raise ValueError(f"{name} must be < {below}, got {value!r}")
    return number
