"""Make a text from logs and scripts fit to send: no terminal escapes, no control characters.

Every door (logging handler, structlog processor, apprise plugin, CLI, relay) reaches the
gateway through the Notifier, which applies :func:`clean_text` to every alert text
(``Notifier._render``); keep it the one cleaning rule.

Control characters are invisible on a phone and some gateways reject them; worse, any
character outside GSM-7 (a tab, a zero-width space, an NBSP) silently switches the whole
SMS to UCS-2, which holds 70 characters instead of 160 and so costs 2-3x as much.
"""

from __future__ import annotations

import re

__all__ = ["clean_text"]

# ECMA-48 escape sequences, removed whole: "\x1b[31m" must not leave "[31m" behind.
# Only the 7-bit forms (ESC ...): C1 characters in a str are far more often mojibake
# (UTF-8 read as Latin-1 turns "”" into "â\x80\x9d") than 8-bit CSI or OSC, and parsing
# them as sequences would eat real text. They are dropped one by one, like other controls.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement, erase line
    r"|\x1b[\]PX^_][^\x07\x1b\x9c\r\n]*(?:\x07|\x1b\\|\x9c)"  # OSC/DCS/SOS/PM/APC ... BEL or ST
    r"|\x1b[ -/]+[0-~]"  # nF: character set selection, e.g. tput's "\x1b(B"
    r"|\x1b[0-~]"  # any other two-character escape (and an unterminated OSC's head)
)

_NEWLINE = "\n"
_TABLE: dict[int, str | None] = {
    # Line breaks that are not "\n" (Python's str.splitlines set): a line break must not
    # vanish and glue two words together.
    **dict.fromkeys(map(ord, "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), _NEWLINE),
    # GSM-7 has no tab: one tab would make the whole SMS UCS-2.
    ord("\t"): " ",
    # No-break spaces look like spaces but are not GSM-7 either (U+202F is what newer
    # locale data puts before "PM").
    **dict.fromkeys(map(ord, "\xa0\u2007\u202f"), " "),
    # Every other C0 control, DEL, and the C1 controls.
    **dict.fromkeys([*range(0x00, 0x09), *range(0x0E, 0x1C), 0x1F, *range(0x7F, 0x85), *range(0x86, 0xA0)]),
    # Zero-width space, word joiner, BOM: invisible, and they force UCS-2. ZWNJ and ZWJ
    # (U+200C, U+200D) stay: they change how Bangla conjuncts and emoji sequences render.
    **dict.fromkeys(map(ord, "\u200b\u2060\ufeff")),
    # Bidirectional controls: embeddings and overrides (U+202A-U+202E), isolates
    # (U+2066-U+2069) and the marks LRM, RLM, ALM (U+200E, U+200F, U+061C). Invisible
    # and UCS-2 like the ones above, and worse: an override re-orders what the phone
    # shows, so "\u202e1 :FED" reads "DEF: 1" (a text can say the opposite of what it
    # holds). No SMS needs them: a phone lays out Bangla, Arabic or Hebrew by itself.
    **dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]),
}
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """``text`` without escape sequences or control characters, ready for an SMS.

    CRLF and CR become LF, tabs and no-break spaces a space; trailing spaces go, as do
    leading and trailing blank lines, and at most one blank line separates paragraphs.
    ``""`` means nothing visible was left.
    """
    if text.isascii() and text.isprintable() and text[-1:] != " ":
        return text  # the common case: one printable line, nothing to do
    text = _ESCAPES.sub("", text.replace("\r\n", _NEWLINE))
    text = _TRAILING_SPACE.sub("", text.translate(_TABLE))
    return _BLANK_LINES.sub("\n\n", text).strip(_NEWLINE)
