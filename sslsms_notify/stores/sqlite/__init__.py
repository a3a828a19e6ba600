"""SQLite store: durable on one host, safe for several processes sharing the file.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention; ``~`` is expanded). WAL lets readers and the writer proceed
together; a transaction is ``BEGIN IMMEDIATE`` so two processes never both
see a window as new; a busy timeout waits out the other writer.

The parts: :mod:`.schema` (tables, migrations, rows to records), :mod:`.statefile`
(the connection: opened once per process, safe across fork() with :mod:`.fork`, moved
to a new file at the path when the one open was deleted or replaced, with
:mod:`.carry`), :mod:`.files` (the file's identity, busy retries, the directory lock).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..base import (
    RECORDS,
    IndexedTable,
    OutboxCounts,
    OutboxItem,
    OutboxState,
    StandaloneStore,
    StoreHealth,
    StoreUnavailableError,
    TableName,
    Tx,
    record_fields,
    record_from,
    record_time,
)
from .files import path_from_url
from .schema import (
    CHUNK,
    CLAIMABLE,
    COLUMNS,
    INSERT_OUTBOX,
    KEY_COLUMN,
    TIME_COLUMN,
    UPDATE_OUTBOX,
    UPSERT,
    UPSERT_RECORD,
    decode_row,
    encode_row,
    item_to_row,
    row_to_item,
    update_row,
)
from .statefile import StateFile

T = TypeVar("T")
#: after a failed attempt to move to a new file at the path, how long before the next
#: (read at each failure: tests shorten it)
CARRY_RETRY = 5.0
#: the earliest time of every time index, in one statement
_NEXT_DUE = (
    "SELECT "
    + ", ".join(f"(SELECT MIN({c}) FROM {t})" for t, c in TIME_COLUMN.items())
    + ", (SELECT MIN(at) FROM records)"
)


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
        self._clock = clock
        self._file = StateFile(
            self.path, clock=clock, busy_timeout=busy_timeout, carry_retry=lambda: CARRY_RETRY
        )

    @property
    def reopened(self) -> int:
        """Times this process moved to a new file at the path (the old one was deleted or replaced)."""
        return self._file.reopened

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def now(self) -> float:
        return self._clock()

    # -- transactions (the Backend protocol) ------------------------------------
    def load(self, table: TableName, keys: list[str]) -> dict[str, object]:
        if table in RECORDS:
            return self._load_records(table, keys)
        column = KEY_COLUMN[table]
        found: dict[str, object] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._file.cur.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", chunk):
                found[row[0]] = decode_row(table, row)
        return found

    def _load_records(self, table: str, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, body in self._file.cur.execute(
                f"SELECT key, body FROM records WHERE kind = ? AND key IN ({marks})", [table, *chunk]
            ):
                found[key] = record_from(table, key, json.loads(body))
        return found

    def due(self, table: IndexedTable, now: float, limit: int) -> list[str]:
        if table in RECORDS:
            rows = self._file.cur.execute(
                "SELECT key FROM records WHERE kind = ? AND at <= ? ORDER BY at LIMIT ?", (table, now, limit)
            )
            return [r[0] for r in rows]
        column = TIME_COLUMN[table]
        rows = self._file.cur.execute(
            f"SELECT {KEY_COLUMN[table]} FROM {table} WHERE {column} <= ? ORDER BY {column} LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    def earliest(self, table: IndexedTable, limit: int) -> list[str]:
        if table in RECORDS:
            rows = self._file.cur.execute(
                "SELECT key FROM records WHERE kind = ? ORDER BY at LIMIT ?", (table, limit)
            )
            return [r[0] for r in rows]
        column = TIME_COLUMN[table]
        rows = self._file.cur.execute(
            f"SELECT {KEY_COLUMN[table]} FROM {table} ORDER BY {column} LIMIT ?", (limit,)
        )
        return [r[0] for r in rows]

    def rate_keys(self, limit: int) -> list[str]:
        """Keys of the rates table (it has no time index): the Redis store moves its spool's back."""
        return [r[0] for r in self._file.cur.execute("SELECT key FROM rates ORDER BY key LIMIT ?", (limit,))]

    def count(self, table: IndexedTable) -> int:
        if table == "windows":
            return self._counter("windows")
        if table in RECORDS:
            row = self._file.cur.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (table,)).fetchone()
            return int(row[0])
        return int(self._file.cur.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _counter(self, name: str) -> int:
        row = self._file.cur.execute("SELECT n FROM counts WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def transact(self, fn: Callable[[Tx], T]) -> T:
        with self._file.write() as db:
            tx = Tx(self, self._clock())
            result = fn(tx)
            for table in ("windows", "rates", "digests", "groups"):
                dirty = getattr(tx, table).dirty
                if not dirty:
                    continue
                doomed = [(k,) for k, v in dirty.items() if v is None]
                if doomed:
                    db.executemany(f"DELETE FROM {table} WHERE {KEY_COLUMN[table]} = ?", doomed)
                rows = [encode_row(table, k, v) for k, v in dirty.items() if v is not None]
                if rows:
                    db.executemany(UPSERT[table], rows)
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
                    db.executemany(UPSERT_RECORD, rows)
            if tx.new_items:
                db.executemany(INSERT_OUTBOX, [item_to_row(i) for i in tx.new_items])
            return result

    def next_due(self) -> float | None:
        with self._file.read() as db:
            # one statement: under busy application threads every call waits for the GIL
            times = db.execute(_NEXT_DUE).fetchone()
        return min((t for t in times if t is not None), default=None)

    def window_count(self) -> int:
        with self._file.read():
            return self._counter("windows")

    # -- rate limits (the dispatcher's pacing) ------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        now = self._clock()
        interval = 1.0 / rate
        with self._file.write() as db:
            row = db.execute("SELECT tat FROM rates WHERE key=?", (key,)).fetchone()
            tat = max(row[0] if row else now, now)
            wait = max(0.0, tat + interval - burst * interval - now)
            if wait == 0.0 or reserve:
                db.execute(UPSERT["rates"], (key, tat + interval))
            return wait

    # -- outbox -------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        with self._file.write() as db:
            db.executemany(INSERT_OUTBOX, [item_to_row(i) for i in items])

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        now = self._clock()
        with self._file.write() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? "
                "UNION ALL "
                f"SELECT {COLUMNS} FROM outbox WHERE state = 'inflight' AND next_attempt_at <= ? "
                "ORDER BY created_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            taken = {r[0] for r in rows}
            batches = sorted({r[7] for r in rows if r[7]})
            for start in range(0, len(batches), CHUNK):  # the rest of each bound request comes along
                chunk = batches[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    f"SELECT {COLUMNS} FROM outbox WHERE batch_id IN ({marks}) AND {CLAIMABLE}",
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
            row_to_item(r).evolve(
                state=OutboxState.INFLIGHT,
                next_attempt_at=now + lease,
                maybe_sent=bool(r[9]) or r[6] == OutboxState.INFLIGHT.value,
            )
            for r in rows
        ]

    def outbox_renew(self, csms_ids: Sequence[str], lease: float) -> None:
        until = self._clock() + lease
        with self._file.write() as db:
            db.executemany(
                "UPDATE outbox SET next_attempt_at=? WHERE csms_id=? AND state='inflight'",
                [(until, i) for i in csms_ids],
            )

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        sent = [(i.csms_id,) for i in items if i.state is OutboxState.SENT]
        rest = [update_row(i) for i in items if i.state is not OutboxState.SENT]
        with self._file.write() as db:
            if sent:
                db.executemany("DELETE FROM outbox WHERE csms_id=?", sent)
            if rest:
                db.executemany(UPDATE_OUTBOX, rest)

    def outbox_get(self, csms_ids: Sequence[str]) -> dict[str, OutboxItem]:
        found: dict[str, OutboxItem] = {}
        ids = list(csms_ids)
        with self._file.read() as db:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(f"SELECT {COLUMNS} FROM outbox WHERE csms_id IN ({marks})", chunk):
                    found[row[0]] = row_to_item(row)
        return found

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        with self._file.read() as db:
            if state is None:
                rows = db.execute(
                    f"SELECT {COLUMNS} FROM outbox ORDER BY created_at LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {COLUMNS} FROM outbox WHERE state=? ORDER BY created_at LIMIT ?",
                    (state.value, limit),
                ).fetchall()
        return [row_to_item(r) for r in rows]

    def outbox_counts(self) -> OutboxCounts:
        with self._file.read() as db:
            counts = dict(db.execute("SELECT name, n FROM counts").fetchall())
        return OutboxCounts(
            pending=counts.get("pending", 0) + counts.get("inflight", 0),
            inflight=counts.get("inflight", 0),
            dead=counts.get("dead", 0),
        )

    def outbox_open(self) -> int:
        return self.outbox_counts().pending

    def outbox_next_due(self) -> float | None:
        with self._file.read() as db:
            times = [
                db.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = ?", (state,)).fetchone()[0]
                for state in ("pending", "inflight")
            ]
        return min((t for t in times if t is not None), default=None)

    def outbox_trim(self, max_open: int, reason: str) -> list[OutboxItem]:
        now = self._clock()
        with self._file.write() as db:
            open_count = self._counter("pending") + self._counter("inflight")
            excess = open_count - max_open
            if excess <= 0:
                return []
            rows = db.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE state='pending' ORDER BY created_at LIMIT ?",
                (excess,),
            ).fetchall()
            taken = {r[0] for r in rows}
            for batch_id in sorted({r[7] for r in rows if r[7]}):  # a bound request goes whole
                for row in db.execute(
                    f"SELECT {COLUMNS} FROM outbox WHERE batch_id=? AND state='pending'", (batch_id,)
                ):
                    if row[0] not in taken:
                        taken.add(row[0])
                        rows.append(row)
            dropped = [
                row_to_item(r).evolve(state=OutboxState.DEAD, next_attempt_at=now, last_error=reason)
                for r in rows
            ]
            db.executemany(UPDATE_OUTBOX, [update_row(i) for i in dropped])
        return dropped

    def outbox_expire_dead(self, older_than: float) -> int:
        with self._file.write() as db:
            return db.execute(
                "DELETE FROM outbox WHERE state='dead' AND next_attempt_at < ?", (older_than,)
            ).rowcount

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        now = self._clock()
        ids = list(dict.fromkeys(csms_ids))
        with self._file.write() as db:
            batches: set[str] = set()
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
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
        with self._file.write() as db:
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_at=? WHERE state='pending' AND next_attempt_at>?", (now, now)
            )
            return max(0, cursor.rowcount)

    def outbox_purge(self, state: OutboxState) -> int:
        with self._file.write() as db:
            return db.execute("DELETE FROM outbox WHERE state=?", (state.value,)).rowcount

    def check(self) -> None:
        try:
            with self._file.read() as db:
                db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store sqlite:///{self.path}: {exc}") from None

    def close(self) -> None:
        self._file.close()

    def after_fork(self) -> None:
        """In a forked child: the connection is opened on first use (the fork hooks did the rest)."""
        self._file.after_fork()

    # -- housekeeping --------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """``reopened``: times this process moved to a new file at the path."""
        return {"reopened": self._file.reopened}

    def health(self) -> StoreHealth:
        """``durable``; ``down`` once closed, or while the file at the path cannot be moved to."""
        if self._file.closed:
            return StoreHealth("down", "closed")
        if self._file.stale:
            return StoreHealth(
                "down",
                "state file deleted or replaced while in use, and no new one could be opened at its path:"
                " writes go to the old one",
            )
        return StoreHealth("durable")


__all__ = ["CARRY_RETRY", "SQLiteStore", "path_from_url"]
