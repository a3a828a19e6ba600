"""The pipeline's rules (alerting/decisions.py), one transaction at a time, on a clock we move.

tests/test_stores.py checks that every backend gives the decisions the same answers in real
time; here the rules themselves are pinned at their boundaries: the instant a window ends,
the exact second a capped phone's allowance returns, each step of a webhook lifecycle, and
the ids a rerun transaction must reuse. A MemoryStore with a fake clock is a real store:
nothing here is mocked.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sslsms_notify.alerting.alert import Severity
from sslsms_notify.alerting.decisions import (
    AlertResult,
    Hit,
    IdBook,
    Policy,
    Report,
    apply_intake,
    close_all_windows,
    evict_windows,
    flush_digests,
    sweep_all,
    sweep_digests,
    sweep_groups,
    sweep_windows,
    window_key,
)
from sslsms_notify.alerting.lifecycles import FIRING_MEMORY, forget_lifecycles
from sslsms_notify.stores import MemoryStore
from sslsms_notify.stores.merge import DIGEST_KEEP, GROUP_KEEP

A, B, C = "8801711111111", "8801811111111", "8801911111111"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def to(self, seconds_after_start: float) -> None:
        self.now = T0 + seconds_after_start


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock)


def hit(
    text: str,
    numbers: tuple[str, ...] = (A,),
    *,
    count: int = 1,
    group: str = "oncall",
    alert: int = 0,
    severity: Severity = Severity.ERROR,
    lifecycle: str | None = None,
    resolved: bool = False,
    last: str | None = None,
) -> Hit:
    sms = f"[{severity.tag}] {text}"
    return Hit(
        window_key(group, severity, text),
        group,
        numbers,
        count,
        sms,
        last or sms,
        alert,
        lifecycle=lifecycle,
        resolved=resolved,
    )


def intake(store: MemoryStore, policy: Policy, *hits: Hit, ids: IdBook | None = None) -> Report:
    book = ids or IdBook()
    return store.transact(lambda tx: apply_intake(tx, list(hits), policy, book))


def timers(store: MemoryStore, policy: Policy, sweep: Callable = sweep_all) -> Report:
    ids = IdBook()
    return store.transact(lambda tx: sweep(tx, policy, ids))


def sms(store: MemoryStore) -> list[tuple[str, str]]:
    """(phone, text) of every SMS the decisions queued, in order."""
    return [(item.msisdn, item.text) for item in store.outbox_list()]


NO_CAP = Policy(dedup_window=60, repeat_interval=600, cap_limit=None)


# -- dedup windows ----------------------------------------------------------------------
def test_a_first_occurrence_pages_and_its_repeats_in_the_same_round_are_suppressed(store) -> None:
    report = intake(store, NO_CAP, hit("disk full", (A, B), count=4))
    assert (report.queued, report.suppressed) == (2, 3)
    assert report.alerts[0].status == "queued" and len(report.alerts[0].csms_ids) == 2
    assert report.by_group == {"oncall": [1, 3]}
    assert sms(store) == [(A, "[ERROR] disk full"), (B, "[ERROR] disk full")]


def test_the_window_ends_at_its_exact_second(store, clock) -> None:
    intake(store, NO_CAP, hit("backup failed"))
    clock.to(59.999)
    assert intake(store, NO_CAP, hit("backup failed")).suppressed == 1
    clock.to(60)  # end_at is now: the window has repeats, so they wait for their summary
    assert intake(store, NO_CAP, hit("backup failed")).suppressed == 1
    report = timers(store, NO_CAP, sweep_windows)
    assert (report.windows_closed, report.summaries, report.queued) == (1, 1, 1)
    [summary] = [text for _, text in sms(store)[1:]]
    assert summary.startswith("[ERROR +2 more since ")


def test_a_quiet_window_that_ended_pages_again_even_before_the_sweep(store, clock) -> None:
    intake(store, NO_CAP, hit("backup failed"))
    clock.to(60)  # ended with no repeats: nothing to summarise, the next one is news
    assert intake(store, NO_CAP, hit("backup failed")).queued == 1
    assert len(sms(store)) == 2


def test_a_storm_gets_one_summary_per_repeat_interval_not_per_window(store, clock) -> None:
    intake(store, NO_CAP, hit("db down"))
    intake(store, NO_CAP, hit("db down", count=10))
    clock.to(60)
    assert timers(store, NO_CAP, sweep_windows).summaries == 1
    intake(store, NO_CAP, hit("db down", count=5))  # the storm goes on
    clock.to(60 + 599)
    assert timers(store, NO_CAP, sweep_windows).summaries == 0
    clock.to(60 + 600)
    report = timers(store, NO_CAP, sweep_windows)
    assert report.summaries == 1
    assert sms(store)[-1][1].startswith("[ERROR +5 more since ")
    clock.to(60 + 1200)  # quiet for a whole interval: forgotten, no SMS
    report = timers(store, NO_CAP, sweep_windows)
    assert (report.windows_closed, report.summaries) == (1, 0)
    assert store.window_count() == 0


def test_one_alert_in_two_groups_is_one_sms_per_phone_and_one_summary_counted_once(store, clock) -> None:
    both = (hit("x", (A, B), group="oncall", count=3), hit("x", (A, C), group="dba", count=3))
    report = intake(store, NO_CAP, *both)
    assert report.queued == 3  # A is in both groups: one SMS
    assert sorted(phone for phone, _ in sms(store)) == [A, B, C]
    clock.to(60)
    report = timers(store, NO_CAP, sweep_windows)
    assert (report.summaries, report.queued) == (1, 3)
    summaries = [text for _, text in sms(store)[3:]]
    # two repeats of one alert, though each group's window counted them
    assert len(summaries) == 3 and all(t.startswith("[ERROR +2 more since ") for t in summaries)


def test_the_same_text_at_another_severity_is_another_alert(store) -> None:
    report = intake(store, NO_CAP, hit("x"), hit("x", severity=Severity.CRITICAL, alert=1))
    assert report.queued == 2 and report.suppressed == 0


def test_windows_beyond_max_are_evicted_earliest_ending_first_with_their_summary(store, clock) -> None:
    policy = Policy(dedup_window=60, repeat_interval=600, cap_limit=None, max_windows=2)
    for i, text in enumerate(["old", "middle", "new"]):
        clock.to(i)
        intake(store, policy, hit(text, count=2, alert=i))
    report = timers(store, policy, evict_windows)
    assert (report.evicted, report.summaries) == (1, 1)
    assert store.window_count() == 2
    assert sms(store)[-1][1].startswith("[ERROR +1 more since ") and sms(store)[-1][1].endswith("old")
    # the evicted alert is news again; the others are still in their windows
    report = intake(store, policy, hit("old", alert=3), hit("new", alert=4))
    assert report.alerts[3].status == "queued" and report.alerts[4].status == "suppressed"


def test_closing_summarises_only_windows_holding_repeats(store) -> None:
    intake(store, NO_CAP, hit("quiet"), hit("noisy", count=3, alert=1))
    report = timers(store, NO_CAP, close_all_windows)
    assert (report.summaries, report.windows_closed) == (1, 0)
    assert store.window_count() == 0
    assert sms(store)[-1][1].startswith("[ERROR +2 more since ") and sms(store)[-1][1].endswith("noisy")


# -- the per-phone cap (GCRA) and digests -----------------------------------------------------
CAP = Policy(dedup_window=60, repeat_interval=600, cap_limit=3, cap_period=30)  # one SMS per 10 s


def test_the_cap_allows_a_burst_then_one_per_interval_to_the_second(store, clock) -> None:
    for i in range(3):
        assert intake(store, CAP, hit(f"a{i}", alert=i)).queued == 1
    report = intake(store, CAP, hit("a3", alert=3))
    assert (report.queued, report.throttled) == (0, 1) and report.alerts[3].status == "throttled"
    clock.to(9.999)
    assert timers(store, CAP, sweep_digests).digests == 0
    clock.to(10)  # exactly one interval: the slot is back
    report = timers(store, CAP, sweep_digests)
    assert (report.digests, report.folded, report.queued) == (1, 1, 1)
    assert sms(store)[-1][1].startswith("[digest: 1 held since ")
    assert sms(store)[-1][1].endswith("[ERROR] a3")


def test_a_waiting_digest_goes_before_a_newer_alert_which_folds_into_it(store, clock) -> None:
    for i in range(4):
        intake(store, CAP, hit(f"a{i}", alert=i))
    clock.to(10)
    report = intake(store, CAP, hit("newer", alert=9))
    assert (report.digests, report.folded, report.queued) == (1, 2, 1)
    digest = sms(store)[-1][1]
    assert digest.startswith("[digest: 2 held since ") and "a3" in digest and "newer" in digest
    assert report.alerts[9].status == "throttled"  # it went out inside the digest


def test_a_digest_keeps_a_few_texts_and_counts_every_alert(store, clock) -> None:
    for i in range(3 + DIGEST_KEEP + 4):
        intake(store, CAP, hit(f"a{i}", alert=i))
    clock.to(10)
    report = timers(store, CAP, sweep_digests)
    assert report.folded == DIGEST_KEEP + 4
    digest = sms(store)[-1][1]
    assert digest.startswith(f"[digest: {DIGEST_KEEP + 4} held since ") and digest.endswith(" more")


def test_each_phone_has_its_own_allowance(store) -> None:
    for i in range(3):
        intake(store, CAP, hit(f"a{i}", (A,), alert=i))
    report = intake(store, CAP, hit("both", (A, B), alert=3))
    assert (report.queued, report.throttled) == (1, 1)
    assert sms(store)[-1] == (B, "[ERROR] both")


def test_closing_sends_held_digests_whatever_the_cap(store) -> None:
    for i in range(5):
        intake(store, CAP, hit(f"a{i}", alert=i))
    report = timers(store, CAP, flush_digests)
    assert (report.digests, report.folded) == (1, 2)


# -- group_wait ----------------------------------------------------------------------------
WAIT = Policy(dedup_window=60, repeat_interval=600, cap_limit=None, group_wait=30)


def test_group_wait_gathers_distinct_alerts_into_one_sms_at_its_deadline(store, clock) -> None:
    report = intake(store, WAIT, hit("a", (A,)), hit("b", (B,), alert=1))
    assert report.queued == 0 and report.alerts[0].status == "buffered"
    clock.to(29.999)
    assert timers(store, WAIT, sweep_groups).groups == 0
    clock.to(30)
    report = timers(store, WAIT, sweep_groups)
    assert (report.groups, report.queued) == (1, 2)  # one SMS, to the union of the phones
    assert {phone for phone, _ in sms(store)} == {A, B}
    assert sms(store)[0][1].startswith("[2 alerts] [ERROR] a")


def test_group_wait_keeps_a_bounded_number_of_texts_and_counts_all(store, clock) -> None:
    hits = [hit(f"alert {i}", alert=i) for i in range(GROUP_KEEP + 5)]
    intake(store, WAIT, *hits)
    clock.to(30)
    timers(store, WAIT, sweep_groups)
    [(_, text)] = sms(store)
    assert text.startswith(f"[{GROUP_KEEP + 5} alerts] ") and text.endswith(" more")


# -- webhook lifecycles -------------------------------------------------------------------
def fired(text: str = "DiskFull", **kw) -> Hit:
    return hit(text, (A, B), lifecycle="am:fp1@2026-12-06T03:00:00Z", **kw)


def test_a_lifecycle_pages_once_its_resends_are_nothing_new_its_resolve_once(store, clock) -> None:
    assert intake(store, NO_CAP, fired()).queued == 2
    for minute in (1, 5, 240):  # group changes, repeat_interval: the same alert again
        clock.to(minute * 60)
        report = intake(store, NO_CAP, fired())
        assert (report.queued, report.resent) == (0, 1)
    report = intake(store, NO_CAP, fired("DiskFull resolved", resolved=True))
    assert report.queued == 2
    report = intake(store, NO_CAP, fired("DiskFull resolved", resolved=True))  # an HA twin
    assert (report.queued, report.resent) == (0, 1)
    report = intake(store, NO_CAP, fired())  # a stale firing after its resolve
    assert (report.queued, report.resent) == (0, 1)
    assert len(sms(store)) == 4


def test_a_lifecycle_ignores_the_dedup_window(store, clock) -> None:
    intake(store, NO_CAP, fired())
    clock.to(3600)  # long past dedup_window: still the same lifecycle, no page
    assert intake(store, NO_CAP, fired()).queued == 0
    new_start = hit("DiskFull", (A, B), lifecycle="am:fp1@2026-12-06T04:00:00Z")
    assert intake(store, NO_CAP, new_start).queued == 2  # a new startsAt is a new firing


def test_remind_every_pages_a_reminder_once_per_period(store, clock) -> None:
    policy = Policy(dedup_window=60, cap_limit=None, remind_every=3600)
    intake(store, policy, fired())
    clock.to(3599)
    assert intake(store, policy, fired()).queued == 0
    clock.to(3600)
    report = intake(store, policy, fired())
    assert (report.queued, report.reminders) == (2, 1)
    assert sms(store)[-1][1].startswith("[ERROR still firing since ")
    clock.to(3601)
    assert intake(store, policy, fired()).queued == 0  # the period starts again at the reminder


def test_a_lifecycle_in_two_groups_decides_once(store) -> None:
    first = (
        hit("x", (A,), group="oncall", lifecycle="am:fp2@t"),
        hit("x", (A, B), group="dba", lifecycle="am:fp2@t"),
    )
    assert intake(store, NO_CAP, *first).queued == 2  # A once, B once
    report = intake(store, NO_CAP, *first)
    assert (report.queued, report.resent) == (0, 1)  # one re-send of one alert


def test_lifecycles_are_forgotten_after_their_memory(store, clock) -> None:
    intake(store, NO_CAP, fired())
    clock.to(FIRING_MEMORY - 1)
    store.transact(forget_lifecycles)
    assert intake(store, NO_CAP, fired()).queued == 0  # a re-send also renews the memory
    clock.to(2 * FIRING_MEMORY - 2)
    store.transact(forget_lifecycles)
    assert intake(store, NO_CAP, fired()).queued == 0
    clock.to(3 * FIRING_MEMORY)
    store.transact(forget_lifecycles)
    assert intake(store, NO_CAP, fired()).queued == 2  # nobody sent it for a week: news again


# -- ids and reports ------------------------------------------------------------------------
def test_a_rerun_transaction_gives_the_same_sms_the_same_ids(clock) -> None:
    """Redis reruns a transaction after a conflict; the SMS it finally commits must carry the
    ids of the first run, or an unknown commit outcome could page twice."""
    ids = IdBook()
    runs = []
    for _ in range(2):
        store = MemoryStore(clock=clock)
        intake(store, NO_CAP, hit("x", (A, B)), hit("y", (A,), alert=1), ids=ids)
        runs.append([item.csms_id for item in store.outbox_list()])
    assert runs[0] == runs[1] and len(set(runs[0])) == 3


def test_an_idbook_gives_different_purposes_different_ids() -> None:
    ids = IdBook()
    assert ids("alert", 1, A) == ids("alert", 1, A)
    assert len({ids("alert", 1, A), ids("alert", 1, B), ids("alert", 2, A), ids("summary", 1, A)}) == 4


def test_the_status_of_an_alert_says_what_happened_first_queued_then_buffered() -> None:
    assert AlertResult(csms_ids=["x"], throttled=1).status == "queued"
    assert AlertResult(buffered=True, throttled=1).status == "buffered"
    assert AlertResult(throttled=1, suppressed=3).status == "throttled"
    assert AlertResult().status == "suppressed"


def test_reports_add_up_every_counter_and_group() -> None:
    one = Report(queued=1, suppressed=2, resent=1, by_group={"a": [1, 2]})
    two = Report(queued=3, throttled=1, reminders=1, evicted=2, by_group={"a": [0, 1], "b": [1, 0]})
    one.add(two)
    assert (one.queued, one.suppressed, one.throttled, one.resent, one.reminders, one.evicted) == (
        4,
        2,
        1,
        1,
        1,
        2,
    )
    assert one.by_group == {"a": [1, 3], "b": [1, 0]}
    assert one.counters()["resent"] == 1 and "queued" not in one.counters()
