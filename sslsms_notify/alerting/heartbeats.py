"""Heartbeats: a dead man's switch for cron jobs and for monitoring itself.

A heartbeat is a store record (:class:`~..stores.records.Heartbeat`) that something must
ping every ``every`` seconds: a job (``backup.sh && sslsms-notify heartbeat backup
--every 24h``, or ``POST /v1/heartbeats/backup``) or, through the relay, Alertmanager's
always-firing ``Watchdog`` alert (kind ``alertmanager``; Grafana's likewise). Its
deadline is the last ping + ``every`` + ``grace``:

- past it, the timers of any process on the store (the relay above all) page
  ``[MISSED] backup: no heartbeat since 02:00 (every 24h)`` once, in the transaction
  that marks the record missed, so several relays on one store page it once;
- the next ping pages ``[RECOVERED] backup: heartbeat at 03:10 (silent since 02:00,
  every 24h)`` once, in the transaction that records the ping.

Everything here acts only through the transaction it is given: it may run more than
once for one commit (Redis reruns after a conflict); csms_ids come from the
:class:`~.decisions.IdBook`, the same on every rerun.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..durations import Duration
from ..stores.base import Tx
from ..stores.records import Heartbeat
from .decisions import AlertResult, IdBook, Policy, Report, deliver
from .formatting import format_missed, format_recovered

#: once ``[MISSED]`` paged, how long before the record is looked at again (nothing pages
#: then; it keeps the index from holding a time that has passed)
MISSED_RECHECK = 30 * 86400.0
#: what ``every`` may be: a second to a year
EVERY = Duration(1, 366 * 86400)
#: what ``grace`` may be: nothing to thirty days
GRACE = Duration(0, 30 * 86400)
#: a name: letters, digits, ``.``, ``_`` and ``-`` (it goes into URLs and SMS)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

PingStatus = Literal["created", "alive", "recovered"]


def check_name(name: object, label: str = "name") -> str:
    """A heartbeat's name, or a ValueError naming ``label`` and the rule."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) else repr(name[:40])
        raise ValueError(f"{label}={shown}: {NAME_RULE}")
    return name


def default_grace(every: float) -> float:
    """A tenth of the period, at most an hour: a daily job may run an hour late."""
    return min(3600.0, every / 10)


@dataclass(frozen=True, slots=True)
class PingResult:
    """What a ping did: ``created`` (a new heartbeat), ``alive`` or ``recovered`` (it had
    paged ``[MISSED]``: ``[RECOVERED]`` is on its way, ``csms_ids``)."""

    status: PingStatus
    heartbeat: Heartbeat
    csms_ids: list[str] = field(default_factory=list)


def ping(
    tx: Tx,
    name: str,
    *,
    every: float | None,
    grace: float | None,
    groups: tuple[str, ...] | None,
    default_groups: tuple[str, ...],
    numbers_of: Callable[[tuple[str, ...]], tuple[str, ...]],
    kind: str,
    policy: Policy,
    ids: IdBook,
    report: Report,
) -> PingResult:
    """Record a ping of ``name``; a heartbeat that had paged ``[MISSED]`` pages ``[RECOVERED]``.

    ``every``, ``grace``: None keeps what the heartbeat has (a new one needs ``every``;
    its grace defaults to :func:`default_grace`). ``groups``: None keeps the heartbeat's
    (a new one gets ``default_groups``, what the routes give a heartbeat); their phones
    are looked up again (``numbers_of``), so a changed group is followed. A ValueError
    names what is missing.
    """
    now = tx.now
    record = tx.heartbeats.get(name)
    if record is None and every is None:
        raise ValueError(f"every: required for a new heartbeat ({name!r} has never pinged)")
    chosen = groups if groups is not None else record.groups if record is not None else default_groups
    numbers = numbers_of(chosen) or (record.numbers if record is not None else ())
    if not numbers:
        raise ValueError(
            f"groups: {name!r} would page nobody: name its groups (--to), or add a route for "
            "source 'heartbeat'"
        )
    if record is None:
        assert every is not None
        grace_s = default_grace(every) if grace is None else grace
        beat = Heartbeat(name, every, grace_s, now, now + every + grace_s, 0.0, kind, chosen, numbers, now)
        tx.heartbeats.put(name, beat)
        return PingResult("created", beat)
    every_s = record.every if every is None else every
    if grace is None:  # kept, unless the period changed: then a tenth of the new one
        grace_s = record.grace if every_s == record.every else default_grace(every_s)
    else:
        grace_s = grace
    beat = Heartbeat(
        name,
        every_s,
        grace_s,
        now,
        now + every_s + grace_s,
        0.0,
        kind or record.kind,
        chosen,
        numbers,
        record.created_at,
    )
    tx.heartbeats.put(name, beat)
    if not record.missed_at:
        return PingResult("alive", beat)
    # Those told it was missing are told it is back, and those it pages from now on.
    phones = tuple(dict.fromkeys((*record.numbers, *beat.numbers)))
    text = format_recovered(
        name, beat.kind, record.last_ping, now, record.every, max_segments=policy.max_segments
    )
    result = AlertResult()
    deliver(tx, text, phones, policy, ids, report, ("recovered", name, record.last_ping), result)
    report.heartbeats_recovered += 1
    return PingResult("recovered", beat, result.csms_ids)


def forget(tx: Tx, name: str) -> bool:
    """Delete a heartbeat (a job retired): its silence pages nothing any more. Whether it existed."""
    if tx.heartbeats.get(name) is None:
        return False
    tx.heartbeats.delete(name)
    return True


def listed(tx: Tx, limit: int = 10_000) -> list[Heartbeat]:
    """Every heartbeat (up to ``limit``), by name."""
    names = tx.earliest("heartbeats", limit)
    tx.heartbeats.load(names)
    found = [beat for name in names if (beat := tx.heartbeats.get(name)) is not None]
    return sorted(found, key=lambda beat: beat.name)


def sweep_heartbeats(tx: Tx, policy: Policy, ids: IdBook, report: Report, limit: int) -> None:
    """Each heartbeat past its deadline pages ``[MISSED]`` once (the record says it did)."""
    names = tx.due("heartbeats", limit)
    if not names:
        return
    tx.heartbeats.load(names)
    for name in names:
        beat = tx.heartbeats.get(name)
        if beat is None or beat.due_at > tx.now:
            continue
        tx.heartbeats.put(
            name, replace(beat, missed_at=beat.missed_at or tx.now, due_at=tx.now + MISSED_RECHECK)
        )
        if beat.missed_at:  # paged already: only the index moves on
            continue
        text = format_missed(
            name, beat.kind, beat.last_ping, beat.every, tx.now, max_segments=policy.max_segments
        )
        deliver(tx, text, beat.numbers, policy, ids, report, ("missed", name, beat.last_ping))
        report.heartbeats_missed += 1


def describe_heartbeat(beat: Heartbeat) -> dict[str, Any]:
    """A heartbeat as the relay and ``heartbeat list --json`` show it."""
    return {
        "name": beat.name,
        "kind": beat.kind or "job",
        "every": beat.every,
        "grace": beat.grace,
        "last_ping": beat.last_ping,
        "deadline": beat.last_ping + beat.every + beat.grace,
        "missed": bool(beat.missed_at),
        "missed_at": beat.missed_at or None,
        "groups": list(beat.groups),
    }
