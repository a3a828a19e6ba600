"""Two copies of the pipeline's state made one: what a spool or a moved file held, merged in.

When Redis comes back after an outage, what the host's spool took meanwhile goes back
into Redis; when a SQLite state file was deleted or replaced under a running process,
what the old file held goes into the new one. Either way both sides may hold a row for
the same key, and the rules are the same: one alert's window, one phone's digest, one
group's buffer, one meter, one webhook lifecycle, one heartbeat, one escalation, what the
fallback channel was told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .base import Digest, GroupBuffer, Lease, Lifecycle, Window
from .records import Escalation, EscalationKey, Handoff, Heartbeat, Hold, Notice, Silence

#: texts a digest keeps besides its count (the pipeline's bound: here, so that the stores
#: merge by it without importing the pipeline; ``alerting.decisions`` has the same)
DIGEST_KEEP = 5
#: texts a group buffer keeps besides its count
GROUP_KEEP = 20
#: texts a hold (a silence's, a group's quiet hours') keeps: the first of its first kinds
HOLD_KEEP = 10
#: distinct alerts a hold tells apart (past it, "500+ kinds"); webhook notifications it remembers
KINDS_KEEP = 500


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def merge_window(shared: Window | None, spooled: Window, now: float) -> Window | None:
    """A dedup window opened in the spool, merged into the one Redis has (None: nothing to write).

    Both sides paged for the alert, so the merged window is one alert's window: it
    starts at the earlier start, holds the repeats of both (summed), ends at the
    earlier end (no summary comes later than either side would have sent it), and
    keeps the latest text and every number either side would tell. A quiet window
    that has ended counts as none.
    """

    def live(window: Window | None) -> bool:
        return window is not None and not (window.end_at <= now and window.count == 0)

    if not live(spooled):
        return None
    if shared is None or not live(shared):
        return spooled
    latest = spooled if spooled.last_at >= shared.last_at else shared
    return Window(
        shared.key,
        min(shared.end_at, spooled.end_at),
        shared.count + spooled.count,
        min(shared.since_at, spooled.since_at),
        latest.last_at,
        latest.last_text,
        _union(shared.numbers, spooled.numbers),
    )


def merge_digest(shared: Digest | None, spooled: Digest, keep: int) -> Digest:
    """SMS a phone's cap held back on both sides: counted together, the earlier texts first."""
    if shared is None:
        return spooled
    first, second = (shared, spooled) if shared.since_at <= spooled.since_at else (spooled, shared)
    texts = (*first.texts, *second.texts)[: max(keep, len(shared.texts), len(spooled.texts))]
    return Digest(
        shared.msisdn,
        shared.count + spooled.count,
        first.since_at,
        texts,
        min(shared.ready_at, spooled.ready_at),
    )


def merge_group(shared: GroupBuffer | None, spooled: GroupBuffer, keep: int) -> GroupBuffer:
    """Alerts gathered for one group on both sides: one SMS, at the earlier deadline."""
    if shared is None:
        return spooled
    texts = (*shared.texts, *spooled.texts)[: max(keep, len(shared.texts), len(spooled.texts))]
    return GroupBuffer(
        shared.name,
        min(shared.deadline, spooled.deadline),
        shared.count + spooled.count,
        texts,
        _union(shared.numbers, spooled.numbers),
    )


def merge_rate(shared: float | None, spooled: float, now: float) -> float | None:
    """A GCRA meter: what each side has booked beyond now adds up (None: the spool's has run out)."""
    if spooled <= now:
        return None
    return now + max(0.0, (shared or now) - now) + (spooled - now)


def merge_lifecycle(shared: Lifecycle | None, spooled: Lifecycle) -> Lifecycle:
    """A webhook alert's lifecycle: paged on either side is paged, resolved on either is resolved."""
    if shared is None:
        return spooled
    return Lifecycle(
        shared.key,
        shared.resolved or spooled.resolved,
        min(shared.first_at, spooled.first_at),
        max(shared.paged_at, spooled.paged_at),
        max(shared.expires_at, spooled.expires_at),
    )


def merge_heartbeat(shared: Heartbeat | None, spooled: Heartbeat) -> Heartbeat:
    """A heartbeat pinged on either side: the side with the later ping is its state now.

    A ``[MISSED]`` the other side paged is kept (its ``missed_at``): a spool starts with no
    record of it, so its ping could not page the ``[RECOVERED]``; the next ping does, and a
    silence is never left without its all-clear (at worst it comes twice).
    """
    if shared is None:
        return spooled
    later, other = (spooled, shared) if spooled.last_ping > shared.last_ping else (shared, spooled)
    if other.missed_at and not later.missed_at:
        return replace(later, missed_at=other.missed_at)
    return later


def merge_escalation(shared: Escalation | None, spooled: Escalation) -> Escalation:
    """One alert's escalation: closed (acknowledged, resolved, escalated) on either side is closed."""
    if shared is None:
        return spooled
    if shared.state != "open":
        return shared
    return spooled if spooled.state != "open" else shared


def merge_escalation_key(shared: EscalationKey | None, spooled: EscalationKey) -> EscalationKey:
    """An alert's ack code: the one Redis has stays (its SMS went out with it)."""
    return spooled if shared is None else shared


def merge_notice(shared: Notice | None, spooled: Notice) -> Notice:
    """What the fallback channel was told: the later state, with what either side still has to tell."""
    if shared is None:
        return spooled
    later = spooled if spooled.since > shared.since else shared
    queue = tuple(dict.fromkeys((*shared.queue, *spooled.queue)))
    kinds = tuple(dict.fromkeys((*shared.dead_kinds, *spooled.dead_kinds)))
    return Notice(
        shared.key,
        later.state,
        later.since,
        later.detail,
        kinds,
        queue,
        shared.owner,
        shared.lease_until,
        max(shared.told, spooled.told),
        max(shared.at, spooled.at),
    )


def merge_handoff(shared: Handoff | None, spooled: Handoff) -> Handoff:
    """An SMS handed to the second account on either side stays with it."""
    return spooled if shared is None else shared


def merge_silence(shared: Silence | None, other: Silence) -> Silence:
    """One silence on both sides: the earlier end (an expiry on either side counts), every group."""
    if shared is None:
        return other
    ending = shared if shared.ends_at <= other.ends_at else other
    return Silence(
        shared.key,
        ending.matchers,
        ending.comment,
        min(shared.created_at, other.created_at),
        ending.ends_at,
        _union(shared.groups, other.groups),
    )


def merge_hold(shared: Hold | None, other: Hold, keep: int = HOLD_KEEP) -> Hold:
    """Alerts one hold held on both sides: counted together, each kind once, at the earlier end."""
    if shared is None:
        return other
    kinds = _union(shared.kinds, other.kinds)
    texts = dict(zip(shared.kinds, shared.texts, strict=False))
    for kind, text in zip(other.kinds, other.texts, strict=False):
        texts.setdefault(kind, text)
    return Hold(
        shared.key,
        shared.kind,
        shared.label,
        min(shared.ends_at, other.ends_at),
        shared.count + other.count,
        min(shared.since_at, other.since_at),
        kinds[:KINDS_KEEP],
        tuple(texts[k] for k in kinds[:keep] if k in texts),
        _union(shared.events, other.events)[:KINDS_KEEP],
        _union(shared.numbers, other.numbers),
        max(shared.severity, other.severity),
        shared.kinds_over or other.kinds_over or len(kinds) > KINDS_KEEP,
    )


#: record table -> how a row both sides hold is merged (``merge(shared, spooled)``)
def merge_lease(shared: Lease | None, spooled: Lease) -> Lease:
    """A lease taken in a spool while Redis was away: the one that runs longer holds it
    (two hosts' spools may each have granted one; one holder is left, the other stands again)."""
    if shared is None or spooled.expires_at > shared.expires_at:
        return spooled
    return shared


MERGE_RECORD: dict[str, Callable[[Any, Any], Any]] = {
    "lifecycles": merge_lifecycle,
    "leases": merge_lease,
    "heartbeats": merge_heartbeat,
    "escalations": merge_escalation,
    "escalation_keys": merge_escalation_key,
    "notices": merge_notice,
    "handoffs": merge_handoff,
    "silences": merge_silence,
    "holds": merge_hold,
}
