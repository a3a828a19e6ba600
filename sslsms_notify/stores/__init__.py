"""Backends for the pipeline's state: memory, SQLite, Redis (see :mod:`.base`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..validation import mask_credentials
from .base import (
    Digest,
    GroupBuffer,
    OutboxCounts,
    OutboxItem,
    OutboxState,
    StandaloneStore,
    Store,
    StoreHealth,
    StoreUnavailableError,
    Tx,
    Window,
)
from .memory import MemoryStore

__all__ = [
    "Digest",
    "GroupBuffer",
    "MemoryStore",
    "OutboxCounts",
    "OutboxItem",
    "OutboxState",
    "StandaloneStore",
    "Store",
    "StoreHealth",
    "StoreUnavailableError",
    "Tx",
    "Window",
    "open_store",
]


def open_store(
    spec: Store | str | None,
    *,
    clock: Callable[[], float] | None = None,
    replica_wait: float | None = None,
) -> Store:
    """A store from an instance or a URL: ``memory``, ``sqlite:///path``, ``redis://host/0``,
    ``redis+sentinel://host:26379,host2:26379/SERVICE_NAME/0``.

    ``replica_wait``: seconds a Redis store's writes wait for a replica (default 0.5; an
    instance keeps its own). Raises ValueError for a URL of no known kind, and
    :class:`StoreUnavailableError` for a store that cannot be opened.
    """
    if spec is not None and not isinstance(spec, str):
        if not isinstance(spec, Store):
            raise ValueError(f"store={spec!r}: must be a store URL or a Store")
        return spec
    spec = (spec or "memory").strip()
    if spec in ("memory", "memory://"):
        return MemoryStore(clock=clock or time.time)
    if spec.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        return SQLiteStore(spec, clock=clock or time.time)
    if spec.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")):
        from .redis import REPLICA_WAIT, RedisStore

        return RedisStore(spec, replica_wait=REPLICA_WAIT if replica_wait is None else replica_wait)
    raise ValueError(
        f"store={mask_credentials(spec)!r}: must be memory, sqlite:///PATH, redis://HOST:PORT/DB "
        "or redis+sentinel://HOST:26379/SERVICE_NAME/DB"
    )
