"""A state file deleted or replaced under a running process: what the old file held, moved into the new one.

The rules are those of a spool moving back into Redis (:mod:`..merge`): an SMS keeps
its csms_id, and a row both files hold is merged into one.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..base import RECORDS, record_fields, record_from, record_time
from ..merge import (
    DIGEST_KEEP,
    GROUP_KEEP,
    merge_digest,
    merge_group,
    merge_rate,
    merge_record,
    merge_window,
)
from .schema import CHUNK, COLUMNS, KEY_COLUMN, UPSERT, UPSERT_RECORD, decode_row, encode_row

#: every table of the state file (``counts`` follows them through triggers)
TABLES = ("outbox", "windows", "rates", "digests", "groups", "records")


def move_rows(old: sqlite3.Connection, new: sqlite3.Connection, now: float) -> dict[str, int]:
    """Everything ``old`` holds into ``new`` (both in a transaction); how many of each.

    An SMS already in ``new`` stays as it is there (the same csms_id, moved by another
    process, and perhaps sent since); a window, digest, group, meter or lifecycle on
    both sides is merged by the rules of :mod:`..merge`.
    """
    outbox = old.execute(f"SELECT {COLUMNS} FROM outbox").fetchall()
    new.executemany(
        f"INSERT INTO outbox ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(csms_id) DO NOTHING",
        outbox,
    )
    moved = {"outbox": len(outbox)}
    for table in ("windows", "digests", "groups", "rates"):
        rows = {r[0]: decode_row(table, r) for r in old.execute(f"SELECT * FROM {table}")}
        moved[table] = len(rows)
        keys = list(rows)
        column = KEY_COLUMN[table]
        merged: dict[str, Any] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in new.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", chunk):
                here, there = decode_row(table, row), rows[row[0]]
                if table == "windows":
                    merged[row[0]] = merge_window(here, there, now) or here
                elif table == "digests":
                    merged[row[0]] = merge_digest(here, there, DIGEST_KEEP)
                elif table == "groups":
                    merged[row[0]] = merge_group(here, there, GROUP_KEEP)
                else:
                    merged[row[0]] = merge_rate(here, there, now) or here
        rows.update(merged)
        new.executemany(UPSERT[table], [encode_row(table, k, v) for k, v in rows.items()])
    for table in RECORDS:
        records = {
            key: record_from(table, key, json.loads(body))
            for key, body in old.execute("SELECT key, body FROM records WHERE kind = ?", (table,))
        }
        for key, body in new.execute("SELECT key, body FROM records WHERE kind = ?", (table,)):
            if key in records:
                records[key] = merge_record(table, record_from(table, key, json.loads(body)), records[key])
        new.executemany(
            UPSERT_RECORD,
            [
                (table, k, record_time(table, v), json.dumps(record_fields(v), ensure_ascii=False))
                for k, v in records.items()
            ],
        )
        moved[table] = len(records)
    return moved


def empty(db: sqlite3.Connection) -> None:
    """Delete every row (in the caller's transaction): what a file held, once moved."""
    for table in TABLES:
        db.execute(f"DELETE FROM {table}")
