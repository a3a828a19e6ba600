"""The alert pipeline: ``alert()`` returns at once; a worker routes, dedups, throttles and sends.

    producer -> alert() -> bounded queue -> worker:
        route -> dedup -> (group_wait) -> format -> per-recipient cap -> outbox -> dispatch

``alert()`` does no I/O and takes no lock: it appends to a deque and, if the
worker sleeps, wakes it. Everything else happens on the worker thread, or on
the caller's thread inside :meth:`Notifier.tick` when no worker is started.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._log import get_logger
from ..gateway.client import GatewayClient
from ..gateway.ids import new_csms_id
from ..stores import open_store
from ..stores.base import OutboxItem, Store
from .alert import Alert, Severity
from .dispatch import Dispatcher, DispatchPolicy
from .formatting import (
    DEFAULT_MAX_SEGMENTS,
    format_alert,
    format_digest,
    format_group,
    format_summary,
)
from .routing import DEFAULT_GROUP, Route, Router
from .stats import Stats

_log = get_logger("sslsms_notify.notifier")
_SEP = "\x1f"
_live: weakref.WeakSet[Notifier] = weakref.WeakSet()


@dataclass(slots=True)
class _GroupBuffer:
    """Distinct alerts for one group waiting out ``group_wait`` to go as one SMS."""

    deadline: float
    texts: list[str] = field(default_factory=list)


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
        per_recipient_limit / per_recipient_period: SMS per phone per period;
            the overflow is folded into a digest (None: no cap).
        max_segments: SMS segments a message may use.
        queue_size: alerts waiting for the worker; more are dropped and counted.
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
        queue_size: int = 10_000,
        host: str | None = None,
        dispatch: DispatchPolicy | None = None,
        clock: Callable[[], float] | None = None,
        start: bool = True,
        close_at_exit: float | None = 5.0,
    ) -> None:
        _check_non_negative(
            dedup_window=dedup_window,
            group_wait=group_wait,
            per_recipient_period=per_recipient_period,
        )
        if repeat_interval is not None and repeat_interval <= 0:
            raise ValueError(f"repeat_interval must be positive, not {repeat_interval}")
        if max_segments < 1:
            raise ValueError(f"max_segments must be at least 1, not {max_segments}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        if per_recipient_limit is not None and per_recipient_limit < 1:
            raise ValueError(f"per_recipient_limit must be at least 1, not {per_recipient_limit}")
        groups = dict(groups or {})
        if recipients:
            groups.setdefault(DEFAULT_GROUP, list(recipients))
        if not groups:
            raise ValueError("groups (or recipients) must name at least one phone number")
        self.router = Router(
            groups, [r if isinstance(r, Route) else Route.parse(r) for r in routes], default_groups
        )
        self._owns_client = client is None
        self.client = client if client is not None else GatewayClient.from_env()
        self._owns_store = not hasattr(store, "dedup_hit")
        self.store: Store = open_store(store, clock=clock)
        self.dedup_window = dedup_window
        self.repeat_interval = repeat_interval or dedup_window or 300.0
        self.group_wait = group_wait
        self.per_recipient_limit = per_recipient_limit
        self.per_recipient_period = per_recipient_period
        self.max_segments = max_segments
        self.host = host if host is not None else socket.gethostname().split(".")[0]
        self.stats_counters = Stats()
        self.dispatcher = Dispatcher(
            self.client, self.store, self.stats_counters, dispatch or DispatchPolicy(tps=tps)
        )
        self._queue_size = queue_size
        self._start = start
        self._init_runtime()
        self._closed = False
        _live.add(self)
        if close_at_exit is not None:
            ref = weakref.ref(self)
            atexit.register(lambda: (n := ref()) is not None and n.close(close_at_exit))

    def _init_runtime(self) -> None:
        """Per-process state: rebuilt in a forked child."""
        self._queue: deque[tuple[Any, ...]] = deque()
        self._received = itertools.count()
        #: producers that hold counts back (SMSHandler's coalesced repeats); called each round
        self._drains: list[Callable[[bool], None]] = getattr(self, "_drains", [])  # kept across fork
        self._dropped = itertools.count()
        self._wakeup = threading.Event()
        self._idle = threading.Condition()
        self._tick_lock = threading.Lock()
        self._sleeping = False
        self._busy = False
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._buffers: dict[str, _GroupBuffer] = {}
        self._last_sweep = 0.0

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
        """Queue an alert; never blocks. False when it was dropped (queue full or closed)."""
        # exact-type test first: the common case costs no method call
        if (type(text) is not str or not text or text.isspace()) and (
            not isinstance(text, str) or not text.strip()
        ):
            raise ValueError("text must be a non-empty string")
        level = severity if type(severity) is Severity else Severity.parse(severity)
        chosen = tuple(groups) if groups is not None else None
        if chosen is not None:
            self.router._check_names(chosen, "groups")
        # No clock read here: the worker stamps alerts when it takes them. The lines
        # below are enqueue_lazy()'s twin, inlined: a shared helper costs ~150 ns a call.
        next(self._received)
        if self._closed or len(self._queue) >= self._queue_size:
            next(self._dropped)
            return False
        self._queue.append((text, level, key, chosen, source, tags, template, exc_type, host, None, 1))
        if self._worker is None and self._start:
            self._start_worker()
        if self._sleeping:
            self._wakeup.set()
        return True

    # -- lifecycle --------------------------------------------------------------
    def _start_worker(self) -> None:
        with self._idle:
            if self._worker is not None or self._stopping:
                return
            self._worker = threading.Thread(target=self._run, name="sslsms-notifier", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while not self._stopping:
            try:
                worked = self.tick()
            except Exception as exc:  # the worker must outlive any one bad round
                _log.error("notifier round failed", error=f"{type(exc).__name__}: {exc}")
                worked = False
                time.sleep(0.5)
            if worked:
                continue
            self._sleeping = True
            if not self._queue:
                self._wakeup.wait(self._idle_wait())
            self._sleeping = False
            self._wakeup.clear()

    def _idle_wait(self) -> float:
        waits = [0.5]
        next_due = self.store.outbox_next_due()
        if next_due is not None:
            waits.append(next_due - self.store.now())
        waits.extend(b.deadline - self.store.now() for b in self._buffers.values())
        return min(max(0.01, w) for w in waits)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued or pending; True if nothing is left by the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._worker is None or not self._worker.is_alive():
                self.tick(force_sweep=True)
            else:
                self._wakeup.set()
            if self._drained():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._idle:
                self._idle.wait(0.02)

    def _drained(self) -> bool:
        if self._queue or self._busy or self._buffers:
            return False
        return self.store.outbox_open() == 0

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending within ``timeout``, then stop. Safe to call twice."""
        if self._closed:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        # Producers holding counts back hand them over first: at interpreter exit
        # this hook runs before logging.shutdown() closes the handlers.
        for drain in tuple(self._drains):
            with contextlib.suppress(Exception):
                drain(True)
        self._closed = True  # from here on alert() drops: the queue can only shrink

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        # Drain the queue first: closing windows while repeats are still queued
        # would lose their count.
        self.flush(remaining())
        with self._tick_lock:
            self._flush_group_buffers(force=True)
            if not getattr(self.store, "durable", False):
                # Nobody will sweep a memory store later: say "+N similar" now.
                self._summarise(self.store.dedup_close_all())
        delivered = self.flush(remaining())
        self._stopping = True
        self._wakeup.set()
        if self._worker is not None:
            self._worker.join(None if deadline is None else max(0.1, deadline - time.monotonic()))
        if not delivered:  # before the store closes: it is what we ask for the count
            _log.warning(
                "closed with alerts undelivered", queued=len(self._queue), pending=self.store_pending()
            )
        if self._owns_client:
            self.client.close()
        if self._owns_store:
            self.store.close()
        return delivered

    def store_pending(self) -> int:
        with contextlib.suppress(Exception):
            return self.store.outbox_open()
        return -1

    async def aflush(self, timeout: float | None = None) -> bool:
        """:meth:`flush` for asyncio code: waits in a thread, not on the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        data = self.stats_counters.snapshot()
        data["received"] = _peek(self._received) + data["coalesced"]
        data["dropped"] = _peek(self._dropped)
        data["queued"] = len(self._queue)
        with contextlib.suppress(Exception):
            counts = self.store.outbox_counts()
            data["pending"] = counts.pending + counts.inflight
            data["dead"] = counts.dead
        return data

    # -- the worker's round -----------------------------------------------------
    def tick(self, *, force_sweep: bool = False) -> bool:
        """One round of work; True if anything was done. Runs on the worker thread,
        or on the caller's thread for a notifier made with ``start=False``."""
        with self._tick_lock:
            self._busy = True
            try:
                for drain in tuple(self._drains):
                    drain(False)
                worked = False
                batch = []
                while self._queue and len(batch) < 5_000:
                    batch.append(self._queue.popleft())
                for raw in batch:
                    try:
                        self._intake(raw)
                    except Exception as exc:  # one bad alert must not take the others with it
                        self.stats_counters.add(rejected=1)
                        _log.error("alert could not be processed", error=f"{type(exc).__name__}: {exc}")
                worked = bool(batch)
                now = time.monotonic()
                if force_sweep or now - self._last_sweep >= 0.2:
                    self._last_sweep = now
                    worked |= self._sweep()
                worked |= self.dispatcher.run_once() > 0
                return worked
            finally:
                self._busy = False
                with self._idle:
                    self._idle.notify_all()

    def enqueue_lazy(
        self,
        render: Callable[[], str],
        *,
        severity: Severity,
        template: str,
        source: str = "",
        exc_type: str | None = None,
        groups: tuple[str, ...] | None = None,
        tags: Iterable[str] = (),
        count: int = 1,
    ) -> bool:
        """The integrations' hot path: no validation, no formatting on the caller's thread.

        ``render`` runs on the worker; ``template`` (the message before
        formatting) is what identifies repeats.
        """
        # alert()'s twin, inlined on purpose (see there)
        next(self._received)
        if self._closed or len(self._queue) >= self._queue_size:
            next(self._dropped)
            return False
        self._queue.append(
            (render, severity, None, groups, source, tags, template, exc_type, None, None, count)
        )
        if self._worker is None and self._start:
            self._start_worker()
        if self._sleeping:
            self._wakeup.set()
        return True

    def add_drain(self, drain: Callable[[bool], None]) -> None:
        """Register ``drain(force)``: called each round to hand over held-back repeats."""
        self._drains.append(drain)

    def is_worker_thread(self) -> bool:
        return threading.current_thread() is self._worker

    def _intake(self, raw: tuple[Any, ...]) -> None:
        text, level, key, chosen, source, tags, template, exc_type, host, created, count = raw
        if count > 1:
            self.stats_counters.add(coalesced=count - 1)
        if callable(text):
            try:
                text = text()
            except Exception as exc:  # a broken __str__ in a log argument must not kill the worker
                text = f"(message could not be formatted: {type(exc).__name__})"
            if not text.strip():
                self.stats_counters.add(rejected=1)
                return
        alert = Alert(
            text=text,
            severity=level,
            source=source,
            host=self.host if host is None else host,
            tags=frozenset(tags),
            key=key,
            groups=chosen,
            template=template,
            exc_type=exc_type,
            created_at=created or time.time(),
        )
        try:
            group_names = self.router.group_names(alert)
            sms = format_alert(alert, max_segments=self.max_segments)
        except ValueError as exc:
            self.stats_counters.add(rejected=1)
            _log.warning("alert rejected", error=str(exc))
            return
        fingerprint = alert.fingerprint
        fresh: list[str] = []
        for group in group_names:
            if self.dedup_window > 0:
                window_key = _SEP.join((group, str(int(level)), fingerprint))
                hit = self.store.dedup_hit(window_key, self.dedup_window, sms, count)
                repeats = count if not hit.first else count - 1
                if repeats:
                    self.stats_counters.add(suppressed=repeats)
                if not hit.first:
                    continue
            fresh.append(group)
        if not fresh:
            return
        if self.group_wait > 0:
            for group in fresh:
                buffer = self._buffers.get(group)
                if buffer is None:
                    buffer = self._buffers[group] = _GroupBuffer(self.store.now() + self.group_wait)
                buffer.texts.append(sms)
            return
        self._enqueue(sms, self._numbers(fresh))

    def _numbers(self, groups: Iterable[str]) -> list[str]:
        # A phone in several matched groups gets one SMS.
        return list(dict.fromkeys(n for g in groups for n in self.router.numbers(g)))

    def _enqueue(self, text: str, numbers: Sequence[str], *, capped: bool = True) -> None:
        now = self.store.now()
        items = []
        throttled = 0
        for number in numbers:
            if capped and self.per_recipient_limit is not None:
                rate = self.per_recipient_limit / self.per_recipient_period
                wait = self.store.rate_acquire(
                    f"rcpt:{number}", rate, self.per_recipient_limit, reserve=False
                )
                if wait > 0:
                    self.store.digest_add(number, text)
                    throttled += 1
                    continue
            items.append(OutboxItem(new_csms_id(), number, text, now, now))
        if throttled:
            self.stats_counters.add(throttled=throttled)
        if items:
            self.store.outbox_add(items)

    def _sweep(self) -> bool:
        closed = self.store.dedup_close(self.repeat_interval)
        worked = self._summarise(closed)
        worked |= self._flush_group_buffers()
        worked |= self._send_digests()
        return worked

    def _summarise(self, closed: Sequence[Any]) -> bool:
        """One summary per alert and count, to the union of its groups' phones."""
        merged: dict[tuple[str, str], tuple[Severity, int, float, str, list[str]]] = {}
        for window in closed:
            group, level, fingerprint = window.key.split(_SEP, 2)
            severity = Severity(int(level))
            key = (level, fingerprint)
            numbers = list(self.router.numbers(group)) if self._known(group) else []
            if key in merged:
                s, count, last_at, text, known = merged[key]
                merged[key] = (
                    s,
                    max(count, window.suppressed),
                    max(last_at, window.last_at),
                    text,
                    known + numbers,
                )
            else:
                merged[key] = (
                    severity,
                    window.suppressed,
                    window.last_at,
                    window.last_text,
                    numbers,
                )
        for severity, count, last_at, text, numbers in merged.values():
            summary = format_summary(severity, text, count, last_at, max_segments=self.max_segments)
            self.stats_counters.add(summaries=1)
            self._enqueue(summary, list(dict.fromkeys(numbers)))
        return bool(merged)

    def _known(self, group: str) -> bool:
        try:
            self.router.numbers(group)
        except ValueError:
            return False  # a group removed from the configuration since
        return True

    def _flush_group_buffers(self, *, force: bool = False) -> bool:
        now = self.store.now()
        due = [g for g, b in self._buffers.items() if force or b.deadline <= now]
        for group in due:
            buffer = self._buffers.pop(group)
            text = format_group(buffer.texts, max_segments=self.max_segments)
            self._enqueue(text, self._numbers([group]))
        return bool(due)

    def _send_digests(self) -> bool:
        if self.per_recipient_limit is None:
            return False
        rate = self.per_recipient_limit / self.per_recipient_period
        sent = False
        for number in self.store.digest_recipients():
            if self.store.rate_acquire(f"rcpt:{number}", rate, self.per_recipient_limit, reserve=False) > 0:
                continue
            held = self.store.digest_take(number)
            if not held:
                continue
            text = format_digest(held, max_segments=self.max_segments)
            self.stats_counters.add(folded=len(held), digests=1)
            self._enqueue(text, [number], capped=False)
            sent = True
        return sent

    # -- os.fork ----------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # The parent still owns what it had queued; the child starts empty, with
        # its own worker, connections and locks.
        self._init_runtime()
        self.stats_counters.reset_lock()
        self.client._reopen_after_fork()
        self.store.after_fork()


def _peek(counter: itertools.count) -> int:
    # itertools.count has no getter; its repr is "count(N)".
    return int(repr(counter)[6:-1])


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value}")


def _after_fork() -> None:
    for notifier in list(_live):
        with contextlib.suppress(Exception):
            notifier._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
