"""SQLite store: durable on one host, safe for several processes sharing the file.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention; ``~`` is expanded). WAL lets readers and the writer proceed
together; a transaction is ``BEGIN IMMEDIATE`` so two processes never both
see a window as new; a busy timeout waits out the other writer.

Row counts (windows; outbox by state) are kept by triggers in the same
transactions that change the rows, so ``stats()`` reads two numbers instead of
counting a million rows. Rows are therefore written with UPSERT, never
``INSERT OR REPLACE`` (whose implicit delete fires no trigger).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from .base import (
    RECORDS,
    Digest,
    GroupBuffer,
    IndexedTable,
    OutboxCounts,
    OutboxItem,
    OutboxState,
    StoreUnavailableError,
    TableName,
    Tx,
    Window,
    record_fields,
    record_from,
    record_time,
)

T = TypeVar("T")
SCHEMA_VERSION = 3
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


class SQLiteStore:
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
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._open()

    def _open(self) -> None:
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of us
            self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: cannot open: {exc}") from None
        self._pid = os.getpid()

    def _migrate(self) -> None:
        # 0.1.0 kept windows and digests in other shapes. Its windows are dropped (a
        # repeat may page once more), its held digest texts are kept, and its outbox
        # rows have the same shape and stay. Steps that several processes may run at
        # once are idempotent.
        db = self._db
        held: list[tuple[str, str]] = []
        with self._write():
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            if {r[1] for r in db.execute("PRAGMA table_info(digests)")} >= {"id", "text"}:
                held = db.execute("SELECT msisdn, text FROM digests ORDER BY id").fetchall()
                db.execute("DROP TABLE digests")
            if "suppressed" in {r[1] for r in db.execute("PRAGMA table_info(windows)")}:
                db.execute("DROP TABLE windows")
        db.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: safe to run twice
        with self._write():
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            # 0.2 had no batch_kind / batch_size: its bindings are bulk ones of unknown size.
            columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
            if "batch_kind" not in columns:
                db.execute("ALTER TABLE outbox ADD COLUMN batch_kind TEXT NOT NULL DEFAULT ''")
            if "batch_size" not in columns:
                db.execute("ALTER TABLE outbox ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 0")
            self._recount()
            now = self._clock()
            for msisdn, text in held:
                self._fold_legacy(msisdn, text, now)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _fold_legacy(self, msisdn: str, text: str, now: float) -> None:
        row = self._db.execute("SELECT count, texts FROM digests WHERE msisdn=?", (msisdn,)).fetchone()
        texts = json.loads(row[1]) if row else []
        if len(texts) < 5:
            texts.append(text)
        self._db.execute(
            _UPSERT["digests"],
            (msisdn, (row[0] if row else 0) + 1, now, json.dumps(texts, ensure_ascii=False), now),
        )

    def _recount(self) -> None:
        db = self._db
        db.execute("UPDATE counts SET n = (SELECT COUNT(*) FROM windows) WHERE name = 'windows'")
        for state in ("pending", "inflight", "dead"):
            db.execute(
                "UPDATE counts SET n = (SELECT COUNT(*) FROM outbox WHERE state = ?) WHERE name = ?",
                (state, state),
            )

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # may fail too (a full disk, an I/O error)
            except BaseException:
                # SQLite may have rolled back by itself (an I/O error does): the original
                # error is the one to raise, and the connection must leave the transaction.
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
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
            for row in self._db.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", chunk):
                found[row[0]] = _decode(table, row)
        return found

    def _load_records(self, table: str, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, body in self._db.execute(
                f"SELECT key, body FROM records WHERE kind = ? AND key IN ({marks})", [table, *chunk]
            ):
                found[key] = record_from(table, key, json.loads(body))
        return found

    def due(self, table: IndexedTable, now: float, limit: int) -> list[str]:
        if table in RECORDS:
            rows = self._db.execute(
                "SELECT key FROM records WHERE kind = ? AND at <= ? ORDER BY at LIMIT ?", (table, now, limit)
            )
            return [r[0] for r in rows]
        column = _TIME_COLUMN[table]
        rows = self._db.execute(
            f"SELECT {_KEY_COLUMN[table]} FROM {table} WHERE {column} <= ? ORDER BY {column} LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    def earliest(self, table: IndexedTable, limit: int) -> list[str]:
        if table in RECORDS:
            rows = self._db.execute(
                "SELECT key FROM records WHERE kind = ? ORDER BY at LIMIT ?", (table, limit)
            )
            return [r[0] for r in rows]
        column = _TIME_COLUMN[table]
        rows = self._db.execute(
            f"SELECT {_KEY_COLUMN[table]} FROM {table} ORDER BY {column} LIMIT ?", (limit,)
        )
        return [r[0] for r in rows]

    def rate_keys(self, limit: int) -> list[str]:
        """Keys of the rates table (it has no time index): the Redis store moves its spool's back."""
        return [r[0] for r in self._db.execute("SELECT key FROM rates ORDER BY key LIMIT ?", (limit,))]

    def count(self, table: IndexedTable) -> int:
        if table == "windows":
            return self._counter("windows")
        if table in RECORDS:
            row = self._db.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (table,)).fetchone()
            return int(row[0])
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT n FROM counts WHERE name = ?", (name,)).fetchone()
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
            times = self._db.execute(
                "SELECT " + ", ".join(f"(SELECT MIN({c}) FROM {t})" for t, c in _TIME_COLUMN.items())
                + ", (SELECT MIN(at) FROM records)"
            ).fetchone()
        return min((t for t in times if t is not None), default=None)

    def window_count(self) -> int:
        with self._lock:
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
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE csms_id IN ({marks})", chunk
                ):
                    found[row[0]] = _row_to_item(row)
        return found

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        with self._lock:
            if state is None:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox ORDER BY created_at LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE state=? ORDER BY created_at LIMIT ?",
                    (state.value, limit),
                ).fetchall()
        return [_row_to_item(r) for r in rows]

    def outbox_counts(self) -> OutboxCounts:
        with self._lock:
            counts = dict(self._db.execute("SELECT name, n FROM counts").fetchall())
        return OutboxCounts(
            pending=counts.get("pending", 0) + counts.get("inflight", 0),
            inflight=counts.get("inflight", 0),
            dead=counts.get("dead", 0),
        )

    def outbox_open(self) -> int:
        return self.outbox_counts().pending

    def outbox_next_due(self) -> float | None:
        with self._lock:
            times = [
                self._db.execute(
                    "SELECT MIN(next_attempt_at) FROM outbox WHERE state = ?", (state,)
                ).fetchone()[0]
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
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def after_fork(self) -> None:
        # A SQLite connection must not cross fork(); the parent keeps its own.
        self._open()
