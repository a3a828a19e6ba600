"""The pipeline's two threads and their lifecycle: start, flush, close; fork and exit hooks.

    INTAKE thread: rounds of the intake, then the timers, then sleeps until an alert
        comes or a timer is due; yields the CPU to an application that keeps producing
    DISPATCH thread: outbox -> plan -> pace -> gateway -> outcome in the outbox

Intake never waits for the network, so an alert is in the store within milliseconds
even while the gateway hangs; dispatch may block on HTTP and holds nothing anyone else
needs. ``close(timeout)`` returns within its timeout whatever the gateway does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from functools import partial

from .._log import ErrorLog, get_logger, say_if_unseen
from ..gateway.client import GatewayClient
from ..stores.base import OutboxItem, OutboxState, Store
from .coalesce import peek
from .decisions import IdBook, Policy, close_all_windows, flush_digests, flush_groups, sweep_holds
from .dispatch import Dispatcher
from .intake import Barrier, Intake
from .timers import MAX_IDLE, Timers
from .urgency import urgent

_log = get_logger("sslsms_notify.notifier")

#: seconds of this thread's CPU per intake round, so a round never holds the GIL for long
ROUND_BUDGET = 0.002
#: while the application keeps producing, the share of CPU the intake thread takes
NICE_SHARE = 0.25
#: ... unless the queue is this full: then it catches up at full speed
HIGH_WATER = 0.5
#: extra seconds close() allows for handing queued alerts to the store (no network involved)
INTAKE_GRACE = 0.8


class Worker:
    """Starts, runs and stops the intake and dispatch threads of one notifier."""

    def __init__(
        self,
        *,
        intake: Intake,
        timers: Timers,
        dispatcher: Dispatcher,
        store: Store,
        client: GatewayClient,
        policy: Policy,
        release: tuple[bool, bool],
    ) -> None:
        self.intake, self.timers, self.dispatcher = intake, timers, dispatcher
        self.store, self.client, self.policy = store, client, policy
        #: (the client, the store) were made by the notifier: close them at the end
        self._release_client, self._release_store = release
        self.errors = ErrorLog(_log)
        #: True or False once closed: what close() returned
        self.close_result: bool | None = None
        self.reset()

    def reset(self) -> None:
        """Per-process state: no threads yet (also in a forked child)."""
        self.dispatch_wakeup = threading.Event()
        self.progress = threading.Condition()
        self._close_lock = threading.Lock()
        self._stopping = False
        self._intake_thread: threading.Thread | None = None
        self._dispatch_thread: threading.Thread | None = None
        #: the pipeline's own threads: what they log never becomes an SMS
        self.idents: frozenset[int | None] = frozenset()

    # -- threads ------------------------------------------------------------------------
    def start(self) -> None:
        with self.progress:
            if self._intake_thread is not None or self._stopping or self.intake.closed:
                return
            self._intake_thread = threading.Thread(
                target=self._intake_loop, name="sslsms-intake", daemon=True
            )
            self._dispatch_thread = threading.Thread(
                target=self._dispatch_loop, name="sslsms-dispatch", daemon=True
            )
            self._intake_thread.start()
            self._dispatch_thread.start()
            self.idents = frozenset({self._intake_thread.ident, self._dispatch_thread.ident})
            self.intake.running = True

    def wake_dispatch(self) -> None:
        self.dispatch_wakeup.set()

    def on_outcome(self, items: list[OutboxItem]) -> None:
        with self.progress:
            self.progress.notify_all()

    def alive(self) -> bool:
        return self._intake_thread is not None and self._intake_thread.is_alive()

    def _intake_loop(self) -> None:
        intake = self.intake
        # CPU time of this thread, not wall time: under busy application threads a round
        # waits for the GIL far longer than it works, and our share is of the CPU.
        clock = time.thread_time
        while not self._stopping:
            started, received = clock(), peek(intake.received)
            try:
                with urgent():
                    worked = intake.round(budget=ROUND_BUDGET)
                    worked |= self.timers.run()
            except Exception as exc:  # the thread must outlive any one bad round
                self.errors.error("intake round failed", exc)
                worked = False
                time.sleep(0.2)
            if worked:
                backlog = len(intake.queue)
                if backlog and backlog < intake.queue_size * HIGH_WATER and peek(intake.received) != received:
                    # The application keeps producing alerts: yield it most of the CPU
                    # (our share stays near NICE_SHARE) rather than racing it for the GIL.
                    # Past the high-water mark we catch up at full speed to drop nothing.
                    time.sleep((clock() - started) * (1 / NICE_SHARE - 1))
                continue
            intake.sleeping = True
            if intake.held:  # the store refused: wait for the next try, whatever is queued
                intake.wakeup.wait(max(0.005, intake.store_retry_at - time.monotonic()))
            elif not intake.queue and not intake.coalescer.dirty:
                intake.wakeup.wait(self.timers.idle_wait())
            intake.sleeping = False
            intake.wakeup.clear()

    def _dispatch_loop(self) -> None:
        try:
            while not self._stopping:
                try:
                    with urgent():
                        sent = self.dispatcher.run_once()
                except Exception as exc:
                    self.errors.error("dispatch round failed", exc)
                    sent = 0
                    time.sleep(0.2)
                with self.progress:
                    self.progress.notify_all()
                if sent:
                    continue
                self.dispatch_wakeup.wait(self._dispatch_wait())
                self.dispatch_wakeup.clear()
        finally:
            if self.close_result is not None:  # close() gave up waiting for us: we release
                self._release()

    def _dispatch_wait(self) -> float:
        waits = [MAX_IDLE]
        with contextlib.suppress(Exception):
            if self.dispatcher.paused_until > self.store.now():
                return MAX_IDLE
            due = self.store.outbox_next_due()
            if due is not None:
                waits.append(due - self.store.now())
        return min(max(0.005, w) for w in waits)

    # -- waiting ---------------------------------------------------------------------------
    def tick(self, *, force_sweep: bool = False) -> bool:
        """One round of everything on the caller's thread (a notifier made with ``start=False``)."""
        worked = self.intake.round()
        worked |= self.timers.run(force=force_sweep)
        worked |= self.dispatcher.run_once() > 0
        return worked

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far (by this thread) is decided and in the store."""
        intake = self.intake
        if not self.alive():
            with intake.lock:
                while (intake.queue or intake.coalescer.dirty) and not intake.held:
                    intake.round(final=True)
            return not intake.held
        barrier = Barrier()
        intake.queue.append(barrier)
        intake.wakeup.set()
        return barrier.wait(timeout) and not intake.held

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued or pending; True if nothing is left by the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.close_result is not None:
            return self.close_result
        if self.alive():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.sync(remaining):
                return False
            self.timers.due = 0.0
            self.intake.wakeup.set()
        while True:
            if not self.alive():
                self.tick(force_sweep=True)
            else:
                self.dispatch_wakeup.set()
            if self._drained():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self.progress:
                self.progress.wait(0.02)

    def _drained(self) -> bool:
        if not self.intake.idle():
            return False
        if self.policy.group_wait > 0 and self.store.transact(lambda tx: tx.count("groups")):
            return False
        return self.store.outbox_open() == 0

    # -- close -------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> bool:
        """:meth:`Notifier.close`."""
        with self._close_lock:
            if self.close_result is not None:
                return self.close_result
            deadline = None if timeout is None else time.monotonic() + timeout

            def remaining() -> float | None:
                return None if deadline is None else max(0.0, deadline - time.monotonic())

            self.intake.closed = True  # from here on alert() drops: the queue can only shrink
            # Handing the queue to the store never waits for the network: it gets a
            # grace period past the deadline rather than losing accepted alerts.
            grace = remaining()
            delivered = self._finish_intake(None if grace is None else grace + INTAKE_GRACE)
            delivered = self.flush(remaining()) and delivered
            self._stopping = True
            self.dispatcher.stopping = True
            self.intake.wakeup.set()
            self.dispatch_wakeup.set()
            for thread in (self._intake_thread, self._dispatch_thread):
                if thread is not None and thread is not threading.current_thread():
                    wait = remaining()
                    thread.join(None if wait is None else max(0.05, wait))
            # Also when the intake did not finish in time (it resigns when it does), and
            # after the threads stopped (they would stand again): the leases go now.
            self.timers.resign()
            if self._dispatch_thread is not None and self._dispatch_thread.is_alive():
                self._hand_back_in_flight()
            left = self._report_undelivered()
            self.close_result = delivered and not left
            dispatching = self._dispatch_thread is not None and self._dispatch_thread.is_alive()
            if not dispatching:  # else the dispatch thread releases when its request ends
                self._release()
            return self.close_result

    def _finish_intake(self, timeout: float | None) -> bool:
        """Everything queued or counted goes into the store; a memory store's timers fire now."""
        intake = self.intake
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not intake.idle():
                if intake.held:  # the store refuses: try again when due, within the deadline
                    wait = intake.store_retry_at - time.monotonic()
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    if wait > 0:
                        time.sleep(wait)
                if not intake.lock.acquire(
                    timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())
                ):
                    return False
                try:
                    intake.round(final=bool(intake.held))
                finally:
                    intake.lock.release()
                if deadline is not None and time.monotonic() >= deadline:
                    return not intake.queue and not intake.held
            with intake.lock:
                intake.round(final=True)
                self.timers.resign()  # another process takes over what this one did alone
                if not self.store.durable:
                    # Nobody will sweep a memory store later: send gathered alerts, "+N more"
                    # summaries and held digests now (a digest then goes out despite its cap).
                    ids = IdBook()
                    intake.count(self.store.transact(lambda tx: flush_groups(tx, self.policy, ids)))
                    intake.count(self.store.transact(lambda tx: close_all_windows(tx, self.policy, ids)))
                    # what silences and quiet hours held: they end with the process (before the
                    # digests, which would otherwise keep an end SMS a cap held)
                    every = partial(sweep_holds, policy=self.policy, ids=ids, limit=100_000, every=True)
                    intake.count(self.store.transact(every))
                    intake.count(self.store.transact(lambda tx: flush_digests(tx, self.policy, ids)))
        except Exception as exc:
            self.errors.error("could not hand queued alerts to the store at close", exc)
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
            self.errors.error("could not hand back SMS of the abandoned request", exc)

    def _report_undelivered(self) -> int:
        """Say (and count) what close() leaves undelivered; returns how much that is.

        Alerts the store never took are lost whatever the store. SMS in a durable outbox
        wait for the next process. A memory store loses its SMS, but one whose request was
        abandoned mid-way may have reached the gateway: that is said, not counted as lost.
        """
        unstored = self.intake.unstored()
        if unstored:
            self.intake.stats.add(lost=unstored)
            _log.error("closed with alerts the store never took; they are lost", alerts=unstored)
            line = f"closed with {unstored} alert(s) the store never took: lost"
            say_if_unseen(_log.name, "unstored", line)
        try:
            pending = self.store.outbox_open()
        except Exception as exc:
            self.errors.error("could not count the outbox at close", exc)
            return unstored + 1
        if pending and self.store.durable:
            _log.warning("closed with SMS undelivered; they stay in the outbox", pending=pending)
        elif pending:
            unsure = sum(1 for i in self.store.outbox_list(limit=pending) if i.maybe_sent)
            self.intake.stats.add(lost=pending - unsure)
            _log.error(
                "closed with SMS undelivered; a memory store loses them",
                lost=pending - unsure,
                maybe_delivered=unsure,  # their request was abandoned: the answer never came
            )
            say_if_unseen(
                _log.name,
                "memory-lost",
                f"closed with {pending} SMS undelivered, lost with the memory store"
                + (f" ({unsure} may have reached the gateway)" if unsure else "")
                + "; a durable store (store=sqlite:///...) keeps them for the next run",
            )
        return unstored + pending

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            if self._release_client:
                self.client.close()
        with contextlib.suppress(Exception):
            if self._release_store:
                self.store.close()
