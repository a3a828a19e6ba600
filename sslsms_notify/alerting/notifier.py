"""The alert pipeline's front: ``alert()`` returns at once; the named parts do the rest.

    producer --alert()--> Intake (intake.py): queue, rounds, one store transaction each
    Timers (timers.py): summaries, digests, group buffers, leases, housekeeping
    Dispatcher (dispatch.py): outbox -> plan -> pace -> gateway -> outcomes
    Worker (worker.py): the intake and dispatch threads; flush, close
    process.py: close at interpreter exit and in multiprocessing children; fork hooks

This module only wires them together and answers the public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from ..config.registry import checked_options
from ..gateway.client import GatewayClient
from ..stores import open_store
from ..stores.base import OutboxState, Store
from ..stores.records import Heartbeat
from ..validation import non_negative
from . import process
from .alert import Severity
from .decisions import Policy
from .dispatch import Dispatcher, DispatchPolicy
from .escalation import AckResult
from .failover import Failover
from .fallback import Fallback, apprise_for
from .formatting import DEFAULT_MAX_SEGMENTS
from .heartbeats import PingResult
from .intake import Intake
from .oncall import OnCall
from .queued import Queued, pack
from .routing import DEFAULT_GROUP, Route, Router
from .silences import SilenceInfo, add_silence, expire_silence, list_silences
from .stats import Stats
from .ticket import Ticket
from .timers import Timers
from .worker import Worker

DEAD_LETTER_RETENTION = 7 * 24 * 3600.0

__all__ = ["DEAD_LETTER_RETENTION", "AckResult", "Notifier", "PingResult", "Ticket"]


class Notifier:
    """Turns alerts into SMS for the right phones, once.

    Args:
        client: a :class:`GatewayClient` (default: ``GatewayClient.from_env()``).
        groups: ``{"oncall": ["017...", ...], "dbas": [...]}``; a group may be a table with
            quiet hours, ``{"numbers": [...], "quiet": "22:00-08:00", "timezone":
            "Asia/Dhaka", "quiet_min_severity": "critical"}`` (see :mod:`sslsms_notify.quiet`).
        recipients: shorthand for ``groups={"default": recipients}``.
        routes: :class:`Route` rules (severity / source prefix / tags -> groups).
        store: a :class:`~sslsms_notify.stores.base.Store`, or ``"memory"``,
            ``"sqlite:///path.db"``, ``"redis://host:6379/0"``,
            ``"redis+sentinel://host1:26379,host2:26379/mymaster/0"``.
        replica_wait: seconds a write to a Redis store opened from a URL waits for one
            replica to have it (``WAIT 1``), while the master has replicas (0: never).
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
        fallback: apprise URLs (``mailto://...``, ``tgram://...``) told once, with a
            summary, when the SMS path fails (credentials refused, SMS waiting longer than
            ``fallback_after``, dead letters) and when it recovers; shared through the store
            so several processes tell it once (see :mod:`~sslsms_notify.alerting.fallback`).
            Needs apprise (``pip install 'sslsms-notify[apprise]'``).
        fallback_after: seconds SMS may wait while the gateway fails before ``fallback``
            is told, and before ``secondary`` takes over.
        secondary: a second :class:`GatewayClient` (another account) for when the first
            refuses our credentials or has failed for ``fallback_after``; each SMS is still
            delivered once across both (see :mod:`~sslsms_notify.alerting.failover`).
        default_groups: groups for an alert that names none and matches no route
            (default: with routes, none: such an alert is ``unrouted`` and pages nobody;
            without routes, ``"default"`` if there is such a group, else the first group).
        host: shown in every SMS as ``[TAG] host/source: text`` (default: this
            machine's short host name).
        dispatch: a :class:`DispatchPolicy` (backoff, ``max_age``, lease,
            ``auth_pause``); its ``tps`` replaces ``tps`` when given.
        clock: the time source of a memory or SQLite store opened from a URL (tests).
        start: start the worker threads (False: drive the pipeline with :meth:`tick`).
        close_at_exit: seconds :meth:`close` gets at interpreter exit, and when a
            ``multiprocessing`` child ends (None: no exit hook).
    """

    def __init__(
        self,
        client: GatewayClient | None = None,
        *,
        groups: Mapping[str, Sequence[str] | Mapping[str, Any]] | None = None,
        recipients: Sequence[str] | None = None,
        routes: Sequence[Route | Mapping[str, Any]] = (),
        default_groups: Sequence[str] | None = None,
        store: Store | str | None = None,
        replica_wait: float = 0.5,
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
        fallback: Sequence[str] = (),
        fallback_after: float = 600.0,
        secondary: GatewayClient | None = None,
        host: str | None = None,
        dispatch: DispatchPolicy | None = None,
        clock: Callable[[], float] | None = None,
        start: bool = True,
        close_at_exit: float | None = 5.0,
    ) -> None:
        # Each keyword by its setting's rule (the registry's, as a URL or file value is).
        checked = checked_options(
            {
                "dedup_window": dedup_window,
                "repeat_interval": repeat_interval,
                "group_wait": group_wait,
                "tps": tps,
                "per_recipient_limit": per_recipient_limit,
                "per_recipient_period": per_recipient_period,
                "max_segments": max_segments,
                "queue_size": queue_size,
                "max_windows": max_windows,
                "max_pending": max_pending,
                "dead_retention": dead_retention,
                "remind_every": remind_every,
                "replica_wait": replica_wait,
                "fallback": fallback,
                "fallback_after": fallback_after,
            }
        )
        if close_at_exit is not None:
            close_at_exit = non_negative("close_at_exit", close_at_exit)
        # apprise, and the URLs it must understand, checked before anything is opened
        notify = apprise_for(checked["fallback"]) if checked["fallback"] else None
        #: seconds close() gets at interpreter exit or a multiprocessing child's end (None: not closed)
        self.close_at_exit = close_at_exit
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
        dispatch_policy = dispatch or DispatchPolicy(tps=checked["tps"])
        owns_client = client is None
        self.client = client if client is not None else GatewayClient.from_env()
        owns_store = not isinstance(store, Store)
        self.store: Store = open_store(store, clock=clock, replica_wait=checked["replica_wait"])
        dedup_window = checked["dedup_window"]
        self.policy = Policy(
            dedup_window=dedup_window,
            repeat_interval=checked["repeat_interval"] or dedup_window or 300.0,
            group_wait=checked["group_wait"],
            cap_limit=checked["per_recipient_limit"],
            cap_period=checked["per_recipient_period"],
            max_segments=checked["max_segments"],
            max_windows=checked["max_windows"],
            remind_every=checked["remind_every"],
            quiet_hours=self.router.quiet,
        )
        self.host = host if host is not None else socket.gethostname().split(".")[0]
        self.stats_counters = Stats()
        self.dispatcher = Dispatcher(self.client, self.store, self.stats_counters, dispatch_policy)
        self.intake = Intake(
            store=self.store,
            router=self.router,
            policy=self.policy,
            stats=self.stats_counters,
            host=self.host,
            queue_size=checked["queue_size"],
            on_queued=self._wake_dispatch,
            start_threads=self._start_threads if start else None,
        )
        self.timers = Timers(
            store=self.store,
            policy=self.policy,
            intake=self.intake,
            dispatcher=self.dispatcher,
            max_pending=checked["max_pending"],
            dead_retention=checked["dead_retention"],
            wake_dispatch=self._wake_dispatch,
        )
        self.worker = Worker(
            intake=self.intake,
            timers=self.timers,
            dispatcher=self.dispatcher,
            store=self.store,
            client=self.client,
            policy=self.policy,
            release=(owns_client, owns_store),
        )
        self.dispatcher.on_outcome = self.worker.on_outcome
        #: the fallback channel (None without ``fallback`` URLs)
        self.fallback: Fallback | None = None
        if notify is not None:
            self.fallback = Fallback(
                notify,
                checked["fallback"],
                after=checked["fallback_after"],
                store=self.store,
                host=self.host,
                sid=getattr(self.client, "sid", ""),
                count=lambda n: self.stats_counters.add(fallback_told=n),
                secondary=secondary is not None,
            )
            self.dispatcher.watch, self.timers.fallback = self.fallback.watch, self.fallback
        if secondary is not None:
            self.dispatcher.failover = Failover(
                secondary, after=checked["fallback_after"], probe_every=dispatch_policy.auth_pause
            )
        self.oncall = OnCall(
            store=self.store,
            router=self.router,
            policy=self.policy,
            stats=self.stats_counters,
            count=self.intake.count,
            wake_dispatch=self._wake_running if start else self._wake_dispatch,
            sync=self.worker.sync,
        )
        # The documented method below, bound straight to the intake's: on the hot path a
        # call through this class would cost more than the work.
        vars(self)["alert"] = self.intake.alert
        process.register(self)
        if start and self.store.durable:
            # Resume: what an earlier process left in the outbox goes out now, not when
            # this process raises its first alert, nor when the earlier one's backoff
            # (or credentials pause) ends. Same csms_ids: the gateway's duplicate check
            # keeps a resent SMS exactly-once.
            with contextlib.suppress(Exception):
                self.store.outbox_resume()
            self.worker.start()

    def _start_threads(self) -> None:
        self.worker.start()

    def _wake_dispatch(self) -> None:
        self.worker.dispatch_wakeup.set()

    def _wake_running(self) -> None:
        """Wake the dispatcher, starting the threads first if they wait for a first alert."""
        if not self.intake.running:
            self.worker.start()
        self.worker.dispatch_wakeup.set()

    # These are the Notifier's settings, read by integrations and the CLI.
    @property
    def dedup_window(self) -> float:
        return self.policy.dedup_window

    @property
    def group_wait(self) -> float:
        return self.policy.group_wait

    @property
    def max_pending(self) -> int:
        return self.timers.max_pending

    @property
    def dead_retention(self) -> float:
        return self.timers.dead_retention

    def __repr__(self) -> str:
        return f"Notifier(groups={sorted(self.router.groups)}, store={self.store!r}, client={self.client!r})"

    # -- producers ------------------------------------------------------------------------
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
        return self.intake.alert(
            text,
            severity=severity,
            key=key,
            groups=groups,
            source=source,
            tags=tags,
            template=template,
            exc_type=exc_type,
            host=host,
        )  # pragma: no cover - each instance calls Intake.alert directly (see __init__)

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
        labels: Mapping[str, str] | None = None,
    ) -> Ticket:
        """Like :meth:`alert`, returning a :class:`Ticket` that tells what became of it.

        ``lifecycle`` (webhook doors): the alert's identity from firing to resolved
        (fingerprint and ``startsAt``); it then pages once while firing and once
        resolved, however often its producer sends it. ``resolved``: an all-clear.
        ``labels``: a webhook alert's labels, which silences match (``alertname=...``).
        """
        return self.intake.submit(
            text,
            severity=severity,
            key=key,
            groups=groups,
            source=source,
            tags=tags,
            host=host,
            lifecycle=lifecycle,
            resolved=resolved,
            labels=tuple((str(k), str(v)) for k, v in labels.items()) if labels else (),
        )

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
        """The integrations' way in: no validation, no formatting on the caller's thread.

        ``render`` runs on the intake thread. ``template``, if given, identifies
        repeats instead of the rendered text (both through the fingerprint rule).
        ``ckey``, if given, is the identity under which the caller registers this
        alert's repeats (see :meth:`Intake.register`).
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
        return self.enqueue(ckey, payload, count)

    def enqueue(self, ckey: Hashable, payload: Queued, count: int = 1) -> bool:
        """Queue a ready queued alert (see :mod:`.queued`); the integrations' lowest level."""
        return self.intake.put((ckey if self.intake.coalescing else None, payload, count, None))

    def is_worker_thread(self) -> bool:
        """Whether the caller is one of the pipeline's own threads (their logs never page)."""
        return threading.get_ident() in self.worker.idents

    # -- someone is always reached (heartbeats, escalations) ----------------------------------
    def heartbeat(
        self,
        name: str,
        *,
        every: float | str | None = None,
        grace: float | str | None = None,
        groups: Iterable[str] | None = None,
        kind: str = "",
    ) -> PingResult:
        """Record a ping of the heartbeat ``name`` (a dead man's switch); returns a :class:`PingResult`.

        Past its deadline (the last ping + ``every`` + ``grace``) the timers of any
        process on the store page ``[MISSED] name: no heartbeat since 02:00 (every
        24h)`` once; the next ping pages ``[RECOVERED] ...`` once. ``every`` and
        ``grace`` are seconds or durations (``"24h"``); None keeps what the heartbeat
        has (a new one needs ``every``; its grace is a tenth of it, at most an hour).
        ``groups``: who is paged (None: the heartbeat's, or for a new one what the
        routes give an alert of source ``heartbeat`` at ``critical``). One store
        transaction on the caller's thread. ValueError for a bad argument.
        """
        return self.oncall.heartbeat(name, every=every, grace=grace, groups=groups, kind=kind)

    def heartbeats(self) -> list[Heartbeat]:
        """Every heartbeat on the store, by name (last ping, deadline, missed or not)."""
        return self.oncall.heartbeats()

    def forget_heartbeat(self, name: str) -> bool:
        """Delete a heartbeat (a job retired): its silence pages nothing any more. Whether it existed."""
        return self.oncall.forget(name)

    def ack(self, code: str, *, client: str = "library") -> AckResult:
        """Acknowledge the alert whose SMS ended with `` ack:CODE``: it will not escalate.

        Returns an :class:`AckResult` (``ok`` once the alert is acknowledged, now or
        before). A code that is no code raises ValueError; an unknown one is a failed try,
        and a ``client`` (who acknowledges: the limit's key, and what the record says)
        gets five failed tries a minute (``status`` ``limited`` past them). Counted as
        ``acked`` and ``ack_refused`` in :meth:`stats`.
        """
        return self.oncall.ack(code, client=client)

    def resolve(self, key: str, timeout: float | None = 10.0) -> bool:
        """The alert raised with ``key`` (any severity) is over: its escalation, if open, is closed.

        Waits (up to ``timeout``) for alerts queued before to reach the store first, so
        an ``alert(..., key=k)`` followed by ``resolve(k)`` never escalates. Sends no SMS.
        Returns whether an open escalation was closed.
        """
        return self.oncall.resolve(key, timeout)

    # -- waiting and closing ----------------------------------------------------------------
    def sync(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far (by this thread) is decided and in the store."""
        return self.worker.sync(timeout)

    def tick(self, *, force_sweep: bool = False) -> bool:
        """One round of everything on the caller's thread (a notifier made with ``start=False``)."""
        return self.worker.tick(force_sweep=force_sweep)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued or pending; True if nothing is left by the deadline."""
        return self.worker.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending within ``timeout``, then stop. Safe to call twice.

        Returns within ``timeout`` (plus a fraction of a second) whatever the
        gateway does. On a durable store what is not delivered stays in the
        outbox for the next process; on a memory store it is lost, counted as
        ``lost`` and logged once.
        """
        return self.worker.close(timeout)

    @property
    def closed(self) -> bool:
        return self.worker.close_result is not None

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

    # -- what happened ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters (see :class:`~sslsms_notify.alerting.stats.Stats`) and the current backlog, in O(1)."""
        data = self.stats_counters.snapshot()
        data.update(self.intake.counts())
        with contextlib.suppress(Exception):
            counts = self.store.outbox_counts()
            data["pending"] = counts.pending
            data["dead"] = counts.dead
        with contextlib.suppress(Exception):
            data["windows"] = self.store.window_count()
        return data

    def group_stats(self) -> dict[str, dict[str, int]]:
        """Per recipient group: alerts that paged (first of their window) and repeats suppressed."""
        return self.intake.group_stats()

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

    # -- silences -----------------------------------------------------------------------------
    def silence(self, *matchers: str, duration: str | float, comment: str = "") -> str:
        """Hold back every alert all ``matchers`` match, from now for ``duration``; returns its id.

        ``n.silence('alertname="DiskFull"', 'instance=~"db.*"', duration="2h", comment="migration")``.
        Matchers are Alertmanager's (see :mod:`~sslsms_notify.alerting.silences`); a
        duration is ``30m``, ``2h``, ``1d``, ``1h30m`` or seconds, at most 30 days. The
        silence lives in the store: every process on it holds what it matches. When it
        ends (or :meth:`expire_silence`), each group its held alerts would have paged gets
        one SMS saying what it held. Raises ValueError for bad input (naming the field).
        """
        return add_silence(self.store, matchers, duration, comment).id

    def silences(self) -> list[SilenceInfo]:
        """The silences in force on the store, the soonest to end first, with what each held so far."""
        return list_silences(self.store)

    def expire_silence(self, silence_id: str) -> SilenceInfo:
        """End a silence now; its SMS go out with the next sweep (this process's, or any on the store).

        Raises :class:`~sslsms_notify.alerting.silences.UnknownSilenceError` (a ValueError)
        when no active silence has this id.
        """
        info = expire_silence(self.store, silence_id)
        self.timers.due = 0.0  # sweep at once
        self.intake.wakeup.set()
        return info

    # -- os.fork ------------------------------------------------------------------------------
    def after_fork_in_child(self) -> None:
        """In a forked child, before it runs anything else: plain Python state only.

        A thread that held one of our locks at the fork does not exist in the child,
        so locks are replaced, never taken; connections (HTTP pool, SQLite) and the
        pipeline's threads are made on first use. The child starts empty: no queue,
        counters or in-flight SMS of the parent, which still owns and sends them (a
        memory store forgets the parent's windows and outbox too; a durable store is
        shared by design).
        """
        self.stats_counters = self.intake.stats = self.dispatcher.stats = self.oncall.stats = Stats()
        self.intake.reset()
        self.timers.reset()
        self.worker.reset()
        self.dispatcher.after_fork_in_child()
        if self.fallback is not None:
            self.fallback.reset()
        if self.dispatcher.failover is not None:
            self.dispatcher.failover.reset()
            self.dispatcher.failover.client.after_fork_in_child()
        self.client.after_fork_in_child()
        self.store.after_fork()
