"""SQLite store: durable on one host, safe for several processes sharing the file.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention; ``~`` is expanded). WAL lets readers and the writer proceed
together; a transaction is ``BEGIN IMMEDIATE`` so two processes never both
see a window as new; a busy timeout waits out the other writer.

Row counts (windows; outbox by state) are kept by triggers in the same
transactions that change the rows, so ``stats()`` reads two numbers instead of
counting a million rows. Rows are therefore written with UPSERT, never
``INSERT OR REPLACE`` (whose implicit delete fires no trigger).

Processes come and go around the file:

- **Several open a new file at once.** The switch to WAL answers "database is
  locked" at once, without the busy handler, to all but one of them: it is
  retried, like the schema's transaction, until the busy timeout.
- **fork().** A SQLite connection must not cross a fork (SQLite keeps per-process
  lock bookkeeping; a child using or even closing an inherited connection can make
  the parent checkpoint and delete the WAL under it), and no thread may be inside
  SQLite when the process forks (a mutex held by a thread the child does not have
  never comes free). So just before ``fork()`` every store takes its own lock,
  waiting out a transaction under way, and closes its connection; parent and child
  each open a new one on first use.
- **The file is deleted or replaced under a running process.** Before each use
  outside a transaction, the path's inode is compared with the open file's. If it
  changed, the store opens the path anew (creating the file if need be) and moves
  what the old file still holds into it: the first process to notice moves
  everything, emptying the old file as it goes; the others, still on the old file,
  join the new one and move only what they wrote in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from .._log import get_logger
from .base import (
    RECORDS,
    Digest,
    GroupBuffer,
    IndexedTable,
    OutboxCounts,
    OutboxItem,
    OutboxState,
    StandaloneStore,
    StoreHealth,
    StoreUnavailableError,
    TableName,
    Tx,
    Window,
    record_fields,
    record_from,
    record_time,
)
from .merge import (
    DIGEST_KEEP,
    GROUP_KEEP,
    merge_digest,
    merge_group,
    merge_lifecycle,
    merge_rate,
    merge_window,
)

if sys.platform != "win32":  # Windows: no fork, and a file in use cannot be deleted
    import fcntl

T = TypeVar("T")
SCHEMA_VERSION = 3
#: how long a fork waits for a transaction under way on the store before forking anyway
FORK_WAIT_EXTRA = 1.0
#: after a failed attempt to move to a new file at the path, how long before the next
CARRY_RETRY = 5.0
_log = get_logger("sslsms_notify.stores.sqlite")
#: (device, inode) of a file, or None when there is none at the path
FileId = tuple[int, int] | None
_CHUNK = 500  # keys per "IN (...)": below SQLite's variable limit on every build

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    key TEXT PRIMARY KEY, end_at REAL NOT NULL, count INTEGER NOT NULL, since_at REAL NOT NULL,
    last_at REAL NOT NULL, last_text TEXT NOT NULL, numbers TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS windows_end ON windows(end_at);
CREATE TABLE IF NOT EXISTS rates (key TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS digests (
    msisdn TEXT PRIMARY KEY, count INTEGER NOT NULL, since_at REAL NOT NULL,
    texts TEXT NOT NULL, ready_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS digests_ready ON digests(ready_at);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY, deadline REAL NOT NULL, count INTEGER NOT NULL,
    texts TEXT NOT NULL, numbers TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS groups_deadline ON groups(deadline);
CREATE TABLE IF NOT EXISTS outbox (
    csms_id TEXT PRIMARY KEY, msisdn TEXT NOT NULL, text TEXT NOT NULL,
    created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, attempts INTEGER NOT NULL,
    state TEXT NOT NULL, batch_id TEXT, last_error TEXT NOT NULL, maybe_sent INTEGER NOT NULL,
    batch_kind TEXT NOT NULL DEFAULT '', batch_size INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_age ON outbox(state, created_at);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox(batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_at ON records(kind, at);
CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO counts VALUES ('windows', 0), ('pending', 0), ('inflight', 0), ('dead', 0);
CREATE TRIGGER IF NOT EXISTS windows_added AFTER INSERT ON windows
    BEGIN UPDATE counts SET n = n + 1 WHERE name = 'windows'; END;
CREATE TRIGGER IF NOT EXISTS windows_removed AFTER DELETE ON windows
    BEGIN UPDATE counts SET n = n - 1 WHERE name = 'windows'; END;
CREATE TRIGGER IF NOT EXISTS outbox_added AFTER INSERT ON outbox
    BEGIN UPDATE counts SET n = n + 1 WHERE name = NEW.state; END;
CREATE TRIGGER IF NOT EXISTS outbox_removed AFTER DELETE ON outbox
    BEGIN UPDATE counts SET n = n - 1 WHERE name = OLD.state; END;
CREATE TRIGGER IF NOT EXISTS outbox_moved AFTER UPDATE OF state ON outbox WHEN OLD.state <> NEW.state
    BEGIN
        UPDATE counts SET n = n - 1 WHERE name = OLD.state;
        UPDATE counts SET n = n + 1 WHERE name = NEW.state;
    END;
"""


def _statements(script: str) -> list[str]:
    """The statements of a script, each whole (a trigger's body holds semicolons)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


_SCHEMA_STATEMENTS = _statements(_SCHEMA)


_COLUMNS = (
    "csms_id, msisdn, text, created_at, next_attempt_at, attempts, state, batch_id, last_error, maybe_sent, "
    "batch_kind, batch_size"
)
_INSERT_OUTBOX = (
    f"INSERT INTO outbox ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(csms_id) DO UPDATE SET next_attempt_at=excluded.next_attempt_at, "
    "attempts=excluded.attempts, state=excluded.state, batch_id=excluded.batch_id, "
    "last_error=excluded.last_error, maybe_sent=excluded.maybe_sent, "
    "batch_kind=excluded.batch_kind, batch_size=excluded.batch_size"
)
_UPDATE_OUTBOX = (
    "UPDATE outbox SET next_attempt_at=?, attempts=?, state=?, batch_id=?, last_error=?, maybe_sent=?, "
    "batch_kind=?, batch_size=? WHERE csms_id=?"
)
# Claimable: pending (due or not) or in flight with the lease run out. Used to bring
# the rest of a bound request along with a member that came due.
_CLAIMABLE = "(state = 'pending' OR (state = 'inflight' AND next_attempt_at <= ?))"
_UPSERT = {
    "windows": "INSERT INTO windows VALUES (?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
    "end_at=excluded.end_at, count=excluded.count, since_at=excluded.since_at, "
    "last_at=excluded.last_at, last_text=excluded.last_text, numbers=excluded.numbers",
    "rates": "INSERT INTO rates VALUES (?,?) ON CONFLICT(key) DO UPDATE SET tat=excluded.tat",
    "digests": "INSERT INTO digests VALUES (?,?,?,?,?) ON CONFLICT(msisdn) DO UPDATE SET "
    "count=excluded.count, since_at=excluded.since_at, texts=excluded.texts, ready_at=excluded.ready_at",
    "groups": "INSERT INTO groups VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
    "deadline=excluded.deadline, count=excluded.count, texts=excluded.texts, numbers=excluded.numbers",
}
_UPSERT_RECORD = (
    "INSERT INTO records VALUES (?,?,?,?) "
    "ON CONFLICT(kind, key) DO UPDATE SET at=excluded.at, body=excluded.body"
)
_KEY_COLUMN = {"windows": "key", "rates": "key", "digests": "msisdn", "groups": "name"}
_TIME_COLUMN = {"windows": "end_at", "digests": "ready_at", "groups": "deadline"}


def path_from_url(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"store {url!r} must look like sqlite:///relative.db or sqlite:////abs.db")
    rest = url.removeprefix("sqlite:///")
    if not rest:
        raise ValueError("store sqlite:/// needs a file path")
    return Path(rest).expanduser()


def _file_id(path: Path) -> FileId:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _retry_busy(step: Callable[[], T], deadline: float) -> T:
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
def _directory_lock(directory: Path, deadline: float) -> Iterator[bool]:
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


def _row_to_item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        OutboxState(row[6]),
        row[7],
        row[8],
        bool(row[9]),
        row[10],
        row[11],
    )


def _item_to_row(item: OutboxItem) -> tuple[Any, ...]:
    return (
        item.csms_id,
        item.msisdn,
        item.text,
        item.created_at,
        item.next_attempt_at,
        item.attempts,
        item.state.value,
        item.batch_id,
        item.last_error,
        int(item.maybe_sent),
        item.batch_kind,
        item.batch_size,
    )


def _update_row(item: OutboxItem) -> tuple[Any, ...]:
    return (
        item.next_attempt_at,
        item.attempts,
        item.state.value,
        item.batch_id,
        item.last_error,
        int(item.maybe_sent),
        item.batch_kind,
        item.batch_size,
        item.csms_id,
    )


def _encode(table: str, key: str, row: Any) -> tuple[Any, ...]:
    if table == "windows":
        return (key, row.end_at, row.count, row.since_at, row.last_at, row.last_text, ",".join(row.numbers))
    if table == "rates":
        return (key, row)
    if table == "digests":
        return (key, row.count, row.since_at, json.dumps(row.texts, ensure_ascii=False), row.ready_at)
    return (key, row.deadline, row.count, json.dumps(row.texts, ensure_ascii=False), ",".join(row.numbers))


def _numbers(value: str) -> tuple[str, ...]:
    return tuple(value.split(",")) if value else ()


def _decode(table: str, row: Sequence[Any]) -> Any:
    if table == "windows":
        return Window(row[0], row[1], row[2], row[3], row[4], row[5], _numbers(row[6]))
    if table == "rates":
        return float(row[1])
    if table == "digests":
        return Digest(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4])
    return GroupBuffer(row[0], row[1], row[2], tuple(json.loads(row[3])), _numbers(row[4]))


class SQLiteStore(StandaloneStore):
    """The :class:`~.base.Store` in a SQLite file (``store="sqlite:///path.db"``).

    Durable, and shared by every process of the host that opens the same file.
    ``url`` is a ``sqlite:///`` URL or a path; ``busy_timeout`` is how long a
    transaction waits for another process's.
    """

    durable = True

    def __init__(
        self, url: str | Path, *, clock: Callable[[], float] = time.time, busy_timeout: float = 10.0
    ) -> None:
        self.path = path_from_url(url) if isinstance(url, str) else Path(url).expanduser()
        #: where the file is, whatever the process's working directory later becomes
        self._where = self.path.absolute()
        self._clock = clock
        self._busy_timeout = busy_timeout
        #: times this process moved to a new file at the path (the old one was deleted or replaced)
        self.reopened = 0
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._file: tuple[FileId, FileId, FileId] = (None, None, None)
        self._pid = os.getpid()
        self._closed = False
        self._fork_held = False
        self._carry_due = 0.0
        self._carry_logged = float("-inf")
        #: the file at the path is not the one open, and moving to it failed (writes go to the old one)
        self._stale = False
        _register(self)  # first: a fork from another thread meanwhile waits for the lock below
        with self._lock:
            self._db, self._file = self._connect()

    def _connect(
        self, stale: tuple[FileId, FileId, FileId] | None = None
    ) -> tuple[sqlite3.Connection, tuple[FileId, FileId, FileId]]:
        """A new connection to the file at the path, in WAL mode, its schema current.

        Creating the file (or moving to a new one: ``stale`` is the old file's identity)
        happens under a directory lock, so that WAL and shared-memory files left at
        the path by a deleted file are removed, and those of a file another process
        has just made are not.
        """
        deadline = time.monotonic() + self._busy_timeout
        try:
            self._where.parent.mkdir(parents=True, exist_ok=True)
            if stale is None and self._where.exists():
                return self._connect_now(deadline)
            with _directory_lock(self._where.parent, deadline) as locked:
                if locked:
                    here = self._where.exists()
                    for sidecar, old in zip(
                        _sidecars(self._where), (stale or (None, None, None))[1:], strict=True
                    ):
                        found = _file_id(sidecar)
                        if found is not None and (not here or found == old):
                            sidecar.unlink(missing_ok=True)
                return self._connect_now(deadline)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: cannot open: {exc}") from None

    def _connect_now(self, deadline: float) -> tuple[sqlite3.Connection, tuple[FileId, FileId, FileId]]:
        db = sqlite3.connect(
            self._where, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            _retry_busy(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone(), deadline)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of us
            _retry_busy(lambda: self._migrate(db), deadline)
        except BaseException:
            db.close()
            raise
        wal, shm = _sidecars(self._where)
        return db, (_file_id(self._where), _file_id(wal), _file_id(shm))

    def _migrate(self, db: sqlite3.Connection) -> None:
        # 0.1.0 kept windows and digests in other shapes. Its windows are dropped (a
        # repeat may page once more), its held digest texts are kept, and its outbox
        # rows have the same shape and stay. One transaction: several processes
        # opening the file at once wait for each other, and a crash changes nothing.
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return  # the common case takes no write lock
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                held: list[tuple[str, str]] = []
                if {r[1] for r in db.execute("PRAGMA table_info(digests)")} >= {"id", "text"}:
                    held = db.execute("SELECT msisdn, text FROM digests ORDER BY id").fetchall()
                    db.execute("DROP TABLE digests")
                if "suppressed" in {r[1] for r in db.execute("PRAGMA table_info(windows)")}:
                    db.execute("DROP TABLE windows")
                for statement in _SCHEMA_STATEMENTS:  # CREATE ... IF NOT EXISTS
                    db.execute(statement)
                # 0.2 had no batch_kind / batch_size: its bindings are bulk ones of unknown size.
                columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
                if "batch_kind" not in columns:
                    db.execute("ALTER TABLE outbox ADD COLUMN batch_kind TEXT NOT NULL DEFAULT ''")
                if "batch_size" not in columns:
                    db.execute("ALTER TABLE outbox ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 0")
                _recount(db)
                now = self._clock()
                for msisdn, text in held:
                    _fold_legacy(db, msisdn, text, now)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- the connection -----------------------------------------------------------------
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
            self._stale = False  # the file at the path is ours (again)
        return db

    def _moved(self) -> bool:
        """Whether the file at the path is not the one open (a stat: about 3 µs)."""
        try:
            return _file_id(self._where) != self._file[0]
        except OSError:
            return False  # cannot tell (a directory we may no longer read): carry on

    @property
    def _cur(self) -> sqlite3.Connection:
        """The connection of the transaction under way (see :meth:`_conn`)."""
        db = self._db
        if db is None:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: closed")
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
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

    def now(self) -> float:
        return self._clock()

    # -- transactions (the Backend protocol) ------------------------------------
    def load(self, table: TableName, keys: list[str]) -> dict[str, object]:
        if table in RECORDS:
            return self._load_records(table, keys)
        column = _KEY_COLUMN[table]
        found: dict[str, object] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._cur.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", chunk):
                found[row[0]] = _decode(table, row)
        return found

    def _load_records(self, table: str, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, body in self._cur.execute(
                f"SELECT key, body FROM records WHERE kind = ? AND key IN ({marks})", [table, *chunk]
            ):
                found[key] = record_from(table, key, json.loads(body))
        return found

    def due(self, table: IndexedTable, now: float, limit: int) -> list[str]:
        if table in RECORDS:
            rows = self._cur.execute(
                "SELECT key FROM records WHERE kind = ? AND at <= ? ORDER BY at LIMIT ?", (table, now, limit)
            )
            return [r[0] for r in rows]
        column = _TIME_COLUMN[table]
        rows = self._cur.execute(
            f"SELECT {_KEY_COLUMN[table]} FROM {table} WHERE {column} <= ? ORDER BY {column} LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    def earliest(self, table: IndexedTable, limit: int) -> list[str]:
        if table in RECORDS:
            rows = self._cur.execute(
                "SELECT key FROM records WHERE kind = ? ORDER BY at LIMIT ?", (table, limit)
            )
            return [r[0] for r in rows]
        column = _TIME_COLUMN[table]
        rows = self._cur.execute(
            f"SELECT {_KEY_COLUMN[table]} FROM {table} ORDER BY {column} LIMIT ?", (limit,)
        )
        return [r[0] for r in rows]

    def rate_keys(self, limit: int) -> list[str]:
        """Keys of the rates table (it has no time index): the Redis store moves its spool's back."""
        return [r[0] for r in self._cur.execute("SELECT key FROM rates ORDER BY key LIMIT ?", (limit,))]

    def count(self, table: IndexedTable) -> int:
        if table == "windows":
            return self._counter("windows")
        if table in RECORDS:
            row = self._cur.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (table,)).fetchone()
            return int(row[0])
        return int(self._cur.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _counter(self, name: str) -> int:
        row = self._cur.execute("SELECT n FROM counts WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def transact(self, fn: Callable[[Tx], T]) -> T:
        with self._write() as db:
            tx = Tx(self, self._clock())
            result = fn(tx)
            for table in ("windows", "rates", "digests", "groups"):
                dirty = getattr(tx, table).dirty
                if not dirty:
                    continue
                doomed = [(k,) for k, v in dirty.items() if v is None]
                if doomed:
                    db.executemany(f"DELETE FROM {table} WHERE {_KEY_COLUMN[table]} = ?", doomed)
                rows = [_encode(table, k, v) for k, v in dirty.items() if v is not None]
                if rows:
                    db.executemany(_UPSERT[table], rows)
            for table in RECORDS:
                dirty = getattr(tx, table).dirty
                if not dirty:
                    continue
                gone = [(table, k) for k, v in dirty.items() if v is None]
                if gone:
                    db.executemany("DELETE FROM records WHERE kind = ? AND key = ?", gone)
                rows = [
                    (table, k, record_time(table, v), json.dumps(record_fields(v), ensure_ascii=False))
                    for k, v in dirty.items()
                    if v is not None
                ]
                if rows:
                    db.executemany(_UPSERT_RECORD, rows)
            if tx.new_items:
                db.executemany(_INSERT_OUTBOX, [_item_to_row(i) for i in tx.new_items])
            return result

    def next_due(self) -> float | None:
        with self._lock:
            # one statement: under busy application threads every call waits for the GIL
            times = (
                self._conn()
                .execute(
                    "SELECT "
                    + ", ".join(f"(SELECT MIN({c}) FROM {t})" for t, c in _TIME_COLUMN.items())
                    + ", (SELECT MIN(at) FROM records)"
                )
                .fetchone()
            )
        return min((t for t in times if t is not None), default=None)

    def window_count(self) -> int:
        with self._lock:
            self._conn()
            return self._counter("windows")

    # -- rate limits (the dispatcher's pacing) ------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        now = self._clock()
        interval = 1.0 / rate
        with self._write() as db:
            row = db.execute("SELECT tat FROM rates WHERE key=?", (key,)).fetchone()
            tat = max(row[0] if row else now, now)
            wait = max(0.0, tat + interval - burst * interval - now)
            if wait == 0.0 or reserve:
                db.execute(_UPSERT["rates"], (key, tat + interval))
            return wait

    # -- outbox -------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        with self._write() as db:
            db.executemany(_INSERT_OUTBOX, [_item_to_row(i) for i in items])

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? "
                "UNION ALL "
                f"SELECT {_COLUMNS} FROM outbox WHERE state = 'inflight' AND next_attempt_at <= ? "
                "ORDER BY created_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            taken = {r[0] for r in rows}
            batches = sorted({r[7] for r in rows if r[7]})
            for start in range(0, len(batches), _CHUNK):  # the rest of each bound request comes along
                chunk = batches[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE batch_id IN ({marks}) AND {_CLAIMABLE}",
                    [*chunk, now],
                ):
                    if row[0] not in taken:
                        taken.add(row[0])
                        rows.append(row)
            # An SMS taken over from a lease that ran out may have reached the gateway.
            db.executemany(
                "UPDATE outbox SET state='inflight', next_attempt_at=?, "
                "maybe_sent = maybe_sent OR state = 'inflight' WHERE csms_id=?",
                [(now + lease, r[0]) for r in rows],
            )
        return [
            _row_to_item(r).evolve(
                state=OutboxState.INFLIGHT,
                next_attempt_at=now + lease,
                maybe_sent=bool(r[9]) or r[6] == OutboxState.INFLIGHT.value,
            )
            for r in rows
        ]

    def outbox_renew(self, csms_ids: Sequence[str], lease: float) -> None:
        until = self._clock() + lease
        with self._write() as db:
            db.executemany(
                "UPDATE outbox SET next_attempt_at=? WHERE csms_id=? AND state='inflight'",
                [(until, i) for i in csms_ids],
            )

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        sent = [(i.csms_id,) for i in items if i.state is OutboxState.SENT]
        rest = [_update_row(i) for i in items if i.state is not OutboxState.SENT]
        with self._write() as db:
            if sent:
                db.executemany("DELETE FROM outbox WHERE csms_id=?", sent)
            if rest:
                db.executemany(_UPDATE_OUTBOX, rest)

    def outbox_get(self, csms_ids: Sequence[str]) -> dict[str, OutboxItem]:
        found: dict[str, OutboxItem] = {}
        ids = list(csms_ids)
        with self._lock:
            db = self._conn()
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE csms_id IN ({marks})", chunk):
                    found[row[0]] = _row_to_item(row)
        return found

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        with self._lock:
            db = self._conn()
            if state is None:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM outbox ORDER BY created_at LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE state=? ORDER BY created_at LIMIT ?",
                    (state.value, limit),
                ).fetchall()
        return [_row_to_item(r) for r in rows]

    def outbox_counts(self) -> OutboxCounts:
        with self._lock:
            counts = dict(self._conn().execute("SELECT name, n FROM counts").fetchall())
        return OutboxCounts(
            pending=counts.get("pending", 0) + counts.get("inflight", 0),
            inflight=counts.get("inflight", 0),
            dead=counts.get("dead", 0),
        )

    def outbox_open(self) -> int:
        return self.outbox_counts().pending

    def outbox_next_due(self) -> float | None:
        with self._lock:
            db = self._conn()
            times = [
                db.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = ?", (state,)).fetchone()[0]
                for state in ("pending", "inflight")
            ]
        return min((t for t in times if t is not None), default=None)

    def outbox_trim(self, max_open: int, reason: str) -> list[OutboxItem]:
        now = self._clock()
        with self._write() as db:
            open_count = self._counter("pending") + self._counter("inflight")
            excess = open_count - max_open
            if excess <= 0:
                return []
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state='pending' ORDER BY created_at LIMIT ?",
                (excess,),
            ).fetchall()
            taken = {r[0] for r in rows}
            for batch_id in sorted({r[7] for r in rows if r[7]}):  # a bound request goes whole
                for row in db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE batch_id=? AND state='pending'", (batch_id,)
                ):
                    if row[0] not in taken:
                        taken.add(row[0])
                        rows.append(row)
            dropped = [
                _row_to_item(r).evolve(state=OutboxState.DEAD, next_attempt_at=now, last_error=reason)
                for r in rows
            ]
            db.executemany(_UPDATE_OUTBOX, [_update_row(i) for i in dropped])
        return dropped

    def outbox_expire_dead(self, older_than: float) -> int:
        with self._write() as db:
            return db.execute(
                "DELETE FROM outbox WHERE state='dead' AND next_attempt_at < ?", (older_than,)
            ).rowcount

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        now = self._clock()
        ids = list(dict.fromkeys(csms_ids))
        with self._write() as db:
            batches: set[str] = set()
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                batches.update(
                    r[0]
                    for r in db.execute(
                        f"SELECT batch_id FROM outbox WHERE csms_id IN ({marks}) AND state='dead' "
                        "AND batch_id IS NOT NULL",
                        chunk,
                    )
                )
            for batch_id in sorted(batches):  # a bound request comes back whole
                ids += [
                    r[0]
                    for r in db.execute(
                        "SELECT csms_id FROM outbox WHERE batch_id=? AND state='dead'", (batch_id,)
                    )
                ]
            revived = 0
            for csms_id in dict.fromkeys(ids):
                revived += db.execute(
                    "UPDATE outbox SET state='pending', next_attempt_at=? WHERE csms_id=? AND state='dead'",
                    (now, csms_id),
                ).rowcount
            return revived

    def outbox_resume(self) -> int:
        now = self._clock()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_at=? WHERE state='pending' AND next_attempt_at>?", (now, now)
            )
            return max(0, cursor.rowcount)

    def outbox_purge(self, state: OutboxState) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM outbox WHERE state=?", (state.value,)).rowcount

    def check(self) -> None:
        try:
            with self._lock:
                self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    # -- housekeeping --------------------------------------------------------------------
    def maintain(self) -> int:
        """Moves to a new file at the path if the one open was deleted or replaced; no SMS become due.

        (Every use outside a transaction checks that too: this makes sure an idle store does.)
        """
        if not self._closed:
            with self._lock:
                self._conn()
        return 0

    def counters(self) -> dict[str, int]:
        """``reopened``: times this process moved to a new file at the path."""
        return {"reopened": self.reopened}

    def health(self) -> StoreHealth:
        if self._closed:
            return StoreHealth("down", "closed")
        if self._stale:
            return StoreHealth(
                "down",
                "state file deleted or replaced while in use, and no new one could be opened at its path:"
                " writes go to the old one",
            )
        return StoreHealth("durable")

    # -- fork ---------------------------------------------------------------------------
    def _before_fork(self) -> None:
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

    def _after_fork_in_parent(self) -> None:
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
            _inherited.append(self._db)
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
        reason = "deleted" if not self._where.exists() else "replaced"
        try:
            _retry_busy(lambda: old.execute("BEGIN IMMEDIATE"), time.monotonic() + self._busy_timeout)
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
                moved = _move_rows(old, new, self._clock())
                new.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    new.execute("ROLLBACK")
                raise
            for table in ("outbox", "windows", "rates", "digests", "groups", "records"):
                old.execute(f"DELETE FROM {table}")
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
        self._stale = False
        self.reopened += 1
        _log.warning(
            f"state file {reason} while in use; reopened at its path, with what the old one held",
            path=str(self._where),
            **moved,
        )
        return new

    def _carry_failed(self, old: sqlite3.Connection, exc: BaseException) -> sqlite3.Connection:
        now = time.monotonic()
        self._stale = True
        self._carry_due = now + CARRY_RETRY
        if now < self._carry_logged + 60:  # tried again every few seconds, said once a minute
            return old
        self._carry_logged = now
        _log.error(
            "state file deleted or replaced while in use, and no new one could be opened at its path;"
            " still using the old one",
            path=str(self._where),
            retry_in=CARRY_RETRY,
            error=f"{type(exc).__name__}: {exc}",
        )
        return old


def _recount(db: sqlite3.Connection) -> None:
    db.execute("UPDATE counts SET n = (SELECT COUNT(*) FROM windows) WHERE name = 'windows'")
    for state in ("pending", "inflight", "dead"):
        db.execute(
            "UPDATE counts SET n = (SELECT COUNT(*) FROM outbox WHERE state = ?) WHERE name = ?",
            (state, state),
        )


def _fold_legacy(db: sqlite3.Connection, msisdn: str, text: str, now: float) -> None:
    row = db.execute("SELECT count, texts FROM digests WHERE msisdn=?", (msisdn,)).fetchone()
    texts = json.loads(row[1]) if row else []
    if len(texts) < DIGEST_KEEP:
        texts.append(text)
    db.execute(
        _UPSERT["digests"],
        (msisdn, (row[0] if row else 0) + 1, now, json.dumps(texts, ensure_ascii=False), now),
    )


def _move_rows(old: sqlite3.Connection, new: sqlite3.Connection, now: float) -> dict[str, int]:
    """Everything ``old`` holds into ``new`` (both in a transaction); how many of each.

    An SMS already in ``new`` stays as it is there (the same csms_id, moved by another
    process, and perhaps sent since); a window, digest, group, meter or lifecycle on
    both sides is merged by the rules of :mod:`.merge`.
    """
    outbox = old.execute(f"SELECT {_COLUMNS} FROM outbox").fetchall()
    new.executemany(
        f"INSERT INTO outbox ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(csms_id) DO NOTHING",
        outbox,
    )
    moved = {"outbox": len(outbox)}
    for table in ("windows", "digests", "groups", "rates"):
        rows = {r[0]: _decode(table, r) for r in old.execute(f"SELECT * FROM {table}")}
        moved[table] = len(rows)
        keys = list(rows)
        column = _KEY_COLUMN[table]
        merged: dict[str, Any] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in new.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", chunk):
                here, there = _decode(table, row), rows[row[0]]
                if table == "windows":
                    merged[row[0]] = merge_window(here, there, now) or here
                elif table == "digests":
                    merged[row[0]] = merge_digest(here, there, DIGEST_KEEP)
                elif table == "groups":
                    merged[row[0]] = merge_group(here, there, GROUP_KEEP)
                else:
                    merged[row[0]] = merge_rate(here, there, now) or here
        rows.update(merged)
        new.executemany(_UPSERT[table], [_encode(table, k, v) for k, v in rows.items()])
    for table in RECORDS:
        records = {
            key: record_from(table, key, json.loads(body))
            for key, body in old.execute("SELECT key, body FROM records WHERE kind = ?", (table,))
        }
        for key, body in new.execute("SELECT key, body FROM records WHERE kind = ?", (table,)):
            if key in records:
                records[key] = merge_lifecycle(record_from(table, key, json.loads(body)), records[key])  # type: ignore[arg-type]
        new.executemany(
            _UPSERT_RECORD,
            [
                (table, k, record_time(table, v), json.dumps(record_fields(v), ensure_ascii=False))
                for k, v in records.items()
            ],
        )
        moved[table] = len(records)
    return moved


# -- fork -------------------------------------------------------------------------------
#: every store of this process, for the fork hooks
_stores: dict[int, weakref.ReferenceType[SQLiteStore]] = {}
#: connections inherited through fork(), kept unused so that nothing closes them in the child
_inherited: list[sqlite3.Connection] = []


def _register(store: SQLiteStore) -> None:
    key = id(store)

    def forget(ref: weakref.ReferenceType[SQLiteStore]) -> None:
        if _stores.get(key) is ref:
            del _stores[key]

    _stores[key] = weakref.ref(store, forget)


def _all_stores() -> list[SQLiteStore]:
    # dict.copy() runs no Python code: safe while other threads add stores
    return [store for ref in _stores.copy().values() if (store := ref()) is not None]


def _before_fork() -> None:
    for store in _all_stores():
        store._before_fork()


def _after_fork_in_parent() -> None:
    for store in _all_stores():
        store._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for store in _all_stores():
        store.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
