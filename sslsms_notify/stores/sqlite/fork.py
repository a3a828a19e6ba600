"""fork() and SQLite: every state file of the process is made safe to fork, and fresh in the child.

A SQLite connection must not cross a fork (SQLite keeps per-process lock bookkeeping; a
child using or even closing an inherited connection can make the parent checkpoint and
delete the WAL under it), and no thread may be inside SQLite when the process forks (a
mutex held by a thread the child does not have never comes free). So just before
``fork()`` each registered file takes its own lock, waiting out a transaction under way,
and closes its connection; parent and child each open a new one on first use.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from typing import Protocol


class ForkAware(Protocol):
    """What the fork hooks call on each registered object, in the forking thread."""

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork(self) -> None: ...


#: every registered object of this process, for the fork hooks
_registered: dict[int, weakref.ReferenceType[ForkAware]] = {}
#: connections inherited through fork(), kept unused so that nothing closes them in the child
_inherited: list[sqlite3.Connection] = []


def register(obj: ForkAware) -> None:
    """Call ``obj``'s hooks around every fork() of this process, as long as it lives."""
    key = id(obj)

    def forget(ref: weakref.ReferenceType[ForkAware]) -> None:
        if _registered.get(key) is ref:
            del _registered[key]

    _registered[key] = weakref.ref(obj, forget)


def keep_inherited(db: sqlite3.Connection) -> None:
    """Keep a connection the parent made, unused, for good: SQLite's close could delete the parent's WAL."""
    _inherited.append(db)


def _all() -> list[ForkAware]:
    # dict.copy() runs no Python code: safe while other threads register
    return [obj for ref in _registered.copy().values() if (obj := ref()) is not None]


def _before_fork() -> None:
    for obj in _all():
        obj.before_fork()


def _after_fork_in_parent() -> None:
    for obj in _all():
        obj.after_fork_in_parent()


def _after_fork_in_child() -> None:
    for obj in _all():
        obj.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
