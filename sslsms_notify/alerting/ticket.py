"""What became of one submitted alert: a :class:`Ticket`, settled by the intake."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence

from ..outcomes import Outcome

_LOCK = threading.Lock()


class Ticket:
    """What became of one submitted alert, once the intake has decided (:meth:`Notifier.submit`).

    ``status``, an :class:`~sslsms_notify.outcomes.Outcome` (equal to its word):
    ``queued`` (SMS in the outbox: ``csms_ids``), ``buffered`` (waiting out
    ``group_wait``), ``suppressed`` (a repeat), ``throttled`` (held by a per-phone
    cap, in a digest), ``silenced`` (an active silence matches it), ``held`` (its
    groups' quiet hours: it goes out in their digest), ``unrouted`` (routes are
    configured and none matched), ``rejected`` (bad input: ``error``) or ``dropped``
    (queue full, or the notifier closed).
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

    def settle(self, status: str, csms_ids: Sequence[str] = (), throttled: int = 0, error: str = "") -> None:
        """Record the decision and wake whoever waits (the pipeline's to call, once)."""
        decided = Outcome(status)  # one of the intake's words, or a ValueError here, not later
        self.status, self.csms_ids, self.throttled, self.error = decided, list(csms_ids), throttled, error
        self.resolved_ns = time.perf_counter_ns()
        with _LOCK:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            with contextlib.suppress(Exception):
                callback(self)

    @classmethod
    def rejected(cls, error: str) -> Ticket:
        """A ticket decided ``rejected`` before any intake saw the alert (a door's own check refused it)."""
        ticket = cls()
        ticket.settle(Outcome.REJECTED, error=error)
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
        with _LOCK:
            if not self._done.is_set():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    def __repr__(self) -> str:
        status = None if self.status is None else str(self.status)
        return f"Ticket(status={status!r}, csms_ids={self.csms_ids!r})"


def _new_lock_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)
