"""Holding alerts back on purpose, and telling afterwards what was held.

Two holds, both decided at intake inside the round's store transaction, before dedup:

- a **silence** (:mod:`.silences`): an alert for a group that every matcher of an
  active silence matches sends nothing for that group;
- a group's **quiet hours** (:mod:`sslsms_notify.quiet`): below the group's
  ``quiet_min_severity``, an alert for the group waits while the group is quiet. The
  same alert still pages at once every group that is awake.

What a hold takes is tallied per group in a :class:`~sslsms_notify.stores.records.Hold`
record (how many alerts, which distinct ones, their first texts), and when the hold
ends the group gets one SMS (:func:`hold_text`)::

    [SILENCE ENDED] db migration: 40 alerts held (2 kinds): [CRIT] db1/app.db: ... | [ERROR] ...
    [QUIET HOURS 22:00-08:00] 3 alerts held: [WARN] web1: ... | [ERROR] ... | +1 more

The end is a sweep (:func:`ended`, called by :func:`~.decisions.sweep_holds`) that
deletes the record in the transaction that queues its SMS: once across processes. A
silence that ends while the group is quiet and held nothing that would page it now
joins the group's quiet-hours SMS instead of waking it.

A webhook alert's notifications count once each (its firing, its resolve): an
Alertmanager re-send of one is no new alert. Held alerts leave no dedup window nor
lifecycle behind: an alert still firing when its silence ends pages when it is next
sent, as Alertmanager notifies once its own silence expires.

This module reads no decision of :mod:`.decisions` (which calls it): hits are anything
with the fields of :class:`HitLike`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from ..quiet import QuietHours
from ..stores.base import Tx
from ..stores.merge import HOLD_KEEP, KINDS_KEEP
from ..stores.records import Hold, Silence
from .formatting import format_held
from .silences import SEP, Matcher, active, compiled, silence_hold_key, silence_label

#: the longest silence comment (or matchers) an end SMS repeats
LABEL_SHOWN = 60
#: the kind of a silence's own count (``silence list``: each alert once, whatever its groups)
TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Facts:
    """What matchers read of an alert, made once per alert of a round."""

    #: the alert's text, as rendered, before the SMS adds ``[TAG] origin:``
    text: str
    source: str
    #: the caller's key ("" without one)
    key: str
    #: the severity's name (``critical``) and level (50)
    severity: str
    level: int
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    #: which alert it is, for "K kinds" (its fingerprint, or a webhook alert's identity)
    kind: str
    #: a webhook notification (lifecycle and status), counted once while held; None otherwise
    event: str | None = None
    resolved: bool = False

    def values(self, name: str, group: str) -> tuple[str, ...]:
        """The values a matcher on ``name`` reads, for the alert's hit for ``group``."""
        if name == "text":
            return (self.text,)
        if name == "source":
            return (self.source,)
        if name == "key":
            return (self.key,)
        if name == "severity":
            return (self.severity,)
        if name == "group":
            return (group,)
        if name == "tag":
            return self.tags or ("",)
        return (self.labels.get(name, ""),)


def short_id(*parts: str) -> str:
    """A 12-character identity of ``parts`` (kinds and events are kept in records, bounded)."""
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=6).hexdigest()


class HitLike(Protocol):
    """The fields of :class:`~.decisions.Hit` a hold reads."""

    group: str
    numbers: tuple[str, ...]
    count: int
    first_text: str
    alert: int
    facts: Facts | None


H = TypeVar("H", bound=HitLike)


def quiet_hold_key(group: str, ends_at: float) -> str:
    """The key of what one quiet period held for ``group``."""
    return f"q{SEP}{group}{SEP}{int(ends_at)}"


def hold(tx: Tx, hits: Sequence[H], quiet: Mapping[str, QuietHours]) -> tuple[list[H], dict[int, list[int]]]:
    """The hits that go on (in order), and per held alert ``[silenced, held by quiet hours]``
    occurrences. What is held is tallied in ``tx``."""
    silences = [(s, m) for s in active(tx) if (m := compiled(s.matchers))]
    if not silences and not (quiet and any(h.group in quiet for h in hits)):
        return list(hits), {}
    kept: list[H] = []
    held: dict[int, list[int]] = {}
    plans: list[tuple[H, str, str, str, float]] = []
    totals: set[tuple[str, int]] = set()
    for hit in hits:
        facts = hit.facts
        if facts is None:
            kept.append(hit)
            continue
        silence = _silencing(silences, facts, hit.group)
        if silence is not None:
            recorded = tx.silences.get(silence.key) or silence
            if hit.group not in recorded.groups:
                tx.silences.put(silence.key, replace(recorded, groups=(*recorded.groups, hit.group)))
            key = silence_hold_key(silence.key, hit.group)
            plans.append((hit, key, "silence", _cut(silence_label(silence)), silence.ends_at))
            if (silence.key, hit.alert) not in totals:  # the silence's own count: each alert once
                totals.add((silence.key, hit.alert))
                plans.append((hit, silence_hold_key(silence.key, ""), TOTAL, "", silence.ends_at))
            held.setdefault(hit.alert, [0, 0])[0] = hit.count
            continue
        rule = quiet.get(hit.group)
        period = rule.period_at(tx.now) if rule is not None and facts.level < rule.min_level else None
        if rule is not None and period is not None:
            plans.append((hit, quiet_hold_key(hit.group, period[1]), "quiet", rule.label, period[1]))
            held.setdefault(hit.alert, [0, 0])[1] = hit.count
            continue
        kept.append(hit)
    tx.holds.load(p[1] for p in plans)
    for hit, key, kind, label, ends_at in plans:
        facts = hit.facts
        assert facts is not None
        count = 1 if facts.event is not None else hit.count
        tally(tx, key, kind, label, ends_at, facts.kind, hit.first_text, count, hit.numbers, facts.level,
              event=facts.event, replace_text=facts.resolved)  # fmt: skip
    return kept, held


def _silencing(
    silences: list[tuple[Silence, tuple[Matcher, ...]]], facts: Facts, group: str
) -> Silence | None:
    """The active silence that holds this hit: of those matching, the one ending last."""
    found = None
    for silence, matchers in silences:
        if (found is None or silence.ends_at > found.ends_at) and all(
            m.test(facts.values(m.name, group)) for m in matchers
        ):
            found = silence
    return found


def tally(
    tx: Tx,
    key: str,
    kind: str,
    label: str,
    ends_at: float,
    what: str,
    text: str,
    count: int,
    numbers: tuple[str, ...],
    level: int,
    *,
    event: str | None = None,
    replace_text: bool = False,
) -> None:
    """Add ``count`` alerts of kind ``what`` (its SMS ``text``) to the hold ``key``.

    ``event``: a webhook notification already counted is not counted again.
    ``replace_text``: the kind's text becomes this one (a resolve tells more than its firing).
    """
    held = tx.holds.get(key) or Hold(key, kind, label, ends_at, 0, tx.now, (), (), (), (), 0)
    if event is not None and event in held.events:
        return
    kinds, texts, over = held.kinds, held.texts, held.kinds_over
    if what in kinds:
        at = kinds.index(what)
        if replace_text and at < len(texts):
            texts = (*texts[:at], text, *texts[at + 1 :])
    elif len(kinds) < KINDS_KEEP:
        kinds = (*kinds, what)
        if len(texts) < HOLD_KEEP:
            texts = (*texts, text)
    else:
        over = True
    events = held.events if event is None or len(held.events) >= KINDS_KEEP else (*held.events, event)
    tx.holds.put(
        key,
        replace(
            held,
            count=held.count + count,
            kinds=kinds,
            texts=texts,
            events=events,
            numbers=tuple(dict.fromkeys((*held.numbers, *numbers))),
            severity=max(held.severity, level),
            kinds_over=over,
        ),
    )


def ended(
    tx: Tx, quiet: Mapping[str, QuietHours], max_segments: int, limit: int, *, every: bool = False
) -> list[tuple[Hold, str]]:
    """Holds whose end has come, each with its SMS; deleted in ``tx`` (ended silences too).

    A hold that held nothing sends nothing. A silence's hold for a group that is quiet
    now, holding nothing that would page it now, joins the group's quiet-hours SMS.
    ``every``: every hold, ended or not, each with its own SMS.
    """
    due: list[tuple[Hold, str]] = []
    keys = tx.earliest("holds", limit) if every else tx.due("holds", limit)
    tx.holds.load(keys)
    for key in keys:
        held = tx.holds.get(key)
        if held is None or (held.ends_at > tx.now and not every):
            continue
        tx.holds.delete(key)
        if not held.count or held.kind == TOTAL:
            continue
        text = hold_text(held, max_segments)
        if held.kind == "silence" and not every and _quiet_now(tx, held, quiet, text):
            continue
        due.append((held, text))
    ending = tx.due("silences", limit)
    tx.silences.load(ending)
    for key in ending:
        silence = tx.silences.get(key)
        if silence is not None and silence.ends_at <= tx.now:
            tx.silences.delete(key)
    return due


def _quiet_now(tx: Tx, held: Hold, quiet: Mapping[str, QuietHours], text: str) -> bool:
    """Fold a silence's end SMS into the group's quiet-hours one, if the group is quiet for it now."""
    group = held.key.rsplit(SEP, 1)[1]
    rule = quiet.get(group)
    if rule is None or held.severity >= rule.min_level:
        return False
    period = rule.period_at(tx.now)
    if period is None:
        return False
    key = quiet_hold_key(group, period[1])
    tally(tx, key, "quiet", rule.label, period[1], short_id(held.key), text, held.count, held.numbers,
          held.severity)  # fmt: skip
    return True


def hold_text(held: Hold, max_segments: int) -> str:
    """The SMS that ends a hold: what it held, the first texts, within ``max_segments``."""
    alerts = f"{held.count} alert{'s' if held.count != 1 else ''} held"
    kinds = len(held.kinds)
    if held.kind == "quiet":
        head = f"[QUIET HOURS {held.label}] {alerts}: "
    else:
        shown = f"{kinds}+" if held.kinds_over else str(kinds)
        label = f" {held.label}:" if held.label else ""
        head = f"[SILENCE ENDED]{label} {alerts} ({shown} kind{'s' if kinds != 1 else ''}): "
    return format_held(head, held.texts, kinds, max_segments=max_segments)


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_SHOWN else label[: LABEL_SHOWN - 3].rstrip() + "..."
