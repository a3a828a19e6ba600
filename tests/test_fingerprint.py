"""template_of: identities stay apart, measurements merge; docs/fingerprints.md is checked too."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sslsms_notify.alerting.fingerprint import IDENTITY_WORDS, template_of

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
        "UPS 2 on battery",
        "UPS 3 on battery",
        False,
        "a number right after an identity word (UPS, room, port, server...) is part of a name",
    ),
    ("Room 101 temperature", "Room 102 temperature", False, "rooms, racks, rows, floors, sites"),
    ("Port 23 down on sw1", "Port 24 down on sw1", False, "ports, interfaces, VLANs, links"),
    ("server 10 down", "server 11 down", False, "servers, hosts, nodes, instances, VMs"),
    ("GPU 0 fell off the bus", "GPU 1 fell off the bus", False, "GPUs, CPUs, cores, fans, PSUs"),
    (
        "shard 3 has no primary",
        "shard 4 has no primary",
        False,
        "shards, partitions, replicas, brokers, queues",
    ),
    ("ssd 2 failed in db1", "ssd 3 failed in db1", False, "disks, drives, SSDs, volumes, slots, bays"),
    (
        "pump No. 12 stopped",
        "pump No. 13 stopped",
        False,
        "`No. 12`, `no 12` and `nr 12` name a thing, like `#12`",
    ),
    (
        "Room 12A too hot",
        "Room 12B too hot",
        False,
        "...also with one capital letter glued on (`Room 12A`, `PSU 12V`)",
    ),
    (
        "GPU 71C too hot",
        "GPU 73C too hot",
        False,
        "...even when that letter could be a unit: write `GPU at 71C` or `GPU 71°C`, or pass `key=`",
    ),
    (
        "account 12345678 locked",
        "account 12345679 locked",
        False,
        "...and however long (eight digits elsewhere are a hex id)",
    ),
    (
        "disks 2 and 3 failed",
        "disks 2 and 4 failed",
        True,
        "...but only the number right after the word: write `disk 2 and disk 3`, or pass `key=`",
    ),
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
    (
        "disk 91% full",
        "disk 95% full",
        True,
        "the number of a percentage is blanked, also after an identity word",
    ),
    ("UPS 2 load 81%", "UPS 2 load 83%", True, "`UPS 2` is kept, the load is blanked"),
    ("fan 3 at 3000 rpm", "fan 3 at 3150 rpm", True, "`fan 3` is kept, the speed is blanked"),
    ("disk 95% full", "disk 95 MB full", False, "units stay: `#%` vs `# MB`"),
    ("ডিস্ক ৯১% পূর্ণ", "ডিস্ক ৯৫% পূর্ণ", True, "Bangla digits are numbers like ASCII digits"),
    ("disk ৯৫% full", "disk 95% full", True, "Bangla and ASCII digits are blanked alike"),
    ("৫টি সার্ভার ডাউন", "১২টি সার্ভার ডাউন", True, "a number before a Bangla classifier (টি) is a count"),
    ("সার্ভার১ ডাউন", "সার্ভার২ ডাউন", False, "digits glued to a Bangla name are part of it"),
    (
        "order 17 failed",
        "order 18 failed",
        True,
        "after any other word a standalone number is blanked: order and request ids vary per event",
    ),
    (
        "retry 3 of 5 failed",
        "retry 4 of 5 failed",
        True,
        "attempt counters too: `retry` is not an identity word",
    ),
    (
        "cpu=95 on db1",
        "cpu=97 on db1",
        True,
        "`key=17` and `key: 17` are values, whatever the key: an identity number follows a space",
    ),
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
    (
        "Room 101 temperature 45C",
        "Room 101 temperature 47C",
        True,
        "`45C`, `45 C`, `113F` are temperatures too",
    ),
    (
        "PDU 4 at 16A, 230V, 50Hz",
        "PDU 4 at 15A, 228V, 49Hz",
        True,
        "amperes, volts, watts, hertz (`16A`, `230V`, `2kW`, `2.4GHz`): digits then a unit",
    ),
    (
        "sensor c3 offline",
        "sensor c4 offline",
        False,
        "...while letters then digits are a name (`c3`, `v2`, `eth0`)",
    ),
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
        ("Room 101 temperature 45C", "Room 101 temperature #C"),
        ("UPS 2 on battery, load 81%, 230V", "UPS 2 on battery, load #%, #V"),
        ("Port 23 down after 3000 ms", "Port 23 down after #"),
        ("disk 2 has 512 MB free, cpu=95", "disk 2 has # MB free, cpu #"),
        ("disk 512 MB, fan 3000 rpm, node 5 minutes", "disk # MB, fan # rpm, node #"),
        ("queue 1,234 deep, server 10.5", "queue # deep, server #"),
        ("pump No. 12, nr 3, UPS-2, ups2, ups #2", None),
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


def test_docs_list_the_identity_words() -> None:
    """The list in docs/fingerprints.md, "Identity words": its `word` items are IDENTITY_WORDS."""
    section = DOCS.read_text(encoding="utf-8").split("\n### Identity words\n", 1)[1].split("\n#", 1)[0]
    items = "\n".join(line for line in section.splitlines() if line.startswith(("- ", "  ")))
    listed = re.findall(r"`([^`]+)`", items)
    assert len(listed) == len(set(listed)), "a word is listed twice"
    assert set(listed) == IDENTITY_WORDS


# Texts made of the pieces the rule looks at, so that hypothesis explores the edges.
_PIECES = [*"0123456789abcdefxmshdTZPMBACFV৫টি০ -:./#+,=%°\"'_\n\t", "HTTP", "HTTP/1.1 ", "code ", "status=",
           " #", "ms", "1h", "api-", "x2k8p", "deadbeef", "0x", "৳", "\u0981", "UPS ", "room ", "No. ",
           "controllers ", " MB", " rpm"]  # fmt: skip
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
    st.sampled_from(["load", "full", "on", "web1", "db-01", "10.0.0.7", "after", "ms", "%"]), max_size=6
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


@given(
    st.sampled_from(sorted(IDENTITY_WORDS)),
    st.sampled_from([str.lower, str.upper, str.capitalize]),
    st.integers(0, 10**12),
    st.sampled_from(["", " down", ", load 95%", " at 45C", ": 3 errors", ".", " failed after 3000 ms"]),
)
def test_a_number_after_an_identity_word_is_kept(
    word: str, case: Callable[[str], str], n: int, rest: str
) -> None:
    name = f"{case(word)} {n}"
    assert template_of(f"alert: {name}{rest}").startswith(f"alert: {name}")


@given(
    st.sampled_from(sorted(IDENTITY_WORDS)),
    st.integers(0, 10_000),
    st.sampled_from(["%", "°C", " MB", " rpm", " ms", " minutes", ".5", ",000"]),
)
def test_a_measurement_after_an_identity_word_is_blanked(word: str, n: int, unit: str) -> None:
    assert template_of(f"{word} {n}{unit} now") == template_of(f"{word} {n + 1}{unit} now")


@given(
    st.sampled_from(
        ["order", "request", "after", "in", "at", "retry", "since", "user", "ID", "backups", "ups2"]
    ),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
)
def test_a_number_after_another_word_is_blanked(word: str, x: int, y: int) -> None:
    assert template_of(f"{word} {x} failed") == template_of(f"{word} {y} failed")
