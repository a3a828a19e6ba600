"""Get the GIL back quickly while the pipeline has work in hand.

Every SQLite statement and every socket operation releases the GIL, and getting it
back from CPU-bound application threads costs the waiting thread a switch interval
(5 ms by default) each time, often several when many threads compete. A round that
stores alerts, a sweep that sends summaries, or a request to the gateway makes dozens
of such calls: with 8 busy threads a summary due at T went out seconds late.

So while a pipeline thread has work in hand, the interpreter's switch interval is
lowered to :data:`URGENT_INTERVAL`, and set back as soon as no pipeline thread has
work (unless someone else changed it meanwhile). An application that never runs
CPU-bound threads sees no difference; one that does pays a few more GIL hand-offs for
the few milliseconds the pipeline works. Set ``URGENT_INTERVAL = None`` to opt out.
Measured by ``python -m benchmarks busy_timers``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: the switch interval while the pipeline works, in seconds (None: leave it alone)
URGENT_INTERVAL: float | None = 0.0005

_lock = threading.Lock()
_active = 0
_saved: float | None = None


@contextmanager
def urgent() -> Iterator[None]:
    """Lower the switch interval for the duration of the block (nested and shared safely)."""
    global _active, _saved
    interval = URGENT_INTERVAL
    if interval is None:
        yield
        return
    with _lock:
        if _active == 0:
            current = sys.getswitchinterval()
            if current > interval * 1.01:
                _saved = current
                sys.setswitchinterval(interval)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                if abs(sys.getswitchinterval() - interval) < 1e-6:  # still ours to restore
                    sys.setswitchinterval(_saved)
                _saved = None


def _after_fork_in_child() -> None:
    # The threads that had work are gone in the child: give the interpreter its interval back.
    global _lock, _active, _saved
    _lock = threading.Lock()
    _active = 0
    if _saved is not None:
        sys.setswitchinterval(_saved)
        _saved = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
