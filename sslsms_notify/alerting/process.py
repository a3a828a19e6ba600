"""A notifier's process: close at exit (``atexit``, and multiprocessing children); fork hooks.

- At interpreter exit every notifier that asked for it (``close_at_exit``) gets
  ``close(close_at_exit)``, newest first.
- A ``multiprocessing`` (or ``billiard``, Celery's prefork) child ends with
  ``os._exit()``, which runs no ``atexit`` hook; before that its
  ``util._exit_function()`` runs the ``Finalize`` callbacks that have an exit
  priority. A forked child starts by clearing them and then runs the after-fork
  callbacks: one of these registers ours again.
- In a forked child, before it runs anything else, each notifier resets its
  per-process state (plain Python state only: see :meth:`Notifier.after_fork_in_child`).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing.util
import os
import sys
import weakref
from typing import Any, Protocol


class Pipeline(Protocol):
    """What these hooks need of a notifier."""

    #: seconds close() gets at exit (None: not closed at exit)
    close_at_exit: float | None

    @property
    def closed(self) -> bool: ...

    def close(self, timeout: float | None = None) -> bool: ...

    def after_fork_in_child(self) -> None: ...


#: this process's notifiers, oldest first
_live: weakref.WeakValueDictionary[int, Pipeline] = weakref.WeakValueDictionary()
_births = itertools.count()
#: before multiprocessing's own finalizers (queues, pipes), so that our log lines still get out
EXIT_PRIORITY = 100


def register(notifier: Pipeline) -> None:
    """Look after this notifier at exit and at fork (weakly: a notifier dropped is forgotten)."""
    _live[next(_births)] = notifier
    _hook_billiard()


def _close_at_exit() -> None:
    """Each notifier that asked for it gets ``close(close_at_exit)``, newest first."""
    for notifier in reversed(list(_live.values())):
        if notifier.close_at_exit is not None and not notifier.closed:
            with contextlib.suppress(Exception):
                notifier.close(notifier.close_at_exit)


def _after_fork() -> None:
    for notifier in list(_live.values()):
        with contextlib.suppress(Exception):
            notifier.after_fork_in_child()


class _Anchor:
    """What the after-fork registry of multiprocessing keeps a weak reference to."""


_ANCHOR = _Anchor()
_hooked: set[str] = set()


def _hook_multiprocessing(util: Any) -> None:
    """Close notifiers when a ``multiprocessing`` (or ``billiard``) child ends."""
    if util.__name__ in _hooked:
        return
    _hooked.add(util.__name__)

    def register_finalizer(_anchor: object = None) -> None:
        util.Finalize(None, _close_at_exit, exitpriority=EXIT_PRIORITY)

    register_finalizer()
    util.register_after_fork(_ANCHOR, register_finalizer)


def _hook_billiard() -> None:
    # Celery's prefork pool runs on billiard, multiprocessing's fork, with its own registries.
    billiard = sys.modules.get("billiard.util")
    if billiard is not None:
        _hook_multiprocessing(billiard)


atexit.register(_close_at_exit)
_hook_multiprocessing(multiprocessing.util)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
