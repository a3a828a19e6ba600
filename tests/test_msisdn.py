from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslsms_notify.gateway.msisdn import (
    InvalidMsisdnError,
    display_msisdn,
    mask_msisdn,
    normalize_msisdn,
    unique_msisdns,
    wire_msisdn,
)

bd_subscriber = st.builds(lambda op, rest: f"1{op}{rest:08d}", st.integers(3, 9), st.integers(0, 99_999_999))


@pytest.mark.parametrize(
    "raw",
    [
        "01712345678",
        "8801712345678",
        "+8801712345678",
        "008801712345678",
        "017 1234 5678",
        "017-1234-5678",
        "+880 1712-345678",
        "(017) 1234.5678",
    ],
)
def test_bangladesh_formats_normalize_to_880(raw: str) -> None:
    assert normalize_msisdn(raw) == "8801712345678"


@pytest.mark.parametrize("prefix", ["013", "014", "015", "016", "017", "018", "019"])
def test_every_operator_prefix_is_accepted(prefix: str) -> None:
    assert normalize_msisdn(prefix + "12345678") == "880" + prefix[1:] + "12345678"


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("01212345678", "01[3-9]"),
        ("0171234567", "11 digits"),
        ("017123456789", "11 digits"),
        ("8801212345678", "+880 1[3-9]"),
        ("", "empty"),
        ("017-abc", "only digits"),
        ("+0171234567", "cannot start with 0"),
        ("+1234567", "8 to 16 digits"),
        ("+12345678901234567", "8 to 16 digits"),
        ("০১৭১২৩৪৫৬৭৮", "only digits"),  # Bangla digits: the gateway wants ASCII
    ],
)
def test_invalid_numbers_name_the_number_and_the_rule(raw: str, rule: str) -> None:
    with pytest.raises(InvalidMsisdnError) as info:
        normalize_msisdn(raw)
    assert repr(raw) in str(info.value)
    assert rule in str(info.value)


def test_the_character_rule_names_every_separator_it_accepts() -> None:
    """The rule text must not forbid what the normalizer accepts (dots, parentheses, slashes)."""
    with pytest.raises(InvalidMsisdnError) as info:
        normalize_msisdn("(017) 12+34.5678")
    rule = info.value.rule
    assert rule == (
        "may contain only digits, an optional leading '+', spaces, dashes, dots, parentheses and slashes"
    )
    for separator in (" ", "-", ".", "(", ")", "/"):
        assert normalize_msisdn(f"017{separator}12345678") == "8801712345678", separator


def test_international_numbers_only_with_plus_or_00() -> None:
    # our form keeps the + that made it international; the gateway's form is digits only
    assert normalize_msisdn("+44 7911 123456") == "+447911123456"
    assert normalize_msisdn("0044 7911 123456") == "+447911123456"
    assert normalize_msisdn("+1 (415) 555-1234") == "+14155551234"
    assert wire_msisdn("+1 (415) 555-1234") == "14155551234"
    assert normalize_msisdn(8801712345678) == "8801712345678"
    # bare digits are read as a Bangladesh number: never guessed to be another country's
    for bare in ("447911123456", "919812345678", "14155551234", "4155551234"):
        with pytest.raises(InvalidMsisdnError) as info:
            normalize_msisdn(bare)
        assert "with + or 00 and the country code" in info.value.rule


def test_a_bangladesh_number_that_lost_its_leading_zero_is_still_one() -> None:
    """Spreadsheets turn 01712345678 into the number 1712345678."""
    assert normalize_msisdn("1712345678") == "8801712345678"
    assert normalize_msisdn(1712345678) == "8801712345678"
    with pytest.raises(InvalidMsisdnError):
        normalize_msisdn("1212345678")  # 012 is no mobile prefix


@pytest.mark.parametrize(
    "written",
    ["01712345678", "+880 1712-345678", "1712345678", "+44 7911 123456", "0044 7911 123456", "+14155551234"],
)
def test_our_form_goes_through_the_policy_again_unchanged(written: str) -> None:
    """A number read from a configuration and handed on (a group to the Notifier, a --to to
    the routes, targets into an apprise URL) is checked again there: it must pass."""
    ours = normalize_msisdn(written)
    assert normalize_msisdn(ours) == ours
    assert normalize_msisdn(display_msisdn(ours)) == ours
    assert wire_msisdn(ours) == ours.removeprefix("+")


def test_the_gateways_form_is_read_back_as_is() -> None:
    """The gateway echoes digits; an outbox of 0.2 holds them: the client and the emulator read them."""
    assert wire_msisdn("447911123456") == "447911123456"
    assert wire_msisdn("8801712345678") == "8801712345678"
    assert wire_msisdn("01712345678") == "8801712345678"
    assert display_msisdn("447911123456") == "+447911123456"
    with pytest.raises(InvalidMsisdnError):
        wire_msisdn("1234567")  # too short for any number


def test_field_name_is_in_the_error() -> None:
    with pytest.raises(InvalidMsisdnError, match=r"msisdns\[3\]"):
        normalize_msisdn("123", field="msisdns[3]")


@given(bd_subscriber, st.sampled_from(["0{}", "880{}", "+880{}", "00880{}"]), st.data())
def test_any_bd_number_in_any_format_normalizes_the_same(sub: str, fmt: str, data) -> None:
    raw = fmt.format(sub)
    # sprinkle separators anywhere
    separators = data.draw(
        st.lists(st.sampled_from([" ", "-", ".", ""]), min_size=len(raw), max_size=len(raw))
    )
    noisy = "".join(ch + sep for ch, sep in zip(raw, separators, strict=True))
    assert normalize_msisdn(noisy) == "880" + sub


@given(st.text(max_size=24))
def test_normalizer_never_crashes_and_is_idempotent(raw: str) -> None:
    try:
        number = normalize_msisdn(raw)
    except InvalidMsisdnError:
        return
    assert number.isdigit() and 8 <= len(number) <= 16
    assert wire_msisdn(number) == number  # the gateway's form is read back as is
    assert normalize_msisdn(display_msisdn(number)) == number  # and written back under the policy


def test_unique_msisdns_reports_repeats() -> None:
    unique, repeats = unique_msisdns(["a", "b", "a", "c", "b"])
    assert unique == ["a", "b", "c"]
    assert repeats == [2, 4]


def test_mask_keeps_prefix_and_tail() -> None:
    assert mask_msisdn("8801712345678") == "88017*****678"
