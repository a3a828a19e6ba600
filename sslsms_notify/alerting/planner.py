"""Coalesce pending SMS into as few gateway requests as the spec allows.

- the same text for several numbers -> bulk (<= 100 numbers a request)
- different texts -> dynamic (<= 100 SMS a request)
- one SMS -> single

**A request that may have reached the gateway is resent exactly as it was.**
Spec 3.1: 4023 "Duplicate CMS ID" is "CSMS ID is duplicate in the same day", and
a bulk request has one ``batch_csms_id`` for all its numbers (4.2.1). So after
``bulk[a,b]`` under id X timed out, ``bulk[a]`` under X that gets through
followed by ``bulk[b]`` under X answered 4023 would leave ``b`` undelivered
while 4023 says "done". Hence the rule: every bulk or dynamic request is
*bound* before it is sent (its members carry its id, kind and size); a bound
request is planned again only whole, with the same members under the same
ids. An SMS whose outcome is unknown but that is bound to nothing (a single) is
only ever sent alone, under its own csms_id. Members of a bound request that
arrive without the rest (should a store hand out a part) are held back, never
sent as a part.

**A number appears at most once per request.** The spec's per-SMS status
"Duplicate MSISDN" means "MSISDN is duplicate on the same request" (section
3.2): a gateway answers the second SMS to a number in one request with it, and
does not send it. So several SMS for one phone are laid out in layers: the
first SMS of every phone in the first requests, the second SMS of every phone
in the next, and so on. N texts for one phone plus texts for other phones take
N requests (or N chunks of 100), not more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..gateway.models import MAX_RECIPIENTS_PER_REQUEST, chunked
from ..stores.base import OutboxItem

BatchKind = Literal["single", "bulk", "dynamic"]


@dataclass(slots=True)
class Batch:
    """One request to make: its kind, its SMS (bound to it unless single) and the bulk's id."""

    kind: BatchKind
    items: list[OutboxItem]
    batch_id: str | None = None
    #: bound in this plan (its binding must be stored before the request goes out)
    new: bool = False
    #: the gateway account it goes to: "primary", or "secondary" (see :mod:`.failover`)
    account: str = "primary"

    @property
    def carried(self) -> bool:
        """Every SMS of it went out before in a request under the same ids.

        Only then does "Duplicate CMS ID" mean that an earlier request got through.
        """
        return all(i.maybe_sent for i in self.items)


@dataclass(slots=True)
class Plan:
    batches: list[Batch] = field(default_factory=list)
    #: members of bound requests claimed without the rest of their request: not sent
    incomplete: list[OutboxItem] = field(default_factory=list)


def layers(items: Sequence[OutboxItem]) -> list[list[OutboxItem]]:
    """Split items so that no layer holds a number twice (the k-th SMS of each number in layer k)."""
    out: list[list[OutboxItem]] = []
    depth: dict[str, int] = {}
    for item in items:
        level = depth.get(item.msisdn, 0)
        depth[item.msisdn] = level + 1
        if level == len(out):
            out.append([])
        out[level].append(item)
    return out


def _by_id(items: list[OutboxItem]) -> list[OutboxItem]:
    # One order for a request's members, the first time and on every resend.
    return sorted(items, key=lambda i: i.csms_id)


def plan_batches(items: Sequence[OutboxItem], new_batch_id: Callable[[], str]) -> Plan:
    plan = Plan()
    bound: dict[str, list[OutboxItem]] = {}
    by_text: dict[str, list[OutboxItem]] = {}
    for item in items:
        if item.batch_id:
            bound.setdefault(item.batch_id, []).append(item)
        elif item.maybe_sent:
            # Its outcome is unknown and its own csms_id is its only key: alone, as it went.
            plan.batches.append(Batch("single", [item]))
        else:
            by_text.setdefault(item.text, []).append(item)

    for batch_id, members in bound.items():
        size = members[0].batch_size
        if size and (len(members) != size or any(m.batch_size != size for m in members)):
            plan.incomplete.extend(members)
            continue
        kind = members[0].kind_of_binding or "bulk"
        plan.batches.append(Batch(kind, _by_id(members), batch_id if kind == "bulk" else None))

    loose: list[OutboxItem] = []
    for members in by_text.values():
        first, *repeats = layers(members)  # the same text twice to one phone: the repeat goes apart
        for rest in repeats:
            loose.extend(rest)
        if len(first) < 2:
            loose.extend(first)
            continue
        for chunk in chunked(first, MAX_RECIPIENTS_PER_REQUEST):
            if len(chunk) == 1:
                loose.extend(chunk)
                continue
            batch_id = new_batch_id()
            bulk = [i.bind(batch_id, "bulk", len(chunk)) for i in _by_id(chunk)]
            plan.batches.append(Batch("bulk", bulk, batch_id, new=True))

    for layer in layers(loose):
        for chunk in chunked(layer, MAX_RECIPIENTS_PER_REQUEST):
            if len(chunk) == 1:
                plan.batches.append(Batch("single", chunk))
                continue
            request_id = new_batch_id()  # ours alone: a dynamic request has no id at the gateway
            dynamic = [i.bind(request_id, "dynamic", len(chunk)) for i in _by_id(chunk)]
            plan.batches.append(Batch("dynamic", dynamic, new=True))
    return plan
