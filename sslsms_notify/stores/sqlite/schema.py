"""The state file's schema, its migrations, and rows to and from records.

Row counts (windows; outbox by state) are kept by triggers in the same transactions
that change the rows, so ``stats()`` reads two numbers instead of counting a million
rows. Rows are therefore written with UPSERT, never ``INSERT OR REPLACE`` (whose
implicit delete fires no trigger).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ..base import Digest, GroupBuffer, OutboxItem, OutboxState, Window
from ..merge import DIGEST_KEEP

SCHEMA_VERSION = 3
CHUNK = 500  # keys per "IN (...)": below SQLite's variable limit on every build

SCHEMA = """
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


SCHEMA_STATEMENTS = _statements(SCHEMA)


COLUMNS = (
    "csms_id, msisdn, text, created_at, next_attempt_at, attempts, state, batch_id, last_error, maybe_sent, "
    "batch_kind, batch_size"
)
INSERT_OUTBOX = (
    f"INSERT INTO outbox ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(csms_id) DO UPDATE SET next_attempt_at=excluded.next_attempt_at, "
    "attempts=excluded.attempts, state=excluded.state, batch_id=excluded.batch_id, "
    "last_error=excluded.last_error, maybe_sent=excluded.maybe_sent, "
    "batch_kind=excluded.batch_kind, batch_size=excluded.batch_size"
)
UPDATE_OUTBOX = (
    "UPDATE outbox SET next_attempt_at=?, attempts=?, state=?, batch_id=?, last_error=?, maybe_sent=?, "
    "batch_kind=?, batch_size=? WHERE csms_id=?"
)
# Claimable: pending (due or not) or in flight with the lease run out. Used to bring
# the rest of a bound request along with a member that came due.
CLAIMABLE = "(state = 'pending' OR (state = 'inflight' AND next_attempt_at <= ?))"
UPSERT = {
    "windows": "INSERT INTO windows VALUES (?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
    "end_at=excluded.end_at, count=excluded.count, since_at=excluded.since_at, "
    "last_at=excluded.last_at, last_text=excluded.last_text, numbers=excluded.numbers",
    "rates": "INSERT INTO rates VALUES (?,?) ON CONFLICT(key) DO UPDATE SET tat=excluded.tat",
    "digests": "INSERT INTO digests VALUES (?,?,?,?,?) ON CONFLICT(msisdn) DO UPDATE SET "
    "count=excluded.count, since_at=excluded.since_at, texts=excluded.texts, ready_at=excluded.ready_at",
    "groups": "INSERT INTO groups VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
    "deadline=excluded.deadline, count=excluded.count, texts=excluded.texts, numbers=excluded.numbers",
}
UPSERT_RECORD = (
    "INSERT INTO records VALUES (?,?,?,?) "
    "ON CONFLICT(kind, key) DO UPDATE SET at=excluded.at, body=excluded.body"
)
KEY_COLUMN = {"windows": "key", "rates": "key", "digests": "msisdn", "groups": "name"}
TIME_COLUMN = {"windows": "end_at", "digests": "ready_at", "groups": "deadline"}


def row_to_item(row: Sequence[Any]) -> OutboxItem:
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


def item_to_row(item: OutboxItem) -> tuple[Any, ...]:
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


def update_row(item: OutboxItem) -> tuple[Any, ...]:
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


def encode_row(table: str, key: str, row: Any) -> tuple[Any, ...]:
    if table == "windows":
        return (key, row.end_at, row.count, row.since_at, row.last_at, row.last_text, ",".join(row.numbers))
    if table == "rates":
        return (key, row)
    if table == "digests":
        return (key, row.count, row.since_at, json.dumps(row.texts, ensure_ascii=False), row.ready_at)
    return (key, row.deadline, row.count, json.dumps(row.texts, ensure_ascii=False), ",".join(row.numbers))


def _numbers(value: str) -> tuple[str, ...]:
    return tuple(value.split(",")) if value else ()


def decode_row(table: str, row: Sequence[Any]) -> Any:
    if table == "windows":
        return Window(row[0], row[1], row[2], row[3], row[4], row[5], _numbers(row[6]))
    if table == "rates":
        return float(row[1])
    if table == "digests":
        return Digest(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4])
    return GroupBuffer(row[0], row[1], row[2], tuple(json.loads(row[3])), _numbers(row[4]))


def migrate(db: sqlite3.Connection, clock: Callable[[], float]) -> None:
    """Bring the file ``db`` is open on to the current schema (``clock``: now, for legacy digests)."""
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
            for statement in SCHEMA_STATEMENTS:  # CREATE ... IF NOT EXISTS
                db.execute(statement)
            # 0.2 had no batch_kind / batch_size: its bindings are bulk ones of unknown size.
            columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
            if "batch_kind" not in columns:
                db.execute("ALTER TABLE outbox ADD COLUMN batch_kind TEXT NOT NULL DEFAULT ''")
            if "batch_size" not in columns:
                db.execute("ALTER TABLE outbox ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 0")
            _recount(db)
            now = clock()
            for msisdn, text in held:
                _fold_legacy(db, msisdn, text, now)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


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
        UPSERT["digests"],
        (msisdn, (row[0] if row else 0) + 1, now, json.dumps(texts, ensure_ascii=False), now),
    )
