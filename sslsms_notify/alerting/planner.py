"""Coalesce pending SMS into as few gateway requests as the spec allows.

- the same text for several numbers -> bulk (<= 100 numbers a request)
- different texts -> dynamic (<= 100 SMS a request)
- one SMS -> single
- SMS already bound to a bulk whose outcome was unknown -> that same bulk again,
  with the same batch_csms_id, so the gateway's duplicate check protects it
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


def plan_batches(items: Sequence[OutboxItem], new_batch_id: Callable[[], str]) -> list[Batch]:
    batches: list[Batch] = []
    bound: dict[str, list[OutboxItem]] = {}
    by_text: dict[str, list[OutboxItem]] = {}
    for item in items:
        if item.batch_id:
            bound.setdefault(item.batch_id, []).append(item)
        else:
            by_text.setdefault(item.text, []).append(item)

    for batch_id, members in bound.items():
        batches.append(Batch("bulk", members, batch_id))

    loose: list[OutboxItem] = []
    for members in by_text.values():
        seen: set[str] = set()
        distinct: list[OutboxItem] = []
        for item in members:
            # A number twice in one bulk would be answered DUPLICATE: send the repeat apart.
            (loose if item.msisdn in seen else distinct).append(item)
            seen.add(item.msisdn)
        if len(distinct) < 2:
            loose.extend(distinct)
            continue
        for chunk in chunked(distinct, MAX_RECIPIENTS_PER_REQUEST):
            if len(chunk) == 1:
                loose.extend(chunk)
                continue
            batch_id = new_batch_id()
            batches.append(Batch("bulk", [i.evolve(batch_id=batch_id) for i in chunk], batch_id))

    for chunk in chunked(loose, MAX_RECIPIENTS_PER_REQUEST):
        batches.append(Batch("single" if len(chunk) == 1 else "dynamic", chunk))
    return batches
