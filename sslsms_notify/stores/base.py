"""One protocol for the pipeline's shared state, and the records it holds.

A store keeps these tables: dedup **windows**, **rates** (GCRA "theoretical
arrival times" for caps and pacing), per-phone **digests**, ``group_wait``
**groups**, the **outbox** of SMS to send, and **records**: small typed rows
with a time index, stored the same way by every backend (see :data:`RECORDS`),
such as webhook alert **lifecycles**, **leases**, **heartbeats**, **escalations**,
**silences** and the alerts a silence or a group's quiet hours **held**.

The decisions (is this a repeat, may this phone get another SMS, is a window
due) are written once, in :mod:`sslsms_notify.alerting`, against a
:class:`Tx`: a buffered transaction. Reads load rows in bulk; writes are
buffered and applied at commit. Each backend only supplies bulk loads, index
queries and an atomic commit:

- memory: one lock around the whole transaction;
- SQLite: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (other processes wait);
- Redis: ``WATCH`` the rows read, then ``MULTI``/``EXEC``; on a conflict the
  transaction function runs again, so it must have no side effects outside
  the :class:`Tx`.

Every backend owns its clock (:meth:`Store.now`): memory and SQLite use the
clock they were given, Redis uses the server's ``TIME`` so hosts with
drifting clocks agree on windows and rates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Generic, Literal, Protocol, Self, TypeVar, runtime_checkable

from .records import Escalation, EscalationKey, Handoff, Heartbeat, Hold, Notice, Silence

V = TypeVar("V")
T = TypeVar("T")

TableName = Literal[
    "windows",
    "rates",
    "digests",
    "groups",
    "lifecycles",
    "leases",
    "heartbeats",
    "escalations",
    "escalation_keys",
    "notices",
    "handoffs",
    "silences",
    "holds",
]
#: tables with a time index (window end, digest readiness, group deadline, record time)
IndexedTable = Literal[
    "windows",
    "digests",
    "groups",
    "lifecycles",
    "leases",
    "heartbeats",
    "escalations",
    "escalation_keys",
    "notices",
    "handoffs",
    "silences",
    "holds",
]
#: record tables: every backend keeps them alike (a key, a time, the other fields as JSON)
RecordTable = Literal[
    "lifecycles",
    "leases",
    "heartbeats",
    "escalations",
    "escalation_keys",
    "notices",
    "handoffs",
    "silences",
    "holds",
]


class OutboxState(StrEnum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    SENT = "sent"
    DEAD = "dead"


BatchKind = Literal["bulk", "dynamic"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One SMS to one number, with its csms_id fixed before the first attempt.

    **Bound requests.** An SMS planned into a bulk or dynamic request is *bound* to
    it (``batch_id``, ``batch_kind``, ``batch_size``) before the request is sent.
    Once a request may have reached the gateway (``maybe_sent``), it is only ever
    resent exactly as it was: the same members under the same ids. That is what
    lets "Duplicate CMS ID" mean "an earlier request carrying this SMS got
    through". The stores keep a binding's members together (claimed, trimmed and
    requeued as one); only a definite answer from the gateway unbinds them.
    """

    csms_id: str
    msisdn: str
    text: str
    created_at: float
    #: when it may be tried (pending), its lease ends (in flight), or it died (dead)
    next_attempt_at: float
    attempts: int = 0
    state: OutboxState = OutboxState.PENDING
    #: the request this SMS is bound to: a bulk's batch_csms_id, or our own id for a dynamic request
    batch_id: str | None = None
    last_error: str = ""
    #: a request carrying this SMS under its current id may have been processed by the
    #: gateway (an unknown outcome, or a lease taken over from a process that died mid-request)
    maybe_sent: bool = False
    #: "bulk" or "dynamic" when bound; "" for a loose SMS (a bulk binding from 0.2 has "")
    batch_kind: str = ""
    #: how many SMS the bound request carries (0: not bound, or not known for a 0.2 binding)
    batch_size: int = 0

    def evolve(self, **changes: object) -> OutboxItem:
        return replace(self, **changes)  # type: ignore[arg-type]

    def bind(self, batch_id: str, kind: BatchKind, size: int) -> OutboxItem:
        return replace(self, batch_id=batch_id, batch_kind=kind, batch_size=size)

    def unbound(self) -> OutboxItem:
        """Free of its request: only after a definite answer (or before any request was sent)."""
        return replace(self, batch_id=None, batch_kind="", batch_size=0)

    @property
    def kind_of_binding(self) -> BatchKind | None:
        if not self.batch_id:
            return None
        return "dynamic" if self.batch_kind == "dynamic" else "bulk"


@dataclass(frozen=True, slots=True)
class Window:
    """A dedup window: one alert, for one group, at one severity.

    ``count`` is the repeats since ``since_at`` (the last SMS about this
    alert: the first one, or the previous summary) that no summary has
    reported yet. ``numbers`` are kept so that any process sharing the store
    (a relay with another configuration, say) can send the summary.
    """

    key: str
    end_at: float
    count: int
    since_at: float
    last_at: float
    last_text: str
    numbers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Digest:
    """SMS a phone's cap held back: a count and the first few texts."""

    msisdn: str
    count: int
    since_at: float
    texts: tuple[str, ...]
    #: when the cap's allowance is expected back (the sweep's index)
    ready_at: float


@dataclass(frozen=True, slots=True)
class GroupBuffer:
    """Distinct alerts for one group waiting out ``group_wait`` to go as one SMS."""

    name: str
    deadline: float
    count: int
    texts: tuple[str, ...]
    numbers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A webhook alert's lifecycle: one fingerprint firing from one ``startsAt``.

    Alertmanager and Grafana send every alert of a group again whenever the group
    changes and at their repeat interval; a re-send of an alert already paged is
    nothing new. The record says when it first paged (``first_at``), when it last did
    (``paged_at``, moved on by a reminder) and whether its resolve was paged; it is
    forgotten at ``expires_at``.
    """

    key: str
    resolved: bool
    first_at: float
    paged_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """A job one process of those sharing the store does at a time (see :mod:`sslsms_notify.alerting.leases`).

    ``holder`` names the process; the lease is its own until ``expires_at`` unless it
    renews it, and forgotten once past.
    """

    key: str
    holder: str
    expires_at: float


#: record table -> (row type, the field its time index follows); a row's first field is its key
RECORDS: dict[str, tuple[type, str]] = {
    "lifecycles": (Lifecycle, "expires_at"),
    "leases": (Lease, "expires_at"),
    "heartbeats": (Heartbeat, "due_at"),
    "escalations": (Escalation, "at"),
    "escalation_keys": (EscalationKey, "expires_at"),
    "notices": (Notice, "at"),
    "handoffs": (Handoff, "expires_at"),
    "silences": (Silence, "ends_at"),
    "holds": (Hold, "ends_at"),
}


def record_time(table: str, row: object) -> float:
    return float(getattr(row, RECORDS[table][1]))


def record_fields(row: object) -> list[object]:
    """A record's fields after its key, in order (what backends store)."""
    return [getattr(row, f.name) for f in fields(row)[1:]]  # type: ignore[arg-type]


def record_from(table: str, key: str, values: Sequence[object]) -> object:
    kind = RECORDS[table][0]
    return kind(key, *(tuple(v) if isinstance(v, list) else v for v in values))


@dataclass(slots=True)
class OutboxCounts:
    #: pending, in flight included (every SMS still to send)
    pending: int = 0
    #: of those, claimed by a dispatcher right now (where the store can tell cheaply)
    inflight: int = 0
    dead: int = 0


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached or opened; the message says which and why."""


class Table(Generic[V]):
    """Rows of one table inside a transaction: loaded in bulk, written back at commit."""

    __slots__ = ("_cache", "_loader", "dirty")

    def __init__(self, loader: Callable[[list[str]], dict[str, V]]) -> None:
        self._loader = loader
        self._cache: dict[str, V | None] = {}
        #: key -> new value, or None for a deletion
        self.dirty: dict[str, V | None] = {}

    def load(self, keys: Iterable[str]) -> None:
        missing = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if missing:
            found = self._loader(missing)
            for key in missing:
                self._cache[key] = found.get(key)

    def get(self, key: str) -> V | None:
        if key not in self._cache:
            self.load([key])
        return self._cache[key]

    def put(self, key: str, value: V) -> None:
        self._cache[key] = value
        self.dirty[key] = value

    def delete(self, key: str) -> None:
        self._cache[key] = None
        self.dirty[key] = None


class Backend(Protocol):
    """What a store gives a :class:`Tx`: bulk reads and index queries, inside its transaction."""

    def load(self, table: TableName, keys: list[str]) -> dict[str, object]: ...

    def due(self, table: IndexedTable, now: float, limit: int) -> list[str]: ...

    def earliest(self, table: IndexedTable, limit: int) -> list[str]: ...

    def count(self, table: IndexedTable) -> int: ...


class Tx:
    """A buffered transaction over a store's tables (see the module docstring)."""

    def __init__(self, backend: Backend, now: float) -> None:
        self.now = now
        self._backend = backend
        self.windows: Table[Window] = Table(lambda keys: backend.load("windows", keys))  # type: ignore[arg-type,return-value]
        self.rates: Table[float] = Table(lambda keys: backend.load("rates", keys))  # type: ignore[arg-type,return-value]
        self.digests: Table[Digest] = Table(lambda keys: backend.load("digests", keys))  # type: ignore[arg-type,return-value]
        self.groups: Table[GroupBuffer] = Table(lambda keys: backend.load("groups", keys))  # type: ignore[arg-type,return-value]
        self.lifecycles: Table[Lifecycle] = Table(lambda keys: backend.load("lifecycles", keys))  # type: ignore[arg-type,return-value]
        self.leases: Table[Lease] = Table(lambda keys: backend.load("leases", keys))  # type: ignore[arg-type,return-value]
        self.heartbeats: Table[Heartbeat] = Table(lambda keys: backend.load("heartbeats", keys))  # type: ignore[arg-type,return-value]
        self.escalations: Table[Escalation] = Table(lambda keys: backend.load("escalations", keys))  # type: ignore[arg-type,return-value]
        self.escalation_keys: Table[EscalationKey] = Table(lambda keys: backend.load("escalation_keys", keys))  # type: ignore[arg-type,return-value]
        self.notices: Table[Notice] = Table(lambda keys: backend.load("notices", keys))  # type: ignore[arg-type,return-value]
        self.handoffs: Table[Handoff] = Table(lambda keys: backend.load("handoffs", keys))  # type: ignore[arg-type,return-value]
        self.silences: Table[Silence] = Table(lambda keys: backend.load("silences", keys))  # type: ignore[arg-type,return-value]
        self.holds: Table[Hold] = Table(lambda keys: backend.load("holds", keys))  # type: ignore[arg-type,return-value]
        self.new_items: list[OutboxItem] = []

    def due(self, table: IndexedTable, limit: int) -> list[str]:
        """Keys whose time (window end, digest readiness, group deadline) has come.

        An index hint: load the rows and check their time again.
        """
        return self._backend.due(table, self.now, limit)

    def earliest(self, table: IndexedTable, limit: int) -> list[str]:
        """Keys with the earliest times, due or not (eviction order)."""
        return self._backend.earliest(table, limit)

    def count(self, table: IndexedTable) -> int:
        """Rows in the table at the start of the transaction (changes here not included)."""
        return self._backend.count(table)

    def add_outbox(self, item: OutboxItem) -> None:
        self.new_items.append(item)

    @property
    def empty(self) -> bool:
        return not (
            self.new_items
            or self.windows.dirty
            or self.rates.dirty
            or self.digests.dirty
            or self.groups.dirty
            or any(getattr(self, table).dirty for table in RECORDS)
        )


#: where a store's writes go now (see :class:`StoreHealth`)
HealthState = Literal["durable", "volatile", "spooling", "down"]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether a store's writes go where they should, for a readiness check.

    ``state`` is one of:

    - ``"durable"``: to the durable store configured (a SQLite file, a Redis server);
    - ``"volatile"``: to this process's memory, by design (a memory store);
    - ``"spooling"``: the store configured fails (Redis unreachable, full, read-only):
      writes go to a durable fallback on this host and move back later;
    - ``"down"``: writes cannot be kept where they should be (a closed store, a state
      file deleted under the process and no new one could be opened at its path).
    """

    state: HealthState
    #: what is wrong, in a few words ("" when nothing is)
    detail: str = ""


@runtime_checkable
class Store(Protocol):
    """What the pipeline needs from a backend. Every method is atomic.

    Besides the tables and the outbox, a store answers a long-running process's
    housekeeping: which stores its timers sweep (:meth:`timer_stores`), a call about
    once a second (:meth:`maintain`), counters for its stats (:meth:`counters`) and
    where its writes go now (:meth:`health`). A store with nothing of the kind to do
    gets them from :class:`StandaloneStore`.
    """

    #: whether what is written survives the process (SQLite, Redis)
    durable: bool

    def now(self) -> float:
        """The store's clock: the clock it was given (memory, SQLite) or the server's (Redis)."""
        ...

    def transact(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a transaction and commit what it wrote to the :class:`Tx`.

        ``fn`` may run more than once (Redis, after a conflict): it must not
        act on the world except through the transaction.
        """
        ...

    def next_due(self) -> float | None:
        """The earliest window end, digest readiness or group deadline (the timers' sleep)."""
        ...

    def window_count(self) -> int:
        """Dedup windows held, cheaply (``max_windows`` and ``stats()`` read it)."""
        ...

    # -- rate limits (GCRA), for the dispatcher's global TPS pacing ---------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        """0.0 if one unit is granted now; else seconds until it would be.

        With ``reserve=True`` the unit is booked anyway (the caller waits that
        long, then sends): that is how the global TPS cap paces senders."""
        ...

    # -- outbox -------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        """Add SMS as they are (their csms_id fixed); an SMS already there is updated."""
        ...

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        """Due pending items (and expired leases) become in flight for ``lease`` seconds.

        A claimed item that was in flight (its owner died or gave up mid-request)
        comes back with ``maybe_sent`` set. The members of a bound request are
        claimed together, due or not and past ``limit`` if need be: a part of a
        bound request is never handed out alone.
        """
        ...

    def outbox_renew(self, csms_ids: Sequence[str], lease: float) -> None:
        """Extend the lease of items this process still has in flight."""
        ...

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        """Write back items the dispatcher changed; SENT items are removed."""
        ...

    def outbox_get(self, csms_ids: Sequence[str]) -> dict[str, OutboxItem]:
        """The items still in the outbox among ``csms_ids`` (a sent SMS is gone)."""
        ...

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        """Up to ``limit`` SMS in ``state`` (None: any), the oldest first (the CLI's ``outbox``)."""
        ...

    def outbox_counts(self) -> OutboxCounts:
        """O(1): counters, not scans."""
        ...

    def outbox_open(self) -> int:
        """Pending plus in-flight SMS, cheaply (``flush()`` polls it)."""
        ...

    def outbox_next_due(self) -> float | None:
        """When the earliest pending item is due (None when nothing is pending)."""
        ...

    def outbox_trim(self, max_open: int, reason: str) -> list[OutboxItem]:
        """Beyond ``max_open`` open SMS, the oldest *pending* ones become dead letters.

        A bound request's pending members go together (so a few more may go).
        """
        ...

    def outbox_expire_dead(self, older_than: float) -> int:
        """Forget dead letters that died before ``older_than``; returns how many."""
        ...

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        """Dead letters back to pending (same csms_id); returns how many.

        A dead member of a bound request brings the binding's other dead members back
        with it, so the request can be resent whole.
        """
        ...

    def outbox_resume(self) -> int:
        """Pending SMS waiting out a backoff are due now (a process starting); returns how many.

        In-flight SMS keep their lease: a live process may be sending them.
        """
        ...

    def outbox_purge(self, state: OutboxState) -> int:
        """Forget every SMS in ``state`` (pending: those not in flight); returns how many."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the store answers now."""
        ...

    def close(self) -> None:
        """Release connections and files; what a durable store holds stays for the next process."""
        ...

    def after_fork(self) -> None:
        """Drop connections inherited from the parent process."""
        ...

    # -- housekeeping (a long-running process's timers thread) ----------------
    def timer_stores(self) -> Sequence[Store]:
        """The stores whose timers (window ends, digests, group deadlines) the sweep visits.

        Itself, for most. A store that writes to a fallback while its backend fails
        (Redis and its spool) lists the fallback too: what the fallback holds falls due
        there, and each is swept in transactions of its own.
        """
        ...

    def maintain(self) -> int:
        """Housekeeping, about once a second: returns how many SMS became due (0: none).

        What a store checks on its own: whether Redis lost its data (the SMS this process
        knows are pending are re-added), whether what a spool took can move back. The
        caller wakes its dispatcher when SMS became due. (A SQLite store checks that the
        file at the path is still the one open at every use instead: nothing to do here.)
        """
        ...

    def counters(self) -> dict[str, int]:
        """What the store did on its own, for stats and metrics (names stay; {} for none).

        E.g. a Redis store's ``data_lost``, ``readded`` and ``rows_moved``, a SQLite
        store's ``reopened``.
        """
        ...

    def health(self) -> StoreHealth:
        """Where writes go now (see :class:`StoreHealth`): no I/O, what the store last saw."""
        ...


class StandaloneStore:
    """The housekeeping of a store with no fallback and nothing of its own to watch.

    A base class for stores: its timers are its own, :meth:`maintain` finds nothing,
    it counts nothing, and its writes go where they should (durable or not). A store
    overrides what it does have.
    """

    #: whether what is written survives the process
    durable: bool

    def timer_stores(self) -> Sequence[Self]:
        """Itself: its timers are all in its own tables."""
        return [self]

    def maintain(self) -> int:
        """Nothing to do: no SMS became due."""
        return 0

    def move_spool(self) -> int:
        """:meth:`maintain` by the name the Notifier calls (kept until it calls ``maintain``)."""
        return self.maintain()

    def counters(self) -> dict[str, int]:
        """Nothing counted."""
        return {}

    def health(self) -> StoreHealth:
        """Writes go where they should: ``durable`` or ``volatile`` as the store is."""
        return StoreHealth("durable" if self.durable else "volatile")
