"""SMS text rules: encoding, segment count, the 1000-character limit, truncation.

The gateway reports ``EN`` for texts that fit the GSM-7 alphabet and ``BN``
for anything else (sent as UCS-2). GSM-7 carries 160 units in one SMS or 153
per part of a long SMS, where characters of the extension table (``{}[]~|^\\€``
and form feed) take two units and are never split across parts. UCS-2 carries
70 UTF-16 units, or 67 per part; characters outside the BMP (emoji) take two
units and are never split either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import regex

MAX_SMS_CHARS = 1000  # spec: sms / text, length 1000

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_GRAPHEME = regex.compile(r"\X")


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"

    @property
    def sms_type(self) -> str:
        """The gateway's name for it in ``sms_type``."""
        return "EN" if self is Encoding.GSM7 else "BN"

    @property
    def single_limit(self) -> int:
        return 160 if self is Encoding.GSM7 else 70

    @property
    def part_limit(self) -> int:
        return 153 if self is Encoding.GSM7 else 67


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    encoding: Encoding
    characters: int
    units: int
    segments: int

    @property
    def sms_type(self) -> str:
        return self.encoding.sms_type


# One character class each (stdlib re: quicker than regex for plain classes), so the
# common checks run in C, not per character in Python.
_NOT_GSM7 = re.compile("[^" + "".join(re.escape(c) for c in sorted(GSM7_BASIC | GSM7_EXTENSION)) + "]")
_EXTENSION = re.compile("[" + "".join(re.escape(c) for c in sorted(GSM7_EXTENSION)) + "]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def is_gsm7(text: str) -> bool:
    return _NOT_GSM7.search(text) is None


def encoding_of(text: str) -> Encoding:
    return Encoding.GSM7 if is_gsm7(text) else Encoding.UCS2


def sms_type_of(text: str) -> str:
    return encoding_of(text).sms_type


def _unit_cost(ch: str, encoding: Encoding) -> int:
    if encoding is Encoding.GSM7:
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def _pack(costs: list[int], part_limit: int) -> int:
    """Parts needed when no character may straddle two parts."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part_limit:
            parts, used = parts + 1, 0
        used += cost
    return parts


def count_segments(text: str) -> SegmentInfo:
    """How many SMS the gateway will bill for ``text``."""
    encoding = encoding_of(text)
    wide = _EXTENSION if encoding is Encoding.GSM7 else _ASTRAL
    doubles = len(wide.findall(text))  # characters that cost two units
    units = len(text) + doubles
    if units <= encoding.single_limit:
        segments = 1
    elif not doubles:  # every character costs one unit: parts are plain division
        segments = -(-units // encoding.part_limit)
    else:  # a two-unit character never straddles two parts: pack them
        segments = _pack([_unit_cost(ch, encoding) for ch in text], encoding.part_limit)
    return SegmentInfo(encoding, len(text), units, segments)


def _count_segments_slowly(text: str) -> SegmentInfo:
    """The definition, character by character (the tests hold count_segments to it)."""
    encoding = Encoding.GSM7 if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text) else Encoding.UCS2
    costs = [_unit_cost(ch, encoding) for ch in text]
    units = sum(costs)
    segments = 1 if units <= encoding.single_limit else _pack(costs, encoding.part_limit)
    return SegmentInfo(encoding, len(text), units, segments)


def check_text(text: object, *, field: str = "sms") -> str:
    """Return ``text`` or raise ValueError naming the field and the rule."""
    if not isinstance(text, str):
        raise ValueError(f"{field} must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{field} must not be empty")
    if len(text) > MAX_SMS_CHARS:
        raise ValueError(f"{field} has {len(text)} characters; the gateway accepts at most {MAX_SMS_CHARS}")
    return text


def ellipsis_for(encoding: Encoding) -> str:
    # "…" is not in GSM-7: adding it would turn an EN text into a BN one.
    return "..." if encoding is Encoding.GSM7 else "…"


def fits(text: str, max_segments: int) -> bool:
    return len(text) <= MAX_SMS_CHARS and count_segments(text).segments <= max_segments


def truncate_to_segments(text: str, max_segments: int, *, marker: str | None = None) -> str:
    """Cut ``text`` to at most ``max_segments`` SMS, ending with a marker.

    Cuts only between grapheme clusters, so a Bangla conjunct (ক্ষ), a vowel
    sign, or an emoji with its modifiers is kept whole or dropped whole. The
    marker is chosen to keep the text's encoding (``...`` for GSM-7).
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, not {max_segments}")
    if fits(text, max_segments):
        return text
    encoding = encoding_of(text)
    if marker is None:
        marker = ellipsis_for(encoding)
    if encoding is Encoding.GSM7 and not is_gsm7(marker):
        encoding = Encoding.UCS2  # the caller's marker forces UCS-2
    limit = encoding.single_limit if max_segments == 1 else encoding.part_limit * max_segments
    budget = min(limit, MAX_SMS_CHARS) - sum(_unit_cost(ch, encoding) for ch in marker)

    kept: list[str] = []
    used = chars = 0
    for cluster in _GRAPHEME.findall(text):
        cost = sum(_unit_cost(ch, encoding) for ch in cluster)
        if used + cost > budget or chars + len(cluster) + len(marker) > MAX_SMS_CHARS:
            break
        kept.append(cluster)
        used += cost
        chars += len(cluster)
    # Part boundaries can cost a unit or two more than the flat budget: back off.
    while kept and not fits("".join(kept).rstrip() + marker, max_segments):
        kept.pop()
    return "".join(kept).rstrip() + marker
