from __future__ import annotations

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from sslsms_notify.gateway.text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MAX_SMS_CHARS,
    Encoding,
    check_text,
    count_segments,
    truncate_to_segments,
)

gsm_text = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=1200)


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, Encoding.GSM7, 1),
        ("a" * 161, Encoding.GSM7, 2),
        ("a" * 306, Encoding.GSM7, 2),
        ("a" * 307, Encoding.GSM7, 3),
        ("{" * 80, Encoding.GSM7, 1),  # extension characters count twice
        ("{" * 81, Encoding.GSM7, 2),
        ("ক" * 70, Encoding.UCS2, 1),
        ("ক" * 71, Encoding.UCS2, 2),
        ("ক" * 134, Encoding.UCS2, 2),
        ("ক" * 135, Encoding.UCS2, 3),
        ("😀" * 35, Encoding.UCS2, 1),  # astral characters are two UTF-16 units
        ("😀" * 36, Encoding.UCS2, 2),
    ],
)
def test_segment_counts(text: str, encoding: Encoding, segments: int) -> None:
    info = count_segments(text)
    assert info.encoding is encoding
    assert info.segments == segments
    assert info.sms_type == ("EN" if encoding is Encoding.GSM7 else "BN")


def test_extension_character_is_not_split_across_parts() -> None:
    # 152 plain + one 2-unit char: the € cannot straddle parts, so it starts part 2.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text).units == 306
    assert count_segments(text).segments == 3


@given(gsm_text)
def test_gsm_segments_bound_units(text: str) -> None:
    info = count_segments(text)
    assert info.encoding is Encoding.GSM7
    if info.units <= 160:
        assert info.segments == 1
    else:
        assert info.segments * 153 >= info.units
        assert (info.segments - 1) * 153 < info.units + info.segments  # packing loses < 1 unit/part


@given(st.text(max_size=600))
def test_segment_count_never_decreases_when_text_grows(text: str) -> None:
    info = count_segments(text)
    longer = count_segments(text + "x")
    if longer.encoding is info.encoding:
        assert longer.segments >= info.segments


def test_check_text_names_field_and_rule() -> None:
    with pytest.raises(ValueError, match="sms has 1001 characters; the gateway accepts at most 1000"):
        check_text("x" * 1001)
    with pytest.raises(ValueError, match="text must not be empty"):
        check_text("  ", field="text")
    assert check_text("x" * MAX_SMS_CHARS) == "x" * MAX_SMS_CHARS


def test_truncation_keeps_gsm_text_in_gsm() -> None:
    out = truncate_to_segments("a" * 500, 2)
    assert out.endswith("...")
    assert count_segments(out).encoding is Encoding.GSM7
    assert count_segments(out).segments == 2


def test_truncation_keeps_bangla_conjuncts_whole() -> None:
    text = "ক্ষমা করবেন, সার্ভার স্ত্রী ডাউন " * 20
    out = truncate_to_segments(text, 1)
    assert count_segments(out).segments == 1
    body = out.removesuffix("…")
    assert text.startswith(body.rstrip())
    clusters = regex.findall(r"\X", text)
    joined = ""
    for cluster in clusters:  # the cut falls on a cluster boundary
        if len(joined) >= len(body.rstrip()):
            break
        joined += cluster
    assert joined == body.rstrip()


def test_truncation_never_splits_surrogate_pairs() -> None:
    out = truncate_to_segments("😀" * 100, 1)
    assert count_segments(out).segments == 1
    assert all(ch in "😀…" for ch in out)


@given(st.text(min_size=1, max_size=1500), st.integers(1, 6))
def test_truncation_always_fits(text: str, budget: int) -> None:
    out = truncate_to_segments(text, budget)
    assert count_segments(out).segments <= budget
    assert len(out) <= MAX_SMS_CHARS
    if count_segments(text).segments <= budget and len(text) <= MAX_SMS_CHARS:
        assert out == text


@given(gsm_text | st.text(max_size=700) | st.text(alphabet="ab{€😀ক", max_size=400))
def test_fast_segment_count_equals_the_definition(text: str) -> None:
    from sslsms_notify.gateway.text import _count_segments_slowly

    assert count_segments(text) == _count_segments_slowly(text)
