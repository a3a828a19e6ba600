"""Redis store: dedup windows, caps, pacing and the outbox shared by many processes and hosts.

:class:`RedisStore` is what users construct (``store="redis://host:6379/0"``, or
through Sentinel ``store="redis+sentinel://host1:26379,host2:26379/SERVICE_NAME/0"``): it
wraps Redis (:class:`.backend.RedisBackend`) and a **spool**, and decides where each call goes.

**When Redis fails**, nothing is silently downgraded to memory: the store falls
back to the spool, a SQLite file on this host (one per Redis URL, shared by the
host's processes), logs that once per outage, saying what happened, and tries
Redis again every few seconds. Unreachable, everything goes to the spool; refusing
writes (out of memory, a read-only replica, ``MISCONF``, ``NOREPLICAS``), new alerts,
windows and SMS do (see :mod:`.faults`).

A write Redis refused was not applied at all: Redis refuses every command queued
in a ``MULTI`` and aborts the ``EXEC`` whole (verified for OOM and READONLY), and
a script is refused at its first write, before it changed anything. So the spool
reruns the whole transaction, with the same csms_ids (see ``IdBook``).

While Redis fails, dedup and caps hold per host, not across hosts (a repeat may
page once more). When Redis takes writes again, spooled SMS move there keeping
their csms_id, and so do the windows, digests, group buffers and caps opened in
the spool, merged with what Redis has (see :mod:`.move`).

**A Redis that loses its data** (a restart without persistence, an RDB snapshot
older than the last writes, a failover to a replica that lagged) is noticed
within a second or so, by a marker that vanishes or goes back; the store then logs
it and re-adds the SMS this process still knows are pending (see :mod:`.journal`).
At start, one line says whether the server persists (AOF, RDB) and what a restart
would lose (see :mod:`.persistence`).

**A failover.** Through Sentinel each new connection asks where the master is, and a
connection to a demoted master is dropped (with a plain URL too: a managed Redis's
primary endpoint is resolved again); the spool takes the seconds in between. While the
master has replicas, the writes somebody is told about or acts on wait for one replica
(``WAIT 1``, at most ``replica_wait``), so a failover does not lose them (see
:mod:`.replication`).

The parts: :mod:`.backend` (Redis alone), :mod:`.connect` (the client for a URL, one
server or Sentinel), :mod:`.replication` (writes a replica has), :mod:`.scripts` (its
Lua), :mod:`.codec` (its keys and JSON), :mod:`.faults` (what a failure says, and the
state of the current fault), :mod:`.route` (where a call goes), :mod:`.journal` and
:mod:`.recovery` (a loss of data noticed, SMS re-added), :mod:`.move` (the spool moved
back), :mod:`.persistence`.
The tunables below are module attributes, read at each use.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import redis

from ...paths import state_dir
from ...validation import mask_credentials
from ..base import OutboxCounts, OutboxItem, OutboxState, Store, StoreHealth, StoreUnavailableError, Tx
from ..merge import merge_digest, merge_group, merge_lifecycle, merge_rate, merge_window
from ..sqlite import SQLiteStore
from .backend import CommitUnknown, RedisBackend, binds
from .faults import (
    CANNOT_PERSIST,
    DOWN,
    NO_REPLICAS,
    OUT_OF_MEMORY,
    READ_ONLY,
    UNREACHABLE,
    WHAT_HAPPENED,
    FaultState,
    fault_of,
)
from .journal import Journal
from .move import move_items, move_rows
from .persistence import describe_persistence
from .recovery import LossCheck
from .route import Router
from .scripts import no_script_flags

T = TypeVar("T")
#: seconds a write waits for one replica when the master has replicas (``[pipeline] replica_wait``)
REPLICA_WAIT = 0.5
#: after a failure, how long before Redis is tried again (seconds)
RETRY_REDIS_AFTER = 3.0
#: refused writes are logged as over once Redis has taken writes this long without refusing
#: one: a Redis at the edge of maxmemory takes a write, refuses the next, and so on (one
#: line when the trouble starts and one when it is over, not a pair per flap)
WRITES_BACK_QUIET = 30.0
#: the SMS this process remembers it wrote or claimed (re-added if Redis loses them)
JOURNAL_MAX = 50_000
#: ... for at most this long (the dispatcher's default ``max_age``: older ones are dead letters)
JOURNAL_AGE = 3600.0
#: the name the tests know :func:`.scripts.no_script_flags` by
_no_script_flags = no_script_flags


def default_spool_path(url: str) -> Path:
    """``$XDG_STATE_HOME/sslsms-notify/redis-spool-<hash of the URL>.db``."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return state_dir() / f"redis-spool-{digest}.db"


def _possibly_sent(fn: Callable[[Tx], T]) -> Callable[[Tx], T]:
    """``fn``, its new SMS marked ``maybe_sent``."""

    def marked(tx: Tx) -> T:
        result = fn(tx)
        tx.new_items[:] = [item.evolve(maybe_sent=True) for item in tx.new_items]
        return result

    return marked


class RedisStore:
    """The :class:`~..base.Store` on a Redis server (``store="redis://host:6379/0"``), or on
    the master a set of sentinels names (``redis+sentinel://HOST:26379[,HOST...]/SERVICE_NAME/DB``).

    Durable (as durable as the server's persistence: see :func:`describe_persistence`),
    and shared by every process on every host; times come from the server.
    ``prefix`` starts every key; ``spool`` is the SQLite file used while Redis fails
    (default: one per URL in the state directory); ``replica_wait``: seconds a write
    waits for one replica to have it while the master has replicas (0: never).

    A wrapping store: it holds Redis alone (:class:`.backend.RedisBackend`) and the
    spool (a :class:`~..sqlite.SQLiteStore`), and sends each call where it should go.
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sslsms:",
        socket_timeout: float = 2.0,
        spool: str | Path | None = None,
        replica_wait: float = REPLICA_WAIT,
    ) -> None:
        self.url = url
        self.prefix = prefix
        #: seconds a write waits for one replica to have it, when the master has replicas (0: never)
        self.replica_wait = replica_wait
        self._redis = RedisBackend(
            url, prefix=prefix, socket_timeout=socket_timeout, replica_wait=lambda: self.replica_wait
        )
        self.spool_path = Path(spool).expanduser() if spool is not None else default_spool_path(url)
        self._spool: SQLiteStore | None = None
        if self.spool_path.exists():  # left by an earlier process while Redis was down
            self._spool = SQLiteStore(self.spool_path)
        self._spool_lock = threading.Lock()
        #: why the spool failed the last time it was written to (None: it did not)
        self._spool_error: str | None = None
        #: SMS our dispatcher claimed from the spool (their outcomes go back there)
        self._spool_claims: set[str] = set()
        self._claim_turn = False
        self._faults = FaultState(
            self.spool_path,
            spooled=lambda: self._spool is not None,
            retry_after=lambda: RETRY_REDIS_AFTER,
            quiet=lambda: WRITES_BACK_QUIET,
        )
        self._route = Router(self._redis, self._faults)
        self._journal = Journal(limit=lambda: JOURNAL_MAX, max_age=lambda: JOURNAL_AGE)
        self._losses = LossCheck(self._redis, self._route, self._journal, self.spool)
        self._check_configuration()

    def _check_configuration(self) -> None:
        """A wrong password or database number is configuration, not an outage: say so now.

        An unreachable server is left to the spool (it may come back); a server that
        answers but refuses us would otherwise make every SMS wait in the spool for good.
        """
        wrong = self._redis.misconfigured()
        if wrong is not None:
            raise StoreUnavailableError(f"store {mask_credentials(self.url)}: {wrong}")
        try:
            self._redis.ping()
        except redis.AuthenticationError as exc:
            raise StoreUnavailableError(
                f"store {mask_credentials(self.url)}: Redis refused the credentials: {exc}"
            ) from None
        except redis.ResponseError as exc:
            raise StoreUnavailableError(f"store {mask_credentials(self.url)}: {exc}") from None
        except DOWN:
            return  # not reachable now: the spool takes over until it is
        self._redis.describe_server()
        self._losses.check()  # the marker's starting point

    def __repr__(self) -> str:
        return f"RedisStore({mask_credentials(self.url)!r})"

    # -- what Redis can do now, and the spool ---------------------------------------
    @property
    def degraded(self) -> bool:
        """Redis is unreachable or refuses writes: new state goes to the spool."""
        return self._faults.degraded

    @property
    def fault(self) -> str | None:
        """What is wrong with Redis now (None: nothing): ``unreachable``, ``out of memory``,
        ``read-only replica``, ``cannot persist`` or ``not enough replicas``."""
        return self._faults.fault

    @property
    def persistence(self) -> str | None:
        """What the server keeps across a restart, once it has answered (see :func:`describe_persistence`)."""
        return self._redis.persistence

    @property
    def _allow_oom(self) -> bool | None:
        """Whether the server runs flagged scripts (tests set False: a server before 7.0)."""
        return self._redis.scripts.allow_oom

    @_allow_oom.setter
    def _allow_oom(self, value: bool | None) -> None:
        self._redis.scripts.allow_oom = value

    def spool(self) -> SQLiteStore:
        """The spool, opened if need be."""
        with self._spool_lock:
            if self._spool is None:
                self._spool = SQLiteStore(self.spool_path)
            return self._spool

    def _spooled(self, call: Callable[[SQLiteStore], T]) -> T:
        """``call`` on the spool; whether it failed is remembered (:meth:`health` says ``down``)."""
        try:
            result = call(self.spool())
        except Exception as exc:
            self._spool_error = f"{type(exc).__name__}: {exc}"
            raise
        self._spool_error = None
        return result

    def _wrote(self, items: Sequence[OutboxItem]) -> None:
        """Redis took a write: it takes writes; the open SMS among ``items`` go in the journal."""
        self._route.succeeded("write")
        self._journal.put(items)

    def now(self) -> float:
        return self._route.call(self._redis.server_time, time.time)

    # -- transactions -------------------------------------------------------------
    def transact(self, fn: Callable[[Tx], T]) -> T:
        unknown = False

        def remote() -> T:
            nonlocal unknown
            try:
                return self._transact_remote(fn)
            except CommitUnknown:
                unknown = True
                raise

        def local() -> T:
            # Redis may hold this transaction's SMS too (the connection failed mid-commit):
            # the spool's copies are marked possibly sent, so a "Duplicate CMS ID" for one
            # counts as delivered rather than as a dead letter (see planner: sent alone).
            return self._spooled(lambda spool: spool.transact(_possibly_sent(fn) if unknown else fn))

        return self._route.call(remote, local, "write")

    def _transact_remote(self, fn: Callable[[Tx], T]) -> T:
        return self._redis.transact(fn, now=self.now(), on_commit=lambda tx: self._wrote(tx.new_items))

    def timer_stores(self) -> list[Store]:
        """Stores whose windows, digests and groups need sweeping: Redis, and the spool if any."""
        return [self] if self._spool is None else [self, self._spool]

    def next_due(self) -> float | None:
        times = [self._route.call(self._redis.next_due, lambda: None)]
        if self._spool is not None:
            times.append(self._spool.next_due())
        return min((t for t in times if t is not None), default=None)

    def window_count(self) -> int:
        count = self._route.call(self._redis.window_count, lambda: 0)
        return count + (self._spool.window_count() if self._spool is not None else 0)

    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        return self._route.call(
            lambda: self._redis.rate_acquire(key, rate, burst, reserve=reserve),
            lambda: self.spool().rate_acquire(key, rate, burst, reserve=reserve),
            "drain",
        )

    # -- outbox ---------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        if items:
            self._route.call(
                lambda: self._add_to_redis(items),
                lambda: self._spooled(lambda spool: spool.outbox_add(items)),
                "write",
            )

    def _add_to_redis(self, items: Sequence[OutboxItem]) -> None:
        self._redis.outbox_add(items)
        self._wrote(items)

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        # One source a call, taking turns: a request is never planned from SMS of both (the
        # members of a bound request must live in one store), and neither starves the other.
        self._claim_turn = not self._claim_turn
        sources = (self._claim_spool, self._claim_redis)
        for source in sources if self._claim_turn else sources[::-1]:
            items = source(limit, lease)
            if items:
                return items
        return []

    def _claim_redis(self, limit: int, lease: float) -> list[OutboxItem]:
        def remote() -> list[OutboxItem]:
            items = self._redis.outbox_claim(limit, lease)
            self._journal.put(items)
            return items

        return self._route.call(remote, list, "drain")

    def _claim_spool(self, limit: int, lease: float) -> list[OutboxItem]:
        if self._spool is None or not self._spool.outbox_open():  # a read, not a write transaction
            return []
        items = self._spool.outbox_claim(limit, lease)
        self._spool_claims.update(i.csms_id for i in items)
        return items

    def outbox_renew(self, csms_ids: Sequence[str], lease: float) -> None:
        local = [i for i in csms_ids if i in self._spool_claims]
        shared = [i for i in csms_ids if i not in self._spool_claims]
        if local and self._spool is not None:
            self._spool.outbox_renew(local, lease)
        if shared:
            self._route.call(lambda: self._redis.outbox_renew(shared, lease), lambda: None, "drain")

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        local = [i for i in items if i.csms_id in self._spool_claims]
        shared = [i for i in items if i.csms_id not in self._spool_claims]
        if local:
            self.spool().outbox_update(local)
            done = [i.csms_id for i in local if i.state is not OutboxState.INFLIGHT]
            self._spool_claims.difference_update(done)
        if not shared:
            return
        # Whatever Redis takes, this process knows the outcome: a settled SMS leaves the
        # journal, an open one is remembered in its new shape (its binding, say). An
        # outcome Redis did not take is not lost: the lease runs out, the SMS is sent
        # again with the same csms_id, and the gateway's duplicate check answers.
        self._journal.put(shared)
        if not any(binds(i) for i in shared):
            self._route.call(lambda: self._redis.outbox_update(shared), lambda: None, "drain")
            return

        # A binding Redis may lack must not go out: a rerun planned from Redis's copy would
        # be another request (a bulk under a new batch_csms_id), which the gateway cannot
        # tell from the first. Raised: the dispatcher sends nothing of these now.
        def unwritten() -> None:
            raise StoreUnavailableError(
                f"store {mask_credentials(self.url)} did not take the binding of {len(shared)} SMS"
            )

        self._route.call(lambda: self._redis.outbox_update(shared), unwritten, "drain")

    def outbox_get(self, csms_ids: Sequence[str]) -> dict[str, OutboxItem]:
        found = self._spool.outbox_get(csms_ids) if self._spool is not None else {}
        missing = [i for i in csms_ids if i not in found]
        remote = self._route.call(lambda: self._redis.outbox_get(missing), lambda: {})
        return {**found, **remote}

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        items = self._spool.outbox_list(state, limit) if self._spool is not None else []
        items += self._route.call(lambda: self._redis.outbox_list(state, limit), list)
        items = [i for i in items if state is None or i.state is state]
        return sorted(items, key=lambda i: i.created_at)[:limit]

    def outbox_counts(self) -> OutboxCounts:
        counts = self._route.call(self._redis.outbox_counts, OutboxCounts)
        if self._spool is not None:
            local = self._spool.outbox_counts()
            counts = OutboxCounts(
                counts.pending + local.pending, counts.inflight + local.inflight, counts.dead + local.dead
            )
        return counts

    def outbox_open(self) -> int:
        # While Redis does not answer, what this process wrote or claimed there and has not
        # seen settled is open as far as it can tell: flush() must not say "nothing left".
        remote = self._route.call(self._redis.outbox_open, self._journal_open)
        if remote == 0 and self._journal_open() and self._losses.check():
            # Redis says nothing is open, yet this process knows SMS it wrote there: a
            # Redis that lost them (restarted empty) says so only to the marker, and the
            # check has just re-added them. Else the check forgot those settled elsewhere.
            remote = self._route.call(self._redis.outbox_open, self._journal_open)
        return remote + (self._spool.outbox_open() if self._spool is not None else 0)

    def _journal_open(self) -> int:
        return len(self._journal.items())

    def outbox_next_due(self) -> float | None:
        times = [self._route.call(self._redis.outbox_next_due, lambda: None)]
        if self._spool is not None:
            times.append(self._spool.outbox_next_due())
        return min((t for t in times if t is not None), default=None)

    def outbox_trim(self, max_open: int, reason: str) -> list[OutboxItem]:
        dropped: list[OutboxItem] = self._route.call(
            lambda: self._redis.outbox_trim(max_open, reason), list, "drain"
        )
        self._journal.drop([i.csms_id for i in dropped])
        if self._spool is not None:
            dropped += self._spool.outbox_trim(max_open, reason)
        return dropped

    def outbox_expire_dead(self, older_than: float) -> int:
        count = self._route.call(lambda: self._redis.outbox_expire_dead(older_than), lambda: 0, "drain")
        if self._spool is not None:
            count += self._spool.outbox_expire_dead(older_than)
        return count

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        count = self._spool.outbox_requeue(csms_ids) if self._spool is not None else 0

        def remote() -> int:
            revived = self._redis.revive(csms_ids)
            if revived:
                self._wrote(revived)
            return len(revived)

        return count + self._route.call(remote, lambda: 0, "write")

    def outbox_resume(self) -> int:
        count = self._spool.outbox_resume() if self._spool is not None else 0
        return count + self._route.call(self._redis.outbox_resume, lambda: 0, "drain")

    def outbox_purge(self, state: OutboxState) -> int:
        count = self._spool.outbox_purge(state) if self._spool is not None else 0

        def remote() -> int:
            ids = self._redis.purge(state)
            if ids:
                self._route.succeeded("write")
                self._journal.drop(ids)
            return len(ids)

        return count + self._route.call(remote, lambda: 0, "write")

    # -- housekeeping -------------------------------------------------------------------
    def maintain(self, limit: int = 500) -> int:
        """The Notifier's housekeeping, once a second: did Redis lose data; can the spool move back?

        Returns how many SMS became due in Redis: re-added after a loss, or moved from
        the spool (same csms_id, at most ``limit``). Windows, digests, group buffers and
        caps opened in the spool move too, merged with Redis's (see :mod:`.move`).
        """
        readded = self._losses.check()
        self._route.call(lambda: self._redis.replication.refresh(self._redis.client), lambda: None)
        if self._spool is None or not self._route.may_use("write"):
            return readded
        spool = self.spool()
        try:
            moved = move_rows(spool, self._transact_remote)
            if moved:
                self._journal.count(rows_moved=moved)
            items = move_items(spool, self._add_to_redis, limit, self._spool_claims)
        except (redis.RedisError, OSError) as exc:
            self._route.record(exc)
            return readded
        return readded + len(items)

    def move_spool(self, limit: int = 500) -> int:
        """:meth:`maintain` by the name the Notifier calls (kept until it calls ``maintain``)."""
        return self.maintain(limit)

    def counters(self) -> dict[str, int]:
        """What this store did about Redis faults, for metrics.

        ``data_lost``: times it noticed Redis had lost data (restart without persistence,
        an older snapshot, a failover to a lagging replica); ``readded``: SMS it re-added
        then; ``journal_dropped``: SMS it could not have re-added (the journal was full);
        ``rows_moved``: windows, digests, group buffers and caps moved back from the spool;
        ``journal``: the SMS it would re-add now; ``replica_waits`` and ``replica_timeouts``:
        writes that waited for a replica, and those no replica acknowledged within
        ``replica_wait`` (they counted anyway; see :mod:`.replication`).
        """
        return {**self._journal.counters(), **self._redis.replication.counters()}

    def health(self) -> StoreHealth:
        """``durable`` while Redis takes writes; ``spooling`` (and why) while it fails and the
        spool takes them; ``down`` when the spool fails too (nothing can take an alert)."""
        fault = self.fault
        if fault is None:
            return StoreHealth("durable")
        spool = self._spool
        failed = self._spool_error
        if failed is None and spool is not None and spool.health().state == "down":
            failed = spool.health().detail
        if failed is not None:
            why = f"{WHAT_HAPPENED[fault]}, and the spool {self.spool_path} fails: {failed}"
            return StoreHealth("down", why)
        return StoreHealth("spooling", f"{WHAT_HAPPENED[fault]}; writes go to the spool {self.spool_path}")

    # -- lifecycle -------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`StoreUnavailableError` unless Redis answers now.

        When it does not, the fault is recorded (writes go to the spool at once) and the
        spool is opened and checked, so that :meth:`health` says whether anything can
        take an alert: ``spooling``, or ``down`` when the spool fails too.
        """
        try:
            self._redis.ping()
            self._route.succeeded("read")  # it answers: calls go to it again at once
        except DOWN as exc:
            self._route.record(exc)
            with contextlib.suppress(Exception):
                self._spooled(lambda spool: spool.check())
            raise StoreUnavailableError(f"store {mask_credentials(self.url)} is unreachable: {exc}") from None
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"store {mask_credentials(self.url)}: {exc}") from None

    def close(self) -> None:
        self._redis.close()
        if self._spool is not None:
            self._spool.close()

    def after_fork(self) -> None:
        # A Redis client of the child's own (see RedisBackend.after_fork). Our own locks may
        # have been held by a thread of the parent; the parent's spool claims and journal
        # are its own (the parent re-adds its SMS should Redis lose them); the spool
        # (SQLite) opens a connection of its own on first use.
        self._journal.after_fork()
        self._redis.after_fork()
        self._faults.after_fork()
        self._losses.after_fork()
        self._spool_lock = threading.Lock()
        self._spool_claims = set()
        if self._spool is not None:
            self._spool.after_fork()


__all__ = [
    "CANNOT_PERSIST",
    "JOURNAL_AGE",
    "JOURNAL_MAX",
    "NO_REPLICAS",
    "OUT_OF_MEMORY",
    "READ_ONLY",
    "REPLICA_WAIT",
    "RETRY_REDIS_AFTER",
    "UNREACHABLE",
    "WRITES_BACK_QUIET",
    "RedisStore",
    "default_spool_path",
    "describe_persistence",
    "fault_of",
    "merge_digest",
    "merge_group",
    "merge_lifecycle",
    "merge_rate",
    "merge_window",
    "no_script_flags",
]
