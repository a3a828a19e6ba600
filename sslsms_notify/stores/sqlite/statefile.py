"""One state file as this process uses it: a connection opened once per process, kept safe across
fork(), and moved to the file at the path when the one open was deleted or replaced.

Processes come and go around the file:

- **Several open a new file at once.** The switch to WAL answers "database is
  locked" at once, without the busy handler, to all but one of them: it is
  retried, like the schema's transaction, until the busy timeout.
- **fork().** Just before ``fork()`` the file takes its own lock, waiting out a
  transaction under way, and closes its connection; parent and child each open a
  new one on first use (see :mod:`.fork`).
- **The file is deleted or replaced under a running process.** Before each use
  outside a transaction, the path's inode is compared with the open file's. If it
  changed, the connection moves to the file now at the path (creating it if need
  be) and takes along what the old file still holds: the first process to notice
  moves everything, emptying the old file as it goes; the others, still on the old
  file, join the new one and move only what they wrote in between (see :mod:`.carry`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..._log import get_logger
from ..base import StoreUnavailableError
from . import fork
from .carry import empty, move_rows
from .files import FileId, directory_lock, file_id, retry_busy, sidecars
from .schema import migrate

#: how long a fork waits for a transaction under way on the store before forking anyway
FORK_WAIT_EXTRA = 1.0
_log = get_logger("sslsms_notify.stores.sqlite")
#: the file's identity, then its WAL's and shared memory's, as opened
Identity = tuple[FileId, FileId, FileId]


class StateFile:
    """The connection to one SQLite state file, for a store: opened, locked, reopened, moved.

    ``read()`` and ``write()`` give the connection under the file's lock (``write()`` in
    a ``BEGIN IMMEDIATE`` transaction); ``cur`` is the connection of the transaction
    under way. ``carry_retry()`` says how long after a failed move to a new file the
    next is tried (read at each failure).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float],
        busy_timeout: float,
        carry_retry: Callable[[], float],
    ) -> None:
        self.path = path
        #: where the file is, whatever the process's working directory later becomes
        self.where = path.absolute()
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._carry_retry = carry_retry
        #: times this process moved to a new file at the path (the old one was deleted or replaced)
        self.reopened = 0
        #: the file at the path is not the one open, and moving to it failed (writes go to the old one)
        self.stale = False
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._file: Identity = (None, None, None)
        self._pid = os.getpid()
        self._closed = False
        self._fork_held = False
        self._carry_due = 0.0
        self._carry_logged = float("-inf")
        fork.register(self)  # first: a fork from another thread meanwhile waits for the lock below
        with self._lock:
            self._db, self._file = self._connect()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the connection -----------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, outside a transaction (see :meth:`_conn`)."""
        with self._lock:
            yield self._conn()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The connection in a ``BEGIN IMMEDIATE`` transaction, committed at the end."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")  # may fail too (a full disk, an I/O error)
            except BaseException:
                # SQLite may have rolled back by itself (an I/O error does): the original
                # error is the one to raise, and the connection must leave the transaction.
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    @property
    def cur(self) -> sqlite3.Connection:
        """The connection of the transaction under way (inside :meth:`write` or :meth:`read`)."""
        db = self._db
        if db is None:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: closed")
        return db

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        """The connection, for a caller holding ``self._lock``.

        Opened on first use after a fork; outside a transaction, moved to a new file
        when the one at the path is not the one open (deleted or replaced).
        """
        db = self._db
        if db is None or self._pid != os.getpid():
            if self._closed:
                raise StoreUnavailableError(f"store sqlite:///{self.path}: closed")
            if self._pid != os.getpid():  # forked without our fork hooks (a fork made in C)
                self._drop_inherited()
            db, self._file = self._connect()
            self._db, self._pid = db, os.getpid()
            return db
        if not db.in_transaction:
            if self._moved():
                return self._carry_over(db)
            self.stale = False  # the file at the path is ours (again)
        return db

    def _moved(self) -> bool:
        """Whether the file at the path is not the one open (a stat: about 3 µs)."""
        try:
            return file_id(self.where) != self._file[0]
        except OSError:
            return False  # cannot tell (a directory we may no longer read): carry on

    def _connect(self, stale: Identity | None = None) -> tuple[sqlite3.Connection, Identity]:
        """A new connection to the file at the path, in WAL mode, its schema current.

        Creating the file (or moving to a new one: ``stale`` is the old file's identity)
        happens under a directory lock, so that WAL and shared-memory files left at
        the path by a deleted file are removed, and those of a file another process
        has just made are not.
        """
        deadline = time.monotonic() + self._busy_timeout
        try:
            self.where.parent.mkdir(parents=True, exist_ok=True)
            if stale is None and self.where.exists():
                return self._connect_now(deadline)
            with directory_lock(self.where.parent, deadline) as locked:
                if locked:
                    here = self.where.exists()
                    for sidecar, old in zip(
                        sidecars(self.where), (stale or (None, None, None))[1:], strict=True
                    ):
                        found = file_id(sidecar)
                        if found is not None and (not here or found == old):
                            sidecar.unlink(missing_ok=True)
                return self._connect_now(deadline)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: cannot open: {exc}") from None

    def _connect_now(self, deadline: float) -> tuple[sqlite3.Connection, Identity]:
        db = sqlite3.connect(
            self.where, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            retry_busy(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone(), deadline)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of us
            retry_busy(lambda: migrate(db, self._clock), deadline)
        except BaseException:
            db.close()
            raise
        wal, shm = sidecars(self.where)
        return db, (file_id(self.where), file_id(wal), file_id(shm))

    # -- fork (called by the hooks of :mod:`.fork`) ---------------------------------------
    def before_fork(self) -> None:
        """In the forking thread, just before fork(): no thread of ours inside SQLite, no connection open.

        The lock is held until fork() returns (released in the parent, replaced in the
        child). A transaction under way gets its busy timeout to finish; past that the
        fork goes ahead with the connection open (the child leaves it alone).
        """
        self._fork_held = self._lock.acquire(timeout=self._busy_timeout + FORK_WAIT_EXTRA)
        db = self._db
        if not self._fork_held or db is None or self._pid != os.getpid() or db.in_transaction:
            return
        if self._moved():
            return  # moved: the parent moves what it holds to the new file on its next use
        with contextlib.suppress(sqlite3.Error):
            db.close()
        self._db = None  # the parent opens it again on first use

    def after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._fork_held = False
            self._lock.release()

    def after_fork(self) -> None:
        """In a forked child: a new lock; the connection is opened on first use."""
        self._drop_inherited()
        self._lock = threading.RLock()
        self._fork_held = False

    def _drop_inherited(self) -> None:
        # An inherited connection is never used nor closed (SQLite's close could
        # checkpoint and delete the parent's WAL): it is kept, unused, for good.
        if self._db is not None and self._pid != os.getpid():
            fork.keep_inherited(self._db)
            self._db = None
        self._pid = os.getpid()

    # -- the file deleted or replaced -----------------------------------------------
    def _carry_over(self, old: sqlite3.Connection) -> sqlite3.Connection:
        """Move to the file now at the path, taking along what the old one holds.

        Under the old file's write lock, so that nobody writes it meanwhile: what it
        holds goes into the new file (merged with what is there already), then the
        old file is emptied. Another process still on the old file later finds only
        what it wrote itself in between, moves that, and joins the same new file.
        """
        if time.monotonic() < self._carry_due:
            return old
        reason = "deleted" if not self.where.exists() else "replaced"
        try:
            retry_busy(lambda: old.execute("BEGIN IMMEDIATE"), time.monotonic() + self._busy_timeout)
        except sqlite3.Error as exc:
            return self._carry_failed(old, exc)
        try:
            new, file = self._connect(stale=self._file)
        except StoreUnavailableError as exc:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            return self._carry_failed(old, exc)
        try:
            new.execute("BEGIN IMMEDIATE")
            try:
                moved = move_rows(old, new, self._clock())
                new.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    new.execute("ROLLBACK")
                raise
            empty(old)
            old.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            new.close()
            if not isinstance(exc, sqlite3.Error | ValueError):
                raise
            return self._carry_failed(old, exc)
        with contextlib.suppress(sqlite3.Error):
            old.close()
        self._db, self._file = new, file
        self.stale = False
        self.reopened += 1
        _log.warning(
            f"state file {reason} while in use; reopened at its path, with what the old one held",
            path=str(self.where),
            **moved,
        )
        return new

    def _carry_failed(self, old: sqlite3.Connection, exc: BaseException) -> sqlite3.Connection:
        now = time.monotonic()
        retry = self._carry_retry()
        self.stale = True
        self._carry_due = now + retry
        if now < self._carry_logged + 60:  # tried again every few seconds, said once a minute
            return old
        self._carry_logged = now
        _log.error(
            "state file deleted or replaced while in use, and no new one could be opened at its path;"
            " still using the old one",
            path=str(self.where),
            retry_in=retry,
            error=f"{type(exc).__name__}: {exc}",
        )
        return old
