"""Outbox throughput: SMS enqueued, claimed and acknowledged per second, per store.

Batches of 100, as the dispatcher works. Baseline: the in-memory store, same run.
"""

from __future__ import annotations

import tempfile
import time

from sslsms_notify.gateway.ids import new_csms_id
from sslsms_notify.stores import MemoryStore, OutboxItem, OutboxState, open_store

from ._util import header, redis_server, row

TOTAL = 20_000
BATCH = 100


def _throughput(store) -> float:
    start = time.perf_counter()
    for _ in range(TOTAL // BATCH):
        now = store.now()
        store.outbox_add(
            [OutboxItem(new_csms_id(), "8801711111111", "bench", now, now) for _ in range(BATCH)]
        )
        claimed = store.outbox_claim(BATCH, 30)
        store.outbox_update([i.evolve(state=OutboxState.SENT) for i in claimed])
    elapsed = time.perf_counter() - start
    assert store.outbox_counts().pending == 0
    return TOTAL / elapsed


def main() -> dict[str, float]:
    memory = _throughput(MemoryStore())
    with tempfile.TemporaryDirectory() as directory:
        sqlite = _throughput(open_store(f"sqlite:///{directory}/bench.db"))
    with redis_server() as url:
        redis = _throughput(open_store(url))
    header(f"Outbox: {TOTAL:,} SMS enqueued + claimed + acknowledged, batches of {BATCH}")
    row("memory SMS/s", f"{memory:,.0f}", f"{memory:,.0f}", "1.00x")
    row("SQLite (WAL, one file) SMS/s", f"{sqlite:,.0f}", f"{memory:,.0f}", f"{sqlite / memory:.2f}x")
    row("Redis (Lua, loopback) SMS/s", f"{redis:,.0f}", f"{memory:,.0f}", f"{redis / memory:.2f}x")
    return {"memory": memory, "sqlite": sqlite, "redis": redis}


if __name__ == "__main__":
    main()
