"""template_of: identities stay apart, measurements merge; docs/fingerprints.md is checked too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sslsms_notify.alerting.fingerprint import template_of

DOCS = Path(__file__).resolve().parent.parent / "docs" / "fingerprints.md"

# (text A, text B, same alert?, why). docs/fingerprints.md renders exactly these rows.
TABLE: list[tuple[str, str, bool, str]] = [
    ("web1 is down", "web2 is down", False, "digits glued to a name are part of the name"),
    (
        "db-01 replication stopped",
        "db-02 replication stopped",
        False,
        "a number after `-` belongs to the name",
    ),
    ("node_7 not ready", "node_8 not ready", False, "a number after `_` belongs to the name"),
    ("S3 errors in eu-west-1", "S3 errors in eu-west-2", False, "region names"),
    (
        "/dev/sda1 is 91% full",
        "/dev/sda2 is 91% full",
        False,
        "device names; the percentage alone would be blanked",
    ),
    ("api v2 returns errors", "api v3 returns errors", False, "versions are identities"),
    ("nginx 1.24.0 crashed", "nginx 1.25.3 crashed", False, "dotted versions are identities"),
    ("10.0.0.7 unreachable", "10.0.0.9 unreachable", False, "IPv4 addresses"),
    ("2001:db8::7 unreachable", "2001:db8::9 unreachable", False, "IPv6 addresses"),
    ("[fe80::1]:8080 refused", "[fe80::2]:8080 refused", False, "IPv6 addresses with a port"),
    (
        "db1:5432 refused connection",
        "db1:6432 refused connection",
        False,
        "a port after `:` is part of the address",
    ),
    ("route 10.0.0.0/16 withdrawn", "route 10.0.0.0/24 withdrawn", False, "CIDR prefixes"),
    ("web1.prod.example.com down", "web2.prod.example.com down", False, "host names"),
    (
        "HTTP 500 from payments",
        "HTTP 503 from payments",
        False,
        "a number after HTTP, status, code, errno or signal is a kind of failure",
    ),
    ("status=502 from api", "status=504 from api", False, "same rule with `=`"),
    ("upstream said HTTP/1.1 502", "upstream said HTTP/1.1 503", False, "same rule after an HTTP version"),
    ("job exited with code 1", "job exited with code 137", False, "exit codes name different failures"),
    ("write failed, errno 28", "write failed, errno 13", False, "errno values: ENOSPC vs EACCES"),
    (
        "payments returned 500",
        "payments returned 503",
        True,
        "without HTTP/status/code before it a status is a plain number: write `HTTP 503` or pass `key=`",
    ),
    (
        'queue "payments" is full',
        'queue "emails" is full',
        False,
        "quoted names are kept: often a queue, table, key or module",
    ),
    ("ticket #17 reopened", "ticket #18 reopened", False, "`#17` is a reference, not a count"),
    (
        "5xx rate high on lb1",
        "4xx rate high on lb1",
        False,
        "a number followed by letters that are not a unit is a name",
    ),
    ("pod web-0 crashed", "pod web-1 crashed", False, "StatefulSet ordinals are stable identities"),
    ("can't reach web1, won't retry", "can't reach web2, won't retry", False, "apostrophes are not quotes"),
    (
        "deploy 3fa9c1d failed",
        "deploy 8b2e4f0 failed",
        False,
        "hex ids shorter than 8 characters are kept (could be names)",
    ),
    ("disk 91% full", "disk 95% full", True, "the number of a percentage is blanked"),
    ("disk 95% full", "disk 95 MB full", False, "units stay: `#%` vs `# MB`"),
    ("ডিস্ক ৯১% পূর্ণ", "ডিস্ক ৯৫% পূর্ণ", True, "Bangla digits are numbers like ASCII digits"),
    ("disk ৯৫% full", "disk 95% full", True, "Bangla and ASCII digits are blanked alike"),
    ("৫টি সার্ভার ডাউন", "১২টি সার্ভার ডাউন", True, "a number before a Bangla classifier (টি) is a count"),
    ("সার্ভার১ ডাউন", "সার্ভার২ ডাউন", False, "digits glued to a Bangla name are part of it"),
    ("order 17 failed", "order 18 failed", True, "standalone numbers are blanked"),
    ("payment timeout after 3000 ms", "payment timeout after 3012 ms", True, "a duration is blanked"),
    (
        "payment timeout after 950ms",
        "payment timeout after 1.2s",
        True,
        "a duration is blanked with its unit: formatters rescale (Go prints 950ms, 1.2s)",
    ),
    ("backup took 1h30m", "backup took 45m", True, "compound durations"),
    ("backup took 00:05:13", "backup took 01:12:40", True, "clock durations"),
    ("retry in 1 minute", "retry in 5 minutes", True, "spelled-out units, singular or plural"),
    ("balance -5.5 BDT", "balance 1,234,567.25 BDT", True, "sign, decimals and thousands separators"),
    ("queue holds 1,00,000 items", "queue holds 99,000 items", True, "Indian (lakh) grouping"),
    ("CPU at 45°C", "CPU at 71°C", True, "temperatures"),
    ("memory 512MB over limit", "memory 640MB over limit", True, "sizes keep their unit"),
    (
        "memory 512MB over limit",
        "memory 2GB over limit",
        False,
        "...so a rescaled size is another template: pass `key=` if yours rescale",
    ),
    ("rate 10k rps", "rate 12k rps", True, "counts with a multiplier"),
    (
        "2026-11-25T18:39:02Z backup failed",
        "2026-11-26T02:00:00.123+06:00 backup failed",
        True,
        "ISO 8601 timestamps",
    ),
    (
        "2026-11-25 18:39:02,123 ERROR sync failed",
        "2026-11-25 18:40:11,904 ERROR sync failed",
        True,
        "Python logging timestamps",
    ),
    (
        "Nov 25 18:39:02 kernel: oom",
        "Nov 26 07:01:10 kernel: oom",
        True,
        "syslog timestamps: day and time are blanked",
    ),
    (
        "Nov 30 23:59:59 kernel: oom",
        "Dec 1 00:00:01 kernel: oom",
        False,
        "...but month and weekday names stay: one more SMS at a month boundary",
    ),
    ("sync failed at 18:39", "sync failed at 6:39 PM", True, "clock times"),
    ("stale since 1764095942", "stale since 1764096101", True, "unix epochs are numbers"),
    ("backup-2026-11-25.tar.gz missing", "backup-2026-11-26.tar.gz missing", True, "dates inside file names"),
    (
        "request 550e8400-e29b-41d4-a716-446655440000 failed",
        "request 6ba7b810-9dad-11d1-80b4-00c04fd430c8 failed",
        True,
        "UUIDs",
    ),
    (
        "commit 3fa9c1d2e4b5a6978812aa01 broke the build",
        "commit 8b2e4f0c9d1a7e6b5c4d3e2f broke the build",
        True,
        "git shas (8+ hex characters with a digit)",
    ),
    (
        "trace req-7f9c6b5d4e2a timed out",
        "trace req-0a1b2c3d4e5f timed out",
        True,
        "hex request ids, also after `-` or `:`",
    ),
    ("segfault at 0xdeadbeef", "segfault at 0x7ffd5e8c", True, "`0x` values"),
    (
        "GET /orders/17 failed",
        "GET /orders/18 failed",
        True,
        "a numeric path segment is an id, like `order 17`",
    ),
    ("3/5 replicas ready", "4/5 replicas ready", True, "the count in `3/5` is blanked..."),
    ("3/5 replicas ready", "3/7 replicas ready", False, "...its denominator is kept"),
    (
        "pod api-7f9c6b5d4-x2k8p OOMKilled",
        "pod api-5d8f6c9b47-q9zlm OOMKilled",
        True,
        "Deployment pods are replicas: their hash suffixes are blanked",
    ),
    (
        "pod api-7f9c6b5d4-x2k8p OOMKilled",
        "pod worker-7f9c6b5d4-x2k8p OOMKilled",
        False,
        "...the Deployment name stays",
    ),
    (
        '{"disk":91,"host":"db1"}',
        '{"disk":95,"host":"db1"}',
        True,
        'a JSON value after `":` is a number, not a port',
    ),
]


@pytest.mark.parametrize(("a", "b", "same", "why"), TABLE, ids=[f"{a} ~ {b}" for a, b, _, _ in TABLE])
def test_table(a: str, b: str, same: bool, why: str) -> None:
    assert (template_of(a) == template_of(b)) is same, (template_of(a), template_of(b), why)


@pytest.mark.parametrize(
    ("text", "template"),
    [
        ("disk 95% full on /dev/sda1", "disk #% full on /dev/sda1"),
        ("payment timeout after 3000 ms for order 17", "payment timeout after # for order #"),
        ("2026-11-25T18:39:02Z web1: HTTP 503 in 1532ms", "# web1: HTTP 503 in #"),
        ("17 orders failed", "# orders failed"),  # a token at the very start
        ("retries=3", "retries #"),  # the separator goes with the token
        ("pod api-7f9c6b5d4-x2k8p OOMKilled", "pod api # OOMKilled"),
        ("ডিস্ক ৯৫% পূর্ণ", "ডিস্ক #% পূর্ণ"),
        ("temp -5°C, rate 10k, memory 2.3 GiB", "temp #°C, rate #k, memory # GiB"),
        ("web1 10.0.0.7:8080 [2001:db8::7]:443 v1.2.3 eu-west-1 #17", None),  # all identities
        ("", ""),
    ],
)
def test_templates(text: str, template: str | None) -> None:
    assert template_of(text) == (text if template is None else template)


def _docs_rows() -> list[tuple[str, str, bool]]:
    """The example table of docs/fingerprints.md: | `text A` | `text B` | yes/no | why |."""
    rows = []
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\| `([^`]*)` \| `([^`]*)` \| (yes|no) \| .+ \|", line)
        if match:
            rows.append((match[1], match[2], match[3] == "yes"))
        elif line.startswith("| `"):
            pytest.fail(f"docs/fingerprints.md: row not in the table format: {line}")
    return rows


def test_docs_table_is_this_table_and_holds() -> None:
    rows = _docs_rows()
    assert rows == [(a, b, same) for a, b, same, _ in TABLE]
    wrong = [(a, b, same) for a, b, same in rows if (template_of(a) == template_of(b)) is not same]
    assert not wrong, f"docs/fingerprints.md rows that template_of() contradicts: {wrong}"


def test_docs_state_the_override() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    assert "key=" in docs
    assert "--key" in docs


# Texts made of the pieces the rule looks at, so that hypothesis explores the edges.
_PIECES = [*"0123456789abcdefxmshdTZPMB৫টি০ -:./#+,=%\"'_\n\t", "HTTP", "HTTP/1.1 ", "code ", "status=",
           " #", "ms", "1h", "api-", "x2k8p", "deadbeef", "0x", "৳", "\u0981"]  # fmt: skip
edgy_text = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
any_text = st.text() | edgy_text


@given(any_text)
@example("0-00000000")
@example("5ms-deadbeef12 1.5/3 HTTP/1.1 502 17 #5")
def test_idempotent_and_total(text: str) -> None:
    template = template_of(text)
    assert isinstance(template, str)
    assert template_of(template) == template


@given(st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs", "Nd", "Po", "Lo", "Mn"])))
def test_never_raises_on_odd_characters(text: str) -> None:
    """Lone surrogates, controls, marks and any script's digits: still a str back."""
    assert template_of(template_of(text)) == template_of(text)


words = st.lists(
    st.sampled_from(["disk", "full", "on", "web1", "db-01", "10.0.0.7", "after", "ms", "%"]), max_size=6
)


@given(words, words, st.integers(), st.integers())
def test_a_standalone_number_never_splits_an_alert(
    before: list[str], after: list[str], x: int, y: int
) -> None:
    left, right = " ".join(before), " ".join(after)
    assert template_of(f"{left} {x} {right}") == template_of(f"{left} {y} {right}")


@given(st.sampled_from(["web", "db-", "node_", "sda", "eu-west-", "10.0.0."]), st.integers(0, 10_000))
def test_digits_of_a_name_are_kept(name: str, n: int) -> None:
    assert f"{name}{n}" in template_of(f"{name}{n} is down after 3 retries")
