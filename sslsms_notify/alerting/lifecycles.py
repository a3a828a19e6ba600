"""Webhook lifecycles: an Alertmanager or Grafana alert pages once per firing, its resolve once.

A lifecycle is an alert's fingerprint and ``startsAt`` (see :mod:`sslsms_notify.relay`);
its record remembers whether it paged and whether it resolved. Written against a store
transaction like :mod:`.decisions`, which asks :func:`lifecycle_verdict` for each
webhook alert of a round instead of consulting a dedup window.
"""

from __future__ import annotations

from dataclasses import replace

from ..stores.base import Lifecycle, Tx

#: how long a firing alert's lifecycle is remembered after its producer last sent it
FIRING_MEMORY = 7 * 86400.0
#: how long a resolved one is (a late or duplicated re-send of the resolve)
RESOLVED_MEMORY = 86400.0
#: the verdicts: page it (new, its resolve), page a reminder, or nothing new (known)
NEW, KNOWN, REMIND, RESOLVE = "new", "known", "remind", "resolve"


def lifecycle_verdict(tx: Tx, key: str | None, resolved: bool, remind_every: float) -> str:
    """What a webhook alert means for its lifecycle: new, known (a re-send), a reminder, its resolve.

    Alertmanager re-sends every alert of a group when the group changes and at its
    ``repeat_interval``; an HA pair may send one notification twice. Firing pages once
    per fingerprint and ``startsAt``, its resolve once; a firing re-send after the
    resolve (same ``startsAt``) is stale and pages nothing. ``remind_every`` > 0: a
    firing re-sent that long after it last paged pages a reminder.
    """
    assert key is not None
    now = tx.now
    record = tx.lifecycles.get(key)
    if resolved:
        if record is not None and record.resolved:
            return KNOWN
        first = record.first_at if record is not None else now
        tx.lifecycles.put(key, Lifecycle(key, True, first, now, now + RESOLVED_MEMORY))
        return RESOLVE
    if record is None:
        tx.lifecycles.put(key, Lifecycle(key, False, now, now, now + FIRING_MEMORY))
        return NEW
    if record.resolved:
        return KNOWN
    if remind_every > 0 and now - record.paged_at >= remind_every:
        tx.lifecycles.put(key, replace(record, paged_at=now, expires_at=now + FIRING_MEMORY))
        return REMIND
    tx.lifecycles.put(key, replace(record, expires_at=now + FIRING_MEMORY))
    return KNOWN


def forget_lifecycles(tx: Tx, limit: int = 1000) -> None:
    """Forget webhook lifecycles nobody has sent for a while (see FIRING_MEMORY)."""
    keys = tx.due("lifecycles", limit)
    if keys:
        tx.lifecycles.load(keys)
        for key in keys:
            record = tx.lifecycles.get(key)
            if record is not None and record.expires_at <= tx.now:
                tx.lifecycles.delete(key)
