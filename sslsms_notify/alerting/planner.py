"""Coalesce pending SMS into as few gateway requests as the spec allows.

- the same text for several numbers -> bulk (<= 100 numbers a request)
- different texts -> dynamic (<= 100 SMS a request)
- one SMS -> single
- SMS already bound to a bulk whose outcome was unknown -> that same bulk again,
  with the same batch_csms_id, so the gateway's duplicate check protects it

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
from dataclasses import dataclass
from typing import Literal

from ..gateway.models import MAX_RECIPIENTS_PER_REQUEST, chunked
from ..stores.base import OutboxItem

BatchKind = Literal["single", "bulk", "dynamic"]


@dataclass(slots=True)
class Batch:
    kind: BatchKind
    items: list[OutboxItem]
    batch_id: str | None = None


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


def plan_batches(items: Sequence[OutboxItem], new_batch_id: Callable[[], str]) -> list[Batch]:
    batches: list[Batch] = []
    bound: dict[str, list[OutboxItem]] = {}
    by_text: dict[str, list[OutboxItem]] = {}
    for item in items:
        if item.batch_id:
            bound.setdefault(item.batch_id, []).append(item)
        else:
            by_text.setdefault(item.text, []).append(item)

    # A bound bulk is resent exactly as it was first sent: it was planned with
    # distinct numbers, and its id must keep covering the same SMS.
    for batch_id, members in bound.items():
        batches.append(Batch("bulk", members, batch_id))

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
            batches.append(Batch("bulk", [i.evolve(batch_id=batch_id) for i in chunk], batch_id))

    for layer in layers(loose):
        for chunk in chunked(layer, MAX_RECIPIENTS_PER_REQUEST):
            batches.append(Batch("single" if len(chunk) == 1 else "dynamic", chunk))
    return batches
