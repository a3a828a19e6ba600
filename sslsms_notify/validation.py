"""Checks for option values: every error names the field, the value and the rule, in one line."""

from __future__ import annotations

import math
from typing import Any


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r}: must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    return float(value)


def non_negative(name: str, value: Any, *, maximum: float | None = None) -> float:
    number = _number(name, value)
    if number < 0:
        raise ValueError(f"{name}={value!r}: must not be negative")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}={value!r}: must be at most {maximum:g}")
    return number


def positive(name: str, value: Any, *, maximum: float | None = None) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ValueError(f"{name}={value!r}: must be greater than 0")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}={value!r}: must be at most {maximum:g}")
    return number


def integer(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name}={value!r}: must be a whole number")
    if value < minimum:
        raise ValueError(f"{name}={value!r}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value!r}: must be at most {maximum}")
    return int(value)
