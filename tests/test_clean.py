"""clean_text: what reaches the gateway has no escapes, no controls, nothing that forces UCS-2 unseen."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sslsms_notify.gateway.clean import clean_text
from sslsms_notify.gateway.text import Encoding, count_segments

ZWNJ, ZWJ = "\u200c", "\u200d"


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("disk 95% full on web1", "disk 95% full on web1"),
        ("", ""),
        # ANSI colours and other escape sequences go whole
        ("\x1b[31mERROR\x1b[0m disk full", "ERROR disk full"),
        ("\x1b[1;38;5;196mbold red\x1b[m", "bold red"),
        ("\x1b[2K\x1b[1Gprogress done", "progress done"),  # erase line, move cursor
        ("\x1b(B\x1b[mplain", "plain"),  # tput sgr0
        ("\x1b]0;window title\x07hello", "hello"),  # OSC ended by BEL
        ("see \x1b]8;;https://x.example\x1b\\the docs\x1b]8;;\x1b\\ now", "see the docs now"),  # hyperlink
        ("mojibake \xe2\x80\x9cquoted\xe2\x80\x9d text", "mojibake \xe2quoted\xe2 text"),  # C1: one at a time
        ("a\x1b7b\x1b8c", "abc"),  # save/restore cursor
        ("half\x1b]0;never ended", "half0;never ended"),  # unterminated OSC: text kept
        ("a\x1b]0;x\nline two\x07", "a0;x\nline two"),  # ...and never eaten past a line
        ("trailing escape\x1b", "trailing escape"),
        # other control characters
        ("a\x01b\x00c\x7fd", "abcd"),
        ("C1\x80\x84\x9f gone", "C1 gone"),
        ("bell\x07 and backspace\x08", "bell and backspace"),
        # line endings
        ("one\r\ntwo\r\n", "one\ntwo"),
        ("old\rmac", "old\nmac"),
        ("form\x0cfeed\x0bvtab\x85nel\u2028ls", "form\nfeed\nvtab\nnel\nls"),  # breaks stay breaks
        ("a\n\n\n\n\nb", "a\n\nb"),  # at most one blank line
        ("a  \n \n \n\nb \t", "a\n\nb"),  # whitespace-only lines are blank lines
        ("\n\nbody\n\n", "body"),
        # tabs and invisible characters that would force UCS-2
        ("col1\tcol2", "col1 col2"),
        ("\u200bzero\ufeffwidth\u2060", "zerowidth"),
        ("6:39\u202fPM\xa0ok", "6:39 PM ok"),
        # bidirectional controls: an override would make the phone show "DEF: 1"
        ("\u202e1 :FED", "1 :FED"),
        ("a\u202ab\u202bc\u202cd\u202de\u202ef", "abcdef"),  # embeddings, pop, overrides
        ("a\u2066b\u2067c\u2068d\u2069e", "abcde"),  # isolates and their pop
        ("a\u200eb\u200fc\u061cd", "abcd"),  # LRM, RLM, ALM
        ("disk \u2067full\u2069\n\u202e", "disk full"),  # nothing left on a line: trimmed
        ("\u202e\u2066\u200f", ""),
        # nothing left
        ("\x00\x01\x02\x1b[0m\r\n\t ", ""),
        ("   ", ""),
        # ZWNJ/ZWJ shape Bangla and emoji: kept
        (f"র{ZWJ}্য ক্{ZWNJ}ষ", f"র{ZWJ}্য ক্{ZWNJ}ষ"),
        (f"ডিস্ক ৯৫% পূর্ণ \x1b[0m👨{ZWJ}👩{ZWJ}👧", f"ডিস্ক ৯৫% পূর্ণ 👨{ZWJ}👩{ZWJ}👧"),
        (f"🏳️{ZWJ}🌈 ok\r\n", f"🏳️{ZWJ}🌈 ok"),
        ("  indented\n    traceback line", "  indented\n    traceback line"),  # leading space kept
    ],
)
def test_clean(text: str, cleaned: str) -> None:
    assert clean_text(text) == cleaned


def test_coloured_ascii_log_line_is_gsm7() -> None:
    raw = "\x1b[1;31mERROR\x1b[0m\tdisk 95% full on web1\r\n"
    assert count_segments(raw).encoding is Encoding.UCS2  # the escape and tab alone force it
    info = count_segments(clean_text(raw))
    assert info.encoding is Encoding.GSM7
    assert info.segments == 1


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


@pytest.mark.parametrize("ch", BIDI)
def test_every_bidi_control_goes_and_the_text_stays_gsm7(ch: str) -> None:
    cleaned = clean_text(f"CPU {ch}93.5%{ch} on web1")
    assert cleaned == "CPU 93.5% on web1"
    assert count_segments(cleaned).encoding is Encoding.GSM7


def test_bangla_and_arabic_letters_stay() -> None:
    # only the invisible controls go; right-to-left letters lay themselves out
    assert clean_text("ডিস্ক পূর্ণ \u202eعطل\u202c") == "ডিস্ক পূর্ণ عطل"


def test_fast_path_returns_the_same_object() -> None:
    text = "payment timeout after 3000 ms for order 17 on web1, disk 95% full on /dev/sda1"
    assert clean_text(text) is text


def _allowed(ch: str) -> bool:
    return ch == "\n" or unicodedata.category(ch) != "Cc"


# Texts dense in the characters the rules touch.
_PIECES = [
    *"ab ৫\n\r\t\x00\x07\x1b\x7f\x85\x9b\x9c\x9d[]();0m\\\u200b\u200c\u200d\ufeff\u2060\xa0",
    *BIDI,
    "\x1b[31m",
    "\x1b]0;",
]
edgy_text = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@given(st.text() | edgy_text)
@example("\x1b\x00[31m")
@example("a \x00\n\n\n \x1b[0m\n\nb\r")
def test_idempotent_and_clean(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert all(_allowed(ch) for ch in cleaned)
    assert "\t" not in cleaned and "\x1b" not in cleaned
    assert not any(ch in cleaned for ch in "\u200b\u2060\ufeff" + BIDI)
    assert "\n\n\n" not in cleaned
    assert cleaned == cleaned.strip("\n")
    assert all(line == line.rstrip() for line in cleaned.split("\n"))


# Printable ASCII (space to tilde), not ending in a space: nothing to clean.
_PRINTABLE_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))


@given(_PRINTABLE_ASCII.filter(lambda text: not text.endswith(" ")))
def test_printable_ascii_without_trailing_space_is_untouched(text: str) -> None:
    assert clean_text(text) == text
