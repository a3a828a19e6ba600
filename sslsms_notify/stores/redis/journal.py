"""What this process would re-add should Redis lose its data (see :mod:`.recovery`).

The journal is what this process knows is pending in Redis: the SMS it wrote or
claimed there, in their latest shape, until it sees them settled (sent or dead). It is
bounded in size and age: past the dispatcher's ``max_age`` an SMS is a dead letter anyway.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ..base import OutboxItem, OutboxState


class Journal:
    """The SMS this process wrote to Redis or claimed there, and the store's counters.

    ``limit()``: entries kept (the oldest go first, counted as ``journal_dropped``);
    ``max_age()``: seconds an entry is kept. Both are read at each use. The counters
    share the journal's lock: whoever reads a loss reads what was done about it.
    """

    def __init__(self, *, limit: Callable[[], int], max_age: Callable[[], float]) -> None:
        self._limit = limit
        self._max_age = max_age
        self._entries: OrderedDict[str, tuple[float, OutboxItem]] = OrderedDict()
        self._lock = threading.Lock()
        self._counts = {"data_lost": 0, "readded": 0, "journal_dropped": 0, "rows_moved": 0}

    def put(self, items: Sequence[OutboxItem]) -> None:
        """Remember open SMS (their latest shape); forget settled ones (sent or dead)."""
        if not items:
            return
        now = time.monotonic()
        with self._lock:
            entries = self._entries
            for item in items:
                if item.state in (OutboxState.SENT, OutboxState.DEAD):
                    entries.pop(item.csms_id, None)
                    continue
                known = entries.get(item.csms_id)
                entries[item.csms_id] = (known[0] if known is not None else now, item)
            limit = self._limit()
            while len(entries) > limit:
                entries.popitem(last=False)
                self._counts["journal_dropped"] += 1

    def drop(self, csms_ids: Sequence[str]) -> None:
        """Forget SMS settled elsewhere, or kept somewhere else now (the spool)."""
        with self._lock:
            for csms_id in csms_ids:
                self._entries.pop(csms_id, None)

    def items(self, *, maybe_sent: bool = False) -> list[OutboxItem]:
        """What the journal holds, once entries older than ``max_age()`` are forgotten.

        ``maybe_sent``: mark them so in the journal too, at once (Redis lost them: they
        go back as "may have reached the gateway").
        """
        oldest = time.monotonic() - self._max_age()
        with self._lock:
            entries = self._entries
            while entries:
                csms_id, (born, _) = next(iter(entries.items()))
                if born >= oldest:
                    break
                del entries[csms_id]
            if maybe_sent:
                for csms_id, (born, item) in list(entries.items()):
                    entries[csms_id] = (born, item.evolve(maybe_sent=True))
            return [item for _, item in entries.values()]

    def count(self, **deltas: int) -> None:
        """Add to the counters (together, under the journal's lock)."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def counters(self) -> dict[str, int]:
        """The counters, and ``journal``: the SMS the journal holds now."""
        with self._lock:
            return {**self._counts, "journal": len(self._entries)}

    def after_fork(self) -> None:
        """In a forked child: the parent's SMS are its own (it re-adds them); the counters stay."""
        self._entries = OrderedDict()
        self._lock = threading.Lock()
