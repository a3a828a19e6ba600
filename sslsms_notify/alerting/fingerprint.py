"""Which alerts are "the same alert": a message's template, with its measurements blanked.

Two texts with the same :func:`template_of` are one alert for deduplication. The rule
(docs/fingerprints.md has the table): what *names* a thing is kept, so that a second
outage is never hidden behind the first; what *measures* it is blanked to ``#``.

Kept (identities)
    digits glued to a name (``web1``, ``db-01``, ``node_7``, ``eu-west-1``, ``sda1``,
    ``v2``), IPv4/IPv6 addresses, versions (``1.2.3``), ports (``host:8080``, ``:8080``),
    hostnames, ``#17``, ``5xx``, CIDR prefixes and the denominator of ``3/5``, a number
    right after ``HTTP``, ``status``, ``code``, ``errno`` or ``signal`` (``HTTP 503``),
    quoted text (a quoted *name* - a queue, a table, a module - is an identity).
Blanked (measurements)
    standalone numbers (sign, decimals, exponent, ``1,234`` and ``1,00,000`` grouping,
    Bangla digits), the number of ``95%``/``512MB``/``2.3 GiB``/``10k``/``45°C`` (the unit
    stays), durations *with* their unit (``3000ms``, ``1.5s``, ``1h30m``, ``5 minutes``:
    formatters rescale units, Go prints 950ms then 1.2s), clock times, dates, ISO 8601
    timestamps, UUIDs, ``0x`` values, hex ids of 8+ characters with a digit, numeric path
    segments (``/orders/17``), Kubernetes pod hash suffixes (``api-7f9c6b5d4-x2k8p``).

It runs per alert on the pipeline's worker, so it is one precompiled regex and a
single ``sub`` (1.5-3 µs for a log line of 80 characters).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["PLACEHOLDER", "template_of"]

PLACEHOLDER = "#"

# After a blanked token: not glued to a word, a placeholder, or a following IP/version
# part. "| #" keeps the rule idempotent: a separator followed by a token we blank turns
# into " #", and whatever stopped at that separator the first time must stop again.
_END = r"(?![\w#]|[.:+\-][\w#]| #)"
_END_DATE = r"(?![\w#]|[.:+\-][\d#]| #)"  # a date may be followed by ".tar.gz"

_HEX = "[0-9a-fA-F]"
_NUMBER = r"[-+]?+(?>\d+(?:,\d+)*(?:\.\d+)?(?:[eE][-+]?\d+)?)"
# Time units, written as a trie: the engine skips an alternative on its first letter.
_DURATION_UNIT = (
    r"(?:[nuµμ]s|s(?:ec(?:ond)?s?)?|m(?:s|in(?:ute)?s?|onths?)?|h(?:(?:ou)?rs?)?"
    r"|d(?:ays?)?|w(?:eeks?)?|y(?:(?:ea)?rs?)?)"
)
# Units that stay in the template ("95%" and "95 MB" must differ); "%" and "°" need no
# entry: they are not word characters, so a number before them ends cleanly anyway.
_UNIT = r"(?:[kKMGTPE]?i?(?:B|b(?:ytes?|ps)?)|[kKMGTPE]|x|[kMG]?Hz|[rqt]ps|ops|rpm|reqs?|pct|msgs?)"
_BANGLA_LETTER = r"[\u0980-\u09e5\u09f0-\u09ff]"  # "৫টি": a number and its classifier


def _cased(*words: str) -> str:
    """``HTTP|Http|http``: literal first letters let the engine skip alternatives fast."""
    return "|".join(f"{w.upper()}|{w.capitalize()}|{w.lower()}" for w in words)


# A number right after these words is a code naming a kind of failure (HTTP 503,
# status=500, exit code 137, errno 28, signal 9), and HTTP/1.1 is a protocol: keep them.
# (After "<digit>/" a number is a CIDR prefix or the "of" in "3/5": kept too.)
_CODE_WORDS = (
    rf"(?<!(?:{_cased('http')})[ =/]|(?:{_cased('code')})[ =])"
    rf"(?<!(?:{_cased('errno')})[ =]|(?:{_cased('http', 'code')}): )"
    rf"(?<!(?:{_cased('status', 'signal')})[ =]|(?:{_cased('errno')}): |(?:{_cased('http')})/\d )"
    rf"(?<!(?:{_cased('status', 'signal')}): )"
    rf"(?<!(?:{_cased('http')})/\d\.\d )"
)

_NUMERIC = (
    rf"{_CODE_WORDS}(?<![\d#]/){_NUMBER}(?:(?: ?{_DURATION_UNIT}(?:\d+(?:\.\d+)?{_DURATION_UNIT})*){_END}"
    rf"|(?={_UNIT}{_END})|(?={_BANGLA_LETTER})|{_END})"
)
_TIME = rf"\d\d?:\d\d(?::\d\d(?:[.,]\d+)?)?(?: ?[AaPp]\.?[Mm])?{_END}"
_SLASH_DATE = rf"(?:\d{{4}}/\d\d?/\d\d?|\d\d?/\d\d?/\d{{4}}){_END_DATE}"
_DATE = (
    r"(?:\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?)?(?:Z|[+-]\d\d(?::?\d\d)?)?"
    r"|\d{8}T\d{6}(?:[.,]\d+)?Z?"
    r"|\d\d?[.-]\d\d?[.-]\d{4})" + _END_DATE
)
_UUID = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}{_END}"
_HEX_ID = rf"(?=[a-fA-F]*\d){_HEX}{{8,}}+{_END}"
_OX = rf"0[xX]{_HEX}+{_END}"
# Deployment pods: name-<pod-template-hash>-<5 random>. The hash is a decimal number
# spelt in the alphabet 4-9,b,c,d,f (older clusters: plain digits).
_POD_SUFFIX = rf"(?<=[a-z0-9]-)[0-9bcdf]{{6,10}}-[bcdfghjklmnpqrstvwxz2456789]{{5}}{_END}"


def _separators() -> str:
    """The characters a blanked token may follow, as one regex character class.

    Not word characters, and not "#", "+", "." or combining marks/ZWJ, which glue
    digits to what precedes them (``#17``, ``a+1``, ``1.2``, Bangla vowel signs). The
    class is spelt out, not written ``[^\\w...]``: the engine tests a bitmap several
    times faster than the ``\\w`` category, and this test runs on every character.
    """
    blocks = [(0x00, 0x7F), (0xA0, 0xBF), (0xD7, 0xD7), (0xF7, 0xF7), (0x0964, 0x0965),
              (0x09F2, 0x09F3), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2190, 0x22FF),
              (0x3000, 0x303F), (0xFF01, 0xFF0F), (0xFF1A, 0xFF20)]  # fmt: skip
    chars = [
        ch
        for first, last in blocks
        for ch in map(chr, range(first, last + 1))
        if not ch.isalnum() and ch not in "_#+.\u200c\u200d" and not unicodedata.category(ch).startswith("M")
    ]
    return "[" + "".join(re.escape(ch) for ch in chars) + "]"


# A match is one separator character, then a token; the separator is replaced too
# ("retries=3" -> "retries #"), which is harmless in a hash input. Starting every match
# with a character class lets the engine scan for candidates in C, rather than try each
# alternative at each position. After "-" or ":" only self-delimiting ids are blanked:
# "db-01", "eu-west-1" and "host:8080" are names.
_VOLATILE = re.compile(
    rf"{_separators()}(?=[-+\da-fA-F])"
    rf"(?:(?<![:\-])(?:(?=[-+]?\d)(?:{_SLASH_DATE}|{_NUMERIC}|{_DATE}|{_TIME}|{_UUID}|{_OX}|{_HEX_ID})"
    rf"|(?=[a-fA-F]*\d|[a-fA-F]{{8}}-)(?:{_UUID}|{_HEX_ID}))"
    rf"|(?<=[:\-])(?:{_POD_SUFFIX}|{_UUID}|{_HEX_ID}|{_DATE}|(?<=[\"']:){_NUMERIC}))"
)
_REPLACEMENT = " " + PLACEHOLDER


def template_of(text: str) -> str:
    """``text`` with its measurements blanked: 'disk 91% on db1' ~ 'disk 95% on db1'.

    Idempotent, total on any ``str``, and a few microseconds: it runs per alert.
    """
    # The leading space lets a token at the very start have its separator.
    return _VOLATILE.sub(_REPLACEMENT, " " + text)[1:]
