"""SQLite store: durable on one host, safe for several processes sharing the file.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention; ``~`` is expanded). WAL lets readers and the writer proceed
together; every read-modify-write runs in ``BEGIN IMMEDIATE`` so two processes
never both see a window as new; a busy timeout waits out the other writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .base import ClosedWindow, DedupHit, OutboxCounts, OutboxItem, OutboxState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    key TEXT PRIMARY KEY, end_at REAL NOT NULL, suppressed INTEGER NOT NULL,
    last_at REAL NOT NULL, last_text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS windows_end ON windows(end_at);
CREATE TABLE IF NOT EXISTS rates (key TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS digests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, msisdn TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS digests_msisdn ON digests(msisdn);
CREATE TABLE IF NOT EXISTS outbox (
    csms_id TEXT PRIMARY KEY, msisdn TEXT NOT NULL, text TEXT NOT NULL,
    created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, attempts INTEGER NOT NULL,
    state TEXT NOT NULL, batch_id TEXT, last_error TEXT NOT NULL, maybe_sent INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
"""
_COLUMNS = (
    "csms_id, msisdn, text, created_at, next_attempt_at, attempts, state, batch_id, last_error, maybe_sent"
)
_UPSERT_OUTBOX = f"INSERT OR REPLACE INTO outbox ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"


def path_from_url(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"store {url!r} must look like sqlite:///relative.db or sqlite:////abs.db")
    rest = url.removeprefix("sqlite:///")
    if not rest:
        raise ValueError("store sqlite:/// needs a file path")
    return Path(rest).expanduser()


def _row_to_item(row: tuple) -> OutboxItem:
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
    )


def _item_to_row(item: OutboxItem) -> tuple:
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
    )


class SQLiteStore:
    durable = True

    def __init__(
        self, url: str | Path, *, clock: Callable[[], float] = time.time, busy_timeout: float = 30.0
    ) -> None:
        self.path = path_from_url(url) if isinstance(url, str) else Path(url)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._open()

    def _open(self) -> None:
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of us
        self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        self._db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def now(self) -> float:
        return self._clock()

    # -- dedup ------------------------------------------------------------
    def dedup_hit(self, key: str, window: float, text: str, count: int = 1) -> DedupHit:
        now = self._clock()
        with self._write() as db:
            row = db.execute("SELECT end_at, suppressed FROM windows WHERE key=?", (key,)).fetchone()
            if row is None or (row[0] <= now and row[1] == 0):
                db.execute(
                    "INSERT OR REPLACE INTO windows VALUES (?,?,?,?,?)",
                    (key, now + window, count - 1, now, text),
                )
                return DedupHit(first=True, suppressed=count - 1)
            db.execute(
                "UPDATE windows SET suppressed=suppressed+?, last_at=?, last_text=? WHERE key=?",
                (count, now, text, key),
            )
            return DedupHit(first=False, suppressed=row[1] + count)

    def dedup_close(self, repeat_interval: float, limit: int = 500) -> list[ClosedWindow]:
        now = self._clock()
        with self._write() as db:
            db.execute("DELETE FROM windows WHERE end_at<=? AND suppressed=0", (now,))
            rows = db.execute(
                "SELECT key, suppressed, last_at, last_text FROM windows WHERE end_at<=? LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE windows SET end_at=?, suppressed=0, last_at=? WHERE key=?",
                [(now + repeat_interval, now, r[0]) for r in rows],
            )
        return [ClosedWindow(*r) for r in rows]

    def dedup_close_all(self) -> list[ClosedWindow]:
        with self._write() as db:
            rows = db.execute(
                "SELECT key, suppressed, last_at, last_text FROM windows WHERE suppressed>0"
            ).fetchall()
            db.execute("DELETE FROM windows")
        return [ClosedWindow(*r) for r in rows]

    # -- rate limits --------------------------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        now = self._clock()
        interval = 1.0 / rate
        with self._write() as db:
            row = db.execute("SELECT tat FROM rates WHERE key=?", (key,)).fetchone()
            tat = max(row[0] if row else now, now)
            wait = max(0.0, tat + interval - burst * interval - now)
            if wait == 0.0 or reserve:
                db.execute("INSERT OR REPLACE INTO rates VALUES (?,?)", (key, tat + interval))
            return wait

    # -- digests --------------------------------------------------------------
    def digest_add(self, msisdn: str, text: str) -> int:
        with self._write() as db:
            db.execute("INSERT INTO digests (msisdn, text) VALUES (?,?)", (msisdn, text))
            return db.execute("SELECT COUNT(*) FROM digests WHERE msisdn=?", (msisdn,)).fetchone()[0]

    def digest_recipients(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT msisdn FROM digests")]

    def digest_take(self, msisdn: str) -> list[str]:
        with self._write() as db:
            rows = db.execute("SELECT text FROM digests WHERE msisdn=? ORDER BY id", (msisdn,)).fetchall()
            db.execute("DELETE FROM digests WHERE msisdn=?", (msisdn,))
        return [r[0] for r in rows]

    # -- outbox ---------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        with self._write() as db:
            db.executemany(
                _UPSERT_OUTBOX,
                [_item_to_row(i) for i in items],
            )

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state IN ('pending','inflight') "
                "AND next_attempt_at<=? ORDER BY created_at LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE outbox SET state='inflight', next_attempt_at=? WHERE csms_id=?",
                [(now + lease, r[0]) for r in rows],
            )
        return [_row_to_item(r).evolve(state=OutboxState.INFLIGHT, next_attempt_at=now + lease) for r in rows]

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        sent = [(i.csms_id,) for i in items if i.state is OutboxState.SENT]
        rest = [_item_to_row(i) for i in items if i.state is not OutboxState.SENT]
        with self._write() as db:
            db.executemany("DELETE FROM outbox WHERE csms_id=?", sent)
            db.executemany(_UPSERT_OUTBOX, rest)

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
        counts = OutboxCounts()
        with self._lock:
            for state, number in self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
                setattr(counts, state, number)
        return counts

    def outbox_open(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending','inflight')")
            return int(row.fetchone()[0])

    def outbox_next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE state IN ('pending','inflight')"
            ).fetchone()
        return row[0] if row else None

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        now = self._clock()
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "UPDATE outbox SET state='pending', next_attempt_at=? WHERE csms_id=? AND state='dead'",
                [(now, i) for i in csms_ids],
            )
            return db.total_changes - before

    def outbox_purge(self, state: OutboxState) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM outbox WHERE state=?", (state.value,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def after_fork(self) -> None:
        # A SQLite connection must not cross fork(); the parent keeps its own.
        self._open()
