"""csms_id generation: at most 20 alphanumeric characters, unique per day.

Uniqueness needs no coordination between processes or hosts: 8 characters of
milliseconds since the epoch, then 12 characters of base-62 randomness from the
OS (71 bits, fork-safe). Two ids collide only if they are made in the same
millisecond *and* draw the same 71 bits.
"""

from __future__ import annotations

import os
import re
import time

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CSMS_ID_MAX_LENGTH = 20
_TIME_CHARS = 8
_RANDOM_CHARS = CSMS_ID_MAX_LENGTH - _TIME_CHARS
_VALID = re.compile(r"[A-Za-z0-9]{1,20}")


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def new_csms_id(now: float | None = None) -> str:
    """A fresh id; sortable by creation time to the millisecond."""
    millis = int((time.time() if now is None else now) * 1000)
    randomness = int.from_bytes(os.urandom(9), "big")  # 72 bits >= 62**12
    return _base62(millis, _TIME_CHARS) + _base62(randomness, _RANDOM_CHARS)


def is_valid_csms_id(value: object) -> bool:
    return isinstance(value, str) and _VALID.fullmatch(value) is not None


def check_csms_id(value: object, *, field: str = "csms_id") -> str:
    """Return ``value`` or raise ValueError naming the field and the rule."""
    if not is_valid_csms_id(value):
        raise ValueError(f"{field} {value!r} is not valid: 1 to {CSMS_ID_MAX_LENGTH} letters or digits")
    return value  # type: ignore[return-value]
