"""Durations as people write them: ``90s``, ``15m``, ``1h30m``, ``24h``, ``7d``, or seconds.

One reader and one writer for every door (the command line's ``--every``, the relay's
``"every": "24h"``, a route's ``escalate_after = "15m"``, the SMS that says
``(every 24h)``), and a :class:`Duration` rule for the settings registry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .validation import fail

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def parse_duration(value: Any) -> float | None:
    """Seconds, or None if ``value`` is no duration.

    A number (``90``, ``"90"``, ``1.5``) is seconds; a string may join parts with a
    unit each (``"1h30m"``, ``"2d"``), case and surrounding spaces ignored.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    if not _WHOLE.fullmatch(text):
        return None
    return sum(float(amount) * _UNITS[unit] for amount, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """``86400`` -> ``24h``, ``5400`` -> ``1h30m``, ``90`` -> ``1m30s``, ``604800`` -> ``7d``.

    Hours up to two days (``48h`` reads better than ``2d`` for a cron period); whole
    days beyond. Fractions of a second are shown under a minute, rounded above.
    """
    if 0 < seconds < 60 and not float(seconds).is_integer():
        return f"{seconds:.3g}s"
    total = max(0, round(seconds))
    if total == 0:
        return "0s"
    if total >= 2 * 86400 and total % 86400 == 0:
        return f"{total // 86400}d"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts)


@dataclass(frozen=True)
class Duration:
    """A duration from ``low`` to ``high`` seconds (a :class:`~sslsms_notify.validation.Rule`).

    ``low_open``: ``low`` itself is refused (durations that must be greater than 0).
    """

    low: float
    high: float
    low_open: bool = False

    @property
    def rule(self) -> str:
        low, high = format_duration(self.low), format_duration(self.high)
        span = f"greater than {low} and at most {high}" if self.low_open else f"from {low} to {high}"
        return f"must be a duration like 90s, 15m, 1h30m or 24h (or seconds), {span}"

    def check(self, label: str, value: Any, *, text: bool = False) -> float:
        seconds = parse_duration(value)
        if (
            seconds is None
            or seconds < self.low
            or (self.low_open and seconds == self.low)
            or seconds > self.high
        ):
            fail(label, value, self.rule)
        return seconds
