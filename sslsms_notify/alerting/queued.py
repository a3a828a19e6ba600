"""The queued alert: what ``alert()`` and the doors put on the intake queue.

One flat tuple of atoms (strings, ints, booleans, None, tuples of strings): the garbage
collector stops tracking such a tuple, so a backlog of queued alerts costs a full
collection nothing, where a NamedTuple or a dataclass would be tracked and scanned.
This module is the one place that knows its layout: positions are named below, and
the hot paths that build one inline (``Notifier.alert``) say so.
"""

from __future__ import annotations

from typing import Any, Final

#: what renders the text: a str, a queued log record, or a callable
RAW: Final = 0
#: the severity as an int (``int(Severity)``)
SEVERITY: Final = 1
#: the caller's identity for repeats, or None (the text, through the fingerprint rule)
KEY: Final = 2
#: groups the caller named, or None (the routes decide)
GROUPS: Final = 3
#: shown as the origin: ``[TAG] host/source: text``
SOURCE: Final = 4
TAGS: Final = 5
#: identifies repeats instead of the rendered text (a log call's format string)
TEMPLATE: Final = 6
#: the exception type's name, part of the identity
EXC_TYPE: Final = 7
#: shown as the origin's host (None: this machine's)
HOST: Final = 8
#: a webhook alert's lifecycle (fingerprint and startsAt): paged once firing, once resolved
LIFECYCLE: Final = 9
#: the alert ended (an all-clear): tagged ``[RESOLVED]`` instead of its severity
RESOLVED: Final = 10
#: a webhook alert's labels, ``(name, value)`` pairs (silences match them); () for others
LABELS: Final = 11

Queued = tuple[
    Any,
    int,
    "str | None",
    "tuple[str, ...] | None",
    str,
    tuple[str, ...],
    Any,
    Any,
    Any,
    Any,
    bool,
    "tuple[tuple[str, str], ...]",
]


def pack(
    raw: Any,
    severity: int,
    *,
    key: str | None = None,
    groups: tuple[str, ...] | None = None,
    source: str = "",
    tags: tuple[str, ...] = (),
    template: str | None = None,
    exc_type: str | None = None,
    host: str | None = None,
    lifecycle: str | None = None,
    resolved: bool = False,
    labels: tuple[tuple[str, str], ...] = (),
) -> Queued:
    return (raw, severity, key, groups, source, tags, template, exc_type, host, lifecycle, resolved, labels)
