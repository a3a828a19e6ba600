"""Where a call of the Redis store goes: to Redis while it may take it, else to a local answer.

A call that fails with a fault (:func:`.faults.fault_of`) records it and gets its local
answer instead (the spool, or a neutral one); a call that fails otherwise is a bug of
ours, and raised. A call that goes through says Redis answers; a write, that it takes
writes again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import redis

from .backend import RedisBackend
from .faults import READ_ONLY, Access, FaultState, fault_of

T = TypeVar("T")


class Router:
    """Calls to ``redis`` or to their local answers, as ``faults`` says."""

    def __init__(self, redis_: RedisBackend, faults: FaultState) -> None:
        self._redis = redis_
        self._faults = faults

    def call(self, remote: Callable[[], T], local: Callable[[], T], access: Access = "read") -> T:
        """``remote`` on Redis, or ``local`` when Redis fails (or failed a moment ago).

        A write that succeeds says so itself (:meth:`succeeded` with "write"): only a
        write tells that Redis takes writes again.
        """
        if not self.may_use(access):
            return local()
        try:
            result = remote()
        except (redis.RedisError, OSError) as exc:
            self.record(exc)
            return local()
        self.succeeded("read")
        return result

    def may_use(self, access: Access) -> bool:
        """Whether a call of this kind goes to Redis now."""
        return self._faults.may_use(access, allow_oom=self._redis.scripts.allow_oom)

    def record(self, exc: redis.RedisError | OSError) -> str:
        """The fault a failed call says Redis has, recorded; ``exc`` is raised if it says none (a bug)."""
        fault = fault_of(exc)
        if fault is None:
            raise exc
        self._faults.failed(fault, exc)
        if fault == READ_ONLY:
            # the master was demoted (a failover behind one DNS name, as managed Redis does
            # it): new connections resolve the name again and reach the new master
            self._redis.reconnect()
        return fault

    def succeeded(self, access: Access) -> None:
        """A call went through (see :meth:`.faults.FaultState.succeeded`); Redis answering
        again for the first time gets its persistence described."""
        if self._faults.succeeded(access) and self._redis.persistence is None:
            with contextlib.suppress(Exception):
                self._redis.describe_server()
