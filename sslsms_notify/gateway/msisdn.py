"""Phone numbers (MSISDN): normalize what people type, reject what the gateway would.

Bangladesh mobile numbers are ``01[3-9]`` followed by eight digits; we accept
them as ``01XXXXXXXXX``, ``8801XXXXXXXXX``, ``+8801XXXXXXXXX`` or
``008801XXXXXXXXX``, with spaces, dashes, dots and parentheses anywhere, and
always send ``8801XXXXXXXXX`` (the form the gateway echoes back). Other
countries are accepted as international numbers of 8 to 16 digits (the spec's
field length), written with ``+`` or ``00`` or as bare digits that cannot be
mistaken for a Bangladesh number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BD_COUNTRY_CODE = "880"
MAX_DIGITS = 16  # spec: msisdn is numeric, length 16
MIN_INTERNATIONAL_DIGITS = 8

_SEPARATORS = re.compile(r"[\s\-.()/]")
_BD_NATIONAL = re.compile(r"01[3-9]\d{8}")
_BD_INTERNATIONAL = re.compile(r"8801[3-9]\d{8}")


class InvalidMsisdnError(ValueError):
    """A number that is not a valid recipient; names the number and the rule."""

    def __init__(self, raw: object, rule: str, *, field: str = "msisdn") -> None:
        self.raw = raw
        self.rule = rule
        self.field = field
        super().__init__(f"{field} {raw!r} is not a valid number: {rule}")


def normalize_msisdn(raw: object, *, field: str = "msisdn") -> str:
    """Return the number as the gateway wants it, or raise :class:`InvalidMsisdnError`."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise InvalidMsisdnError(raw, "must be a string of digits", field=field)
    compact = _SEPARATORS.sub("", raw)
    if not compact:
        raise InvalidMsisdnError(raw, "is empty", field=field)

    explicit_international = False
    if compact.startswith("+"):
        compact, explicit_international = compact[1:], True
    elif compact.startswith("00"):
        compact, explicit_international = compact[2:], True
    if not compact.isdigit() or not compact.isascii():
        raise InvalidMsisdnError(
            raw,
            "may contain only digits, an optional leading '+', spaces, dashes, dots, parentheses and slashes",
            field=field,
        )

    if compact.startswith(BD_COUNTRY_CODE):
        if _BD_INTERNATIONAL.fullmatch(compact):
            return compact
        raise InvalidMsisdnError(
            raw,
            "Bangladesh mobile numbers are +880 1[3-9] followed by 8 digits (13 digits in all)",
            field=field,
        )
    if compact.startswith("0") and not explicit_international:
        if _BD_NATIONAL.fullmatch(compact):
            return BD_COUNTRY_CODE + compact[1:]
        raise InvalidMsisdnError(
            raw,
            "Bangladesh mobile numbers are 01[3-9] followed by 8 digits (11 digits in all)",
            field=field,
        )
    if compact.startswith("0"):
        raise InvalidMsisdnError(raw, "a country code cannot start with 0", field=field)
    if not MIN_INTERNATIONAL_DIGITS <= len(compact) <= MAX_DIGITS:
        raise InvalidMsisdnError(
            raw,
            f"international numbers have {MIN_INTERNATIONAL_DIGITS} to {MAX_DIGITS} digits "
            "including the country code",
            field=field,
        )
    return compact


def is_valid_msisdn(raw: object) -> bool:
    try:
        normalize_msisdn(raw)
    except InvalidMsisdnError:
        return False
    return True


def unique_msisdns(numbers: Iterable[str]) -> tuple[list[str], list[int]]:
    """Split normalized numbers into first occurrences and the indexes of repeats."""
    seen: set[str] = set()
    unique: list[str] = []
    repeats: list[int] = []
    for index, number in enumerate(numbers):
        if number in seen:
            repeats.append(index)
        else:
            seen.add(number)
            unique.append(number)
    return unique, repeats


def mask_msisdn(msisdn: str) -> str:
    """Keep the country/operator prefix and the last three digits for logs."""
    if len(msisdn) <= 7:
        return "*" * len(msisdn)
    return msisdn[:5] + "*" * (len(msisdn) - 8) + msisdn[-3:]
