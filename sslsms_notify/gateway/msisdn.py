"""Phone numbers (MSISDN): the number policy for what people write, and the gateway's form.

**The policy** (:func:`normalize_msisdn`, applied wherever a person or a producer names a
number: configuration, URL, CLI, relay, handler, apprise, ``Notifier`` groups):

- Bangladesh mobile numbers, ``01[3-9]`` followed by eight digits, in every usual form:
  ``01712345678``, ``8801712345678``, ``+8801712345678``, ``008801712345678``, and
  ``1712345678`` (a spreadsheet dropped the leading 0), with spaces, dashes, dots,
  parentheses and slashes anywhere;
- other countries only with ``+`` or ``00`` and the country code (``+44 7911 123456``),
  8 to 16 digits in all (the spec's field length): bare digits are read as a
  Bangladeshi number, so ``919812345678`` is refused rather than guessed;
- anything else is refused with the rule it breaks.

**Our form**, what :func:`normalize_msisdn` returns and the pipeline keeps (groups,
outbox, caps): ``8801712345678`` for Bangladesh, ``+447911123456`` for other countries.
An international number keeps the ``+`` that made it one, so our form goes through the
policy again unchanged: a number read from a configuration and handed on (to a
``Notifier``, a route, an apprise URL, a ``--to``) is never refused the second time.

**The gateway's form** is digits only: ``8801712345678``, ``447911123456``, which is what
the gateway echoes back. :func:`wire_msisdn` makes it, at the gateway's door (the client
and the emulator), and accepts it too (the spec's plain digits given to the
:class:`~sslsms_notify.GatewayClient`, or an outbox written by an earlier version).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BD_COUNTRY_CODE = "880"
MAX_DIGITS = 16  # spec: msisdn is numeric, length 16
MIN_INTERNATIONAL_DIGITS = 8

_SEPARATORS = re.compile(r"[\s\-.()/]")
_BD_NATIONAL = re.compile(r"01[3-9]\d{8}")
_BD_NO_ZERO = re.compile(r"1[3-9]\d{8}")
_BD_INTERNATIONAL = re.compile(r"8801[3-9]\d{8}")
BARE_INTERNATIONAL = (
    "international numbers are written with + or 00 and the country code (+44 7911 123456); "
    "bare digits are read as a Bangladesh number, 01[3-9] followed by 8 digits"
)


class InvalidMsisdnError(ValueError):
    """A number that is not a valid recipient; names the number and the rule."""

    def __init__(self, raw: object, rule: str, *, field: str = "msisdn") -> None:
        self.raw = raw
        self.rule = rule
        self.field = field
        super().__init__(f"{field} {raw!r} is not a valid number: {rule}")


def normalize_msisdn(raw: object, *, field: str = "msisdn") -> str:
    """The number policy (see the module): our form, or :class:`InvalidMsisdnError`.

    ``normalize_msisdn(normalize_msisdn(x)) == normalize_msisdn(x)`` for every number it takes.
    """
    compact, explicit_international = _compact(raw, field)
    if compact.startswith(BD_COUNTRY_CODE):
        if _BD_INTERNATIONAL.fullmatch(compact):
            return compact
        raise InvalidMsisdnError(
            raw,
            "Bangladesh mobile numbers are +880 1[3-9] followed by 8 digits (13 digits in all)",
            field=field,
        )
    if not explicit_international:
        if _BD_NATIONAL.fullmatch(compact):
            return BD_COUNTRY_CODE + compact[1:]
        if _BD_NO_ZERO.fullmatch(compact):  # 01712345678 after a spreadsheet ate its 0
            return BD_COUNTRY_CODE + compact
        if compact.startswith("0"):
            raise InvalidMsisdnError(
                raw,
                "Bangladesh mobile numbers are 01[3-9] followed by 8 digits (11 digits in all)",
                field=field,
            )
        raise InvalidMsisdnError(raw, BARE_INTERNATIONAL, field=field)
    if compact.startswith("0"):
        raise InvalidMsisdnError(raw, "a country code cannot start with 0", field=field)
    if not MIN_INTERNATIONAL_DIGITS <= len(compact) <= MAX_DIGITS:
        raise InvalidMsisdnError(
            raw,
            f"international numbers have {MIN_INTERNATIONAL_DIGITS} to {MAX_DIGITS} digits "
            "including the country code",
            field=field,
        )
    return "+" + compact


def wire_msisdn(raw: object, *, field: str = "msisdn") -> str:
    """The gateway's form of a number given by the policy or already in that form.

    For the gateway client and the emulator: besides what :func:`normalize_msisdn`
    takes, the plain digits of an international number (what the spec calls an msisdn,
    and what an outbox written by 0.2 holds), 8 to 16 of them, not starting with 0.
    """
    try:
        return normalize_msisdn(raw, field=field).removeprefix("+")
    except InvalidMsisdnError as error:
        if error.rule != BARE_INTERNATIONAL:
            raise
        compact, _ = _compact(raw, field)
        if MIN_INTERNATIONAL_DIGITS <= len(compact) <= MAX_DIGITS:
            return compact
        raise InvalidMsisdnError(
            raw,
            f"international numbers have {MIN_INTERNATIONAL_DIGITS} to {MAX_DIGITS} digits "
            "including the country code",
            field=field,
        ) from None


def _compact(raw: object, field: str) -> tuple[str, bool]:
    """Digits without separators, and whether a leading + or 00 marked it international."""
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
    return compact, explicit_international


def display_msisdn(number: str) -> str:
    """A number in our form or the gateway's, as people write it: ``+8801712345678``."""
    return number if number.startswith("+") else "+" + number


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
