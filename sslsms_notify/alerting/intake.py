"""The intake: producers queue alerts, a round decides them in one store transaction.

    producer --alert()--> queue (exact repeats: counted in place by the coalescer)
    round: take what is queued, identify each alert (route, fingerprint; rendering only
        when nothing else identifies it), merge occurrences of one alert, format its
        first and last text, then decide all of it in ONE store transaction
        (:func:`~.decisions.apply_intake`): dedup windows, lifecycles, group_wait
        buffers, per-phone caps and digests, the outbox

Producers never wait: :meth:`Intake.alert` is the hot path (the Notifier binds it as
its own ``alert``), :meth:`Intake.repeater` gives the logging handler a closure that
counts an exact repeat. A round the store refuses is held here, in order, and offered
again before anything newer; what cannot be kept is counted by reason.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from .._log import ErrorLog, get_logger, say_if_unseen
from ..stores.base import Store
from .alert import Severity
from .coalesce import Coalescer, peek
from .decisions import Hit, IdBook, Policy, Report, apply_intake, evict_windows
from .identity import Identifier, Identity
from .queued import (
    Queued,
    pack,
)
from .routing import Router
from .stats import Stats
from .ticket import Ticket

_log = get_logger("sslsms_notify.notifier")

#: queued items taken per intake round at most (one store transaction)
ROUND_SIZE = 5_000
#: after the store refused a round, the first and the longest wait before the next try
STORE_RETRY_FIRST, STORE_RETRY_MAX = 0.1, 2.0
_SEVERITIES = {int(s): s for s in Severity}
_DROP_MESSAGES = {
    "full": "alerts dropped: the queue was full",
    "closed": "alerts dropped: raised after the notifier was closed",
    "refused": "alerts dropped: the store refuses writes and the queue is full",
}

#: what a producer puts on the queue: (coalescer key, queued alert, occurrences, ticket)
Item = tuple[Hashable, Queued, int, Ticket | None]


class Barrier(threading.Event):
    """Set by the intake once everything queued before it is decided."""


@dataclass(slots=True)
class _Occurrences:
    """Occurrences of one alert taken in one round: the first, the latest, how many."""

    first: Queued
    last: Queued
    count: int
    ticket: Ticket | None = None


@dataclass(slots=True)
class _Alert:
    """One alert of a round: its identity, and its first and latest occurrences merged."""

    identity: Identity
    first: _Occurrences
    last: _Occurrences
    count: int


class Intake:
    """The queue, the coalescer and the rounds; one per notifier (rebuilt in a forked child).

    Args:
        store, router, policy, stats: the notifier's parts.
        host: shown as the origin's host when an alert names none.
        queue_size: distinct alerts waiting at most (repeats take no room).
        on_queued: called when a round put SMS in the outbox (wakes the dispatcher).
        start_threads: called by the first alert when the worker should run.
    """

    def __init__(
        self,
        *,
        store: Store,
        router: Router,
        policy: Policy,
        stats: Stats,
        host: str,
        queue_size: int,
        on_queued: Callable[[], None],
        start_threads: Callable[[], None] | None,
    ) -> None:
        self.store, self.router, self.policy, self.stats = store, router, policy, stats
        self.host = host
        self.queue_size = queue_size
        self.on_queued = on_queued
        self.start_threads = start_threads
        self.coalescing = policy.dedup_window > 0
        self.errors = ErrorLog(_log)
        self.identifier = Identifier(router, policy, host)
        self.reset()

    def reset(self) -> None:
        """Per-process state: a new, empty intake (also in a forked child)."""
        self.queue: deque[Item | Barrier] = deque()
        self.coalescer = Coalescer()
        self.received = itertools.count()
        self.dropped = itertools.count()  # every drop, whatever the reason (stats "dropped")
        self.dropped_closed = itertools.count()
        self.dropped_refused = itertools.count()
        #: decided but not yet taken by the store (it refused): offered again first
        self.held: list[_Occurrences] = []
        self.dropped_unstored = 0  # held alerts dropped past the bound (counted as refused)
        self._held_part = ROUND_SIZE
        self.store_retry_at = 0.0
        self._store_backoff = STORE_RETRY_FIRST
        self.store_refused_since: float | None = None
        self.wakeup = threading.Event()
        #: one round at a time (the intake thread's, or close()'s)
        self.lock = threading.RLock()
        #: the intake thread waits for work (producers set ``wakeup`` only then)
        self.sleeping = False
        #: set by close(): from then on alerts are dropped
        self.closed = False
        #: the worker runs (else the first alert starts it, if it may)
        self.running = False
        self._group_counts: dict[str, list[int]] = {}
        self._group_lock = threading.Lock()
        self._drops_logged = dict.fromkeys(_DROP_MESSAGES, 0)
        self._drops_log_due = dict.fromkeys(_DROP_MESSAGES, 0.0)
        self._unrouted_log_due = 0.0

    # -- producers (any thread) ----------------------------------------------------------
    def alert(
        self,
        text: str,
        *,
        severity: Severity | str | int = Severity.ERROR,
        key: str | None = None,
        groups: Iterable[str] | None = None,
        source: str = "",
        tags: Iterable[str] = (),
        template: str | None = None,
        exc_type: str | None = None,
        host: str | None = None,
    ) -> bool:
        """:meth:`Notifier.alert` (bound to the notifier as is: see there)."""
        # exact-type test first: the common case costs no method call
        if (type(text) is not str or not text or text.isspace()) and (
            not isinstance(text, str) or not text.strip()
        ):
            raise ValueError(f"text={text!r}: must be a non-empty string")
        level = severity if type(severity) is Severity else Severity.parse(severity)
        chosen = tuple(groups) if groups is not None else None
        if chosen is not None:
            self.router.check_names(chosen, "groups")
        # queued.pack(), inlined: on this hot path the call costs more than the tuple
        payload = (
            text,
            int(level),
            key,
            chosen,
            source,
            tuple(tags) if tags else (),
            template,
            exc_type,
            host,
            None,
            False,
            (),
        )
        next(self.received)
        if self.closed:
            self.drop()
            return False
        # Coalescer.repeat() and put(), inlined: on this hot path a call costs ~150 ns.
        if self.coalescing:
            entry = self.coalescer.entries.get(payload)
            if entry is not None:
                next(entry.counter)
                if not entry.dirty:
                    entry.dirty = True
                    self.coalescer.dirty.append(entry)
                    if self.sleeping:
                        self.wakeup.set()
                return True
        if len(self.queue) >= self.queue_size:
            self.drop()
            return False
        self.queue.append((payload, payload, 1, None))
        if self.coalescing:
            self.coalescer.register(payload, payload)
        if not self.running and self.start_threads is not None:
            self.start_threads()
        if self.sleeping:
            self.wakeup.set()
        return True

    def submit(
        self,
        text: str,
        *,
        severity: Severity | str | int,
        key: str | None,
        groups: Iterable[str] | None,
        source: str,
        tags: Iterable[str],
        host: str | None,
        lifecycle: str | None,
        resolved: bool,
        labels: tuple[tuple[str, str], ...] = (),
    ) -> Ticket:
        """:meth:`Notifier.submit`."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text={text!r}: must be a non-empty string")
        level = Severity.parse(severity)
        chosen = tuple(groups) if groups is not None else None
        if chosen is not None:
            self.router.check_names(chosen, "groups")
        ticket = Ticket()
        payload = pack(
            text,
            int(level),
            key=key,
            groups=chosen,
            source=source,
            tags=tuple(tags),
            host=host,
            lifecycle=lifecycle,
            resolved=resolved,
            labels=labels,
        )
        if not self.put((None, payload, 1, ticket)):
            ticket.settle("dropped", error="the notifier is closed" if self.closed else "queue full")
        return ticket

    def put(self, item: Item) -> bool:
        """Queue an item unless closed or full (:meth:`alert` inlines this)."""
        next(self.received)
        if self.closed or len(self.queue) >= self.queue_size:
            self.drop()
            return False
        self.queue.append(item)
        if not self.running and self.start_threads is not None:
            self.start_threads()
        if self.sleeping:
            self.wakeup.set()
        return True

    def repeater(self) -> Callable[[Hashable, Any], bool]:
        """A producer's counter of exact repeats: ``repeat(key, latest) -> bool``.

        True if ``key`` was registered (see :meth:`register`) and the repeat is
        counted; False if it must be queued as a first occurrence. One call, no lock.
        """

        def repeat(key: Hashable, latest: Any) -> bool:
            coalescer = self.coalescer
            entry = coalescer.entries.get(key)
            if entry is None:
                return False
            next(self.received)
            next(entry.counter)
            entry.last = latest
            if not entry.dirty:
                entry.dirty = True
                coalescer.dirty.append(entry)
                if self.sleeping:
                    self.wakeup.set()
            return True

        return repeat

    def register(self, key: Hashable, latest: Any, convert: Callable[[Any], Any] | None = None) -> None:
        """After queueing a first occurrence under ``key``: count its repeats from now on."""
        self.coalescer.register(key, latest, convert)

    def drop(self) -> None:
        """Count an alert the notifier cannot take, by reason (never on the hot path)."""
        next(self.dropped)
        if self.closed:
            next(self.dropped_closed)
            # After close() no intake thread logs for us: say it here, once a minute.
            self.log_drops("closed", peek(self.dropped_closed))
        elif self.store_refused_since is not None:
            next(self.dropped_refused)

    def log_drops(self, reason: str, total: int) -> None:
        new = total - self._drops_logged[reason]
        if new <= 0 or time.monotonic() < self._drops_log_due[reason]:
            return
        self._drops_logged[reason] = total
        self._drops_log_due[reason] = time.monotonic() + 60
        _log.warning(_DROP_MESSAGES[reason], dropped=new, queue_size=self.queue_size)
        say_if_unseen(_log.name, f"drop-{reason}", f"{_DROP_MESSAGES[reason]} ({new})", logging.WARNING)

    def log_all_drops(self) -> None:
        """Drops are counted in stats(); each reason says so in the log too, once a minute."""
        refused, closed = peek(self.dropped_refused), peek(self.dropped_closed)
        self.log_drops("full", peek(self.dropped) - refused - closed)
        self.log_drops("refused", refused + self.dropped_unstored)

    # -- what stats() and flush() read ------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {
            "received": peek(self.received),
            "dropped": peek(self.dropped) + self.dropped_unstored,
            "dropped_closed": peek(self.dropped_closed),
            "dropped_store_refused": peek(self.dropped_refused) + self.dropped_unstored,
            "held": len(self.held),
            "queued": len(self.queue),
        }

    def idle(self) -> bool:
        """Nothing queued, counted or held: everything accepted is in the store."""
        return not (self.queue or self.coalescer.dirty or self.held)

    def unstored(self) -> int:
        """Alerts accepted and not in the store (queued or held), barriers aside."""
        return sum(not isinstance(i, Barrier) for i in self.queue) + len(self.held)

    def group_stats(self) -> dict[str, dict[str, int]]:
        """Per recipient group: alerts that paged (first of their window) and repeats suppressed."""
        with self._group_lock:
            return {g: {"alerts": c[0], "suppressed": c[1]} for g, c in self._group_counts.items()}

    # -- rounds (the intake thread, or whoever holds ``lock``) -----------------------------------
    def round(self, *, final: bool = False, budget: float | None = None) -> bool:
        """Take what is queued (and repeats counted in place); decide it in one transaction.

        ``budget``: stop taking items after this many seconds of this thread's CPU.
        ``final``: closing time (every repeat counted so far; no waiting out a backoff).
        Returns whether there was anything to do.
        """
        with self.lock:
            if self.held:
                return self._retry_held(final)
            units: list[_Occurrences] = []
            by_key: dict[Hashable, _Occurrences] = {}
            barriers: list[Barrier] = []
            # The queue first: a first occurrence is queued before any of its repeats is
            # counted, so the alert's SMS shows the first text, its summary the latest.
            queue = self.queue
            taken = 0
            # CPU time, not wall time: under busy application threads a round waits for the
            # GIL far longer than it works.
            deadline = None if budget is None else time.thread_time() + budget / 4
            while queue and taken < ROUND_SIZE:
                item = queue.popleft()
                if isinstance(item, Barrier):
                    barriers.append(item)
                    continue
                taken += 1
                ckey, payload, count, ticket = item
                _add(units, by_key, ckey, payload, count, ticket)
                # about a quarter of a round's time goes to taking items, the rest to deciding them
                if deadline is not None and not taken & 63 and time.thread_time() > deadline:
                    break
            coalesced = 0
            collected = self.coalescer.collect_all() if final else self.coalescer.collect(time.monotonic())
            for ckey, payload, count in collected:
                coalesced += count
                _add(units, by_key, ckey, payload, count, None)
            if coalesced:
                self.stats.add(coalesced=coalesced)
            if units:
                self._decide(units)
            for barrier in barriers:
                barrier.set()
            return bool(units or barriers)

    def _retry_held(self, final: bool) -> bool:
        """Offer the store what it refused, alone and in order, before anything newer.

        A part at a time: a full disk may take a small transaction though not a big one.
        The part halves after each refusal and doubles after each success.
        """
        if not final and time.monotonic() < self.store_retry_at:
            return False  # the queue waits meanwhile (alert() counts what overflows it)
        part, self.held = self.held[: self._held_part], self.held[self._held_part :]
        if self._decide(part):
            self._held_part = min(ROUND_SIZE, self._held_part * 2)
        return True

    def _decide(self, units: list[_Occurrences]) -> bool:
        """Decide a round in one transaction; False if the store refused it (it is held).

        Units are identified first (route and fingerprint: no rendering when the
        template or text is known), then occurrences of the same alert are merged,
        so only each alert's first and last occurrence is rendered and formatted.
        """
        merged: dict[Hashable, _Alert] = {}
        alerts: list[_Alert] = []
        rejected = 0
        unrouted = 0
        for unit in units:
            try:
                identity = self.identifier.identify(unit.first)
            except ValueError as exc:
                rejected += _reject(unit, exc)
                continue
            if not identity[0]:  # routes are configured and none matched: nobody is paged
                unrouted += unit.count
                if unit.ticket is not None:
                    unit.ticket.settle("unrouted", error="no route matches this alert")
                continue
            if unit.ticket is None and self.coalescing:
                same = merged.get(identity)
                if same is not None:
                    same.last = unit
                    same.count += unit.count
                    continue
            alert = _Alert(identity, unit, unit, unit.count)
            alerts.append(alert)
            if unit.ticket is None and self.coalescing:
                merged[identity] = alert
        hits: list[Hit] = []
        tickets: dict[int, Ticket] = {}
        for index, alert in enumerate(alerts):
            try:
                first, last = alert.first.first, alert.last.last
                hits.extend(self.identifier.hits(alert.identity, first, last, alert.count, index))
            except ValueError as exc:
                rejected += _reject(alert.first, exc)
                continue
            if alert.first.ticket is not None:
                tickets[index] = alert.first.ticket
        if rejected:
            self.stats.add(rejected=rejected)
        if unrouted:
            self.stats.add(unrouted=unrouted)
            if time.monotonic() >= self._unrouted_log_due:  # a misconfigured route must be visible
                self._unrouted_log_due = time.monotonic() + 60
                _log.warning("alerts matched no route and paged nobody", count=unrouted)
        if not hits:
            return True
        ids = IdBook()
        try:
            report = self.store.transact(lambda tx: apply_intake(tx, hits, self.policy, ids))
        except Exception as exc:
            # Nothing of this round is stored: it stays here, in order, and goes first next
            # round. The queue waits meanwhile (bounded by queue_size: beyond, alert()
            # drops and counts), and flush()/close() say False while any of it is held.
            with_hits = {h.alert for h in hits}
            self._hold([a for i, a in enumerate(alerts) if i in with_hits], exc)
            return False
        self._store_took()
        self.count(report)
        for index, ticket in tickets.items():
            result = report.alerts.get(index)
            if result is None:
                ticket.settle("suppressed")
            else:
                ticket.settle(result.status, result.csms_ids, result.throttled)
        if report.queued:
            self.on_queued()
        if self.store.window_count() > self.policy.max_windows:
            self.count(self.store.transact(lambda tx: evict_windows(tx, self.policy, IdBook())))
        return True

    def _hold(self, alerts: list[_Alert], exc: BaseException) -> None:
        refused = [_Occurrences(a.first.first, a.last.last, a.count, a.first.ticket) for a in alerts]
        self.held = refused + self.held
        self._held_part = max(1, len(refused) // 2)
        now = time.monotonic()
        if self.store_refused_since is None:
            self.store_refused_since = now
            _log.error(
                "the store refused writes; alerts are held in memory and retried until it takes them",
                error=f"{type(exc).__name__}: {exc}",
                held=len(self.held),
                store=repr(self.store),
            )
        self.store_retry_at = now + self._store_backoff
        self._store_backoff = min(STORE_RETRY_MAX, self._store_backoff * 2)
        if len(self.held) > self.queue_size:  # bounded like the queue: the newest go
            for unit in self.held[self.queue_size :]:
                self.dropped_unstored += unit.count  # the intake's own thread: no lock needed
                if unit.ticket is not None:
                    unit.ticket.settle("dropped", error="the store refuses writes and the hold is full")
            del self.held[self.queue_size :]

    def _store_took(self) -> None:
        if self.store_refused_since is not None and not self.held:
            _log.warning(
                "the store takes writes again; held alerts are stored",
                refused_for=f"{time.monotonic() - self.store_refused_since:.1f}s",
            )
            self.store_refused_since = None
        self._store_backoff = STORE_RETRY_FIRST

    def count(self, report: Report) -> None:
        """Add what a transaction did to the counters."""
        self.stats.add(**report.counters())
        if report.by_group:
            with self._group_lock:
                for group, (first, suppressed) in report.by_group.items():
                    # a number named directly is no group: one bucket, not a series per phone
                    name = group if group in self.router.groups else "(numbers)"
                    counts = self._group_counts.setdefault(name, [0, 0])
                    counts[0] += first
                    counts[1] += suppressed


def _add(
    units: list[_Occurrences],
    by_key: dict[Hashable, _Occurrences],
    ckey: Hashable,
    payload: Queued,
    count: int,
    ticket: Ticket | None,
) -> None:
    if ticket is not None or ckey is None:
        units.append(_Occurrences(payload, payload, count, ticket))
        return
    unit = by_key.get(ckey)
    if unit is None:
        unit = by_key[ckey] = _Occurrences(payload, payload, count)
        units.append(unit)
    else:
        unit.last = payload
        unit.count += count


def _reject(unit: _Occurrences, exc: ValueError) -> int:
    _log.warning("alert rejected", error=str(exc))
    if unit.ticket is not None:
        unit.ticket.settle("rejected", error=str(exc))
    return unit.count
