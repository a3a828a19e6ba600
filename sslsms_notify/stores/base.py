"""One protocol for the pipeline's shared state: dedup windows, rate limits, digests, outbox.

Every backend owns its clock (:meth:`Store.now`): the memory and SQLite
stores use the clock they were given, Redis uses the server's ``TIME`` so
that hosts with drifting clocks still agree on windows and rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable


class OutboxState(StrEnum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    SENT = "sent"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One SMS to one number, with its csms_id fixed before the first attempt."""

    csms_id: str
    msisdn: str
    text: str
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    state: OutboxState = OutboxState.PENDING
    #: set when the SMS was (or is about to be) sent inside a bulk request
    batch_id: str | None = None
    last_error: str = ""
    #: the request that may have reached the gateway had an unknown outcome
    maybe_sent: bool = False

    def evolve(self, **changes: object) -> OutboxItem:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DedupHit:
    first: bool
    #: repeats counted in the current window, this one included
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A dedup window that ended with repeats: they deserve one summary SMS."""

    key: str
    suppressed: int
    last_at: float
    last_text: str


@dataclass(slots=True)
class OutboxCounts:
    pending: int = 0
    inflight: int = 0
    sent: int = 0
    dead: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """What the pipeline needs from a backend. All methods are atomic."""

    def now(self) -> float: ...

    # -- dedup ------------------------------------------------------------
    def dedup_hit(self, key: str, window: float, text: str, count: int = 1) -> DedupHit:
        """Count ``count`` occurrences: the first of a window (the rest are repeats), or repeats.

        A window that ended but still holds uncounted repeats keeps counting
        until :meth:`dedup_close` summarises it, so no repeat is lost.
        """
        ...

    def dedup_close(self, repeat_interval: float, limit: int = 500) -> list[ClosedWindow]:
        """Take ended windows: those with repeats are returned (and, as the
        storm may go on, restarted for ``repeat_interval``); quiet ones are dropped.
        Each closed window is returned to exactly one caller, across processes."""
        ...

    def dedup_close_all(self) -> list[ClosedWindow]:
        """Close every window holding repeats now (shutdown of a memory-only pipeline)."""
        ...

    # -- rate limits (GCRA) -----------------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        """0.0 if one unit is granted now; else seconds until it would be.

        With ``reserve=True`` the unit is booked anyway (the caller waits that
        long, then sends): that is how the global TPS cap paces senders."""
        ...

    # -- digests of folded alerts -------------------------------------------
    def digest_add(self, msisdn: str, text: str) -> int:
        """Fold an SMS that a recipient's cap held back; returns how many are held."""
        ...

    def digest_recipients(self) -> list[str]: ...

    def digest_take(self, msisdn: str) -> list[str]: ...

    # -- outbox -------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None: ...

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        """Due pending items (and expired leases) become in flight for ``lease`` seconds."""
        ...

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        """Write back items the dispatcher changed (state, attempts, batch_id, errors)."""
        ...

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]: ...

    def outbox_counts(self) -> OutboxCounts: ...

    def outbox_open(self) -> int:
        """Pending plus in-flight SMS, cheaply (``flush()`` polls it)."""
        ...

    def outbox_next_due(self) -> float | None:
        """When the earliest pending item is due (None when nothing is pending)."""
        ...

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        """Dead letters back to pending (same csms_id); returns how many."""
        ...

    def outbox_purge(self, state: OutboxState) -> int: ...

    def close(self) -> None: ...

    def after_fork(self) -> None:
        """Drop connections inherited from the parent process."""
        ...
