"""Coalescing (alerting/coalesce.py): exact repeats counted on the producer's thread.

The promise: every repeat a producer was told is counted (``repeat() -> True``) comes out
of ``collect`` exactly once, whatever the threads, the rotations and the retirements; a
repeat refused (``False``) is the producer's to queue. The producer side is the real one,
``Intake.repeater()``, the closure the logging handler uses.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import pytest

from sslsms_notify.alerting.coalesce import RETIRE_GRACE, peek
from sslsms_notify.alerting.decisions import Policy
from sslsms_notify.alerting.intake import Intake
from sslsms_notify.alerting.routing import Router
from sslsms_notify.alerting.stats import Stats
from sslsms_notify.stores import MemoryStore


@pytest.fixture
def intake():
    store = MemoryStore()
    parts = Intake(
        store=store,
        router=Router({"oncall": ["01711111111"]}),
        policy=Policy(),
        stats=Stats(),
        host="test",
        queue_size=100,
        on_queued=lambda: None,
        start_threads=None,  # no worker: the test is the worker
    )
    try:
        yield parts
    finally:
        store.close()


def collected(pairs) -> dict:
    totals: Counter = Counter()
    for key, _latest, repeats in pairs:
        totals[key] += repeats
    return dict(totals)


def test_peek_reads_a_count_without_moving_it() -> None:
    counter = itertools.count()
    assert peek(counter) == 0
    for _ in range(5):
        next(counter)
    assert peek(counter) == peek(counter) == 5
    assert next(counter) == 5


def test_an_unregistered_key_is_the_producers_to_queue(intake) -> None:
    repeat = intake.repeater()
    assert repeat("k", "payload") is False
    assert list(intake.coalescer.collect(0.0)) == []


def test_repeats_come_out_once_with_the_latest_payload(intake) -> None:
    repeat = intake.repeater()
    intake.register("k", "first")
    assert all(repeat("k", f"occurrence {i}") for i in range(7))
    [(key, latest, repeats)] = list(intake.coalescer.collect(0.0))
    assert (key, latest, repeats) == ("k", "occurrence 6", 7)
    assert list(intake.coalescer.collect(0.1)) == []  # taken: nothing moves twice
    assert repeat("k", "again")
    assert list(intake.coalescer.collect(0.2)) == [("k", "again", 1)]


def test_the_latest_payload_is_converted_only_when_collected(intake) -> None:
    converted = []

    def convert(raw):
        converted.append(raw)
        return raw.upper()

    intake.register("k", "first", convert)
    repeat = intake.repeater()
    repeat("k", "a")
    repeat("k", "b")
    assert converted == []  # the producer's thread pays nothing for it
    assert list(intake.coalescer.collect(0.0)) == [("k", "B", 2)]
    assert converted == ["b"]


def test_registration_is_bounded_and_the_rest_goes_through_the_queue(intake) -> None:
    intake.coalescer.max_entries = 3
    for key in "abcd":
        intake.register(key, key)
    repeat = intake.repeater()
    assert [repeat(key, key) for key in "abcd"] == [True, True, True, False]


def test_after_a_period_entries_retire_and_a_late_increment_is_still_counted(intake) -> None:
    coalescer = intake.coalescer
    coalescer.period = 1.0
    intake.register("k", "first")
    repeat = intake.repeater()
    repeat("k", "x")
    entry = coalescer.entries["k"]  # a producer that looked the entry up just before rotation
    assert collected(coalescer.collect(0.0)) == {"k": 1}
    assert collected(coalescer.collect(1.0)) == {}  # rotated: the entry is retired
    assert repeat("k", "y") is False  # a new first occurrence, for the queue
    next(entry.counter)  # ... the racing producer's increment lands on the retired entry
    assert collected(coalescer.collect(1.0 + RETIRE_GRACE - 0.01)) == {}
    assert collected(coalescer.collect(1.0 + RETIRE_GRACE)) == {"k": 1}


def test_collect_all_takes_retired_and_live_entries(intake) -> None:
    coalescer = intake.coalescer
    intake.register("old", "x")
    repeat = intake.repeater()
    repeat("old", "x")
    entry = coalescer.entries["old"]
    assert collected(coalescer.collect(0.0)) == {"old": 1}
    assert collected(coalescer.collect(coalescer.period)) == {}  # retired, within its grace
    next(entry.counter)  # a producer's increment racing with the retirement
    intake.register("new", "y")
    repeat("new", "y")
    repeat("new", "y")
    assert collected(coalescer.collect_all()) == {"old": 1, "new": 2}
    assert not coalescer.dirty


def test_every_repeat_counted_by_many_threads_is_collected_exactly_once(intake) -> None:
    """Eight producers, 20,000 repeats each over 50 keys, while the worker collects and
    rotates as fast as it can: counted + refused == sent, and collected == counted."""
    coalescer = intake.coalescer
    coalescer.period = 0.001  # rotate all the time: the racy path, not the easy one
    keys = [f"k{i}" for i in range(50)]
    for key in keys:
        intake.register(key, key)
    repeat = intake.repeater()
    per_thread, threads = 20_000, 8
    counted = [0] * threads
    refused = [0] * threads
    start = threading.Barrier(threads + 1)

    def produce(index: int) -> None:
        start.wait()
        mine = 0
        for i in range(per_thread):
            key = keys[(i + index) % len(keys)]
            if repeat(key, key):
                mine += 1
            else:  # what Intake.alert does: queue it and register it again
                refused[index] += 1
                intake.register(key, key)
        counted[index] = mine

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for thread in producers:
        thread.start()
    totals: Counter = Counter()
    now = 0.0
    start.wait()
    try:
        while any(thread.is_alive() for thread in producers):
            now += 0.01
            totals.update(collected(coalescer.collect(now)))
    finally:
        for thread in producers:
            thread.join(60)
    totals.update(collected(coalescer.collect(now + RETIRE_GRACE + 1)))
    totals.update(collected(coalescer.collect_all()))
    assert sum(counted) + sum(refused) == per_thread * threads
    assert sum(totals.values()) == sum(counted)
    assert sum(refused) > 0  # the rotations did happen under the producers
