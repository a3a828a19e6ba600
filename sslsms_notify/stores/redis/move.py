"""What the spool took while Redis failed, moved back into Redis once it takes writes.

SMS move with their csms_id. Windows, digests, group buffers, caps and records
(webhook lifecycles, heartbeats, escalations...) opened in the spool are merged with
what Redis has, by the rules of :mod:`..merge`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import cast

import redis

from ..._log import get_logger
from ..base import RECORDS, IndexedTable, OutboxItem, OutboxState, Tx
from ..merge import (
    DIGEST_KEEP,
    GROUP_KEEP,
    MERGE_RECORD,
    merge_digest,
    merge_group,
    merge_rate,
    merge_window,
)
from ..sqlite import SQLiteStore

_log = get_logger("sslsms_notify.stores.redis")
#: rows (windows, digests, groups, rates) moved from the spool to Redis per housekeeping round
MOVE_ROWS = 500
#: how long the SMS being moved stay claimed in the spool (our dispatcher leaves them alone)
MOVE_LEASE = 30.0


def move_items(
    spool: SQLiteStore, add: Callable[[list[OutboxItem]], None], limit: int, skip: Collection[str]
) -> list[OutboxItem]:
    """Up to ``limit`` SMS due in the spool, given to Redis by ``add``; returns them as Redis has them.

    Claimed first, so our own dispatcher does not send them meanwhile (those it has
    claimed, ``skip``, stay); deleted from the spool only once Redis has them. A crash in
    between leaves a copy in both, which is harmless: the same csms_id is delivered once.
    Should ``add`` fail, they are pending in the spool again, and the error is raised.
    """
    items = spool.outbox_claim(limit, MOVE_LEASE)
    items = [i for i in items if i.csms_id not in skip]
    if not items:
        return []
    pending = [i.evolve(state=OutboxState.PENDING, next_attempt_at=spool.now()) for i in items]
    try:
        add(pending)
    except (redis.RedisError, OSError):
        spool.outbox_update([i.evolve(state=OutboxState.PENDING) for i in items])
        raise
    spool.outbox_update([i.evolve(state=OutboxState.SENT) for i in items])
    _log.info("spooled SMS moved to Redis", count=len(items))
    return pending


def move_rows(spool: SQLiteStore, transact: Callable[[Callable[[Tx], None]], None]) -> int:
    """Windows, digests, group buffers, caps and records opened in the spool, merged into Redis's.

    In one spool transaction (the host's other processes wait for it): read a slice
    of rows, merge them into Redis in one Redis transaction (``transact``), then delete
    them from the spool. Should Redis fail, the spool's transaction is rolled back and
    keeps them. Returns how many rows moved.
    """

    def move(local: Tx) -> int:
        tables = cast("tuple[IndexedTable, ...]", ("windows", "digests", "groups", *RECORDS))
        keys: dict[str, list[str]] = {t: local.earliest(t, MOVE_ROWS) for t in tables}
        rate_keys = spool.rate_keys(MOVE_ROWS)
        if not (rate_keys or any(keys.values())):
            return 0
        local.windows.load(keys["windows"])
        local.digests.load(keys["digests"])
        local.groups.load(keys["groups"])
        local.rates.load(rate_keys)
        windows = {k: w for k in keys["windows"] if (w := local.windows.get(k)) is not None}
        digests = {k: d for k in keys["digests"] if (d := local.digests.get(k)) is not None}
        groups = {k: g for k in keys["groups"] if (g := local.groups.get(k)) is not None}
        records: dict[str, dict[str, object]] = {}
        for table in RECORDS:  # lifecycles, heartbeats, escalations...: each by its own rule
            rows = getattr(local, table)
            rows.load(keys[table])
            records[table] = {k: r for k in keys[table] if (r := rows.get(k)) is not None}
        rates = {k: r for k in rate_keys if (r := local.rates.get(k)) is not None}

        def merge(tx: Tx) -> None:
            tx.windows.load(windows)
            tx.digests.load(digests)
            tx.groups.load(groups)
            tx.rates.load(rates)
            for table, moving in records.items():
                # e.g. a lifecycle paged on either side is paged, resolved on either is resolved
                rows = getattr(tx, table)
                rows.load(moving)
                for key, row in moving.items():
                    rows.put(key, MERGE_RECORD[table](rows.get(key), row))
            for key, window in windows.items():
                merged = merge_window(tx.windows.get(key), window, tx.now)
                if merged is not None:
                    tx.windows.put(key, merged)
            for key, digest in digests.items():
                tx.digests.put(key, merge_digest(tx.digests.get(key), digest, DIGEST_KEEP))
            for key, group in groups.items():
                tx.groups.put(key, merge_group(tx.groups.get(key), group, GROUP_KEEP))
            for key, tat in rates.items():
                meter = merge_rate(tx.rates.get(key), tat, tx.now)
                if meter is not None:
                    tx.rates.put(key, meter)

        transact(merge)
        for key in windows:
            local.windows.delete(key)
        for key in digests:
            local.digests.delete(key)
        for key in groups:
            local.groups.delete(key)
        for table, moved in records.items():
            for key in moved:
                getattr(local, table).delete(key)
        for key in rates:
            local.rates.delete(key)
        return len(windows) + len(digests) + len(groups) + sum(map(len, records.values())) + len(rates)

    moved = spool.transact(move)
    if moved:
        _log.info("spooled windows, digests, group buffers and caps merged into Redis", count=moved)
    return moved
