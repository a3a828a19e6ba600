"""The state file on disk: its URL, its identity, the "database is locked" SQLite answers at once,
and the directory lock that serializes creating (or moving to) a file among the host's processes."""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

if sys.platform != "win32":  # Windows: no fork, and a file in use cannot be deleted
    import fcntl

T = TypeVar("T")
#: (device, inode) of a file, or None when there is none at the path
FileId = tuple[int, int] | None


def path_from_url(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"store {url!r} must look like sqlite:///relative.db or sqlite:////abs.db")
    rest = url.removeprefix("sqlite:///")
    if not rest:
        raise ValueError("store sqlite:/// needs a file path")
    return Path(rest).expanduser()


def file_id(path: Path) -> FileId:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


def sidecars(path: Path) -> tuple[Path, Path]:
    """The WAL and shared-memory files SQLite keeps next to a database in WAL mode."""
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def retry_busy(step: Callable[[], T], deadline: float) -> T:
    """``step()``, again while SQLite answers "database is locked" without waiting, until ``deadline``.

    SQLite calls the busy handler for ordinary locks only: switching a new file to
    WAL, or a read racing another process's WAL set-up, fails at once instead.
    """
    delay = 0.002
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)


@contextmanager
def directory_lock(directory: Path, deadline: float) -> Iterator[bool]:
    """Exclusive among this host's processes: creating a state file, or moving to a new one.

    Yields whether the lock was taken by ``deadline`` (not on a platform without flock).
    """
    if sys.platform == "win32":  # pragma: no cover
        yield False
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a directory we may write but not read: no lock, as before
        yield False
        return
    try:
        taken = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
            except OSError:  # no flock here (some network file systems)
                break
        try:
            yield taken
        finally:
            if taken:  # explicitly: a forked child may hold a copy of the descriptor
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
