"""How the Redis store lays out its keys, and its records as JSON.

Under the store's prefix: ``o`` (hash: csms_id -> SMS), ``due`` (sorted set: open SMS
by due time, or lease end while claimed), ``claimed`` (hash: leases), ``dead`` (sorted
set: dead letters by when they died), ``bm:<binding>`` (set: the members of a bound
request), ``epoch`` (the marker that tells a loss of data), ``tx`` (never written: a
transaction WATCHes it to start); a row of a table under its
prefix (:data:`ROW_PREFIX`), and each time-indexed table's sorted set under its name.
"""

from __future__ import annotations

import json
from typing import Any

from ..base import (
    RECORDS,
    Digest,
    GroupBuffer,
    OutboxItem,
    OutboxState,
    Window,
    record_fields,
    record_from,
    record_time,
)


def item_json(item: OutboxItem) -> str:
    return json.dumps(
        [
            item.msisdn,
            item.text,
            item.created_at,
            item.next_attempt_at,
            item.attempts,
            item.state.value,
            item.batch_id or "",
            item.last_error,
            int(item.maybe_sent),
            item.batch_kind,
            item.batch_size,
        ],
        ensure_ascii=False,
    )


def item_from(csms_id: str, raw: str, score: float | None = None, claimed: bool = False) -> OutboxItem:
    f = json.loads(raw)
    if len(f) < 11:  # written by 0.2: a binding of unknown kind (bulk) and size
        f += ["", 0]
    state = OutboxState(f[5])
    if state is not OutboxState.DEAD:
        state = OutboxState.INFLIGHT if claimed else OutboxState.PENDING
    return OutboxItem(
        csms_id=csms_id,
        msisdn=f[0],
        text=f[1],
        created_at=float(f[2]),
        next_attempt_at=float(score if score is not None else f[3]),
        attempts=int(f[4]),
        state=state,
        batch_id=f[6] or None,
        last_error=f[7],
        maybe_sent=bool(f[8]),
        batch_kind=f[9],
        batch_size=int(f[10]),
    )


def encode_row(table: str, row: Any) -> str:
    if table in RECORDS:
        return json.dumps(record_fields(row), ensure_ascii=False)
    if table == "windows":
        return json.dumps(
            [row.end_at, row.count, row.since_at, row.last_at, row.last_text, list(row.numbers)],
            ensure_ascii=False,
        )
    if table == "digests":
        return json.dumps([row.count, row.since_at, list(row.texts), row.ready_at], ensure_ascii=False)
    return json.dumps([row.deadline, row.count, list(row.texts), list(row.numbers)], ensure_ascii=False)


def decode_row(table: str, key: str, raw: str) -> Any:
    if table == "rates":
        return float(raw)
    f = json.loads(raw)
    if table in RECORDS:
        return record_from(table, key, f)
    if table == "windows":
        return Window(key, f[0], f[1], f[2], f[3], f[4], tuple(f[5]))
    if table == "digests":
        return Digest(key, f[0], f[1], tuple(f[2]), f[3])
    return GroupBuffer(key, f[0], f[1], tuple(f[2]), tuple(f[3]))


def time_of(table: str, row: Any) -> float:
    if table in RECORDS:
        return record_time(table, row)
    return float(row.end_at if table == "windows" else row.ready_at if table == "digests" else row.deadline)


ROW_PREFIX = {
    "windows": "w:",
    "rates": "r:",
    "digests": "dg:",
    "groups": "g:",
    "lifecycles": "lc:",
    "leases": "ls:",
    "heartbeats": "hb:",
    "escalations": "esc:",
    "escalation_keys": "esck:",
    "notices": "nt:",
    "handoffs": "ho:",
    "silences": "sl:",
    "holds": "hd:",
}
#: tables whose rows have a time index (a sorted set named after the table)
INDEXED = ("windows", "digests", "groups", *RECORDS)
