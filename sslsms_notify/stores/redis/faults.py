"""What a failed Redis call says about Redis, and the store's view of it until it is over.

Two kinds of failure:

- *unreachable* (connection refused or lost, timeouts, ``LOADING``): everything
  goes to the spool;
- *writes refused* while Redis still answers: out of memory (``maxmemory`` with
  ``noeviction``), a read-only replica (after a failover), ``MISCONF`` (it cannot
  persist) or ``NOREPLICAS``: new alerts, windows and SMS go to the spool. Out of
  memory, the SMS Redis already holds are still claimed, sent and settled there
  (those scripts carry ``allow-oom``, Redis 7+: sending an SMS deletes it, so they
  free memory overall); a read-only replica takes no write at all.

Each fault is logged once when it starts, and once when it is over.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import redis

from ..._log import get_logger

_log = get_logger("sslsms_notify.stores.redis")

#: what a call does to Redis, which decides where it goes while Redis fails:
#: "read" goes to Redis unless it is unreachable; "drain" (claim, renew, settle SMS, pace)
#: also while it is out of memory; "write" (new alerts, windows, SMS) only when it takes writes
Access = Literal["read", "drain", "write"]

UNREACHABLE = "unreachable"
OUT_OF_MEMORY = "out of memory"
READ_ONLY = "read-only replica"
CANNOT_PERSIST = "cannot persist"
NO_REPLICAS = "not enough replicas"
#: what redis-py raises when Redis cannot be reached
DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)
#: error codes of a Redis that answers but refuses writes (redis-py strips the code of the
#: ones it has a class for; a script error before Redis 7 carries it after a "-")
_REFUSALS = {
    "OOM": OUT_OF_MEMORY,
    "READONLY": READ_ONLY,
    "MISCONF": CANNOT_PERSIST,
    "NOREPLICAS": NO_REPLICAS,
}
#: redis-py's classes for two of them (OutOfMemoryError is missing from older releases and the stubs)
_OOM_ERROR: type[Exception] = getattr(redis.exceptions, "OutOfMemoryError", redis.exceptions.ReadOnlyError)
_REFUSAL_CODE = re.compile(r"(?:^|-)(OOM|READONLY|MISCONF|NOREPLICAS)\b")
_PIPELINE_ERROR = "of pipeline caused error: "
#: each fault, as the log line that says it started
WHAT_HAPPENED = {
    UNREACHABLE: "Redis unreachable",
    OUT_OF_MEMORY: "Redis refuses writes: out of memory (maxmemory reached); SMS it holds are still sent",
    READ_ONLY: "Redis refuses writes: it is a read-only replica (a failover? point the URL at the master)",
    CANNOT_PERSIST: "Redis refuses writes: it cannot persist to disk (MISCONF)",
    NO_REPLICAS: "Redis refuses writes: not enough replicas (min-replicas-to-write)",
}


def fault_of(exc: BaseException) -> str | None:
    """What a failed Redis call says about Redis: unreachable, a refused write, or None (a bug of ours)."""
    if isinstance(exc, DOWN):
        return UNREACHABLE
    if isinstance(exc, redis.exceptions.MasterDownError):  # a replica cut off from its master
        return UNREACHABLE
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return READ_ONLY
    if isinstance(exc, _OOM_ERROR):
        return OUT_OF_MEMORY
    if isinstance(exc, redis.ResponseError) and not isinstance(exc, redis.exceptions.NoScriptError):
        # redis-py puts "Command # 1 (ZADD ...) of pipeline caused error: " before a pipeline's
        # error; the command's arguments (an alert's text) are not Redis speaking.
        said = str(exc).rsplit(_PIPELINE_ERROR, 1)[-1]
        found = _REFUSAL_CODE.search(said)
        if found:
            return _REFUSALS[found.group(1)]
    return None


class FaultState:
    """What is wrong with Redis now: which calls may go to it, and the log lines on each fault.

    ``retry_after()``: seconds after a failure before Redis is tried again;
    ``quiet()``: seconds of writes taken, without a refusal, before a refusal is logged
    as over (a Redis at the edge of ``maxmemory`` takes a write and refuses the next:
    one line when the trouble starts and one when it is over, not a pair per flap).
    Both are read at each use. ``spool`` is named in the log lines; ``spooled()`` says
    whether it exists (the line that says writes are taken again then says it moves back).
    """

    def __init__(
        self,
        spool: Path,
        *,
        spooled: Callable[[], bool],
        retry_after: Callable[[], float],
        quiet: Callable[[], float],
    ) -> None:
        self._spool = spool
        self._spooled = spooled
        self._retry_after = retry_after
        self._quiet = quiet
        self._lock = threading.Lock()
        #: unreachable since (monotonic)
        self._down_since: float | None = None
        #: refusing writes: why, and since (monotonic)
        self._refused: str | None = None
        self._refused_at = 0.0
        #: the failure logged for the current outage (one line per outage and kind)
        self._logged: str | None = None
        #: when Redis last took a write after refusing (monotonic)
        self._writes_back_at = 0.0

    @property
    def degraded(self) -> bool:
        """Redis is unreachable or refuses writes: new state goes to the spool."""
        return self._down_since is not None or self._refused is not None

    @property
    def fault(self) -> str | None:
        """What is wrong with Redis now (None: nothing)."""
        if self._down_since is not None:
            return UNREACHABLE
        return self._refused

    def may_use(self, access: Access, *, allow_oom: bool | None) -> bool:
        """Whether a call of this kind goes to Redis now (``allow_oom``: the server runs flagged scripts)."""
        now = time.monotonic()
        retry_after = self._retry_after()
        if self._down_since is not None and now - self._down_since < retry_after:
            return False
        if access == "read" or self._refused is None or now - self._refused_at >= retry_after:
            return True
        return access == "drain" and self._refused == OUT_OF_MEMORY and allow_oom is not False

    def failed(self, fault: str, exc: BaseException) -> None:
        """A call failed with ``fault``: logged as an ERROR if it is the outage's first of its kind."""
        with self._lock:
            if fault == UNREACHABLE:
                self._down_since = time.monotonic()
            else:
                self._refused, self._refused_at = fault, time.monotonic()
            first = self._logged != fault
            self._logged = fault
        if first:
            refused = isinstance(exc, redis.AuthenticationError)
            what = "Redis refused our credentials" if refused else WHAT_HAPPENED[fault]
            _log.error(
                what + "; new alerts and SMS go to a local spool until it takes them "
                "(dedup and caps hold per host meanwhile)",
                spool=str(self._spool),
                error=f"{type(exc).__name__}: {exc}",
            )

    def succeeded(self, access: Access) -> bool:
        """A call went through: Redis answers; after a write, it takes writes again.

        What the calls do changes at once; the log says a refusal is over only once
        writes have been taken for ``quiet()`` seconds since the last. Returns whether
        Redis answered after being unreachable.
        """
        if self._down_since is None and (
            access != "write" or (self._refused is None and self._logged is None)
        ):
            return False
        now = time.monotonic()
        said = ""
        with self._lock:
            answered = self._down_since is not None
            self._down_since = None
            if answered and self._logged == UNREACHABLE:
                self._logged = self._refused
                said = (
                    "Redis reachable again" if self._refused is None else "Redis answers, but refuses writes"
                )
            if access == "write":
                if self._refused is not None:
                    self._refused, self._writes_back_at = None, now
                elif self._logged is not None and now - self._writes_back_at >= self._quiet():
                    self._logged, said = None, "Redis takes writes again"
            healthy = self._refused is None
        if said:
            moving = healthy and self._spooled()
            _log.warning(said + ("; spooled SMS and windows move back to it" if moving else ""))
        return answered

    def after_fork(self) -> None:
        """A new lock: a thread of the parent may have held the old one at the fork."""
        self._lock = threading.Lock()
