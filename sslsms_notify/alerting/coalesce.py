"""Exact repeats counted on the producer's thread, without a lock, and handed over in batches.

A storm is the same alert again and again. Queueing each occurrence would make
the worker do the same work 100,000 times, and a bounded queue would drop most
of them. Instead, the first occurrence is queued and registered here ("coalescing"
means this and only this: repeats counted in place of being queued); each
repeat is one dict lookup and one ``next()`` on an :class:`itertools.count`,
a single C call and so atomic under the GIL even with many producer threads.
The worker reads how far each counter moved (only those marked dirty) and
turns the difference into one queued occurrence with a count.

Nothing is lost: a counter is read again after its entry is retired, so an
increment racing with the retirement is still counted. Registered entries
are dropped every ``period`` seconds, which bounds memory by what one period
sees, at most ``max_entries`` alerts: only repeats make an entry worth its
memory, and an alert not registered still goes through the queue, correctly.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any

#: an entry's count is read at least this long after retirement, for late increments
RETIRE_GRACE = 1.0


def peek(counter: itertools.count[int]) -> int:
    """How far an :class:`itertools.count` has counted, without moving it."""
    # itertools.count has no getter; its repr is "count(N)". (__reduce__ is cheaper
    # but deprecated since 3.12 and gone in 3.14.)
    return int(repr(counter)[6:-1])


class Entry:
    """One registered alert: how often it repeated, and its latest occurrence."""

    __slots__ = ("convert", "counter", "dirty", "key", "last", "reported")

    def __init__(self, key: Hashable, payload: Any, convert: Callable[[Any], Any] | None = None) -> None:
        self.key = key
        self.counter = itertools.count()
        self.reported = 0
        self.dirty = False
        #: the latest occurrence, as the producer left it
        self.last = payload
        #: turns ``last`` into what the worker expects (None: it already is)
        self.convert = convert

    def latest(self) -> Any:
        return self.last if self.convert is None else self.convert(self.last)


class Coalescer:
    """Producer side: :meth:`register` (repeats: ``Intake.repeater``); worker side: :meth:`collect`."""

    def __init__(self, *, period: float = 1.0, max_entries: int = 2_048) -> None:
        self.period = period
        self.max_entries = max_entries
        self.entries: dict[Hashable, Entry] = {}
        self.dirty: deque[Entry] = deque()
        self._retired: deque[tuple[float, dict[Hashable, Entry]]] = deque()
        self._rotated_at: float | None = None

    # -- producer side (any thread) ---------------------------------------------
    # Counting a repeat is Intake.repeater() (one closure for the doors) and, inlined,
    # Intake.alert(): on that hot path a call costs more than the work. Keep them in step.
    def register(self, key: Hashable, payload: Any, convert: Callable[[Any], Any] | None = None) -> None:
        """After queueing a first occurrence: count its repeats from now on."""
        entries = self.entries
        if len(entries) < self.max_entries:
            entries.setdefault(key, Entry(key, payload, convert))

    # -- worker side (one thread) -----------------------------------------------
    def collect(self, now: float) -> Iterator[tuple[Hashable, Any, int]]:
        """``(key, latest payload, repeats)`` for every entry that moved since the last call."""
        dirty = self.dirty
        while dirty:
            entry = dirty.popleft()
            # Clear the mark *before* reading: a repeat counted after the read then
            # finds it clear and marks the entry again, so the next round sees it.
            entry.dirty = False
            delta = self._take(entry)
            if delta:
                yield entry.key, entry.latest(), delta
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self.period:
            self._retired.append((now, self.entries))
            self.entries = {}
            self._rotated_at = now
        while self._retired and (now - self._retired[0][0] >= RETIRE_GRACE):
            _, old = self._retired.popleft()
            yield from self._final(old)

    def collect_all(self) -> Iterator[tuple[Hashable, Any, int]]:
        """Everything counted so far, retired entries included (closing time)."""
        while self.dirty:
            self.dirty.popleft().dirty = False
        for _, old in self._retired:
            yield from self._final(old)
        self._retired.clear()
        yield from self._final(self.entries)

    def _final(self, entries: dict[Hashable, Entry]) -> Iterator[tuple[Hashable, Any, int]]:
        for entry in list(entries.values()):
            delta = self._take(entry)
            if delta:
                yield entry.key, entry.latest(), delta

    @staticmethod
    def _take(entry: Entry) -> int:
        value = peek(entry.counter)
        delta = value - entry.reported
        entry.reported = value
        return delta
