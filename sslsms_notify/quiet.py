"""Quiet hours: a group's wall-clock period when only serious alerts page it.

    [groups.managers]
    numbers = ["01712345678"]
    quiet = "22:00-08:00"            # start-end, HH:MM (or HH:MM:SS); may cross midnight
    timezone = "Asia/Dhaka"          # IANA name; Asia/Dhaka is every group's default
    quiet_min_severity = "critical"  # what still pages during quiet hours (the default)

A group given as such a table is still its numbers: a :class:`Group` is the tuple of
numbers a list-form group is, carrying its :class:`QuietHours`, so that everything
reading ``[groups]`` keeps working.

Times are the wall-clock times of the group's zone (:mod:`zoneinfo`; the ``tzdata``
package supplies the database where the system has none). Across a daylight-saving
change a period still starts and ends when the clock on the wall shows its times: a
22:00-08:00 period is 11 hours long on the night the clocks go back and 9 on the
night they go forward. A time the clocks skip (02:30 on the night they go forward)
is reached when they skip it; a time they show twice is its first showing.

This module imports nothing of the pipeline: the configuration checks a group's
table with it, and the pipeline asks it whether a group is quiet now.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .severity import SEVERITIES, severity_name
from .validation import InvalidValue, fail

#: every group's time zone unless its table names another (the gateway's country)
DEFAULT_TIMEZONE = "Asia/Dhaka"
#: what still pages a group during its quiet hours unless its table says otherwise
DEFAULT_MIN_SEVERITY = "critical"
#: the keys of a group given as a table
GROUP_KEYS = ("numbers", "quiet", "timezone", "quiet_min_severity")
#: severity name -> its level (as :class:`~sslsms_notify.alerting.alert.Severity`)
LEVELS = {name: 10 * (index + 1) for index, name in enumerate(SEVERITIES)}

_CLOCK = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"
_PERIOD = re.compile(rf"\s*{_CLOCK}\s*-\s*{_CLOCK}\s*")
PERIOD_RULE = 'must be a period "HH:MM-HH:MM" (or HH:MM:SS) of the day, e.g. "22:00-08:00"'


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (an IANA name such as ``Asia/Dhaka``); KeyError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise KeyError(name) from None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A group's quiet hours: below ``min_severity``, alerts wait for the period's end."""

    start: time
    end: time
    timezone: str = DEFAULT_TIMEZONE
    min_severity: str = DEFAULT_MIN_SEVERITY

    @classmethod
    def parse(
        cls,
        period: str,
        timezone: str = DEFAULT_TIMEZONE,
        min_severity: str = DEFAULT_MIN_SEVERITY,
        *,
        label: str = "quiet",
    ) -> QuietHours:
        """``QuietHours.parse("22:00-08:00", "Asia/Dhaka", "critical")``; a ValueError names ``label``."""
        if not isinstance(period, str):
            fail(label, period, PERIOD_RULE)
        match = _PERIOD.fullmatch(period)
        if match is None:
            fail(label, period, PERIOD_RULE)
        start, end = _clock(match.groups()[:3], label, period), _clock(match.groups()[3:], label, period)
        if start == end:
            fail(label, period, "must end at another time than it starts")
        if not isinstance(timezone, str):
            fail(_sibling(label, "timezone"), timezone, "must be an IANA time zone name")
        try:
            zone(timezone)
        except KeyError:
            fail(
                _sibling(label, "timezone"),
                timezone,
                'must be an IANA time zone name, e.g. "Asia/Dhaka" or "America/New_York"',
            )
        name = severity_name(min_severity) if isinstance(min_severity, str) else None
        if name is None:
            fail(
                _sibling(label, "quiet_min_severity"), min_severity, f"must be one of {', '.join(SEVERITIES)}"
            )
        return cls(start, end, timezone, name)

    @property
    def label(self) -> str:
        """The period as an SMS shows it: ``22:00-08:00``."""
        return f"{_shown(self.start)}-{_shown(self.end)}"

    @property
    def min_level(self) -> int:
        """:attr:`min_severity` as a level (``critical``: 50)."""
        return LEVELS[self.min_severity]

    def period_at(self, timestamp: float) -> tuple[float, float] | None:
        """The quiet period ``timestamp`` falls in, as (start, end) timestamps; None when awake."""
        where = zone(self.timezone)
        today = datetime.fromtimestamp(timestamp, where).date()
        for day in (today - timedelta(days=1), today):
            start = wall_instant(day, self.start, where)
            end = wall_instant(day if self.end > self.start else day + timedelta(days=1), self.end, where)
            if start <= timestamp < end:
                return start, end
        return None

    def describe(self) -> dict[str, str]:
        """As a group's table writes it (``config check``)."""
        return {"quiet": self.label, "timezone": self.timezone, "quiet_min_severity": self.min_severity}


class Group(tuple[str, ...]):
    """A group's phone numbers (the tuple a list-form group is), with its quiet hours (None: none)."""

    quiet: QuietHours | None

    def __new__(cls, numbers: Iterable[str], quiet: QuietHours | None = None) -> Group:
        group = super().__new__(cls, numbers)
        group.quiet = quiet
        return group

    def __repr__(self) -> str:
        return f"Group({tuple(self)!r}, quiet={self.quiet!r})"


def quiet_of(label: str, table: Mapping[str, Any]) -> QuietHours | None:
    """The quiet hours a group's table sets (None: none); ``label`` is the group's
    (``groups.managers``). Keys other than :data:`GROUP_KEYS` are refused, and so are
    ``timezone`` or ``quiet_min_severity`` without ``quiet``."""
    unknown = sorted(str(k) for k in table if k not in GROUP_KEYS)
    if unknown:
        known = ", ".join(GROUP_KEYS)
        raise InvalidValue(label, None, f"unknown key(s) {', '.join(unknown)} (known: {known})")
    if "quiet" not in table:
        given = [k for k in ("timezone", "quiet_min_severity") if k in table]
        if given:
            raise InvalidValue(f"{label}.{given[0]}", None, 'means nothing without quiet = "HH:MM-HH:MM"')
        return None
    return QuietHours.parse(
        table["quiet"],
        table.get("timezone", DEFAULT_TIMEZONE),
        table.get("quiet_min_severity", DEFAULT_MIN_SEVERITY),
        label=f"{label}.quiet",
    )


def wall_instant(day: date, at: time, where: ZoneInfo) -> float:
    """The timestamp when the clock in ``where`` first shows ``at`` on ``day``.

    A time the clocks skip (a daylight-saving change forward) is reached at the change.
    """
    naive = datetime.combine(day, at)
    instant = naive.replace(tzinfo=where, fold=0).timestamp()
    if datetime.fromtimestamp(instant, where).replace(tzinfo=None) == naive:
        return instant
    # skipped: the first whole second whose wall time is past it (the change itself)
    low, high = sorted((int(instant), int(naive.replace(tzinfo=where, fold=1).timestamp())))
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, where).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return float(high)


def _clock(parts: tuple[str | Any, ...], label: str, period: str) -> time:
    hour, minute, second = int(parts[0]), int(parts[1]), int(parts[2] or 0)
    if hour == 24 and minute == 0 and second == 0:
        return time(0)
    if hour > 23 or minute > 59 or second > 59:
        fail(label, period, f"{PERIOD_RULE}: hours 00-23, minutes and seconds 00-59")
    return time(hour, minute, second)


def _shown(at: time) -> str:
    return at.strftime("%H:%M:%S" if at.second else "%H:%M")


def _sibling(label: str, key: str) -> str:
    """``groups.managers.quiet`` -> ``groups.managers.timezone``."""
    parent = label.rpartition(".")[0]
    return f"{parent}.{key}" if parent else key
