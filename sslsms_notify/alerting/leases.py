"""Leases: a job that one process of those sharing a store does at a time.

A process *stands* for a lease (:meth:`~.timers.Timers.stand`); its timers then try
to take or renew it once a second, each time in a store transaction of its own:
whoever holds an unexpired lease keeps it, anybody may take one that expired. So a
holder that dies is replaced about ``ttl`` seconds later, and two live processes never
both believe they hold it for longer than a renewal round.

The relay uses one to export the store-wide gauges (SMS pending, dead letters, dedup
windows) from one relay only, so that summing them over relays counts each once. While
Redis is away each host's spool holds a lease of its own: one relay per host then
reports that host's spool, and the sum is still right.

Expired leases are forgotten by the timers' sweep (:func:`forget_expired`), in the
transaction of the other timers.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from ..stores.base import Lease, Tx

#: seconds a lease lasts without renewal (renewed about once a second)
LEASE_TTL = 10.0


@dataclass
class Campaign:
    """A lease this process stands for, and whether it held it at the last try."""

    name: str
    ttl: float = LEASE_TTL
    #: held at the last try (False also when the store failed it)
    held: bool = False


def process_name() -> str:
    """Who holds a lease: ``host:pid:random`` (a forked child gets a new one)."""
    return f"{socket.gethostname().split('.')[0]}:{os.getpid()}:{secrets.token_hex(3)}"


def hold(tx: Tx, name: str, holder: str, ttl: float) -> bool:
    """Take or renew lease ``name`` for ``holder`` unless another holds it unexpired.

    A lease of the holder's own is renewed once half its time has gone (a write every
    ``ttl / 2`` seconds, not every try).
    """
    lease = tx.leases.get(name)
    if lease is not None and lease.expires_at > tx.now:
        if lease.holder != holder:
            return False
        if lease.expires_at - tx.now > ttl / 2:
            return True
    tx.leases.put(name, Lease(name, holder, tx.now + ttl))
    return True


def release(tx: Tx, names: Sequence[str], holder: str) -> None:
    """Give up the leases ``names`` that ``holder`` holds (a process closing: another takes over at once)."""
    tx.leases.load(names)
    for name in names:
        lease = tx.leases.get(name)
        if lease is not None and lease.holder == holder:
            tx.leases.delete(name)


def forget_expired(tx: Tx, limit: int) -> int:
    """Forget leases that expired (their holder is gone); returns how many."""
    names = tx.due("leases", limit)
    if not names:
        return 0
    tx.leases.load(names)
    gone = 0
    for name in names:
        lease = tx.leases.get(name)
        if lease is not None and lease.expires_at <= tx.now:
            tx.leases.delete(name)
            gone += 1
    return gone
