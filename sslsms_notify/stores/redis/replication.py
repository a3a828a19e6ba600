"""Writes a replica has before they count: ``WAIT 1`` after the writes that must survive a failover.

Redis replicates asynchronously: a master that dies right after a write may take the
write with it, and Sentinel then promotes a replica that never had it. So after the
writes somebody is told about or acts on, the store sends ``WAIT 1`` on the connection
that wrote (``WAIT`` waits for that connection's writes), bounded by ``replica_wait``:

- a transaction (an intake round: the relay answers ``202`` on it; a sweep's summaries);
- an outbox claim, before the SMS is sent: a claim the new master lacks would let
  another process send the SMS as if nobody had (see :mod:`..redis` on leases);
- a request's binding (its members under one batch id), before the request goes out: a
  rerun planned from a copy without it would be another request (see ``outbox_update``);
- SMS re-added after a loss, or moved from the spool, before the spool forgets them;
- the loss marker's counter (see :mod:`.recovery`), before this process trusts it: a
  failover right after must not look like a loss of data.

Only while the master has a replica online (``INFO replication``, read about once a
second by the housekeeping, and again after a wait that timed out): a master alone has
nobody to wait for. When no replica acknowledges in time the write counts anyway
(availability first): one log line when that starts, one when replicas acknowledge
again, and ``replica_timeouts`` counts each such write. A connection lost during the
wait leaves the write's fate unknown: that is raised, and the store reruns the
transaction in the spool with the same csms_ids, as for an ``EXEC`` whose answer never
came.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ..._log import get_logger
from ...validation import mask_credentials

_log = get_logger("sslsms_notify.stores.redis")
#: Any: the published stubs know no pool but redis-py's own
_Redis: Any = redis.Redis


class _Lent:
    """One connection of ``pool``, lent to a client as a pool of its own until :meth:`give_back`.

    A client on it sends every command, pipeline and script on that one connection,
    so a ``WAIT`` after them waits for their replication.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.connection = pool.get_connection()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        return self.connection

    def release(self, connection: Any) -> None:
        """Kept until :meth:`give_back` (a pipeline releases its connection when it ends)."""

    def give_back(self) -> None:
        self.pool.release(self.connection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


class Replication:
    """Whether and how long writes wait for a replica, and what came of it.

    ``timeout()``: seconds a write waits for one replica (0: never), read at each use.
    """

    def __init__(self, timeout: Callable[[], float], store: str) -> None:
        self._timeout = timeout
        self._store = mask_credentials(store)
        self._lock = threading.Lock()
        #: replicas the master has online, as last read (None: not read yet, or not a master)
        self.replicas: int | None = None
        self._counts = {"replica_waits": 0, "replica_timeouts": 0}
        #: writes no replica acknowledged in time since the trouble began (monotonic start)
        self._missed_since: float | None = None
        self._missed = 0

    @property
    def waiting(self) -> bool:
        """Whether a write waits for a replica now."""
        return self._timeout() > 0 and bool(self.replicas)

    @contextmanager
    def connection(self, client: Any) -> Iterator[Any]:
        """``client``, or while writes wait for a replica, a client on one connection of its pool."""
        if not self.waiting:
            yield client
            return
        lent = _Lent(client.connection_pool)
        try:
            yield _Redis(connection_pool=lent)
        finally:
            lent.give_back()

    def acknowledge(self, client: Any) -> None:
        """After a write on ``client`` (from :meth:`connection`): ``WAIT 1`` for it, bounded.

        Raises what redis-py raises when the connection fails meanwhile (the write's
        fate is then unknown). A timeout is counted and logged, not raised.
        """
        if not isinstance(client.connection_pool, _Lent):
            return  # writes did not wait for replicas when this one began
        timeout = self._timeout()
        # On the lent connection itself, never through redis-py's retry: a WAIT retried on
        # a new connection counts that connection's writes (none) and answers at once, so
        # a write whose connection was cut would pass for replicated.
        connection = client.connection_pool.connection
        try:
            connection.send_command("WAIT", 1, max(1, round(timeout * 1000)))
            acknowledged = int(connection.read_response())
        except BaseException:
            connection.disconnect()
            raise
        now = time.monotonic()
        with self._lock:
            self._counts["replica_waits"] += 1
            since, missed = self._missed_since, self._missed
            if acknowledged >= 1:
                self._missed_since, self._missed = None, 0
            else:
                self._counts["replica_timeouts"] += 1
                self._missed_since, self._missed = since if since is not None else now, missed + 1
        if acknowledged >= 1:
            if since is not None:
                _log.warning(
                    "Redis replicas acknowledge writes again",
                    unacknowledged=missed,
                    seconds=round(now - since, 1),
                )
            return
        if since is None:
            _log.warning(
                "no Redis replica acknowledged a write within replica_wait; it counts anyway "
                "(a failover now could lose it)",
                replica_wait=timeout,
                replicas=self.replicas,
                store=self._store,
            )
        self.refresh(client)  # a replica gone, or a new master without any: stop waiting

    def refresh(self, client: Any) -> None:
        """Read how many replicas the master has online (``INFO replication``)."""
        self.learn(client.info("replication"))

    def learn(self, info: dict[str, Any]) -> None:
        """The replicas online in ``INFO replication``; a change of having some or none is logged."""
        online = None
        if info.get("role") == "master":
            online = sum(
                1
                for key, value in info.items()
                if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
            )
        before, self.replicas = self.replicas, online
        if online is None or self._timeout() <= 0 or bool(before) == bool(online):
            return
        if online:
            _log.info(
                "Redis master has replicas online: each write waits for one (replica_wait)",
                replicas=online,
                replica_wait=self._timeout(),
            )
        elif before is not None:
            _log.warning(
                "Redis master has no replica online any more: writes are not waited for, and a "
                "failover now could lose the last ones",
                store=self._store,
            )

    def counters(self) -> dict[str, int]:
        """``replica_waits``: writes that waited for a replica; ``replica_timeouts``: of those,
        writes no replica acknowledged within ``replica_wait`` (they counted anyway)."""
        with self._lock:
            return dict(self._counts)

    def after_fork(self) -> None:
        """A new lock: a thread of the parent may have held the old one at the fork."""
        self._lock = threading.Lock()
