"""In-memory store: fast, for tests and for pipelines that need no durability."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import ClosedWindow, DedupHit, OutboxCounts, OutboxItem, OutboxState


@dataclass(slots=True)
class _Window:
    end: float
    suppressed: int
    last_at: float
    last_text: str


class MemoryStore:
    durable = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._windows: dict[str, _Window] = {}
        self._tat: dict[str, float] = {}
        self._digests: dict[str, list[str]] = {}
        self._outbox: dict[str, OutboxItem] = {}

    def now(self) -> float:
        return self._clock()

    def __repr__(self) -> str:
        return "MemoryStore()"

    # -- dedup ------------------------------------------------------------
    def dedup_hit(self, key: str, window: float, text: str, count: int = 1) -> DedupHit:
        now = self._clock()
        with self._lock:
            current = self._windows.get(key)
            if current is None or (current.end <= now and current.suppressed == 0):
                self._windows[key] = _Window(now + window, count - 1, now, text)
                return DedupHit(first=True, suppressed=count - 1)
            current.suppressed += count
            current.last_at, current.last_text = now, text
            return DedupHit(first=False, suppressed=current.suppressed)

    def dedup_close(self, repeat_interval: float, limit: int = 500) -> list[ClosedWindow]:
        now = self._clock()
        closed: list[ClosedWindow] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if window.end > now:
                    continue
                if window.suppressed == 0:
                    del self._windows[key]
                    continue
                if len(closed) >= limit:
                    break
                closed.append(ClosedWindow(key, window.suppressed, window.last_at, window.last_text))
                self._windows[key] = _Window(now + repeat_interval, 0, now, window.last_text)
        return closed

    def dedup_close_all(self) -> list[ClosedWindow]:
        with self._lock:
            closed = [
                ClosedWindow(k, w.suppressed, w.last_at, w.last_text)
                for k, w in self._windows.items()
                if w.suppressed
            ]
            self._windows.clear()
        return closed

    # -- rate limits --------------------------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        now = self._clock()
        interval = 1.0 / rate
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            allowed_at = tat + interval - burst * interval
            wait = max(0.0, allowed_at - now)
            if wait == 0.0 or reserve:
                self._tat[key] = tat + interval
            return wait

    # -- digests --------------------------------------------------------------
    def digest_add(self, msisdn: str, text: str) -> int:
        with self._lock:
            held = self._digests.setdefault(msisdn, [])
            held.append(text)
            return len(held)

    def digest_recipients(self) -> list[str]:
        with self._lock:
            return [m for m, held in self._digests.items() if held]

    def digest_take(self, msisdn: str) -> list[str]:
        with self._lock:
            return self._digests.pop(msisdn, [])

    # -- outbox ---------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        with self._lock:
            for item in items:
                self._outbox[item.csms_id] = item

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        now = self._clock()
        claimed: list[OutboxItem] = []
        with self._lock:
            for key, item in self._outbox.items():
                if len(claimed) >= limit:
                    break
                due = item.state in (OutboxState.PENDING, OutboxState.INFLIGHT)
                if due and item.next_attempt_at <= now:
                    leased = item.evolve(state=OutboxState.INFLIGHT, next_attempt_at=now + lease)
                    self._outbox[key] = leased
                    claimed.append(leased)
        return claimed

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        with self._lock:
            for item in items:
                if item.state is OutboxState.SENT:
                    self._outbox.pop(item.csms_id, None)  # nothing left to do with it
                else:
                    self._outbox[item.csms_id] = item

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        with self._lock:
            items = [i for i in self._outbox.values() if state is None or i.state is state]
        return sorted(items, key=lambda i: i.created_at)[:limit]

    def outbox_counts(self) -> OutboxCounts:
        counts = OutboxCounts()
        with self._lock:
            for item in self._outbox.values():
                setattr(counts, item.state.value, getattr(counts, item.state.value) + 1)
        return counts

    def outbox_open(self) -> int:
        counts = self.outbox_counts()
        return counts.pending + counts.inflight

    def outbox_next_due(self) -> float | None:
        with self._lock:
            due = [
                i.next_attempt_at
                for i in self._outbox.values()
                if i.state in (OutboxState.PENDING, OutboxState.INFLIGHT)
            ]
        return min(due, default=None)

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        now = self._clock()
        count = 0
        with self._lock:
            for key in csms_ids:
                item = self._outbox.get(key)
                if item is not None and item.state is OutboxState.DEAD:
                    self._outbox[key] = item.evolve(state=OutboxState.PENDING, next_attempt_at=now)
                    count += 1
        return count

    def outbox_purge(self, state: OutboxState) -> int:
        with self._lock:
            doomed = [k for k, i in self._outbox.items() if i.state is state]
            for key in doomed:
                del self._outbox[key]
        return len(doomed)

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        self._lock = threading.RLock()
