"""The alert pipeline: ``alert()`` returns at once; two threads do the rest.

    producer --alert()--> queue (repeats: counted in place) --> INTAKE thread
        route, fingerprint, format; then ONE store transaction per round:
        dedup windows, group_wait buffers, per-phone caps and digests, outbox
    INTAKE thread, between rounds: the timers (window summaries, digests,
        group buffers), lease renewal, outbox bounds
    DISPATCH thread: outbox -> plan -> pace -> gateway -> outcome in the outbox

Intake never waits for the network, so an alert is in the store (durable on
SQLite and Redis) within milliseconds even while the gateway hangs; dispatch
may block on HTTP and holds nothing anyone else needs. ``close(timeout)``
returns within its timeout whatever the gateway does; what is not delivered
stays in a durable outbox for the next process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._log import get_logger
from ..gateway.clean import clean_text
from ..gateway.client import GatewayClient
from ..outcomes import Outcome
from ..stores import open_store
from ..stores.base import OutboxItem, OutboxState, Store
from ..validation import integer, non_negative, positive
from .alert import Alert, Severity, fingerprint_of
from .coalesce import Coalescer
from .decisions import (
    Hit,
    IdBook,
    Policy,
    Report,
    apply_intake,
    close_all_windows,
    evict_windows,
    flush_digests,
    flush_groups,
    sweep_all,
    window_key,
)
from .dispatch import Dispatcher, DispatchPolicy
from .formatting import DEFAULT_MAX_SEGMENTS, format_parts
from .messages import render
from .queued import (
    EXC_TYPE,
    GROUPS,
    HOST,
    KEY,
    LIFECYCLE,
    RAW,
    RESOLVED,
    SEVERITY,
    SOURCE,
    TAGS,
    TEMPLATE,
    Queued,
    pack,
)
from .routing import DEFAULT_GROUP, Route, Router
from .stats import Stats
from .urgency import urgent

_log = get_logger("sslsms_notify.notifier")
_live: weakref.WeakSet[Notifier] = weakref.WeakSet()

#: queued items taken per intake round at most (one store transaction)
ROUND_SIZE = 5_000
#: seconds of work per round on the intake thread, so a round never holds the GIL for long
ROUND_BUDGET = 0.002
#: while the application keeps producing, the share of CPU the intake thread takes
NICE_SHARE = 0.25
#: ... unless the queue is this full: then it catches up at full speed
HIGH_WATER = 0.5
#: how often the timers look at the store while work keeps coming
TIMER_INTERVAL = 0.1
#: windows, digests or groups one sweep transaction takes: a few milliseconds at most
SWEEP_LIMIT = 250
#: the longest the intake thread sleeps: other processes sharing the store add windows too
MAX_IDLE = 0.5
DEAD_LETTER_RETENTION = 7 * 24 * 3600.0
#: extra seconds close() allows for handing queued alerts to the store (no network involved)
INTAKE_GRACE = 0.8
#: after the store refused a round, the first and the longest wait before the next try
STORE_RETRY_FIRST, STORE_RETRY_MAX = 0.1, 2.0

# A queued alert: see queued.py for its layout.
Payload = Queued
_SEVERITIES = {int(s): s for s in Severity}


_TICKET_LOCK = threading.Lock()


class Ticket:
    """What became of one submitted alert, once the intake has decided (:meth:`Notifier.submit`).

    ``status``, an :class:`~sslsms_notify.outcomes.Outcome` (equal to its word):
    ``queued`` (SMS in the outbox: ``csms_ids``), ``buffered`` (waiting out
    ``group_wait``), ``suppressed`` (a repeat), ``throttled`` (held by a per-phone
    cap, in a digest), ``unrouted`` (routes are configured and none matched),
    ``rejected`` (bad input: ``error``) or ``dropped`` (queue full, or the notifier
    closed).
    """

    __slots__ = ("_callbacks", "_done", "csms_ids", "error", "resolved_ns", "status", "throttled")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._callbacks: list[Callable[[Ticket], None]] | None = None
        self.status: Outcome | None = None
        self.csms_ids: list[str] = []
        self.throttled = 0
        self.error = ""
        #: time.perf_counter_ns() when it was decided (for latency measurements)
        self.resolved_ns = 0

    def _resolve(
        self, status: str, csms_ids: Sequence[str] = (), throttled: int = 0, error: str = ""
    ) -> None:
        decided = Outcome(status)  # one of the intake's words, or a ValueError here, not later
        self.status, self.csms_ids, self.throttled, self.error = decided, list(csms_ids), throttled, error
        self.resolved_ns = time.perf_counter_ns()
        with _TICKET_LOCK:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            with contextlib.suppress(Exception):
                callback(self)

    @classmethod
    def rejected(cls, error: str) -> Ticket:
        """A ticket decided ``rejected`` before any intake saw the alert (a door's own check refused it)."""
        ticket = cls()
        ticket._resolve(Outcome.REJECTED, error=error)
        return ticket

    def wait(self, timeout: float | None = None) -> bool:
        """True once decided (then ``status`` is set)."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def add_done_callback(self, callback: Callable[[Ticket], None]) -> None:
        """Call ``callback(ticket)`` once decided (at once if it is); on the intake thread.

        For event loops: ``loop.call_soon_threadsafe`` from the callback, never block in it.
        """
        with _TICKET_LOCK:
            if not self._done.is_set():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    def __repr__(self) -> str:
        status = None if self.status is None else str(self.status)
        return f"Ticket(status={status!r}, csms_ids={self.csms_ids!r})"


@dataclass(slots=True)
class _Merged:
    """Units of one alert in one round: its identity, first and last unit, and total count."""

    identity: tuple[tuple[str, ...], int, str]
    first: _Unit
    last: _Unit
    count: int


class _Barrier(threading.Event):
    """Set by the intake thread once everything queued before it is in the store."""


@dataclass(slots=True)
class _Unit:
    """Occurrences of one alert taken in one round."""

    first: Payload
    last: Payload
    count: int
    ticket: Ticket | None = None


class Notifier:
    """Turns alerts into SMS for the right phones, once.

    Args:
        client: a :class:`GatewayClient` (default: ``GatewayClient.from_env()``).
        groups: ``{"oncall": ["017...", ...], "dbas": [...]}``.
        recipients: shorthand for ``groups={"default": recipients}``.
        routes: :class:`Route` rules (severity / source prefix / tags -> groups).
        store: a :class:`~sslsms_notify.stores.base.Store`, or ``"memory"``,
            ``"sqlite:///path.db"``, ``"redis://host:6379/0"``.
        dedup_window: seconds an alert's repeats are held back per group (0: off).
        repeat_interval: while repeats go on, one summary per this many seconds
            (default: ``dedup_window``).
        group_wait: seconds to gather distinct alerts for a group into one SMS (0: off).
        tps: requests per second to the gateway, shared through the store.
        per_recipient_limit: SMS per phone per ``per_recipient_period``; the
            overflow is folded into a digest (None: no cap).
        per_recipient_period: the period of the per-phone cap, in seconds.
        max_segments: SMS segments a message may use.
        queue_size: distinct alerts waiting for the intake thread; more are dropped
            and counted (a queued alert holds a few hundred bytes). Exact repeats take
            no room: they are counted in place.
        max_windows: dedup windows kept; beyond it the ones ending first are
            closed early (summarised if they hold repeats) and counted as ``evicted``.
        remind_every: seconds after which a webhook alert still firing, sent again by
            Alertmanager or Grafana, pages a reminder ``[CRIT still firing since
            02:10] ...`` (0, the default: a re-send is nothing new, never an SMS).
        max_pending: SMS waiting in the outbox; beyond it the oldest pending ones
            become dead letters ("outbox full"), counted as ``outbox_dropped``.
        dead_retention: seconds a dead letter is kept (for ``outbox list`` and
            ``outbox retry``) before it is forgotten.
        default_groups: groups for an alert that names none and matches no route
            (default: ``"default"`` if there is such a group, else the first group).
        host: shown in every SMS as ``[TAG] host/source: text`` (default: this
            machine's short host name).
        dispatch: a :class:`DispatchPolicy` (backoff, ``max_age``, lease,
            ``auth_pause``); its ``tps`` replaces ``tps`` when given.
        clock: the time source of a memory or SQLite store opened from a URL (tests).
        start: start the worker threads (False: drive the pipeline with :meth:`tick`).
        close_at_exit: seconds :meth:`close` gets at interpreter exit (None: no
            exit hook).
    """

    def __init__(
        self,
        client: GatewayClient | None = None,
        *,
        groups: Mapping[str, Sequence[str]] | None = None,
        recipients: Sequence[str] | None = None,
        routes: Sequence[Route | Mapping[str, Any]] = (),
        default_groups: Sequence[str] | None = None,
        store: Store | str | None = None,
        dedup_window: float = 300.0,
        repeat_interval: float | None = None,
        group_wait: float = 0.0,
        tps: float = 10.0,
        per_recipient_limit: int | None = 10,
        per_recipient_period: float = 3600.0,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
        queue_size: int = 50_000,
        max_windows: int = 100_000,
        remind_every: float = 0.0,
        max_pending: int = 10_000,
        dead_retention: float = DEAD_LETTER_RETENTION,
        host: str | None = None,
        dispatch: DispatchPolicy | None = None,
        clock: Callable[[], float] | None = None,
        start: bool = True,
        close_at_exit: float | None = 5.0,
    ) -> None:
        dedup_window = non_negative("dedup_window", dedup_window, maximum=30 * 86400)
        group_wait = non_negative("group_wait", group_wait, maximum=86400)
        if repeat_interval is not None:
            repeat_interval = positive("repeat_interval", repeat_interval, maximum=30 * 86400)
        if per_recipient_limit is not None:
            per_recipient_limit = integer("per_recipient_limit", per_recipient_limit, minimum=1)
        per_recipient_period = positive("per_recipient_period", per_recipient_period, maximum=30 * 86400)
        # 15 UCS-2 parts hold the gateway's 1000-character limit
        max_segments = integer("max_segments", max_segments, minimum=1, maximum=15)
        self._queue_size = integer("queue_size", queue_size, minimum=1)
        max_pending = integer("max_pending", max_pending, minimum=1)
        self.dead_retention = positive("dead_retention", dead_retention, maximum=365 * 86400)
        max_windows = integer("max_windows", max_windows, minimum=1)
        remind_every = non_negative("remind_every", remind_every, maximum=30 * 86400)
        if close_at_exit is not None:
            close_at_exit = non_negative("close_at_exit", close_at_exit)
        #: how long leaving a ``with Notifier(...)`` block waits for delivery
        self._exit_timeout = close_at_exit if close_at_exit is not None else 5.0
        groups = dict(groups or {})
        if recipients:
            groups.setdefault(DEFAULT_GROUP, list(recipients))
        if not groups:
            raise ValueError("groups (or recipients) must name at least one phone number")
        self.router = Router(
            groups, [r if isinstance(r, Route) else Route.parse(r) for r in routes], default_groups
        )
        dispatch_policy = dispatch or DispatchPolicy(tps=positive("tps", tps, maximum=10_000))
        self._owns_client = client is None
        self.client = client if client is not None else GatewayClient.from_env()
        self._owns_store = not isinstance(store, Store)
        self.store: Store = open_store(store, clock=clock)
        self.policy = Policy(
            dedup_window=dedup_window,
            repeat_interval=repeat_interval or dedup_window or 300.0,
            group_wait=group_wait,
            cap_limit=per_recipient_limit,
            cap_period=per_recipient_period,
            max_segments=max_segments,
            max_windows=max_windows,
            remind_every=remind_every,
        )
        self.max_pending = max_pending
        self.host = host if host is not None else socket.gethostname().split(".")[0]
        self.stats_counters = Stats()
        self.dispatcher = Dispatcher(self.client, self.store, self.stats_counters, dispatch_policy)
        self.dispatcher.on_outcome = self._on_outcome
        self._start = start
        self._close_lock = threading.Lock()
        self._closed = False
        self._close_result: bool | None = None
        self._fingerprints: dict[Hashable, str] = {}
        self._group_counts: dict[str, list[int]] = {}
        self._group_lock = threading.Lock()
        self._routes: dict[Hashable, tuple[str, ...]] = {}
        self._init_runtime()
        _live.add(self)
        if close_at_exit is not None:
            ref = weakref.ref(self)
            atexit.register(lambda: (n := ref()) is not None and n.close(close_at_exit))
        if start and self.store.durable:
            # Resume: what an earlier process left in the outbox goes out now, not when
            # this process raises its first alert, nor when the earlier one's backoff
            # (or credentials pause) ends. Same csms_ids: the gateway's duplicate check
            # keeps a resent SMS exactly-once.
            with contextlib.suppress(Exception):
                self.store.outbox_resume()
            self._start_threads()

    # These are the Notifier's settings, read by integrations and the CLI.
    @property
    def dedup_window(self) -> float:
        return self.policy.dedup_window

    @property
    def group_wait(self) -> float:
        return self.policy.group_wait

    def _init_runtime(self) -> None:
        """Per-process state: rebuilt in a forked child."""
        self._queue: deque[Any] = deque()
        self._coalescer = Coalescer()
        self._coalescing = self.policy.dedup_window > 0
        self._received = itertools.count()
        self._dropped = itertools.count()  # every drop, whatever the reason (stats "dropped")
        self._dropped_closed = itertools.count()
        self._dropped_refused = itertools.count()
        #: alerts decided but not yet taken by the store (it refused the round): retried first
        self._held: list[_Unit] = []
        self._dropped_unstored = 0  # held alerts dropped past the bound (counted as refused)
        self._held_part = ROUND_SIZE
        self._store_retry_at = 0.0
        self._store_backoff = STORE_RETRY_FIRST
        self._store_refused_since: float | None = None
        self._intake_wakeup = threading.Event()
        self._dispatch_wakeup = threading.Event()
        self._progress = threading.Condition()
        self._intake_lock = threading.RLock()  # one intake round at a time
        self._intake_sleeping = False
        self._stopping = False
        self._intake_thread: threading.Thread | None = None
        self._dispatch_thread: threading.Thread | None = None
        #: the pipeline's own threads: what they log never becomes an SMS
        self._worker_idents: frozenset[int | None] = frozenset()
        self._timers_due = 0.0
        self._renew_due = 0.0
        self._housekeeping_due = 0.0
        self._errors_logged: dict[str, float] = {}
        self._drops_logged = {"full": 0, "closed": 0, "refused": 0}
        self._drops_log_due = {"full": 0.0, "closed": 0.0, "refused": 0.0}
        self._unrouted_log_due = 0.0

    def __repr__(self) -> str:
        return f"Notifier(groups={sorted(self.router.groups)}, store={self.store!r}, client={self.client!r})"

    # -- producer side --------------------------------------------------------
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
        """Queue an alert; never blocks, never waits for the network.

        Returns False when it was dropped (queue full, or the notifier closed).
        Raises ValueError for bad arguments (empty text, unknown severity or group).
        """
        # exact-type test first: the common case costs no method call
        if (type(text) is not str or not text or text.isspace()) and (
            not isinstance(text, str) or not text.strip()
        ):
            raise ValueError(f"text={text!r}: must be a non-empty string")
        level = severity if type(severity) is Severity else Severity.parse(severity)
        chosen = tuple(groups) if groups is not None else None
        if chosen is not None:
            self.router._check_names(chosen, "groups")
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
        )
        next(self._received)
        if self._closed:
            self._drop()
            return False
        # The lines below inline _put() and Coalescer.repeat() (SMSHandler.handle() does
        # too): on this hot path a shared helper costs ~150 ns a call.
        if self._coalescing:
            entry = self._coalescer.entries.get(payload)
            if entry is not None:
                next(entry.counter)
                if not entry.dirty:
                    entry.dirty = True
                    self._coalescer.dirty.append(entry)
                    if self._intake_sleeping:
                        self._intake_wakeup.set()
                return True
        if len(self._queue) >= self._queue_size:
            self._drop()
            return False
        self._queue.append((payload, payload, 1, None))
        if self._coalescing:
            self._coalescer.register(payload, payload)
        if self._intake_thread is None and self._start:
            self._start_threads()
        if self._intake_sleeping:
            self._intake_wakeup.set()
        return True

    def submit(
        self,
        text: str,
        *,
        severity: Severity | str | int = Severity.ERROR,
        key: str | None = None,
        groups: Iterable[str] | None = None,
        source: str = "",
        tags: Iterable[str] = (),
        host: str | None = None,
        lifecycle: str | None = None,
        resolved: bool = False,
    ) -> Ticket:
        """Like :meth:`alert`, returning a :class:`Ticket` that tells what became of it.

        ``lifecycle`` (webhook doors): the alert's identity from firing to resolved
        (fingerprint and ``startsAt``); it then pages once while firing and once
        resolved, however often its producer sends it. ``resolved``: an all-clear.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text={text!r}: must be a non-empty string")
        level = Severity.parse(severity)
        chosen = tuple(groups) if groups is not None else None
        if chosen is not None:
            self.router._check_names(chosen, "groups")
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
        )
        if not self._put((None, payload, 1, ticket)):
            ticket._resolve("dropped", error="the notifier is closed" if self._closed else "queue full")
        return ticket

    def enqueue_lazy(
        self,
        render: Callable[[], str],
        *,
        severity: Severity,
        template: str | None = None,
        source: str = "",
        exc_type: str | None = None,
        groups: tuple[str, ...] | None = None,
        tags: Iterable[str] = (),
        count: int = 1,
        ckey: Hashable = None,
    ) -> bool:
        """The integrations' hot path: no validation, no formatting on the caller's thread.

        ``render`` runs on the intake thread. ``template``, if given, identifies
        repeats instead of the rendered text (both through the fingerprint rule). ``ckey``, if given, is the
        identity under which the caller registered this alert with the coalescer.
        """
        payload = pack(
            render,
            int(severity),
            groups=groups,
            source=source,
            tags=tuple(tags) if tags else (),
            template=template,
            exc_type=exc_type,
        )
        return self.enqueue_payload(ckey, payload, count)

    def enqueue_payload(self, ckey: Hashable, payload: Payload, count: int = 1) -> bool:
        """Queue a ready payload (see :data:`Payload`); the integrations' lowest level."""
        return self._put((ckey if self._coalescing else None, payload, count, None))

    def _put(self, item: tuple[Hashable, Payload, int, Ticket | None]) -> bool:
        """Queue an item unless closed or full (alert() inlines this: see there)."""
        next(self._received)
        if self._closed or len(self._queue) >= self._queue_size:
            self._drop()
            return False
        self._queue.append(item)
        if self._intake_thread is None and self._start:
            self._start_threads()
        if self._intake_sleeping:
            self._intake_wakeup.set()
        return True

    def _drop(self) -> None:
        """Count an alert the notifier cannot take, by reason (never on the hot path)."""
        next(self._dropped)
        if self._closed:
            next(self._dropped_closed)
            # After close() no intake thread logs for us: say it here, once a minute.
            self._log_drops("closed", _peek(self._dropped_closed))
        elif self._store_refused_since is not None:
            next(self._dropped_refused)

    def _log_drops(self, reason: str, total: int) -> None:
        new = total - self._drops_logged[reason]
        if new <= 0 or time.monotonic() < self._drops_log_due[reason]:
            return
        self._drops_logged[reason] = total
        self._drops_log_due[reason] = time.monotonic() + 60
        message = {
            "full": "alerts dropped: the queue was full",
            "closed": "alerts dropped: raised after the notifier was closed",
            "refused": "alerts dropped: the store refuses writes and the queue is full",
        }[reason]
        _log.warning(message, dropped=new, queue_size=self._queue_size)

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far (by this thread) is decided and in the store."""
        if self._intake_thread is None or not self._intake_thread.is_alive():
            with self._intake_lock:
                while (self._queue or self._coalescer.dirty) and not self._held:
                    self._intake_round(final=True)
            return not self._held
        barrier = _Barrier()
        self._queue.append(barrier)
        self._intake_wakeup.set()
        return barrier.wait(timeout) and not self._held

    def is_worker_thread(self) -> bool:
        return threading.get_ident() in self._worker_idents

    # -- threads ------------------------------------------------------------------
    def _start_threads(self) -> None:
        with self._progress:
            if self._intake_thread is not None or self._stopping or self._closed:
                return
            self._intake_thread = threading.Thread(
                target=self._intake_loop, name="sslsms-intake", daemon=True
            )
            self._dispatch_thread = threading.Thread(
                target=self._dispatch_loop, name="sslsms-dispatch", daemon=True
            )
            self._intake_thread.start()
            self._dispatch_thread.start()
            self._worker_idents = frozenset({self._intake_thread.ident, self._dispatch_thread.ident})

    def _intake_loop(self) -> None:
        # CPU time of this thread, not wall time: under busy application threads a round
        # waits for the GIL far longer than it works, and our share is of the CPU.
        clock = time.thread_time
        while not self._stopping:
            started, received = clock(), _peek(self._received)
            try:
                with urgent():
                    worked = self._intake_round(budget=ROUND_BUDGET)
                    worked |= self._timers()
            except Exception as exc:  # the thread must outlive any one bad round
                self._log_failure("intake round failed", exc)
                worked = False
                time.sleep(0.2)
            if worked:
                backlog = len(self._queue)
                if backlog and backlog < self._queue_size * HIGH_WATER and _peek(self._received) != received:
                    # The application keeps producing alerts: yield it most of the CPU
                    # (our share stays near NICE_SHARE) rather than racing it for the GIL.
                    # Past the high-water mark we catch up at full speed to drop nothing.
                    time.sleep((clock() - started) * (1 / NICE_SHARE - 1))
                continue
            self._intake_sleeping = True
            if self._held:  # the store refused: wait for the next try, whatever is queued
                self._intake_wakeup.wait(max(0.005, self._store_retry_at - time.monotonic()))
            elif not self._queue and not self._coalescer.dirty:
                self._intake_wakeup.wait(self._idle_wait())
            self._intake_sleeping = False
            self._intake_wakeup.clear()

    def _dispatch_loop(self) -> None:
        try:
            while not self._stopping:
                try:
                    with urgent():
                        sent = self.dispatcher.run_once()
                except Exception as exc:
                    self._log_failure("dispatch round failed", exc)
                    sent = 0
                    time.sleep(0.2)
                with self._progress:
                    self._progress.notify_all()
                if sent:
                    continue
                self._dispatch_wakeup.wait(self._dispatch_wait())
                self._dispatch_wakeup.clear()
        finally:
            if self._close_result is not None:  # close() gave up waiting for us: we release
                self._release()

    def _log_failure(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        # a broken store must not flood the log; one failure must not hide another
        if now - self._errors_logged.get(what, -60.0) >= 10:
            self._errors_logged[what] = now
            _log.error(what, error=f"{type(exc).__name__}: {exc}")

    def _idle_wait(self) -> float:
        waits = [MAX_IDLE, self._renew_due - time.monotonic()]
        if self._coalescer.entries:
            waits.append(self._coalescer.period)
        with contextlib.suppress(Exception):
            next_due = self.store.next_due()
            if next_due is not None:
                until = next_due - self.store.now()
                waits.append(until)
                # waking for it, the timers look at once, not at their next regular check
                self._timers_due = min(self._timers_due, time.monotonic() + until)
        return min(max(0.005, w) for w in waits)

    def _dispatch_wait(self) -> float:
        waits = [MAX_IDLE]
        with contextlib.suppress(Exception):
            if self.dispatcher.paused_until > self.store.now():
                return MAX_IDLE
            due = self.store.outbox_next_due()
            if due is not None:
                waits.append(due - self.store.now())
        return min(max(0.005, w) for w in waits)

    # -- intake ---------------------------------------------------------------------
    def _intake_round(self, *, final: bool = False, budget: float | None = None) -> bool:
        """Take what is queued (and repeats counted in place); decide it in one transaction.

        ``budget``: stop taking items after this many seconds of preparing them.
        """
        with self._intake_lock:
            if self._held:
                return self._retry_held(final)
            units: list[_Unit] = []
            by_key: dict[Hashable, _Unit] = {}
            barriers: list[_Barrier] = []
            # The queue first: a first occurrence is queued before any of its repeats is
            # counted, so the alert's SMS shows the first text, its summary the latest.
            queue = self._queue
            taken = 0
            deadline = None if budget is None else time.thread_time() + budget / 4
            while queue and taken < ROUND_SIZE:
                item = queue.popleft()
                if isinstance(item, _Barrier):
                    barriers.append(item)
                    continue
                taken += 1
                ckey, payload, count, ticket = item
                self._add(units, by_key, ckey, payload, count, ticket)
                # about a quarter of a round's time goes to taking items, the rest to deciding them
                if deadline is not None and not taken & 63 and time.thread_time() > deadline:
                    break
            coalesced = 0
            collected = self._coalescer.collect_all() if final else self._coalescer.collect(time.monotonic())
            for ckey, payload, count in collected:
                coalesced += count
                self._add(units, by_key, ckey, payload, count, None)
            if coalesced:
                self.stats_counters.add(coalesced=coalesced)
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
        if not final and time.monotonic() < self._store_retry_at:
            return False  # the queue waits meanwhile (alert() counts what overflows it)
        part, self._held = self._held[: self._held_part], self._held[self._held_part :]
        if self._decide(part):
            self._held_part = min(ROUND_SIZE, self._held_part * 2)
        return True

    @staticmethod
    def _add(
        units: list[_Unit],
        by_key: dict[Hashable, _Unit],
        ckey: Hashable,
        payload: Payload,
        count: int,
        ticket: Ticket | None,
    ) -> None:
        if ticket is not None or ckey is None:
            units.append(_Unit(payload, payload, count, ticket))
            return
        unit = by_key.get(ckey)
        if unit is None:
            unit = by_key[ckey] = _Unit(payload, payload, count)
            units.append(unit)
        else:
            unit.last = payload
            unit.count += count

    def _decide(self, units: list[_Unit]) -> bool:
        """Decide a round in one transaction; False if the store refused it (it is held).

        Units are identified first (route and fingerprint: no rendering when the
        template or text is known), then occurrences of the same alert are merged,
        so only each alert's first and last occurrence is rendered and formatted.
        """
        merged: dict[Hashable, _Merged] = {}
        alerts: list[_Merged] = []
        rejected = 0
        unrouted = 0
        for unit in units:
            try:
                identity = self._identify(unit)
            except ValueError as exc:
                rejected += self._reject(unit, exc)
                continue
            if not identity[0]:  # routes are configured and none matched: nobody is paged
                unrouted += unit.count
                if unit.ticket is not None:
                    unit.ticket._resolve("unrouted", error="no route matches this alert")
                continue
            if unit.ticket is None and self._coalescing:
                same = merged.get(identity)
                if same is not None:
                    same.last = unit
                    same.count += unit.count
                    continue
            alert = _Merged(identity, unit, unit, unit.count)
            alerts.append(alert)
            if unit.ticket is None and self._coalescing:
                merged[identity] = alert
        hits: list[Hit] = []
        tickets: dict[int, Ticket] = {}
        for index, alert in enumerate(alerts):
            try:
                hits.extend(self._hits(alert, index))
            except ValueError as exc:
                rejected += self._reject(alert.first, exc)
                continue
            if alert.first.ticket is not None:
                tickets[index] = alert.first.ticket
        if rejected:
            self.stats_counters.add(rejected=rejected)
        if unrouted:
            self.stats_counters.add(unrouted=unrouted)
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
        self._count(report)
        for index, ticket in tickets.items():
            result = report.alerts.get(index)
            if result is None:
                ticket._resolve("suppressed")
            else:
                ticket._resolve(result.status, result.csms_ids, result.throttled)
        if report.queued:
            self._dispatch_wakeup.set()
        if self.store.window_count() > self.policy.max_windows:
            self._count(self.store.transact(lambda tx: evict_windows(tx, self.policy, IdBook())))
        return True

    def _hold(self, alerts: list[_Merged], exc: BaseException) -> None:
        refused = [_Unit(a.first.first, a.last.last, a.count, a.first.ticket) for a in alerts]
        self._held = refused + self._held
        self._held_part = max(1, len(refused) // 2)
        now = time.monotonic()
        if self._store_refused_since is None:
            self._store_refused_since = now
            _log.error(
                "the store refused writes; alerts are held in memory and retried until it takes them",
                error=f"{type(exc).__name__}: {exc}",
                held=len(self._held),
                store=repr(self.store),
            )
        self._store_retry_at = now + self._store_backoff
        self._store_backoff = min(STORE_RETRY_MAX, self._store_backoff * 2)
        if len(self._held) > self._queue_size:  # bounded like the queue: the newest go
            for unit in self._held[self._queue_size :]:
                self._drop_unstored(unit)
            del self._held[self._queue_size :]

    def _drop_unstored(self, unit: _Unit) -> None:
        self._dropped_unstored += unit.count  # the intake thread's alone: no lock needed
        if unit.ticket is not None:
            unit.ticket._resolve("dropped", error="the store refuses writes and the hold is full")

    def _store_took(self) -> None:
        if self._store_refused_since is not None and not self._held:
            _log.warning(
                "the store takes writes again; held alerts are stored",
                refused_for=f"{time.monotonic() - self._store_refused_since:.1f}s",
            )
            self._store_refused_since = None
        self._store_backoff = STORE_RETRY_FIRST

    @staticmethod
    def _reject(unit: _Unit, exc: ValueError) -> int:
        _log.warning("alert rejected", error=str(exc))
        if unit.ticket is not None:
            unit.ticket._resolve("rejected", error=str(exc))
        return unit.count

    def _count(self, report: Report) -> None:
        self.stats_counters.add(**report.counters())
        if report.by_group:
            with self._group_lock:
                for group, (first, suppressed) in report.by_group.items():
                    # a number named directly is no group: one bucket, not a series per phone
                    name = group if group in self.router.groups else "(numbers)"
                    counts = self._group_counts.setdefault(name, [0, 0])
                    counts[0] += first
                    counts[1] += suppressed

    def group_stats(self) -> dict[str, dict[str, int]]:
        """Per recipient group: alerts that paged (first of their window) and repeats suppressed."""
        with self._group_lock:
            return {g: {"alerts": c[0], "suppressed": c[1]} for g, c in self._group_counts.items()}

    def _identify(self, unit: _Unit) -> tuple[tuple[str, ...], int, str]:
        """(groups, severity, fingerprint) of a unit; renders its text only if nothing else identifies it."""
        first = unit.first
        raw, number, key, chosen = first[RAW], first[SEVERITY], first[KEY], first[GROUPS]
        source, tags, template, exc_type = first[SOURCE], first[TAGS], first[TEMPLATE], first[EXC_TYPE]
        route_key = (source, number, tags, chosen)
        group_names = self._routes.get(route_key)
        if group_names is None:
            probe = Alert(
                text="-", severity=_SEVERITIES[number], source=source, tags=frozenset(tags), groups=chosen
            )
            group_names = self.router.group_names(probe)
            if len(self._routes) > 10_000:
                self._routes.clear()
            self._routes[route_key] = group_names
        if key or template is not None or type(raw) is str:
            basis_text = template if template is not None else raw
        else:
            basis_text = self._render(raw)  # a callable with no template: its text is its identity
        basis = (key, source, number, basis_text, exc_type)
        fingerprint = self._fingerprints.get(basis)
        if fingerprint is None:
            fingerprint = fingerprint_of(key, source, _SEVERITIES[number], basis_text or "", exc_type)
            if len(self._fingerprints) > 50_000:
                self._fingerprints.clear()
            self._fingerprints[basis] = fingerprint
        return group_names, number, fingerprint

    def _hits(self, alert: _Merged, index: int) -> list[Hit]:
        """The merged alert for each group it goes to, with its first and last SMS text."""
        group_names, number, fingerprint = alert.identity
        first = alert.first.first
        raw, source, resolved = first[RAW], first[SOURCE], first[RESOLVED]
        level = _SEVERITIES[number]
        host = self.host if first[HOST] is None else first[HOST]
        segments = self.policy.max_segments
        first_text = format_parts(level, host, source, self._render(raw), segments, resolved=resolved)
        last_text = first_text
        last_raw = alert.last.last[RAW]
        if last_raw is not raw and last_raw != raw:
            with contextlib.suppress(ValueError):
                last_text = format_parts(
                    level, host, source, self._render(last_raw), segments, resolved=resolved
                )
        return [
            Hit(
                window_key(group, level, fingerprint),
                group,
                self.router.numbers(group),
                alert.count,
                first_text,
                last_text,
                index,
                first[LIFECYCLE],
                resolved,
            )
            for group in group_names
        ]

    @staticmethod
    def _render(raw: Any) -> str:
        try:
            text = render(raw)
        except Exception as exc:  # a broken __str__ in a log argument must not stop the thread
            text = f"(message could not be formatted: {type(exc).__name__})"
        cleaned = clean_text(text)
        if not cleaned or cleaned.isspace():
            raise ValueError(f"text={text[:40]!r}: nothing left to send once control characters are removed")
        return cleaned

    # -- timers and housekeeping (on the intake thread) ------------------------------
    def _timers(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        worked = False
        if now >= self._renew_due:
            self._renew_due = now + self.dispatcher.policy.lease / 3
            in_flight = list(self.dispatcher.in_flight)
            if in_flight:
                self.store.outbox_renew(in_flight, self.dispatcher.policy.lease)
        if not force and now < self._timers_due:
            return False
        self._timers_due = now + TIMER_INTERVAL
        for store in self._timer_stores():
            next_due = store.next_due()
            if next_due is None or next_due > store.now():
                continue
            report = store.transact(lambda tx: sweep_all(tx, self.policy, IdBook(), SWEEP_LIMIT))
            self._count(report)
            worked |= bool(report.queued or report.windows_closed or report.groups)
            if report.windows_closed >= SWEEP_LIMIT:
                self._timers_due = 0.0  # more are due: the next round sweeps on at once
            if report.queued:
                self._dispatch_wakeup.set()
        if force or now >= self._housekeeping_due:
            self._housekeeping_due = now + 1.0
            self._housekeeping()
        return worked

    def _timer_stores(self) -> list[Any]:
        stores = getattr(self.store, "timer_stores", None)
        return list(stores()) if stores is not None else [self.store]

    def _housekeeping(self) -> None:
        # Drops are counted in stats(); each reason says so in the log too, once a minute.
        refused, closed = _peek(self._dropped_refused), _peek(self._dropped_closed)
        self._log_drops("full", _peek(self._dropped) - refused - closed)
        self._log_drops("refused", refused + self._dropped_unstored)
        counts = self.store.outbox_counts()
        if counts.pending > self.max_pending:
            dropped = self.store.outbox_trim(self.max_pending, "dropped: outbox full")
            if dropped:
                self.stats_counters.add(outbox_dropped=len(dropped))
                _log.warning(
                    "outbox full; oldest pending SMS dropped",
                    dropped=len(dropped),
                    max_pending=self.max_pending,
                )
        if counts.dead:
            self.store.outbox_expire_dead(self.store.now() - self.dead_retention)
        move = getattr(self.store, "move_spool", None)
        if move is not None and move():
            self._dispatch_wakeup.set()

    def _on_outcome(self, items: list[OutboxItem]) -> None:
        with self._progress:
            self._progress.notify_all()

    # -- flush and close --------------------------------------------------------------
    def tick(self, *, force_sweep: bool = False) -> bool:
        """One round of everything on the caller's thread (a notifier made with ``start=False``)."""
        worked = self._intake_round()
        worked |= self._timers(force=force_sweep)
        worked |= self.dispatcher.run_once() > 0
        return worked

    def _threads_alive(self) -> bool:
        return self._intake_thread is not None and self._intake_thread.is_alive()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued or pending; True if nothing is left by the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._close_result is not None:
            return self._close_result
        if self._threads_alive():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.sync(remaining):
                return False
            self._timers_due = 0.0
            self._intake_wakeup.set()
        while True:
            if not self._threads_alive():
                self.tick(force_sweep=True)
            else:
                self._dispatch_wakeup.set()
            if self._drained():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._progress:
                self._progress.wait(0.02)

    def _drained(self) -> bool:
        if self._queue or self._coalescer.dirty or self._held:
            return False
        if self.policy.group_wait > 0 and self.store.transact(lambda tx: tx.count("groups")):
            return False
        return self.store.outbox_open() == 0

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending within ``timeout``, then stop. Safe to call twice.

        Returns within ``timeout`` (plus a fraction of a second) whatever the
        gateway does. On a durable store what is not delivered stays in the
        outbox for the next process; on a memory store it is lost, counted as
        ``lost`` and logged once.
        """
        with self._close_lock:
            if self._close_result is not None:
                return self._close_result
            deadline = None if timeout is None else time.monotonic() + timeout

            def remaining() -> float | None:
                return None if deadline is None else max(0.0, deadline - time.monotonic())

            self._closed = True  # from here on alert() drops: the queue can only shrink
            # Handing the queue to the store never waits for the network: it gets a
            # grace period past the deadline rather than losing accepted alerts.
            grace = remaining()
            delivered = self._finish_intake(None if grace is None else grace + INTAKE_GRACE)
            delivered = self.flush(remaining()) and delivered
            self._stopping = True
            self.dispatcher.stopping = True
            self._intake_wakeup.set()
            self._dispatch_wakeup.set()
            for thread in (self._intake_thread, self._dispatch_thread):
                if thread is not None and thread is not threading.current_thread():
                    wait = remaining()
                    thread.join(None if wait is None else max(0.05, wait))
            if self._dispatch_thread is not None and self._dispatch_thread.is_alive():
                self._hand_back_in_flight()
            left = self._report_undelivered()
            self._close_result = delivered and not left
            dispatching = self._dispatch_thread is not None and self._dispatch_thread.is_alive()
            if not dispatching:  # else the dispatch thread releases when its request ends
                self._release()
            return self._close_result

    def _finish_intake(self, timeout: float | None) -> bool:
        """Everything queued or counted goes into the store; a memory store's timers fire now."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while self._queue or self._coalescer.dirty or self._held:
                if self._held:  # the store refuses: try again when due, within the deadline
                    wait = self._store_retry_at - time.monotonic()
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    if wait > 0:
                        time.sleep(wait)
                if not self._intake_lock.acquire(
                    timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())
                ):
                    return False
                try:
                    self._intake_round(final=bool(self._held))
                finally:
                    self._intake_lock.release()
                if deadline is not None and time.monotonic() >= deadline:
                    return not self._queue and not self._held
            with self._intake_lock:
                self._intake_round(final=True)
                if not self.store.durable:
                    # Nobody will sweep a memory store later: send gathered alerts, "+N more"
                    # summaries and held digests now (a digest then goes out despite its cap).
                    ids = IdBook()
                    self._count(self.store.transact(lambda tx: flush_groups(tx, self.policy, ids)))
                    self._count(self.store.transact(lambda tx: close_all_windows(tx, self.policy, ids)))
                    self._count(self.store.transact(lambda tx: flush_digests(tx, self.policy, ids)))
        except Exception as exc:
            self._log_failure("could not hand queued alerts to the store at close", exc)
            return False
        return True

    def _hand_back_in_flight(self) -> None:
        """The request under way is abandoned: its SMS are due again now, for the next process.

        Their outcome is unknown, so they keep their csms_id (and bulk binding):
        if the gateway did take them, it answers the resend with "Duplicate CMS ID".
        """
        try:
            in_flight = self.store.outbox_get(list(self.dispatcher.in_flight))
            now = self.store.now()
            self.store.outbox_update(
                [
                    i.evolve(state=OutboxState.PENDING, next_attempt_at=now, maybe_sent=True)
                    for i in in_flight.values()
                    if i.state is OutboxState.INFLIGHT
                ]
            )
        except Exception as exc:
            self._log_failure("could not hand back SMS of the abandoned request", exc)

    def _report_undelivered(self) -> int:
        """Say (and count) what close() leaves undelivered; returns how much that is.

        Alerts the store never took are lost whatever the store. SMS in a durable outbox
        wait for the next process. A memory store loses its SMS, but one whose request was
        abandoned mid-way may have reached the gateway: that is said, not counted as lost.
        """
        unstored = sum(not isinstance(i, _Barrier) for i in self._queue) + len(self._held)
        if unstored:
            self.stats_counters.add(lost=unstored)
            _log.error("closed with alerts the store never took; they are lost", alerts=unstored)
        try:
            pending = self.store.outbox_open()
        except Exception as exc:
            self._log_failure("could not count the outbox at close", exc)
            return unstored + 1
        if pending and self.store.durable:
            _log.warning("closed with SMS undelivered; they stay in the outbox", pending=pending)
        elif pending:
            unsure = sum(1 for i in self.store.outbox_list(limit=pending) if i.maybe_sent)
            self.stats_counters.add(lost=pending - unsure)
            _log.error(
                "closed with SMS undelivered; a memory store loses them",
                lost=pending - unsure,
                maybe_delivered=unsure,  # their request was abandoned: the answer never came
            )
        return unstored + pending

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            if self._owns_client:
                self.client.close()
        with contextlib.suppress(Exception):
            if self._owns_store:
                self.store.close()

    async def aflush(self, timeout: float | None = None) -> bool:
        """:meth:`flush` for asyncio code: waits in a thread, not on the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        # Bounded like interpreter exit: a gateway that is down must not hold the block.
        self.close(self._exit_timeout)

    def stats(self) -> dict[str, int]:
        """Counters (see :class:`~sslsms_notify.alerting.stats.Stats`) and the current backlog, in O(1)."""
        data = self.stats_counters.snapshot()
        data["received"] = _peek(self._received)
        data["dropped"] = _peek(self._dropped) + self._dropped_unstored
        data["dropped_closed"] = _peek(self._dropped_closed)
        data["dropped_store_refused"] = _peek(self._dropped_refused) + self._dropped_unstored
        data["held"] = len(self._held)
        data["queued"] = len(self._queue)
        with contextlib.suppress(Exception):
            counts = self.store.outbox_counts()
            data["pending"] = counts.pending
            data["dead"] = counts.dead
        with contextlib.suppress(Exception):
            data["windows"] = self.store.window_count()
        return data

    def outcomes(self, csms_ids: Sequence[str]) -> dict[str, str]:
        """``delivered``, ``pending`` or ``failed`` for each of these SMS (a sent SMS has left the outbox)."""
        found = self.store.outbox_get(csms_ids)
        result = {}
        for csms_id in csms_ids:
            item = found.get(csms_id)
            if item is None:
                result[csms_id] = "delivered"  # a sent SMS leaves the outbox
            elif item.state is OutboxState.DEAD:
                result[csms_id] = "failed"
            else:
                result[csms_id] = "pending"
        return result

    # -- os.fork ----------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # The parent still owns what it had queued; the child starts empty, with
        # its own threads (started on first use), connections and locks.
        self._init_runtime()
        self._close_lock = threading.Lock()
        self.stats_counters.reset_lock()
        self.dispatcher.in_flight = set()
        self.dispatcher.auth_failed = threading.Event()
        self.client._reopen_after_fork()
        self.store.after_fork()


def _peek(counter: itertools.count[int]) -> int:
    # itertools.count has no getter; its repr is "count(N)".
    return int(repr(counter)[6:-1])


def _after_fork() -> None:
    for notifier in list(_live):
        with contextlib.suppress(Exception):
            notifier._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
