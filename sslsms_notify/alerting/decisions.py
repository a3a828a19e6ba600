"""The pipeline's decisions, written once against a store transaction (:class:`~..stores.base.Tx`).

- :func:`apply_intake`: is each alert the first of its window or a repeat;
  the firsts go to a ``group_wait`` buffer, or through each phone's cap to the
  outbox or a digest.
- :func:`sweep_windows`, :func:`sweep_digests`, :func:`sweep_groups`: the
  timers. A window that ended with repeats sends one summary and starts again
  for ``repeat_interval``; a digest goes out when its phone's allowance
  returns; a group buffer when its wait is over.
- :func:`evict_windows`: beyond ``max_windows``, the windows that end first
  make room (with their summary if they hold repeats).
- holds (:mod:`.holds`): an alert a silence or a group's quiet hours holds leaves the
  round first; :func:`sweep_holds` sends each hold's SMS when it ends.

Each function may run more than once for one commit (Redis reruns a
transaction after a conflict), so they only read and write through ``tx``;
csms_ids come from an :class:`IdBook`, which gives the same SMS the same id
on every rerun. What they did is added to a :class:`Report`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..gateway.ids import new_csms_id
from ..quiet import QuietHours
from ..stores.base import Digest, GroupBuffer, OutboxItem, Tx, Window
from ..stores.merge import DIGEST_KEEP, GROUP_KEEP  # one bound, kept where merges need it too
from .alert import Severity
from .escalation import escalation_page, new_ack_code, preload_escalations
from .formatting import format_digest, format_group, format_reminder, format_summary
from .holds import Facts, ended, hold
from .leases import forget_expired
from .lifecycles import KNOWN, NEW, REMIND, forget_lifecycles, lifecycle_verdict

SEP = "\x1f"


def window_key(group: str, severity: Severity, fingerprint: str) -> str:
    return f"{group}{SEP}{int(severity)}{SEP}{fingerprint}"


def cap_key(msisdn: str) -> str:
    return f"rcpt:{msisdn}"


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings the decisions depend on (a subset of the Notifier's)."""

    dedup_window: float = 300.0
    repeat_interval: float = 300.0
    group_wait: float = 0.0
    #: SMS per phone per ``cap_period``; None: no cap
    cap_limit: int | None = 10
    cap_period: float = 3600.0
    max_segments: int = 2
    max_windows: int = 100_000
    #: a webhook alert still firing, sent again by its producer this long after it last
    #: paged, pages a reminder (0: never; a re-send is nothing new)
    remind_every: float = 0.0
    #: group -> its quiet hours (groups without any are absent)
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)


class IdBook:
    """csms_ids keyed by what they are for: a rerun of a transaction reuses them.

    If a commit's outcome is unknown (Redis dropped the connection during
    ``EXEC``) and the transaction runs again elsewhere, the same SMS carries the
    same id in both places, and the gateway delivers it once.
    """

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[Hashable, str] = {}

    def __call__(self, *purpose: Hashable) -> str:
        csms_id = self._ids.get(purpose)
        if csms_id is None:
            csms_id = self._ids[purpose] = new_csms_id()
        return csms_id

    def code(self, *purpose: Hashable) -> str:
        """An ack code (see :mod:`.escalation`), the same for the same purpose on a rerun."""
        key = ("ack code", *purpose)
        code = self._ids.get(key)
        if code is None:
            code = self._ids[key] = new_ack_code()
        return code


@dataclass(slots=True)
class Hit:
    """One alert (``count`` occurrences of it) for one group."""

    key: str
    group: str
    numbers: tuple[str, ...]
    count: int
    #: the SMS for the first occurrence, and the last one (for a later summary)
    first_text: str
    last_text: str
    #: the alert this hit belongs to (one alert for several groups gives several hits)
    alert: int
    #: a webhook alert's lifecycle (fingerprint and startsAt): decides instead of a dedup window
    lifecycle: str | None = None
    resolved: bool = False
    #: the alert's identity for escalation (its lifecycle, else its fingerprint); "": none
    alert_id: str = ""
    #: (seconds, phones) when a route escalates it (see :mod:`.escalation`)
    escalate: tuple[float, tuple[str, ...]] | None = None
    #: what silences match (None: nothing can hold this hit)
    facts: Facts | None = None


@dataclass(slots=True)
class AlertResult:
    csms_ids: list[str] = field(default_factory=list)
    suppressed: int = 0
    throttled: int = 0
    buffered: bool = False
    #: occurrences a silence held (for some group), and a group's quiet hours
    silenced: int = 0
    held: int = 0

    @property
    def status(self) -> str:
        if self.csms_ids:
            return "queued"
        if self.buffered:
            return "buffered"
        if self.throttled:
            return "throttled"
        if self.held:
            return "held"
        return "silenced" if self.silenced and not self.suppressed else "suppressed"


@dataclass(slots=True)
class Report:
    """What one transaction did, for the counters and for the callers waiting on it."""

    alerts: dict[int, AlertResult] = field(default_factory=dict)
    queued: int = 0
    suppressed: int = 0
    throttled: int = 0
    folded: int = 0
    digests: int = 0
    summaries: int = 0
    groups: int = 0
    evicted: int = 0
    windows_closed: int = 0
    #: webhook re-sends of an alert already paged in its lifecycle (no SMS)
    resent: int = 0
    reminders: int = 0
    escalations: int = 0  # opened (alerts paged with an ack code), then fired (see .oncall)
    escalated: int = 0
    heartbeats_missed: int = 0
    heartbeats_recovered: int = 0
    #: alerts a silence held, alerts a group's quiet hours held, SMS telling what a hold held
    silenced: int = 0
    quiet_held: int = 0
    hold_summaries: int = 0
    #: group -> [alerts that were first of their window, repeats suppressed]
    by_group: dict[str, list[int]] = field(default_factory=dict)

    def add(self, other: Report) -> None:
        """Fold another transaction step's report into this one."""
        for name in ("queued", "groups", "windows_closed", *COUNTERS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.alerts.update(other.alerts)
        for group, (first, suppressed) in other.by_group.items():
            mine = self.by_group.setdefault(group, [0, 0])
            mine[0] += first
            mine[1] += suppressed

    def counters(self) -> dict[str, int]:
        """What the pipeline's counters (``Notifier.stats()``) add from this report."""
        return {name: getattr(self, name) for name in COUNTERS}


#: the counts of a :class:`Report` that are pipeline counters of the same name
COUNTERS = ("suppressed", "throttled", "folded", "digests", "summaries", "evicted", "resent", "reminders",
            "silenced", "quiet_held", "hold_summaries",
            "escalations", "escalated", "heartbeats_missed", "heartbeats_recovered")  # fmt: skip


# -- delivery through the per-phone cap ------------------------------------------------
def _allowance_wait(tx: Tx, msisdn: str, policy: Policy) -> tuple[float, float]:
    """(seconds until this phone may get an SMS, the GCRA time to store if it does)."""
    assert policy.cap_limit is not None
    interval = policy.cap_period / policy.cap_limit
    tat = max(tx.rates.get(cap_key(msisdn)) or tx.now, tx.now)
    wait = tat + interval - policy.cap_limit * interval - tx.now
    return max(0.0, wait), tat + interval


def _outbox(tx: Tx, csms_id: str, msisdn: str, text: str) -> None:
    tx.add_outbox(OutboxItem(csms_id, msisdn, text, tx.now, tx.now))


def _send_digest(tx: Tx, digest: Digest, policy: Policy, ids: IdBook, report: Report) -> str:
    text = format_digest(digest.texts, digest.count, digest.since_at, max_segments=policy.max_segments)
    csms_id = ids("digest", digest.msisdn, digest.since_at)
    _outbox(tx, csms_id, digest.msisdn, text)
    tx.digests.delete(digest.msisdn)
    report.folded += digest.count
    report.digests += 1
    report.queued += 1
    return csms_id


def deliver(
    tx: Tx,
    text: str,
    numbers: Sequence[str],
    policy: Policy,
    ids: IdBook,
    report: Report,
    purpose: Hashable,
    result: AlertResult | None = None,
) -> None:
    """``text`` to each number: to the outbox, or into the phone's digest if its cap is used up.

    A phone with a digest waiting gets new alerts folded into it, and the digest
    takes the next free slot: held alerts go out before newer ones.
    """
    if policy.cap_limit is None:
        for msisdn in numbers:
            csms_id = ids(purpose, msisdn)
            _outbox(tx, csms_id, msisdn, text)
            report.queued += 1
            if result is not None:
                result.csms_ids.append(csms_id)
        return
    tx.rates.load(cap_key(n) for n in numbers)
    tx.digests.load(numbers)
    for msisdn in numbers:
        wait, next_tat = _allowance_wait(tx, msisdn, policy)
        held = tx.digests.get(msisdn)
        if held is None and wait <= 0:
            tx.rates.put(cap_key(msisdn), next_tat)
            csms_id = ids(purpose, msisdn)
            _outbox(tx, csms_id, msisdn, text)
            report.queued += 1
            if result is not None:
                result.csms_ids.append(csms_id)
            continue
        report.throttled += 1
        if result is not None:
            result.throttled += 1
        if held is None:
            held = Digest(msisdn, 1, tx.now, (text,), tx.now + wait)
        else:
            texts = held.texts if len(held.texts) >= DIGEST_KEEP else (*held.texts, text)
            held = Digest(msisdn, held.count + 1, held.since_at, texts, tx.now + wait)
        if wait <= 0:
            tx.rates.put(cap_key(msisdn), next_tat)
            _send_digest(tx, held, policy, ids, report)
        else:
            tx.digests.put(msisdn, held)


# -- intake -------------------------------------------------------------------------
def apply_intake(tx: Tx, hits: Sequence[Hit], policy: Policy, ids: IdBook) -> Report:
    """Decide a round of alerts: one transaction, whatever the number of alerts."""
    report = Report()
    hits, held = hold(tx, hits, policy.quiet_hours)  # silences and quiet hours first: held hits stop here
    for alert, (silenced, quiet) in held.items():
        result = report.alerts.setdefault(alert, AlertResult())
        result.silenced, result.held = silenced, quiet
        report.silenced, report.quiet_held = report.silenced + silenced, report.quiet_held + quiet
    now = tx.now
    dedup = policy.dedup_window > 0
    if dedup:
        tx.windows.load(h.key for h in hits if h.lifecycle is None)
    lifecycles = [h.lifecycle for h in hits if h.lifecycle is not None]
    if lifecycles:
        tx.lifecycles.load(lifecycles)
    preload_escalations(tx, [h.alert_id for h in hits if h.alert_id])  # one bulk read, not one per alert
    if policy.cap_limit is not None and policy.group_wait <= 0:
        phones = {n for h in hits for n in h.numbers}
        tx.rates.load(cap_key(n) for n in phones)
        tx.digests.load(phones)
    firsts: dict[int, tuple[str, dict[str, None], list[Hit]]] = {}
    verdicts: dict[int, str] = {}  # one decision per alert, whatever its number of groups
    for hit in hits:
        result = report.alerts.setdefault(hit.alert, AlertResult())
        per_group = report.by_group.get(hit.group)
        if per_group is None:
            per_group = report.by_group[hit.group] = [0, 0]
        if hit.lifecycle is not None:
            verdict = verdicts.get(hit.alert)
            if verdict is None:
                verdict = lifecycle_verdict(tx, hit.lifecycle, hit.resolved, policy.remind_every)
                verdicts[hit.alert] = verdict
                if verdict == KNOWN:
                    report.resent += hit.count
                elif verdict == REMIND:
                    report.reminders += 1
            if verdict == KNOWN:
                result.suppressed += hit.count
                per_group[1] += hit.count
                continue
            text = hit.first_text
            if verdict == REMIND:
                record = tx.lifecycles.get(hit.lifecycle)
                since = record.first_at if record is not None else now
                text = format_reminder(hit.first_text, since, max_segments=policy.max_segments)
            per_group[0] += 1
            first = firsts.setdefault(hit.alert, (text, {}, []))
            first[1].update(dict.fromkeys(hit.numbers))
            first[2].append(hit)
            continue
        if dedup:
            window = tx.windows.get(hit.key)
            if window is None or (window.end_at <= now and window.count == 0):
                window = Window(
                    hit.key, now + policy.dedup_window, hit.count - 1, now, now, hit.last_text, hit.numbers
                )
                tx.windows.put(hit.key, window)
                repeats = hit.count - 1
            else:
                tx.windows.put(
                    hit.key,
                    Window(
                        hit.key,
                        window.end_at,
                        window.count + hit.count,
                        window.since_at,
                        now,
                        hit.last_text,
                        window.numbers,
                    ),
                )
                result.suppressed += hit.count
                report.suppressed += hit.count
                per_group[1] += hit.count
                continue
            result.suppressed += repeats
            report.suppressed += repeats
            per_group[1] += repeats
        per_group[0] += 1
        first = firsts.setdefault(hit.alert, (hit.first_text, {}, []))
        first[1].update(dict.fromkeys(hit.numbers))  # a phone in two matched groups: one SMS
        first[2].append(hit)
    for alert, (text, numbers, alert_hits) in firsts.items():
        result = report.alerts[alert]
        hit = alert_hits[0]
        if hit.alert_id:  # a resolve closes its escalation; a page that can escalate gets its code
            new = verdicts.get(alert, NEW) == NEW
            text, opened = escalation_page(tx, hit, text, new=new, code=ids.code, policy=policy)
            report.escalations += opened
        if policy.group_wait > 0:
            for hit in alert_hits:
                _buffer(tx, hit.group, text, hit.numbers, policy)
            result.buffered = True
            continue
        deliver(tx, text, list(numbers), policy, ids, report, ("alert", alert), result)
    return report


def _buffer(tx: Tx, group: str, text: str, numbers: tuple[str, ...], policy: Policy) -> None:
    buffer = tx.groups.get(group)
    if buffer is None:
        buffer = GroupBuffer(group, tx.now + policy.group_wait, 1, (text,), numbers)
    else:
        texts = buffer.texts if len(buffer.texts) >= GROUP_KEEP else (*buffer.texts, text)
        merged = tuple(dict.fromkeys((*buffer.numbers, *numbers)))
        buffer = replace(buffer, count=buffer.count + 1, texts=texts, numbers=merged)
    tx.groups.put(group, buffer)


# -- timers ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Summary:
    key: str
    count: int
    since_at: float
    last_at: float
    last_text: str
    numbers: dict[str, None]


def _summarise(
    tx: Tx, windows: Iterable[Window], policy: Policy, ids: IdBook, report: Report, purpose: str
) -> None:
    """One summary per alert and severity, to the union of its groups' phones."""
    merged: dict[tuple[str, str], _Summary] = {}
    for window in windows:
        _group, level, fingerprint = window.key.split(SEP, 2)
        entry = merged.get((level, fingerprint))
        if entry is None:
            merged[(level, fingerprint)] = _Summary(
                window.key,
                window.count,
                window.since_at,
                window.last_at,
                window.last_text,
                dict.fromkeys(window.numbers),
            )
            continue
        # the same alert for several groups: counted once, not once per group
        entry.count = max(entry.count, window.count)
        entry.since_at = min(entry.since_at, window.since_at)
        if window.last_at > entry.last_at:
            entry.last_at, entry.last_text = window.last_at, window.last_text
        entry.numbers.update(dict.fromkeys(window.numbers))
    for (level, _fingerprint), entry in merged.items():
        summary = format_summary(
            Severity(int(level)),
            entry.last_text,
            entry.count,
            entry.since_at,
            entry.last_at,
            max_segments=policy.max_segments,
        )
        report.summaries += 1
        deliver(tx, summary, list(entry.numbers), policy, ids, report, (purpose, entry.key, entry.since_at))


def sweep_windows(tx: Tx, policy: Policy, ids: IdBook, limit: int = 1000) -> Report:
    """Close windows that ended: quiet ones are forgotten, ones with repeats summarised."""
    report = Report()
    keys = tx.due("windows", limit)
    if not keys:
        return report
    tx.windows.load(keys)
    ended: list[Window] = []
    for key in keys:
        window = tx.windows.get(key)
        if window is None or window.end_at > tx.now:
            continue
        report.windows_closed += 1
        if window.count == 0:
            tx.windows.delete(key)
            continue
        ended.append(window)
        # the storm may go on: the next summary comes after repeat_interval at the earliest
        tx.windows.put(key, replace(window, count=0, since_at=tx.now, end_at=tx.now + policy.repeat_interval))
    _summarise(tx, ended, policy, ids, report, "summary")
    return report


def sweep_all(tx: Tx, policy: Policy, ids: IdBook, limit: int = 1000) -> Report:
    """Every timer that is due, in one transaction: windows, digests, group buffers, lifecycles.

    One transaction, not four: under busy application threads each statement waits for
    the GIL, so the fewer round trips to the store, the closer to its time a summary goes.
    """
    report = Report()
    for sweep in (sweep_windows, sweep_digests, sweep_groups, sweep_holds):
        report.add(sweep(tx, policy, ids, limit))
    forget_lifecycles(tx, limit)  # webhook alerts nobody sent for a week (see .lifecycles)
    forget_expired(tx, limit)  # leases of processes gone (see .leases)
    return report


def sweep_holds(tx: Tx, policy: Policy, ids: IdBook, limit: int = 1000, *, every: bool = False) -> Report:
    """Each silence or quiet period that ended: one SMS per group saying what it held.

    ``every``: every hold now, ended or not (closing a memory-only pipeline: its holds end with it)."""
    report = Report()
    for held, text in ended(tx, policy.quiet_hours, policy.max_segments, limit, every=every):
        report.hold_summaries += 1
        deliver(tx, text, held.numbers, policy, ids, report, ("hold", held.key))
    return report


def sweep_digests(tx: Tx, policy: Policy, ids: IdBook, limit: int = 1000) -> Report:
    """Send each held digest whose phone's allowance has come back."""
    report = Report()
    numbers = tx.due("digests", limit)
    if not numbers:
        return report
    tx.digests.load(numbers)
    tx.rates.load(cap_key(n) for n in numbers)
    for msisdn in numbers:
        digest = tx.digests.get(msisdn)
        if digest is None or digest.ready_at > tx.now:
            continue
        if policy.cap_limit is None:  # this process caps nothing: let it go now
            _send_digest(tx, digest, policy, ids, report)
            continue
        wait, next_tat = _allowance_wait(tx, msisdn, policy)
        if wait > 0:
            tx.digests.put(msisdn, replace(digest, ready_at=tx.now + wait))
            continue
        tx.rates.put(cap_key(msisdn), next_tat)
        _send_digest(tx, digest, policy, ids, report)
    return report


def sweep_groups(tx: Tx, policy: Policy, ids: IdBook, limit: int = 1000) -> Report:
    """Send each ``group_wait`` buffer whose wait is over, as one SMS."""
    report = Report()
    names = tx.due("groups", limit)
    if not names:
        return report
    tx.groups.load(names)
    for name in names:
        buffer = tx.groups.get(name)
        if buffer is not None and buffer.deadline <= tx.now:
            _send_group(tx, buffer, policy, ids, report)
    return report


def flush_groups(tx: Tx, policy: Policy, ids: IdBook) -> Report:
    """Every group buffer now, due or not (closing a pipeline nobody will sweep later)."""
    report = Report()
    for name in tx.earliest("groups", 10_000):
        buffer = tx.groups.get(name)
        if buffer is not None:
            _send_group(tx, buffer, policy, ids, report)
    return report


def _send_group(tx: Tx, buffer: GroupBuffer, policy: Policy, ids: IdBook, report: Report) -> None:
    text = format_group(buffer.texts, buffer.count, max_segments=policy.max_segments)
    tx.groups.delete(buffer.name)
    report.groups += 1
    deliver(tx, text, buffer.numbers, policy, ids, report, ("group", buffer.name, buffer.deadline))


def flush_digests(tx: Tx, policy: Policy, ids: IdBook) -> Report:
    """Every held digest now, whatever the caps say (closing a pipeline nobody will sweep later)."""
    report = Report()
    for msisdn in tx.earliest("digests", 100_000):
        digest = tx.digests.get(msisdn)
        if digest is not None:
            _send_digest(tx, digest, policy, ids, report)
    return report


def close_all_windows(tx: Tx, policy: Policy, ids: IdBook) -> Report:
    """Summarise every window holding repeats now (closing a memory-only pipeline)."""
    report = Report()
    keys = tx.earliest("windows", tx.count("windows"))
    tx.windows.load(keys)
    held = []
    for key in keys:
        window = tx.windows.get(key)
        if window is None:
            continue
        tx.windows.delete(key)
        if window.count:
            held.append(window)
    _summarise(tx, held, policy, ids, report, "final")
    return report


def evict_windows(tx: Tx, policy: Policy, ids: IdBook, limit: int = 5000) -> Report:
    """Keep at most ``max_windows``: the windows ending first go, summarised if they hold repeats."""
    report = Report()
    excess = tx.count("windows") - policy.max_windows
    if excess <= 0:
        return report
    keys = tx.earliest("windows", min(excess, limit))
    tx.windows.load(keys)
    held = []
    for key in keys:
        window = tx.windows.get(key)
        if window is None:
            continue
        tx.windows.delete(key)
        report.evicted += 1
        if window.count:
            held.append(window)
    _summarise(tx, held, policy, ids, report, "evicted")
    return report
