"""Noticing that Redis lost its data, and re-adding the SMS this process knows are pending.

**The marker** (``{prefix}epoch``) is a hash: a token set when it is missing, and a
counter every check increments. A token that changed, or a counter that did not grow,
means Redis lost what it had: a restart without persistence, an RDB snapshot older
than the last writes, a failover to a replica that lagged.

Then what the :class:`~.journal.Journal` holds goes back, marked as maybe sent and with
its binding kept, so one the gateway already took is answered "Duplicate CMS ID" and
counted delivered, once. On a server that refuses writes it goes to the spool.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from functools import partial

import redis

from ..._log import get_logger
from ...validation import mask_credentials
from ..base import OutboxItem, OutboxState
from ..sqlite import SQLiteStore
from .backend import READD_CHUNK, RedisBackend
from .faults import UNREACHABLE
from .journal import Journal
from .route import Router

_log = get_logger("sslsms_notify.stores.redis")
#: ids per marker check
CHECK_CHUNK = 2000


class Marker:
    """The last token and counter this process saw on the marker."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._epoch = 0

    def checked(self, token: str, count: int) -> bool:
        """After a check that incremented the counter: whether Redis lost data since the last check."""
        lost = self._token is not None and (token != self._token or count <= self._epoch)
        self._token, self._epoch = token, count
        return lost

    def read(self, token: str | None, count: int) -> bool:
        """Read without incrementing (a server that refuses writes): lost if it changed or went back."""
        lost = self._token is not None and (token != self._token or count < self._epoch)
        self._token, self._epoch = token, count
        return lost


class LossCheck:
    """Checks the marker; after a loss, re-adds the journal's SMS to Redis (or to ``spool()``)."""

    def __init__(
        self, redis_: RedisBackend, route: Router, journal: Journal, spool: Callable[[], SQLiteStore]
    ) -> None:
        self._redis = redis_
        self._route = route
        self._journal = journal
        self._spool = spool
        self._marker = Marker()
        self._lock = threading.Lock()

    def check(self) -> int:
        """Has Redis lost data since the last check? If so, re-add what this process knows.

        Returns how many SMS were re-added. The same script call says which journal SMS
        Redis no longer has: while no loss is noticed, those were settled by someone (sent
        or given up on) and leave the journal.
        """
        with self._lock:
            if not self._route.may_use("drain"):
                return 0
            ids = [i.csms_id for i in self._journal.items()]
            chunks = [ids[i : i + CHECK_CHUNK] for i in range(0, len(ids), CHECK_CHUNK)] or [[]]
            proposed = secrets.token_hex(8)
            lost, settled = False, []
            try:
                for chunk in chunks:
                    token, count, flags = self._redis.check_marker(proposed, chunk)
                    if self._marker.checked(token, count):
                        lost = True
                    if not lost:
                        settled += [i for i, flag in zip(chunk, flags, strict=True) if flag != "1"]
            except (redis.RedisError, OSError) as exc:
                return 0 if self._route.record(exc) == UNREACHABLE else self._check_read_only()
            self._route.succeeded("read")
            self._journal.drop(settled)
            return self._recover() if lost else 0

    def _check_read_only(self) -> int:
        """Redis refuses writes (a replica now, say): the marker can still be read.

        A token that changed, or a counter below the last one seen, means this server
        does not have all that was written (a failover to a replica that lagged): what
        this process knows is pending and the server lacks goes to the spool.
        """
        try:
            token, count = self._redis.read_marker()
        except (redis.RedisError, OSError):
            return 0
        return self._recover() if self._marker.read(token, count) else 0

    def _recover(self) -> int:
        """Redis lost data: the SMS this process knows are pending go back, as maybe sent."""
        known = self._journal.items(maybe_sent=True)
        added = 0
        for start in range(0, len(known), READD_CHUNK):
            chunk = known[start : start + READD_CHUNK]
            # what goes to the spool instead leaves the journal
            added += self._route.call(partial(self._to_redis, chunk), partial(self._to_spool, chunk), "write")
        self._journal.count(data_lost=1, readded=added)
        _log.error(
            "Redis lost its data: restarted without persistence? The SMS this process knew were "
            "pending are re-added under their csms_id (the gateway keeps them once); dedup windows, "
            "caps, digests and group buffers Redis held are gone, and so are SMS only a process "
            "that is not running knew of",
            readded=added,
            known=len(known),
            store=mask_credentials(self._redis.url),
            persistence=self._redis.persistence or "unknown",
        )
        return added

    def _to_redis(self, items: Sequence[OutboxItem]) -> int:
        count = self._redis.readd(items)
        self._route.succeeded("write")
        return count

    def _to_spool(self, items: Sequence[OutboxItem]) -> int:
        """Redis refuses writes: the SMS it does not have go to the spool (durable on this host)."""
        ids = [i.csms_id for i in items]
        present: dict[str, OutboxItem] = self._route.call(lambda: self._redis.outbox_get(ids), dict)
        missing = [i.evolve(state=OutboxState.PENDING) for i in items if i.csms_id not in present]
        if missing:
            self._spool().outbox_add(missing)
            self._journal.drop([i.csms_id for i in missing])  # the spool keeps them now
        return len(missing)

    def after_fork(self) -> None:
        """A new lock: a thread of the parent may have held the old one at the fork."""
        self._lock = threading.Lock()
