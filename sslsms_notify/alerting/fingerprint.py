"""Which alerts are "the same alert": a message's template, with its measurements blanked.

Two texts with the same :func:`template_of` are one alert for deduplication. The rule
(docs/fingerprints.md has the table): what *names* a thing is kept, so that a second
outage is never hidden behind the first; what *measures* it is blanked to ``#``.

Kept (identities)
    digits glued to a name (``web1``, ``db-01``, ``node_7``, ``eu-west-1``, ``sda1``,
    ``v2``), IPv4/IPv6 addresses, versions (``1.2.3``), ports (``host:8080``, ``:8080``),
    hostnames, ``#17``, ``5xx``, CIDR prefixes and the denominator of ``3/5``, a number
    right after ``HTTP``, ``status``, ``code``, ``errno`` or ``signal`` (``HTTP 503``),
    a whole number right after an identity word (:data:`IDENTITY_WORDS`) and a space
    (``UPS 2``, ``Room 101``, ``Port 23``, ``No. 12``, also ``Room 12A``) unless a unit
    follows it, quoted text (a quoted *name* - a queue, a table, a module - is an identity).
Blanked (measurements)
    standalone numbers after any other word or none (``order 17``; sign, decimals,
    exponent, ``1,234`` and ``1,00,000`` grouping, Bangla digits), the number of
    ``95%``/``512MB``/``2.3 GiB``/``10k``/``45°C``/``45C``/``230V``/``16A``/``50Hz`` (the
    unit stays), durations *with* their unit (``3000ms``, ``1.5s``, ``1h30m``, ``5 minutes``:
    formatters rescale units, Go prints 950ms then 1.2s), clock times, dates, ISO 8601
    timestamps, UUIDs, ``0x`` values, hex ids of 8+ characters with a digit, numeric path
    segments (``/orders/17``), Kubernetes pod hash suffixes (``api-7f9c6b5d4-x2k8p``).

It runs per alert on the pipeline's worker, so it is one precompiled regex and a
single ``sub`` (1.5-4 µs for a log line of 80 characters, under 3 µs on average).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["IDENTITY_WORDS", "PLACEHOLDER", "template_of"]

PLACEHOLDER = "#"

#: Words that name a piece of infrastructure, or a tenant of it: a whole number right after
#: one of them and a space is part of a name ("UPS 2", "Room 101", "Port 23"), not a
#: measurement. Lowercase, singular and plural; matched in any case, as a whole word.
#: docs/fingerprints.md lists them, and tests/test_fingerprint.py keeps the two equal.
IDENTITY_WORDS: frozenset[str] = frozenset({
    # sites and power
    "site", "sites", "dc", "dcs", "region", "regions", "zone", "zones", "building", "buildings",
    "floor", "floors", "room", "rooms", "row", "rows", "cage", "cages", "rack", "racks",
    "cabinet", "cabinets", "tower", "towers", "ups", "pdu", "pdus", "psu", "psus",
    "battery", "batteries", "generator", "generators", "panel", "panels", "circuit", "circuits",
    "breaker", "breakers", "phase", "phases", "line", "lines", "tank", "tanks", "pump", "pumps",
    # network
    "port", "ports", "interface", "interfaces", "iface", "ifaces", "eth", "vlan", "vlans",
    "link", "links", "lane", "lanes", "channel", "channels", "switch", "switches",
    "router", "routers", "gateway", "gateways", "firewall", "firewalls", "ap", "aps",
    # compute and services
    "server", "servers", "host", "hosts", "node", "nodes", "instance", "instances", "vm", "vms",
    "pod", "pods", "replica", "replicas", "shard", "shards", "partition", "partitions",
    "broker", "brokers", "worker", "workers", "queue", "queues", "topic", "topics",
    "job", "jobs", "task", "tasks", "cluster", "clusters", "db", "dbs", "database", "databases",
    # hardware
    "chassis", "blade", "blades", "enclosure", "enclosures", "shelf", "bay", "bays",
    "slot", "slots", "unit", "units", "disk", "disks", "drive", "drives", "ssd", "ssds",
    "hdd", "hdds", "nvme", "nvmes", "volume", "volumes", "vol", "vols", "lun", "luns", "raid",
    "array", "arrays", "controller", "controllers", "gpu", "gpus", "cpu", "cpus",
    "core", "cores", "socket", "sockets", "fan", "fans", "sensor", "sensors",
    "camera", "cameras", "printer", "printers", "device", "devices",
    # tenants
    "tenant", "tenants", "account", "accounts", "customer", "customers",
    "store", "stores", "branch", "branches",
    # "no 12", "nr 12" (and "No. 12", "Nr. 12")
    "no", "nr",
})  # fmt: skip

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
# Electrical and temperature units too ("230V", "16A", "2kVA", "45C", "113F"): letters
# *after* digits; letters before them ("c3", "v2", "sda1", "eth0") are a name.
_UNIT = (
    r"(?:[kKMGTPE]?i?(?:B|b(?:ytes?|ps)?)|[kKMGTPE]|x|[kMG]?Hz|[rqt]ps|ops|rpm|reqs?|pct|msgs?"
    r"|[kmM]?(?:VA|Wh|Ah|[VAW])|[CF]|dBm?)"
)
_BANGLA_LETTER = r"[\u0980-\u09e5\u09f0-\u09ff]"  # "৫টি": a number and its classifier


def _cased(*words: str) -> str:
    """``HTTP|Http|http``: literal first letters let the engine skip alternatives fast."""
    return "|".join(f"{w.upper()}|{w.capitalize()}|{w.lower()}" for w in words)


# A number right after these words is a code naming a kind of failure (HTTP 503,
# status=500, exit code 137, errno 28, signal 9), and HTTP/1.1 is a protocol: keep them.
# (After "<digit>/" a number is a CIDR prefix or the "of" in "3/5": kept too.) The first
# lookbehind is only a gate: every one of the others ends in one of its two-character
# shapes, and most numbers fail it at once.
_CODE_WORDS = (
    r"(?>(?<![PpEeOoSsLl:\d][ =/])"
    rf"|(?<!(?:{_cased('http')})[ =/]|(?:{_cased('code')})[ =])"
    rf"(?<!(?:{_cased('errno')})[ =]|(?:{_cased('http', 'code')}): )"
    rf"(?<!(?:{_cased('status', 'signal')})[ =]|(?:{_cased('errno')}): |(?:{_cased('http')})/\d )"
    rf"(?<!(?:{_cased('status', 'signal')}): )"
    rf"(?<!(?:{_cased('http')})/\d\.\d ))"
)


def _any_case(word: str) -> str:
    return "".join(f"[{ch.upper()}{ch}]" if ch.isalpha() else re.escape(ch) for ch in word)


def _identity_word_before() -> str:
    """At a number: the text before it is an identity word (in any case) and one space.

    Lookbehinds have a fixed width, so there is one per word length, and ``\\b`` turns
    down every length but the real word's at once. In each, a class of the first letters
    turns most other words down before the branch over the words runs (literal first
    letters let the engine skip a branch's alternatives fast). Words of 6 letters or more
    are only looked for after 6 letters, the shorter ones only otherwise (exact: a word is
    a whole run of letters).
    """
    words = IDENTITY_WORDS | {"no.", "nr."}  # "No. 12"
    checks: dict[bool, list[str]] = {False: [], True: []}
    for length in sorted({len(word) for word in words}):
        same = sorted(word for word in words if len(word) == length)
        firsts = sorted({ch for word in same for ch in (word[0].upper(), word[0])})
        branch = "|".join(f"{ch}{_any_case(word[1:])}" for word in same for ch in (word[0].upper(), word[0]))
        checks[length >= 6].append(rf"(?<=\b(?=[{''.join(firsts)}])(?:{branch}) )")
    return (
        rf"(?<=[A-Za-z]{{6}} )(?:{'|'.join(checks[True])})"
        rf"|(?<![A-Za-z]{{6}} )(?:{'|'.join(checks[False])})"
    )


# "UPS 2", "Room 101", "Port 23", "No. 12": a whole number after an identity word and one
# space names a thing, also with one capital letter glued on ("Room 12A", "PSU 12V"). Not
# with a unit after it ("disk 95%", "fan 3000 rpm", "disk 512 MB", "node 5 minutes"), nor
# with decimals or grouping ("queue 1,234"), nor after "=" or ":" ("cpu=95" is a value).
# Cheapest tests first: a letter and a space before it, then the shape of the number
# (most numbers after a word carry a unit), and only then which word it is.
_IDENTITY_NUMBER = (
    rf"(?<=[A-Za-z.] )(?=\d++[A-Z]?+(?![\w#]|[.:+\-,][\w#]| #))(?:{_identity_word_before()})"
    rf"\d++[A-Z]?+(?! ?[%°]| (?=\w\w)(?:{_DURATION_UNIT}|{_UNIT}){_END})"
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
# "db-01", "eu-west-1" and "host:8080" are names. A token that starts with a digit is
# only tried by the first branch, where an identity number ("account 12345678") is not
# blanked as a hex id; the second branch is for ids that start with a letter.
_VOLATILE = re.compile(
    rf"{_separators()}(?=[-+\da-fA-F])"
    rf"(?:(?<![:\-])(?:(?=[-+]?\d)(?!{_IDENTITY_NUMBER})(?:{_SLASH_DATE}|{_NUMERIC}|{_DATE}|{_TIME}|{_UUID}|{_OX}|{_HEX_ID})"
    rf"|(?=[a-fA-F]+\d|[a-fA-F]{{8}}-)(?:{_UUID}|{_HEX_ID}))"
    rf"|(?<=[:\-])(?:{_POD_SUFFIX}|{_UUID}|{_HEX_ID}|{_DATE}|(?<=[\"']:){_NUMERIC}))"
)
_REPLACEMENT = " " + PLACEHOLDER


def template_of(text: str) -> str:
    """``text`` with its measurements blanked: 'disk 91% on db1' ~ 'disk 95% on db1'.

    Idempotent, total on any ``str``, and a few microseconds: it runs per alert.
    """
    # The leading space lets a token at the very start have its separator.
    return _VOLATILE.sub(_REPLACEMENT, " " + text)[1:]
